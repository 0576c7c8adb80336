import assert from 'node:assert/strict';
import test from 'node:test';
import { CRC32C_ENGINE, crc32c, crc32cJs, crc32cNative, crc32cv, readDigest, writeDigest } from '../src/iscsi/crc32c.ts';
import { mulberry32 } from '../src/internal/prng.ts';
// The independent reference: one bit at a time, straight from the reflected polynomial.
import { crc32cBitwise } from './support/crc32c-bitwise.ts';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

// RFC 3720 Appendix B.4 (which RFC 7143 §13.1 points to): each vector with the digest bytes as
// they appear on the wire.
const VECTORS: readonly { name: string; data: Uint8Array; crc: number; wire: string }[] = [
  { name: '32 bytes of zeroes', data: new Uint8Array(32), crc: 0x8a9136aa, wire: 'aa36918a' },
  { name: '32 bytes of ones', data: new Uint8Array(32).fill(0xff), crc: 0x62a8ab43, wire: '43aba862' },
  {
    name: '32 bytes incrementing 00..1f',
    data: Uint8Array.from({ length: 32 }, (_, i) => i),
    crc: 0x46dd794e,
    wire: '4e79dd46',
  },
  {
    name: '32 bytes decrementing 1f..00',
    data: Uint8Array.from({ length: 32 }, (_, i) => 31 - i),
    crc: 0x113fdb5c,
    wire: '5cdb3f11',
  },
  {
    name: 'an iSCSI Read (10) SCSI Command PDU',
    data: hex(`01 c0 00 00  00 00 00 00  00 00 00 00  00 00 00 00
               14 00 00 00  00 00 04 00  00 00 00 14  00 00 00 18
               28 00 00 00  00 00 00 00  02 00 00 00  00 00 00 00`),
    crc: 0xd9963a56,
    wire: '563a96d9',
  },
  // The CRC catalogue's check value for CRC-32C (iSCSI).
  { name: '"123456789"', data: new TextEncoder().encode('123456789'), crc: 0xe3069283, wire: '839206e3' },
];

const ENGINES: [string, (d: Uint8Array, c?: number) => number][] = [
  ['crc32c', crc32c],
  ['js', crc32cJs],
  ...(crc32cNative === null ? [] : [['native', crc32cNative] as [string, (d: Uint8Array, c?: number) => number]]),
];

test('the native engine is in use on this machine (the dependency installed)', () => {
  assert.equal(CRC32C_ENGINE, 'native');
  assert.notEqual(crc32cNative, null);
});

test('RFC 3720 B.4 vectors, every engine, and the naive reference agrees', () => {
  for (const v of VECTORS) {
    assert.equal(crc32cBitwise(v.data), v.crc, `naive ${v.name}`);
    for (const [name, fn] of ENGINES) assert.equal(fn(v.data), v.crc, `${name} ${v.name}`);
    // The same bytes at every misalignment inside a larger buffer (the JS word path aligns itself).
    for (let off = 1; off < 8; off++) {
      const big = new Uint8Array(v.data.length + 16).fill(0x5a);
      big.set(v.data, off);
      for (const [name, fn] of ENGINES) assert.equal(fn(big.subarray(off, off + v.data.length)), v.crc, `${name} ${v.name} +${off}`);
    }
  }
});

test('writeDigest puts the CRC least significant byte first; readDigest reads it back', () => {
  for (const v of VECTORS) {
    const buf = new Uint8Array(7).fill(0xee);
    writeDigest(buf, 2, v.crc);
    assert.equal(Buffer.from(buf.subarray(2, 6)).toString('hex'), v.wire, v.name);
    assert.equal(buf[0], 0xee);
    assert.equal(buf[1], 0xee);
    assert.equal(buf[6], 0xee);
    assert.equal(readDigest(buf, 2), v.crc);
    assert.equal(readDigest(hex(v.wire), 0), v.crc);
  }
  const buf = new Uint8Array(4);
  writeDigest(buf, 0, 0xffffffff);
  assert.equal(readDigest(buf, 0), 0xffffffff, 'unsigned result for the top bit');
});

test('empty input leaves the running value unchanged', () => {
  for (const [name, fn] of ENGINES) {
    assert.equal(fn(new Uint8Array(0)), 0, name);
    assert.equal(fn(new Uint8Array(0), 0x12345678), 0x12345678, name);
  }
  assert.equal(crc32cv([]), 0);
  assert.equal(crc32cv([], 0xdeadbeef), 0xdeadbeef);
});

test('random buffers of many lengths and offsets match the naive reference', () => {
  const next = mulberry32(0xc0ffee);
  const pool = new Uint8Array(70_000);
  for (let i = 0; i < pool.length; i++) pool[i] = next() & 0xff;
  const lengths = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 127, 128, 255, 256, 257, 511, 1000, 4095, 4096, 4097, 8192, 65536];
  for (const len of lengths) {
    for (const off of [0, 1, 2, 3, 5]) {
      const d = pool.subarray(off, off + len);
      const want = crc32cBitwise(d);
      for (const [name, fn] of ENGINES) assert.equal(fn(d), want, `${name} len ${len} off ${off}`);
    }
  }
  for (let r = 0; r < 200; r++) {
    const len = next() % 3000;
    const off = next() % 64;
    const d = pool.subarray(off, off + len);
    const seed = next();
    const want = crc32cBitwise(d, seed);
    for (const [name, fn] of ENGINES) assert.equal(fn(d, seed), want, `${name} random ${r}`);
  }
});

test('chaining at every split point equals one pass, and crc32cv agrees', () => {
  const data = Uint8Array.from({ length: 300 }, (_, i) => (i * 37 + 11) & 0xff);
  const whole = crc32cBitwise(data);
  for (let cut = 0; cut <= data.length; cut++) {
    const a = data.subarray(0, cut);
    const b = data.subarray(cut);
    for (const [name, fn] of ENGINES) assert.equal(fn(b, fn(a)), whole, `${name} cut ${cut}`);
    assert.equal(crc32cv([a, b]), whole, `crc32cv cut ${cut}`);
  }
  // Three pieces, including empty ones, through the vector form.
  for (let i = 0; i <= 40; i++) {
    for (let j = i; j <= 40; j++) {
      const d = data.subarray(0, 40);
      assert.equal(crc32cv([d.subarray(0, i), d.subarray(i, j), new Uint8Array(0), d.subarray(j)]), crc32cBitwise(d));
    }
  }
  // Large pieces that cross the native threshold on one side only.
  const big = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 131) & 0xff);
  const want = crc32cBitwise(big);
  for (const cut of [0, 1, 100, 255, 256, 257, 4096, 65536, 69_999, 70_000]) {
    assert.equal(crc32c(big.subarray(cut), crc32c(big.subarray(0, cut))), want, `big cut ${cut}`);
  }
});

test('a digest over PDU + digest-of-PDU is the CRC32C residue', () => {
  // Appending the little-endian digest to the data yields the fixed residue 0x48674bc7 (the
  // register constant of CRC-32C, inverted): a property of how iSCSI places the digest bytes.
  for (const v of VECTORS) {
    const buf = new Uint8Array(v.data.length + 4);
    buf.set(v.data);
    writeDigest(buf, v.data.length, v.crc);
    assert.equal(crc32cBitwise(buf), 0x48674bc7, v.name);
    assert.equal(crc32c(buf), 0x48674bc7, v.name);
  }
});
