// Every check of a blkif request that needs only the request and the disk's description, in one
// place (nbdkit's server/protocol.c validate_request): operation, segment counts, each segment's
// first_sect/last_sect, range, alignment, read-only and advertised features. Pure: no ring, no
// grants, no clock. The ring server answers a Rejection as it stands and keeps to itself only what
// can fail at run time (a grant that does not map or copy, a store that fails).
//
// It reads a request already copied out of the shared ring (and an indirect request's segments
// already copied out of their pages): what it accepted is what will be acted on.
import {
  BLKIF_DISCARD_SECURE,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP,
  BLKIF_RSP,
  SECTORS_PER_PAGE,
  SECTOR_SIZE,
  SEGS_PER_INDIRECT_FRAME,
} from '../blkif/constants.ts';
import type { BlkifRsp } from '../blkif/constants.ts';
import type { BlkifRequest } from '../blkif/codec.ts';
import type { ErrorKind } from './stats.ts';

/** What the validator needs to know of the disk and of what we advertised to the frontend. */
export interface DiskLimits {
  /** Size in 512-byte sectors, as of now: the caller keeps it current across a resize. */
  readonly sectors: number;
  /** Logical block size in 512-byte sectors (a power of two). */
  readonly sectorsPerBlock: number;
  readonly readOnly: boolean;
  /** feature-discard was advertised. */
  readonly discard: boolean;
  /** discard-secure was advertised. */
  readonly discardSecure: boolean;
  /** feature-max-indirect-segments (0: not advertised, INDIRECT is answered EOPNOTSUPP). */
  readonly maxIndirectSegments: number;
}

/** A request refused: the status to answer, the error counter to bump, and why (for the log). */
export interface Rejection {
  readonly accepted: false;
  readonly status: BlkifRsp;
  readonly kind: ErrorKind;
  readonly reason: string;
}

/**
 * What an accepted request does. Reused per pending request: validation fills it and returns it,
 * so accepting allocates nothing.
 */
export class RequestExtent {
  readonly accepted = true as const;
  /** READ, WRITE, FLUSH_DISKCACHE, WRITE_BARRIER or DISCARD; an INDIRECT's own operation (READ or WRITE). */
  operation: number = BLKIF_OP.READ;
  /** The segment list is in granted pages (BLKIF_OP_INDIRECT): validateSegments() still has to see it. */
  indirect = false;
  /** Pages holding an indirect request's segment list. */
  indirectPages = 0;
  segments = 0;
  firstSector = 0;
  /** Sectors moved (discard: trimmed); 0 for a flush without data, and for an indirect request until validateSegments(). */
  sectors = 0;
}

export type Validation = RequestExtent | Rejection;

/** Largest segment list an indirect request can name (8 pages of 512 entries), whatever we advertise. */
const MAX_INDIRECT_LIST = SEGS_PER_INDIRECT_FRAME * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;

export function rejection(status: BlkifRsp, kind: ErrorKind, reason: string): Rejection {
  return { accepted: false, status, kind, reason };
}

/**
 * The operation a request counts as in the per-operation counters (rd_req, wr_req, f_req, ds_req),
 * refused or not: an INDIRECT counts as the read or write it carries; -1 for one no counter covers
 * (unknown operations, INDIRECT when not advertised or carrying anything but a read or write).
 */
export function countedOperation(request: BlkifRequest, disk: DiskLimits): number {
  const op = request.operation;
  switch (op) {
    case BLKIF_OP.READ:
    case BLKIF_OP.WRITE:
    case BLKIF_OP.FLUSH_DISKCACHE:
    case BLKIF_OP.WRITE_BARRIER:
    case BLKIF_OP.DISCARD:
      return op;
    case BLKIF_OP.INDIRECT: {
      const inner = request.indirectOp;
      return disk.maxIndirectSegments > 0 && (inner === BLKIF_OP.READ || inner === BLKIF_OP.WRITE) ? inner : -1;
    }
    default:
      return -1;
  }
}

/**
 * Checks everything in the request itself. Direct requests come back fully checked; an accepted
 * INDIRECT has only its header checked (operation, segment count, read-only): its segments, once
 * read from its pages, go through validateSegments().
 */
export function validateRequest(request: BlkifRequest, disk: DiskLimits, extent: RequestExtent = new RequestExtent()): Validation {
  const op = request.operation;
  switch (op) {
    case BLKIF_OP.READ:
    case BLKIF_OP.WRITE:
      return direct(request, disk, extent, 1);
    case BLKIF_OP.FLUSH_DISKCACHE:
    case BLKIF_OP.WRITE_BARRIER:
      return direct(request, disk, extent, 0);
    case BLKIF_OP.DISCARD:
      return discard(request, disk, extent);
    case BLKIF_OP.INDIRECT:
      return indirectHeader(request, disk, extent);
    default:
      return rejection(BLKIF_RSP.EOPNOTSUPP, 'bad_op', `unsupported operation ${op}`);
  }
}

/**
 * Checks extent.segments segments (first[i], last[i]) and the range they cover from
 * extent.firstSector, and sets extent.sectors. For direct requests validateRequest() calls it; for
 * an indirect one the caller does, with the list copied out of the indirect pages.
 */
export function validateSegments(first: ArrayLike<number>, last: ArrayLike<number>, disk: DiskLimits, extent: RequestExtent): Validation {
  const nseg = extent.segments;
  const mask = disk.sectorsPerBlock - 1;
  let sectors = 0;
  for (let i = 0; i < nseg; i++) {
    const f = first[i]!;
    const l = last[i]!;
    if (l >= SECTORS_PER_PAGE || f > l) return rejection(BLKIF_RSP.ERROR, 'bad_segments', `segment ${i}: first_sect ${f}, last_sect ${l}`);
    const n = l - f + 1;
    if (((f | n) & mask) !== 0) {
      return rejection(BLKIF_RSP.ERROR, 'misaligned', `segment ${i} is not aligned to the ${disk.sectorsPerBlock * SECTOR_SIZE}-byte block`);
    }
    sectors += n;
  }
  extent.sectors = sectors;
  // A flush without data names no range: its sector_number is not looked at.
  if (nseg === 0) return extent;
  return checkRange(extent.firstSector, sectors, disk, extent);
}

function direct(request: BlkifRequest, disk: DiskLimits, extent: RequestExtent, minSegments: number): Validation {
  const op = request.operation;
  const nseg = request.nrSegments;
  // Read-only first, as nbdkit does: any write to such a disk is refused for that reason.
  if (disk.readOnly && (op === BLKIF_OP.WRITE || (op !== BLKIF_OP.READ && nseg > 0))) {
    return rejection(BLKIF_RSP.ERROR, 'read_only', op === BLKIF_OP.WRITE ? 'write to a read-only disk' : 'flush with data to a read-only disk');
  }
  if (nseg < minSegments || nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST) return rejection(BLKIF_RSP.ERROR, 'bad_segments', `bad segment count ${nseg}`);
  extent.operation = op;
  extent.indirect = false;
  extent.indirectPages = 0;
  extent.segments = nseg;
  extent.firstSector = request.sectorNumber;
  return validateSegments(request.segFirst, request.segLast, disk, extent);
}

function discard(request: BlkifRequest, disk: DiskLimits, extent: RequestExtent): Validation {
  if (!disk.discard) return rejection(BLKIF_RSP.EOPNOTSUPP, 'bad_op', 'discard not advertised');
  if ((request.discardFlag & BLKIF_DISCARD_SECURE) !== 0 && !disk.discardSecure) {
    return rejection(BLKIF_RSP.EOPNOTSUPP, 'bad_op', 'secure discard not advertised');
  }
  if (disk.readOnly) return rejection(BLKIF_RSP.ERROR, 'read_only', 'discard on a read-only disk');
  extent.operation = BLKIF_OP.DISCARD;
  extent.indirect = false;
  extent.indirectPages = 0;
  extent.segments = 0;
  extent.firstSector = request.sectorNumber;
  extent.sectors = request.nrSectors;
  return checkRange(request.sectorNumber, request.nrSectors, disk, extent);
}

function indirectHeader(request: BlkifRequest, disk: DiskLimits, extent: RequestExtent): Validation {
  const max = Math.min(disk.maxIndirectSegments, MAX_INDIRECT_LIST);
  if (max <= 0) return rejection(BLKIF_RSP.EOPNOTSUPP, 'bad_op', 'indirect request, but feature-max-indirect-segments is not advertised');
  const op = request.indirectOp;
  if (op !== BLKIF_OP.READ && op !== BLKIF_OP.WRITE) {
    return rejection(BLKIF_RSP.ERROR, 'bad_op', `indirect request for operation ${op} (only read and write may be indirect)`);
  }
  const nseg = request.indirectNrSegments;
  if (nseg < 1 || nseg > max) return rejection(BLKIF_RSP.ERROR, 'bad_segments', `indirect request with ${nseg} segments (at most ${max})`);
  // Before its pages are read: a write to a read-only disk is refused without touching them.
  if (op === BLKIF_OP.WRITE && disk.readOnly) return rejection(BLKIF_RSP.ERROR, 'read_only', 'write to a read-only disk');
  extent.operation = op;
  extent.indirect = true;
  extent.indirectPages = Math.ceil(nseg / SEGS_PER_INDIRECT_FRAME);
  extent.segments = nseg;
  extent.firstSector = request.sectorNumber;
  extent.sectors = 0;
  return extent;
}

/**
 * [sector, sector + sectors) inside the disk and on logical-block boundaries. sector_number and
 * nr_sectors are u64s held as numbers (inexact above 2^53, far past any disk): compared by
 * subtraction from the disk's size, never by a sum that could round back into range. Too many
 * sectors make the difference negative, so any sector is then past it.
 */
function checkRange(sector: number, sectors: number, disk: DiskLimits, extent: RequestExtent): Validation {
  const size = disk.sectors;
  if (sector > size - sectors) return rejection(BLKIF_RSP.ERROR, 'bad_range', `sectors ${sector}+${sectors} past the end (${size} sectors)`);
  const perBlock = disk.sectorsPerBlock;
  if (sector % perBlock !== 0 || sectors % perBlock !== 0) {
    return rejection(BLKIF_RSP.ERROR, 'misaligned', `sector ${sector}+${sectors} not aligned to the ${perBlock * SECTOR_SIZE}-byte block`);
  }
  return extent;
}
