// Wire constants and struct layouts of the Xen PV block protocol.
// Source of every value: Xen 4.17 public headers xen/io/blkif.h and xen/io/ring.h (Debian libxen-dev),
// offsets checked with gcc / gcc -m32 on those headers (test/blkif-golden.test.ts re-checks them).

import { XEN_PAGE_SIZE } from '../abi/xen.ts';

/** blkif_request.operation (BLKIF_OP_*). */
export const BLKIF_OP = {
  READ: 0,
  WRITE: 1,
  WRITE_BARRIER: 2,
  FLUSH_DISKCACHE: 3,
  RESERVED_1: 4, // reserved for SLES, never valid on the wire here
  DISCARD: 5,
  INDIRECT: 6,
} as const;
export type BlkifOp = (typeof BLKIF_OP)[keyof typeof BLKIF_OP];

/** blkif_response.status (BLKIF_RSP_*, int16). */
export const BLKIF_RSP = {
  OKAY: 0,
  ERROR: -1,
  EOPNOTSUPP: -2,
} as const;
export type BlkifRsp = (typeof BLKIF_RSP)[keyof typeof BLKIF_RSP];

export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
export const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8;
/** 4096 / sizeof(struct blkif_request_segment) = 4096 / 8. */
export const SEGS_PER_INDIRECT_FRAME = 512;
/** blkif_request_discard.flag bit. */
export const BLKIF_DISCARD_SECURE = 1;

/** `info` bits in the backend's xenstore directory. */
export const VDISK_CDROM = 1;
export const VDISK_REMOVABLE = 2;
export const VDISK_READONLY = 4;

/** first_sect/last_sect, sector_number and nr_sectors are always in 512-byte units (protocol-notes §1.3). */
export const SECTOR_SIZE = 512;
export { XEN_PAGE_SIZE };
/** sizeof(struct blkif_request_segment): gref u32 @0, first_sect u8 @4, last_sect u8 @5, pad @6..7. */
export const SEGMENT_SIZE = 8;
/** Sectors in one granted frame: a valid segment has first_sect <= last_sect <= 7. */
export const SECTORS_PER_PAGE = XEN_PAGE_SIZE / SECTOR_SIZE;

/** Header of the shared ring page (struct blkif_sring), in bytes; entries start at RING_HEADER_SIZE. */
export const RING_HEADER_SIZE = 64;
export const RING_REQ_PROD = 0;
export const RING_REQ_EVENT = 4;
export const RING_RSP_PROD = 8;
export const RING_RSP_EVENT = 12;
export const RING_PVT = 16;

export type BlkifAbi = 'x86_64' | 'x86_32';

/**
 * Byte offsets of every request/response variant. x86_64 (also ARM) has a 4-byte hole before `id`;
 * x86_32 aligns u64 to 4, so everything after `handle` sits 4 bytes lower.
 *
 *   request (rw/barrier/flush)   x86_64          x86_32
 *     operation u8               0               0
 *     nr_segments u8             1               1
 *     handle u16                 2               2
 *     (hole)                     4..7            -
 *     id u64                     8               4
 *     sector_number u64          16              12
 *     seg[11] (8 bytes each)     24..111         20..107
 *   discard: flag u8 @1, nr_sectors u64 @24 / @20, sizeof 32 / 28
 *   indirect: indirect_op u8 @1, nr_segments u16 @2, handle u16 @24 / @20,
 *             indirect_grefs[8] @28 / @24, sizeof 64 / 64 (tail pad)
 *   response: id u64 @0, operation u8 @8, (pad @9), status i16 @10, sizeof 16 / 12
 */
export interface BlkifLayout {
  readonly requestSize: number;
  readonly responseSize: number;
  /** sizeof(union blkif_sring_entry): distance between ring slots. */
  readonly stride: number;
  readonly operation: number;
  readonly nrSegments: number;
  readonly handle: number;
  readonly id: number;
  readonly sectorNumber: number;
  readonly seg: number;
  readonly discardFlag: number;
  readonly discardNrSectors: number;
  readonly discardSize: number;
  readonly indirectOp: number;
  readonly indirectNrSegments: number;
  readonly indirectHandle: number;
  readonly indirectGrefs: number;
  readonly indirectSize: number;
  readonly rspId: number;
  readonly rspOperation: number;
  readonly rspStatus: number;
}

export const ABI_LAYOUT: Readonly<Record<BlkifAbi, BlkifLayout>> = {
  x86_64: {
    requestSize: 112,
    responseSize: 16,
    stride: 112,
    operation: 0,
    nrSegments: 1,
    handle: 2,
    id: 8,
    sectorNumber: 16,
    seg: 24,
    discardFlag: 1,
    discardNrSectors: 24,
    discardSize: 32,
    indirectOp: 1,
    indirectNrSegments: 2,
    indirectHandle: 24,
    indirectGrefs: 28,
    indirectSize: 64,
    rspId: 0,
    rspOperation: 8,
    rspStatus: 10,
  },
  x86_32: {
    requestSize: 108,
    responseSize: 12,
    stride: 108,
    operation: 0,
    nrSegments: 1,
    handle: 2,
    id: 4,
    sectorNumber: 12,
    seg: 20,
    discardFlag: 1,
    discardNrSectors: 20,
    discardSize: 28,
    indirectOp: 1,
    indirectNrSegments: 2,
    indirectHandle: 20,
    indirectGrefs: 24,
    indirectSize: 64,
    rspId: 0,
    rspOperation: 8,
    rspStatus: 10,
  },
};

/** Values of the frontend's `protocol` xenstore key; ARM uses the x86_64 layout. */
export const PROTOCOL_NAMES = {
  'x86_32-abi': 'x86_32',
  'x86_64-abi': 'x86_64',
  'arm-abi': 'x86_64',
} as const satisfies Readonly<Record<string, BlkifAbi>>;
const protocolTable: Readonly<Record<string, BlkifAbi | undefined>> = PROTOCOL_NAMES;

/**
 * ABI named by the frontend's `protocol` key. A missing key means x86_32, as Linux blkback's
 * BLKIF_PROTOCOL_DEFAULT on x86; an unknown name gives undefined (the caller refuses to connect).
 */
export function abiFromProtocol(protocol: string | undefined): BlkifAbi | undefined {
  if (protocol === undefined) return 'x86_32';
  return Object.hasOwn(protocolTable, protocol) ? protocolTable[protocol] : undefined;
}
