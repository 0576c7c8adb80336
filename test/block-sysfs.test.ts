import { test } from 'node:test';
import { stopIfMissing } from './helpers-tools.ts';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { hostBlockGeometry, splitDevT } from '../src/block/sysfs.ts';

test('splitDevT follows glibc gnu_dev_major/minor', () => {
  assert.deepEqual(splitDevT(0x0801), { major: 8, minor: 1 }); // sda1
  assert.deepEqual(splitDevT(0x10300), { major: 259, minor: 0 }); // nvme0n1 (major > 255)
  // minor 256 is stored in bits 20..31; major 4096 in bits 32..43.
  assert.deepEqual(splitDevT((0x100n << 12n) | (0x7n << 8n)), { major: 7, minor: 256 });
  assert.deepEqual(splitDevT(1n << 44n), { major: 4096, minor: 0 });
});

test('hostBlockGeometry of /dev/loop0 matches sysfs (512-byte units)', async (t) => {
  let st;
  try {
    st = await stat('/dev/loop0');
  } catch {
    stopIfMissing(t, { what: '/dev/loop0', install: 'modprobe loop' });
    return;
  }
  const g = await hostBlockGeometry(st.rdev);
  assert.equal(g.logicalBlockSize >= 512, true);
  assert.equal(g.size % g.logicalBlockSize, 0);
  assert.match(g.sysfsDir, /loop0$/);
});
