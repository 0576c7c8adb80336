import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { createVolatileCache } from '../src/block/volatile-cache.ts';
import { WRITE_FUA } from '../src/block/types.ts';
import { exerciseIntegrity } from '../src/block/testing.ts';

const MiB = 1 << 20;

function block(fill: number, n = 512): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

async function readBlock(dev: { readv(o: number, iov: readonly Uint8Array[]): Promise<void> }, offset: number, n = 512): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  await dev.readv(offset, [buf]);
  return buf;
}

test('volatile cache: writes are visible before flush but not on the base', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  assert.equal(disk.info.volatileCache, true);
  await disk.writev(1024, [block(1, 300), block(1, 212), block(2, 512)]);
  assert.equal(disk.dirtyBytes, 1024);
  assert.ok((await readBlock(disk, 1024)).every((x) => x === 1));
  assert.ok((await readBlock(disk, 1536)).every((x) => x === 2));
  assert.ok((await readBlock(base, 1024, 1024)).every((x) => x === 0), 'nothing reached the base yet');
  // A read spanning cached and uncached blocks, split across buffers at odd places.
  await base.writev(0, [block(9, 1024)]);
  const a = new Uint8Array(700);
  const b = new Uint8Array(1348);
  await disk.readv(0, [a, b]);
  assert.ok(a.every((x) => x === 9));
  assert.ok(b.subarray(0, 324).every((x) => x === 9));
  assert.ok(b.subarray(324, 836).every((x) => x === 1));
  assert.ok(b.subarray(836).every((x) => x === 2));
});

test('volatile cache: after powerCut unflushed writes are gone; flushed and FUA writes survive', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1)]);
  await disk.flush();
  assert.equal(disk.dirtyBytes, 0);
  assert.ok((await readBlock(base, 0)).every((x) => x === 1), 'flushed data is on the base');
  await disk.writev(512, [block(2)], WRITE_FUA);
  assert.ok((await readBlock(base, 512)).every((x) => x === 2), 'FUA data is on the base at once');
  await disk.writev(1024, [block(3)]);
  await disk.writev(0, [block(4)]); // overwrite of flushed data, not flushed
  await disk.writev(512, [block(5)]); // overwrite of FUA data, not flushed
  assert.ok((await readBlock(disk, 0)).every((x) => x === 4));
  await disk.powerCut();
  assert.equal(disk.dirtyBytes, 0);
  assert.ok((await readBlock(disk, 0)).every((x) => x === 1));
  assert.ok((await readBlock(disk, 512)).every((x) => x === 2));
  assert.ok((await readBlock(disk, 1024)).every((x) => x === 0));
  // The device keeps working after the power comes back.
  await disk.writev(1024, [block(6)]);
  await disk.flush();
  assert.ok((await readBlock(base, 1024)).every((x) => x === 6));
});

test('volatile cache: a FUA write supersedes an older cached copy of the same block', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1, 1024)]);
  await disk.writev(512, [block(2)], WRITE_FUA);
  assert.ok((await readBlock(disk, 512)).every((x) => x === 2));
  await disk.flush();
  assert.ok((await readBlock(base, 0)).every((x) => x === 1));
  assert.ok((await readBlock(base, 512)).every((x) => x === 2), 'the flush did not write the stale cached block');
});

test('volatile cache: writes issued after flush() started are not covered by it', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1)]);
  const flushing = disk.flush();
  await disk.writev(512, [block(2)]);
  await disk.writev(0, [block(3)]);
  assert.ok((await readBlock(disk, 0)).every((x) => x === 3), 'reads see the newest data during a flush');
  await flushing;
  assert.ok((await readBlock(base, 0)).every((x) => x === 1));
  assert.equal(disk.dirtyBytes, 1024);
  await disk.powerCut();
  assert.ok((await readBlock(disk, 0)).every((x) => x === 1));
  assert.ok((await readBlock(disk, 512)).every((x) => x === 0));
});

test('volatile cache: powerCut with surviveFraction keeps a seeded subset of whole blocks', async () => {
  const survivors = async (seed: number): Promise<number[]> => {
    const base = createRamDisk(MiB);
    const disk = createVolatileCache(base);
    for (let i = 0; i < 200; i++) await disk.writev(i * 512, [block(i + 1)]);
    await disk.powerCut({ surviveFraction: 0.5, seed });
    const kept: number[] = [];
    for (let i = 0; i < 200; i++) {
      const b = await readBlock(base, i * 512);
      if (b[0] === i + 1) {
        assert.ok(b.every((x) => x === i + 1), 'a surviving block is whole');
        kept.push(i);
      } else {
        assert.ok(b.every((x) => x === 0));
      }
    }
    return kept;
  };
  const a = await survivors(7);
  const b = await survivors(7);
  const c = await survivors(8);
  assert.deepEqual(a, b, 'same seed, same survivors');
  assert.notDeepEqual(a, c);
  assert.ok(a.length > 60 && a.length < 140, `${a.length} of 200 survived`);
});

test('volatile cache: a power cut during a flush fails that flush', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  for (let i = 0; i < 8; i += 2) await disk.writev(i * 512, [block(i + 1)]); // not adjacent: 4 writes
  const flushing = disk.flush();
  const cut = disk.powerCut();
  await assert.rejects(flushing, { code: 'BLK_ERR_POWER_CUT' });
  await cut;
  assert.equal(disk.dirtyBytes, 0);
});

test('volatile cache: random I/O through the cache; after flush the base holds the same bytes', async () => {
  const base = createRamDisk(4 * MiB, { chunkSize: MiB });
  const disk = createVolatileCache(base);
  const report = await exerciseIntegrity(disk, { seed: 31, ops: 200, maxBlocks: 64 });
  assert.deepEqual(report.mismatches, []);
  assert.ok(disk.dirtyBytes > 0);
  await disk.flush();
  assert.equal(disk.dirtyBytes, 0);
  await disk.powerCut();
  const viaCache = new Uint8Array(4 * MiB);
  const onBase = new Uint8Array(4 * MiB);
  await disk.readv(0, [viaCache]);
  await base.readv(0, [onBase]);
  assert.ok(Buffer.from(viaCache).equals(onBase));
  assert.ok(onBase.some((x) => x !== 0));
});
