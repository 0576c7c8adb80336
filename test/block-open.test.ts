import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openBlockDevice } from '../src/stores/open.ts';
import { createNullDisk } from '../src/block/null.ts';

const MiB = 1 << 20;

test('null disk: reads zeroes, drops writes', async () => {
  const disk = createNullDisk(MiB);
  await disk.writev(0, [new Uint8Array(512).fill(1)]);
  const buf = new Uint8Array(1024).fill(0xff);
  await disk.readv(0, [buf.subarray(0, 100), buf.subarray(100)]);
  assert.ok(buf.every((x) => x === 0));
  assert.equal(disk.info.size, MiB);
  await disk.resize?.(2 * MiB);
  assert.equal(disk.info.size, 2 * MiB);
});

test('openBlockDevice: ram:, null:, volatile:', async () => {
  const ram = await openBlockDevice('ram:1G');
  assert.equal(ram.info.size, 1 << 30);
  assert.equal(ram.name, 'ram:1G');
  assert.equal(ram.info.volatileCache, false);
  const small = await openBlockDevice('ram:512M', { readOnly: true });
  assert.equal(small.info.size, 512 * MiB);
  assert.equal(small.info.readOnly, true);
  const nul = await openBlockDevice('null:4k');
  assert.equal(nul.info.size, 4096);
  const vol = await openBlockDevice('volatile:ram:1M');
  assert.equal(vol.info.volatileCache, true);
  assert.equal(vol.info.size, MiB);
  assert.ok('powerCut' in vol);
});

test('openBlockDevice: file:, bare paths, and errors naming the spec', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'blk-open-'));
  try {
    const file = path.join(dir, 'd.img');
    await writeFile(file, new Uint8Array(64 * 1024));
    const f = await openBlockDevice(`file:${file}`);
    assert.equal(f.info.size, 64 * 1024);
    assert.equal(f.info.bufferAlignment, 1);
    await f.close();
    const bare = await openBlockDevice(file);
    assert.equal(bare.info.bufferAlignment, 1, 'a bare regular file is opened buffered');
    assert.equal(bare.name, file);
    await bare.close();
    await assert.rejects(openBlockDevice(dir), /store spec '.*': .* is neither a block device nor a regular file/);
    await assert.rejects(openBlockDevice(`${dir}/missing`), /store spec '.*missing': cannot use .*ENOENT/);
    await assert.rejects(openBlockDevice(`file:${dir}/missing`), /file:.*missing: cannot open .*ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await assert.rejects(openBlockDevice('disk:/x'), /store spec 'disk:\/x': unknown store type 'disk:'/);
  await assert.rejects(openBlockDevice('ram:lots'), /store spec 'ram:lots': invalid size 'lots'/);
  await assert.rejects(openBlockDevice('ram:1000'), /multiple of 512/);
  await assert.rejects(openBlockDevice('relative.img'), /write \.\/relative\.img for a relative path/);
});
