import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { createVolatileCache } from '../src/block/volatile-cache.ts';
import { WRITE_FUA } from '../src/block/types.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { BlockError, Errno } from '../src/internal/errors.ts';
import { exerciseIntegrity } from './support/block-integrity.ts';
import { openFileDisk } from '../src/block/file.ts';
import { fsExtraProblem, simulateFsExtraUnavailable } from '../src/internal/fs-extra-ffi.ts';
import { ffiMissing, stopIfMissing } from './helpers-tools.ts';
import { mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';

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
  assert.ok(
    (await readBlock(base, 1024, 1024)).every((x) => x === 0),
    'nothing reached the base yet',
  );
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
  assert.ok(
    (await readBlock(base, 0)).every((x) => x === 1),
    'flushed data is on the base',
  );
  await disk.writev(512, [block(2)], WRITE_FUA);
  assert.ok(
    (await readBlock(base, 512)).every((x) => x === 2),
    'FUA data is on the base at once',
  );
  await disk.writev(1024, [block(3)]);
  await disk.writev(0, [block(4)]); // overwrite of flushed data, not flushed
  await disk.writev(512, [block(5)]); // overwrite of FUA data, not flushed
  assert.ok((await readBlock(disk, 0)).every((x) => x === 4));
  await disk.powerCut();
  assert.equal(disk.dirtyBytes, 0);
  assert.equal(disk.lostBytes, 3 * 512);
  assert.ok((await readBlock(disk, 0)).every((x) => x === 1));
  assert.ok((await readBlock(disk, 512)).every((x) => x === 2));
  assert.ok((await readBlock(disk, 1024)).every((x) => x === 0));
  // Reopened (a new cache over the same base), the device works as new.
  const reopened = createVolatileCache(base);
  await reopened.writev(1024, [block(6)]);
  await reopened.flush();
  assert.ok((await readBlock(base, 1024)).every((x) => x === 6));
});

test('volatile cache: after a power cut dropped writes, flushes fail (retries too) until those blocks are rewritten', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1)]);
  await disk.flush();
  await disk.writev(0, [block(2)]);
  await disk.writev(512, [block(3)]);
  await disk.writev(1024, [block(4)]);
  await disk.powerCut();
  assert.equal(disk.lostBytes, 3 * 512);
  await disk.writev(2048, [block(5)]);
  const dataLost = { code: 'BLK_ERR_DATA_LOST', errno: Errno.EIO };
  await assert.rejects(disk.flush(), dataLost);
  assert.ok(
    (await readBlock(base, 2048)).every((x) => x === 5),
    'the failing flush still wrote back what it covered',
  );
  await assert.rejects(disk.flush(), dataLost, 'a retried flush is not told the dropped writes are durable');
  // Rewriting some of the lost blocks is not enough; a write, a discard and a FUA write each replace one.
  await disk.writev(0, [block(6)]);
  await assert.rejects(disk.flush(), dataLost);
  assert.equal(disk.lostBytes, 2 * 512);
  await disk.discard(1024, 512);
  assert.equal(disk.lostBytes, 512);
  // A flush called while a block is lost fails even when the block is rewritten before it completes:
  // it covers the writes completed before it was called, the lost one among them.
  const covering = disk.flush();
  await disk.writev(512, [block(7)], WRITE_FUA);
  await assert.rejects(covering, dataLost);
  assert.equal(disk.lostBytes, 0);
  await disk.flush();
  assert.ok((await readBlock(base, 0)).every((x) => x === 6));
  assert.ok((await readBlock(base, 512)).every((x) => x === 7));

  // Another cut; a reopened device has nothing lost.
  await disk.writev(4096, [block(8)]);
  await disk.powerCut();
  await assert.rejects(disk.flush(), dataLost);
  const reopened = createVolatileCache(base);
  assert.equal(reopened.lostBytes, 0);
  await reopened.writev(4096, [block(9)]);
  await reopened.flush();
  assert.ok((await readBlock(base, 4096)).every((x) => x === 9));
});

test('volatile cache: a power cut that drops nothing leaves flushes working', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1)]);
  await disk.flush();
  await disk.powerCut();
  assert.equal(disk.lostBytes, 0);
  await disk.writev(512, [block(2)]);
  await disk.powerCut({ surviveFraction: 1 });
  assert.equal(disk.lostBytes, 0, 'every unflushed block reached the medium');
  assert.ok((await readBlock(base, 512)).every((x) => x === 2));
  await disk.flush();
});

/** A base device whose operations can be held or made to fail. */
function hookedBase(
  base: BlockDevice,
  hooks: { writev?: (flags: number, go: () => Promise<void>) => Promise<void>; flush?: (go: () => Promise<void>) => Promise<void> },
): BlockDevice {
  return {
    name: `hooked:${base.name}`,
    get info() {
      return base.info;
    },
    readv: (offset, iov) => base.readv(offset, iov),
    writev: (offset, iov, flags = 0) =>
      hooks.writev === undefined ? base.writev(offset, iov, flags) : hooks.writev(flags, () => base.writev(offset, iov, flags)),
    flush: () => (hooks.flush === undefined ? base.flush() : hooks.flush(() => base.flush())),
    discard: (offset, length) => base.discard(offset, length),
    writeZeroes: (offset, length) => base.writeZeroes(offset, length),
    close: () => base.close(),
  };
}

/** A gate: `entered` resolves when something waits at it; `open()` lets it through. */
function gate(): { wait<T>(go: () => Promise<T>): Promise<T>; entered: Promise<void>; open(): void } {
  let enter!: () => void;
  let release!: () => void;
  const entered = new Promise<void>((resolve) => (enter = resolve));
  const opened = new Promise<void>((resolve) => (release = resolve));
  return {
    entered,
    open: release,
    wait: (go) => {
      enter();
      return opened.then(go);
    },
  };
}

test('volatile cache: a cut while the base flushes fails the flush, but blocks already written back are not lost', async () => {
  const ram = createRamDisk(MiB);
  const baseFlush = gate();
  let held = false;
  const base = hookedBase(ram, { flush: (go) => (held ? go() : ((held = true), baseFlush.wait(go))) });
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1)]);
  await disk.writev(4096, [block(2)]);
  const flushing = disk.flush();
  await baseFlush.entered; // the write-back is done; the base's own flush is under way
  await disk.writev(8192, [block(3)]); // after the flush was called: not covered, lost in the cut
  const cut = disk.powerCut();
  baseFlush.open();
  await assert.rejects(flushing, { code: 'BLK_ERR_POWER_CUT' }, 'the flush never completed: the guest must not hear OKAY');
  await cut;
  assert.equal(disk.lostBytes, 512, 'only the block that was not yet on the base is lost');
  assert.ok((await readBlock(ram, 4096)).every((x) => x === 2));
  await disk.writev(8192, [block(4)]);
  await disk.flush();
});

for (const fuaFails of [false, true]) {
  test(`volatile cache: a flush waits for a FUA write that replaced a block it was writing back${fuaFails ? ', and fails with it' : ''}`, async () => {
    const ram = createRamDisk(MiB);
    const writeBack = gate();
    const fuaWrite = gate();
    let held = false;
    const base = hookedBase(ram, {
      writev: (flags, go) => {
        if ((flags & WRITE_FUA) !== 0) {
          return fuaWrite.wait(() => (fuaFails ? Promise.reject(new BlockError('BLK_ERR_IO', 'simulated media error', { errno: Errno.EIO })) : go()));
        }
        if (held) return go();
        held = true;
        return writeBack.wait(go);
      },
    });
    const disk = createVolatileCache(base);
    await disk.writev(0, [block(1)]);
    await disk.writev(4096, [block(2)]); // a second run: written back after block 0
    const flushing = disk.flush();
    let answered = false;
    flushing.then(
      () => (answered = true),
      () => (answered = true),
    );
    await writeBack.entered; // writing back block 0; block 8 still to come
    const fua = disk.writev(4096, [block(3)], WRITE_FUA); // replaces block 8 in the flush's snapshot
    writeBack.open();
    await fuaWrite.entered; // the write-back is over: the FUA write is next in the queue
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(answered, false, 'the flush waits while what replaced write 2 is not on the medium');
    fuaWrite.open();
    if (fuaFails) {
      await assert.rejects(fua, { code: 'BLK_ERR_IO' });
      // Write 2 was acknowledged before the flush, and neither it nor what replaced it is on the medium.
      await assert.rejects(flushing, { code: 'BLK_ERR_IO' });
      assert.ok((await readBlock(ram, 4096)).every((x) => x === 0));
    } else {
      await flushing;
      assert.ok((await readBlock(ram, 4096)).every((x) => x === 3));
      await fua;
    }
  });
}

test('volatile cache: a FUA write supersedes an older cached copy of the same block', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1, 1024)]);
  await disk.writev(512, [block(2)], WRITE_FUA);
  assert.ok((await readBlock(disk, 512)).every((x) => x === 2));
  await disk.flush();
  assert.ok((await readBlock(base, 0)).every((x) => x === 1));
  assert.ok(
    (await readBlock(base, 512)).every((x) => x === 2),
    'the flush did not write the stale cached block',
  );
});

test('volatile cache: writes issued after flush() started are not covered by it', async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  await disk.writev(0, [block(1)]);
  const flushing = disk.flush();
  await disk.writev(512, [block(2)]);
  await disk.writev(0, [block(3)]);
  assert.ok(
    (await readBlock(disk, 0)).every((x) => x === 3),
    'reads see the newest data during a flush',
  );
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
        assert.ok(
          b.every((x) => x === i + 1),
          'a surviving block is whole',
        );
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
  assert.equal(disk.lostBytes, 4 * 512, 'none of it had reached the base');
  await assert.rejects(disk.flush(), { code: 'BLK_ERR_DATA_LOST' }, 'and the retry fails too');
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

test("volatile cache: blockStatus is the base's, with blocks held in the cache counted as data", async () => {
  const base = createRamDisk(MiB);
  const disk = createVolatileCache(base);
  assert.ok(disk.blockStatus !== undefined);
  await disk.writev(4096, [block(1, 1024)]);
  await disk.writev(8192, [block(2)], WRITE_FUA);
  assert.deepEqual(await base.blockStatus!(0, 16384), [
    { offset: 0, length: 8192, allocated: false },
    { offset: 8192, length: 512, allocated: true },
    { offset: 8704, length: 16384 - 8704, allocated: false },
  ]);
  const expected = [
    { offset: 0, length: 4096, allocated: false },
    { offset: 4096, length: 1024, allocated: true },
    { offset: 5120, length: 8192 - 5120, allocated: false },
    { offset: 8192, length: 512, allocated: true },
    { offset: 8704, length: 16384 - 8704, allocated: false },
  ];
  assert.deepEqual(await disk.blockStatus(0, 16384), expected, 'cached blocks are data');
  const flushing = disk.flush();
  assert.deepEqual(await disk.blockStatus(0, 16384), expected, 'and stay data while being written back');
  await flushing;
  assert.deepEqual(await disk.blockStatus(0, 16384), expected, 'and on the base after the flush');
  await disk.discard(4096, 512);
  assert.deepEqual((await disk.blockStatus(4096, 1024))[0], { offset: 4096, length: 512, allocated: false });
  // A base that cannot tell: neither can the cache.
  const { blockStatus: _drop, ...blind } = createRamDisk(MiB);
  assert.equal(createVolatileCache(blind as typeof base).blockStatus, undefined);
});

async function withShmFile(size: number, body: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join('/dev/shm', 'blk-vc-'));
  const file = path.join(dir, 'disk.img');
  try {
    await writeFile(file, '');
    await truncate(file, size);
    await body(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('volatile cache over a file: a power cut neither resurrects data a discard removed nor loses the discard', async (t) => {
  if (stopIfMissing(t, ffiMissing('fallocate/lseek', fsExtraProblem()))) return;
  await withShmFile(MiB, async (file) => {
    const base = await openFileDisk(file);
    const disk = createVolatileCache(base);
    try {
      assert.equal(disk.info.canDiscard, true);
      // Flushed A, then unflushed B over it, then a discard: even if every unflushed block survives
      // the power cut, B must not come back over the discard.
      await disk.writev(0, [block(0xa, 4096)]);
      await disk.flush();
      await disk.writev(0, [block(0xb, 4096)]);
      await disk.discard(0, 4096);
      assert.ok((await readBlock(disk, 0, 4096)).every((x) => x === 0));
      assert.equal((await stat(file)).blocks, 0, 'the hole is in the file');
      await disk.powerCut({ surviveFraction: 1 });
      assert.ok(
        (await readBlock(disk, 0, 4096)).every((x) => x === 0),
        'B stayed discarded',
      );

      // A write after the discard, lost in the cut: the discard's zeroes remain (not A).
      await disk.writev(8192, [block(0xa, 4096)]);
      await disk.flush();
      await disk.discard(8192, 4096);
      await disk.writev(8192, [block(0xc, 4096)]);
      await disk.powerCut();
      assert.ok(
        (await readBlock(disk, 8192, 4096)).every((x) => x === 0),
        'the discard survived, the later write did not',
      );

      // A discard issued while a flush of the same block is being written back lands after it
      // (on the device reopened after that cut, which lost the write of 0xc).
      const again = createVolatileCache(base);
      await again.writev(16384, [block(0xd, 4096)]);
      const flushing = again.flush();
      const discarding = again.discard(16384, 4096);
      await Promise.all([flushing, discarding]);
      await again.powerCut({ surviveFraction: 1 });
      assert.ok((await readBlock(base, 16384, 4096)).every((x) => x === 0));
      assert.deepEqual((await again.blockStatus!(16384, 4096))[0], { offset: 16384, length: 4096, allocated: false });
    } finally {
      await disk.close();
    }
  });
});

test('volatile cache: a discard the base cannot do is refused before it touches the cached writes', async () => {
  simulateFsExtraUnavailable('simulated');
  try {
    await withShmFile(MiB, async (file) => {
      const base = await openFileDisk(file);
      const disk = createVolatileCache(base);
      try {
        assert.equal(disk.info.canDiscard, false);
        await disk.writev(0, [block(5)]);
        await assert.rejects(disk.discard(0, 512), { code: 'BLK_ERR_UNSUPPORTED' });
        assert.ok(
          (await readBlock(disk, 0)).every((x) => x === 5),
          'the cached write is still there',
        );
        await disk.flush();
        assert.ok((await readBlock(base, 0)).every((x) => x === 5));
      } finally {
        await disk.close();
      }
    });
  } finally {
    simulateFsExtraUnavailable(undefined);
  }
});
