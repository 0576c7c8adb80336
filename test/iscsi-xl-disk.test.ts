// An iSCSI LUN named where users name disks: `blkback fio --disk 'vdev=xvda,...,target=iscsi://...'`
// (in a guest and bare) and an xl config's disk line in the form real xl also takes
// (backendtype=phy, script=/bin/true, target=iscsi://...) under `blkback run`. Each runs the CLI
// against our own iSCSI target on loopback; the bytes the guest wrote must be in the target's store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { startIscsiTarget } from '../src/iscsi-target/run.ts';
import type { RunningIscsiTarget } from '../src/iscsi-target/run.ts';

const TARGET = 'iqn.2026-12.org.blkback:xl-disk-test';
const MiB = 1 << 20;
const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

async function withTarget(fn: (t: RunningIscsiTarget, store: BlockDevice) => Promise<void>): Promise<void> {
  const store = createRamDisk(32 * MiB, { name: 'ram:32M' });
  const t = await startIscsiTarget({
    portal: { host: '127.0.0.1', port: 0 },
    targetName: TARGET,
    luns: [{ lun: 0, spec: 'test', thin: true }],
    allow: 'ALL',
    allowPaths: [],
    openStore: async () => store,
  });
  try {
    await fn(t, store);
  } finally {
    await t.close();
    await store.close();
  }
}

const lunUrl = (t: RunningIscsiTarget): string => `iscsi://127.0.0.1:${t.portal.port}/${TARGET}/0`;

function cli(args: string[]): Promise<{ code: number | null; text: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (b: Buffer) => (text += b));
    child.stderr.on('data', (b: Buffer) => (text += b));
    child.on('close', (code) => resolve({ code, text }));
  });
}

/** A job that writes the first `size` bytes with a crc32c verify header per block, then reads them back. */
function verifyJob(dir: string, filename: string, size: string): string {
  const job = join(dir, 'verify.fio');
  writeFileSync(job, `[v]\nfilename=${filename}\nrw=randwrite\nbs=16k\niodepth=16\nsize=${size}\nverify=crc32c\ndo_verify=1\nverify_fatal=1\n`);
  return job;
}

/** fio's verify read every block back; the store must hold them too: every 16k block written (nonzero). */
async function assertWritten(store: BlockDevice, bytes: number): Promise<void> {
  const head = new Uint8Array(bytes);
  await store.readv(0, [head]);
  for (let at = 0; at < bytes; at += 16 * 1024) {
    assert.ok(
      head.subarray(at, at + 16 * 1024).some((b) => b !== 0),
      `block at ${at} reached the target's store`,
    );
  }
}

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'iscsi-xl-disk-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("fio --disk 'vdev=xvda,access=rw,target=iscsi://...': a guest writes through blkback and our initiator, fio verifies, the bytes are in the store", async () => {
  await inTempDir(async (dir) => {
    await withTarget(async (t, store) => {
      const out = await cli(['fio', '--disk', `vdev=xvda,access=rw,target=${lunUrl(t)}`, verifyJob(dir, '/dev/xvda', '4m')]);
      assert.equal(out.code, 0, out.text);
      assert.match(out.text, /WRITE: bw=/);
      await assertWritten(store, 4 * MiB);
    });
  });
});

test('fio --bare --disk with an iscsi:// target runs straight on the LUN (not on a path named phy:iscsi://...)', async () => {
  await inTempDir(async (dir) => {
    await withTarget(async (t, store) => {
      const out = await cli(['fio', '--bare', '--disk', `vdev=xvda,access=rw,target=${lunUrl(t)}`, verifyJob(dir, '/dev/xvda', '2m')]);
      assert.equal(out.code, 0, out.text);
      await assertWritten(store, 2 * MiB);
    });
  });
});

test('blkback run: an xl config with the real-xl line (backendtype=phy, script=/bin/true, target=iscsi://...) is checked end to end', async () => {
  await inTempDir(async (dir) => {
    await withTarget(async (t, store) => {
      const cfg = join(dir, 'guest-iscsi.cfg');
      writeFileSync(
        cfg,
        `name = "iscsi-guest"\nmemory = 128\nvcpus = 1\ndisk = [ 'vdev=xvda, access=rw, backendtype=phy, script=/bin/true, target=${lunUrl(t)}' ]\n`,
      );
      const out = await cli(['run', cfg, '--operations', '400', '--length', '2M', '--json']);
      assert.equal(out.code, 0, out.text);
      // The integrity load ends by writing and reading back the whole region: data in the store.
      const head = new Uint8Array(2 * MiB);
      await store.readv(0, [head]);
      assert.ok(
        head.some((b) => b !== 0),
        "the guest's writes reached the target's store",
      );
    });
  });
});
