// What a workload running inside a simulated guest gets: its hypervisor handles, its disks (through
// blkfront), and helpers to allocate I/O buffers in guest memory (so blkfront can grant them directly).
import type { Blkfront } from '../blkfront/blkfront.ts';
import type { MessagePort } from 'node:worker_threads';
import type { GuestHypervisor } from '../hypervisor/types.ts';

export interface GuestContext {
  readonly domid: number;
  readonly name: string;
  readonly hv: GuestHypervisor;
  /** Disks by vdev name ("xvda", ...). */
  readonly disks: ReadonlyMap<string, Blkfront>;
  /** A page-aligned buffer in guest memory of at least `bytes` bytes. */
  allocBuffer(bytes: number): Uint8Array;
  freeBuffer(buffer: Uint8Array): void;
  /** Sends a progress or log line to the host. */
  report(message: unknown): void;
}

/** A workload module's default export. */
export type GuestWorkload = (ctx: GuestContext, params: unknown) => Promise<unknown>;

export interface GuestDiskSpec {
  readonly vdev: string;
  readonly devid: number;
}

export interface GuestWorkerData {
  readonly domid: number;
  readonly name: string;
  readonly handles: unknown;
  readonly xenstorePort: MessagePort;
  readonly disks: readonly GuestDiskSpec[];
  /** URL of a module whose default export is a GuestWorkload. */
  readonly workload: string;
  readonly params: unknown;
  /** blkfront's options for every disk; `queues` comes from the guest's vcpus unless the run says otherwise. */
  readonly front: {
    readonly abi?: 'x86_64' | 'x86_32';
    readonly ringPageOrder?: number;
    readonly maxIndirectSegments?: number;
    readonly queues?: number;
  };
}

/** Messages from the guest worker to the host. */
export type GuestMessage =
  | { readonly type: 'report'; readonly message: unknown }
  | { readonly type: 'result'; readonly result: unknown }
  | { readonly type: 'error'; readonly message: string; readonly stack?: string };
