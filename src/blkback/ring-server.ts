// The data plane of one blkif ring: take requests off the shared ring (each copied out of shared
// memory once), validate them (request-validator.ts), reach the guest's data through the ring's
// data path (data-path/: map, persistent grants or grant copy), hand it to the block device as an
// I/O vector, and answer. Everything the frontend wrote is untrusted.
//
//   event ──► turn(): up to TURN_COST segments ──► validate ──► attach data ──► device.readv/writev
//                ▲                                                                  │
//                └── final check sets req_event ◄── respond: slot, push, notify ◄───┘
//
// A domain alone, with requests in flight, is not asked to notify us (req_event left unarmed): its
// next requests are looked for right after we answer it, which is when a frontend refills, by
// spinning briefly for them (#afterAnswers). Every wake-up on real Xen is system calls (the event's
// read and unmask, the loop's epoll) for both threads; this way a guest keeping its queue full is
// served on the wake-ups its completions cost anyway.
import {
  BLKIF_OP,
  BLKIF_RSP,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  SECTOR_SIZE,
  SEGS_PER_INDIRECT_FRAME,
} from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { BlkifRequest, decodeRequest, encodeResponse } from '../blkif/codec.ts';
import { BackRing } from '../blkif/ring.ts';
import type { SharedRing } from '../blkif/ring.ts';
import type { BlockDevice } from '../block/types.ts';
import type { BackendGrants, EventChannel, GrantMapping } from '../hypervisor/types.ts';
import type { VbdStats } from './stats.ts';
import { countedOperation, RequestExtent, validateRequest, validateSegments } from './request-validator.ts';
import type { DiskLimits, Rejection } from './request-validator.ts';
import { createDataPath } from './data-path/create.ts';
import { truncate } from './data-path/segment-views.ts';
import type { DataPath, GuestDataPath, IndirectRequest, SegmentList, SegmentRequest } from './data-path/types.ts';
import type { InflightBudget } from './inflight-budget.ts';
import type { DomainShare, FairRing, FairShare } from './fair-share.ts';
import { freshNow, tickNow } from '../internal/tick-clock.ts';

// Where the rest of blkback (and its tests) have always found them.
export type { DataPath } from './data-path/types.ts';
export { mergeSegments } from './data-path/segment-views.ts';

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
 * How long a ring whose answers were just pushed spins for the frontend's next requests before it
 * asks to be notified (#afterAnswers): 50 us, a guest's wake-up and refill here. A spin, not a poll
 * of the event loop: each round of the loop is an epoll_pwait, and polling with setImmediate cost
 * more system calls per request than the notifications it saved.
 */
const SPIN_MS = 0.05;
/** Spin iterations between clock readings (a clock reading is a system call in a Xen PV dom0). */
const SPIN_CLOCK_EVERY = 256;
/**
 * The longest a request can wait unseen on a ring left unarmed while its requests are in flight (a
 * frontend that submits without waiting for answers, behind slow I/O): then req_event is armed.
 */
const UNARMED_MAX_MS = 1;
/** Requests in flight from which a ring stays unarmed even after a spin saw no new request. */
const UNARMED_AFTER_MISS = 8;

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
  /** Default `map`; `persistent` only once the frontend agreed to feature-persistent (data-path/types.ts). */
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

class PendingRequest implements SegmentRequest, IndirectRequest {
  readonly req = new BlkifRequest();
  /** The request's segments: the ring slot's own (direct), or read once from its indirect pages. */
  nseg = 0;
  segGref: Uint32Array = this.req.segGref;
  segFirst: Uint8Array = this.req.segFirst;
  segLast: Uint8Array = this.req.segLast;
  /** Storage for an indirect request's segments, allocated on first use. */
  indirect: SegmentList | null = null;
  /** What validation accepted (filled in place: validating allocates nothing). */
  readonly extent = new RequestExtent();
  /** What the data path holds for the request (SegmentRequest). */
  mapping: GrantMapping | null = null;
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

  // IndirectRequest: where the data path finds the segment list of an indirect request, and puts it.
  get indirectRefs(): Uint32Array {
    return this.req.indirectGrefs;
  }

  get indirectPages(): number {
    return this.extent.indirectPages;
  }

  get indirectCount(): number {
    return this.extent.segments;
  }

  get segmentList(): SegmentList {
    return this.indirect!; // allocated before the request is queued for its list (#indirect)
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
  /** The disk as the validator sees it; its size is read at the start of each turn (a resize lands between turns). */
  readonly #disk: { -readonly [K in keyof DiskLimits]: DiskLimits[K] };
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
  /** How the guest's data reaches the store: chosen once, here, when the ring connects. */
  readonly #path: GuestDataPath;
  /** Writes taken this turn whose data the path has still to fetch (#fetchWrites), and the spare list swapped in while it does. */
  #toFetch: PendingRequest[] = [];
  #fetchSpare: PendingRequest[] = [];
  /** Indirect requests taken this turn whose segment lists the path has still to read (#readIndirectLists), and the spare list. */
  #toList: PendingRequest[] = [];
  #listSpare: PendingRequest[] = [];
  /** Reads the store has completed whose data the path has still to deliver (#deliverReads), and the spare list. */
  #toDeliver: PendingRequest[] = [];
  #deliverSpare: PendingRequest[] = [];
  /** Responses written to the ring but not yet pushed. */
  #unpushed = 0;
  readonly #coalesceMax: number;
  readonly #maxIndirect: number;
  /**
   * Drained with requests in flight, the domain alone: req_event is not armed, and we look for new
   * requests when we next answer (#afterAnswers), or after UNARMED_MAX_MS (#unarmedTimer).
   */
  #unarmed = false;
  #afterAnswersQueued = false;
  #unarmedTimer: NodeJS.Timeout | null = null;
  /** False for one turn after a spin that saw nothing, with few requests in flight (#afterAnswers). */
  #mayLeaveUnarmed = true;
  /** Segments of the last request taken: the ring's queue is weighed in turn quanta with it. */
  #lastCost = 1;

  readonly #publish = (): void => {
    this.#publishScheduled = false;
    // A deferred push happens after the queued turn (see #turn), at #coalesceMax answers, or once we
    // hold as many answers as the frontend still has queued: past that point it is we who leave the
    // frontend idle. (A guest keeping 32 requests in flight on a 512-slot ring waited for all 32 in
    // one push and refilled while we slept: 64 KiB QD32 reads went from 2.9 to 3.8-4.3 GB/s.)
    const queued = this.#back.unconsumedRequests();
    if (this.#scheduled && !this.#stopping && this.#unpushed < this.#coalesceMax && this.#unpushed < queued && queued * this.#lastCost >= COALESCE_QUEUED)
      return;
    this.#push();
  };

  #push(): void {
    this.#unpushed = 0;
    if (this.#back.pushResponsesAndCheckNotify()) this.#o.events.notify();
    if (this.#unarmed && !this.#afterAnswersQueued) {
      this.#afterAnswersQueued = true;
      queueMicrotask(this.#afterAnswers); // after the rest of this batch of completions is answered
    }
  }

  /**
   * Answers went out on a ring left unarmed: the frontend refills when it sees them. Spin a little
   * for its requests (alone: nobody else is kept waiting), then take them, or arm req_event and sleep.
   */
  readonly #afterAnswers = (): void => {
    this.#afterAnswersQueued = false;
    if (!this.#unarmed || this.#scheduled || this.#halted || this.#stopping) return;
    const back = this.#back;
    if (back.unconsumedRequests() === 0 && this.#alone()) {
      const deadline = performance.now() + SPIN_MS;
      for (let n = 1; back.unconsumedRequests() === 0; n++) {
        if (n % SPIN_CLOCK_EVERY === 0 && performance.now() >= deadline) break;
      }
    }
    this.#unarmed = false;
    // None came: the frontend is slow to refill. With few requests in flight the next answer may be
    // far off, so this turn arms req_event when it drains; with many, the next answer is near.
    this.#mayLeaveUnarmed = back.unconsumedRequests() !== 0 || this.#inflight >= UNARMED_AFTER_MISS;
    this.#turn();
  };

  /** The unarmed ring's safety net: nothing was answered for UNARMED_MAX_MS. */
  readonly #unarmedExpired = (): void => {
    if (!this.#unarmed || this.#scheduled || this.#halted || this.#stopping) return;
    this.#unarmed = false;
    this.#mayLeaveUnarmed = false;
    this.#turn();
  };

  #alone(): boolean {
    return this.#share === null || this.#o.fairShare!.alone(this.#share);
  }

  /**
   * The ring has nothing more to take now: leave req_event unarmed if answers will bring us back
   * (requests in flight, the domain alone), else arm it. False when the final check found requests.
   */
  #sleep(): boolean {
    const lazy = this.#mayLeaveUnarmed && this.#inflight > 0 && this.#alone();
    this.#mayLeaveUnarmed = true;
    if (lazy) {
      this.#unarmed = true;
      if (this.#unarmedTimer === null) {
        this.#unarmedTimer = setTimeout(this.#unarmedExpired, UNARMED_MAX_MS);
        this.#unarmedTimer.unref();
      } else this.#unarmedTimer.refresh();
      return true;
    }
    return !this.#back.finalCheckForRequests();
  }

  constructor(options: RingServerOptions) {
    this.#o = options;
    // Attach to the ring as the frontend left it (BACK_RING_ATTACH): reconnects keep their indices.
    this.#back = new BackRing(options.ring, true);
    this.#slot = new Uint8Array(options.ring.stride);
    this.#rsp = new Uint8Array(options.ring.stride);
    for (let i = 0; i < options.ring.size; i++) this.#free.push(new PendingRequest(this));
    this.#coalesceMax = Math.max(TURN_COST, options.ring.size >>> 2);
    this.#refillAt = Math.max(1, Math.floor((options.ring.size * 3) / 4));
    this.#maxIndirect = Math.max(0, Math.min(options.maxIndirectSegments ?? 0, SEGS_PER_INDIRECT_FRAME * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST));
    const device = options.device;
    this.#disk = {
      sectors: device.info.size / SECTOR_SIZE,
      sectorsPerBlock: device.info.logicalBlockSize / SECTOR_SIZE,
      readOnly: options.readOnly,
      discard: options.discard,
      discardSecure: options.discardSecure === true,
      maxIndirectSegments: this.#maxIndirect,
    };
    this.#path = createDataPath(options.dataPath ?? 'map', {
      grants: options.grants,
      frontendDomid: options.frontendDomid,
      ringSize: options.ring.size,
      maxRequestSegments: Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, this.#maxIndirect),
    });
    this.#share = options.fairShare?.join(options.frontendDomid, this) ?? null;
    options.events.onEvent(this.#onEvent);
  }

  /** FairRing: requests published and not taken that a turn could take now. */
  waitingRequests(): number {
    if (this.#halted || this.#stopping || this.#barrier !== null || this.#stalledOnBudget || this.#free.length === 0) return 0;
    if (!this.#path.canTakeRequest()) return 0;
    return this.#back.unconsumedRequests();
  }

  /** FairRing: requests published and not yet answered (none on a halted or stopped ring but those in flight). */
  hasQueued(): boolean {
    if (this.#inflight > 0) return true;
    return !this.#halted && !this.#stopping && this.#back.unconsumedRequests() > 0;
  }

  get dataPath(): DataPath {
    return this.#path.kind;
  }

  /** Data path `persistent`: grants kept mapped now. */
  get persistentGrants(): number {
    return this.#path.grantsKept;
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
    this.#unarmed = false; // decided again when this turn ends (#sleep)
    // One reading for the turn, the start time of every request it takes (read earlier in this loop turn will do).
    this.#turnStart = tickNow();
    this.#disk.sectors = this.#o.device.info.size / SECTOR_SIZE;
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
        if (!this.#path.canTakeRequest()) {
          this.#stalledOnBudget = true; // the data path runs short (bounce pages): completions kick us
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
        const segments =
          r.operation === BLKIF_OP.INDIRECT ? Math.min(r.indirectNrSegments, this.#maxIndirect) : Math.min(r.nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
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
        if (yielded || this.#back.unconsumedRequests() !== 0 || !this.#sleep()) {
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
      if (this.#sleep()) {
        this.#setBusy(false);
        return;
      }
    }
  }

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
    pr.nseg = 0;
    pr.segGref = r.segGref;
    pr.segFirst = r.segFirst;
    pr.segLast = r.segLast;
    // Flushes, barriers and discards must not overtake the reads and writes taken before them (an
    // indirect request is a read or a write: it joins the turn's batch).
    if (r.operation !== BLKIF_OP.READ && r.operation !== BLKIF_OP.WRITE && r.operation !== BLKIF_OP.INDIRECT) this.#submitBatch();
    this.#count(r);
    const checked = validateRequest(r, this.#disk, pr.extent);
    if (!checked.accepted) {
      this.#reject(pr, checked);
      return;
    }
    pr.nseg = checked.segments;
    switch (checked.operation) {
      case BLKIF_OP.READ:
      case BLKIF_OP.WRITE:
        pr.kind = checked.operation === BLKIF_OP.READ ? 'read' : 'write';
        if (checked.indirect) this.#indirect(pr);
        else this.#readWrite(pr, checked.operation === BLKIF_OP.WRITE);
        return;
      case BLKIF_OP.FLUSH_DISKCACHE:
        pr.kind = 'flush';
        this.#flush(pr);
        return;
      case BLKIF_OP.WRITE_BARRIER:
        pr.kind = 'flush';
        this.#barrier = pr; // no new requests until everything before it is done
        this.#maybeRunBarrier();
        return;
      default:
        pr.kind = 'discard';
        this.#discard(pr);
    }
  }

  /** The per-operation counters (Linux's rd_req, wr_req, f_req, ds_req) count a request whether or not it is then refused. */
  #count(r: BlkifRequest): void {
    const stats = this.#o.stats;
    switch (countedOperation(r, this.#disk)) {
      case BLKIF_OP.READ:
        stats.rd_req++;
        break;
      case BLKIF_OP.WRITE:
        stats.wr_req++;
        break;
      case BLKIF_OP.FLUSH_DISKCACHE:
      case BLKIF_OP.WRITE_BARRIER:
        stats.f_req++;
        break;
      case BLKIF_OP.DISCARD:
        stats.ds_req++;
        break;
    }
  }

  /**
   * BLKIF_OP_INDIRECT: a read or write whose segment list lives in up to 8 granted pages. The list is
   * read once into our own arrays (the guest may rewrite those pages meanwhile), checked, and the
   * request is then an ordinary read or write (Linux's dispatch_rw_block_io does the same). The
   * lists of a turn's indirect requests are read together (#readIndirectLists), before anything
   * goes to the store.
   */
  #indirect(pr: PendingRequest): void {
    const max = this.#maxIndirect;
    pr.indirect ??= { gref: new Uint32Array(max), first: new Uint8Array(max), last: new Uint8Array(max) };
    this.#toList.push(pr);
  }

  #readIndirectLists(): void {
    const taken = this.#toList;
    if (taken.length === 0) return;
    // Swapped first: a batch submitted from a callback comes back here and finds nothing.
    this.#toList = this.#listSpare;
    this.#listSpare = taken;
    this.#path.readIndirect(taken, taken.length, this.#listRead, this.#notFetched);
    truncate(taken, 0);
  }

  readonly #listRead = (pr: PendingRequest): void => {
    const store = pr.indirect!;
    pr.segGref = store.gref;
    pr.segFirst = store.first;
    pr.segLast = store.last;
    const checked = validateSegments(store.first, store.last, this.#disk, pr.extent);
    if (!checked.accepted) {
      this.#reject(pr, checked);
      return;
    }
    this.#readWrite(pr, pr.extent.operation === BLKIF_OP.WRITE);
  };

  /**
   * The store finished a request's I/O. A read's data may still have to reach the guest: the reads
   * completed together (a reaped batch of native AIO completions settles in one microtask run) are
   * delivered together, in a microtask, and answered only once their data is the guest's.
   */
  ioDone(pr: PendingRequest): void {
    if (pr.kind === 'read' && this.#path.delivers) {
      this.#toDeliver.push(pr);
      if (this.#toDeliver.length === 1) queueMicrotask(this.#deliverReads);
      return;
    }
    this.complete(pr, BLKIF_RSP.OKAY, null);
  }

  readonly #deliverReads = (): void => {
    const taken = this.#toDeliver;
    if (taken.length === 0) return;
    this.#toDeliver = this.#deliverSpare;
    this.#deliverSpare = taken;
    this.#path.deliver(taken, taken.length, this.#delivered, this.#notFetched);
    truncate(taken, 0);
  };

  readonly #delivered = (pr: PendingRequest): void => this.complete(pr, BLKIF_RSP.OKAY, null);

  #readWrite(pr: PendingRequest, write: boolean): void {
    // A read fills guest pages, so its grants must be writable; a write only reads them.
    const attached = this.#path.attach(pr, !write);
    if (typeof attached === 'object') {
      this.#reject(pr, attached);
      return;
    }
    pr.sectors = pr.extent.sectors;
    pr.bytes = pr.sectors * SECTOR_SIZE;
    if (attached === 'ready') this.#addToBatch(pr, write);
    else this.#toFetch.push(pr); // fetched with the turn's other writes, before anything goes to the store
  }

  /**
   * The writes taken this turn whose data the path still has to bring in get it in one batch (on
   * real Xen one GNTTABOP_copy hypercall, not one each), then join the store's batch in the order
   * they were taken. Runs before anything is sent to the store.
   */
  #fetchWrites(): void {
    const taken = this.#toFetch;
    if (taken.length === 0) return;
    // Swapped first: a batch submitted from #addToBatch below comes back here and finds nothing.
    this.#toFetch = this.#fetchSpare;
    this.#fetchSpare = taken;
    this.#path.fetch(taken, taken.length, this.#fetchedWrite, this.#notFetched);
    truncate(taken, 0);
  }

  readonly #fetchedWrite = (pr: PendingRequest): void => this.#addToBatch(pr, true);
  readonly #notFetched = (pr: PendingRequest, why: Rejection): void => this.#reject(pr, why);

  #addToBatch(pr: PendingRequest, write: boolean): void {
    const offset = pr.extent.firstSector * SECTOR_SIZE;
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
    this.#readIndirectLists();
    this.#fetchWrites();
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
    const sectors = pr.extent.sectors;
    pr.sectors = sectors;
    pr.bytes = sectors * SECTOR_SIZE;
    if (sectors === 0) {
      this.#startFlush(pr);
      return;
    }
    const attached = this.#path.attach(pr, false);
    if (typeof attached === 'object') this.#reject(pr, attached);
    else if (attached === 'ready') this.#startFlush(pr);
    else this.#path.fetch([pr], 1, this.#startFlush, this.#notFetched); // rare: a one-element list will do
  }

  readonly #startFlush = (pr: PendingRequest): void => {
    const device = this.#o.device;
    const flushed = Promise.resolve().then(() => device.flush());
    if (pr.sectors === 0) flushed.then(pr.onDone, pr.onFail);
    else flushed.then(() => device.writev(pr.extent.firstSector * SECTOR_SIZE, pr.iov)).then(pr.onDone, pr.onFail);
  };

  #maybeRunBarrier(): void {
    const pr = this.#barrier;
    if (pr === null || this.#inflight !== 1) return; // the barrier itself is the one left
    this.#flush(pr);
  }

  #discard(pr: PendingRequest): void {
    const extent = pr.extent;
    pr.sectors = 0;
    pr.bytes = 0;
    Promise.resolve()
      .then(() => this.#o.device.discard(extent.firstSector * SECTOR_SIZE, extent.sectors * SECTOR_SIZE))
      .then(pr.onDone, pr.onFail);
  }

  /** Answers a request refused by validation or by a grant that failed, and counts it. */
  #reject(pr: PendingRequest, why: Rejection): void {
    this.#o.stats.errors[why.kind]++;
    const r = pr.req;
    this.#o.logError(`${this.#o.name}: request id ${r.idHi ? `${r.idHi}:` : ''}${r.idLo} op ${r.operation} sector ${r.sectorNumber}: ${why.reason}`);
    this.#respond(pr, why.status);
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
    this.#path.release(pr);
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
    const segments = status === BLKIF_RSP.OKAY && pr.nseg > 1 ? pr.nseg : 1;
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
    if (this.#unarmedTimer !== null) clearTimeout(this.#unarmedTimer);
    if (this.#share !== null) this.#o.fairShare!.leave(this.#share, this);
    if (this.#unpushed > 0) this.#push(); // coalesced answers: the ring may be unmapped once we resolve
    const drained =
      this.#inflight === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            this.#drained = resolve;
          });
    // Kept grants go only once no I/O can still be reading or writing their pages.
    return drained.then(() => this.#path.close());
  }
}
