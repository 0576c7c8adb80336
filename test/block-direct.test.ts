// The O_DIRECT driver on a loop device with direct I/O over a file in /dev/shm (zram corrupts memory
// on misaligned O_DIRECT on this kernel).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IO_ENGINES, openDirectDisk } from '../src/block/direct.ts';
import { WRITE_FUA } from '../src/block/types.ts';
import { allocAlignedShared } from '../src/block/aligned-memory.ts';
import { exerciseIntegrity, ringAllocator } from './support/block-integrity.ts';
import { withLoopDevice } from './helpers-loop.ts';

const MiB = 1 << 20;

for (const ioEngine of IO_ENGINES)
  test(`direct (${ioEngine}): random vectored I/O from shared WebAssembly.Memory buffers goes straight through`, async (t) => {
    await withLoopDevice(16 * MiB, t, async (dev) => {
      const disk = await openDirectDisk(dev, { ioEngine });
      try {
        assert.equal(disk.ioEngine, ioEngine);
        assert.equal(disk.info.size, 16 * MiB);
        assert.equal(disk.info.bufferAlignment, disk.info.logicalBlockSize);
        const lbs = disk.info.logicalBlockSize;
        const alloc = ringAllocator(allocAlignedShared(32 * MiB), 4096);
        const report = await exerciseIntegrity(disk, {
          seed: 21,
          ops: 300,
          maxBlocks: 256,
          alloc,
          bufferGranule: lbs,
          parallel: 2,
        });
        assert.deepEqual(report.mismatches, []);
        assert.ok(report.vectoredWrites > 10, JSON.stringify(report));
        assert.equal(disk.bouncedRequests, 0, 'aligned wasm buffers need no bounce');
      } finally {
        await disk.close();
      }
    });
  });

test('direct: misaligned buffers are bounced, never EINVAL', async (t) => {
  await withLoopDevice(8 * MiB, t, async (dev) => {
    const disk = await openDirectDisk(dev);
    try {
      const lbs = disk.info.logicalBlockSize;
      // Views 16 bytes past an aligned address in wasm memory: the byteOffset shows it.
      const skewed = ringAllocator(allocAlignedShared(32 * MiB), 4096, 16);
      const report = await exerciseIntegrity(disk, { seed: 22, ops: 120, maxBlocks: 4096, alloc: skewed, bufferGranule: lbs });
      assert.deepEqual(report.mismatches, []);
      assert.ok(disk.bouncedRequests >= report.reads + report.writes, `bounced ${disk.bouncedRequests}`);

      // Plain Uint8Arrays: byteOffset 0 but the backing store is only malloc-aligned. The driver
      // tries, gets EINVAL, learns, and bounces.
      const before = disk.bouncedRequests;
      const data = new Uint8Array(new ArrayBuffer(8192 + 3 * MiB));
      for (let i = 0; i < data.byteLength; i++) data[i] = (i * 31 + 7) & 0xff;
      await disk.writev(MiB, [data]);
      const back = new Uint8Array(data.byteLength);
      await disk.readv(MiB, [back]);
      assert.ok(Buffer.from(back).equals(data));
      assert.ok(disk.bouncedRequests > before, 'plain ArrayBuffer memory is bounced');

      // Mixed vector: one aligned wasm view, one odd-length... (lengths stay block multiples) and one skewed.
      const arena = allocAlignedShared(MiB);
      const a = arena.subarray(0, lbs).fill(1);
      const b = arena.subarray(lbs * 2 + 8, lbs * 3 + 8).fill(2);
      await disk.writev(0, [a, b], WRITE_FUA);
      const r = allocAlignedShared(2 * lbs);
      await disk.readv(0, [r]);
      assert.ok(r.subarray(0, lbs).every((x) => x === 1) && r.subarray(lbs).every((x) => x === 2));
    } finally {
      await disk.close();
    }
  });
});

test('direct: geometry comes from sysfs; flush, FUA and writeZeroes work', async (t) => {
  await withLoopDevice(4 * MiB, t, async (dev) => {
    const disk = await openDirectDisk(dev);
    try {
      assert.equal(disk.info.logicalBlockSize, 512);
      assert.equal(disk.info.canDiscard, true, 'a loop device over a file discards (BLKDISCARD)');
      assert.equal(disk.name, `phy:${dev}`);
      const buf = allocAlignedShared(MiB).fill(0x77);
      await disk.writev(0, [buf], WRITE_FUA);
      await disk.writeZeroes(4096, MiB - 8192);
      await disk.flush();
      const back = allocAlignedShared(MiB);
      await disk.readv(0, [back]);
      assert.ok(back.subarray(0, 4096).every((x) => x === 0x77));
      assert.ok(back.subarray(4096, MiB - 4096).every((x) => x === 0));
      assert.ok(back.subarray(MiB - 4096).every((x) => x === 0x77));
    } finally {
      await disk.close();
    }
    const ro = await openDirectDisk(dev, { readOnly: true });
    assert.equal(ro.info.readOnly, true);
    await ro.close();
  });
});

test('direct: a missing device fails with a UsageError naming the spec', async () => {
  await assert.rejects(openDirectDisk('/dev/nonexistent-blk-test'), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'BLK_ERR_USAGE');
    assert.match(err.message, /^phy:\/dev\/nonexistent-blk-test: cannot open \/dev\/nonexistent-blk-test: ENOENT/);
    return true;
  });
});
