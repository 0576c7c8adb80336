// Mutual CHAP from our initiator (iscsi://...?secret-file=A&mutual-secret-file=B) against our target
// (--chap-file / --mutual-chap-file): the initiator challenges the target and checks its CHAP_N and
// CHAP_R. A target that proves the wrong secret or name, or does not do mutual CHAP, fails the login
// with one line naming mutual CHAP; a target secret equal to ours is refused before connecting
// (RFC 7143 §12.1.3). No message carries a secret.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startIscsiTarget } from '../src/iscsi-target/run.ts';
import type { RunningIscsiTarget, StartIscsiTargetOptions } from '../src/iscsi-target/run.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { parseChapSecretsFile } from '../src/iscsi/chap.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import { checkStoreSpec, openStoreUnderPolicy } from '../src/stores/path-policy.ts';
import { parseStoreSpec } from '../src/config/store-spec.ts';
import type { IscsiBlockDevice } from '../src/iscsi-initiator/device.ts';
import { writeReadBack } from './iscsi-initiator-helpers.ts';

const TARGET = 'iqn.2026-12.org.blkback:mutual-test';
const MiB = 1 << 20;
const ALICE = 'alice alice-secret-0123';
const TARGET_ID = 'target-id target-secret-4567';
/** Every secret any file here holds: none may appear in a message. */
const SECRETS = /alice-secret|target-secret|wrong-secret|other-secret/;

async function withTarget(chap: StartIscsiTargetOptions['chap'], fn: (t: RunningIscsiTarget, store: BlockDevice, dir: string) => Promise<void>): Promise<void> {
  const store = createRamDisk(8 * MiB, { name: 'ram:8M' });
  const t = await startIscsiTarget({
    portal: { host: '127.0.0.1', port: 0 },
    targetName: TARGET,
    luns: [{ lun: 0, spec: 'test' }],
    allow: 'ALL',
    allowPaths: [],
    openStore: async () => store,
    ...(chap === undefined ? {} : { chap }),
  });
  const dir = mkdtempSync(join(tmpdir(), 'blkback-iscsi-mutual-'));
  try {
    await fn(t, store, dir);
  } finally {
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const mutualTarget = { initiators: parseChapSecretsFile(`${ALICE}\n`, 'chap'), target: parseChapSecretsFile(`${TARGET_ID}\n`, 'mutual', true) };

function file(dir: string, name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, `${text}\n`);
  return p;
}

const url = (port: number, secretFile: string, mutualFile?: string): string =>
  `iscsi://127.0.0.1:${port}/${TARGET}/0?secret-file=${secretFile}${mutualFile === undefined ? '' : `&mutual-secret-file=${mutualFile}`}`;

async function open(spec: string): Promise<IscsiBlockDevice> {
  return (await openBlockDevice(spec)) as IscsiBlockDevice;
}

/** The login fails with one line matching `why`, carrying no secret. */
function oneLine(why: RegExp) {
  return (e: Error) => {
    assert.match(e.message, why);
    assert.doesNotMatch(e.message, SECRETS);
    assert.doesNotMatch(e.message, /\n/);
    return true;
  };
}

test('store spec: mutual-secret-file= parses (and stays out of specs without it)', () => {
  const s = parseStoreSpec('iscsi://alice@h/iqn.2026-12.org.x:d/0?secret-file=/etc/a&mutual-secret-file=/etc/b%20c');
  assert.equal(s.kind === 'iscsi' && s.mutualSecretFile, '/etc/b c');
  const plain = parseStoreSpec('iscsi://h/iqn.2026-12.org.x:d/0?secret-file=/etc/a');
  assert.equal(plain.kind === 'iscsi' && 'mutualSecretFile' in plain, false);
  assert.throws(() => parseStoreSpec('iscsi://h/iqn.x/0?mutual-secret-file='), /mutual-secret-file= needs a path/);
});

test('mutual CHAP with our target: the target proves its secret, the login succeeds and I/O lands', async () => {
  await withTarget(mutualTarget, async (t, store, dir) => {
    const dev = await open(url(t.portal.port, file(dir, 'own', ALICE), file(dir, 'mutual', TARGET_ID)));
    try {
      assert.equal(dev.parameters!.authMethod, 'CHAP');
      await writeReadBack(dev, 64 * 1024, store);
    } finally {
      await dev.close();
    }
  });
});

test('mutual CHAP: a target proving another secret, or under another name, fails the login naming mutual CHAP', async () => {
  await withTarget(mutualTarget, async (t, _store, dir) => {
    const own = file(dir, 'own', ALICE);
    await assert.rejects(
      open(url(t.portal.port, own, file(dir, 'wrong', 'target-id wrong-secret-98765'))),
      oneLine(/login failed: mutual CHAP: wrong CHAP response from the target/),
    );
    await assert.rejects(
      open(url(t.portal.port, own, file(dir, 'name', 'someone-else target-secret-4567'))),
      oneLine(/login failed: mutual CHAP: the target answered as "target-id", expected "someone-else"/),
    );
  });
});

test('mutual CHAP asked of a target that has no secret of its own: a clear login failure', async () => {
  await withTarget({ initiators: parseChapSecretsFile(`${ALICE}\n`, 'chap') }, async (t, _store, dir) => {
    await assert.rejects(
      open(url(t.portal.port, file(dir, 'own', ALICE), file(dir, 'mutual', TARGET_ID))),
      oneLine(/login failed: authentication failed \(wrong CHAP user or secret, or the target does not do mutual CHAP/),
    );
    // the same target, one-way CHAP: fine (the failure above was the mutual part)
    const dev = await open(url(t.portal.port, file(dir, 'own2', ALICE)));
    await dev.close();
  });
});

test("the target's secret equal to ours is refused before connecting (RFC 7143 §12.1.3); malformed mutual files are refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-iscsi-mutual-'));
  try {
    const own = file(dir, 'own', ALICE);
    // port 1: nothing listens, so a connection attempt would say ECONNREFUSED instead
    await assert.rejects(open(url(1, own, file(dir, 'same', 'target-id alice-secret-0123'))), (e: Error & { errno: number }) => {
      oneLine(/the target's secret in .* equals CHAP user alice's \(RFC 7143 §12\.1\.3/)(e);
      assert.equal(e.errno, 22);
      return true;
    });
    await assert.rejects(
      open(url(1, own, file(dir, 'two', 'target-id target-secret-4567\nother other-secret-45678'))),
      oneLine(/more than one "USERNAME SECRET" line/),
    );
    await assert.rejects(open(url(1, own, file(dir, 'short', 'target-id short'))), oneLine(/secret shorter than 12 bytes/));
    await assert.rejects(open(url(1, own, join(dir, 'absent'))), oneLine(/cannot read secret file .*absent: ENOENT/));
    await assert.rejects(
      open(`iscsi://127.0.0.1:1/${TARGET}/0?mutual-secret-file=${file(dir, 'm', TARGET_ID)}`),
      oneLine(/mutual-secret-file= needs secret-file= too/),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('under a path policy the mutual secret file must lie in an allowed directory too', async () => {
  await withTarget(mutualTarget, async (t, _store, dir) => {
    const outside = mkdtempSync(join(tmpdir(), 'blkback-iscsi-mutual-outside-'));
    try {
      const own = file(dir, 'own', ALICE);
      const policy = { allowPaths: [dir] };
      const spec = url(t.portal.port, own, file(outside, 'mutual', TARGET_ID));
      await assert.rejects(checkStoreSpec(spec, policy), /--allow-path/);
      await assert.rejects(openStoreUnderPolicy(spec, policy), /--allow-path/);
      const dev = await openStoreUnderPolicy(url(t.portal.port, own, file(dir, 'mutual', TARGET_ID)), policy);
      await dev.close();
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});
