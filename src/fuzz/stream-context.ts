// What a hostile guest's disk streams share: the guest's request budget, its pages and grants, and
// the ways back to the campaign (findings, epoch checks, memory scans).
import type { HostileEpoch, HostileParams, GuestFinding } from './findings.ts';
import type { GuestPools } from './guest-pools.ts';

export interface StreamContext {
  readonly params: HostileParams;
  readonly pools: GuestPools;
  readonly backendDomid: number;
  /** Requests sent per generator family. */
  readonly families: number[];
  /** Takes one request from the guest's budget: false once it is spent or the campaign said stop. */
  take(): boolean;
  readonly stopping: boolean;
  finding(f: GuestFinding): void;
  /** Posts a drained disk's epoch and waits for the campaign's check; false if it never came. */
  epoch(message: HostileEpoch): Promise<boolean>;
  /** Scans guest memory for writes outside the grants (at most every few hundred ms unless forced). */
  scan(force?: boolean): void;
  scribbles: number;
  storms: number;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
