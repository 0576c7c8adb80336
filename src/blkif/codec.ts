// Encode/decode blkif requests, responses and indirect segment pages (layouts in constants.ts).
// Decoding fills caller-owned objects and never allocates in steady state: DataViews over the last
// few buffers are cached, and callers reuse their scratch slot copies.

import { BlockError, Errno } from '../internal/errors.ts';
import {
  ABI_LAYOUT,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP,
  SEGMENT_SIZE,
  SEGS_PER_INDIRECT_FRAME,
} from './constants.ts';
import type { BlkifAbi } from './constants.ts';

const LE = true;
const TWO_POW_32 = 0x1_0000_0000;

/**
 * One decoded request, reused across decodes. Which fields are meaningful depends on `operation`:
 * READ/WRITE/WRITE_BARRIER/FLUSH_DISKCACHE use nrSegments, handle and seg* (only the first
 * min(nrSegments, 11) entries are written); DISCARD uses discardFlag, handle and nrSectors;
 * INDIRECT uses indirectOp, indirectNrSegments, handle and indirectGrefs. Every operation sets
 * idLo/idHi; all but unknown operations set sectorNumber. Fields an operation does not use keep
 * their previous values.
 */
export class BlkifRequest {
  operation = 0;
  nrSegments = 0;
  handle = 0;
  /** `id` is opaque to the backend: kept as two u32 halves and echoed back verbatim. */
  idLo = 0;
  idHi = 0;
  /** u64 as hi*2^32+lo; inexact above 2^53, which is past the end of any disk. */
  sectorNumber = 0;
  readonly segGref = new Uint32Array(BLKIF_MAX_SEGMENTS_PER_REQUEST);
  readonly segFirst = new Uint8Array(BLKIF_MAX_SEGMENTS_PER_REQUEST);
  readonly segLast = new Uint8Array(BLKIF_MAX_SEGMENTS_PER_REQUEST);
  discardFlag = 0;
  /** u64 as a number, like sectorNumber. */
  nrSectors = 0;
  indirectOp = 0;
  /** u16 on the wire, unlike the u8 nr_segments of direct requests. */
  indirectNrSegments = 0;
  readonly indirectGrefs = new Uint32Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
}

export class BlkifResponse {
  idLo = 0;
  idHi = 0;
  operation = 0;
  /** BLKIF_RSP_* (int16). */
  status = 0;
}

// DataViews over the last few buffers seen. A frontend and a backend in one thread alternate among
// about four scratch buffers (request and response, each side), so a single-entry cache would
// allocate on every call.
const VIEW_CACHE = 4;
const viewKeys: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(VIEW_CACHE).fill(undefined);
const viewVals: DataView[] = [];
for (let i = 0; i < VIEW_CACHE; i++) viewVals.push(new DataView(new ArrayBuffer(0)));
let viewNext = 0;

function viewOf(a: Uint8Array): DataView {
  for (let i = 0; i < VIEW_CACHE; i++) {
    if (viewKeys[i] === a) return viewVals[i] as DataView;
  }
  const dv = new DataView(a.buffer, a.byteOffset, a.byteLength);
  viewKeys[viewNext] = a;
  viewVals[viewNext] = dv;
  viewNext = (viewNext + 1) % VIEW_CACHE;
  return dv;
}

function needBytes(what: string, buf: Uint8Array, n: number): void {
  if (buf.length < n) {
    throw new BlockError('BLK_ERR_BUFFER', `${what}: buffer of ${buf.length} bytes, need ${n}`, {
      errno: Errno.EINVAL,
    });
  }
}

function getU64(v: DataView, off: number): number {
  return v.getUint32(off + 4, LE) * TWO_POW_32 + v.getUint32(off, LE);
}

function setU64(v: DataView, off: number, value: number): void {
  v.setUint32(off, value >>> 0, LE);
  v.setUint32(off + 4, Math.floor(value / TWO_POW_32) >>> 0, LE);
}

/**
 * Decodes one request from `src`, a private copy of a ring slot (length >= request size), reading
 * each field once. Never throws on content: an unknown operation gets only operation, handle and id
 * so the caller can fail it, and nrSegments > 11 is left for the caller to reject.
 */
export function decodeRequest(abi: BlkifAbi, src: Uint8Array, out: BlkifRequest): void {
  const L = ABI_LAYOUT[abi];
  needBytes('decodeRequest', src, L.requestSize);
  const v = viewOf(src);
  const op = v.getUint8(L.operation);
  out.operation = op;
  out.idLo = v.getUint32(L.id, LE);
  out.idHi = v.getUint32(L.id + 4, LE);
  switch (op) {
    case BLKIF_OP.READ:
    case BLKIF_OP.WRITE:
    case BLKIF_OP.WRITE_BARRIER:
    case BLKIF_OP.FLUSH_DISKCACHE: {
      const nr = v.getUint8(L.nrSegments);
      out.nrSegments = nr;
      out.handle = v.getUint16(L.handle, LE);
      out.sectorNumber = getU64(v, L.sectorNumber);
      const n = nr < BLKIF_MAX_SEGMENTS_PER_REQUEST ? nr : BLKIF_MAX_SEGMENTS_PER_REQUEST;
      const gref = out.segGref;
      const first = out.segFirst;
      const last = out.segLast;
      for (let i = 0, off = L.seg; i < n; i++, off += SEGMENT_SIZE) {
        gref[i] = v.getUint32(off, LE);
        first[i] = v.getUint8(off + 4);
        last[i] = v.getUint8(off + 5);
      }
      break;
    }
    case BLKIF_OP.DISCARD:
      out.discardFlag = v.getUint8(L.discardFlag);
      out.handle = v.getUint16(L.handle, LE);
      out.sectorNumber = getU64(v, L.sectorNumber);
      out.nrSectors = getU64(v, L.discardNrSectors);
      break;
    case BLKIF_OP.INDIRECT: {
      out.indirectOp = v.getUint8(L.indirectOp);
      out.indirectNrSegments = v.getUint16(L.indirectNrSegments, LE);
      out.sectorNumber = getU64(v, L.sectorNumber);
      out.handle = v.getUint16(L.indirectHandle, LE);
      const grefs = out.indirectGrefs;
      for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) {
        grefs[i] = v.getUint32(L.indirectGrefs + 4 * i, LE);
      }
      break;
    }
    default:
      out.handle = v.getUint16(L.handle, LE);
      break;
  }
}

/**
 * Encodes `req` into dst[0, requestSize), zeroing every byte the operation does not use (holes,
 * padding, unused segments), so no stale data leaks onto the ring.
 */
export function encodeRequest(abi: BlkifAbi, req: BlkifRequest, dst: Uint8Array): void {
  const L = ABI_LAYOUT[abi];
  needBytes('encodeRequest', dst, L.requestSize);
  dst.fill(0, 0, L.requestSize);
  const v = viewOf(dst);
  const op = req.operation;
  v.setUint8(L.operation, op);
  v.setUint32(L.id, req.idLo, LE);
  v.setUint32(L.id + 4, req.idHi, LE);
  switch (op) {
    case BLKIF_OP.READ:
    case BLKIF_OP.WRITE:
    case BLKIF_OP.WRITE_BARRIER:
    case BLKIF_OP.FLUSH_DISKCACHE: {
      const nr = req.nrSegments;
      v.setUint8(L.nrSegments, nr);
      v.setUint16(L.handle, req.handle, LE);
      setU64(v, L.sectorNumber, req.sectorNumber);
      const n = Math.min(nr & 0xff, BLKIF_MAX_SEGMENTS_PER_REQUEST);
      for (let i = 0, off = L.seg; i < n; i++, off += SEGMENT_SIZE) {
        v.setUint32(off, req.segGref[i] ?? 0, LE);
        v.setUint8(off + 4, req.segFirst[i] ?? 0);
        v.setUint8(off + 5, req.segLast[i] ?? 0);
      }
      break;
    }
    case BLKIF_OP.DISCARD:
      v.setUint8(L.discardFlag, req.discardFlag);
      v.setUint16(L.handle, req.handle, LE);
      setU64(v, L.sectorNumber, req.sectorNumber);
      setU64(v, L.discardNrSectors, req.nrSectors);
      break;
    case BLKIF_OP.INDIRECT:
      v.setUint8(L.indirectOp, req.indirectOp);
      v.setUint16(L.indirectNrSegments, req.indirectNrSegments, LE);
      setU64(v, L.sectorNumber, req.sectorNumber);
      v.setUint16(L.indirectHandle, req.handle, LE);
      for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) {
        v.setUint32(L.indirectGrefs + 4 * i, req.indirectGrefs[i] ?? 0, LE);
      }
      break;
    default:
      v.setUint16(L.handle, req.handle, LE);
      break;
  }
}

/** Writes a response into dst[0, responseSize) with its padding zeroed (XSA-216: no stale data to the guest). */
export function encodeResponse(abi: BlkifAbi, dst: Uint8Array, idLo: number, idHi: number, operation: number, status: number): void {
  const L = ABI_LAYOUT[abi];
  needBytes('encodeResponse', dst, L.responseSize);
  dst.fill(0, 0, L.responseSize);
  const v = viewOf(dst);
  v.setUint32(L.rspId, idLo, LE);
  v.setUint32(L.rspId + 4, idHi, LE);
  v.setUint8(L.rspOperation, operation);
  v.setInt16(L.rspStatus, status, LE);
}

export function decodeResponse(abi: BlkifAbi, src: Uint8Array, out: BlkifResponse): void {
  const L = ABI_LAYOUT[abi];
  needBytes('decodeResponse', src, L.responseSize);
  const v = viewOf(src);
  out.idLo = v.getUint32(L.rspId, LE);
  out.idHi = v.getUint32(L.rspId + 4, LE);
  out.operation = v.getUint8(L.rspOperation);
  out.status = v.getInt16(L.rspStatus, LE);
}

function checkSegmentArgs(what: string, page: Uint8Array, count: number, gref: Uint32Array, first: Uint8Array, last: Uint8Array, offset: number): void {
  if (!Number.isInteger(count) || count < 0 || count > SEGS_PER_INDIRECT_FRAME || !Number.isInteger(offset) || offset < 0) {
    throw new BlockError('BLK_ERR_BUFFER', `${what}: bad count ${count} or offset ${offset}`, { errno: Errno.EINVAL });
  }
  needBytes(what, page, count * SEGMENT_SIZE);
  const end = offset + count;
  if (gref.length < end || first.length < end || last.length < end) {
    throw new BlockError('BLK_ERR_BUFFER', `${what}: segment arrays shorter than ${end}`, { errno: Errno.EINVAL });
  }
}

/**
 * Reads `count` (<= 512) 8-byte blkif_request_segment entries from the start of an indirect page
 * (a private copy, or a guest page the caller accepts reading once) into gref/first/last[outOffset..].
 */
export function decodeIndirectSegments(page: Uint8Array, count: number, gref: Uint32Array, first: Uint8Array, last: Uint8Array, outOffset: number): void {
  checkSegmentArgs('decodeIndirectSegments', page, count, gref, first, last, outOffset);
  const v = viewOf(page);
  for (let i = 0, off = 0; i < count; i++, off += SEGMENT_SIZE) {
    const j = outOffset + i;
    gref[j] = v.getUint32(off, LE);
    first[j] = v.getUint8(off + 4);
    last[j] = v.getUint8(off + 5);
  }
}

/** Writes `count` segments from gref/first/last[inOffset..] to the start of an indirect page, padding zeroed. */
export function encodeIndirectSegments(page: Uint8Array, count: number, gref: Uint32Array, first: Uint8Array, last: Uint8Array, inOffset: number): void {
  checkSegmentArgs('encodeIndirectSegments', page, count, gref, first, last, inOffset);
  const v = viewOf(page);
  for (let i = 0, off = 0; i < count; i++, off += SEGMENT_SIZE) {
    const j = inOffset + i;
    v.setUint32(off, gref[j] ?? 0, LE);
    v.setUint8(off + 4, first[j] ?? 0);
    v.setUint8(off + 5, last[j] ?? 0);
    v.setUint16(off + 6, 0, LE);
  }
}
