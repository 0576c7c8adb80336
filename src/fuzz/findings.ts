// What a fuzz campaign can find, and the messages its guests send the campaign. Plain data, so it
// crosses the worker boundary by structured clone.
import type { ErrorKind } from '../blkback/stats.ts';

export const FINDING_KINDS = ['crash', 'hang', 'out_of_grant', 'corruption', 'share', 'protocol'] as const;
export type FindingKind = (typeof FINDING_KINDS)[number];

/** One line per kind for --help and the summary. */
export const FINDING_MEANINGS: Readonly<Record<FindingKind, string>> = {
  crash: 'the backend threw (an uncaught exception or rejection in its thread), gave up on a device, or a guest worker died',
  hang: 'a request was not answered within the deadline, a ring stopped making progress, or the backend thread stopped running',
  out_of_grant: 'the backend wrote a guest page it was not granted for writing (a canary changed), or said OKAY to I/O on a page it had no grant for',
  corruption: "the neighbour read back bytes it did not write, or a read-only disk's bytes changed",
  share: "the neighbour got less than its share of the backend's service while the hostile guests kept it busy",
  protocol:
    'a request got no answer or two, a wrong status, operation or id, or dirty padding; an error went uncounted (VbdStats.errors); a ring was not halted on overflow, or its grants were kept after Closed',
};

export interface Finding {
  readonly kind: FindingKind;
  readonly message: string;
  /** Where to reproduce it: the campaign's seed, data path, hostile guest, disk and request index in that disk's stream. */
  readonly seed: number;
  readonly dataPath?: string;
  readonly guest?: number;
  readonly disk?: string;
  readonly stream?: number;
  readonly index?: number;
  /** The request as generated (describeRequest). */
  readonly request?: string;
}

/** The fields a guest fills in; the campaign adds seed and data path. */
export type GuestFinding = Omit<Finding, 'seed' | 'dataPath'>;

export type FindingCounts = Record<FindingKind, number>;

export function emptyCounts(): FindingCounts {
  return Object.fromEntries(FINDING_KINDS.map((k) => [k, 0])) as FindingCounts;
}

export function totalFindings(counts: FindingCounts): number {
  let n = 0;
  for (const k of FINDING_KINDS) n += counts[k];
  return n;
}

export function formatFinding(f: Finding): string {
  const where = [
    `seed ${f.seed}`,
    f.dataPath === undefined ? '' : `data path ${f.dataPath}`,
    f.guest === undefined ? '' : `guest ${f.guest}`,
    f.disk === undefined ? '' : `disk ${f.disk}`,
    f.index === undefined ? '' : `request #${f.index}`,
  ].filter((s) => s !== '');
  return `${f.kind.toUpperCase()}: ${f.message} (${where.join(', ')})${f.request === undefined ? '' : `\n    request: ${f.request}`}`;
}

// ------------------------------------------------------------------ guest <-> campaign

/**
 * The hostile guest's control page, written by the campaign through the domain's memory:
 *   word 0        stop: the campaign asks the guest to wind down (nonzero)
 *   word 1 + d    acknowledgement of disk d's last epoch (the epoch number)
 */
export const CONTROL_STOP = 0;
export const CONTROL_ACK = 1;

/** The hostile guest's disks, each with its own stream of requests. */
export const HOSTILE_DISKS = ['rw', 'ro', '4k', 'chaos'] as const;
export type HostileDiskName = (typeof HOSTILE_DISKS)[number];

export interface HostileParams {
  readonly guest: number;
  readonly seed: number;
  /** Device ids of the disks the campaign attached, by name. */
  readonly devids: Readonly<Record<HostileDiskName, number>>;
  /** Requests to send in all, over every disk. */
  readonly requests: number;
  /** A request unanswered this long is a hang. */
  readonly deadlineMs: number;
  /** A domain that is neither us nor the backend, to grant pages to. */
  readonly otherDomid: number;
  /** Requests of a checked disk between two counter checks. */
  readonly epochRequests: number;
  /** Requests of the rw disk between two req_prod overflows (each followed by a fresh ring). */
  readonly overflowEvery: number;
}

/** Per disk: what was sent and how it was answered. */
export interface DiskTally {
  requests: number;
  answered: number;
  /** Requests with a fault (a non-OKAY answer owed). */
  malformed: number;
  /** ...answered once, with the right status and operation. */
  malformedRight: number;
  /** Error counter checks made, and those that disagreed. */
  counterChecks: number;
  overflows: number;
  reconnects: number;
}

export interface HostileProgress {
  readonly type: 'progress';
  readonly requests: number;
  readonly answered: number;
  /** Requests sent per generator family (FAMILIES order). */
  readonly families: readonly number[];
  readonly disks: Readonly<Record<HostileDiskName, DiskTally>>;
  readonly scribbles: number;
  readonly storms: number;
  readonly scans: number;
  readonly canaries: number;
  /** Findings so far by kind (only the first few of each are sent in detail). */
  readonly findings: FindingCounts;
}

export interface HostileResult extends Omit<HostileProgress, 'type'> {
  /** Grants the backend still held once every disk was closed. */
  readonly heldGrants: number;
}

/** A checked disk drained: the campaign compares its counters, then acknowledges. */
export interface HostileEpoch {
  readonly type: 'epoch';
  readonly disk: HostileDiskName;
  readonly devid: number;
  readonly epoch: number;
  /** Error counts the backend must show for this disk (cumulative); null for the chaos disk, which is not counted. */
  readonly expected: Readonly<Record<ErrorKind, number>> | null;
  /** The ring must be halted now (right after a req_prod overflow). */
  readonly halted: boolean;
  /** Requests of this disk's stream sent so far (the epoch covers those since the last one). */
  readonly index: number;
}

export type HostileMessage =
  | { readonly type: 'ready'; readonly control: number }
  | HostileProgress
  | HostileEpoch
  | { readonly type: 'finding'; readonly finding: GuestFinding };

export interface NeighbourParams {
  readonly seed: number;
  /** Largest I/O in bytes. */
  readonly maxBytes: number;
  readonly iodepth: number;
  readonly deadlineMs: number;
  /** Share of writes, 0..1. */
  readonly writeFraction: number;
}

export interface NeighbourTally {
  ops: number;
  reads: number;
  writes: number;
  flushes: number;
  bytes: number;
  mismatches: number;
}

export interface NeighbourProgress extends Readonly<NeighbourTally> {
  readonly type: 'progress';
}

export type NeighbourMessage =
  | { readonly type: 'ready'; readonly control: number }
  | NeighbourProgress
  | { readonly type: 'finding'; readonly finding: GuestFinding }
  | { readonly type: 'done'; readonly result: NeighbourResult };

export interface NeighbourResult extends Readonly<NeighbourTally> {
  readonly finalMismatches: number;
  readonly hung: boolean;
}
