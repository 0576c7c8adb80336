import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk, RAM_CHUNK_SIZE, RAM_STATUS_MAX_EXTENTS } from '../src/block/ram.ts';
import type { BlockExtent } from '../src/block/types.ts';
import { exerciseIntegrity, seededRandom } from './support/block-integrity.ts';
import { fullStatus } from './helpers-block.ts';

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
  assert.deepEqual(
    [...buf.subarray(0, 512)].every((b) => b === 7),
    true,
  );
  assert.ok(
    buf.subarray(512).every((b) => b === 0),
    'bytes cut off by the shrink read as zeroes',
  );
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

function extentsOf(model: readonly boolean[], bs: number): BlockExtent[] {
  const out: BlockExtent[] = [];
  model.forEach((allocated, i) => {
    const last = out[out.length - 1];
    if (last !== undefined && last.allocated === allocated) out[out.length - 1] = { ...last, length: last.length + bs };
    else out.push({ offset: i * bs, length: bs, allocated });
  });
  return out;
}

test('ram: blockStatus of a new disk is one hole; a write maps exactly its blocks, even in a fresh chunk', async () => {
  const disk = createRamDisk(4 * MiB, { chunkSize: MiB });
  assert.equal(disk.info.discardGranularity, 512);
  assert.equal(disk.info.discardZeroes, true);
  assert.deepEqual(await disk.blockStatus!(0, 4 * MiB), [{ offset: 0, length: 4 * MiB, allocated: false }]);
  // 3 blocks written as buffers that cut blocks (300 + 1236), straddling the chunk edge
  await disk.writev(MiB - 1024, [new Uint8Array(300).fill(1), new Uint8Array(1236).fill(2)]);
  assert.deepEqual(await fullStatus(disk, 4 * MiB), [
    { offset: 0, length: MiB - 1024, allocated: false },
    { offset: MiB - 1024, length: 1536, allocated: true },
    { offset: MiB + 512, length: 3 * MiB - 512, allocated: false },
  ]);
  // a window inside a run is answered as that window
  assert.deepEqual(await disk.blockStatus!(MiB - 512, 512), [{ offset: MiB - 512, length: 512, allocated: true }]);
  assert.deepEqual(await disk.blockStatus!(2 * MiB, 4096), [{ offset: 2 * MiB, length: 4096, allocated: false }]);
});

test('ram: GET LBA STATUS after UNMAP of single blocks (libiscsi GetLBAStatus.UnmapSingle) sees each block deallocated', async () => {
  const disk = createRamDisk(64 * MiB);
  const lbs = disk.info.logicalBlockSize;
  await disk.writev(0, [new Uint8Array(257 * lbs).fill(0x41)]);
  for (let i = 0; i < 256; i++) {
    await disk.discard(i * lbs, lbs);
    const at = await disk.blockStatus!(i * lbs, 24 * lbs);
    assert.deepEqual(at[0], { offset: i * lbs, length: lbs, allocated: false }, `block ${i}`);
    const next = await disk.blockStatus!((i + 1) * lbs, 24 * lbs);
    assert.deepEqual(next[0], { offset: (i + 1) * lbs, length: Math.min(24, 256 - i) * lbs, allocated: true }, `block ${i + 1}`);
  }
  const buf = new Uint8Array(257 * lbs);
  await disk.readv(0, [buf]);
  assert.ok(buf.subarray(0, 256 * lbs).every((x) => x === 0) && buf.subarray(256 * lbs).every((x) => x === 0x41));
});

test('ram: a chunk discarded piece by piece is freed once it is all hole; writes drop the hole map', async () => {
  const disk = createRamDisk(2 * MiB, { chunkSize: MiB });
  await disk.writev(0, [new Uint8Array(2 * MiB).fill(7)]);
  assert.equal(disk.allocatedBytes, 2 * MiB);
  await disk.discard(0, MiB / 2);
  await disk.writeZeroes(MiB / 2, MiB / 4);
  assert.equal(disk.allocatedBytes, 2 * MiB);
  assert.deepEqual(await fullStatus(disk, 2 * MiB), [
    { offset: 0, length: (3 * MiB) / 4, allocated: false },
    { offset: (3 * MiB) / 4, length: (5 * MiB) / 4, allocated: true },
  ]);
  await disk.discard((3 * MiB) / 4, MiB / 4);
  assert.equal(disk.allocatedBytes, MiB, 'chunk 0 is all hole: freed');
  await disk.writev(512, [new Uint8Array(512).fill(3)]);
  assert.equal(disk.allocatedBytes, 2 * MiB);
  assert.deepEqual(await fullStatus(disk, 2 * MiB), [
    { offset: 0, length: 512, allocated: false },
    { offset: 512, length: 512, allocated: true },
    { offset: 1024, length: MiB - 1024, allocated: false },
    { offset: MiB, length: MiB, allocated: true },
  ]);
  const buf = new Uint8Array(2048);
  await disk.readv(0, [buf]);
  assert.ok(buf.subarray(0, 512).every((x) => x === 0) && buf.subarray(512, 1024).every((x) => x === 3) && buf.subarray(1024).every((x) => x === 0));
  // filling the rest of the chunk maps it all again
  await disk.writev(0, [new Uint8Array(512), new Uint8Array(MiB - 1024)], 0);
  await disk.writev(MiB - 512, [new Uint8Array(512)]);
  assert.deepEqual(await fullStatus(disk, 2 * MiB), [{ offset: 0, length: 2 * MiB, allocated: true }]);
});

for (const lbs of [512, 4096]) {
  test(`ram: blockStatus matches a model under random writes, discards and write-zeroes (${lbs}-byte blocks)`, async () => {
    const chunk = 64 * 1024;
    const size = 16 * chunk + 7 * lbs; // a short last chunk
    const disk = createRamDisk(size, { chunkSize: chunk, logicalBlockSize: lbs });
    const blocks = size / lbs;
    const model: boolean[] = new Array<boolean>(blocks).fill(false);
    const data = new Uint8Array(size);
    const random = seededRandom(lbs);
    for (let op = 0; op < 1500; op++) {
      const first = Math.floor(random() * blocks);
      const count = 1 + Math.floor(random() * Math.min(blocks - first, random() < 0.1 ? 300 : 20));
      const r = random();
      if (r < 0.6) {
        const bytes = new Uint8Array(count * lbs).map(() => 1 + Math.floor(random() * 255));
        const cut = Math.floor(random() * bytes.byteLength);
        await disk.writev(first * lbs, cut === 0 ? [bytes] : [bytes.subarray(0, cut), bytes.subarray(cut)]);
        data.set(bytes, first * lbs);
        model.fill(true, first, first + count);
      } else {
        await (r < 0.8 ? disk.discard(first * lbs, count * lbs) : disk.writeZeroes(first * lbs, count * lbs));
        data.fill(0, first * lbs, (first + count) * lbs);
        model.fill(false, first, first + count);
      }
      if (op % 100 === 99) assert.deepEqual(await fullStatus(disk, size), extentsOf(model, lbs), `after op ${op}`);
    }
    assert.deepEqual(await fullStatus(disk, size), extentsOf(model, lbs));
    const back = new Uint8Array(size);
    await disk.readv(0, [back]);
    assert.ok(Buffer.from(back).equals(data));
  });
}

test('ram: resize keeps the hole map in step (grown blocks are holes)', async () => {
  const disk = createRamDisk(MiB + 4 * 512, { chunkSize: MiB });
  await disk.writev(MiB, [new Uint8Array(1024).fill(1)]);
  assert.deepEqual(await fullStatus(disk, MiB + 2048), [
    { offset: 0, length: MiB, allocated: false },
    { offset: MiB, length: 1024, allocated: true },
    { offset: MiB + 1024, length: 1024, allocated: false },
  ]);
  await disk.resize!(MiB + 512);
  assert.deepEqual(await fullStatus(disk, MiB + 512), [
    { offset: 0, length: MiB, allocated: false },
    { offset: MiB, length: 512, allocated: true },
  ]);
  await disk.resize!(MiB + 8192);
  assert.deepEqual(await fullStatus(disk, MiB + 8192), [
    { offset: 0, length: MiB, allocated: false },
    { offset: MiB, length: 512, allocated: true },
    { offset: MiB + 512, length: 8192 - 512, allocated: false },
  ]);
  await disk.resize!(3 * MiB);
  assert.deepEqual(await fullStatus(disk, 3 * MiB), [
    { offset: 0, length: MiB, allocated: false },
    { offset: MiB, length: 512, allocated: true },
    { offset: MiB + 512, length: 2 * MiB - 512, allocated: false },
  ]);
  // A chunk fully written before the grow: its new tail is a hole, the old part data.
  const d2 = createRamDisk(MiB + 1024, { chunkSize: MiB });
  await d2.writev(0, [new Uint8Array(MiB + 1024).fill(2)]);
  assert.deepEqual(await fullStatus(d2, MiB + 1024), [{ offset: 0, length: MiB + 1024, allocated: true }]);
  await d2.resize!(MiB + 4096);
  assert.deepEqual(await fullStatus(d2, MiB + 4096), [
    { offset: 0, length: MiB + 1024, allocated: true },
    { offset: MiB + 1024, length: 3072, allocated: false },
  ]);
});

test(`ram: a fragmented disk answers at most ${RAM_STATUS_MAX_EXTENTS} extents a call`, async () => {
  const disk = createRamDisk(8 * MiB, { chunkSize: MiB });
  for (let b = 0; b < 16384; b += 2) await disk.writev(b * 512, [new Uint8Array(512).fill(1)]);
  const first = await disk.blockStatus!(0, 8 * MiB);
  assert.equal(first.length, RAM_STATUS_MAX_EXTENTS);
  const all = await fullStatus(disk, 8 * MiB);
  assert.equal(all.length, 16384);
  assert.ok(all.every((e, i) => e.length === 512 && e.allocated === (i % 2 === 0)));
});
