// Discard, write-zeroes and block status of the host drivers (file.ts, direct.ts) on real kernels:
// regular files on tmpfs (/dev/shm) and ext4 (/tmp here), and loop devices over both, where
// BLKDISCARD must punch the backing file. Under CI=true a missing tool (gcc, losetup, root) fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { openFileDisk } from '../src/block/file.ts';
import type { FileDisk } from '../src/block/file.ts';
import { openDirectDisk } from '../src/block/direct.ts';
import type { BlockDevice, BlockExtent } from '../src/block/types.ts';
import { allocAlignedShared } from '../src/block/aligned-memory.ts';
import { hostBlockGeometry } from '../src/block/sysfs.ts';
import {
  BLKDISCARD,
  BLKZEROOUT,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  MAX_IN_FLIGHT,
  SEEK_DATA,
  SEEK_HOLE,
  fallocate,
  fsExtraProblem,
  seekDataOrHole,
  simulateFsExtraUnavailable,
} from '../src/internal/fs-extra-ffi.ts';
import { compileAndReadValues, gccMissing } from './helpers-c.ts';
import { ffiMissing, loopMissing, loopSetupFailed, stopIfMissing } from './helpers-tools.ts';
import type { Skippable } from './helpers-tools.ts';
import { fullStatus } from './helpers-block.ts';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1 << 20;

const FILESYSTEMS = [
  { label: 'tmpfs', dir: '/dev/shm' },
  { label: 'ext4-like (/tmp)', dir: '/tmp' },
] as const;

async function fsType(dir: string): Promise<string> {
  return (await run('stat', ['-f', '-c', '%T', dir])).stdout.trim();
}

async function withFile(dir: string, size: number, body: (file: string) => Promise<void>): Promise<void> {
  const tmp = await mkdtemp(path.join(dir, 'blk-space-'));
  const file = path.join(tmp, 'disk.img');
  try {
    await writeFile(file, '');
    await truncate(file, size);
    await body(file);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function withLoop(t: Skippable, dir: string, size: number, body: (dev: string, backing: string) => Promise<void>): Promise<void> {
  if (stopIfMissing(t, loopMissing())) return;
  await withFile(dir, size, async (backing) => {
    let dev: string;
    try {
      dev = (await run('losetup', ['--direct-io=on', '-f', '--show', backing])).stdout.trim();
    } catch (err) {
      stopIfMissing(t, loopSetupFailed(err));
      return;
    }
    try {
      await body(dev, backing);
    } finally {
      await run('losetup', ['-d', dev]).catch(() => undefined);
    }
  });
}

/** 512-byte units the file occupies. */
async function blocksOf(file: string): Promise<number> {
  return (await stat(file)).blocks;
}

function pattern(n: number, seed: number): Uint8Array {
  const b = allocAlignedShared(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + 1) & 0xff || 1;
  return b;
}

async function readBack(dev: BlockDevice, offset: number, n: number): Promise<Uint8Array> {
  const buf = allocAlignedShared(n);
  await dev.readv(offset, [buf]);
  return buf;
}

const allZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

test('fs-extra FFI: ioctl numbers and fallocate flags match <linux/fs.h>, <linux/falloc.h>, <unistd.h>', async (t) => {
  if (stopIfMissing(t, gccMissing())) return;
  const dir = await mkdtemp(path.join('/tmp', 'fs-extra-c-'));
  try {
    const source = path.join(dir, 'values.c');
    await writeFile(
      source,
      `#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
  printf("BLKDISCARD %lu\\nBLKZEROOUT %lu\\n", (unsigned long)BLKDISCARD, (unsigned long)BLKZEROOUT);
  printf("FALLOC_FL_KEEP_SIZE %d\\nFALLOC_FL_PUNCH_HOLE %d\\nFALLOC_FL_ZERO_RANGE %d\\n", FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE);
  printf("SEEK_DATA %d\\nSEEK_HOLE %d\\nO_PATH %d\\n", SEEK_DATA, SEEK_HOLE, O_PATH);
  return 0;
}
`,
    );
    const c = compileAndReadValues(source);
    assert.deepEqual(c, {
      BLKDISCARD,
      BLKZEROOUT,
      FALLOC_FL_KEEP_SIZE,
      FALLOC_FL_PUNCH_HOLE,
      FALLOC_FL_ZERO_RANGE,
      SEEK_DATA,
      SEEK_HOLE,
      O_PATH: 0o10000000,
    });
    assert.equal(BLKDISCARD, 0x1277);
    assert.equal(BLKZEROOUT, 0x127f);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('fs-extra FFI: errors are BlockErrors with the errno, naming the file and the range; ENXIO is -1', async (t) => {
  if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
  await withFile('/dev/shm', MiB, async (file) => {
    const fd = fs.openSync(file, 'r+');
    try {
      // tmpfs has no ZERO_RANGE
      await assert.rejects(
        fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 4096, 8192, 'file:x', 'write zeroes'),
        (err: Error & { code?: string; errno?: number }) => {
          assert.equal(err.code, 'BLK_ERR_UNSUPPORTED');
          assert.equal(err.errno, 95);
          assert.equal(err.message, 'file:x: write zeroes of 8192 bytes at offset 4096 failed: EOPNOTSUPP (fallocate(ZERO_RANGE|KEEP_SIZE))');
          return true;
        },
      );
      assert.equal(await seekDataOrHole(fd, 0, SEEK_DATA, 'file:x'), -1, 'a sparse file has no data: ENXIO');
      assert.equal(await seekDataOrHole(fd, 0, SEEK_HOLE, 'file:x'), 0);
    } finally {
      fs.closeSync(fd);
    }
    await assert.rejects(
      fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 512, 'file:y', 'discard'),
      (err: Error & { code?: string; errno?: number }) => {
        assert.equal(err.code, 'BLK_ERR_IO');
        assert.equal(err.errno, 9);
        assert.match(err.message, /^file:y: discard of 512 bytes at offset 0 failed: EBADF/);
        return true;
      },
    );
  });
});

test(`fs-extra FFI: more calls than the ${MAX_IN_FLIGHT} allowed at once queue and all complete`, async (t) => {
  if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
  await withFile('/dev/shm', 4 * MiB, async (file) => {
    await writeFile(file, Buffer.alloc(4 * MiB, 1));
    const fd = fs.openSync(file, 'r+');
    try {
      const calls = Array.from({ length: 1024 }, (_, i) => fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, i * 4096, 4096, 'q', 'discard'));
      await Promise.all(calls);
      assert.equal(await blocksOf(file), 0);
    } finally {
      fs.closeSync(fd);
    }
  });
});

for (const { label, dir } of FILESYSTEMS) {
  for (const driver of ['file', 'phy'] as const) {
    test(`${driver}: on a regular file on ${label}: discard punches a hole, writeZeroes zeroes, blockStatus agrees`, async (t) => {
      if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
      const type = await fsType(dir);
      await withFile(dir, 8 * MiB, async (file) => {
        const disk = (driver === 'file' ? await openFileDisk(file) : await openDirectDisk(file)) as FileDisk;
        try {
          assert.equal(disk.info.canDiscard, true, disk.discardProblem);
          assert.equal(disk.info.discardGranularity, 4096, 'the filesystem block');
          assert.equal(disk.info.discardZeroes, true);
          assert.equal(disk.info.canWriteZeroes, true);
          assert.ok(disk.blockStatus !== undefined);
          assert.deepEqual(await disk.blockStatus(0, 8 * MiB), [{ offset: 0, length: 8 * MiB, allocated: false }], 'a new sparse file is one hole');

          await disk.writev(0, [pattern(4 * MiB, 1)]);
          await disk.flush();
          const full = await blocksOf(file);
          assert.ok(full >= 8192, `4 MiB written: ${full} blocks`);
          assert.deepEqual(await fullStatus(disk, 8 * MiB), [
            { offset: 0, length: 4 * MiB, allocated: true },
            { offset: 4 * MiB, length: 4 * MiB, allocated: false },
          ]);

          await disk.discard(MiB, MiB);
          assert.equal(await blocksOf(file), full - 2048, 'stat shows 1 MiB fewer blocks');
          assert.ok(allZero(await readBack(disk, MiB, MiB)), 'the hole reads back as zeroes');
          const kept = await readBack(disk, 0, MiB);
          assert.deepEqual(kept, pattern(MiB, 1), 'data before the hole is intact');
          assert.deepEqual(await fullStatus(disk, 8 * MiB), [
            { offset: 0, length: MiB, allocated: true },
            { offset: MiB, length: MiB, allocated: false },
            { offset: 2 * MiB, length: 2 * MiB, allocated: true },
            { offset: 4 * MiB, length: 4 * MiB, allocated: false },
          ]);
          // a range that is not block-aligned inside is zeroed at its edges and still reads as zeroes
          await disk.discard(3 * MiB + 512, 8192);
          const around = await readBack(disk, 3 * MiB, 16 * KiB);
          const expect = pattern(4 * MiB, 1)
            .subarray(3 * MiB, 3 * MiB + 16 * KiB)
            .slice();
          expect.fill(0, 512, 512 + 8192);
          assert.deepEqual(around, expect);

          await disk.writeZeroes(2 * MiB, 256 * KiB);
          assert.equal(disk.zeroMethod, type === 'tmpfs' ? 'punch-hole' : 'zero-range');
          assert.ok(allZero(await readBack(disk, 2 * MiB, 256 * KiB)), 'writeZeroes reads back as zeroes');
          assert.deepEqual(await readBack(disk, 2 * MiB + 256 * KiB, 4096), pattern(4 * MiB, 1).subarray(2 * MiB + 256 * KiB, 2 * MiB + 260 * KiB));
          // The driver asks no more than it needs: a window inside one extent is one extent.
          assert.deepEqual(await disk.blockStatus(MiB + 4096, 8192), [{ offset: MiB + 4096, length: 8192, allocated: false }]);
          assert.deepEqual(await disk.blockStatus(8192, 4096), [{ offset: 8192, length: 4096, allocated: true }]);
        } finally {
          await disk.close();
        }
      });
    });
  }
}

test('file: blockStatus matches a model of random writes and discards (tmpfs and ext4)', async (t) => {
  if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
  for (const { dir } of FILESYSTEMS) {
    await withFile(dir, 4 * MiB, async (file) => {
      const disk = await openFileDisk(file);
      try {
        const units = (4 * MiB) / (64 * KiB);
        const model: boolean[] = new Array<boolean>(units).fill(false);
        let seed = 5;
        const random = (n: number): number => {
          seed = (seed * 1103515245 + 12345) >>> 0;
          return seed % n;
        };
        const chunk = pattern(64 * KiB, 3);
        for (let op = 0; op < 60; op++) {
          const u = random(units);
          const n = 1 + random(Math.min(4, units - u));
          if (random(3) === 0) {
            await disk.discard(u * 64 * KiB, n * 64 * KiB);
            for (let i = u; i < u + n; i++) model[i] = false;
          } else {
            await disk.writev(
              u * 64 * KiB,
              Array.from({ length: n }, () => chunk),
            );
            for (let i = u; i < u + n; i++) model[i] = true;
          }
        }
        const expected: BlockExtent[] = [];
        model.forEach((allocated, i) => {
          const last = expected[expected.length - 1];
          if (last !== undefined && last.allocated === allocated) expected[expected.length - 1] = { ...last, length: last.length + 64 * KiB };
          else expected.push({ offset: i * 64 * KiB, length: 64 * KiB, allocated });
        });
        assert.deepEqual(await fullStatus(disk, 4 * MiB), expected, dir);
        const all = await readBack(disk, 0, 4 * MiB);
        model.forEach((allocated, i) => {
          const part = all.subarray(i * 64 * KiB, (i + 1) * 64 * KiB);
          assert.ok(allocated ? Buffer.from(part).equals(chunk) : allZero(part), `${dir} unit ${i}`);
        });
      } finally {
        await disk.close();
      }
    });
  }
});

test('file: read-only disks offer no discard but still tell holes; without the FFI the old behaviour stays', async (t) => {
  if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
  await withFile('/dev/shm', MiB, async (file) => {
    await writeFile(file, Buffer.alloc(MiB / 2, 9), { flag: 'r+' });
    const ro = await openFileDisk(file, { readOnly: true });
    try {
      assert.equal(ro.info.canDiscard, false);
      assert.match(ro.discardProblem ?? '', /read-only/);
      assert.deepEqual(await ro.blockStatus!(0, MiB), [
        { offset: 0, length: MiB / 2, allocated: true },
        { offset: MiB / 2, length: MiB / 2, allocated: false },
      ]);
      await assert.rejects(ro.discard(0, 4096), { code: 'BLK_ERR_UNSUPPORTED', errno: 95 });
    } finally {
      await ro.close();
    }

    simulateFsExtraUnavailable('koffi missing (simulated)');
    try {
      for (const open of [openFileDisk, openDirectDisk]) {
        const disk = (await open(file)) as FileDisk;
        try {
          assert.equal(disk.info.canDiscard, false);
          assert.equal(disk.info.discardGranularity, 0);
          assert.equal(disk.blockStatus, undefined);
          assert.equal(disk.discardProblem, 'koffi missing (simulated)');
          await assert.rejects(disk.discard(0, 4096), (err: Error & { code?: string }) => {
            assert.equal(err.code, 'BLK_ERR_UNSUPPORTED');
            assert.match(err.message, /discard is not supported: koffi missing/);
            return true;
          });
          const before = await blocksOf(file);
          await disk.writeZeroes(0, 64 * KiB);
          assert.equal(disk.zeroMethod, 'write');
          assert.equal(await blocksOf(file), before, 'zeroes were written, nothing punched');
          assert.ok(allZero(await readBack(disk, 0, 64 * KiB)));
        } finally {
          await disk.close();
        }
      }
    } finally {
      simulateFsExtraUnavailable(undefined);
    }
  });
});

for (const { label, dir } of FILESYSTEMS) {
  test(`loop device over a file on ${label}: BLKDISCARD punches the backing file, BLKZEROOUT zeroes (file: and phy:)`, async (t) => {
    if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
    await withLoop(t, dir, 16 * MiB, async (dev, backing) => {
      const g = await hostBlockGeometry((await stat(dev)).rdev);
      assert.equal(g.loop, true);
      assert.ok(g.discardMaxBytes > 0, 'loop devices over files discard');
      assert.equal(g.discardGranularity, 4096);
      for (const driver of ['file', 'phy'] as const) {
        const disk = (driver === 'file' ? await openFileDisk(dev) : await openDirectDisk(dev)) as FileDisk;
        try {
          assert.equal(disk.info.canDiscard, true, disk.discardProblem);
          assert.equal(disk.info.discardGranularity, 4096, 'queue/discard_granularity');
          assert.equal(disk.info.discardZeroes, true, 'a loop device punches its backing file');
          assert.equal(disk.blockStatus, undefined, 'the kernel calls all of a block device data');
          assert.equal(disk.zeroMethod, 'blkzeroout');
          await disk.writev(0, [pattern(8 * MiB, 2)]);
          await disk.flush();
          const full = await blocksOf(backing);
          assert.ok(full >= 16384, `${driver}: backing file holds the data (${full})`);
          await disk.discard(2 * MiB, 2 * MiB);
          assert.equal(await blocksOf(backing), full - 4096, `${driver}: the backing file has a 2 MiB hole`);
          assert.ok(allZero(await readBack(disk, 2 * MiB, 2 * MiB)), `${driver}: the discarded range reads back as zeroes`);
          await disk.writeZeroes(5 * MiB, MiB);
          assert.ok(allZero(await readBack(disk, 5 * MiB, MiB)), `${driver}: BLKZEROOUT reads back as zeroes`);
          assert.deepEqual(await readBack(disk, 4 * MiB, MiB), pattern(8 * MiB, 2).subarray(4 * MiB, 5 * MiB));
          const raw = await readFile(backing);
          assert.ok(allZero(raw.subarray(2 * MiB, 4 * MiB)) && allZero(raw.subarray(5 * MiB, 6 * MiB)), `${driver}: and so does the backing file`);
          await assert.rejects(disk.discard(16 * MiB, 4096), (err: Error & { code?: string; errno?: number }) => {
            assert.equal(err.errno, 22);
            assert.match(err.message, new RegExp(`^${driver}:${dev}: discard of 4096 bytes at offset 16777216 failed: EINVAL \\(BLKDISCARD\\)$`));
            return true;
          });
        } finally {
          await disk.close();
        }
      }
    });
  });
}

test('loop device: the page cache and O_DIRECT agree after BLKDISCARD and BLKZEROOUT (the kernel invalidates)', async (t) => {
  if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
  await withLoop(t, '/dev/shm', 8 * MiB, async (dev) => {
    const cached = await openFileDisk(dev);
    const direct = await openDirectDisk(dev);
    try {
      const data = pattern(4 * MiB, 4);
      await direct.writev(0, [data]);
      // Fill the page cache with the data, then discard through the O_DIRECT descriptor.
      assert.deepEqual(await readBack(cached, 0, 4 * MiB), data);
      await direct.discard(0, MiB);
      assert.ok(allZero(await readBack(cached, 0, MiB)), 'cached pages of a discarded range are dropped');
      await direct.writeZeroes(MiB, MiB);
      assert.ok(allZero(await readBack(cached, MiB, MiB)), 'cached pages of a zeroed range are dropped');
      assert.deepEqual(await readBack(cached, 2 * MiB, MiB), data.subarray(2 * MiB, 3 * MiB));

      // A buffered write not yet written back, then a discard through the buffered descriptor: the
      // later operation wins, for both readers.
      await cached.writev(3 * MiB, [pattern(MiB, 5)]);
      await cached.discard(3 * MiB, MiB);
      assert.ok(allZero(await readBack(cached, 3 * MiB, MiB)));
      assert.ok(allZero(await readBack(direct, 3 * MiB, MiB)));
      await cached.flush();
      assert.ok(allZero(await readBack(direct, 3 * MiB, MiB)), 'write-back after the discard does not resurrect the data');

      // And a buffered write flushed, cached, then zeroed through O_DIRECT.
      await cached.writev(2 * MiB, [pattern(MiB, 6)]);
      await cached.flush();
      await direct.writeZeroes(2 * MiB, MiB);
      assert.ok(allZero(await readBack(cached, 2 * MiB, MiB)));
    } finally {
      await cached.close();
      await direct.close();
    }
  });
});
