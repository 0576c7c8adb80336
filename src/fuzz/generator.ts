// The fuzz campaign's request generator: pure, seeded, one request per (seed, stream, index). Every
// request carries the answer the protocol owes it, so the hostile guest can check each answer and
// the campaign each error counter. Requests are valid, or break exactly one rule: with a single
// fault the right answer does not depend on the order in which a backend checks things.
//
// A request names grant refs by class (REF) and a free 32-bit pick: the guest running the stream
// resolves them to its own refs, so the generator stays independent of any grant table.
import { BLKIF_DISCARD_SECURE, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP, BLKIF_RSP, SECTORS_PER_PAGE, SEGS_PER_INDIRECT_FRAME } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import type { ErrorKind } from '../blkback/stats.ts';
import { mulberry32 } from '../internal/prng.ts';

/** What a frontend learned about a disk from the backend's directory (the generator's only input besides the seed). */
export interface FuzzDisk {
  /** Size in 512-byte sectors (the `sectors` key). */
  readonly sectors: number;
  /** The `sector-size` key: 512 or 4096. */
  readonly sectorSize: number;
  readonly readOnly: boolean;
  /** feature-discard is 1. */
  readonly discard: boolean;
  /** feature-max-indirect-segments (0: none). At most one indirect page's worth is generated. */
  readonly maxIndirect: number;
}

/** Classes of grant refs a request may name. */
export const REF = {
  /** A data page granted writable to the backend. */
  data: 0,
  /** A page granted read-only to the backend (a canary: must never change). */
  readOnly: 1,
  /** A page granted writable to another domain. */
  otherDomain: 2,
  /** An entry whose access the guest ended (flags cleared). */
  revoked: 3,
  /** An entry never filled. */
  never: 4,
  /** Refs 0-7, which belong to the toolstack. */
  reserved: 5,
  /** A ref past the end of the grant table. */
  outside: 6,
  /** This request's own indirect page (granted read-only). */
  indirect: 7,
} as const;
export type RefClass = (typeof REF)[keyof typeof REF];

export const REF_NAMES = ['data', 'read-only', 'other-domain', 'revoked', 'never-granted', 'reserved', 'outside-table', 'indirect-page'] as const;

/** Segments a generated indirect list holds at most (one indirect page). */
export const MAX_LIST = SEGS_PER_INDIRECT_FRAME;

/** One generated request; reused by callers (no allocation per request). */
export class FuzzRequest {
  index = 0;
  /** Index into FAMILIES. */
  family = 0;
  operation = 0;
  /** nr_segments as written to the slot (direct operations). */
  nrSegments = 0;
  handle = 0;
  /** sector_number as raw u64 halves. */
  sectorLo = 0;
  sectorHi = 0;
  /** Segments described below: in the slot (direct, at most 11) or in the indirect page. */
  segs = 0;
  readonly segRef = new Uint8Array(MAX_LIST);
  readonly segPick = new Uint32Array(MAX_LIST);
  readonly segFirst = new Uint8Array(MAX_LIST);
  readonly segLast = new Uint8Array(MAX_LIST);
  discardFlag = 0;
  nrSectorsLo = 0;
  nrSectorsHi = 0;
  indirectOp = 0;
  /** u16 on the wire. */
  indirectNrSegments = 0;
  indirectPageRef: RefClass = REF.indirect;
  indirectPagePick = 0;
  /** indirect_grefs[1..7]: unused for lists of one page, so any value must be ignored. */
  readonly indirectJunk = new Uint32Array(7);
  /** The answer the protocol owes: status, the error counter it bumps (null: none), the operation echoed. */
  expectStatus = 0;
  expectKind: ErrorKind | null = null;
  expectOp = 0;
}

/** The per-request PRNG: a mulberry32 stream seeded from (seed, stream, index). */
class Draw {
  next: () => number = () => 0;

  reset(seed: number, stream: number, index: number): void {
    this.next = mulberry32(requestSeed(seed, stream, index));
  }

  u32(): number {
    return this.next();
  }

  /** Uniform in [0, n) for n <= 2^32. */
  below(n: number): number {
    return Math.floor((this.next() / 0x100000000) * n);
  }

  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }
}

/** Mixes the three coordinates into one 32-bit seed (a murmur3-style finaliser over each). */
export function requestSeed(seed: number, stream: number, index: number): number {
  let h = (seed ^ 0x5bd1e995) >>> 0;
  for (const v of [stream >>> 0, index >>> 0, Math.floor(index / 0x100000000) >>> 0]) {
    let k = Math.imul(v, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

interface Family {
  readonly name: string;
  readonly weight: number;
  readonly applies: (d: FuzzDisk) => boolean;
  readonly build: (g: Draw, d: FuzzDisk, r: FuzzRequest) => void;
}

const OP = BLKIF_OP;
const RSP = BLKIF_RSP;
const TWO_32 = 0x100000000;

function blockSectors(d: FuzzDisk): number {
  return d.sectorSize / 512;
}

function expect(r: FuzzRequest, status: number, kind: ErrorKind | null, op = r.operation === OP.INDIRECT ? r.indirectOp : r.operation): void {
  r.expectStatus = status;
  r.expectKind = kind;
  r.expectOp = op & 0xff;
}

function ok(r: FuzzRequest): void {
  expect(r, RSP.OKAY, null);
}

function setSector(r: FuzzRequest, sector: number): void {
  r.sectorLo = (sector % TWO_32) >>> 0;
  r.sectorHi = Math.floor(sector / TWO_32) >>> 0;
}

/**
 * Fills segments [0, n) with valid shapes naming `cls` pages (writes may also read read-only
 * grants); returns their sectors. On a 4 KiB-sector disk every segment is a whole page.
 */
function validSegments(g: Draw, d: FuzzDisk, r: FuzzRequest, n: number, forWrite: boolean): number {
  let sectors = 0;
  const whole = d.sectorSize > 512;
  for (let i = 0; i < n; i++) {
    const first = whole ? 0 : g.below(SECTORS_PER_PAGE);
    const last = whole ? SECTORS_PER_PAGE - 1 : first + g.below(SECTORS_PER_PAGE - first);
    r.segFirst[i] = first;
    r.segLast[i] = last;
    r.segRef[i] = forWrite && g.chance(0.25) ? REF.readOnly : REF.data;
    r.segPick[i] = g.u32();
    sectors += last - first + 1;
  }
  r.segs = n;
  return sectors;
}

/** A sector where `sectors` fit on the disk, block-aligned; the ends are favoured. */
function validStart(g: Draw, d: FuzzDisk, sectors: number): number {
  const spb = blockSectors(d);
  const room = Math.floor((d.sectors - sectors) / spb);
  const x = g.below(8);
  const block = x === 0 ? 0 : x === 1 ? room : g.below(room + 1);
  return block * spb;
}

/** How many segments a request of up to `max` has: mostly few, sometimes exactly the most. */
function segmentCount(g: Draw, d: FuzzDisk, max: number): number {
  const fit = Math.max(1, Math.min(max, Math.floor(d.sectors / SECTORS_PER_PAGE)));
  const x = g.below(8);
  if (x === 0) return fit;
  if (x < 5) return 1 + g.below(Math.min(fit, 4));
  return 1 + g.below(fit);
}

/** A direct read, write, or (on a writable disk) flush/barrier with data; valid in every way. */
function validDirect(g: Draw, d: FuzzDisk, r: FuzzRequest, op: number): void {
  r.operation = op;
  const n = segmentCount(g, d, BLKIF_MAX_SEGMENTS_PER_REQUEST);
  const sectors = validSegments(g, d, r, n, op !== OP.READ);
  r.nrSegments = n;
  setSector(r, validStart(g, d, sectors));
}

function validIndirect(g: Draw, d: FuzzDisk, r: FuzzRequest, op: number): void {
  r.operation = OP.INDIRECT;
  r.indirectOp = op;
  const n = segmentCount(g, d, Math.min(d.maxIndirect, MAX_LIST));
  const sectors = validSegments(g, d, r, n, op === OP.WRITE);
  r.indirectNrSegments = n;
  setSector(r, validStart(g, d, sectors));
}

/** An operation that moves data and whose only fault will be the one the caller adds. */
function dataOp(g: Draw, d: FuzzDisk): number {
  if (d.readOnly) return OP.READ;
  const x = g.below(10);
  return x < 4 ? OP.READ : x < 8 ? OP.WRITE : x === 8 ? OP.FLUSH_DISKCACHE : OP.WRITE_BARRIER;
}

const BAD_REFS: readonly RefClass[] = [REF.never, REF.reserved, REF.outside, REF.otherDomain, REF.revoked];

/** The segment list's single fault, for a direct or an indirect request (`op` is READ/WRITE/...). */
function segmentFault(g: Draw, d: FuzzDisk, r: FuzzRequest, op: number): void {
  const k = g.below(r.segs);
  const small = d.sectorSize === 512;
  const kinds = small ? 5 : 4;
  switch (g.below(kinds)) {
    case 0: // a ref the backend may not use
      r.segRef[k] = BAD_REFS[g.below(BAD_REFS.length)]!;
      expect(r, RSP.ERROR, 'bad_grant');
      return;
    case 1:
      if (op === OP.READ) {
        r.segRef[k] = REF.readOnly; // a read into a read-only grant
        for (let i = 0; i < r.segs; i++) if (i !== k) r.segRef[i] = REF.data;
        expect(r, RSP.ERROR, 'bad_grant');
        return;
      }
      r.segRef[k] = BAD_REFS[g.below(BAD_REFS.length)]!;
      expect(r, RSP.ERROR, 'bad_grant');
      return;
    case 2: {
      let sectors = 0;
      for (let i = 0; i < r.segs; i++) sectors += r.segLast[i]! - r.segFirst[i]! + 1;
      const spb = blockSectors(d);
      // Starts inside the disk (or at its end), ends past it.
      const lowest = Math.max(0, d.sectors - sectors + 1);
      const start = Math.ceil((lowest + g.below(Math.max(1, d.sectors - lowest + 1))) / spb) * spb;
      setSector(r, start);
      expect(r, RSP.ERROR, 'bad_range');
      return;
    }
    case 3:
      if (small) {
        // first_sect > last_sect
        const first = 1 + g.below(SECTORS_PER_PAGE - 1);
        r.segFirst[k] = first;
        r.segLast[k] = g.below(first);
      } else {
        // a segment that is not whole blocks
        if (g.chance(0.5)) {
          r.segFirst[k] = 1 + g.below(SECTORS_PER_PAGE - 1);
          r.segLast[k] = SECTORS_PER_PAGE - 1;
        } else {
          r.segFirst[k] = 0;
          r.segLast[k] = g.below(SECTORS_PER_PAGE - 1);
        }
        expect(r, RSP.ERROR, 'misaligned');
        return;
      }
      expect(r, RSP.ERROR, 'bad_segments');
      return;
    default:
      // last_sect past the page; the range moved so that it still fits the disk (one fault only)
      r.segFirst[k] = g.below(SECTORS_PER_PAGE);
      r.segLast[k] = SECTORS_PER_PAGE + g.below(256 - SECTORS_PER_PAGE);
      setSector(r, validStart(g, d, sectorsOf(r)));
      expect(r, RSP.ERROR, 'bad_segments');
  }
}

const writable = (d: FuzzDisk): boolean => !d.readOnly;
const always = (): boolean => true;
const indirectOk = (d: FuzzDisk): boolean => d.maxIndirect > 0;

/** Unknown operations: RESERVED_1 and 7..255 (INDIRECT too when not advertised). */
function unknownOp(g: Draw, d: FuzzDisk): number {
  const x = g.below(d.maxIndirect > 0 ? 250 : 251);
  if (x === 249) return OP.RESERVED_1;
  if (x === 250) return OP.INDIRECT;
  return 7 + x;
}

export const FAMILIES: readonly Family[] = [
  // ------------------------------------------------------------------ valid
  { name: 'read', weight: 14, applies: always, build: (g, d, r) => (validDirect(g, d, r, OP.READ), ok(r)) },
  { name: 'write', weight: 14, applies: writable, build: (g, d, r) => (validDirect(g, d, r, OP.WRITE), ok(r)) },
  {
    name: 'flush',
    weight: 3,
    applies: always,
    build: (g, _d, r) => {
      // Without data the sector is not looked at: any value must do.
      r.operation = OP.FLUSH_DISKCACHE;
      r.nrSegments = 0;
      r.segs = 0;
      r.sectorLo = g.u32();
      r.sectorHi = g.chance(0.5) ? 0 : g.u32();
      ok(r);
    },
  },
  {
    name: 'barrier',
    weight: 2,
    applies: always,
    build: (g, _d, r) => {
      r.operation = OP.WRITE_BARRIER;
      r.nrSegments = 0;
      r.segs = 0;
      r.sectorLo = g.u32();
      r.sectorHi = 0;
      ok(r);
    },
  },
  { name: 'flush with data', weight: 2, applies: writable, build: (g, d, r) => (validDirect(g, d, r, OP.FLUSH_DISKCACHE), ok(r)) },
  { name: 'barrier with data', weight: 1, applies: writable, build: (g, d, r) => (validDirect(g, d, r, OP.WRITE_BARRIER), ok(r)) },
  {
    name: 'discard',
    weight: 3,
    applies: (d) => d.discard,
    build: (g, d, r) => {
      r.operation = OP.DISCARD;
      r.discardFlag = g.below(256) & ~BLKIF_DISCARD_SECURE; // other flag bits mean nothing
      const spb = blockSectors(d);
      // Mostly small (a RAM disk zeroes what is discarded), now and then none or the whole disk.
      const x = g.below(64);
      const count = x === 0 ? 0 : x === 1 ? d.sectors : spb * (1 + g.below(256 / spb));
      r.nrSectorsLo = count;
      r.nrSectorsHi = 0;
      setSector(r, validStart(g, d, count));
      r.segs = 0;
      ok(r);
    },
  },
  { name: 'indirect read', weight: 4, applies: indirectOk, build: (g, d, r) => (validIndirect(g, d, r, OP.READ), ok(r)) },
  { name: 'indirect write', weight: 4, applies: (d) => indirectOk(d) && writable(d), build: (g, d, r) => (validIndirect(g, d, r, OP.WRITE), ok(r)) },

  // ------------------------------------------------------------------ one fault each
  {
    name: 'unknown operation',
    weight: 3,
    applies: always,
    build: (g, d, r) => {
      // Whatever else the slot holds (here: a valid read's fields) must not matter.
      validDirect(g, d, r, OP.READ);
      r.operation = unknownOp(g, d);
      expect(r, RSP.EOPNOTSUPP, 'bad_op');
    },
  },
  {
    name: 'no segments',
    weight: 2,
    applies: always,
    build: (g, d, r) => {
      validDirect(g, d, r, d.readOnly || g.chance(0.5) ? OP.READ : OP.WRITE);
      r.nrSegments = 0;
      r.segs = 0;
      expect(r, RSP.ERROR, 'bad_segments');
    },
  },
  {
    name: 'too many segments',
    weight: 2,
    applies: always,
    build: (g, d, r) => {
      // The slot holds 11 valid segments; nr_segments claims 12 to 255.
      const op = dataOp(g, d);
      r.operation = op;
      const fit = Math.min(BLKIF_MAX_SEGMENTS_PER_REQUEST, Math.floor(d.sectors / SECTORS_PER_PAGE));
      setSector(r, validStart(g, d, validSegments(g, d, r, fit, op !== OP.READ)));
      r.nrSegments = BLKIF_MAX_SEGMENTS_PER_REQUEST + 1 + g.below(255 - BLKIF_MAX_SEGMENTS_PER_REQUEST);
      expect(r, RSP.ERROR, 'bad_segments');
    },
  },
  {
    name: 'bad segment',
    weight: 8,
    applies: always,
    build: (g, d, r) => {
      const op = dataOp(g, d);
      validDirect(g, d, r, op);
      segmentFault(g, d, r, op);
    },
  },
  {
    name: 'sector not block-aligned',
    weight: 1,
    applies: (d) => d.sectorSize > 512,
    build: (g, d, r) => {
      validDirect(g, d, r, dataOp(g, d));
      const start = r.sectorLo + 1 + g.below(blockSectors(d) - 1);
      const sectors = sectorsOf(r);
      // Keep it inside the disk so that alignment is the only fault.
      setSector(r, start + sectors <= d.sectors ? start : start - blockSectors(d));
      expect(r, RSP.ERROR, 'misaligned');
    },
  },
  {
    name: 'sector beyond 2^32',
    weight: 2,
    applies: always,
    build: (g, d, r) => {
      validDirect(g, d, r, dataOp(g, d));
      r.sectorHi = 1 + g.below(0xffffffff);
      r.sectorLo = Math.floor(g.u32() / blockSectors(d)) * blockSectors(d);
      expect(r, RSP.ERROR, 'bad_range');
    },
  },
  {
    name: 'write to a read-only disk',
    weight: 6,
    applies: (d) => d.readOnly,
    build: (g, d, r) => {
      const x = g.below(8);
      if (x < 5) validDirect(g, d, r, OP.WRITE);
      else if (x === 5) validDirect(g, d, r, OP.FLUSH_DISKCACHE);
      else if (x === 6) validDirect(g, d, r, OP.WRITE_BARRIER);
      else if (d.maxIndirect > 0) validIndirect(g, d, r, OP.WRITE);
      else validDirect(g, d, r, OP.WRITE);
      expect(r, RSP.ERROR, 'read_only');
    },
  },
  {
    name: 'discard not advertised',
    weight: 2,
    applies: (d) => !d.discard,
    build: (g, d, r) => {
      r.operation = OP.DISCARD;
      r.discardFlag = g.below(2);
      setSector(r, validStart(g, d, blockSectors(d)));
      r.nrSectorsLo = blockSectors(d);
      r.nrSectorsHi = 0;
      r.segs = 0;
      expect(r, RSP.EOPNOTSUPP, 'bad_op');
    },
  },
  {
    name: 'secure discard',
    weight: 1,
    applies: (d) => d.discard,
    build: (g, d, r) => {
      r.operation = OP.DISCARD;
      r.discardFlag = (g.below(256) | BLKIF_DISCARD_SECURE) >>> 0;
      setSector(r, validStart(g, d, blockSectors(d)));
      r.nrSectorsLo = blockSectors(d);
      r.nrSectorsHi = 0;
      r.segs = 0;
      expect(r, RSP.EOPNOTSUPP, 'bad_op');
    },
  },
  {
    name: 'discard past the end',
    weight: 1,
    applies: (d) => d.discard,
    build: (g, d, r) => {
      r.operation = OP.DISCARD;
      r.discardFlag = 0;
      r.segs = 0;
      const spb = blockSectors(d);
      if (g.chance(0.5)) {
        // nr_sectors as large as a u64 gets, at a sector inside the disk
        setSector(r, validStart(g, d, spb));
        r.nrSectorsHi = 0xffffffff;
        r.nrSectorsLo = (0x100000000 - spb) >>> 0;
      } else {
        const start = validStart(g, d, spb);
        const count = (d.sectors - start + spb * (1 + g.below(64))) >>> 0;
        setSector(r, start);
        r.nrSectorsLo = count;
        r.nrSectorsHi = 0;
      }
      expect(r, RSP.ERROR, 'bad_range');
    },
  },
  {
    name: 'discard not block-aligned',
    weight: 1,
    applies: (d) => d.discard && d.sectorSize > 512,
    build: (g, d, r) => {
      r.operation = OP.DISCARD;
      r.discardFlag = 0;
      r.segs = 0;
      const spb = blockSectors(d);
      const start = validStart(g, d, 2 * spb);
      if (g.chance(0.5)) {
        setSector(r, start + 1 + g.below(spb - 1));
        r.nrSectorsLo = spb;
      } else {
        setSector(r, start);
        r.nrSectorsLo = 1 + g.below(spb - 1);
      }
      r.nrSectorsHi = 0;
      expect(r, RSP.ERROR, 'misaligned');
    },
  },
  {
    name: 'indirect: bad operation',
    weight: 1,
    applies: indirectOk,
    build: (g, d, r) => {
      validIndirect(g, d, r, OP.READ);
      let op = g.below(256);
      if (op === OP.READ || op === OP.WRITE) op = OP.FLUSH_DISKCACHE;
      r.indirectOp = op;
      expect(r, RSP.ERROR, 'bad_op');
    },
  },
  {
    name: 'indirect: segment count',
    weight: 1,
    applies: indirectOk,
    build: (g, d, r) => {
      validIndirect(g, d, r, d.readOnly ? OP.READ : g.chance(0.5) ? OP.READ : OP.WRITE);
      r.indirectNrSegments = g.chance(0.3) ? 0 : d.maxIndirect + 1 + g.below(0xffff - d.maxIndirect);
      expect(r, RSP.ERROR, 'bad_segments');
    },
  },
  {
    name: 'indirect: bad page ref',
    weight: 1,
    applies: indirectOk,
    build: (g, d, r) => {
      validIndirect(g, d, r, d.readOnly ? OP.READ : g.chance(0.5) ? OP.READ : OP.WRITE);
      r.indirectPageRef = BAD_REFS[g.below(BAD_REFS.length)]!;
      expect(r, RSP.ERROR, 'bad_grant');
    },
  },
  {
    name: 'indirect: bad segment',
    weight: 2,
    applies: indirectOk,
    build: (g, d, r) => {
      const op = d.readOnly ? OP.READ : g.chance(0.5) ? OP.READ : OP.WRITE;
      validIndirect(g, d, r, op);
      segmentFault(g, d, r, op);
    },
  },
];

function sectorsOf(r: FuzzRequest): number {
  let n = 0;
  for (let i = 0; i < r.segs; i++) n += r.segLast[i]! - r.segFirst[i]! + 1;
  return n;
}

/** The families that apply to a disk with their cumulative weights, for picking. */
export class FamilyTable {
  readonly disk: FuzzDisk;
  readonly ids: readonly number[];
  readonly #cumulative: number[];
  readonly #total: number;

  constructor(disk: FuzzDisk) {
    if (disk.sectors < 2 * SECTORS_PER_PAGE || disk.sectors % (disk.sectorSize / 512) !== 0) {
      throw new RangeError(`fuzz disk of ${disk.sectors} sectors is too small or not whole blocks`);
    }
    this.disk = { ...disk, maxIndirect: Math.min(disk.maxIndirect, MAX_LIST) };
    const ids: number[] = [];
    const cumulative: number[] = [];
    let total = 0;
    FAMILIES.forEach((f, id) => {
      if (!f.applies(this.disk)) return;
      total += f.weight;
      ids.push(id);
      cumulative.push(total);
    });
    this.ids = ids;
    this.#cumulative = cumulative;
    this.#total = total;
  }

  pick(x: number): number {
    const target = x * this.#total;
    const c = this.#cumulative;
    for (let i = 0; i < c.length; i++) if (target < c[i]!) return this.ids[i]!;
    return this.ids[this.ids.length - 1]!;
  }
}

const draw = new Draw();

/**
 * Request `index` of stream `stream` under `seed` for the table's disk, into `out`. Pure: the same
 * arguments give the same request, whatever was generated before.
 */
export function generateRequest(seed: number, stream: number, index: number, table: FamilyTable, out: FuzzRequest): FuzzRequest {
  const g = draw;
  g.reset(seed, stream, index);
  const d = table.disk;
  out.index = index;
  out.family = table.pick(g.u32() / TWO_32);
  out.operation = 0;
  out.nrSegments = 0;
  out.handle = g.below(0x10000);
  out.sectorLo = 0;
  out.sectorHi = 0;
  out.segs = 0;
  out.discardFlag = 0;
  out.nrSectorsLo = 0;
  out.nrSectorsHi = 0;
  out.indirectOp = 0;
  out.indirectNrSegments = 0;
  out.indirectPageRef = REF.indirect;
  out.indirectPagePick = g.u32();
  for (let i = 0; i < out.indirectJunk.length; i++) out.indirectJunk[i] = g.u32();
  FAMILIES[out.family]!.build(g, d, out);
  return out;
}

/** The ring a stream's connection `connection` asks for: an ABI from `abis` and 2^0..2^maxOrder pages. */
export function ringChoice(seed: number, stream: number, connection: number, abis: readonly BlkifAbi[], maxOrder: number): { abi: BlkifAbi; order: number } {
  const next = mulberry32(requestSeed(seed, (stream | 0x20000000) >>> 0, connection));
  const abi = abis[Math.floor((next() / TWO_32) * abis.length)]!;
  return { abi, order: Math.floor((next() / TWO_32) * (maxOrder + 1)) };
}

/** How far past the ring a req_prod overflow goes (pure, like every choice of the campaign). */
export function overflowDistance(seed: number, stream: number, n: number): number {
  const next = mulberry32(requestSeed(seed, (stream | 0x10000000) >>> 0, n));
  const x = next();
  // Mostly just past the ring, sometimes half the index space away.
  return x % 4 === 0 ? 1 + (x % 0x7fff0000) : 1 + (x % 64);
}

const OP_NAMES: Record<number, string> = { 0: 'READ', 1: 'WRITE', 2: 'WRITE_BARRIER', 3: 'FLUSH_DISKCACHE', 4: 'RESERVED_1', 5: 'DISCARD', 6: 'INDIRECT' };

export function opName(op: number): string {
  return OP_NAMES[op] ?? `op ${op}`;
}

export function statusName(status: number): string {
  return status === RSP.OKAY ? 'OKAY' : status === RSP.ERROR ? 'ERROR' : status === RSP.EOPNOTSUPP ? 'EOPNOTSUPP' : `status ${status}`;
}

/** One line naming the request's fields, for findings. */
export function describeRequest(r: FuzzRequest): string {
  const u64 = (hi: number, lo: number): string => (hi === 0 ? String(lo) : `0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')}`);
  const segs = (n: number): string => {
    const shown = Math.min(n, 4);
    const parts: string[] = [];
    for (let i = 0; i < shown; i++) parts.push(`${REF_NAMES[r.segRef[i]!]} ${r.segFirst[i]}-${r.segLast[i]}`);
    return `[${parts.join(', ')}${n > shown ? `, ... ${n - shown} more` : ''}]`;
  };
  const family = FAMILIES[r.family]!.name;
  switch (r.operation) {
    case OP.DISCARD:
      return `${family}: DISCARD flag ${r.discardFlag} sector ${u64(r.sectorHi, r.sectorLo)} nr_sectors ${u64(r.nrSectorsHi, r.nrSectorsLo)}`;
    case OP.INDIRECT:
      return (
        `${family}: INDIRECT ${opName(r.indirectOp)} nr_segments ${r.indirectNrSegments} sector ${u64(r.sectorHi, r.sectorLo)} ` +
        `page ${REF_NAMES[r.indirectPageRef]} ${segs(Math.min(r.segs, r.indirectNrSegments))}`
      );
    case OP.READ:
    case OP.WRITE:
    case OP.FLUSH_DISKCACHE:
    case OP.WRITE_BARRIER:
      return `${family}: ${opName(r.operation)} nr_segments ${r.nrSegments} sector ${u64(r.sectorHi, r.sectorLo)} ${segs(r.segs)}`;
    default:
      return `${family}: ${opName(r.operation)}`;
  }
}
