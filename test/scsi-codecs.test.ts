// Pure codecs of src/scsi: sense data, LUN structures, CDB fields, INQUIRY and mode page bytes,
// REPORT SUPPORTED OPERATION CODES. Expected bytes are written out by hand from SPC-4/SBC-4/SAM-5.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildSense, fieldPointer, parseSense } from '../src/scsi/sense.ts';
import { decodeLun, encodeLun } from '../src/scsi/lun.ts';
import { cdbLengthFor, decodeBlockFields, u64 } from '../src/scsi/cdb.ts';
import type { BlockFields } from '../src/scsi/cdb.ts';
import { COMMANDS, supportedOperationCodes } from '../src/scsi/opcodes.ts';
import { blockLimits, logicalBlockProvisioning, standardInquiry, supportedVpdPages } from '../src/scsi/inquiry.ts';
import { ModePages } from '../src/scsi/mode-pages.ts';
import { transportId } from '../src/scsi/reservations.ts';
import { hex, toHex } from './helpers-scsi.ts';

test('fixed sense: INVALID FIELD IN CDB with a field pointer to byte 2 bit 7', () => {
  const s = buildSense(false, 0x05, 0x2400, -1, fieldPointer(true, 2, 7));
  assert.equal(toHex(s), toHex(hex('70 00 05 00000000 0a 00000000 24 00 00 cf 0002')));
});

test('fixed sense: MISCOMPARE with the offset in INFORMATION (VALID set)', () => {
  const s = buildSense(false, 0x0e, 0x1d00, 0x1234);
  assert.equal(toHex(s), toHex(hex('f0 00 0e 00001234 0a 00000000 1d 00 00 000000')));
});

test('descriptor sense: information descriptor and sense-key specific descriptor', () => {
  assert.equal(toHex(buildSense(true, 0x0e, 0x1d00, 0x1234)), toHex(hex('72 0e 1d 00 000000 0c  00 0a 80 00 0000000000001234')));
  assert.equal(toHex(buildSense(true, 0x05, 0x2400, -1, fieldPointer(true, 1, 4))), toHex(hex('72 05 24 00 000000 08  02 06 0000 cc 0001 00')));
  assert.equal(toHex(buildSense(true, 0x06, 0x2903)), toHex(hex('72 06 29 03 000000 00')));
  // A parameter-list pointer has C/D clear; no bit pointer leaves BPV clear.
  assert.equal(fieldPointer(false, 20), 0x800014);
});

test('parseSense reads both formats', () => {
  assert.deepEqual(parseSense(hex('70 00 05 00000000 0a 00000000 21 00 00 000000')), { key: 5, asc: 0x21, ascq: 0, descriptor: false });
  assert.deepEqual(parseSense(hex('72 06 2a 09 000000 00')), { key: 6, asc: 0x2a, ascq: 9, descriptor: true });
});

test('LUN structure: peripheral below 256, flat space below 16384, anything else refused', () => {
  assert.equal(toHex(encodeLun(0)), '0000000000000000');
  assert.equal(toHex(encodeLun(5)), '0005000000000000');
  assert.equal(toHex(encodeLun(255)), '00ff000000000000');
  assert.equal(toHex(encodeLun(256)), '4100000000000000');
  assert.equal(toHex(encodeLun(16383)), '7fff000000000000');
  assert.throws(() => encodeLun(16384), RangeError);
  assert.throws(() => encodeLun(-1), RangeError);
  for (const lun of [0, 1, 7, 255, 256, 1000, 16383]) assert.equal(decodeLun(encodeLun(lun)), lun);
  assert.equal(decodeLun(hex('0105000000000000')), -1, 'bus 1');
  assert.equal(decodeLun(hex('0005000000000001')), -1, 'second level');
  assert.equal(decodeLun(hex('8001000000000000')), -1, 'logical unit addressing');
  assert.equal(decodeLun(hex('d200000100000000')), -1, 'extended');
  assert.equal(decodeLun(hex('0005')), -1, 'short');
  const at = new Uint8Array(12);
  encodeLun(300, at, 4);
  assert.equal(decodeLun(at, 4), 300);
});

test('CDB fields: group lengths, READ(6) length 0 means 256, 64-bit LBAs never read small', () => {
  assert.equal(cdbLengthFor(0x08), 6);
  assert.equal(cdbLengthFor(0x28), 10);
  assert.equal(cdbLengthFor(0x5e), 10);
  assert.equal(cdbLengthFor(0x88), 16);
  assert.equal(cdbLengthFor(0xa8), 12);
  assert.equal(cdbLengthFor(0x7f), 0);
  const f: BlockFields = { lba: 0, count: 0, flags: 0, countByte: 0 };
  assert.ok(decodeBlockFields(hex('08 1f ffff 00 00'), f));
  assert.deepEqual(f, { lba: 0x1fffff, count: 256, flags: 0, countByte: 4 });
  assert.ok(decodeBlockFields(hex('28 18 01020304 00 0102 00'), f));
  assert.deepEqual(f, { lba: 0x01020304, count: 0x0102, flags: 0x18, countByte: 7 });
  assert.ok(decodeBlockFields(hex('88 08 0000000100000002 00000010 00 00'), f));
  assert.deepEqual(f, { lba: 2 ** 32 + 2, count: 16, flags: 0x08, countByte: 10 });
  assert.ok(!decodeBlockFields(hex('28 00 00'), f));
  assert.ok(u64(hex('ffffffffffffffff'), 0) >= 2 ** 64 - 2 ** 12);
  assert.ok(u64(hex('0020000000000000'), 0) > Number.MAX_SAFE_INTEGER);
});

test('every supported command has CDB usage data of its CDB length, sorted by opcode', () => {
  let last = -1;
  for (const c of COMMANDS) {
    assert.equal(c.usage.byteLength, cdbLengthFor(c.opcode), `opcode ${c.opcode.toString(16)}`);
    assert.equal(c.usage[0], c.opcode);
    const key = c.opcode * 256 + Math.max(0, c.serviceAction);
    assert.ok(key > last, `order at ${c.opcode.toString(16)}`);
    last = key;
  }
});

test('REPORT SUPPORTED OPERATION CODES: one command, with and without service actions', () => {
  // READ(10), reporting option 001b: SUPPORT 011b, CDB SIZE 10, usage data.
  const one = supportedOperationCodes(hex('a3 0c 01 28 0000 00001000 00 00'), false);
  assert.ok(one instanceof Uint8Array);
  assert.equal(toHex(one), toHex(hex('00 03 000a  28 1a ffffffff 00 ffff 04')));
  // With RCTD: CTDP set and a 12-byte timeouts descriptor (length 0Ah, recommended 30 s).
  const rctd = supportedOperationCodes(hex('a3 0c 81 28 0000 00001000 00 00'), false);
  assert.ok(rctd instanceof Uint8Array);
  assert.equal(toHex(rctd), toHex(hex('00 83 000a  28 1a ffffffff 00 ffff 04  000a 00 00 00000000 0000001e')));
  // READ CAPACITY(16) is a service action: option 001b is an invalid field (pointer at byte 2, not 1).
  assert.deepEqual(supportedOperationCodes(hex('a3 0c 01 9e 0000 00001000 00 00'), false), { byte: 2, bit: 2 });
  const rc16 = supportedOperationCodes(hex('a3 0c 02 9e 0010 00001000 00 00'), false);
  assert.ok(rc16 instanceof Uint8Array);
  assert.equal(toHex(rc16.subarray(0, 6)), toHex(hex('00 03 0010 9e 10')));
  assert.deepEqual(supportedOperationCodes(hex('a3 0c 02 28 0000 00001000 00 00'), false), { byte: 2, bit: 2 });
  // Unsupported opcode: SUPPORT 001b, no usage data.
  assert.equal(toHex(supportedOperationCodes(hex('a3 0c 01 48 0000 00001000 00 00'), false) as Uint8Array), '00010000');
  // UNMAP only on a thin logical unit.
  assert.equal((supportedOperationCodes(hex('a3 0c 01 42 0000 00001000 00 00'), false) as Uint8Array)[1], 0x01);
  assert.equal((supportedOperationCodes(hex('a3 0c 01 42 0000 00001000 00 00'), true) as Uint8Array)[1], 0x03);
});

test('REPORT SUPPORTED OPERATION CODES: the full list, 8 or 20 bytes per command', () => {
  const all = supportedOperationCodes(hex('a3 0c 00 00 0000 00010000 00 00'), true);
  assert.ok(all instanceof Uint8Array);
  const n = COMMANDS.length;
  assert.equal(all.byteLength, 4 + 8 * n);
  assert.equal(Buffer.from(all).readUInt32BE(0), 8 * n);
  // First descriptor: TEST UNIT READY, no service action, CDB LENGTH 6.
  assert.equal(toHex(all.subarray(4, 12)), toHex(hex('00 00 0000 00 00 0006')));
  // A PERSISTENT RESERVE IN descriptor has SERVACTV and its service action.
  const i = COMMANDS.findIndex((c) => c.opcode === 0x5e && c.serviceAction === 3);
  assert.equal(toHex(all.subarray(4 + 8 * i, 12 + 8 * i)), toHex(hex('5e 00 0003 00 01 000a')));
  const withTimeouts = supportedOperationCodes(hex('a3 0c 80 00 0000 00010000 00 00'), false);
  assert.ok(withTimeouts instanceof Uint8Array);
  assert.equal(withTimeouts.byteLength, 4 + 20 * (n - 1));
  assert.equal(withTimeouts[4 + 5], 0x02, 'CTDP');
  assert.equal(withTimeouts[4 + 9], 0x0a, 'timeouts descriptor length');
});

test('standard INQUIRY data: SPC-4, HISUP, CMDQUE, padded identification, version descriptors', () => {
  const d = standardInquiry({ vendor: 'BLKBACK', product: 'VIRTUAL-DISK', revision: '0001' }, true);
  assert.equal(d.byteLength, 96);
  assert.equal(toHex(d.subarray(0, 8)), toHex(hex('00 00 06 12 5b 00 00 02')));
  assert.equal(Buffer.from(d.subarray(8, 36)).toString('latin1'), 'BLKBACK VIRTUAL-DISK    0001');
  assert.equal(toHex(d.subarray(58, 66)), toHex(hex('00a0 0960 0460 04c0')));
  const absent = standardInquiry({ vendor: 'X', product: 'Y', revision: 'Z' }, false);
  assert.equal(absent[0], 0x7f);
});

test('VPD pages: supported list, block limits, logical block provisioning', () => {
  assert.equal(toHex(supportedVpdPages()), toHex(hex('00 00 0006 00 80 83 b0 b1 b2')));
  const bl = blockLimits({
    maxCompareAndWriteBlocks: 255,
    optimalTransferGranularity: 1,
    maxTransferBlocks: 0x4000,
    optimalTransferBlocks: 0x800,
    maxUnmapBlocks: 0x100000,
    maxUnmapDescriptors: 256,
    optimalUnmapGranularity: 1,
    maxWriteSameBlocks: 0xffff,
  });
  assert.equal(bl.byteLength, 64);
  assert.equal(
    toHex(bl.subarray(0, 44)),
    toHex(
      hex(`
    00 b0 003c  00 ff 0001  00004000  00000800  00000000
    00100000 00000100 00000001 80000000 000000000000ffff`),
    ),
  );
  assert.equal(toHex(logicalBlockProvisioning(true)), toHex(hex('00 b2 0004 00 e4 02 00')));
  assert.equal(toHex(logicalBlockProvisioning(false)), toHex(hex('00 b2 0004 00 00 00 00')));
});

test('iSCSI TransportID, format 01b: "<name>,i,0x<ISID>", NUL-terminated, padded to 4', () => {
  const t = transportId(5, 'iqn.x,i,0x123456789abc');
  // 22 characters + NUL = 23, padded to 24.
  assert.equal(toHex(t), toHex(hex('45 00 0018')) + Buffer.from('iqn.x,i,0x123456789abc\0\0').toString('hex'));
  assert.equal(transportId(5, 'a').byteLength, 4 + 20, 'at least 20 bytes');
});

test('mode pages: MODE SENSE(6) all pages with a block descriptor, exact bytes', () => {
  const m = new ModePages({ volatileCache: false });
  const r = m.sense({ ten: false, dbd: false, llbaa: false, pc: 0, page: 0x3f, subpage: 0, numBlocks: 2048, blockSize: 512, writeProtected: false });
  assert.ok(r instanceof Uint8Array);
  assert.equal(
    toHex(r),
    toHex(
      hex(`
    43 00 10 08   00000800 00 000200
    01 0a 00000000000000000000
    08 12 000000000000000000000000000000000000
    0a 0a 00 10 0000 0000 0000 0000
    1c 0a 00000000000000000000`),
    ),
  );
  // MODE SENSE(10), DBD, the Control page's changeable mask: D_SENSE and SWP; WP shown when protected.
  const ch = m.sense({ ten: true, dbd: true, llbaa: false, pc: 1, page: 0x0a, subpage: 0, numBlocks: 2048, blockSize: 512, writeProtected: true });
  assert.ok(ch instanceof Uint8Array);
  assert.equal(toHex(ch), toHex(hex('0012 00 90 00 00 0000   0a 0a 04 00 08 00 0000 0000 0000')));
  // Saved values are not offered; an unknown page is an invalid field.
  assert.deepEqual(m.sense({ ten: false, dbd: true, llbaa: false, pc: 3, page: 0x0a, subpage: 0, numBlocks: 1, blockSize: 512, writeProtected: false }), {
    ascAscq: 0x3900,
    sks: fieldPointer(true, 2, 7),
  });
  assert.equal(
    (
      m.sense({ ten: false, dbd: true, llbaa: false, pc: 0, page: 0x19, subpage: 0, numBlocks: 1, blockSize: 512, writeProtected: false }) as {
        ascAscq: number;
      }
    ).ascAscq,
    0x2400,
  );
});

test('mode pages: MODE SELECT changes only changeable bits, all or nothing', () => {
  const m = new ModePages({ volatileCache: true });
  assert.equal(m.writeCacheEnabled, true);
  // Header (6), Control page with D_SENSE and SWP set.
  const sel = hex('00 00 00 00  0a 0a 04 10 08 00 0000 0000 0000');
  assert.deepEqual(m.select(sel, false, 100, 512), { changed: true });
  assert.equal(m.descriptorSense, true);
  assert.equal(m.softwareWriteProtect, true);
  assert.deepEqual(m.select(sel, false, 100, 512), { changed: false });
  // TST is not changeable: the pointer names byte 6 (4 + 2), bit 7; nothing else changed.
  const bad = hex('00 00 00 00  08 12 00 00 0000 0000 0000 0000 00 00 0000 00 00 0000   0a 0a 80 10 00 00 0000 0000 0000');
  assert.deepEqual(m.select(bad, false, 100, 512), { ascAscq: 0x2600, sks: fieldPointer(false, 26, 7) });
  assert.equal(m.writeCacheEnabled, true, 'the Caching page before it was not applied');
  assert.equal(m.descriptorSense, true);
  // Clearing WCE is allowed (the device has a volatile cache).
  assert.deepEqual(m.select(hex('00 00 00 00  08 12 00 00 0000 0000 0000 0000 00 00 0000 00 00 0000'), false, 100, 512), { changed: true });
  assert.equal(m.writeCacheEnabled, false);
  // Wrong page length, PS set, a block descriptor with another block length, a truncated page.
  assert.equal((m.select(hex('00000000 0a 08 0000000000000000'), false, 100, 512) as { ascAscq: number }).ascAscq, 0x2600);
  assert.equal((m.select(hex('00000000 8a 0a 04 10 08 00 0000 0000 0000'), false, 100, 512) as { ascAscq: number }).ascAscq, 0x2600);
  assert.equal((m.select(hex('00000008 00000064 00 000400'), false, 100, 512) as { ascAscq: number }).ascAscq, 0x2600);
  assert.equal((m.select(hex('00000000 0a 0a 04'), false, 100, 512) as { ascAscq: number }).ascAscq, 0x1a00);
  assert.deepEqual(m.select(hex('00000008 00000064 00 000200'), false, 100, 512), { changed: false });
  assert.equal(m.resetToDefaults(), true);
  assert.equal(m.descriptorSense, false);
  assert.equal(m.writeCacheEnabled, true);
});
