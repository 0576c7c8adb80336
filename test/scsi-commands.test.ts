// The device server's commands over RAM disks: happy paths, bounds, bad fields, sense data.
// CDBs are built with Buffer writes, independently of src/scsi/cdb.ts: the block commands by
// helpers-scsi.ts, the others here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { ScsiDeviceServer } from '../src/scsi/device-server.ts';
import type { LogicalUnitOptions } from '../src/scsi/device-server.ts';
import { fakeTask, makeNexus, RecordingDevice, settle } from './support/scsi-task.ts';
import type { FakeTaskInit, Outcome } from './support/scsi-task.ts';
import {
  compareAndWriteCdb,
  hex,
  ORWRITE,
  PREFETCH10,
  PREFETCH16,
  READ6,
  READ10,
  READ12,
  READ16,
  rw6,
  rw10,
  rw12,
  rw16,
  SYNC10,
  SYNC16,
  toHex,
  VERIFY10,
  VERIFY16,
  WRITE6,
  WRITE10,
  WRITE12,
  WRITE16,
  WRITE_VERIFY10,
  WS10,
  WS16,
} from './helpers-scsi.ts';

// ---- an independent CDB encoder (the block commands are in helpers-scsi.ts)
function unmapCdb(paramLength: number, anchor = 0): number[] {
  return [0x42, anchor, 0, 0, 0, 0, 0, paramLength >>> 8, paramLength & 0xff, 0];
}
function unmapList(descs: [number | bigint, number][]): Uint8Array {
  const b = Buffer.alloc(8 + 16 * descs.length);
  b.writeUInt16BE(6 + 16 * descs.length, 0);
  b.writeUInt16BE(16 * descs.length, 2);
  descs.forEach(([lba, n], i) => {
    b.writeBigUInt64BE(BigInt(lba), 8 + 16 * i);
    b.writeUInt32BE(n, 16 + 16 * i);
  });
  return new Uint8Array(b);
}
function getLbaStatus(lba: number | bigint, alloc: number): number[] {
  const b = Buffer.alloc(16);
  b[0] = 0x9e;
  b[1] = 0x12;
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(alloc, 10);
  return [...b];
}
const inquiry = (evpd: number, page: number, alloc: number): number[] => [0x12, evpd, page, alloc >>> 8, alloc & 0xff, 0];
const modeSense6 = (pc: number, page: number, alloc: number, dbd = 0): number[] => [0x1a, dbd ? 0x08 : 0, (pc << 6) | page, 0, alloc, 0];
const readCapacity16 = (alloc: number): number[] => [
  0x9e,
  0x10,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  (alloc >>> 24) & 0xff,
  (alloc >>> 16) & 0xff,
  (alloc >>> 8) & 0xff,
  alloc & 0xff,
  0,
  0,
];
const reportLuns = (select: number, alloc: number): number[] => [
  0xa0,
  0,
  select,
  0,
  0,
  0,
  (alloc >>> 24) & 0xff,
  (alloc >>> 16) & 0xff,
  (alloc >>> 8) & 0xff,
  alloc & 0xff,
  0,
  0,
];
const rsoc = (options: number, op: number, sa: number, alloc: number): number[] => [
  0xa3,
  0x0c,
  options,
  op,
  sa >>> 8,
  sa & 0xff,
  (alloc >>> 24) & 0xff,
  (alloc >>> 16) & 0xff,
  (alloc >>> 8) & 0xff,
  alloc & 0xff,
  0,
  0,
];

// ---- sense checks
function expectGood(o: Outcome): void {
  assert.equal(o.status, 0, o.sense === undefined ? `status ${o.status}` : `sense ${toHex(o.sense)}`);
}
function expectSense(o: Outcome, key: number, asc: number, ascq = 0): void {
  assert.equal(o.status, 2, `status ${o.status}, expected CHECK CONDITION`);
  const s = o.sense as Uint8Array;
  if (s[0] === 0x72) assert.deepEqual([s[1] as number & 0x0f, s[2], s[3]], [key, asc, ascq], toHex(s));
  else assert.deepEqual([s[2] as number & 0x0f, s[12], s[13]], [key, asc, ascq], toHex(s));
}
const expectLbaOutOfRange = (o: Outcome): void => expectSense(o, 5, 0x21);
const expectInvalidField = (o: Outcome): void => expectSense(o, 5, 0x24);
/** The sense-key specific field of fixed sense data (3 bytes). */
const sks = (o: Outcome): string => toHex((o.sense as Uint8Array).subarray(15, 18));

interface Rig {
  readonly server: ScsiDeviceServer;
  readonly device: RecordingDevice;
  readonly bs: number;
  readonly blocks: number;
  run(cdb: readonly number[], init?: Partial<FakeTaskInit>): Promise<Outcome>;
}

function rig(opts: { size?: number; bs?: number; thin?: boolean; readOnly?: boolean; device?: BlockDevice; extra?: Partial<LogicalUnitOptions> } = {}): Rig {
  const bs = opts.bs ?? 512;
  const size = opts.size ?? 1 << 20;
  const device = opts.device instanceof RecordingDevice ? opts.device : new RecordingDevice(opts.device ?? createRamDisk(size, { logicalBlockSize: bs }));
  const server = new ScsiDeviceServer({
    luns: new Map([
      [
        0,
        {
          device,
          serial: 'SN-0001',
          deviceId: hex('6001405abcdef001'),
          ...(opts.thin === undefined ? {} : { thin: opts.thin }),
          ...(opts.readOnly === undefined ? {} : { readOnly: opts.readOnly }),
          ...opts.extra,
        },
      ],
    ]),
    targetName: 'iqn.2026-01.test:target',
  });
  const nexus = makeNexus();
  return {
    server,
    device,
    bs,
    blocks: size / bs,
    run: (cdb, init = {}) => settle(server.execute(fakeTask({ nexus, cdb, ...init }))),
  };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >>> 9)) & 0xff;
  return b;
}

// ------------------------------------------------------------------ basics

test('TEST UNIT READY, and an unknown or refused opcode is INVALID COMMAND OPERATION CODE', async () => {
  const r = rig();
  expectGood(await r.run([0, 0, 0, 0, 0, 0]));
  for (const op of [0x48 /* SANITIZE */, 0x9c /* WRITE ATOMIC(16) */, 0x83 /* EXTENDED COPY */, 0x84, 0x37, 0xb7, 0x1e /* PREVENT ALLOW */, 0xff]) {
    const cdb = new Array<number>(16).fill(0);
    cdb[0] = op;
    expectSense(await r.run(cdb), 5, 0x20);
  }
  // NACA in the control byte: no ACA here.
  expectInvalidField(await r.run([0, 0, 0, 0, 0, 0x04]));
  // SEND DIAGNOSTIC: the default self-test passes; other self-tests and pages are not offered.
  expectGood(await r.run([0x1d, 0x04, 0, 0, 0, 0]));
  expectInvalidField(await r.run([0x1d, 0x24, 0, 0, 0, 0]));
  expectInvalidField(await r.run([0x1d, 0x14, 0, 0, 8, 0]));
});

test('READ/WRITE 6/10/12/16 move the data, also when data-out arrives in pieces', async () => {
  const r = rig();
  const cases: [number, number, (lba: number, n: number) => number[], (lba: number, n: number) => number[]][] = [
    [3, 5, (l, n) => rw6(WRITE6, l, n), (l, n) => rw6(READ6, l, n)],
    [100, 16, (l, n) => rw10(WRITE10, l, n), (l, n) => rw10(READ10, l, n)],
    [500, 7, (l, n) => rw12(WRITE12, l, n), (l, n) => rw12(READ12, l, n)],
    [2040, 8, (l, n) => rw16(WRITE16, l, n), (l, n) => rw16(READ16, l, n)],
  ];
  for (const [lba, n, w, rd] of cases) {
    const data = pattern(n * r.bs, lba);
    const wo = await r.run(w(lba, n), { data, pieceSize: 700 });
    expectGood(wo);
    assert.equal(wo.transferLength, n * r.bs);
    const ro = await r.run(rd(lba, n));
    expectGood(ro);
    assert.equal(ro.transferLength, n * r.bs);
    assert.equal(toHex(ro.data), toHex(data));
  }
  assert.equal(r.server.leasedBuffers, 0, 'every data-in buffer went back');
});

test('READ(6) and WRITE(6) with TRANSFER LENGTH 0 move 256 blocks', async () => {
  const r = rig();
  const data = pattern(256 * r.bs, 9);
  expectGood(await r.run(rw6(WRITE6, 10, 0), { data }));
  const o = await r.run(rw6(READ6, 10, 0));
  expectGood(o);
  assert.equal(o.data.byteLength, 256 * r.bs);
  assert.equal(toHex(o.data), toHex(data));
});

test('zero-block READ/WRITE is GOOD without I/O; the LBA is still checked', async () => {
  const r = rig();
  const before = r.device.calls.length;
  expectGood(await r.run(rw10(READ10, 0, 0)));
  expectGood(await r.run(rw16(WRITE16, 0, 0)));
  assert.equal(r.device.calls.length, before);
  expectLbaOutOfRange(await r.run(rw10(READ10, r.blocks + 1, 0)));
  expectLbaOutOfRange(await r.run(rw10(READ10, r.blocks, 0)));
  expectLbaOutOfRange(await r.run(rw10(WRITE10, 0xffffffff, 0)));
  expectLbaOutOfRange(await r.run(rw16(READ16, 0x8000000000000000n, 0)));
});

test('LBA out of range at and past the end, and LBA + count past 2^64, never touch the device', async () => {
  const r = rig();
  const before = r.device.calls.length;
  for (let i = 1; i <= 8; i++) {
    expectLbaOutOfRange(await r.run(rw10(READ10, r.blocks + 1 - i, i)));
    expectLbaOutOfRange(await r.run(rw16(READ16, BigInt(r.blocks - 1), i + 1)));
    expectLbaOutOfRange(await r.run(rw16(WRITE16, 0xffffffffffffffffn, i), { data: new Uint8Array(i * r.bs) }));
    expectLbaOutOfRange(await r.run(rw16(READ16, 1n << 55n, i)));
    expectLbaOutOfRange(await r.run(rw12(WRITE12, 0x80000000, i), { data: new Uint8Array(i * r.bs) }));
  }
  expectLbaOutOfRange(await r.run(rw6(READ6, 0x1fffff, 1)));
  expectGood(await r.run(rw10(READ10, r.blocks - 1, 1)));
  assert.equal(r.device.calls.filter((c) => c.op === 'writev').length, 0);
  assert.equal(r.device.calls.length, before + 1);
});

test('RDPROTECT/WRPROTECT are refused (no protection information), with the field pointer', async () => {
  const r = rig();
  for (let p = 1; p < 8; p++) {
    const o = await r.run(rw10(READ10, 0, 1, p << 5));
    expectInvalidField(o);
    assert.equal(sks(o), 'cf0001');
    expectInvalidField(await r.run(rw16(WRITE16, 0, 1, p << 5), { data: new Uint8Array(r.bs) }));
  }
  // DPO, FUA and FUA_NV are accepted.
  for (const flags of [0x10, 0x08, 0x18, 0x02, 0x1a]) {
    expectGood(await r.run(rw10(READ10, 0, 1, flags)));
    expectGood(await r.run(rw10(WRITE10, 0, 1, flags), { data: new Uint8Array(r.bs) }));
  }
});

test('transfers above MAXIMUM TRANSFER LENGTH are INVALID FIELD IN CDB pointing at the length', async () => {
  const r = rig({ size: 64 << 20 });
  const max = (8 << 20) / r.bs;
  const o = await r.run(rw16(READ16, 0, max + 1));
  expectInvalidField(o);
  assert.equal(sks(o), 'c0000a');
  expectInvalidField(await r.run(rw10(WRITE10, 0, max + 1), { edtl: 0, writeBit: false }));
  expectGood(await r.run(rw16(READ16, 0, max)));
});

test("residuals are the transport's: a write with a shorter expected length writes only the whole blocks given", async () => {
  const r = rig();
  const a = new Uint8Array(2 * r.bs).fill(0x61);
  expectGood(await r.run(rw10(WRITE10, 0, 2), { data: a }));
  // WRITE(10) of 2 blocks with an expected length of one block: block 0 written, block 1 kept.
  const b = new Uint8Array(2 * r.bs).fill(0x62);
  const o = await r.run(rw10(WRITE10, 0, 2), { data: b, edtl: r.bs });
  expectGood(o);
  assert.equal(o.transferLength, 2 * r.bs, 'what the CDB asked for');
  const back = await r.run(rw10(READ10, 0, 2));
  assert.ok(back.data.subarray(0, r.bs).every((x) => x === 0x62));
  assert.ok(back.data.subarray(r.bs).every((x) => x === 0x61));
  // Expected length 0 or below a block: GOOD, nothing asked from the transport, nothing written.
  const t0 = fakeTask({ nexus: makeNexus(), cdb: rw10(WRITE10, 0, 1), edtl: 0, writeBit: true });
  expectGood(await settle(r.server.execute(t0)));
  assert.deepEqual(t0.dataOutCalls, []);
  const t200 = fakeTask({ nexus: makeNexus(), cdb: rw10(WRITE10, 0, 1), data: new Uint8Array(200) });
  expectGood(await settle(r.server.execute(t200)));
  assert.deepEqual(t200.dataOutCalls, []);
  // A longer expected length: the command's own length is asked for.
  const t10k = fakeTask({ nexus: makeNexus(), cdb: rw10(WRITE10, 0, 1), data: new Uint8Array(10000) });
  const o10k = await settle(r.server.execute(t10k));
  expectGood(o10k);
  assert.deepEqual(t10k.dataOutCalls, [r.bs]);
  assert.equal(o10k.transferLength, r.bs);
  // READ with any expected length returns the blocks the CDB asked for.
  const rd = await r.run(rw10(READ10, 0, 1), { edtl: 0, readBit: true });
  assert.equal(rd.transferLength, r.bs);
});

// ------------------------------------------------------------------ capacity, inquiry

test('READ CAPACITY(10)/(16): last LBA, block length, LBPPBE, LBPME/LBPRZ on thin LUs; allocation lengths', async () => {
  const r = rig({ size: 4 << 20, bs: 4096 });
  const rc10 = await r.run([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(toHex(rc10.data), '000003ff00001000');
  expectInvalidField(await r.run([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]));
  const rc16 = await r.run(readCapacity16(32));
  assert.equal(toHex(rc16.data), toHex(hex('00000000000003ff 00001000 00 00 0000 0000000000000000 0000000000000000')));
  for (let i = 0; i < 16; i++) {
    const o = await r.run(readCapacity16(i));
    expectGood(o);
    assert.equal(o.data.byteLength, i);
    assert.equal(o.transferLength, i);
  }
  const thin = rig({ thin: true });
  const t = await thin.run(readCapacity16(32));
  assert.equal(t.data[14], 0xc0);
  assert.equal(toHex(t.data.subarray(8, 12)), '00000200');
  // LBPRZ only when the store promises that discarded blocks read as zeroes.
  const noZeroes = new RecordingDevice(createRamDisk(1 << 20));
  noZeroes.infoOverride = { discardZeroes: false };
  const nz = rig({ thin: true, device: noZeroes });
  assert.equal((await nz.run(readCapacity16(32))).data[14], 0x80);
  assert.equal(toHex((await nz.run(inquiry(1, 0xb2, 255))).data), '00b2000400e00200');
  // A thin request on a store that cannot discard stays fully provisioned.
  const noDiscard = new RecordingDevice(createRamDisk(1 << 20));
  noDiscard.infoOverride = { canDiscard: false, discardGranularity: 0 };
  assert.equal((await rig({ thin: true, device: noDiscard }).run(readCapacity16(32))).data[14], 0x00);
});

test('INQUIRY: standard data at any allocation length, EVPD rules, every VPD page listed is readable', async () => {
  const r = rig();
  for (const alloc of [0, 5, 36, 95, 96, 255, 511, 512]) {
    const o = await r.run(inquiry(0, 0, alloc));
    expectGood(o);
    assert.equal(o.data.byteLength, Math.min(alloc, 96));
  }
  const std = await r.run(inquiry(0, 0, 96));
  assert.equal(toHex(std.data.subarray(0, 8)), '000006125b000002');
  expectInvalidField(await r.run(inquiry(0, 1, 256)));
  expectInvalidField(await r.run(inquiry(2, 0, 256)));
  expectInvalidField(await r.run(inquiry(1, 0x86, 256)));
  const sup = await r.run(inquiry(1, 0, 255));
  assert.equal(toHex(sup.data), '000000060080 83b0b1b2'.replace(' ', ''));
  for (const page of sup.data.subarray(4)) {
    const o = await r.run(inquiry(1, page, 255));
    expectGood(o);
    assert.equal(o.data[1], page);
    assert.equal(o.data.byteLength, ((o.data[2] as number) << 8) + (o.data[3] as number) + 4);
  }
  const serial = await r.run(inquiry(1, 0x80, 255));
  assert.equal(toHex(serial.data), toHex(hex('00 80 0007')) + Buffer.from('SN-0001').toString('hex'));
});

test('INQUIRY VPD 83h: NAA and T10 designators for the LU, relative port and SCSI names with PIV', async () => {
  const r = rig();
  const o = await r.run(inquiry(1, 0x83, 0xffff));
  const d = o.data;
  // NAA (binary, LU, type 3), 8 bytes.
  assert.equal(toHex(d.subarray(4, 16)), toHex(hex('01 03 00 08 6001405abcdef001')));
  // T10 vendor ID (ASCII, LU, type 1): vendor padded to 8, then the serial.
  assert.equal(toHex(d.subarray(16, 20)), '0201000f');
  assert.equal(Buffer.from(d.subarray(20, 35)).toString('latin1'), 'BLKBACK SN-0001');
  // Relative target port (binary, PIV, iSCSI, target port, type 4).
  assert.equal(toHex(d.subarray(35, 43)), toHex(hex('51 94 00 04 0000 0001')));
  // SCSI name string of the target port (UTF-8, PIV, iSCSI, target port, type 8), NUL-padded to 4.
  const name = 'iqn.2026-01.test:target,t,0x0001';
  assert.equal(toHex(d.subarray(43, 47)), toHex(hex('53 98 00 24')));
  assert.equal(Buffer.from(d.subarray(47, 47 + name.length)).toString('latin1'), name);
  assert.equal(toHex(d.subarray(47 + name.length, 47 + 36)), '00000000');
});

test('VPD B0h/B2h: limits and provisioning follow the LU (thin vs thick)', async () => {
  const thick = rig();
  const bl = (await thick.run(inquiry(1, 0xb0, 255))).data;
  assert.equal(toHex(bl.subarray(20, 28)), '0000000000000000', 'no UNMAP limits on a thick LU');
  assert.equal(bl[5], 255);
  assert.equal(toHex(bl.subarray(8, 12)), toHex(hex('00004000')), '8 MiB of 512-byte blocks');
  assert.equal(toHex((await thick.run(inquiry(1, 0xb2, 255))).data), '00b2000400000000');
  const thin = rig({ thin: true });
  const tbl = (await thin.run(inquiry(1, 0xb0, 255))).data;
  assert.equal(toHex(tbl.subarray(20, 36)), toHex(hex('00100000 00000100 00000001 80000000')));
  assert.equal(toHex((await thin.run(inquiry(1, 0xb2, 255))).data), '00b2000400e40200');
});

// ------------------------------------------------------------------ verify, prefetch, sync

test('VERIFY: BYTCHK 0 checks the range only; 01b compares and reports the first differing byte', async () => {
  const r = rig();
  const data = pattern(8 * r.bs, 3);
  expectGood(await r.run(rw10(WRITE10, 40, 8), { data }));
  expectGood(await r.run(rw10(VERIFY10, 40, 8, 0x02), { data }));
  expectGood(await r.run(rw16(VERIFY16, 40, 8, 0x02), { data, pieceSize: 1000 }));
  expectGood(await r.run(rw10(VERIFY10, 40, 8, 0x00)));
  const bad = Uint8Array.from(data);
  bad[3 * r.bs + 17] = (bad[3 * r.bs + 17] as number) ^ 0x58;
  const o = await r.run(rw10(VERIFY10, 40, 8, 0x02), { data: bad });
  expectSense(o, 0x0e, 0x1d);
  assert.equal((o.sense as Uint8Array)[0], 0xf0, 'VALID: INFORMATION holds the offset');
  assert.equal(Buffer.from(o.sense as Uint8Array).readUInt32BE(3), 3 * r.bs + 17);
  expectGood(await r.run(rw10(VERIFY10, 40, 8, 0x00), { data: bad }));
  // BYTCHK 11b: one block compared with each.
  const same = new Uint8Array(r.bs).fill(0x7e);
  const ws = [WS10, 0, 0, 0, 0, 60, 0, 0, 4, 0];
  expectGood(await r.run(ws, { data: same }));
  expectGood(await r.run(rw10(VERIFY10, 60, 4, 0x06), { data: same }));
  expectSense(await r.run(rw10(VERIFY10, 59, 4, 0x06), { data: same }), 0x0e, 0x1d);
  // BYTCHK 10b reserved, VRPROTECT refused, range checked.
  expectInvalidField(await r.run(rw10(VERIFY10, 0, 1, 0x04)));
  expectInvalidField(await r.run(rw10(VERIFY10, 0, 1, 0x20 | 0x02), { data: new Uint8Array(r.bs) }));
  expectLbaOutOfRange(await r.run(rw10(VERIFY10, r.blocks - 1, 2, 0x02), { data: new Uint8Array(2 * r.bs) }));
  expectLbaOutOfRange(await r.run(rw10(VERIFY10, r.blocks + 1, 0, 0x02)));
});

test('WRITE AND VERIFY writes durably and compares; ORWRITE ORs into the medium', async () => {
  const r = rig();
  const data = pattern(4 * r.bs, 5);
  expectGood(await r.run(rw10(WRITE_VERIFY10, 8, 4, 0x02), { data }));
  assert.equal(toHex((await r.run(rw10(READ10, 8, 4))).data), toHex(data));
  assert.ok(
    r.device.calls.some((c) => c.op === 'writev' && c.offset === 8 * r.bs && c.flags === 1),
    'written with FUA',
  );
  expectGood(await r.run(rw10(WRITE_VERIFY10, 8, 0, 0)));
  expectInvalidField(await r.run(rw10(WRITE_VERIFY10, 8, 1, 0x06), { data: new Uint8Array(r.bs) }));
  const zero = new Uint8Array(2 * r.bs);
  expectGood(await r.run(rw10(WRITE10, 100, 2), { data: zero }));
  expectGood(await r.run(rw16(ORWRITE, 100, 2), { data: new Uint8Array(2 * r.bs).fill(0xa5) }));
  expectGood(await r.run(rw16(ORWRITE, 100, 2), { data: new Uint8Array(2 * r.bs).fill(0x5a) }));
  assert.ok((await r.run(rw10(READ10, 100, 2))).data.every((x) => x === 0xff));
  expectLbaOutOfRange(await r.run(rw16(ORWRITE, r.blocks - 1, 2), { data: new Uint8Array(2 * r.bs) }));
  expectInvalidField(await r.run(rw16(ORWRITE, 0, 1, 0x20), { data: new Uint8Array(r.bs) }));
  assert.equal(r.server.unit(0)?.lockedRanges, 0);
});

test('PRE-FETCH and SYNCHRONIZE CACHE: range checks, flush on sync', async () => {
  const r = rig();
  expectGood(await r.run(rw10(PREFETCH10, 0, 1, 0x02)));
  expectGood(await r.run(rw16(PREFETCH16, BigInt(r.blocks - 256), 256)));
  expectGood(await r.run(rw10(PREFETCH10, 0, 0)));
  expectLbaOutOfRange(await r.run(rw10(PREFETCH10, r.blocks - 1, 2)));
  expectLbaOutOfRange(await r.run(rw16(PREFETCH16, 0xffffffffffffffffn, 1)));
  const flushes = (): number => r.device.calls.filter((c) => c.op === 'flush').length;
  expectGood(await r.run(rw10(SYNC10, 0, 0)));
  expectGood(await r.run(rw16(SYNC16, 10, 20, 0x02)));
  assert.equal(flushes(), 2);
  expectLbaOutOfRange(await r.run(rw10(SYNC10, r.blocks, 1)));
  expectInvalidField(await r.run(rw10(SYNC10, 0, 1, 0x80)));
  assert.equal(flushes(), 2);
  assert.equal(r.server.stats()[0]?.flushes, 2);
});

// ------------------------------------------------------------------ write same, unmap, lba status

test('WRITE SAME: a pattern, zeroes through writeZeroes, to the end with 0 blocks, the length limit', async () => {
  const r = rig({ size: 8 << 20 });
  const block = pattern(r.bs, 77);
  const ws10 = (lba: number, n: number, flags = 0): number[] => [
    WS10,
    flags,
    (lba >>> 24) & 0xff,
    (lba >>> 16) & 0xff,
    (lba >>> 8) & 0xff,
    lba & 0xff,
    0,
    n >>> 8,
    n & 0xff,
    0,
  ];
  expectGood(await r.run(ws10(10, 300), { data: block }));
  const back = (await r.run(rw10(READ10, 10, 300))).data;
  for (let i = 0; i < 300; i++) assert.equal(toHex(back.subarray(i * r.bs, (i + 1) * r.bs)), toHex(block), `block ${i}`);
  expectGood(await r.run(ws10(10, 300), { data: new Uint8Array(r.bs) }));
  assert.ok(r.device.calls.some((c) => c.op === 'writeZeroes' && c.offset === 10 * r.bs && c.length === 300 * r.bs));
  assert.ok((await r.run(rw10(READ10, 10, 300))).data.every((x) => x === 0));
  // 0 blocks: to the end (within MAXIMUM WRITE SAME LENGTH 65535).
  expectGood(await r.run(ws10(r.blocks - 5, 0), { data: block }));
  assert.equal(toHex((await r.run(rw10(READ10, r.blocks - 1, 1))).data), toHex(block));
  const big = rig({ size: 64 << 20 });
  expectInvalidField(await big.run(ws10(0, 0), { data: block }));
  expectGood(await big.run(ws10(big.blocks - 65535, 0), { data: block }));
  expectInvalidField(await big.run(ws10(big.blocks - 65536, 0), { data: block }));
  // Out of range, data-out of the wrong size, ANCHOR, obsolete bits, UNMAP on a thick LU.
  expectLbaOutOfRange(await r.run(ws10(r.blocks + 1, 0), { data: block }));
  expectLbaOutOfRange(await r.run(ws10(r.blocks - 1, 2), { data: block }));
  expectSense(await r.run(ws10(0, 1), { data: new Uint8Array(r.bs / 2) }), 5, 0x24);
  expectSense(await r.run(ws10(0, 1), { data: new Uint8Array(r.bs * 2) }), 5, 0x24);
  expectInvalidField(await r.run(ws10(0, 1, 0x10), { data: block }));
  expectInvalidField(await r.run(ws10(0, 1, 0x18), { data: block }));
  expectInvalidField(await r.run(ws10(0, 1, 0x04), { data: block }));
  expectInvalidField(await r.run(ws10(0, 1, 0x08), { data: new Uint8Array(r.bs) }));
});

test('WRITE SAME(16) NDOB writes zeroes without data-out; UNMAP on a thin LU deallocates, whatever the data', async () => {
  const r = rig({ thin: true });
  const ws16 = (lba: number, n: number, flags: number): number[] => rw16(WS16, lba, n, flags);
  expectGood(await r.run(rw10(WRITE10, 0, 16), { data: new Uint8Array(16 * r.bs).fill(0xff) }));
  const o = await r.run(ws16(0, 4, 0x01));
  expectGood(o);
  assert.equal(o.transferLength, 0);
  assert.ok((await r.run(rw10(READ10, 0, 4))).data.every((x) => x === 0));
  expectGood(await r.run(ws16(4, 4, 0x08), { data: new Uint8Array(r.bs) }));
  assert.ok(r.device.calls.some((c) => c.op === 'discard' && c.offset === 4 * r.bs && c.length === 4 * r.bs));
  assert.ok((await r.run(rw10(READ10, 4, 4))).data.every((x) => x === 0));
  // UNMAP deallocates whatever the block holds (libiscsi's WriteSame10.UnmapUntilEnd sends 0xFF).
  expectGood(await r.run(ws16(8, 2, 0x08), { data: new Uint8Array(r.bs).fill(0xa6) }));
  assert.ok((await r.run(rw10(READ10, 8, 2))).data.every((x) => x === 0));
  assert.ok((await r.run(rw10(READ10, 10, 6))).data.every((x) => x === 0xff));
});

test('UNMAP: descriptors, zero counts, limits, ranges, parameter list lengths; refused on thick LUs', async () => {
  const r = rig({ thin: true });
  expectGood(await r.run(rw10(WRITE10, 0, 64), { data: new Uint8Array(64 * r.bs).fill(0x61) }));
  const list = unmapList([
    [0, 4],
    [10, 2],
    [r.blocks, 0],
  ]);
  expectGood(await r.run(unmapCdb(list.byteLength), { data: list }));
  const back = (await r.run(rw10(READ10, 0, 16))).data;
  assert.ok(back.subarray(0, 4 * r.bs).every((x) => x === 0));
  assert.ok(back.subarray(4 * r.bs, 10 * r.bs).every((x) => x === 0x61));
  assert.ok(back.subarray(10 * r.bs, 12 * r.bs).every((x) => x === 0));
  expectGood(await r.run(unmapCdb(0)));
  const empty = unmapList([]);
  expectGood(await r.run(unmapCdb(8), { data: empty }));
  expectSense(await r.run(unmapCdb(4), { data: new Uint8Array(4) }), 5, 0x1a);
  expectLbaOutOfRange(await r.run(unmapCdb(24), { data: unmapList([[r.blocks - 1, 2]]) }));
  expectLbaOutOfRange(await r.run(unmapCdb(24), { data: unmapList([[0xffffffffffffffffn, 1]]) }));
  const tooMany = unmapList(Array.from({ length: 257 }, (_, i) => [i, 1] as [number, number]));
  expectSense(await r.run(unmapCdb(tooMany.byteLength), { data: tooMany }), 5, 0x26);
  const tooLong = unmapList([
    [0, 0x80000],
    [0x80000, 0x80001],
  ]);
  const big = rig({ thin: true, size: 2 * 2 ** 30 });
  expectSense(await big.run(unmapCdb(tooLong.byteLength), { data: tooLong }), 5, 0x26);
  expectInvalidField(await r.run(unmapCdb(24, 1), { data: unmapList([[0, 1]]) }));
  // Nothing was unmapped by the failed commands.
  assert.ok((await r.run(rw10(READ10, 4, 1))).data.every((x) => x === 0x61));
  const thick = rig();
  expectSense(await thick.run(unmapCdb(24), { data: unmapList([[0, 1]]) }), 5, 0x20);
});

test('GET LBA STATUS: one mapped descriptor from the LBA; past the end is LBA OUT OF RANGE', async () => {
  const r = rig();
  const o = await r.run(getLbaStatus(5, 24));
  expectGood(o);
  assert.equal(toHex(o.data), toHex(hex(`00000014 00000000  0000000000000005 000007fb 00 000000`)));
  expectLbaOutOfRange(await r.run(getLbaStatus(r.blocks, 24)));
  expectLbaOutOfRange(await r.run(getLbaStatus(0x8000000000000000n, 24)));
  expectLbaOutOfRange(await r.run(getLbaStatus(0xffffffffffffffffn, 24)));
  expectGood(await r.run(getLbaStatus(r.blocks - 1, 24)));
  assert.equal((await r.run(getLbaStatus(0, 0))).data.byteLength, 0);
});

test('GET LBA STATUS on a thin RAM LU: written blocks mapped, unmapped and never-written ones deallocated', async () => {
  const r = rig({ thin: true });
  expectGood(await r.run(rw10(WRITE10, 0, 16), { data: new Uint8Array(16 * r.bs).fill(1) }));
  expectGood(await r.run(unmapCdb(24), { data: unmapList([[4, 4]]) }));
  const o = await r.run(getLbaStatus(0, 1000));
  expectGood(o);
  assert.equal(
    toHex(o.data),
    toHex(
      hex(`
    00000044 00000000
    0000000000000000 00000004 00 000000
    0000000000000004 00000004 01 000000
    0000000000000008 00000008 00 000000
    0000000000000010 000007f0 01 000000`),
    ),
  );
});

test("GET LBA STATUS on a thin LU reports the device's holes, merged, up to the allocation length", async () => {
  const ram = createRamDisk(1 << 20);
  const dev = new RecordingDevice(ram);
  // Blocks 0-9 mapped, 10-19 a hole, the rest mapped (described in two pieces).
  dev.blockStatus = (offset: number, length: number) => {
    const end = offset + length;
    const ext = [
      { offset: 0, length: 10 * 512, allocated: true },
      { offset: 10 * 512, length: 10 * 512, allocated: false },
      { offset: 20 * 512, length: 100 * 512, allocated: true },
      { offset: 120 * 512, length: end - 120 * 512, allocated: true },
    ].filter((e) => e.offset + e.length > offset);
    return Promise.resolve(ext);
  };
  const r = rig({ device: dev, thin: true });
  const o = await r.run(getLbaStatus(4, 1000));
  expectGood(o);
  assert.equal(
    toHex(o.data),
    toHex(
      hex(`
    00000034 00000000
    0000000000000004 00000006 00 000000
    000000000000000a 0000000a 01 000000
    0000000000000014 000007ec 00 000000`),
    ),
  );
  const one = await r.run(getLbaStatus(4, 24));
  assert.equal(one.data.byteLength, 24);
  assert.equal(Buffer.from(one.data).readUInt32BE(0), 20);
});

// ------------------------------------------------------------------ mode pages, sense formats

test('MODE SENSE: DPOFUA, WP on read-only LUs, DBD, changeable/default, saved refused, allocation lengths', async () => {
  const r = rig();
  const all = await r.run(modeSense6(0, 0x3f, 255));
  expectGood(all);
  assert.equal(all.data[0], all.data.byteLength - 1);
  assert.equal(all.data[2], 0x10);
  assert.equal(all.data[3], 8);
  const four = await r.run(modeSense6(0, 0x3f, 4));
  assert.equal(four.data.byteLength, 4);
  assert.equal(four.transferLength, 4);
  expectSense(await r.run(modeSense6(3, 0x0a, 255)), 5, 0x39);
  expectInvalidField(await r.run(modeSense6(0, 0x05, 255)));
  expectInvalidField(await r.run([0x1a, 0, 0x0a, 0x01, 255, 0]));
  const ro = rig({ readOnly: true });
  assert.equal((await ro.run(modeSense6(0, 0x3f, 255))).data[2], 0x90);
  const ten = await r.run([0x5a, 0x10, 0x3f, 0, 0, 0, 0, 0x01, 0x00, 0]);
  assert.equal(toHex(ten.data.subarray(0, 8)), toHex(hex('004e 00 10 01 00 0010')), 'LONGLBA block descriptor');
  assert.equal(toHex(ten.data.subarray(8, 24)), toHex(hex('0000000000000800 00000000 00000200')));
});

test('MODE SELECT D_SENSE switches sense data to descriptor format; SWP write-protects', async () => {
  const r = rig();
  const control = (dsense: number, swp: number): Uint8Array => hex(`00 00 00 00  0a 0a ${dsense ? '04' : '00'} 10 ${swp ? '08' : '00'} 00 0000 0000 0000`);
  expectGood(await r.run([0x15, 0x10, 0, 0, 16, 0], { data: control(1, 0) }));
  const oob = await r.run(rw16(READ16, 0xffffffffffffffffn, 1));
  assert.equal((oob.sense as Uint8Array)[0], 0x72);
  expectLbaOutOfRange(oob);
  // In descriptor format the field pointer is a sense-key specific descriptor.
  const bad = await r.run(rw10(READ10, 0, 1, 0x20));
  assert.equal(toHex(bad.sense as Uint8Array), toHex(hex('72 05 24 00 000000 08 02 06 0000 cf 0001 00')));
  expectGood(await r.run([0x15, 0x10, 0, 0, 16, 0], { data: control(0, 1) }));
  assert.equal((await r.run(rw10(READ10, 0, 1))).status, 0);
  expectSense(await r.run(rw10(WRITE10, 0, 1), { data: new Uint8Array(r.bs) }), 7, 0x27, 0x02);
  assert.equal((await r.run(modeSense6(0, 0x3f, 255))).data[2], 0x90, 'WP shown while SWP is set');
  expectGood(await r.run([0x15, 0x10, 0, 0, 16, 0], { data: control(0, 0) }));
  expectGood(await r.run(rw10(WRITE10, 0, 1), { data: new Uint8Array(r.bs) }));
  // SP is refused; a non-changeable bit is INVALID FIELD IN PARAMETER LIST; zero length is a no-op.
  expectInvalidField(await r.run([0x15, 0x11, 0, 0, 16, 0], { data: control(0, 0) }));
  expectSense(await r.run([0x15, 0x10, 0, 0, 16, 0], { data: hex('00000000 0a 0a 00 30 00 00 0000 0000 0000') }), 5, 0x26);
  expectGood(await r.run([0x15, 0x10, 0, 0, 0, 0]));
  // MODE SELECT(10) with the 8-byte header.
  expectGood(await r.run([0x55, 0x10, 0, 0, 0, 0, 0, 0, 20, 0], { data: hex('0000 00 00 00 00 0000  0a 0a 04 10 00 00 0000 0000 0000') }));
  assert.equal((await r.run(rw16(READ16, 0xffffffffffffffffn, 1))).sense?.[0], 0x72);
});

test('REQUEST SENSE: NO SENSE, fixed or descriptor as asked, allocation length', async () => {
  const r = rig();
  const fixed = await r.run([0x03, 0, 0, 0, 252, 0]);
  expectGood(fixed);
  assert.equal(toHex(fixed.data), toHex(hex('70 00 00 00000000 0a 00000000 00 00 00 000000')));
  const desc = await r.run([0x03, 1, 0, 0, 252, 0]);
  assert.equal(toHex(desc.data), toHex(hex('72 00 00 00 000000 00')));
  assert.equal((await r.run([0x03, 0, 0, 0, 8, 0])).data.byteLength, 8);
});

test('START STOP UNIT: a stopped unit is NOT READY until started; power conditions accepted', async () => {
  const r = rig();
  expectGood(await r.run([0x1b, 0, 0, 0, 0x00, 0]));
  assert.ok(
    r.device.calls.some((c) => c.op === 'flush'),
    'stopping flushes',
  );
  expectSense(await r.run([0, 0, 0, 0, 0, 0]), 2, 0x04, 0x02);
  expectSense(await r.run(rw10(READ10, 0, 1)), 2, 0x04, 0x02);
  const rs = await r.run([0x03, 0, 0, 0, 18, 0]);
  assert.deepEqual([rs.data[2], rs.data[12], rs.data[13]], [2, 4, 2]);
  expectGood(await r.run([0x1b, 1, 0, 0, 0x01, 0]));
  expectGood(await r.run([0, 0, 0, 0, 0, 0]));
  expectGood(await r.run([0x1b, 0, 0, 0, 0x20, 0]));
  expectInvalidField(await r.run([0x1b, 0, 0, 0, 0x50, 0]));
  expectGood(await r.run([0, 0, 0, 0, 0, 0]));
});

test('REPORT SUPPORTED OPERATION CODES through the device server, as libiscsi asks', async () => {
  const r = rig();
  const all = await r.run(rsoc(0x00, 0, 0, 65535));
  expectGood(all);
  const count = Buffer.from(all.data).readUInt32BE(0) / 8;
  for (let i = 0; i < count; i++) {
    const d = all.data.subarray(4 + 8 * i, 12 + 8 * i);
    const op = d[0] as number;
    const sa = ((d[2] as number) << 8) | (d[3] as number);
    const servactv = ((d[5] as number) & 1) === 1;
    const one = await r.run(rsoc(servactv ? 2 : 1, op, sa, 65535));
    expectGood(one);
    assert.equal(one.data[4], op);
    const wrong = await r.run(rsoc(servactv ? 1 : 2, op, sa, 65535));
    expectInvalidField(wrong);
    assert.notEqual(sks(wrong).slice(2), '0001', 'never a pointer to byte 1 (libiscsi would skip)');
  }
  const dpofua = await r.run(rsoc(1, READ10, 0, 65535));
  assert.equal((dpofua.data[5] as number) & 0x18, 0x18);
  const v = await r.run(rsoc(1, VERIFY10, 0, 65535));
  assert.equal((v.data[5] as number) & 0x10, 0x10);
  // Unsupported MAINTENANCE IN service action: INVALID FIELD pointing at byte 1 (libiscsi: not implemented).
  const rtpg = await r.run([0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
  expectInvalidField(rtpg);
  assert.equal(sks(rtpg), 'cc0001');
});

test('REPORT LUNS: any LUN, select report, flat space above 255; absent LUNs answer as SPC says', async () => {
  const device = createRamDisk(1 << 20);
  const server = new ScsiDeviceServer({
    luns: new Map([
      [1, { device, serial: 'A', deviceId: hex('6001405000000001') }],
      [300, { device: createRamDisk(1 << 20), serial: 'B', deviceId: hex('6001405000000002') }],
    ]),
    targetName: 'iqn.2026-01.test:t',
  });
  const nexus = makeNexus();
  const run = (lun: number, cdb: number[]): Promise<Outcome> => settle(server.execute(fakeTask({ nexus, lun, cdb })));
  for (const lun of [0, 1, 7, -1]) {
    const o = await run(lun, reportLuns(0, 4096));
    expectGood(o);
    assert.equal(toHex(o.data), toHex(hex('00000010 00000000 0001000000000000 412c000000000000')));
  }
  assert.equal(toHex((await run(0, reportLuns(1, 4096))).data), '0000000000000000');
  assert.equal(toHex((await run(0, reportLuns(2, 16))).data), toHex(hex('00000010 00000000 0001000000000000')));
  expectInvalidField(await run(0, reportLuns(3, 4096)));
  // LUN 0 is not configured: INQUIRY PQ 011b / type 1Fh, REQUEST SENSE LU NOT SUPPORTED, others CHECK CONDITION.
  const inq = await run(0, inquiry(0, 0, 96));
  expectGood(inq);
  assert.equal(inq.data[0], 0x7f);
  expectSense(await run(0, inquiry(1, 0, 255)), 5, 0x25);
  const rs = await run(0, [0x03, 0, 0, 0, 18, 0]);
  expectGood(rs);
  assert.deepEqual([rs.data[2], rs.data[12]], [5, 0x25]);
  expectSense(await run(0, [0, 0, 0, 0, 0, 0]), 5, 0x25);
  expectSense(await run(0, rw10(READ10, 0, 1)), 5, 0x25);
  expectGood(await run(300, [0, 0, 0, 0, 0, 0]));
  assert.equal(server.hasLun(300), true);
  assert.equal(server.hasLun(0), false);
  assert.deepEqual(server.luns, [1, 300]);
});

test('a read-only LU refuses every write-type command with DATA PROTECT / WRITE PROTECTED', async () => {
  for (const thin of [false, true]) {
    const r = rig({ readOnly: true, thin });
    const block = new Uint8Array(r.bs);
    const cmds: [number[], Uint8Array | undefined][] = [
      [rw10(WRITE10, 0, 1), block],
      [rw12(WRITE12, 0, 1), block],
      [rw16(WRITE16, 0, 1), block],
      [rw6(WRITE6, 0, 1), block],
      [rw10(WRITE_VERIFY10, 0, 1, 0x02), block],
      [rw16(ORWRITE, 0, 1), block],
      [compareAndWriteCdb(0, 1), new Uint8Array(2 * r.bs)],
      [[WS10, 0, 0, 0, 0, 0, 0, 0, 1, 0], block],
      [[WS10, 0x08, 0, 0, 0, 0, 0, 0, 1, 0], undefined],
      [rw16(WS16, 0, 1, 0x08), undefined],
    ];
    cmds.push([unmapCdb(24), unmapList([[0, 1]])]);
    for (const [cdb, data] of cmds) expectSense(await r.run(cdb, data === undefined ? {} : { data }), 7, 0x27, 0x00);
    expectGood(await r.run(rw10(READ10, 0, 1)));
    assert.equal(r.device.calls.filter((c) => c.op !== 'readv').length, 0);
  }
});

test('stats count commands, bytes and errors by sense key', async () => {
  const r = rig();
  expectGood(await r.run(rw10(WRITE10, 0, 2), { data: new Uint8Array(2 * r.bs) }));
  expectGood(await r.run(rw10(READ10, 0, 2)));
  expectLbaOutOfRange(await r.run(rw10(READ10, r.blocks, 1)));
  const s = r.server.stats()[0];
  assert.ok(s !== undefined);
  assert.equal(s.readCommands, 1);
  assert.equal(s.readBytes, 2 * r.bs);
  assert.equal(s.writeCommands, 1);
  assert.equal(s.writeBytes, 2 * r.bs);
  assert.deepEqual(s.errors, { ILLEGAL_REQUEST: 1 });
});

test('hostile CDBs: short, empty, every opcode with random bytes never throws or writes outside the LU', async () => {
  const r = rig({ thin: true, size: 1 << 20 });
  expectSense(await r.run([]), 5, 0x20);
  expectInvalidField(await r.run([0x28, 0, 0]));
  let seed = 12345;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed & 0xff;
  };
  for (let op = 0; op < 256; op++) {
    for (let k = 0; k < 8; k++) {
      const cdb = Array.from({ length: 16 }, rand);
      cdb[0] = op;
      cdb[15] = (cdb[15] as number) & ~0x04;
      const len = rand() * 64;
      const o = await r.run(cdb, { data: new Uint8Array(len), edtl: len });
      assert.ok([0, 2, 0x18].includes(o.status), `opcode ${op.toString(16)}: status ${o.status}`);
    }
  }
  for (const c of r.device.calls) assert.ok(c.offset >= 0 && c.offset + c.length <= 1 << 20, `${c.op} at ${c.offset}+${c.length}`);
  assert.equal(r.server.leasedBuffers, 0);
});
