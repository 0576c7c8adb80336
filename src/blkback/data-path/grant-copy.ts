// Data path `copy`: GNTTABOP_copy between the guest's pages and bounce pages of our own. Every copy
// is of a batch (on real Xen every batch is one ioctl and one hypercall, whatever its size): the
// segment lists of a turn's indirect requests, the data of a turn's writes before the store reads
// it, the data of the reads the store completed together once it has filled them. Nothing stays
// mapped, so a guest revoking a grant mid-I/O can only make its own request fail.
import { BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST, SECTOR_SIZE } from '../../blkif/constants.ts';
import { GNTST, PAGE_SIZE } from '../../hypervisor/types.ts';
import type { BackendGrants, GrantCopyEnd, GrantCopyOp } from '../../hypervisor/types.ts';
import type { Rejection } from '../request-validator.ts';
import { truncate } from './segment-views.ts';
import { decodeIndirectPage, grantFailure } from './types.ts';
import type { Attached, DataPath, GuestDataPath, IndirectRequest, SegmentRequest } from './types.ts';

/**
 * Scratch pages for the segment lists of one batch of indirect requests: 32 one-page lists (a turn
 * of 64 KiB guest I/O takes fewer; a larger batch is copied in several calls), and at least the
 * largest request's 8.
 */
const INDIRECT_SCRATCH_PAGES = 4 * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;

/** One copy op and the two ends it names, rewritten in place for each batch. */
interface CopyRecord {
  readonly guest: { ref: number; readonly domid: number; offset: number };
  readonly local: { buffer: Uint8Array };
  readonly op: { source: GrantCopyEnd; dest: GrantCopyEnd; length: number };
}

export class GrantCopyPath implements GuestDataPath {
  readonly kind: DataPath = 'copy';
  readonly grantsKept = 0;
  readonly #grants: BackendGrants;
  readonly #domid: number;
  /** Bounce pages (one per segment in flight) and the indices of the free ones. */
  readonly #pool: Uint8Array;
  readonly #free: number[] = [];
  /** Pages the largest request needs: a request is taken only while this many are free. */
  readonly #maxRequestPages: number;
  /** Pages the segment lists of a batch of indirect requests are copied into. */
  readonly #indirectScratch: Uint8Array;
  readonly #scratchPages: Uint8Array[] = [];
  /** The batch being built, made of #records (reused: no objects allocated per segment). */
  readonly #ops: GrantCopyOp[] = [];
  readonly #records: CopyRecord[] = [];
  readonly #outcome: (Rejection | null)[] = [];

  /** `maxRequestPages`: segments of the largest request the ring accepts (direct or indirect). */
  constructor(grants: BackendGrants, frontendDomid: number, ringSize: number, maxRequestPages: number) {
    this.#grants = grants;
    this.#domid = frontendDomid;
    this.#maxRequestPages = Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, maxRequestPages);
    // Enough for every slot to carry a direct request, and never less than a few of the largest.
    const pages = Math.max(ringSize * BLKIF_MAX_SEGMENTS_PER_REQUEST, 4 * this.#maxRequestPages);
    this.#pool = grants.allocBuffer(pages * PAGE_SIZE);
    for (let i = pages - 1; i >= 0; i--) this.#free.push(i);
    this.#indirectScratch = grants.allocBuffer(INDIRECT_SCRATCH_PAGES * PAGE_SIZE);
    for (let page = 0; page < INDIRECT_SCRATCH_PAGES; page++) this.#scratchPages.push(this.#indirectScratch.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE));
  }

  canTakeRequest(): boolean {
    return this.#free.length >= this.#maxRequestPages;
  }

  /**
   * One copy call for the lists of the whole batch (as many as the scratch pages hold: a turn's,
   * in practice), then each list is decoded from our own copy of it.
   */
  readIndirect<R extends IndirectRequest>(
    requests: readonly R[],
    count: number,
    read: (request: R) => void,
    failed: (request: R, why: Rejection) => void,
  ): void {
    const scratch = this.#indirectScratch;
    const ops = this.#ops;
    let from = 0;
    while (from < count) {
      // Requests [from, to) whose pages fit the scratch (the largest request alone always does).
      let to = from;
      let page = 0;
      while (to < count && page + requests[to]!.indirectPages <= INDIRECT_SCRATCH_PAGES) {
        const r = requests[to++]!;
        for (let p = 0; p < r.indirectPages; p++, page++) this.#addOp(r.indirectRefs[p]!, 0, this.#scratchPages[page]!, false);
      }
      const status = this.#grants.copy(ops);
      truncate(ops, 0);
      // Every list decoded before any callback runs (a callback reaches the ring server, which calls
      // back in here only with an empty batch).
      const outcome = this.#outcome;
      page = 0;
      for (let i = from; i < to; i++) {
        const r = requests[i]!;
        let why: Rejection | null = null;
        for (let p = 0; p < r.indirectPages && why === null; p++) {
          const st = status[page + p];
          if (st !== GNTST.okay) why = grantFailure(`indirect page ${p} (gref ${r.indirectRefs[p]}): grant copy failed with GNTST ${st}`);
        }
        if (why === null) {
          for (let p = 0; p < r.indirectPages; p++)
            decodeIndirectPage(scratch.subarray((page + p) * PAGE_SIZE, (page + p + 1) * PAGE_SIZE), p, r.indirectCount, r.segmentList);
        }
        page += r.indirectPages;
        outcome.push(why);
      }
      for (let i = from; i < to; i++) {
        const why = outcome[i - from]!;
        if (why === null) read(requests[i]!);
        else failed(requests[i]!, why);
      }
      truncate(outcome, 0);
      from = to;
    }
  }

  /** Bounce pages for the request; a write's data is still to be fetched. */
  attach(request: SegmentRequest, deviceWrites: boolean): Attached | Rejection {
    const pool = this.#pool;
    const iov = request.iov;
    for (let i = 0; i < request.nseg; i++) {
      const page = this.#free.pop()!; // canTakeRequest() saw enough free
      request.bouncePages.push(page);
      iov[i] = pool.subarray(page * PAGE_SIZE + request.segFirst[i]! * SECTOR_SIZE, page * PAGE_SIZE + (request.segLast[i]! + 1) * SECTOR_SIZE);
    }
    return deviceWrites ? 'ready' : 'fetch';
  }

  /** A batch of writes' data comes in with one copy call. */
  fetch<R extends SegmentRequest>(requests: readonly R[], count: number, ready: (request: R) => void, failed: (request: R, why: Rejection) => void): void {
    this.#copyBatch(requests, count, false, ready, failed);
  }

  readonly delivers = true;

  /** The data of every read in the batch goes out in one copy call. */
  deliver<R extends SegmentRequest>(
    requests: readonly R[],
    count: number,
    delivered: (request: R) => void,
    failed: (request: R, why: Rejection) => void,
  ): void {
    this.#copyBatch(requests, count, true, delivered, failed);
  }

  #copyBatch<R extends SegmentRequest>(
    requests: readonly R[],
    count: number,
    toGuest: boolean,
    done: (request: R) => void,
    failed: (request: R, why: Rejection) => void,
  ): void {
    const ops = this.#ops;
    for (let i = 0; i < count; i++) this.#appendOps(requests[i]!, toGuest);
    const status = this.#grants.copy(ops);
    truncate(ops, 0);
    let at = 0;
    for (let i = 0; i < count; i++) {
      const request = requests[i]!;
      const why = this.#copyFailure(request, toGuest, status, at);
      at += request.nseg;
      if (why === null) done(request);
      else failed(request, why);
    }
  }

  release(request: SegmentRequest): void {
    const pages = request.bouncePages;
    for (let i = 0; i < pages.length; i++) this.#free.push(pages[i]!);
    truncate(pages, 0);
  }

  close(): void {}

  /** Appends the copy ops between the request's guest segments and its bounce vector. */
  #appendOps(request: SegmentRequest, toGuest: boolean): void {
    for (let i = 0; i < request.nseg; i++) this.#addOp(request.segGref[i]!, request.segFirst[i]! * SECTOR_SIZE, request.iov[i]!, toGuest);
  }

  /** Appends one op between the guest's `ref` (from `offset`) and `buffer`, in a reused record. */
  #addOp(ref: number, offset: number, buffer: Uint8Array, toGuest: boolean): void {
    const ops = this.#ops;
    let record = this.#records[ops.length];
    if (record === undefined) {
      const guest = { ref: 0, domid: this.#domid, offset: 0 };
      const local = { buffer };
      record = { guest, local, op: { source: guest, dest: local, length: 0 } };
      this.#records.push(record);
    }
    record.guest.ref = ref;
    record.guest.offset = offset;
    record.local.buffer = buffer;
    record.op.source = toGuest ? record.local : record.guest;
    record.op.dest = toGuest ? record.guest : record.local;
    record.op.length = buffer.length;
    ops.push(record.op);
  }

  /** The first failed copy among the request's ops (from `at` in `status`), or null. */
  #copyFailure(request: SegmentRequest, toGuest: boolean, status: readonly number[], at: number): Rejection | null {
    for (let i = 0; i < request.nseg; i++) {
      const st = status[at + i];
      if (st !== GNTST.okay) {
        return grantFailure(`segment ${i} (gref ${request.segGref[i]}): grant copy ${toGuest ? 'to' : 'from'} the guest failed with GNTST ${st}`);
      }
    }
    return null;
  }
}
