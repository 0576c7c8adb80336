// Per-VBD counters with Linux xen-blkback's names (sysfs statistics/{rd_req,wr_req,f_req,ds_req,oo_req,
// rd_sect,wr_sect}), the fair share's accounting (seg, seg_contended), errors by kind, and fio-style
// latency histograms per operation.
//
// Each ring counts into a VbdStats of its own: one block of f64 words that the thread serving the
// ring is the only writer of (a data-plane worker, or the main thread), in a SharedArrayBuffer so
// the main thread reads it as it is, without asking the worker. A Vbd shows the sum over its rings
// (VbdStatsTotal), and keeps what rings of earlier connections counted. Plain (not atomic) f64
// stores from one writer: a reader sees each word whole (8-byte aligned stores on the hosts Node
// runs on), possibly a moment old.
//
//   [0 .. 9)    rd_req wr_req f_req ds_req oo_req rd_sect wr_sect seg seg_contended
//   [9 .. 17)   errors, in ERROR_KINDS order
//   [17]        requests in flight (kept by the ring's budget, blkback/workers/ring-host.ts)
//   [18]        persistent grants kept mapped (published by the serving thread)
//   [19]        the data-plane worker serving the ring (-1: the main thread)
//   [24 ..)     four latency histograms (read, write, flush, discard): PLAT_NR buckets, then
//               count, sum, sum of squares, min, max
import { LatencyHistogram, latencyToBucket, PLAT_NR } from '../stats/latency-histogram.ts';

export const ERROR_KINDS = [
  'bad_op', // unknown or unsupported operation (answered EOPNOTSUPP)
  'bad_segments', // segment count, first_sect > last_sect, last_sect > 7
  'bad_range', // past the end of the disk or wrapping
  'misaligned', // not a multiple of the logical block size
  'read_only', // write or discard to a read-only disk
  'bad_grant', // a grant the guest did not give us (or read-only for a read)
  'io_error', // the block device failed
  'ring_overflow', // the frontend produced more requests than the ring holds: ring halted
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

export const COUNTERS = ['rd_req', 'wr_req', 'f_req', 'ds_req', 'oo_req', 'rd_sect', 'wr_sect', 'seg', 'seg_contended'] as const;
export type Counter = (typeof COUNTERS)[number];
export const LATENCY_KINDS = ['read', 'write', 'flush', 'discard'] as const;
export type LatencyKind = (typeof LATENCY_KINDS)[number];

const ERRORS_AT = COUNTERS.length;
const INFLIGHT_AT = ERRORS_AT + ERROR_KINDS.length;
const GRANTS_KEPT_AT = INFLIGHT_AT + 1;
const WORKER_AT = GRANTS_KEPT_AT + 1;
const LATENCY_AT = 24;
const HISTOGRAM_WORDS = PLAT_NR + 5;
const H_COUNT = PLAT_NR;
const H_SUM = PLAT_NR + 1;
const H_SQUARES = PLAT_NR + 2;
const H_MIN = PLAT_NR + 3;
const H_MAX = PLAT_NR + 4;

/** Bytes of one ring's statistics block. */
export const RING_STATS_BYTES = 8 * (LATENCY_AT + LATENCY_KINDS.length * HISTOGRAM_WORDS);

/** One ring's latency histogram, in its block: what the ring server records into. */
export class BlockHistogram {
  readonly #words: Float64Array;
  readonly #at: number;

  constructor(words: Float64Array, at: number) {
    this.#words = words;
    this.#at = at;
  }

  record(ns: number): void {
    const w = this.#words;
    const at = this.#at;
    w[at + latencyToBucket(ns)]! += 1;
    w[at + H_COUNT]! += 1;
    w[at + H_SUM]! += ns;
    w[at + H_SQUARES]! += ns * ns;
    if (ns < w[at + H_MIN]!) w[at + H_MIN] = ns;
    if (ns > w[at + H_MAX]!) w[at + H_MAX] = ns;
  }

  get count(): number {
    return this.#words[this.#at + H_COUNT]!;
  }

  /** Adds this histogram as it is now into `into`. */
  mergeInto(into: LatencyHistogram): void {
    const w = this.#words;
    const at = this.#at;
    const count = w[at + H_COUNT]!;
    if (count === 0) return;
    for (let i = 0; i < PLAT_NR; i++) into.buckets[i]! += w[at + i]!;
    into.count += count;
    into.sum += w[at + H_SUM]!;
    into.sumSquares += w[at + H_SQUARES]!;
    if (w[at + H_MIN]! < into.min) into.min = w[at + H_MIN]!;
    if (w[at + H_MAX]! > into.max) into.max = w[at + H_MAX]!;
  }

  /** A copy, with LatencyHistogram's methods (percentiles, toJSON). */
  snapshot(): LatencyHistogram {
    const h = new LatencyHistogram();
    this.mergeInto(h);
    return h;
  }
}

function defineCounters<T extends object>(
  target: T,
  get: (i: number) => number,
  set: ((i: number, v: number) => void) | null,
  names: readonly string[],
  base: number,
): void {
  for (let i = 0; i < names.length; i++) {
    const at = base + i;
    Object.defineProperty(target, names[i]!, {
      enumerable: true,
      get: () => get(at),
      ...(set === null ? {} : { set: (v: number) => set(at, v) }),
    });
  }
}

/** One ring's counters (what RingServer counts into), over a block another thread may read. */
export class VbdStats {
  /** The block: a SharedArrayBuffer of RING_STATS_BYTES (another thread's, or a new one). */
  readonly buffer: SharedArrayBuffer;
  readonly #w: Float64Array;
  /** Own enumerable properties, so `{ ...stats.errors }` copies them. */
  readonly errors: Record<ErrorKind, number>;
  readonly latency: Record<LatencyKind, BlockHistogram>;

  constructor(buffer: SharedArrayBuffer = newRingStatsBuffer()) {
    if (buffer.byteLength !== RING_STATS_BYTES) throw new RangeError(`a ring statistics block is ${RING_STATS_BYTES} bytes, not ${buffer.byteLength}`);
    this.buffer = buffer;
    const w = new Float64Array(buffer);
    this.#w = w;
    const errors = {} as Record<ErrorKind, number>;
    defineCounters(
      errors,
      (i) => w[i]!,
      (i, v) => (w[i] = v),
      ERROR_KINDS,
      ERRORS_AT,
    );
    this.errors = errors;
    this.latency = {
      read: new BlockHistogram(w, LATENCY_AT),
      write: new BlockHistogram(w, LATENCY_AT + HISTOGRAM_WORDS),
      flush: new BlockHistogram(w, LATENCY_AT + 2 * HISTOGRAM_WORDS),
      discard: new BlockHistogram(w, LATENCY_AT + 3 * HISTOGRAM_WORDS),
    };
  }

  get rd_req(): number {
    return this.#w[0]!;
  }
  set rd_req(v: number) {
    this.#w[0] = v;
  }
  get wr_req(): number {
    return this.#w[1]!;
  }
  set wr_req(v: number) {
    this.#w[1] = v;
  }
  get f_req(): number {
    return this.#w[2]!;
  }
  set f_req(v: number) {
    this.#w[2] = v;
  }
  get ds_req(): number {
    return this.#w[3]!;
  }
  set ds_req(v: number) {
    this.#w[3] = v;
  }
  get oo_req(): number {
    return this.#w[4]!;
  }
  set oo_req(v: number) {
    this.#w[4] = v;
  }
  get rd_sect(): number {
    return this.#w[5]!;
  }
  set rd_sect(v: number) {
    this.#w[5] = v;
  }
  get wr_sect(): number {
    return this.#w[6]!;
  }
  set wr_sect(v: number) {
    this.#w[6] = v;
  }
  /** Segments served: those of each read or write (or flush with data) that succeeded; 1 for any other answer. */
  get seg(): number {
    return this.#w[7]!;
  }
  set seg(v: number) {
    this.#w[7] = v;
  }
  /** ...of which answered while another domain had requests waiting or in flight (FairShare.answered). */
  get seg_contended(): number {
    return this.#w[8]!;
  }
  set seg_contended(v: number) {
    this.#w[8] = v;
  }

  /** Requests of the ring in flight (taken, not yet answered). */
  get inflight(): number {
    return this.#w[INFLIGHT_AT]!;
  }
  set inflight(v: number) {
    this.#w[INFLIGHT_AT] = v;
  }
  /** Persistent grants the ring keeps mapped, as its thread last published. */
  get grantsKept(): number {
    return this.#w[GRANTS_KEPT_AT]!;
  }
  set grantsKept(v: number) {
    this.#w[GRANTS_KEPT_AT] = v;
  }
  /** The data-plane worker serving the ring; -1 for the main thread. */
  get worker(): number {
    return this.#w[WORKER_AT]!;
  }
  set worker(v: number) {
    this.#w[WORKER_AT] = v;
  }
  /** The ring was halted: a frontend that broke the ring protocol (counted once, in ring_overflow). */
  get halted(): boolean {
    return this.#w[ERRORS_AT + ERROR_KINDS.indexOf('ring_overflow')]! > 0;
  }

  /** The counter at `index` (COUNTERS then ERROR_KINDS). */
  word(index: number): number {
    return this.#w[index]!;
  }

  toJSON(): Record<string, unknown> {
    return statsJSON(this, (k) => this.latency[k].snapshot());
  }
}

export function newRingStatsBuffer(): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(RING_STATS_BYTES);
  const w = new Float64Array(buffer);
  for (let k = 0; k < LATENCY_KINDS.length; k++) w[LATENCY_AT + k * HISTOGRAM_WORDS + H_MIN] = Number.POSITIVE_INFINITY;
  w[WORKER_AT] = -1;
  return buffer;
}

/** What a Vbd shows: the sum over the rings of its current connection and of the earlier ones. */
export class VbdStatsTotal {
  readonly #rings = new Set<VbdStats>();
  /** Counters of rings that went away (COUNTERS then ERROR_KINDS). */
  readonly #retired = new Float64Array(COUNTERS.length + ERROR_KINDS.length);
  readonly #retiredLatency: Record<LatencyKind, LatencyHistogram> = {
    read: new LatencyHistogram(),
    write: new LatencyHistogram(),
    flush: new LatencyHistogram(),
    discard: new LatencyHistogram(),
  };
  readonly errors: Readonly<Record<ErrorKind, number>>;

  constructor() {
    const errors = {} as Record<ErrorKind, number>;
    defineCounters(errors, (i) => this.#sum(i), null, ERROR_KINDS, ERRORS_AT);
    this.errors = errors;
  }

  /** A ring of the current connection counts from now on. */
  add(ring: VbdStats): void {
    this.#rings.add(ring);
  }

  /** The ring is gone (stopped, unmapped): what it counted stays in the total. */
  retire(ring: VbdStats): void {
    if (!this.#rings.delete(ring)) return;
    for (let i = 0; i < this.#retired.length; i++) this.#retired[i]! += ring.word(i);
    for (const k of LATENCY_KINDS) ring.latency[k].mergeInto(this.#retiredLatency[k]);
  }

  /** The rings of the current connection. */
  get rings(): readonly VbdStats[] {
    return [...this.#rings];
  }

  #sum(index: number): number {
    let n = this.#retired[index]!;
    for (const r of this.#rings) n += r.word(index);
    return n;
  }

  get rd_req(): number {
    return this.#sum(0);
  }
  get wr_req(): number {
    return this.#sum(1);
  }
  get f_req(): number {
    return this.#sum(2);
  }
  get ds_req(): number {
    return this.#sum(3);
  }
  get oo_req(): number {
    return this.#sum(4);
  }
  get rd_sect(): number {
    return this.#sum(5);
  }
  get wr_sect(): number {
    return this.#sum(6);
  }
  get seg(): number {
    return this.#sum(7);
  }
  get seg_contended(): number {
    return this.#sum(8);
  }

  /** Histograms merged over every ring, as they are now (copies). */
  get latency(): Record<LatencyKind, LatencyHistogram> {
    const out = {} as Record<LatencyKind, LatencyHistogram>;
    for (const k of LATENCY_KINDS) {
      const h = new LatencyHistogram();
      h.merge(this.#retiredLatency[k]);
      for (const r of this.#rings) r.latency[k].mergeInto(h);
      out[k] = h;
    }
    return out;
  }

  toJSON(): Record<string, unknown> {
    const latency = this.latency;
    return statsJSON(this, (k) => latency[k]);
  }
}

function statsJSON(
  s: Record<Counter, number> & { readonly errors: Readonly<Record<ErrorKind, number>> },
  latency: (k: LatencyKind) => LatencyHistogram,
): Record<string, unknown> {
  return {
    rd_req: s.rd_req,
    wr_req: s.wr_req,
    f_req: s.f_req,
    ds_req: s.ds_req,
    oo_req: s.oo_req,
    rd_sect: s.rd_sect,
    wr_sect: s.wr_sect,
    seg: s.seg,
    seg_contended: s.seg_contended,
    errors: { ...s.errors },
    latency_ns: {
      read: latency('read').toJSON(),
      write: latency('write').toJSON(),
      flush: latency('flush').toJSON(),
      discard: latency('discard').toJSON(),
    },
  };
}
