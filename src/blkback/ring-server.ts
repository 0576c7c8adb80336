// The data plane of one blkif ring: take requests off the shared ring (each copied out of shared
// memory once, then validated), map the guest's grants, hand the pages to the block device as an
// I/O vector, and answer. Everything the frontend wrote is untrusted.
//
//   event ──► turn(): up to TURN_COST segments ──► validate ──► map grants ──► device.readv/writev
//                ▲                                                              │
//                └── final check sets req_event ◄── respond: slot, push, notify ◄┘
import { BLKIF_OP, BLKIF_RSP, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_DISCARD_SECURE, SECTOR_SIZE } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { BlkifRequest, decodeRequest, encodeResponse } from '../blkif/codec.ts';
import { BackRing } from '../blkif/ring.ts';
import type { SharedRing } from '../blkif/ring.ts';
import type { BlockDevice } from '../block/types.ts';
import type { BackendGrants, EventChannel, GrantMapping } from '../hypervisor/types.ts';
import type { ErrorKind, VbdStats } from './stats.ts';
import type { InflightBudget } from './inflight-budget.ts';
import type { FairShare } from './fair-share.ts';

/**
 * Work a ring may take per turn before yielding to the other rings, counted in segments (a request
 * costs its segment count, at least 1): a guest flooding 11-segment requests must not get 11 times
 * the service of a guest doing 4 KiB I/O. The turn that overdraws carries the debt to the next one.
 */
export const TURN_COST = 16;

/** At most this many requests (and I/O vector entries, under Linux's IOV_MAX) in one merged store call. */
const MAX_MERGE = 8;
const MAX_MERGE_IOV = 128;

/**
 * Response coalescing for a flooded ring: while a ring has at least this many requests queued that
 * we have not taken yet (and another turn of it is queued), its frontend does not need answers to
 * keep us busy, so its responses are pushed (and it is notified) only every ring.size / 4 answers or
 * when its queue runs low. Each push that wakes a guest costs the backend thread 10-30 µs and the
 * guest a wake-up; for a guest flooding a large ring that was most of what it cost its neighbours.
 */
const COALESCE_QUEUED = 2 * TURN_COST;


export interface RingServerOptions {
  readonly ring: SharedRing;
  readonly abi: BlkifAbi;
  readonly frontendDomid: number;
  readonly grants: BackendGrants;
  readonly events: EventChannel;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly discard: boolean;
  readonly discardSecure?: boolean;
  readonly stats: VbdStats;
  readonly budget: InflightBudget;
  /** Splits the turn quantum among a domain's saturated rings. */
  readonly fairShare?: FairShare;
  /** Name for messages, e.g. "vbd 3/51712". */
  readonly name: string;
  readonly logError: (message: string) => void;
}

class PendingRequest {
  readonly req = new BlkifRequest();
  mapping: GrantMapping | null = null;
  readonly iov: Uint8Array[] = [];
  startNs = 0;
  sectors = 0;
  bytes = 0;
  kind: 'read' | 'write' | 'flush' | 'discard' = 'read';
  readonly onDone: () => void;
  readonly onFail: (err: unknown) => void;

  constructor(server: RingServer) {
    this.onDone = () => server.complete(this, BLKIF_RSP.OKAY, null);
    this.onFail = (err: unknown) => server.complete(this, BLKIF_RSP.ERROR, err);
  }
}

export class RingServer {
  readonly #o: RingServerOptions;
  readonly #back: BackRing;
  readonly #slot: Uint8Array;
  readonly #rsp: Uint8Array;
  readonly #free: PendingRequest[] = [];
  readonly #sectorsPerBlock: number;
  #inflight = 0;
  #scheduled = false;
  /** #takeRequests ended saturated: #turn schedules the next turn once it has charged this one. */
  #deferred = false;
  #turnStart = 0;
  #halted = false;
  #stopping = false;
  #barrier: PendingRequest | null = null;
  #drained: (() => void) | null = null;
  #stalledOnBudget = false;
  #publishScheduled = false;
  /** Overdraft of the last turn (<= 0), charged to the next. */
  #carry = 0;
  /** Contiguous reads or writes of this turn not yet sent to the store. */
  readonly #batch = { write: false, offset: 0, end: 0, length: 0, iovCount: 0, members: new Array<PendingRequest | null>(MAX_MERGE).fill(null) };

  /** Responses written to the ring but not yet pushed. */
  #unpushed = 0;
  readonly #coalesceMax: number;

  readonly #publish = (): void => {
    this.#publishScheduled = false;
    // A deferred push happens after the queued turn (see #turn) or at #coalesceMax answers.
    if (this.#scheduled && !this.#stopping && this.#unpushed < this.#coalesceMax && this.#back.unconsumedRequests() >= COALESCE_QUEUED) return;
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
    options.events.onEvent(this.#onEvent);
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
    const fair = this.#o.fairShare;
    if (fair !== undefined) this.#turnStart = performance.now();
    this.#takeRequests();
    this.#submitBatch();
    // Queued behind the reactions to this turn's I/O that already settled (a RAM disk's), so the
    // charge includes completing them.
    if (fair !== undefined) queueMicrotask(this.#charge);
    // No turn queued any more: responses deferred by #publish must not wait for one.
    if (!this.#scheduled && this.#unpushed > 0 && !this.#publishScheduled) {
      this.#publishScheduled = true;
      queueMicrotask(this.#publish);
    }
  };

  /** Charges the turn's backend time to its domain, then schedules the next turn if it ended saturated. */
  readonly #charge = (): void => {
    const fair = this.#o.fairShare!;
    const now = performance.now();
    fair.charge(this.#o.frontendDomid, now - this.#turnStart, now);
    if (!this.#deferred) return;
    this.#deferred = false;
    const wait = fair.delay(this.#o.frontendDomid, now);
    if (wait > 0) setTimeout(this.#turn, wait);
    else setImmediate(this.#turn);
  };

  #takeRequests(): void {
    if (this.#halted || this.#stopping || this.#barrier !== null) return;
    const fair = this.#o.fairShare;
    let budget = (fair === undefined ? TURN_COST : fair.quantum(this.#o.frontendDomid)) + this.#carry;
    this.#carry = 0;
    for (;;) {
      if (this.#back.requestProdOverflow()) {
        this.#halt();
        return;
      }
      while (budget > 0) {
        if (this.#free.length === 0) return; // every slot in flight: completions kick us
        if (!this.#o.budget.tryAcquire()) {
          this.#o.stats.oo_req++;
          this.#stalledOnBudget = true;
          this.#o.budget.waitForRoom(this.kick);
          return;
        }
        if (!this.#back.takeRequest(this.#slot)) {
          this.#o.budget.release();
          break;
        }
        const pr = this.#free.pop()!;
        decodeRequest(this.#o.abi, this.#slot, pr.req);
        budget -= Math.max(1, Math.min(pr.req.nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST));
        this.#inflight++;
        this.#dispatch(pr);
        if (this.#barrier !== null) return;
      }
      if (budget <= 0) {
        this.#carry = budget;
        // Only a ring with requests left waits for another turn; one that took exactly its quantum
        // and has nothing more (a QD16 4 KiB guest) goes idle, so its next event is served at once.
        if (this.#back.finalCheckForRequests()) {
          const fair = this.#o.fairShare;
          if (fair === undefined) {
            this.kick(); // come back after other rings had their turn
          } else {
            // Come back after other rings had their turn, or later if this domain used its share (#turn).
            fair.setBusy(this.#o.frontendDomid, this, true);
            this.#scheduled = true;
            this.#deferred = true;
          }
          return;
        }
        this.#o.fairShare?.setBusy(this.#o.frontendDomid, this, false);
        return;
      }
      if (!this.#back.finalCheckForRequests()) {
        this.#o.fairShare?.setBusy(this.#o.frontendDomid, this, false);
        return;
      }
    }
  }

  #halt(): void {
    this.#halted = true;
    this.#o.fairShare?.setBusy(this.#o.frontendDomid, this, false);
    this.#o.stats.errors.ring_overflow++;
    this.#o.logError(
      `${this.#o.name}: frontend produced more requests than the ring holds (req_prod ${this.#o.ring.reqProd}, ` +
        `responses ${this.#back.rspProdPvt}, ring size ${this.#o.ring.size}); halting ring processing`,
    );
  }

  #dispatch(pr: PendingRequest): void {
    const r = pr.req;
    pr.startNs = performance.now() * 1e6;
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
      default:
        this.#reject(pr, BLKIF_RSP.EOPNOTSUPP, 'bad_op', `unsupported operation ${r.operation}`);
    }
  }

  /** Checks segments and range; returns the sector count or -1 after answering with an error. */
  #validateSegments(pr: PendingRequest, minSegments: number): number {
    const r = pr.req;
    const nseg = r.nrSegments;
    if (nseg < minSegments || nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_segments', `bad segment count ${nseg}`);
      return -1;
    }
    const mask = this.#sectorsPerBlock - 1;
    let sectors = 0;
    for (let i = 0; i < nseg; i++) {
      const first = r.segFirst[i]!;
      const last = r.segLast[i]!;
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

  /** Maps the request's grants and builds the I/O vector; false after answering with an error. */
  #mapSegments(pr: PendingRequest, deviceWrites: boolean): boolean {
    const r = pr.req;
    const nseg = r.nrSegments;
    let mapping: GrantMapping;
    try {
      mapping = this.#o.grants.map(this.#o.frontendDomid, r.segGref, nseg, deviceWrites);
    } catch (err) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'bad_grant', err instanceof Error ? err.message : String(err));
      return false;
    }
    pr.mapping = mapping;
    const iov = pr.iov;
    iov.length = nseg;
    for (let i = 0; i < nseg; i++) {
      iov[i] = mapping.pages[i]!.subarray(r.segFirst[i]! * SECTOR_SIZE, (r.segLast[i]! + 1) * SECTOR_SIZE);
    }
    return true;
  }

  #readWrite(pr: PendingRequest, write: boolean): void {
    if (write && this.#o.readOnly) {
      this.#reject(pr, BLKIF_RSP.ERROR, 'read_only', 'write to a read-only disk');
      return;
    }
    const sectors = this.#validateSegments(pr, 1);
    if (sectors < 0) return;
    // A read fills guest pages, so its grants must be writable; a write only reads them.
    if (!this.#mapSegments(pr, !write)) return;
    pr.sectors = sectors;
    pr.bytes = sectors * SECTOR_SIZE;
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
      if (!this.#mapSegments(pr, false)) return;
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
      stats.latency[pr.kind].record(performance.now() * 1e6 - pr.startNs);
    }
    this.#respond(pr, status);
  }

  #respond(pr: PendingRequest, status: number): void {
    if (pr.mapping !== null) {
      pr.mapping.unmap();
      pr.mapping = null;
    }
    pr.iov.length = 0;
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
    this.#o.budget.release();
    this.#free.push(pr);
    if (this.#barrier === pr) {
      this.#barrier = null;
      this.kick();
    } else if (this.#barrier !== null) {
      this.#maybeRunBarrier();
    } else if (this.#free.length === 1 || this.#stalledOnBudget) {
      // We may have stopped taking requests for want of a slot or budget.
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
    this.#o.fairShare?.setBusy(this.#o.frontendDomid, this, false);
    if (this.#unpushed > 0) this.#push(); // coalesced answers: the ring may be unmapped once we resolve
    if (this.#inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#drained = resolve;
    });
  }
}
