import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openFileDisk } from '../src/block/file.ts';
import { WRITE_FUA } from '../src/block/types.ts';
import { exerciseIntegrity } from './support/block-integrity.ts';

const MiB = 1 << 20;

async function withTempFile(size: number, body: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'blk-file-'));
  const file = path.join(dir, 'disk.img');
  try {
    await writeFile(file, '');
    await truncate(file, size);
    await body(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('file: random vectored I/O (2 at a time) reads back what was written', async () => {
  await withTempFile(16 * MiB, async (file) => {
    const disk = await openFileDisk(file);
    try {
      assert.equal(disk.info.size, 16 * MiB);
      const report = await exerciseIntegrity(disk, { seed: 11, ops: 400, maxBlocks: 1024, parallel: 2 });
      assert.deepEqual(report.mismatches, []);
      assert.ok(report.vectoredWrites > 20, JSON.stringify(report));
    } finally {
      await disk.close();
    }
  });
});

test('file: writes reach the file itself; FUA and flush resolve', async () => {
  await withTempFile(MiB, async (file) => {
    const disk = await openFileDisk(file);
    const a = new Uint8Array(1024).fill(0x11);
    const b = new Uint8Array(512).fill(0x22);
    await disk.writev(4096, [a, b], WRITE_FUA);
    await disk.flush();
    await disk.close();
    const bytes = await readFile(file);
    assert.ok(bytes.subarray(4096, 5120).every((x) => x === 0x11));
    assert.ok(bytes.subarray(5120, 5632).every((x) => x === 0x22));
    assert.equal(bytes[5632], 0);
  });
});

test('file: info, writeZeroes, discard, resize, odd-sized file', async () => {
  await withTempFile(MiB + 100, async (file) => {
    const disk = await openFileDisk(file);
    try {
      assert.equal(disk.info.size, MiB, 'the partial block at the end is not addressable');
      assert.equal(disk.info.volatileCache, true);
      // fallocate(PUNCH_HOLE) works on the filesystems tests run on (tmpfs, ext4); see block-space.test.ts
      assert.equal(disk.info.canDiscard, true, disk.discardProblem);
      assert.equal(disk.info.readOnly, false);
      await disk.writev(0, [new Uint8Array((3 * MiB) / 4).fill(5)]);
      await disk.writeZeroes(512, MiB / 2);
      const buf = new Uint8Array((3 * MiB) / 4);
      await disk.readv(0, [buf]);
      assert.ok(buf.subarray(0, 512).every((x) => x === 5));
      assert.ok(buf.subarray(512, 512 + MiB / 2).every((x) => x === 0));
      assert.ok(buf.subarray(512 + MiB / 2).every((x) => x === 5));
      await disk.discard(0, 512);
      const first = new Uint8Array(1024);
      await disk.readv(0, [first]);
      assert.ok(first.subarray(0, 512).every((x) => x === 0) && first.subarray(512).every((x) => x === 0), 'discarded and zeroed');
      assert.ok(disk.resize !== undefined);
      await disk.resize(2 * MiB);
      assert.equal(disk.info.size, 2 * MiB);
      assert.equal((await stat(file)).size, 2 * MiB);
    } finally {
      await disk.close();
    }
  });
});

test('file: read-only open and a missing file', async () => {
  await withTempFile(MiB, async (file) => {
    const disk = await openFileDisk(file, { readOnly: true });
    assert.equal(disk.info.readOnly, true);
    assert.equal(disk.resize, undefined);
    await assert.rejects(disk.writev(0, [new Uint8Array(512)]), /EBADF/);
    await disk.close();
  });
  await assert.rejects(openFileDisk('/nonexistent/disk.img'), (err: Error) => {
    assert.equal((err as { code?: string }).code, 'BLK_ERR_USAGE');
    assert.match(err.message, /file:\/nonexistent\/disk\.img: cannot open \/nonexistent\/disk\.img: ENOENT/);
    return true;
  });
});

test('file: a read past the end of a file that shrank underneath is an EIO BlockError', async () => {
  await withTempFile(MiB, async (file) => {
    const disk = await openFileDisk(file);
    try {
      await truncate(file, 4096);
      await assert.rejects(disk.readv(0, [new Uint8Array(8192)]), (err: Error & { errno?: number; code?: string }) => {
        assert.equal(err.code, 'BLK_ERR_IO');
        assert.equal(err.errno, 5);
        assert.match(err.message, /end of the file/);
        return true;
      });
    } finally {
      await disk.close();
    }
  });
});

test('file: a vector longer than IOV_MAX (1024) is transferred whole', async () => {
  await withTempFile(2 * MiB, async (file) => {
    const disk = await openFileDisk(file);
    try {
      const iov = Array.from({ length: 1500 }, (_, i) => new Uint8Array(512).fill(i & 0xff));
      await disk.writev(4096, iov);
      const back = Array.from({ length: 1500 }, () => new Uint8Array(512));
      await disk.readv(4096, back);
      back.forEach((b, i) =>
        assert.ok(
          b.every((x) => x === (i & 0xff)),
          `buffer ${i}`,
        ),
      );
    } finally {
      await disk.close();
    }
  });
});
