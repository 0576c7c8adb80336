// QEMU's rbd: syntax, parsed without a cluster: the fields, escapes, and the errors users get.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStoreSpec } from '../src/config/store-spec.ts';
import { checkStoreSpec } from '../src/stores/path-policy.ts';
import { rbdImageName } from '../src/config/rbd-spec.ts';
import type { RbdStoreSpec } from '../src/config/rbd-spec.ts';

const rbd = (spec: string): RbdStoreSpec => {
  const s = parseStoreSpec(spec);
  assert.equal(s.kind, 'rbd');
  return s as RbdStoreSpec;
};

test('rbd:POOL/IMAGE with id, conf and Ceph options, in the order QEMU takes them', () => {
  const s = rbd('rbd:vms/disk0:id=xen:conf=/etc/ceph/alt.conf:mon_host=10.0.0.1\\:6789:client_mount_timeout=3');
  assert.equal(s.pool, 'vms');
  assert.equal(s.namespace, '');
  assert.equal(s.image, 'disk0');
  assert.equal(s.snapshot, undefined);
  assert.equal(s.id, 'xen');
  assert.equal(s.conf, '/etc/ceph/alt.conf');
  assert.deepEqual(s.options, [
    ['mon_host', '10.0.0.1:6789'],
    ['client_mount_timeout', '3'],
  ]);
});

test('a snapshot, a namespace, and escaped separators inside names', () => {
  const s = rbd('rbd:vms/tenant1/disk\\@1\\:a@before-upgrade');
  assert.deepEqual([s.pool, s.namespace, s.image, s.snapshot], ['vms', 'tenant1', 'disk@1:a', 'before-upgrade']);
  assert.equal(rbdImageName(s), 'vms/tenant1/disk@1:a@before-upgrade');
  assert.equal(rbd('rbd:p/a\\/b').image, 'a/b');
  assert.equal(rbd('rbd:p/img').id, undefined);
});

test('malformed specs are refused with a message naming the spec and what is wrong', () => {
  const cases: [string, RegExp][] = [
    ['rbd:', /no pool/],
    ['rbd:pool', /no pool/],
    ['rbd:/img', /empty pool/],
    ['rbd:pool/', /empty image/],
    ['rbd:a/b/c/d', /too many '\/'/],
    ['rbd:p/img@', /empty snapshot/],
    ['rbd:p/img@s1@s2', /more than one '@'|snapshot name comes last/],
    ['rbd:p/img@s/x', /snapshot name comes last/],
    ['rbd:p/img:id=client.admin', /without "client\."/],
    ['rbd:p/img:key=AQBsecret==', /keyring=PATH/],
    ['rbd:p/img:nonsense=1', /unknown option 'nonsense'/],
    ['rbd:p/img:conf', /not KEY=VALUE/],
    ['rbd:p/img:conf=', /conf= needs a value/],
    ['rbd:p/img\\', /trailing backslash/],
  ];
  for (const [spec, why] of cases) {
    assert.throws(
      () => parseStoreSpec(spec),
      (err: Error) => err.message.includes(`'${spec}'`) && why.test(err.message),
      spec,
    );
  }
});

test('under a path policy, the conf and keyring files an rbd: spec names must pass it like any file we read for others', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rbd-policy-'));
  try {
    const conf = join(dir, 'ceph.conf');
    writeFileSync(conf, '[global]\n');
    assert.deepEqual(await checkStoreSpec('rbd:p/img', { allowPaths: [] }), { kind: 'remote' }, 'no file named: nothing to check');
    await assert.rejects(checkStoreSpec(`rbd:p/img:conf=${conf}`, { allowPaths: [] }), /no --allow-path/);
    await assert.rejects(checkStoreSpec(`rbd:p/img:keyring=${conf}`, { allowPaths: ['/nonexistent-dir'] }), /not under an --allow-path|no --allow-path/);
    await assert.rejects(checkStoreSpec('rbd:p/img:conf=/dev/null', { allowPaths: [dir] }), /character device/);
    assert.deepEqual(await checkStoreSpec(`rbd:p/img:conf=${conf}:keyring=${conf}`, { allowPaths: [dir] }), { kind: 'remote' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
