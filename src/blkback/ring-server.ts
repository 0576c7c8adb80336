// The data plane of one blkif ring: take requests off the shared ring (each copied out of shared
// memory once, then validated), map the guest's grants, hand the pages to the block device as an
// I/O vector, and answer. Everything the frontend wrote is untrusted.
//
//   event ──► turn(): up to TURN_COST segments ──► validate ──► map grants ──► device.readv/writev
//                ▲                                                              │
//                └── final check sets req_event ◄── respond: slot, push, notify ◄┘
import {
  BLKIF_OP,
  BLKIF_RSP,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_DISCARD_SECURE,
  SECTOR_SIZE,
  SEGS_PER_INDIRECT_FRAME,
} from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { BlkifRequest, decodeIndirectSegments, decodeRequest, encodeResponse } from '../blkif/codec.ts';
import { BackRing } from '../blkif/ring.ts';
import type { SharedRing } from '../blkif/ring.ts';
import type { BlockDevice } from '../block/types.ts';
import { GNTST, PAGE_SIZE } from '../hypervisor/types.ts';
import type { BackendGrants, EventChannel, GrantCopyOp, GrantMapping } from '../hypervisor/types.ts';
import type { ErrorKind, VbdStats } from './stats.ts';
import type { InflightBudget } from './inflight-budget.ts';
import type { DomainShare, FairRing, FairShare } from './fair-share.ts';
import { freshNow, tickNow } from '../internal/tick-clock.ts';

/**
 * Work a ring may take per turn before yielding to the other rings, counted in segments (a request
 * costs its segment count, at least 1): a guest flooding 11-segment requests must not get 11 times
 * the service of a guest doing 4 KiB I/O. A turn that overdraws is charged in full to its domain's
 * service clock (FairShare), which is what evens it out.
 */
export const TURN_COST = 16;

/** At most this many requests (and I/O vector entries, under Linux's IOV_MAX) in one merged store call. */
const MAX_MERGE = 8;
const MAX_MERGE_IOV = 128;

/**
 * Response coalescing for a flooded ring: while a ring has at least this many requests queued that
 * we have not taken yet (and another turn of it is queued), its frontend does not need answers to
 * keep us busy, so its responses are pushed (and it is notified) only every ring.size / 4 answers,
 * when we hold as many answers as it has requests queued, or when its queue runs low. Each push
 * that wakes a guest costs the backend thread 10-30 µs and the guest a wake-up; for a guest
 * flooding a large ring that was most of what it cost its neighbours.
 */
const COALESCE_QUEUED = 2 * TURN_COST;

/**
 * Segments one indirect request may carry, advertised as feature-max-indirect-segments (Linux's
 * MAX_INDIRECT_SEGMENTS, drivers/block/xen-blkback/common.h). Its segment list fits one indirect page.
 */
export const MAX_INDIRECT_SEGMENTS = 256;

/**
 * How guest data reaches the store. `map`: grant-map the guest's pages and do I/O straight into them
 * (zero-copy; on the simulator a mapping is just a view). `copy`: GNTTABOP_copy between the guest's
 * pages and our own bounce pages: one hypercall per request and no mapping to tear down, which on
 * real Xen is cheaper than map+unmap and immune to XSA-229-style unmap races. `persistent`: `map`,
 * but each grant is mapped once and kept (feature-persistent, see RingServerOptions.dataPath):
 * in the steady state no grant call at all, the fastest on real Xen (docs/xen-tcg.md).
 */
export type DataPath = 'map' | 'copy' | 'persistent';

/**
 * Grants a ring keeps mapped on the `persistent` path: Linux xen-blkback's default
 * (xen_blkif_max_pgrants, drivers/block/xen-blkback/blkback.c), enough for blkfront's pool on a
 * one-page ring with 32-segment indirect requests. Past it, requests map and unmap per request.
 */
export const MAX_PERSISTENT_GRANTS = 1056;

/**
 * How long a drained ring keeps looking for new requests before it sleeps (see #unconsumedOrPoll):
 * 50 us, a few guest refills. 64 KiB QD32 reads went from about 30k to 50k IOPS with it, measured
 * with one core taken by other work.
 */
const POLL_MS = 0.05;


export interface RingServerOptions {
  readonly ring: SharedRing;
  readonly abi: BlkifAbi;
  readonly frontendDomid: number;
  readonly grants: BackendGrants;
  readonly events: EventChannel;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly discard: boolean;
  /** Largest indirect request accepted (0: indirect requests are not advertised, answered EOPNOTSUPP). */
  readonly maxIndirectSegments?: number;
  /**
   * Default `map`. `persistent` (given only once the frontend agreed to feature-persistent): a grant is
   * mapped writable the first time a request names it and stays mapped, for every later request
   * that names it, until stop(); the frontend copies data into and out of those pages, as Linux's
   * blkfront does with persistent grants.
   */
  readonly dataPath?: DataPath;
  readonly discardSecure?: boolean;
  readonly stats: VbdStats;
  readonly budget: InflightBudget;
  /** Shares the backend between domains in service (segments), and a domain's quantum among its saturated rings. */
  readonly fairShare?: FairShare;
  /** Name for messages, e.g. "vbd 3/51712". */
  readonly name: string;
  readonly logError: (message: string) => void;
}

/**
 * Fills `iov` with the segments' byte ranges of their mapped pages, one entry per run of segments
 * that continue each other in the same memory (a guest's 64 KiB buffer in frames it allocated
 * together, or a real gntdev mapping, which is one contiguous range): the store then moves the run
 * with one copy or one iovec, as the block layer merges physically contiguous bio segments.
 * Returns the number of entries.
 */
export function mergeSegments(pages: readonly Uint8Array[], segFirst: Uint8Array, segLast: Uint8Array, nseg: number, iov: Uint8Array[]): number {
  let n = 0;
  let runBuffer: ArrayBufferLike | null = null;
  let runStart = 0;
  let runEnd = 0;
  let runPage: Uint8Array | null = null; // the run's only segment, while it has one
  for (let i = 0; i < nseg; i++) {
    const page = pages[i]!;
    const from = page.byteOffset + segFirst[i]! * SECTOR_SIZE;
    const to = page.byteOffset + (segLast[i]! + 1) * SECTOR_SIZE;
    const buffer = page.buffer;
    if (runBuffer === buffer && runEnd === from) {
      runEnd = to;
      runPage = null;
      continue;
    }
    if (runBuffer !== null) iov[n++] = runView(runBuffer, runStart, runEnd, runPage);
    runBuffer = buffer;
    runStart = from;
    runEnd = to;
    runPage = page;
  }
  if (runBuffer !== null) iov[n++] = runView(runBuffer, runStart, runEnd, runPage);
  return n;
}

/**
 * Drops entries past `n`. Setting an array's length is a call into V8's runtime, the one item of
 * bookkeeping that showed in serve's profile (2% of its busy time under emulated Xen); popping is
 * inlined.
 */
function truncate(array: unknown[], n: number): void {
  while (array.length > n) array.pop();
}

function runView(buffer: ArrayBufferLike, start: number, end: number, page: Uint8Array | null): Uint8Array {
  // A lone whole page is handed over as the mapping's own view: no new object.
  if (page !== null && page.byteOffset === start && page.byteLength === end - start) return page;
  return new Uint8Array(buffer, start, end - start);
}

class PendingRequest {
  readonly req = new BlkifRequest();
  /** The request's segments: the ring slot's own (direct), or read once from its indirect pages. */
  nseg = 0;
  segGref: Uint32Array = this.req.segGref;
  segFirst: Uint8Array = this.req.segFirst;
  segLast: Uint8Array = this.req.segLast;
  /** Storage for an indirect request's segments, allocated on first use. */
  indirect: { gref: Uint32Array; first: Uint8Array; last: Uint8Array } | null = null;
  mapping: GrantMapping | null = null;
  /** Data path `copy`: the bounce pages this request holds (page indices in the ring's pool). */
  readonly bouncePages: number[] = [];
  readonly iov: Uint8Array[] = [];
  startNs = 0;
  sectors = 0;
  bytes = 0;
  /** What taking it cost its domain, in segments (at least 1). */
  cost = 1;
  kind: 'read' | 'write' | 'flush' | 'discard' = 'read';
  readonly onDone: () => void;
  readonly onFail: (err: unknown) => void;

  constructor(server: RingServer) {
    this.onDone = () => server.ioDone(this);
    this.onFail = (err: unknown) => server.complete(this, BLKIF_RSP.ERROR, err);
  }
}

export class RingServer implements FairRing {
  readonly #o: RingServerOptions;
  /** This ring's domain's account in the fair share (null without one). */
  readonly #share: DomainShare | null;
  readonly #back: BackRing;
  readonly #slot: Uint8Array;
  readonly #rsp: Uint8Array;
  readonly #free: PendingRequest[] = [];
  /**
   * Requests in flight above which a drained ring takes no new ones: the store has plenty queued,
   * so req_event stays unarmed and completions bring us back once they cross this mark (#respond).
   * A frontend with more I/O than the ring holds then refills several slots per turn, with one
   * io_submit and no notification of ours, instead of one slot per completion (three quarters of
   * the ring: 24 of Linux's 32 slots).
   */
  readonly #refillAt: number;
  readonly #sectorsPerBlock: number;
  #inflight = 0;
  #scheduled = false;
  #turnStart = 0;
  #halted = false;
  #stopping = false;
  #barrier: PendingRequest | null = null;
  #drained: (() => void) | null = null;
  #stalledOnBudget = false;
  #publishScheduled = false;
  /** Contiguous reads or writes of this turn not yet sent to the store. */
  readonly #batch = { write: false, offset: 0, end: 0, length: 0, iovCount: 0, members: new Array<PendingRequest | null>(MAX_MERGE).fill(null) };

  /** Data path `copy`: writes taken this turn whose data is still to be fetched from the guest. */
  readonly #copyIn: PendingRequest[] = [];
  /** Responses written to the ring but not yet pushed. */
  #unpushed = 0;
  readonly #coalesceMax: number;
  readonly #maxIndirect: number;
  /** A drained ring's poll: when it ends (0: not polling), and whether a poll turn is queued. */
  #pollUntil = 0;
  #polling = false;
  /** Segments of the last request taken: the ring's queue is weighed in turn quanta with it. */
  #lastCost = 1;
  /** Data path `copy`: bounce pages (one per segment in flight), free page indices, and a page per indirect frame. */
  readonly #pool: Uint8Array | null = null;
  readonly #poolFree: number[] = [];
  /** Pages a request may need: taking one waits until this many are free. */
  readonly #maxRequestPages: number;
  readonly #indirectScratch: Uint8Array | null = null;
  /** Data path `persistent`: each kept grant's page, and the mappings holding them (unmapped by stop()). */
  readonly #persistent: Map<number, Uint8Array> | null = null;
  readonly #persistentMappings: GrantMapping[] = [];
  readonly #missingRefs: number[] = [];
  readonly #oneRef = new Uint32Array(1);
  readonly #segmentPages: Uint8Array[] = [];

  readonly #publish = (): void => {
    this.#publishScheduled = false;
    // A deferred push happens after the queued turn (see #turn), at #coalesceMax answers, or once we
    // hold as many answers as the frontend still has queued: past that point it is we who leave the
    // frontend idle. (A guest keeping 32 requests in flight on a 512-slot ring waited for all 32 in
    // one push and refilled while we slept: 64 KiB QD32 reads went from 2.9 to 3.8-4.3 GB/s.)
    const queued = this.#back.unconsumedRequests();
    if (this.#scheduled && !this.#stopping && this.#unpushed < this.#coalesceMax && this.#unpushed < queued && queued * this.#lastCost >= COALESCE_QUEUED) return;
    this.#push();
  };

  #push(): void {
    this.#unpushed = 0;
    if (this.#back.pushResponsesAndCheckNotify()) this.#o.events.notify();
  }

  constructor(options: RingServerOptions) {
    this.#o = options;
    // Attach to the ring as the frontend left it (BACK_RING_ATTACH): reconnects keep their indices.
    this.#back = new BackRing(options.ring, true);
    this.#slot = new Uint8Array(options.ring.stride);
    this.#rsp = new Uint8Array(options.ring.stride);
    for (let i = 0; i < options.ring.size; i++) this.#free.push(new PendingRequest(this));
    this.#sectorsPerBlock = options.device.info.logicalBlockSize / SECTOR_SIZE;
    this.#coalesceMax = Math.max(TURN_COST, options.ring.size >>> 2);
    this.#refillAt = Math.max(1, Math.floor((options.ring.size * 3) / 4));
    this.#maxIndirect = Math.max(0, Math.min(options.maxIndirectSegments ?? 0, SEGS_PER_INDIRECT_FRAME * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST));
    this.#maxRequestPages = Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, this.#maxIndirect);
    if (options.dataPath === 'copy') {
      // Enough for every slot to carry a direct request, and never less than a few of the largest.
      const pages = Math.max(options.ring.size * BLKIF_MAX_SEGMENTS_PER_REQUEST, 4 * this.#maxRequestPages);
      this.#pool = options.grants.allocBuffer(pages * PAGE_SIZE);
      for (let i = pages - 1; i >= 0; i--) this.#poolFree.push(i);
      this.#indirectScratch = options.grants.allocBuffer(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * PAGE_SIZE);
    }
    if (options.dataPath === 'persistent') this.#persistent = new Map();
    this.#share = options.fairShare?.join(options.frontendDomid, this) ?? null;
    options.events.onEvent(this.#onEvent);
  }

  /** FairRing: requests published and not taken that a turn could take now. */
  waitingRequests(): number {
    if (this.#halted || this.#stopping || this.#barrier !== null || this.#stalledOnBudget || this.#free.length === 0) return 0;
    if (this.#pool !== null && this.#poolFree.length < this.#maxRequestPages) return 0;
    return this.#back.unconsumedRequests();
  }

  /** FairRing: requests published and not yet answered (none on a halted or stopped ring but those in flight). */
  hasQueued(): boolean {
    if (this.#inflight > 0) return true;
    return !this.#halted && !this.#stopping && this.#back.unconsumedRequests() > 0;
  }

  get dataPath(): DataPath {
    return this.#o.dataPath ?? 'map';
  }

  /** Data path `persistent`: grants kept mapped now. */
  get persistentGrants(): number {
    return this.#persistent?.size ?? 0;
  }

  get inflight(): number {
    return this.#inflight;
  }

  get halted(): boolean {
    return this.#halted;
  }

  /**
   * An event from the frontend: an idle ring is served at once, from the event itself, rather than
   * behind the turns other (saturated) rings already have queued; a ring with a turn already queued
   * just keeps it. This is what keeps a lightly loaded guest's latency low next to a flooding one.
   */
  readonly #onEvent = (): void => {
    if (this.#scheduled || this.#halted || this.#stopping) return;
    this.#turn();
  };

  /** Schedules a turn (after the other rings' queued turns). */
  readonly kick = (): void => {
    if (this.#scheduled || this.#halted || this.#stopping) return;
    this.#scheduled = true;
    setImmediate(this.#turn);
  };

  readonly #turn = (): void => {
    this.#scheduled = false;
    this.#polling = false;
    // One reading for the turn, the start time of every request it takes (read earlier in this loop turn will do).
    this.#turnStart = tickNow();
    this.#takeRequests();
    this.#submitBatch();
    // No turn queued any more: responses deferred by #publish must not wait for one.
    if (!this.#scheduled && this.#unpushed > 0 && !this.#publishScheduled) {
      this.#publishScheduled = true;
      queueMicrotask(this.#publish);
    }
  };

  #setBusy(busy: boolean): void {
    if (this.#share !== null) this.#o.fairShare!.setBusy(this.#share, this, busy);
  }

  #takeRequests(): void {
    if (this.#halted || this.#stopping || this.#barrier !== null) return;
    this.#stalledOnBudget = false; // set again below if this turn stalls
    const fair = this.#o.fairShare;
    const share = this.#share;
    let budget = share === null ? TURN_COST : fair!.quantum(share);
    // Alone, on a store that takes a turn's requests in one system call, a turn takes at least this
    // many requests past the segment budget (FairShare.minRequests). Not on an in-process store: there
    // smaller turns let completions overlap the guest's next requests (64 KiB QD 32 on a RAM disk lost
    // a third with the floor).
    let floor = share === null || this.#o.device.info.batchedSubmission !== true ? 0 : fair!.minRequests(share);
    for (;;) {
      if (this.#back.requestProdOverflow()) {
        this.#halt();
        return;
      }
      let drained = false;
      let yielded = false; // another domain, further behind, has requests waiting
      while (budget > 0 || floor > 0) {
        if (this.#free.length === 0) return; // every slot in flight: completions kick us
        if (this.#pool !== null && this.#poolFree.length < this.#maxRequestPages) {
          this.#stalledOnBudget = true; // bounce pages run low: completions kick us
          return;
        }
        // Asked before every request, so a flooding domain's turn ends as soon as a neighbour that is
        // behind has requests waiting (FairShare.mayTake kicks its ring), not a quantum later.
        if (share !== null && !fair!.mayTake(share) && this.#back.unconsumedRequests() !== 0) {
          yielded = true;
          break;
        }
        if (!this.#o.budget.tryAcquire()) {
          this.#o.stats.oo_req++;
          this.#stalledOnBudget = true;
          this.#o.budget.waitForRoom(this.kick);
          return;
        }
        if (!this.#back.takeRequest(this.#slot)) {
          this.#o.budget.release();
          drained = true;
          break;
        }
        const pr = this.#free.pop()!;
        decodeRequest(this.#o.abi, this.#slot, pr.req);
        const r = pr.req;
        const segments = r.operation === BLKIF_OP.INDIRECT ? Math.min(r.indirectNrSegments, this.#maxIndirect) : Math.min(r.nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
        const cost = Math.max(1, segments);
        this.#lastCost = cost;
        pr.cost = cost;
        budget -= cost;
        floor--;
        if (share !== null) fair!.took(share, cost);
        this.#inflight++;
        this.#dispatch(pr);
        if (this.#barrier !== null) return;
      }
      if (!drained) {
        // Only a ring with requests left waits for another turn; one that took exactly its quantum
        // and has nothing more (a QD16 4 KiB guest) goes idle, so its next event is served at once.
        // It comes back after the other rings' queued turns (those of a domain it yielded to first).
        if (yielded || this.#back.finalCheckForRequests()) {
          this.#setBusy(true);
          this.kick();
          return;
        }
        this.#setBusy(false);
        return;
      }
      // Drained with most slots still in flight: completions bring us back (#respond).
      if (this.#inflight > this.#refillAt) {
        this.#setBusy(false);
        return;
      }
      // Drained: look again for a short while before re-arming req_event and sleeping. A guest
      // keeping a queue full refills within microseconds, and while req_event stays unarmed it
      // does not notify: both threads skip a wake-up (about 6 us each way here).
      if (POLL_MS > 0 && this.#unconsumedOrPoll()) continue;
      if (this.#polling) return;
      if (!this.#back.finalCheckForRequests()) {
        this.#setBusy(false);
        return;
      }
    }
  }

  /** True when requests arrived; otherwise starts (or continues) the drained ring's poll and returns false. */
  #unconsumedOrPoll(): boolean {
    if (this.#back.unconsumedRequests() !== 0) {
      this.#pollUntil = 0;
      return true;
    }
    // Only a domain alone may spend the backend thread on looking: next to others, that time is theirs.
    if (this.#stopping || this.#halted || (this.#share !== null && !this.#o.fairShare!.alone(this.#share))) return false;
    const now = tickNow(); // the turn just read the clock
    if (this.#pollUntil === 0) this.#pollUntil = now + POLL_MS;
    else if (now >= this.#pollUntil) {
      this.#pollUntil = 0;
      return false; // window over: re-arm and sleep
    }
    this.#polling = true;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#poll);
    }
    return false;
  }

  readonly #poll = (): void => {
    this.#polling = false;
    this.#turn();
  };

  #halt(): void {
    this.#halted = true;
    if (this.#share !== null) this.#o.fairShare!.leave(this.#share, this);
    this.#o.stats.errors.ring_overflow++;
    this.#o.logError(
      `${this.#o.name}: frontend produced more requests than the ring holds (req_prod ${this.#o.ring.reqProd}, ` +
        `responses ${this.#back.rspProdPvt}, ring size ${this.#o.ring.size}); halting ring processing`,
    );
  }

  #dispatch(pr: PendingRequest): void {
    const r = pr.req;
    pr.startNs = this.#turnStart * 1e6;
    pr.nseg = r.nrSegments;
    pr.segGref = r.segGref;
    pr.segFirst = r.segFirst;
    pr.segLast = r.segLast;
    // Flushes, barriers and discards must not overtake the reads and writes taken before them.
    if (r.operation !== BLKIF_OP.READ && r.operation !== BLKIF_OP.WRITE) this.#submitBatch();
    switch (r.operation) {
      case BLKIF_OP.READ:
        pr.kind = 'read';
        this.#o.stats.rd_req++;
        this.#readWrite(pr, false);
        return;
      case BLKIF_OP.WRITE:
        pr.kind = 'write';
        this.#o.stats.wr_req++;
        this.#readWrite(pr, true);
        return;
      case BLKIF_OP.FLUSH_DISKCACHE:
        pr.kind = 'flush';
        this.#o.stats.f_req++;
        this.#flush(pr);
        return;
      case BLKIF_OP.WRITE_BARRIER:
        pr.kind = 'flush';
        this.#o.stats.f_req++;
        this.#barrier = pr; // no new requests until everything before it is done
        this.#maybeRunBarrier();
        return;
      case BLKIF_OP.DISCARD:
        pr.kind = 'discard';
        this.#o.stats.ds_req++;
        this.#discard(pr);
        return;
      case BLKIF_OP.INDIRECT:
        this.#indirect(pr);
        return;
      default:
        this.#reject(pr, BLKIF_RSP.EOPNOTSUPP, 'bad_op', `unsupported operation ${r.operation}`);
    }
  }

  /**
   * BLKIF_OP_INDIRECT: a read or write whose segment list lives in up to 8 granted pages. The list is
   * read once into our own arrays (the guest may rewrite those pages meanwhile), then the request is
   * an ordinary read or write (Linux's dispatch_rw_block_io does the same).
   */
  #indirect(pr: PendingRequest): void {
    const r = pr.req;
    const max = this.#maxIndirect;
    const op = r.indirectOp;
    pr.kind = op === BLKIF_OP.WRITE ? 'write' : 'read';
    if (max === 0) {
      this.#reject(pr, BLKIF_RSP.EOPNOTSUPP, 'bad_op', 'indirect request, but feature-max-indirect-segments is not advertised');
      return;
    }
    if (op !== BLKIF_OP.READ && op !== BLKIF_OP.WRITE) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_op', `indirect request for operation ${op} (only read and write may be indirect)`);
      return;
    }
    if (op === BLKIF_OP.READ) this.#o.stats.rd_req++;
    else this.#o.stats.wr_req++;
    const nseg = r.indirectNrSegments;
    if (nseg < 1 || nseg > max) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_segments', `indirect request with ${nseg} segments (at most ${max})`);
      return;
    }
    const store = (pr.indirect ??= { gref: new Uint32Array(max), first: new Uint8Array(max), last: new Uint8Array(max) });
    if (!this.#readIndirectPages(pr, nseg, store)) return;
    pr.nseg = nseg;
    pr.segGref = store.gref;
    pr.segFirst = store.first;
    pr.segLast = store.last;
    this.#readWrite(pr, op === BLKIF_OP.WRITE, max);
  }

  /** Copies an indirect request's segment list out of its granted pages; false after answering with an error. */
  #readIndirectPages(pr: PendingRequest, nseg: number, store: { gref: Uint32Array; first: Uint8Array; last: Uint8Array }): boolean {
    const r = pr.req;
    const pages = Math.ceil(nseg / SEGS_PER_INDIRECT_FRAME);
    const domid = this.#o.frontendDomid;
    const decode = (page: Uint8Array, p: number): void => {
      const at = p * SEGS_PER_INDIRECT_FRAME;
      decodeIndirectSegments(page, Math.min(SEGS_PER_INDIRECT_FRAME, nseg - at), store.gref, store.first, store.last, at);
    };
    const scratch = this.#indirectScratch;
    if (scratch !== null) {
      const ops: GrantCopyOp[] = [];
      for (let p = 0; p < pages; p++) {
        ops.push({ source: { ref: r.indirectGrefs[p]!, domid, offset: 0 }, dest: { buffer: scratch.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE) }, length: PAGE_SIZE });
      }
      const status = this.#o.grants.copy(ops);
      const bad = status.findIndex((st) => st !== GNTST.okay);
      if (bad >= 0) {
        this.#reject(pr, BLKIF_RSP.ERROR, 'bad_grant', `indirect page ${bad} (gref ${r.indirectGrefs[bad]}): grant copy failed with GNTST ${status[bad]}`);
        return false;
      }
      for (let p = 0; p < pages; p++) decode(scratch.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), p);
      return true;
    }
    // blkfront takes its indirect pages from its persistent pool too
    if (this.#persistent !== null && this.#persistentPages(r.indirectGrefs, pages)) {
      for (let p = 0; p < pages; p++) decode(this.#segmentPages[p]!, p);
      return true;
    }
    let mapping: GrantMapping;
    try {
      mapping = this.#o.grants.map(domid, r.indirectGrefs, pages, false);
    } catch (err) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_grant', `indirect pages: ${err instanceof Error ? err.message : String(err)}`);
      return false;
    }
    try {
      for (let p = 0; p < pages; p++) decode(mapping.pages[p]!, p);
    } finally {
      mapping.unmap();
    }
    return true;
  }

  /** Checks segments and range; returns the sector count or -1 after answering with an error. */
  #validateSegments(pr: PendingRequest, minSegments: number, maxSegments = BLKIF_MAX_SEGMENTS_PER_REQUEST): number {
    const r = pr.req;
    const nseg = pr.nseg;
    if (nseg < minSegments || nseg > maxSegments) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_segments', `bad segment count ${nseg}`);
      return -1;
    }
    const mask = this.#sectorsPerBlock - 1;
    let sectors = 0;
    const segFirst = pr.segFirst;
    const segLast = pr.segLast;
    for (let i = 0; i < nseg; i++) {
      const first = segFirst[i]!;
      const last = segLast[i]!;
      if (last > 7 || first > last) {
        this.#reject(pr, BLKIF_RSP.ERROR, 'bad_segments', `segment ${i}: first_sect ${first}, last_sect ${last}`);
        return -1;
      }
      const n = last - first + 1;
      if (((first | n) & mask) !== 0) {
        this.#reject(pr, BLKIF_RSP.ERROR, 'misaligned', `segment ${i} is not aligned to the ${this.#o.device.info.logicalBlockSize}-byte block`);
        return -1;
      }
      sectors += n;
    }
    if (nseg > 0 && !this.#checkRange(pr, r.sectorNumber, sectors)) return -1;
    return sectors;
  }

  #checkRange(pr: PendingRequest, sector: number, sectors: number): boolean {
    const mask = this.#sectorsPerBlock - 1;
    const diskSectors = this.#o.device.info.size / SECTOR_SIZE;
    if (sector + sectors > diskSectors || sector + sectors < sector) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_range', `sectors ${sector}+${sectors} past the end (${diskSectors} sectors)`);
      return false;
    }
    // sector_number is a u64: compare in halves so huge values cannot alias small ones.
    if ((sector % this.#sectorsPerBlock) !== 0 || (sectors & mask) !== 0) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'misaligned', `sector ${sector}+${sectors} not aligned to the logical block`);
      return false;
    }
    return true;
  }

  /**
   * Builds the request's I/O vector over the guest's pages (data path `map`) or over bounce pages
   * (`copy`, filling them from the guest first when the device will read them); false after
   * answering with an error.
   */
  #attachSegments(pr: PendingRequest, deviceWrites: boolean, deferCopy = false): boolean {
    const nseg = pr.nseg;
    const iov = pr.iov; // empty: #respond emptied it
    const pool = this.#pool;
    if (pool !== null) {
      for (let i = 0; i < nseg; i++) {
        const page = this.#poolFree.pop()!; // #takeRequests saw enough free pages
        pr.bouncePages.push(page);
        iov[i] = pool.subarray(page * PAGE_SIZE + pr.segFirst[i]! * SECTOR_SIZE, page * PAGE_SIZE + (pr.segLast[i]! + 1) * SECTOR_SIZE);
      }
      return deviceWrites || deferCopy || this.#copySegments(pr, false);
    }
    if (this.#persistent !== null && this.#persistentPages(pr.segGref, nseg)) {
      truncate(iov, mergeSegments(this.#segmentPages, pr.segFirst, pr.segLast, nseg, iov));
      return true;
    }
    let mapping: GrantMapping;
    try {
      mapping = this.#o.grants.map(this.#o.frontendDomid, pr.segGref, nseg, deviceWrites);
    } catch (err) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_grant', err instanceof Error ? err.message : String(err));
      return false;
    }
    pr.mapping = mapping;
    truncate(iov, mergeSegments(mapping.pages, pr.segFirst, pr.segLast, nseg, iov));
    return true;
  }

  /**
   * Data path `persistent`: the pages of refs[0..count) in #segmentPages, mapping those not kept yet
   * (writable, one call each) and keeping them. False when that cannot be done (the ring keeps its
   * limit, or a ref does not map writable): the caller then maps per request, which also answers a
   * bad grant with the right error.
   */
  #persistentPages(refs: ArrayLike<number>, count: number): boolean {
    const kept = this.#persistent!;
    const missing = this.#missingRefs;
    truncate(missing, 0);
    for (let i = 0; i < count; i++) {
      const ref = refs[i]!;
      if (!kept.has(ref) && !missing.includes(ref)) missing.push(ref);
    }
    if (missing.length > 0) {
      if (kept.size + missing.length > MAX_PERSISTENT_GRANTS) return false;
      // One mapping a grant: each is kept on its own, and a page that fails to map writable (a
      // read-only grant) leaves those before it kept and the request to the per-request path.
      const one = this.#oneRef;
      for (let j = 0; j < missing.length; j++) {
        one[0] = missing[j]!;
        let mapping: GrantMapping;
        try {
          mapping = this.#o.grants.map(this.#o.frontendDomid, one, 1, true);
        } catch {
          return false;
        }
        this.#persistentMappings.push(mapping);
        kept.set(missing[j]!, mapping.pages[0]!);
      }
    }
    const pages = this.#segmentPages;
    truncate(pages, count);
    for (let i = 0; i < count; i++) pages[i] = kept.get(refs[i]!)!; // in order: grows a shorter array
    return true;
  }

  /** Data path `copy`: one GNTTABOP_copy batch between the guest's segments and the bounce vector; false after answering with an error. */
  #copySegments(pr: PendingRequest, toGuest: boolean): boolean {
    const ops: GrantCopyOp[] = [];
    this.#copyOps(pr, toGuest, ops);
    return this.#copied(pr, toGuest, this.#o.grants.copy(ops), 0);
  }

  /** Appends the GNTTABOP_copy ops between the request's guest segments and its bounce vector. */
  #copyOps(pr: PendingRequest, toGuest: boolean, ops: GrantCopyOp[]): void {
    const domid = this.#o.frontendDomid;
    for (let i = 0; i < pr.nseg; i++) {
      const guest = { ref: pr.segGref[i]!, domid, offset: pr.segFirst[i]! * SECTOR_SIZE };
      const local = { buffer: pr.iov[i]! };
      ops.push(toGuest ? { source: local, dest: guest, length: local.buffer.length } : { source: guest, dest: local, length: local.buffer.length });
    }
  }

  /** Checks the request's copy statuses (from `at` in `status`); false after answering with an error. */
  #copied(pr: PendingRequest, toGuest: boolean, status: readonly number[], at: number): boolean {
    for (let i = 0; i < pr.nseg; i++) {
      const st = status[at + i];
      if (st !== GNTST.okay) {
        this.#reject(pr, BLKIF_RSP.ERROR, 'bad_grant', `segment ${i} (gref ${pr.segGref[i]}): grant copy ${toGuest ? 'to' : 'from'} the guest failed with GNTST ${st}`);
        return false;
      }
    }
    return true;
  }

  /**
   * Data path `copy`: the writes taken this turn fetch their data from the guest in one GNTTABOP_copy
   * batch, not one each; on real Xen every batch is an ioctl and a hypercall. Then they go to the
   * store in the order they were taken. Runs before anything is sent to the store.
   */
  #flushCopyIn(): void {
    const queue = this.#copyIn;
    if (queue.length === 0) return;
    const taken = queue.splice(0, queue.length);
    const ops: GrantCopyOp[] = [];
    for (const pr of taken) this.#copyOps(pr, false, ops);
    const status = this.#o.grants.copy(ops);
    let at = 0;
    for (const pr of taken) {
      const ok = this.#copied(pr, false, status, at);
      at += pr.nseg;
      if (ok) this.#addToBatch(pr, true);
    }
  }

  /** The store finished a request's I/O: a bounced read still has to reach the guest. */
  ioDone(pr: PendingRequest): void {
    if (pr.bouncePages.length > 0 && pr.kind === 'read' && !this.#copySegments(pr, true)) return;
    this.complete(pr, BLKIF_RSP.OKAY, null);
  }

  #readWrite(pr: PendingRequest, write: boolean, maxSegments = BLKIF_MAX_SEGMENTS_PER_REQUEST): void {
    if (write && this.#o.readOnly) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'read_only', 'write to a read-only disk');
      return;
    }
    const sectors = this.#validateSegments(pr, 1, maxSegments);
    if (sectors < 0) return;
    // A read fills guest pages, so its grants must be writable; a write only reads them. A write's
    // data is fetched with the turn's other writes (#flushCopyIn) on the copy path.
    const deferCopy = write && this.#pool !== null;
    if (!this.#attachSegments(pr, !write, deferCopy)) return;
    pr.sectors = sectors;
    pr.bytes = sectors * SECTOR_SIZE;
    if (deferCopy) this.#copyIn.push(pr);
    else this.#addToBatch(pr, write);
  }

  #addToBatch(pr: PendingRequest, write: boolean): void {
    const offset = pr.req.sectorNumber * SECTOR_SIZE;
    // Requests taken in one turn that continue each other (a 64 KiB guest I/O arrives as 44 + 20 KiB)
    // go to the store as one vectored call, as the kernel's block layer merges bios.
    const batch = this.#batch;
    if (batch.length > 0 && (batch.write !== write || batch.end !== offset || batch.length === MAX_MERGE || batch.iovCount + pr.iov.length > MAX_MERGE_IOV)) {
      this.#submitBatch();
    }
    if (batch.length === 0) {
      batch.write = write;
      batch.offset = offset;
      batch.end = offset;
      batch.iovCount = 0;
    }
    batch.members[batch.length++] = pr;
    batch.end += pr.bytes;
    batch.iovCount += pr.iov.length;
  }

  /** Sends the pending merged read or write (if any) to the store. */
  #submitBatch(): void {
    this.#flushCopyIn();
    const batch = this.#batch;
    const n = batch.length;
    if (n === 0) return;
    batch.length = 0;
    const device = this.#o.device;
    let io: Promise<void>;
    let done: () => void;
    let fail: (err: unknown) => void;
    if (n === 1) {
      const pr = batch.members[0]!;
      batch.members[0] = null;
      done = pr.onDone;
      fail = pr.onFail;
      try {
        io = batch.write ? device.writev(batch.offset, pr.iov) : device.readv(batch.offset, pr.iov);
      } catch (err) {
        io = Promise.reject(err); // a store that throws instead of rejecting must not kill the ring
      }
    } else {
      const members = batch.members.slice(0, n) as PendingRequest[];
      batch.members.fill(null, 0, n);
      const iov: Uint8Array[] = [];
      for (const pr of members) for (const v of pr.iov) iov.push(v);
      done = () => {
        for (const pr of members) pr.onDone();
      };
      fail = (err: unknown) => {
        for (const pr of members) pr.onFail(err);
      };
      try {
        io = batch.write ? device.writev(batch.offset, iov) : device.readv(batch.offset, iov);
      } catch (err) {
        io = Promise.reject(err);
      }
    }
    io.then(done, fail);
  }

  /** FLUSH_DISKCACHE: flush first (every write completed before it becomes durable), then its data, if any. */
  #flush(pr: PendingRequest): void {
    const sectors = this.#validateSegments(pr, 0);
    if (sectors < 0) return;
    if (sectors > 0) {
      if (this.#o.readOnly) {
        this.#reject(pr, BLKIF_RSP.ERROR, 'read_only', 'flush with data to a read-only disk');
        return;
      }
      if (!this.#attachSegments(pr, false)) return;
    }
    pr.sectors = sectors;
    pr.bytes = sectors * SECTOR_SIZE;
    const device = this.#o.device;
    const flushed = Promise.resolve().then(() => device.flush());
    if (sectors === 0) flushed.then(pr.onDone, pr.onFail);
    else flushed.then(() => device.writev(pr.req.sectorNumber * SECTOR_SIZE, pr.iov)).then(pr.onDone, pr.onFail);
  }

  #maybeRunBarrier(): void {
    const pr = this.#barrier;
    if (pr === null || this.#inflight !== 1) return; // the barrier itself is the one left
    this.#flush(pr);
  }

  #discard(pr: PendingRequest): void {
    const r = pr.req;
    if (!this.#o.discard) {
      this.#reject(pr, BLKIF_RSP.EOPNOTSUPP, 'bad_op', 'discard not advertised');
      return;
    }
    if ((r.discardFlag & BLKIF_DISCARD_SECURE) !== 0 && this.#o.discardSecure !== true) {
      this.#reject(pr, BLKIF_RSP.EOPNOTSUPP, 'bad_op', 'secure discard not advertised');
      return;
    }
    if (this.#o.readOnly) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'read_only', 'discard on a read-only disk');
      return;
    }
    if (!this.#checkRange(pr, r.sectorNumber, r.nrSectors)) return;
    pr.sectors = 0;
    pr.bytes = 0;
    Promise.resolve()
      .then(() => this.#o.device.discard(r.sectorNumber * SECTOR_SIZE, r.nrSectors * SECTOR_SIZE))
      .then(pr.onDone, pr.onFail);
  }

  #reject(pr: PendingRequest, status: number, kind: ErrorKind, why: string): void {
    this.#o.stats.errors[kind]++;
    const r = pr.req;
    this.#o.logError(`${this.#o.name}: request id ${r.idHi ? `${r.idHi}:` : ''}${r.idLo} op ${r.operation} sector ${r.sectorNumber}: ${why}`);
    this.#respond(pr, status);
  }

  /** Called when the block device settles a request. */
  complete(pr: PendingRequest, status: number, err: unknown): void {
    if (err !== null) {
      this.#o.stats.errors.io_error++;
      this.#o.logError(`${this.#o.name}: ${pr.kind} at sector ${pr.req.sectorNumber} failed: ${err instanceof Error ? err.message : String(err)}`);
    } else {
      const stats = this.#o.stats;
      if (pr.kind === 'read') stats.rd_sect += pr.sectors;
      else if (pr.kind === 'write' || (pr.kind === 'flush' && pr.sectors > 0)) stats.wr_sect += pr.sectors;
      // The turn's reading, unless the request is from this same turn (a RAM disk's): then a fresh one.
      let nowNs = tickNow() * 1e6;
      if (nowNs <= pr.startNs) nowNs = freshNow() * 1e6;
      stats.latency[pr.kind].record(nowNs - pr.startNs);
    }
    this.#respond(pr, status);
  }

  #respond(pr: PendingRequest, status: number): void {
    if (pr.mapping !== null) {
      pr.mapping.unmap();
      pr.mapping = null;
    }
    const pages = pr.bouncePages;
    for (let i = 0; i < pages.length; i++) this.#poolFree.push(pages[i]!);
    truncate(pages, 0);
    truncate(pr.iov, 0);
    const r = pr.req;
    const operation = r.operation === BLKIF_OP.INDIRECT ? r.indirectOp : r.operation;
    encodeResponse(this.#o.abi, this.#rsp, r.idLo, r.idHi, operation, status);
    this.#back.putResponse(this.#rsp);
    this.#unpushed++;
    // Completions that land together (a RAM disk finishes a whole turn's requests in one microtask
    // run) are published with one push and at most one notify, not one wake-up of the guest each.
    if (!this.#publishScheduled) {
      this.#publishScheduled = true;
      queueMicrotask(this.#publish);
    }
    this.#inflight--;
    // Segments served: a read or write (or a flush with data) that succeeded counts its segments,
    // anything else 1. (The fair share charged what the request asked for when it was taken: a
    // garbage indirect request naming 256 segments costs its domain 256 even though it is refused.)
    const segments = status === BLKIF_RSP.OKAY && pr.kind !== 'discard' && pr.nseg > 1 ? pr.nseg : 1;
    const stats = this.#o.stats;
    stats.seg += segments;
    if (this.#share !== null && this.#o.fairShare!.answered(this.#share)) stats.seg_contended += segments;
    this.#o.budget.release();
    this.#free.push(pr);
    if (this.#barrier === pr) {
      this.#barrier = null;
      this.kick();
    } else if (this.#barrier !== null) {
      this.#maybeRunBarrier();
    } else if (this.#inflight === this.#refillAt || this.#stalledOnBudget) {
      // We may have stopped taking requests: too many in flight (#refillAt), no slot, or no budget.
      this.#stalledOnBudget = false;
      this.kick();
    }
    if (this.#inflight === 0 && this.#drained !== null) {
      this.#push(); // the ring is about to be unmapped: publish now, not in a microtask
      const done = this.#drained;
      this.#drained = null;
      done();
    }
  }

  /** Stops taking requests and resolves once every request in flight has been answered. */
  stop(): Promise<void> {
    this.#stopping = true;
    if (this.#share !== null) this.#o.fairShare!.leave(this.#share, this);
    if (this.#unpushed > 0) this.#push(); // coalesced answers: the ring may be unmapped once we resolve
    const drained = this.#inflight === 0 ? Promise.resolve() : new Promise<void>((resolve) => {
      this.#drained = resolve;
    });
    // Kept grants go only once no I/O can still be reading or writing their pages.
    return drained.then(() => this.#releasePersistent());
  }

  #releasePersistent(): void {
    this.#persistent?.clear();
    const mappings = this.#persistentMappings.splice(0);
    for (const mapping of mappings) mapping.unmap();
  }
}
