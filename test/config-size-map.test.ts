import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatSize, parseSize } from '../src/config/size.ts';
import { parseMapOption } from '../src/config/map.ts';
import { parseStoreSpec } from '../src/config/store-spec.ts';

test('parseSize: binary units, optional B / iB', () => {
  const cases: [string, number][] = [
    ['512', 512],
    ['4k', 4096],
    ['4K', 4096],
    ['4KiB', 4096],
    ['4kb', 4096],
    ['1M', 1048576],
    ['512M', 536870912],
    ['1G', 1073741824],
    ['10GiB', 10737418240],
    ['1T', 2 ** 40],
    ['1.5k', 1536],
    ['0', 0],
    [' 2g ', 2147483648],
    ['512B', 512],
  ];
  for (const [text, bytes] of cases) assert.equal(parseSize(text, 'test size'), bytes, text);
});

test('parseSize: errors name what was being sized', () => {
  for (const bad of ['', 'G', '1X', '-1', '1.3', '1GG', '512iB', 'ten']) {
    assert.throws(
      () => parseSize(bad, '--size'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'BLK_ERR_USAGE');
        assert.match(err.message, /^--size: /);
        return true;
      },
      bad,
    );
  }
  assert.throws(() => parseSize('1.3', 'x'), /not a whole number of bytes/);
  assert.throws(() => parseSize('9P', 'x'), /below 2\^53/);
});

test('formatSize', () => {
  assert.equal(formatSize(1 << 30), '1GiB');
  assert.equal(formatSize(1536), '1536B');
  assert.equal(formatSize(3 * 4096), '12KiB');
});

test('parseStoreSpec', () => {
  assert.deepEqual(parseStoreSpec('ram:1G'), { kind: 'ram', size: 1 << 30 });
  assert.deepEqual(parseStoreSpec('null:4k'), { kind: 'null', size: 4096 });
  assert.deepEqual(parseStoreSpec('file:/tmp/x.img'), { kind: 'file', path: '/tmp/x.img' });
  assert.deepEqual(parseStoreSpec('phy:/dev/loop0'), { kind: 'direct', path: '/dev/loop0' });
  assert.deepEqual(parseStoreSpec('direct:/dev/loop0'), { kind: 'direct', path: '/dev/loop0' });
  assert.deepEqual(parseStoreSpec('/dev/sdb'), { kind: 'path', path: '/dev/sdb' });
  assert.deepEqual(parseStoreSpec('./d.img'), { kind: 'path', path: './d.img' });
  assert.deepEqual(parseStoreSpec('volatile:ram:1M'), { kind: 'volatile', inner: { kind: 'ram', size: 1 << 20 } });
  assert.throws(() => parseStoreSpec('ram:'), /store spec 'ram:': ram: needs a size/);
  assert.throws(() => parseStoreSpec('file:'), /needs a path/);
  assert.throws(() => parseStoreSpec('nbd:host'), /unknown store type 'nbd:'/);
  assert.throws(() => parseStoreSpec('volatile:bogus:1'), /store spec 'volatile:bogus:1': .*unknown store type 'bogus:'/);
  assert.throws(() => parseStoreSpec(''), /empty/);
});

test('parseMapOption', () => {
  assert.deepEqual(parseMapOption('/dev/sdb=ram:1G'), { path: '/dev/sdb', spec: 'ram:1G' });
  assert.deepEqual(parseMapOption('/dev/sdb=file:/tmp/a=b.img'), { path: '/dev/sdb', spec: 'file:/tmp/a=b.img' });
  assert.throws(() => parseMapOption('/dev/sdb'), /--map '\/dev\/sdb': expected PATH=SPEC/);
  assert.throws(() => parseMapOption('sdb=ram:1G'), /must be absolute/);
  assert.throws(() => parseMapOption('/dev/sdb='), /missing store spec/);
  assert.throws(() => parseMapOption('/dev/sdb=ram:huge'), /--map '\/dev\/sdb=ram:huge': store spec 'ram:huge': invalid size/);
});
