// file: stores on tmpfs do their reads and writes on the calling thread (memory-fs.ts): the same
// bytes and the same errors as through libuv's pool, and only where the file really is in memory.
import { test } from 'node:test';
import { skipOnThisHost } from './helpers-tools.ts';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { openFileDisk } from '../src/block/file.ts';
import { isMemoryBacked } from '../src/block/memory-fs.ts';

const TMPFS_MAGIC = 0x01021994;

test('a file on tmpfs is served inline, bytes in and out exact, the end of the file an EIO', async (t) => {
  if (statfsSync('/dev/shm').type !== TMPFS_MAGIC) return skipOnThisHost(t, '/dev/shm is not tmpfs here');
  const dir = mkdtempSync('/dev/shm/blkback-memfs-');
  try {
    const path = join(dir, 'disk.img');
    writeFileSync(path, Buffer.alloc(1 << 20));
    const disk = await openFileDisk(path);
    try {
      assert.equal(disk.inline, true);
      const data = randomBytes(65536);
      await disk.writev(4096, [data.subarray(0, 1000), data.subarray(1000)]);
      assert.deepEqual(readFileSync(path).subarray(4096, 4096 + 65536), data);
      const back = [Buffer.alloc(30000), Buffer.alloc(35536)];
      await disk.readv(4096, back);
      assert.deepEqual(Buffer.concat(back), data);
      await assert.rejects(disk.readv((1 << 20) - 512, [Buffer.alloc(1024)]), /hit the end of the file/);
    } finally {
      await disk.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a file on a disk filesystem goes through the pool, not inline', async (t) => {
  const base = tmpdir();
  const type = statfsSync(base).type;
  if (type === TMPFS_MAGIC) return skipOnThisHost(t, `${base} is tmpfs here`);
  const dir = mkdtempSync(join(base, 'blkback-memfs-'));
  try {
    const path = join(dir, 'disk.img');
    writeFileSync(path, Buffer.alloc(65536));
    const disk = await openFileDisk(path);
    try {
      assert.equal(disk.inline, false);
    } finally {
      await disk.close();
    }
    assert.equal(isMemoryBacked(-1), false, 'an fd that cannot be looked at is not in memory');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
