import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ABI_LAYOUT, BLKIF_OP, BLKIF_RSP, PROTOCOL_NAMES, abiFromProtocol } from '../src/blkif/constants.ts';
import type { BlkifAbi } from '../src/blkif/constants.ts';
import {
  BlkifRequest,
  BlkifResponse,
  decodeIndirectSegments,
  decodeRequest,
  decodeResponse,
  encodeIndirectSegments,
  encodeRequest,
  encodeResponse,
} from '../src/blkif/codec.ts';
import { hex, prng, zeros } from './fixtures/blkif/pages.ts';

const ABIS: readonly BlkifAbi[] = ['x86_64', 'x86_32'];

// Expected bytes below are written by hand from protocol-notes §1.2 (x86_64: 4-byte hole before id;
// x86_32: none), never produced by the encoder under test.
const RW_EXPECTED: Record<BlkifAbi, Uint8Array> = {
  x86_64: hex(
    '01 02 34 12 00 00 00 00' + // op WRITE, nr 2, handle 0x1234, hole
      '08 07 06 05 04 03 02 01' + // id 0x0102030405060708
      '10 00 00 00 01 00 00 00' + // sector 0x1_0000_0010
      'dd cc bb aa 00 07 00 00' + // seg 0: gref 0xaabbccdd, 0..7, pad
      '11 00 00 00 01 03 00 00' + // seg 1: gref 0x11, 1..3, pad
      zeros(9 * 8),
  ),
  x86_32: hex('01 02 34 12' + '08 07 06 05 04 03 02 01' + '10 00 00 00 01 00 00 00' + 'dd cc bb aa 00 07 00 00' + '11 00 00 00 01 03 00 00' + zeros(9 * 8)),
};

const DISCARD_EXPECTED: Record<BlkifAbi, Uint8Array> = {
  x86_64: hex(
    '05 01 00 03 00 00 00 00' + // op DISCARD, flag SECURE, handle 0x0300, hole
      'ef be ad de 01 00 00 00' + // id 0x1_deadbeef
      '05 00 00 00 00 01 00 00' + // sector 2^40 + 5
      '07 00 00 00 01 00 00 00' + // nr_sectors 0x1_0000_0007
      zeros(112 - 32),
  ),
  x86_32: hex('05 01 00 03' + 'ef be ad de 01 00 00 00' + '05 00 00 00 00 01 00 00' + '07 00 00 00 01 00 00 00' + zeros(108 - 28)),
};

const INDIRECT_GREFS = '00 01 00 00 01 01 00 00 02 01 00 00 03 01 00 00 04 01 00 00 05 01 00 00 06 01 00 00 07 01 00 00';
const INDIRECT_EXPECTED: Record<BlkifAbi, Uint8Array> = {
  x86_64: hex(
    '06 01 01 02 00 00 00 00' + // op INDIRECT, indirect_op WRITE, nr_segments 0x0201 (u16), hole
      '01 00 00 00 00 00 00 00' + // id 1
      '20 00 00 00 00 00 00 00' + // sector 0x20
      'fe ca 00 00' + // handle 0xcafe @24, pad
      INDIRECT_GREFS + // indirect_grefs @28
      zeros(112 - 60),
  ),
  x86_32: hex('06 01 01 02' + '01 00 00 00 00 00 00 00' + '20 00 00 00 00 00 00 00' + 'fe ca 00 00' + INDIRECT_GREFS + zeros(108 - 56)),
};

function rwRequest(): BlkifRequest {
  const r = new BlkifRequest();
  r.operation = BLKIF_OP.WRITE;
  r.nrSegments = 2;
  r.handle = 0x1234;
  r.idLo = 0x05060708;
  r.idHi = 0x01020304;
  r.sectorNumber = 0x1_0000_0010;
  r.segGref.set([0xaabbccdd, 0x11]);
  r.segFirst.set([0, 1]);
  r.segLast.set([7, 3]);
  // Stale values in unused segments must not reach the wire.
  r.segGref[5] = 0xffffffff;
  r.segLast[5] = 9;
  return r;
}

function discardRequest(): BlkifRequest {
  const r = new BlkifRequest();
  r.operation = BLKIF_OP.DISCARD;
  r.discardFlag = 1;
  r.handle = 0x0300;
  r.idLo = 0xdeadbeef;
  r.idHi = 1;
  r.sectorNumber = 2 ** 40 + 5;
  r.nrSectors = 0x1_0000_0007;
  r.nrSegments = 9; // not part of a discard request: must not be encoded
  return r;
}

function indirectRequest(): BlkifRequest {
  const r = new BlkifRequest();
  r.operation = BLKIF_OP.INDIRECT;
  r.indirectOp = BLKIF_OP.WRITE;
  r.indirectNrSegments = 0x0201;
  r.idLo = 1;
  r.handle = 0xcafe;
  r.sectorNumber = 0x20;
  for (let i = 0; i < 8; i++) r.indirectGrefs[i] = 0x100 + i;
  return r;
}

function garbage(n: number): Uint8Array {
  return new Uint8Array(n).fill(0xee);
}

test('ABI layout table: sizes and strides', () => {
  assert.equal(ABI_LAYOUT.x86_64.requestSize, 112);
  assert.equal(ABI_LAYOUT.x86_64.responseSize, 16);
  assert.equal(ABI_LAYOUT.x86_64.stride, 112);
  assert.equal(ABI_LAYOUT.x86_32.requestSize, 108);
  assert.equal(ABI_LAYOUT.x86_32.responseSize, 12);
  assert.equal(ABI_LAYOUT.x86_32.stride, 108);
});

test('abiFromProtocol: missing key is x86_32, arm is x86_64, unknown is undefined', () => {
  assert.equal(abiFromProtocol(undefined), 'x86_32');
  assert.equal(abiFromProtocol('x86_32-abi'), 'x86_32');
  assert.equal(abiFromProtocol('x86_64-abi'), 'x86_64');
  assert.equal(abiFromProtocol('arm-abi'), 'x86_64');
  assert.equal(abiFromProtocol('ppc-abi'), undefined);
  assert.equal(abiFromProtocol(''), undefined);
  assert.equal(abiFromProtocol('toString'), undefined);
  assert.deepEqual(Object.keys(PROTOCOL_NAMES).sort(), ['arm-abi', 'x86_32-abi', 'x86_64-abi']);
});

for (const abi of ABIS) {
  const L = ABI_LAYOUT[abi];

  test(`${abi}: read/write request encodes to the hand-written bytes, holes and unused segments zeroed`, () => {
    const dst = garbage(L.requestSize + 4);
    encodeRequest(abi, rwRequest(), dst);
    assert.deepEqual(dst.subarray(0, L.requestSize), RW_EXPECTED[abi]);
    assert.deepEqual(dst.subarray(L.requestSize), garbage(4), 'bytes past the request untouched');
  });

  test(`${abi}: read/write request decodes from the hand-written bytes`, () => {
    const out = new BlkifRequest();
    decodeRequest(abi, RW_EXPECTED[abi], out);
    assert.equal(out.operation, BLKIF_OP.WRITE);
    assert.equal(out.nrSegments, 2);
    assert.equal(out.handle, 0x1234);
    assert.equal(out.idLo, 0x05060708);
    assert.equal(out.idHi, 0x01020304);
    assert.equal(out.sectorNumber, 0x1_0000_0010);
    assert.deepEqual([...out.segGref.subarray(0, 2)], [0xaabbccdd, 0x11]);
    assert.deepEqual([...out.segFirst.subarray(0, 2)], [0, 1]);
    assert.deepEqual([...out.segLast.subarray(0, 2)], [7, 3]);
  });

  test(`${abi}: decode reads through a view at an odd offset of a SharedArrayBuffer`, () => {
    const sab = new SharedArrayBuffer(L.requestSize + 7);
    const view = new Uint8Array(sab, 3, L.requestSize);
    view.set(RW_EXPECTED[abi]);
    const out = new BlkifRequest();
    decodeRequest(abi, view, out);
    assert.equal(out.idLo, 0x05060708);
    assert.equal(out.sectorNumber, 0x1_0000_0010);
    assert.equal(out.segGref[0], 0xaabbccdd);
  });

  test(`${abi}: discard request both ways`, () => {
    const dst = garbage(L.requestSize);
    encodeRequest(abi, discardRequest(), dst);
    assert.deepEqual(dst, DISCARD_EXPECTED[abi]);
    const out = new BlkifRequest();
    out.nrSegments = 77;
    decodeRequest(abi, DISCARD_EXPECTED[abi], out);
    assert.equal(out.operation, BLKIF_OP.DISCARD);
    assert.equal(out.discardFlag, 1);
    assert.equal(out.handle, 0x0300);
    assert.equal(out.idLo, 0xdeadbeef);
    assert.equal(out.idHi, 1);
    assert.equal(out.sectorNumber, 2 ** 40 + 5);
    assert.equal(out.nrSectors, 0x1_0000_0007);
    assert.equal(out.nrSegments, 77, 'fields a discard does not use are left alone');
  });

  test(`${abi}: indirect request both ways (u16 nr_segments, handle after sector)`, () => {
    const dst = garbage(L.requestSize);
    encodeRequest(abi, indirectRequest(), dst);
    assert.deepEqual(dst, INDIRECT_EXPECTED[abi]);
    const out = new BlkifRequest();
    decodeRequest(abi, INDIRECT_EXPECTED[abi], out);
    assert.equal(out.operation, BLKIF_OP.INDIRECT);
    assert.equal(out.indirectOp, BLKIF_OP.WRITE);
    assert.equal(out.indirectNrSegments, 0x0201);
    assert.equal(out.idLo, 1);
    assert.equal(out.idHi, 0);
    assert.equal(out.handle, 0xcafe);
    assert.equal(out.sectorNumber, 0x20);
    assert.deepEqual([...out.indirectGrefs], [0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x106, 0x107]);
  });

  test(`${abi}: response bytes, padding zeroed (XSA-216)`, () => {
    const dst = garbage(L.responseSize + 3);
    encodeResponse(abi, dst, 0x11223344, 0x55667788, BLKIF_OP.WRITE, BLKIF_RSP.EOPNOTSUPP);
    const expected = hex('44 33 22 11 88 77 66 55' + '01 00 fe ff' + (abi === 'x86_64' ? '00 00 00 00' : ''));
    assert.deepEqual(dst.subarray(0, L.responseSize), expected);
    assert.deepEqual(dst.subarray(L.responseSize), garbage(3));
    const out = new BlkifResponse();
    decodeResponse(abi, expected, out);
    assert.deepEqual(
      { idLo: out.idLo, idHi: out.idHi, operation: out.operation, status: out.status },
      { idLo: 0x11223344, idHi: 0x55667788, operation: BLKIF_OP.WRITE, status: -2 },
    );
    encodeResponse(abi, dst, 0, 0, BLKIF_OP.READ, BLKIF_RSP.ERROR);
    decodeResponse(abi, dst, out);
    assert.equal(out.status, -1);
  });

  test(`${abi}: sector numbers use both halves of the u64`, () => {
    const r = rwRequest();
    const dst = new Uint8Array(L.requestSize);
    const out = new BlkifRequest();
    for (const sector of [0, 1, 0xffffffff, 0x1_0000_0000, 2 ** 53 - 1, 0x7_ffff_ffff_fff8]) {
      r.sectorNumber = sector;
      encodeRequest(abi, r, dst);
      const b = Buffer.from(dst.buffer, dst.byteOffset, dst.byteLength);
      assert.equal(b.readBigUInt64LE(L.sectorNumber), BigInt(sector));
      decodeRequest(abi, dst, out);
      assert.equal(out.sectorNumber, sector);
    }
    // 2^64 - 1 on the wire decodes to a number past any disk's end.
    dst.fill(0xff, L.sectorNumber, L.sectorNumber + 8);
    decodeRequest(abi, dst, out);
    assert.ok(out.sectorNumber >= 2 ** 64 - 2 ** 12);
  });

  test(`${abi}: nr_segments above 11 decodes 11 segments and reports the raw count`, () => {
    const src = new Uint8Array(RW_EXPECTED[abi]);
    src[1] = 200;
    const out = new BlkifRequest();
    decodeRequest(abi, src, out);
    assert.equal(out.nrSegments, 200);
    assert.equal(out.segGref[0], 0xaabbccdd);
  });

  test(`${abi}: unknown operations decode only operation, id and handle`, () => {
    for (const op of [BLKIF_OP.RESERVED_1, 7, 0xff]) {
      const src = new Uint8Array(RW_EXPECTED[abi]);
      src[0] = op;
      const out = new BlkifRequest();
      out.sectorNumber = 42;
      out.nrSegments = 43;
      out.segGref[0] = 44;
      decodeRequest(abi, src, out);
      assert.equal(out.operation, op);
      assert.equal(out.idLo, 0x05060708);
      assert.equal(out.idHi, 0x01020304);
      assert.equal(out.handle, 0x1234);
      assert.equal(out.sectorNumber, 42);
      assert.equal(out.nrSegments, 43);
      assert.equal(out.segGref[0], 44);
    }
  });

  test(`${abi}: decode never throws on random slots and agrees with a naive Buffer reader`, () => {
    const rnd = prng(abi === 'x86_64' ? 1 : 2);
    const src = new Uint8Array(L.requestSize);
    const b = Buffer.from(src.buffer);
    const out = new BlkifRequest();
    const u64 = (off: number): number => Number(b.readBigUInt64LE(off));
    for (let iter = 0; iter < 20000; iter++) {
      for (let i = 0; i < src.length; i += 4) {
        const r = rnd();
        src[i] = r;
        src[i + 1] = r >>> 8;
        src[i + 2] = r >>> 16;
        src[i + 3] = r >>> 24;
      }
      // Bias the opcode towards the known operations so every branch gets exercised.
      if (iter % 2 === 0) src[0] = iter % 8;
      decodeRequest(abi, src, out);
      const op = src[0] as number;
      assert.equal(out.operation, op);
      assert.equal(out.idLo, b.readUInt32LE(L.id));
      assert.equal(out.idHi, b.readUInt32LE(L.id + 4));
      if (op <= BLKIF_OP.FLUSH_DISKCACHE) {
        assert.equal(out.nrSegments, b.readUInt8(1));
        assert.equal(out.handle, b.readUInt16LE(2));
        assert.equal(out.sectorNumber, u64(L.sectorNumber));
        const n = Math.min(out.nrSegments, 11);
        for (let s = 0; s < n; s++) {
          assert.equal(out.segGref[s], b.readUInt32LE(L.seg + 8 * s));
          assert.equal(out.segFirst[s], b.readUInt8(L.seg + 8 * s + 4));
          assert.equal(out.segLast[s], b.readUInt8(L.seg + 8 * s + 5));
        }
      } else if (op === BLKIF_OP.DISCARD) {
        assert.equal(out.discardFlag, b.readUInt8(1));
        assert.equal(out.nrSectors, u64(L.discardNrSectors));
      } else if (op === BLKIF_OP.INDIRECT) {
        assert.equal(out.indirectNrSegments, b.readUInt16LE(2));
        assert.equal(out.handle, b.readUInt16LE(L.indirectHandle));
        assert.equal(out.indirectGrefs[7], b.readUInt32LE(L.indirectGrefs + 28));
      } else {
        assert.equal(out.handle, b.readUInt16LE(2));
      }
    }
  });

  test(`${abi}: encode then decode round-trips random valid requests`, () => {
    const rnd = prng(abi === 'x86_64' ? 3 : 4);
    const req = new BlkifRequest();
    const out = new BlkifRequest();
    const dst = new Uint8Array(L.requestSize);
    const ops = [BLKIF_OP.READ, BLKIF_OP.WRITE, BLKIF_OP.WRITE_BARRIER, BLKIF_OP.FLUSH_DISKCACHE, BLKIF_OP.DISCARD, BLKIF_OP.INDIRECT];
    for (let iter = 0; iter < 3000; iter++) {
      const op = ops[iter % ops.length] as number;
      req.operation = op;
      req.nrSegments = rnd() % 12;
      req.handle = rnd() & 0xffff;
      req.idLo = rnd();
      req.idHi = rnd();
      req.sectorNumber = (rnd() % 0x200000) * 2 ** 32 + rnd();
      for (let s = 0; s < 11; s++) {
        req.segGref[s] = rnd();
        req.segFirst[s] = rnd() & 7;
        req.segLast[s] = rnd() & 7;
      }
      req.discardFlag = rnd() & 1;
      req.nrSectors = (rnd() % 0x200000) * 2 ** 32 + rnd();
      req.indirectOp = rnd() & 1;
      req.indirectNrSegments = rnd() & 0xffff;
      for (let g = 0; g < 8; g++) req.indirectGrefs[g] = rnd();
      encodeRequest(abi, req, dst);
      decodeRequest(abi, dst, out);
      assert.equal(out.operation, op);
      assert.equal(out.idLo, req.idLo);
      assert.equal(out.idHi, req.idHi);
      assert.equal(out.handle, req.handle);
      assert.equal(out.sectorNumber, req.sectorNumber);
      if (op <= BLKIF_OP.FLUSH_DISKCACHE) {
        assert.equal(out.nrSegments, req.nrSegments);
        for (let s = 0; s < req.nrSegments; s++) {
          assert.equal(out.segGref[s], req.segGref[s]);
          assert.equal(out.segFirst[s], req.segFirst[s]);
          assert.equal(out.segLast[s], req.segLast[s]);
        }
      } else if (op === BLKIF_OP.DISCARD) {
        assert.equal(out.discardFlag, req.discardFlag);
        assert.equal(out.nrSectors, req.nrSectors);
      } else {
        assert.equal(out.indirectOp, req.indirectOp);
        assert.equal(out.indirectNrSegments, req.indirectNrSegments);
        assert.deepEqual(out.indirectGrefs, req.indirectGrefs);
      }
    }
  });
}

test('indirect segment pages: 8-byte entries, 512 per page, padding zeroed', () => {
  const gref = new Uint32Array(1024);
  const first = new Uint8Array(1024);
  const last = new Uint8Array(1024);
  for (let i = 0; i < 1024; i++) {
    gref[i] = (0x9000_0000 + i * 0x10001) >>> 0;
    first[i] = i % 8;
    last[i] = 7 - (i % 3);
  }
  const page = garbage(4096);
  encodeIndirectSegments(page, 512, gref, first, last, 512);
  // Entry 0 is source index 512: gref 0x9000_0000 + 512*0x10001 = 0x9200_0200.
  assert.deepEqual(page.subarray(0, 16), hex('00 02 00 92 00 05 00 00' + '01 02 01 92 01 07 00 00'));
  const b = Buffer.from(page.buffer);
  for (let i = 0; i < 512; i++) {
    assert.equal(b.readUInt32LE(8 * i), gref[512 + i]);
    assert.equal(b.readUInt8(8 * i + 4), first[512 + i]);
    assert.equal(b.readUInt8(8 * i + 5), last[512 + i]);
    assert.equal(b.readUInt16LE(8 * i + 6), 0);
  }

  const g2 = new Uint32Array(600);
  const f2 = new Uint8Array(600);
  const l2 = new Uint8Array(600);
  decodeIndirectSegments(page, 3, g2, f2, l2, 597);
  assert.deepEqual([...g2.subarray(597)], [0x9200_0200, 0x9201_0201, 0x9202_0202]);
  assert.deepEqual([...f2.subarray(597)], [0, 1, 2]);
  assert.deepEqual([...l2.subarray(597)], [5, 7, 6]);
  assert.equal(g2[596], 0, 'nothing written before outOffset');

  assert.throws(() => decodeIndirectSegments(page, 513, new Uint32Array(513), new Uint8Array(513), new Uint8Array(513), 0), {
    code: 'BLK_ERR_BUFFER',
  });
  assert.throws(() => decodeIndirectSegments(page, 4, g2, f2, l2, 597), { code: 'BLK_ERR_BUFFER' });
  assert.throws(() => decodeIndirectSegments(page.subarray(0, 16), 3, g2, f2, l2, 0), { code: 'BLK_ERR_BUFFER' });
});

test('buffers shorter than the struct are refused with BLK_ERR_BUFFER', () => {
  assert.throws(() => decodeRequest('x86_64', new Uint8Array(108), new BlkifRequest()), { code: 'BLK_ERR_BUFFER' });
  assert.throws(() => encodeRequest('x86_32', new BlkifRequest(), new Uint8Array(107)), { code: 'BLK_ERR_BUFFER' });
  assert.throws(() => encodeResponse('x86_64', new Uint8Array(12), 0, 0, 0, 0), { code: 'BLK_ERR_BUFFER' });
  assert.throws(() => decodeResponse('x86_32', new Uint8Array(11), new BlkifResponse()), { code: 'BLK_ERR_BUFFER' });
  // x86_32 request decodes from exactly 108 bytes.
  decodeRequest('x86_32', new Uint8Array(108), new BlkifRequest());
});
