import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk, RAM_CHUNK_SIZE } from '../src/block/ram.ts';
import { exerciseIntegrity } from '../src/block/testing.ts';

const MiB = 1 << 20;
const GiB = 1 << 30;

test('ram: random vectored I/O with 1 MiB chunks reads back what was written', async () => {
  const disk = createRamDisk(8 * MiB, { chunkSize: MiB });
  const report = await exerciseIntegrity(disk, { seed: 1, ops: 600, maxBlocks: 3000 });
  assert.deepEqual(report.mismatches, []);
  assert.ok(report.vectoredWrites > 50 && report.reads > 100 && report.zeroes > 20, JSON.stringify(report));
});

test('ram: 4096-byte logical blocks', async () => {
  const disk = createRamDisk(4 * MiB, { chunkSize: MiB, logicalBlockSize: 4096 });
  assert.equal(disk.info.logicalBlockSize, 4096);
  const report = await exerciseIntegrity(disk, { seed: 2, ops: 300, maxBlocks: 600 });
  assert.deepEqual(report.mismatches, []);
});

test('ram: one request crossing a chunk edge is split and lands on both sides', async () => {
  const disk = createRamDisk(4 * MiB, { chunkSize: MiB });
  const data = new Uint8Array(3 * 4096).map((_, i) => (i * 7 + 3) & 0xff);
  const offset = MiB - 4096; // 1 block before the edge, 2 after
  await disk.writev(offset, [data.subarray(0, 5000), data.subarray(5000)]);
  assert.equal(disk.allocatedBytes, 2 * MiB);
  const back = new Uint8Array(data.byteLength);
  await disk.readv(offset, [back]);
  assert.deepEqual(back, data);
  // Straddling three chunks in one buffer, on a fresh disk.
  const disk2 = createRamDisk(4 * MiB, { chunkSize: MiB });
  const big = new Uint8Array(2 * MiB + 1024).fill(0x5a);
  await disk2.writev(MiB - 512, [big]);
  const check = new Uint8Array(big.byteLength + 1024);
  await disk2.readv(MiB - 1024, [check]);
  assert.equal(check[0], 0);
  assert.equal(check[511], 0);
  assert.equal(check[512], 0x5a);
  assert.equal(check[check.byteLength - 513], 0x5a);
});

test('ram: unwritten space reads as zeroes and allocates nothing', async () => {
  const disk = createRamDisk(4 * MiB, { chunkSize: MiB });
  const buf = new Uint8Array(8192).fill(0xff);
  await disk.readv(MiB, [buf]);
  assert.ok(buf.every((b) => b === 0));
  assert.equal(disk.allocatedBytes, 0);
});

test('ram: chunks are SharedArrayBuffers, and a wholly discarded chunk is freed', async () => {
  const disk = createRamDisk(4 * MiB, { chunkSize: MiB });
  await disk.writev(0, [new Uint8Array(2 * MiB).fill(1)]);
  assert.equal(disk.allocatedBytes, 2 * MiB);
  // Discarding half of chunk 1 and all of chunk 0.
  await disk.discard(0, MiB + MiB / 2);
  assert.equal(disk.allocatedBytes, MiB);
  const buf = new Uint8Array(2 * MiB);
  await disk.readv(0, [buf]);
  assert.ok(buf.subarray(0, MiB + MiB / 2).every((b) => b === 0));
  assert.ok(buf.subarray(MiB + MiB / 2).every((b) => b === 1));
  await disk.writeZeroes(MiB, MiB);
  assert.equal(disk.allocatedBytes, 0);
});

test('ram: chunks are SharedArrayBuffers sized to the disk, allocated on first write', async () => {
  assert.equal(RAM_CHUNK_SIZE, GiB);
  const disk = createRamDisk(MiB + 4096, { chunkSize: MiB });
  assert.equal(disk.chunkBuffer(0), undefined);
  await disk.writev(MiB, [new Uint8Array(512).fill(9)]);
  const last = disk.chunkBuffer(1);
  assert.ok(last instanceof SharedArrayBuffer);
  assert.equal(last.byteLength, 4096, 'the last chunk holds only the tail of the disk');
  assert.equal(new Uint8Array(last)[0], 9);
  assert.equal(disk.chunkBuffer(0), undefined);
});

test('ram: a 10 GiB disk works sparsely (writes at both ends, default 1 GiB chunks)', async () => {
  const size = 10 * GiB;
  const disk = createRamDisk(size);
  assert.equal(disk.info.size, size);
  const head = new Uint8Array(4096).fill(0xa1);
  const tail = new Uint8Array(4096).fill(0xb2);
  const edge = new Uint8Array(8192).fill(0xc3);
  await disk.writev(0, [head]);
  await disk.writev(size - 4096, [tail]);
  await disk.writev(5 * GiB - 4096, [edge]); // crosses the 5 GiB chunk edge, beyond 2^32
  assert.ok(disk.allocatedBytes <= 4 * GiB, `allocated ${disk.allocatedBytes}`);
  const buf = new Uint8Array(4096);
  await disk.readv(size - 4096, [buf]);
  assert.ok(buf.every((b) => b === 0xb2));
  const e = new Uint8Array(8192);
  await disk.readv(5 * GiB - 4096, [e]);
  assert.ok(e.every((b) => b === 0xc3));
  await disk.readv(7 * GiB, [buf]);
  assert.ok(buf.every((b) => b === 0));
  await disk.close();
});

test('ram: resize grows with zeroes and shrinking drops the tail', async () => {
  const disk = createRamDisk(MiB + 512 * 3, { chunkSize: MiB });
  await disk.writev(MiB, [new Uint8Array(1536).fill(7)]);
  assert.ok(disk.resize !== undefined);
  await disk.resize(MiB + 512);
  assert.equal(disk.info.size, MiB + 512);
  await disk.resize(3 * MiB);
  assert.equal(disk.info.size, 3 * MiB);
  const buf = new Uint8Array(1536);
  await disk.readv(MiB, [buf]);
  assert.deepEqual([...buf.subarray(0, 512)].every((b) => b === 7), true);
  assert.ok(buf.subarray(512).every((b) => b === 0), 'bytes cut off by the shrink read as zeroes');
  await disk.writev(3 * MiB - 512, [new Uint8Array(512).fill(1)]);
  await assert.rejects(disk.resize(1000), /multiple of 512/);
});

test('ram: capabilities', () => {
  const disk = createRamDisk(MiB);
  assert.equal(disk.info.volatileCache, false);
  assert.equal(disk.info.canDiscard, true);
  assert.equal(disk.info.canWriteZeroes, true);
  assert.equal(disk.info.bufferAlignment, 1);
  assert.throws(() => createRamDisk(1000), /multiple of the 512-byte/);
  assert.throws(() => createRamDisk(MiB, { chunkSize: 3000 }), /power of two/);
});
