// validateRequest / validateSegments: every check blkback makes of a request before touching a grant
// or the store, without a ring. Requests are built as ring-slot bytes by a naive encoder here (x86_64
// layout, xen/io/blkif.h) and decoded by the codec, so u64 sector numbers near 2^64 arrive as the
// backend really sees them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlkifRequest, decodeRequest } from '../src/blkif/codec.ts';
import { BLKIF_OP, BLKIF_RSP } from '../src/blkif/constants.ts';
import { countedOperation, RequestExtent, validateRequest, validateSegments } from '../src/blkback/request-validator.ts';
import type { DiskLimits, Validation } from '../src/blkback/request-validator.ts';

const DISK_SECTORS = 2048; // 1 MiB
const disk: DiskLimits = { sectors: DISK_SECTORS, sectorsPerBlock: 1, readOnly: false, discard: true, discardSecure: false, maxIndirectSegments: 256 };
const readOnly: DiskLimits = { ...disk, readOnly: true };
const disk4k: DiskLimits = { ...disk, sectorsPerBlock: 8 };

interface Slot {
  op: number;
  sector?: bigint;
  /** nr_segments as written on the ring (defaults to segs.length). */
  nr?: number;
  segs?: readonly (readonly [first: number, last: number])[];
  discardFlag?: number;
  nrSectors?: bigint;
  indirectOp?: number;
  indirectNr?: number;
}

/** Ring-slot bytes of one x86_64 blkif request, written field by field. */
function slotBytes(s: Slot): Uint8Array {
  const bytes = new Uint8Array(112);
  const v = new DataView(bytes.buffer);
  v.setUint8(0, s.op);
  v.setBigUint64(8, 0x1234n, true); // id
  v.setBigUint64(16, s.sector ?? 0n, true);
  if (s.op === BLKIF_OP.DISCARD) {
    v.setUint8(1, s.discardFlag ?? 0);
    v.setBigUint64(24, s.nrSectors ?? 0n, true);
  } else if (s.op === BLKIF_OP.INDIRECT) {
    v.setUint8(1, s.indirectOp ?? BLKIF_OP.READ);
    v.setUint16(2, s.indirectNr ?? 1, true);
    for (let p = 0; p < 8; p++) v.setUint32(28 + 4 * p, 100 + p, true);
  } else {
    const segs = s.segs ?? [];
    v.setUint8(1, s.nr ?? segs.length);
    segs.slice(0, 11).forEach(([first, last], i) => {
      v.setUint32(24 + 8 * i, 10 + i, true);
      v.setUint8(24 + 8 * i + 4, first);
      v.setUint8(24 + 8 * i + 5, last);
    });
  }
  return bytes;
}

function request(s: Slot): BlkifRequest {
  const r = new BlkifRequest();
  decodeRequest('x86_64', slotBytes(s), r);
  return r;
}

const whole = (n: number): [number, number][] => Array.from({ length: n }, () => [0, 7]);

function accepted(v: Validation): RequestExtent {
  if (!v.accepted) assert.fail(`refused: ${v.kind} (${v.reason})`);
  return v;
}

function refused(v: Validation, kind: string, status: number = BLKIF_RSP.ERROR): void {
  assert.equal(v.accepted, false, `accepted, but should be refused as ${kind}`);
  if (v.accepted) return;
  assert.equal(v.kind, kind, v.reason);
  assert.equal(v.status, status, `${kind}: status`);
  assert.ok(v.reason.length > 0);
}

test('a valid read: its extent is the sectors its segments cover, and the extent passed in is the one filled', () => {
  const extent = new RequestExtent();
  const v = validateRequest(
    request({
      op: BLKIF_OP.READ,
      sector: 16n,
      segs: [
        [0, 7],
        [2, 5],
        [0, 0],
      ],
    }),
    disk,
    extent,
  );
  assert.equal(v, extent, 'accepting returns the caller-owned extent (no allocation)');
  const e = accepted(v);
  assert.equal(e.operation, BLKIF_OP.READ);
  assert.equal(e.indirect, false);
  assert.equal(e.firstSector, 16);
  assert.equal(e.segments, 3);
  assert.equal(e.sectors, 8 + 4 + 1);
});

test('range: the last sector of the disk is in, one past it is out', () => {
  const last = BigInt(DISK_SECTORS - 1);
  assert.equal(accepted(validateRequest(request({ op: BLKIF_OP.READ, sector: last, segs: [[0, 0]] }), disk)).firstSector, DISK_SECTORS - 1);
  refused(validateRequest(request({ op: BLKIF_OP.READ, sector: last + 1n, segs: [[0, 0]] }), disk), 'bad_range');
  // 11 whole pages (88 sectors) ending exactly at the end, then starting one sector later.
  const start = BigInt(DISK_SECTORS - 88);
  accepted(validateRequest(request({ op: BLKIF_OP.WRITE, sector: start, segs: whole(11) }), disk));
  refused(validateRequest(request({ op: BLKIF_OP.WRITE, sector: start + 1n, segs: whole(11) }), disk), 'bad_range');
});

test('range: sector numbers near 2^64 and past Number.MAX_SAFE_INTEGER never wrap into the disk', () => {
  const huge: DiskLimits = { ...disk, sectors: 2 ** 44 }; // 8 PiB: the largest a number-sized byte size allows
  for (const sector of [2n ** 64n - 1n, 2n ** 64n - 8n, 2n ** 64n - 88n, BigInt(Number.MAX_SAFE_INTEGER), 2n ** 53n + 1n, 2n ** 44n - 87n]) {
    refused(validateRequest(request({ op: BLKIF_OP.READ, sector, segs: whole(11) }), huge), 'bad_range');
    refused(validateRequest(request({ op: BLKIF_OP.READ, sector, segs: whole(1) }), disk), 'bad_range');
  }
  refused(validateRequest(request({ op: BLKIF_OP.READ, sector: 2n ** 32n, segs: whole(1) }), disk), 'bad_range');
  accepted(validateRequest(request({ op: BLKIF_OP.READ, sector: 2n ** 44n - 88n, segs: whole(11) }), huge));
  accepted(validateRequest(request({ op: BLKIF_OP.READ, sector: 2n ** 44n - 8n, segs: whole(1) }), huge));
  // A discard whose nr_sectors alone wraps the u64 range.
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 8n, nrSectors: 2n ** 64n - 8n }), disk), 'bad_range');
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 2n ** 64n - 8n, nrSectors: 16n }), disk), 'bad_range');
});

test('segment count: 0, 11 and 12 (and 255) for reads and writes', () => {
  for (const op of [BLKIF_OP.READ, BLKIF_OP.WRITE]) {
    refused(validateRequest(request({ op, segs: [] }), disk), 'bad_segments');
    assert.equal(accepted(validateRequest(request({ op, segs: whole(11) }), disk)).sectors, 88);
    // The slot holds 11 valid segments; nr_segments claims more.
    refused(validateRequest(request({ op, segs: whole(11), nr: 12 }), disk), 'bad_segments');
    refused(validateRequest(request({ op, segs: whole(11), nr: 255 }), disk), 'bad_segments');
  }
});

test('first_sect and last_sect: ordered, and last_sect within the page (7 is in, 8 is out)', () => {
  accepted(validateRequest(request({ op: BLKIF_OP.READ, segs: [[7, 7]] }), disk));
  accepted(validateRequest(request({ op: BLKIF_OP.READ, segs: [[0, 7]] }), disk));
  refused(validateRequest(request({ op: BLKIF_OP.READ, segs: [[0, 8]] }), disk), 'bad_segments');
  refused(validateRequest(request({ op: BLKIF_OP.READ, segs: [[8, 8]] }), disk), 'bad_segments');
  refused(validateRequest(request({ op: BLKIF_OP.READ, segs: [[0, 255]] }), disk), 'bad_segments');
  refused(validateRequest(request({ op: BLKIF_OP.READ, segs: [[4, 3]] }), disk), 'bad_segments');
  // The fault in the last of 11 segments is found too.
  refused(validateRequest(request({ op: BLKIF_OP.WRITE, segs: [...whole(10), [5, 1]] }), disk), 'bad_segments');
});

test('logical blocks of 4 KiB: segments, start sector and discard length must be whole blocks', () => {
  accepted(validateRequest(request({ op: BLKIF_OP.READ, sector: 8n, segs: whole(2) }), disk4k));
  refused(validateRequest(request({ op: BLKIF_OP.READ, sector: 8n, segs: [[1, 7]] }), disk4k), 'misaligned');
  refused(validateRequest(request({ op: BLKIF_OP.READ, sector: 8n, segs: [[0, 6]] }), disk4k), 'misaligned');
  refused(validateRequest(request({ op: BLKIF_OP.READ, sector: 9n, segs: whole(1) }), disk4k), 'misaligned');
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 8n, nrSectors: 4n }), disk4k), 'misaligned');
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 4n, nrSectors: 8n }), disk4k), 'misaligned');
  accepted(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 8n, nrSectors: 16n }), disk4k));
});

test('flush and barrier: without data the sector is not looked at; with data it is a checked write', () => {
  for (const op of [BLKIF_OP.FLUSH_DISKCACHE, BLKIF_OP.WRITE_BARRIER]) {
    const e = accepted(validateRequest(request({ op, sector: 2n ** 64n - 1n, segs: [] }), disk));
    assert.equal(e.operation, op);
    assert.equal(e.sectors, 0);
    assert.equal(e.segments, 0);
    assert.equal(accepted(validateRequest(request({ op, sector: 0n, segs: whole(2) }), disk)).sectors, 16);
    refused(validateRequest(request({ op, sector: BigInt(DISK_SECTORS), segs: whole(1) }), disk), 'bad_range');
    refused(validateRequest(request({ op, segs: whole(11), nr: 12 }), disk), 'bad_segments');
    refused(validateRequest(request({ op, segs: [[3, 2]] }), disk), 'bad_segments');
  }
});

test('a read-only disk: reads (direct and indirect) and flushes without data pass; every kind of write is refused as read_only', () => {
  accepted(validateRequest(request({ op: BLKIF_OP.READ, segs: whole(1) }), readOnly));
  accepted(validateRequest(request({ op: BLKIF_OP.FLUSH_DISKCACHE, segs: [] }), readOnly));
  accepted(validateRequest(request({ op: BLKIF_OP.WRITE_BARRIER, segs: [] }), readOnly));
  accepted(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectOp: BLKIF_OP.READ, indirectNr: 20 }), readOnly));
  refused(validateRequest(request({ op: BLKIF_OP.WRITE, segs: whole(1) }), readOnly), 'read_only');
  refused(validateRequest(request({ op: BLKIF_OP.FLUSH_DISKCACHE, segs: whole(1) }), readOnly), 'read_only');
  refused(validateRequest(request({ op: BLKIF_OP.WRITE_BARRIER, segs: whole(1) }), readOnly), 'read_only');
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 0n, nrSectors: 8n }), readOnly), 'read_only');
  refused(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectOp: BLKIF_OP.WRITE, indirectNr: 20 }), readOnly), 'read_only');
  // The same write to the writable disk passes: it is the disk, not the request.
  accepted(validateRequest(request({ op: BLKIF_OP.WRITE, segs: whole(1) }), disk));
  accepted(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectOp: BLKIF_OP.WRITE, indirectNr: 20 }), disk));
});

test('discard: only when advertised, secure only when advertised, zero sectors at the very end is in range', () => {
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 0n, nrSectors: 8n }), { ...disk, discard: false }), 'bad_op', BLKIF_RSP.EOPNOTSUPP);
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 0n, nrSectors: 8n, discardFlag: 1 }), disk), 'bad_op', BLKIF_RSP.EOPNOTSUPP);
  accepted(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 0n, nrSectors: 8n, discardFlag: 1 }), { ...disk, discardSecure: true }));
  accepted(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 0n, nrSectors: 8n, discardFlag: 0xfe }), disk)); // other flag bits mean nothing
  const e = accepted(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 100n, nrSectors: 24n }), disk));
  assert.equal(e.operation, BLKIF_OP.DISCARD);
  assert.equal(e.firstSector, 100);
  assert.equal(e.sectors, 24);
  assert.equal(e.segments, 0);
  accepted(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: BigInt(DISK_SECTORS), nrSectors: 0n }), disk));
  accepted(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 0n, nrSectors: BigInt(DISK_SECTORS) }), disk));
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: BigInt(DISK_SECTORS) + 1n, nrSectors: 0n }), disk), 'bad_range');
  refused(validateRequest(request({ op: BLKIF_OP.DISCARD, sector: 1n, nrSectors: BigInt(DISK_SECTORS) }), disk), 'bad_range');
});

test('unknown operations (RESERVED_1, 7, 255) are EOPNOTSUPP', () => {
  for (const op of [BLKIF_OP.RESERVED_1, 7, 100, 255]) refused(validateRequest(request({ op, segs: whole(1) }), disk), 'bad_op', BLKIF_RSP.EOPNOTSUPP);
});

test('indirect header: advertised, a read or write, 1..max segments (0, max, max+1)', () => {
  const max = disk.maxIndirectSegments;
  refused(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: 8 }), { ...disk, maxIndirectSegments: 0 }), 'bad_op', BLKIF_RSP.EOPNOTSUPP);
  for (const op of [BLKIF_OP.FLUSH_DISKCACHE, BLKIF_OP.WRITE_BARRIER, BLKIF_OP.DISCARD, BLKIF_OP.INDIRECT, 200]) {
    refused(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectOp: op, indirectNr: 8 }), disk), 'bad_op');
  }
  refused(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: 0 }), disk), 'bad_segments');
  refused(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: max + 1 }), disk), 'bad_segments');
  refused(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: 0xffff }), disk), 'bad_segments');
  const e = accepted(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectOp: BLKIF_OP.WRITE, indirectNr: max, sector: 40n }), disk));
  assert.equal(e.operation, BLKIF_OP.WRITE);
  assert.equal(e.indirect, true);
  assert.equal(e.segments, max);
  assert.equal(e.indirectPages, 1);
  assert.equal(e.firstSector, 40);
  assert.equal(e.sectors, 0, 'not known until the list is read');
  // The whole protocol maximum: 8 pages of 512 entries; one more is refused whatever is advertised.
  const wide: DiskLimits = { ...disk, sectors: 2 ** 40, maxIndirectSegments: 1 << 20 };
  assert.equal(accepted(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: 4096 }), wide)).indirectPages, 8);
  assert.equal(accepted(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: 513 }), wide)).indirectPages, 2);
  refused(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: 4097 }), wide), 'bad_segments');
});

test('indirect segment lists: validateSegments checks each entry and the range they cover', () => {
  const max = disk.maxIndirectSegments;
  const first = new Uint8Array(max);
  const last = new Uint8Array(max).fill(7);
  const header = (sector: bigint): RequestExtent => accepted(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: max, sector }), disk));
  const e = header(0n);
  assert.equal(validateSegments(first, last, disk, e), e);
  assert.equal(e.sectors, max * 8);
  // Ending exactly at the end of the disk, then one sector past it.
  accepted(validateSegments(first, last, disk, header(BigInt(DISK_SECTORS - max * 8))));
  refused(validateSegments(first, last, disk, header(BigInt(DISK_SECTORS - max * 8 + 1))), 'bad_range');
  refused(validateSegments(first, last, disk, header(2n ** 64n - 8n)), 'bad_range');
  last[max - 1] = 8;
  refused(validateSegments(first, last, disk, header(0n)), 'bad_segments');
  last[max - 1] = 7;
  first[100] = 7;
  last[100] = 6;
  refused(validateSegments(first, last, disk, header(0n)), 'bad_segments');
  first[100] = 1;
  last[100] = 7;
  refused(validateSegments(first, last, disk4k, accepted(validateRequest(request({ op: BLKIF_OP.INDIRECT, indirectNr: max }), disk4k))), 'misaligned');
  accepted(validateSegments(first, last, disk, header(0n)));
});

test('countedOperation: what each request counts as, refused or not', () => {
  const c = (s: Slot, limits = disk): number => countedOperation(request(s), limits);
  assert.equal(c({ op: BLKIF_OP.READ, segs: [] }), BLKIF_OP.READ, 'a refused read still counts as a read');
  assert.equal(c({ op: BLKIF_OP.WRITE }), BLKIF_OP.WRITE);
  assert.equal(c({ op: BLKIF_OP.WRITE_BARRIER }), BLKIF_OP.WRITE_BARRIER);
  assert.equal(c({ op: BLKIF_OP.DISCARD }, { ...disk, discard: false }), BLKIF_OP.DISCARD);
  assert.equal(c({ op: BLKIF_OP.INDIRECT, indirectOp: BLKIF_OP.WRITE, indirectNr: 0 }), BLKIF_OP.WRITE);
  assert.equal(c({ op: BLKIF_OP.INDIRECT, indirectOp: BLKIF_OP.FLUSH_DISKCACHE }), -1);
  assert.equal(c({ op: BLKIF_OP.INDIRECT, indirectOp: BLKIF_OP.READ }, { ...disk, maxIndirectSegments: 0 }), -1);
  assert.equal(c({ op: 9 }), -1);
});

test('a resize takes effect on the next request: the size is read from DiskLimits at each call', () => {
  let sectors = 64;
  const growing: DiskLimits = {
    ...disk,
    get sectors() {
      return sectors;
    },
  };
  const r = request({ op: BLKIF_OP.READ, sector: 64n, segs: whole(1) });
  refused(validateRequest(r, growing), 'bad_range');
  sectors = 72;
  accepted(validateRequest(r, growing));
});
