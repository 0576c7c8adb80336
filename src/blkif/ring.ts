// The blkif shared ring (struct blkif_sring, xen/io/ring.h) over guest pages that need not be
// contiguous, with the front and back halves of ring.h's macros.
//
//   page 0                                                      page 1 ...
//   +0  req_prod  +4 req_event  +8 rsp_prod  +12 rsp_event
//   +16 pvt[4]    +20 __pad[44]
//   +64 entry[0] | entry[1] | ... each `stride` bytes (112 x86_64, 108 x86_32)
//
// Entry i lives at byte 64 + (i & (size-1)) * stride of the concatenated pages. 108 does not divide
// 4096, so x86_32 entries in multi-page rings straddle page boundaries (entry 37 is bytes
// 4060..4167): copies go through copyIn/copyOut, which split at page edges.
//
// Indices are free-running u32 (RING_IDX); every difference is taken `>>> 0`. The four shared
// indices are read and written with Atomics (seq-cst), which gives the ordering of ring.h's
// xen_wmb/xen_mb: entry bytes written before an Atomics.store of a producer index are visible to
// whoever Atomics.loads that index.

import { BlockError, Errno } from '../internal/errors.ts';
import { ABI_LAYOUT, RING_HEADER_SIZE, RING_PVT, XEN_PAGE_SIZE } from './constants.ts';
import type { BlkifAbi } from './constants.ts';

const PAGE_SHIFT = 12;
const PAGE_MASK = XEN_PAGE_SIZE - 1;
// Int32Array element indices of the header words.
const REQ_PROD = 0;
const REQ_EVENT = 1;
const RSP_PROD = 2;
const RSP_EVENT = 3;

/** Entries in a ring of `pages` pages: the largest power of two <= (pages*4096 - 64) / stride (__RING_SIZE). */
export function ringEntries(pages: number, abi: BlkifAbi): number {
  const raw = Math.floor((pages * XEN_PAGE_SIZE - RING_HEADER_SIZE) / ABI_LAYOUT[abi].stride);
  if (!(raw >= 1)) return 0;
  let n = 1;
  while (n * 2 <= raw) n *= 2;
  return n;
}

function ringError(message: string): BlockError {
  return new BlockError('BLK_ERR_RING', message, { errno: Errno.EINVAL });
}

export class SharedRing {
  readonly size: number;
  readonly abi: BlkifAbi;
  readonly stride: number;
  readonly requestSize: number;
  readonly responseSize: number;
  /** The ring's pages in ring order, each at least 4096 bytes (only the first 4096 are used). */
  readonly pages: readonly Uint8Array[];
  readonly #header: Int32Array;
  readonly #mask: number;
  // Whole-slot views for slots inside one page (undefined for straddling slots), so that the common
  // whole-entry copy is a single TypedArray.set without allocating.
  readonly #slotViews: (Uint8Array | undefined)[];

  constructor(pages: readonly Uint8Array[], abi: BlkifAbi) {
    const layout = ABI_LAYOUT[abi];
    if (pages.length < 1) throw ringError('shared ring: no pages');
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i];
      if (p === undefined || p.length < XEN_PAGE_SIZE) {
        throw ringError(`shared ring: page ${i} is ${p?.length ?? 0} bytes, need ${XEN_PAGE_SIZE}`);
      }
    }
    const page0 = pages[0] as Uint8Array;
    if (page0.byteOffset % 4 !== 0) {
      throw ringError(`shared ring: page 0 at byte offset ${page0.byteOffset} is not 4-aligned`);
    }
    this.abi = abi;
    this.stride = layout.stride;
    this.requestSize = layout.requestSize;
    this.responseSize = layout.responseSize;
    this.pages = pages.slice();
    this.size = ringEntries(pages.length, abi);
    this.#mask = this.size - 1;
    this.#header = new Int32Array(page0.buffer, page0.byteOffset, RING_HEADER_SIZE / 4);
    this.#slotViews = [];
    for (let slot = 0; slot < this.size; slot++) {
      const pos = RING_HEADER_SIZE + slot * this.stride;
      const off = pos & PAGE_MASK;
      const page = this.pages[pos >>> PAGE_SHIFT] as Uint8Array;
      this.#slotViews.push(off + this.stride <= XEN_PAGE_SIZE ? page.subarray(off, off + this.stride) : undefined);
    }
  }

  get reqProd(): number {
    return Atomics.load(this.#header, REQ_PROD) >>> 0;
  }
  set reqProd(v: number) {
    Atomics.store(this.#header, REQ_PROD, v | 0);
  }
  get reqEvent(): number {
    return Atomics.load(this.#header, REQ_EVENT) >>> 0;
  }
  set reqEvent(v: number) {
    Atomics.store(this.#header, REQ_EVENT, v | 0);
  }
  get rspProd(): number {
    return Atomics.load(this.#header, RSP_PROD) >>> 0;
  }
  set rspProd(v: number) {
    Atomics.store(this.#header, RSP_PROD, v | 0);
  }
  get rspEvent(): number {
    return Atomics.load(this.#header, RSP_EVENT) >>> 0;
  }
  set rspEvent(v: number) {
    Atomics.store(this.#header, RSP_EVENT, v | 0);
  }

  /** Copies the first `length` (default min(dst.length, stride)) bytes of entry `index` into dst. */
  copyOut(index: number, dst: Uint8Array, length: number = Math.min(dst.length, this.stride)): void {
    const slot = index & this.#mask;
    if (length > this.stride || length > dst.length || length < 0) {
      throw ringError(`shared ring: copyOut of ${length} bytes into ${dst.length} (entry is ${this.stride})`);
    }
    const whole = this.#slotViews[slot];
    if (whole !== undefined && length === this.stride) {
      dst.set(whole);
      return;
    }
    let pos = RING_HEADER_SIZE + slot * this.stride;
    for (let d = 0; d < length; ) {
      const page = this.pages[pos >>> PAGE_SHIFT] as Uint8Array;
      let off = pos & PAGE_MASK;
      const end = Math.min(XEN_PAGE_SIZE, off + (length - d));
      pos += end - off;
      while (off < end) dst[d++] = page[off++] as number;
    }
  }

  /** Copies src[0, length) into entry `index` (length <= stride); the rest of the entry is untouched. */
  copyIn(index: number, src: Uint8Array, length: number): void {
    const slot = index & this.#mask;
    if (length > this.stride || length > src.length || length < 0) {
      throw ringError(`shared ring: copyIn of ${length} bytes from ${src.length} (entry is ${this.stride})`);
    }
    const whole = this.#slotViews[slot];
    if (whole !== undefined && length === this.stride && src.length === length) {
      whole.set(src);
      return;
    }
    let pos = RING_HEADER_SIZE + slot * this.stride;
    for (let s = 0; s < length; ) {
      const page = this.pages[pos >>> PAGE_SHIFT] as Uint8Array;
      let off = pos & PAGE_MASK;
      const end = Math.min(XEN_PAGE_SIZE, off + (length - s));
      pos += end - off;
      while (off < end) page[off++] = src[s++] as number;
    }
  }
}

/** SHARED_RING_INIT: producers 0, events 1, pvt and padding zeroed. Only the frontend calls it. */
export function frontRingInit(ring: SharedRing): void {
  (ring.pages[0] as Uint8Array).fill(0, RING_PVT, RING_HEADER_SIZE);
  ring.reqProd = 0;
  ring.rspProd = 0;
  ring.reqEvent = 1;
  ring.rspEvent = 1;
}

/** The frontend's private half: it produces requests and consumes responses. */
export class FrontRing {
  readonly ring: SharedRing;
  readonly size: number;
  reqProdPvt: number;
  rspCons: number;

  /**
   * FRONT_RING_INIT (indices 0), or with attach FRONT_RING_ATTACH at the shared rsp_prod, for a
   * ring whose indices do not start at 0 (all earlier requests must have been answered).
   */
  constructor(ring: SharedRing, attach = false) {
    this.ring = ring;
    this.size = ring.size;
    const start = attach ? ring.rspProd : 0;
    this.reqProdPvt = start;
    this.rspCons = start;
  }

  /** RING_FREE_REQUESTS. */
  freeRequests(): number {
    return (this.size - ((this.reqProdPvt - this.rspCons) >>> 0)) >>> 0;
  }

  /** RING_FULL. */
  full(): boolean {
    return this.freeRequests() === 0;
  }

  /** Writes one encoded request (requestSize bytes of src) at req_prod_pvt; not visible until pushed. */
  putRequest(src: Uint8Array): void {
    if (this.full()) throw ringError(`front ring: full (${this.size} requests outstanding)`);
    this.ring.copyIn(this.reqProdPvt, src, this.ring.requestSize);
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }

  /** RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publishes req_prod; true when the backend must be notified. */
  pushRequestsAndCheckNotify(): boolean {
    const ring = this.ring;
    const oldProd = ring.reqProd;
    const newProd = this.reqProdPvt;
    ring.reqProd = newProd;
    return (newProd - ring.reqEvent) >>> 0 < (newProd - oldProd) >>> 0;
  }

  /** RING_HAS_UNCONSUMED_RESPONSES (as a count). */
  unconsumedResponses(): number {
    return (this.ring.rspProd - this.rspCons) >>> 0;
  }

  /** RING_RESPONSE_PROD_OVERFLOW: the backend claims more responses than the ring can hold. */
  responseProdOverflow(): boolean {
    return (this.ring.rspProd - this.rspCons) >>> 0 > this.size;
  }

  /** Copies the next response (responseSize bytes) into dst and consumes it; false when there is none. */
  takeResponse(dst: Uint8Array): boolean {
    if (this.ring.rspProd === this.rspCons) return false;
    this.ring.copyOut(this.rspCons, dst, this.ring.responseSize);
    this.rspCons = (this.rspCons + 1) >>> 0;
    return true;
  }

  /** RING_FINAL_CHECK_FOR_RESPONSES: true if responses are pending; otherwise asks for an event on the next one. */
  finalCheckForResponses(): boolean {
    if (this.unconsumedResponses() !== 0) return true;
    this.ring.rspEvent = (this.rspCons + 1) >>> 0;
    return this.unconsumedResponses() !== 0;
  }
}

/** The backend's private half: it consumes requests and produces responses. */
export class BackRing {
  readonly ring: SharedRing;
  readonly size: number;
  reqCons: number;
  rspProdPvt: number;

  /**
   * BACK_RING_INIT (indices 0), or with attach BACK_RING_ATTACH at the shared rsp_prod (as Linux
   * blkback does on reconnect): requests after rsp_prod are consumed again.
   */
  constructor(ring: SharedRing, attach = false) {
    this.ring = ring;
    this.size = ring.size;
    const start = attach ? ring.rspProd : 0;
    this.reqCons = start;
    this.rspProdPvt = start;
  }

  /** RING_REQUEST_PROD_OVERFLOW on the current req_prod: true means a bogus frontend (halt the ring). */
  requestProdOverflow(): boolean {
    return (this.ring.reqProd - this.rspProdPvt) >>> 0 > this.size;
  }

  /** RING_HAS_UNCONSUMED_REQUESTS (as a count), including its min() against the responses not yet produced. */
  unconsumedRequests(): number {
    const req = (this.ring.reqProd - this.reqCons) >>> 0;
    const rsp = (this.size - ((this.reqCons - this.rspProdPvt) >>> 0)) >>> 0;
    return req < rsp ? req : rsp;
  }

  /**
   * Copies the next request slot (requestSize bytes) into dst, a private buffer, and consumes it.
   * False when req_prod has nothing new or when RING_REQUEST_CONS_OVERFLOW (a full ring's worth of
   * requests await responses) stops consumption.
   */
  takeRequest(dst: Uint8Array): boolean {
    const cons = this.reqCons;
    if (this.ring.reqProd === cons) return false;
    if ((cons - this.rspProdPvt) >>> 0 >= this.size) return false;
    this.ring.copyOut(cons, dst, this.ring.requestSize);
    this.reqCons = (cons + 1) >>> 0;
    return true;
  }

  /** Writes one encoded response (responseSize bytes of src) at rsp_prod_pvt; not visible until pushed. */
  putResponse(src: Uint8Array): void {
    if (this.rspProdPvt === this.reqCons) {
      throw ringError('back ring: response without an outstanding request');
    }
    this.ring.copyIn(this.rspProdPvt, src, this.ring.responseSize);
    this.rspProdPvt = (this.rspProdPvt + 1) >>> 0;
  }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publishes rsp_prod; true when the frontend must be notified. */
  pushResponsesAndCheckNotify(): boolean {
    const ring = this.ring;
    const oldProd = ring.rspProd;
    const newProd = this.rspProdPvt;
    ring.rspProd = newProd;
    return (newProd - ring.rspEvent) >>> 0 < (newProd - oldProd) >>> 0;
  }

  /** RING_FINAL_CHECK_FOR_REQUESTS: true if requests are pending; otherwise asks for an event on the next one. */
  finalCheckForRequests(): boolean {
    if (this.unconsumedRequests() !== 0) return true;
    this.ring.reqEvent = (this.reqCons + 1) >>> 0;
    return this.unconsumedRequests() !== 0;
  }
}
