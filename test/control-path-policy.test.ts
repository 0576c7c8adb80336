// The path policy on the simulated host (`blkback run --allow-path DIR --control-socket PATH`): a
// disk someone else names through `blkback ctl attach` is opened only if it is a block device under
// /dev or a regular file under an --allow-path directory. /etc/shadow, as phy:, file: or target=, and
// a symlink to it from the allowed directory, are refused with the rule in the answer and nothing
// written; a backend entry written straight into the xenstore naming it is refused by blkback itself
// (log, error node, Closed); a file under the allowed directory is attached and the guest's bytes land
// in it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openFileDisk } from '../src/block/file.ts';
import { resolvePathPolicy } from '../src/stores/path-policy.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { blkbackControlTarget } from '../src/control/blkback-target.ts';
import { serveControl } from '../src/control/server.ts';
import { simToolstack } from '../src/control/sim-toolstack.ts';
import { removeDiskEntries, writeDiskEntries } from '../src/sim-host/disk-entries.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { XenbusState } from '../src/xenbus/state.ts';
import { stepPath } from './fixtures/control/hotplug-guest.ts';
import type { HotplugParams } from './fixtures/control/hotplug-guest.ts';
import { countBadSectors } from './helpers-guest.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const HOTPLUG = new URL('./fixtures/control/hotplug-guest.js', import.meta.url);
const MiB = 1 << 20;
const XVDB = 51728;

function ctl(socket: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'ctl', '--socket', socket, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function until<T>(probe: () => Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('ctl attach on the simulated host: /etc/shadow refused (phy:, file:, target=, via a symlink) with the rule named; an allowed file works', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-policy-'));
  const allowed = join(dir, 'images');
  const socket = join(dir, 'control.sock');
  const logs: string[] = [];
  mkdirSync(allowed);
  const image = join(allowed, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, 4 * MiB);
  symlinkSync('/etc/shadow', join(allowed, 'evil.img'));
  const policy = await resolvePathPolicy([allowed]);
  const host = await SimHost.start({ policy, log: (line) => logs.push(line) });
  host.registerStore('policy-root', createRamDisk(8 * MiB));
  const control = await serveControl(blkbackControlTarget(host.blkback, simToolstack(host), { xenstore: host.xs, checkStore: (r) => host.stores.check(r) }), {
    path: socket,
  });
  const seen = new Map<string, unknown>();
  const waiting = new Map<string, (m: unknown) => void>();
  const report = <T>(type: string): Promise<T> =>
    seen.has(type) ? Promise.resolve(seen.get(type) as T) : new Promise<T>((resolve) => waiting.set(type, resolve as (m: unknown) => void));
  const params: HotplugParams = { seed: 91, ioBytes: 64 << 10, ioOffset: 0, hotBytes: MiB, maxWaitMs: 30_000 };
  try {
    const guest = await host.createGuest(
      { name: 'policy', memoryMiB: 32, disks: [{ target: 'policy-root', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      {
        workload: HOTPLUG,
        params,
        onReport: (m) => {
          const type = (m as { type: string }).type;
          seen.set(type, m);
          waiting.get(type)?.(m);
        },
      },
    );
    guest.result.catch(() => undefined);
    const d = guest.domid;
    await within(report('connected'), 10_000, 'the guest to connect');

    const rule = `is not under an --allow-path directory (allowed: ${allowed})`;
    const refused = await Promise.all([
      ctl(socket, ['attach', String(d), 'phy:/etc/shadow,xvdb,w']),
      ctl(socket, ['attach', String(d), 'file:/etc/shadow,xvdb,w']),
      ctl(socket, ['attach', String(d), 'vdev=xvdb,access=rw,target=/etc/shadow']),
      ctl(socket, ['attach', String(d), `vdev=xvdb,access=rw,target=${join(allowed, 'evil.img')}`]),
    ]);
    for (const [i, r] of refused.entries()) {
      assert.equal(r.code, 1, `attempt ${i}: refused (${r.stderr})`);
      assert.equal(r.stdout, '');
      assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace: ${r.stderr}`);
    }
    assert.equal(refused[0]!.stderr, `blkback: attach: disk target '/etc/shadow': /etc/shadow ${rule}\n`);
    assert.equal(refused[1]!.stderr, `blkback: attach: disk target '/etc/shadow': /etc/shadow ${rule}\n`);
    assert.equal(refused[2]!.stderr, `blkback: attach: disk target '/etc/shadow': /etc/shadow ${rule}\n`);
    const link = join(allowed, 'evil.img');
    assert.equal(refused[3]!.stderr, `blkback: attach: disk target '${link}': ${link} (/etc/shadow) ${rule}\n`, 'the symlink is followed to what it names');
    assert.equal(await host.xs.tryRead(`/local/domain/0/backend/vbd/${d}/${XVDB}/params`), undefined, 'nothing was written for the guest to find');
    assert.equal(host.blkback.vbds.has(`${d}/${XVDB}`), false);

    // Someone else writes a backend entry straight into the xenstore: blkback refuses to open it.
    const other = 42;
    await host.xs.transaction((tx) =>
      writeDiskEntries(host.xs, tx, { kind: 'vbd', domid: other, devid: XVDB, vdev: 'xvdb', target: '/etc/shadow', type: 'phy', readOnly: false }),
    );
    const error = await until(() => host.xs.tryRead(`/local/domain/0/error/backend/vbd/${other}/${XVDB}/error`), 5000, 'the error node');
    assert.equal(error, `13 disk target '/etc/shadow': /etc/shadow ${rule}`, 'errno and message, as Linux xenbus_dev_fatal writes them');
    await until(
      async () => ((await host.xs.tryRead(`/local/domain/0/backend/vbd/${other}/${XVDB}/state`)) === String(XenbusState.Closed) ? true : undefined),
      5000,
      'Closed',
    );
    assert.equal(host.blkback.vbds.get(`${other}/${XVDB}`)?.device, null, 'no store opened');
    assert.ok(
      logs.some((l) => l === `vbd ${other}/${XVDB}: disk target '/etc/shadow': /etc/shadow ${rule}`),
      logs.join('\n'),
    );
    assert.deepEqual(
      await removeDiskEntries(host.xs, 'vbd', other, XVDB, { timeoutMs: 5000 }),
      { forced: false },
      'already Closed: the toolstack removes it at once',
    );

    // A file under the allowed directory: attached, and the guest's bytes land in it.
    await host.xs.write(stepPath(d), 'io');
    await within(report('io-done'), 10_000, 'the guest I/O');
    const ok = await ctl(socket, ['attach', String(d), `vdev=xvdb,access=rw,backendtype=qdisk,target=${image}`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `attached xvdb to domain ${d} (disk ${d}/${XVDB})\n`);
    const a = await within(report<{ size: number; equal: boolean }>('attached'), 10_000, 'the guest to use the new disk');
    assert.equal(a.size, 4 * MiB);
    assert.equal(a.equal, true);
    const file = await openFileDisk(image, { readOnly: true });
    try {
      assert.equal(await countBadSectors(file, 0, params.hotBytes, params.seed + 1, 2), 0, 'the image holds what the guest wrote');
    } finally {
      await file.close();
    }
  } finally {
    await control.close();
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ctl attach: a target that does not exist is answered at once, not reported attached', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-policy-'));
  const host = await SimHost.start();
  const target = blkbackControlTarget(host.blkback, simToolstack(host), { xenstore: host.xs, checkStore: (r) => host.stores.check(r) });
  const bare = blkbackControlTarget(host.blkback, simToolstack(host), { xenstore: host.xs });
  try {
    host.registerStore('nx-root', createRamDisk(MiB));
    const guest = await host.createGuest(
      { name: 'nx', memoryMiB: 16, disks: [{ target: 'nx-root', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: HOTPLUG, params: { seed: 1, ioBytes: 4096, ioOffset: 0, hotBytes: 4096, maxWaitMs: 20_000 } satisfies HotplugParams },
    );
    guest.result.catch(() => undefined);
    await assert.rejects(target.attach(guest.domid, `vdev=xvdb,target=${dir}/missing.img`), (e: Error) =>
      /disk target '.*missing\.img' does not exist on this machine/.test(e.message),
    );
    // Without the check, blkback's own open is the judge: the attach fails with its reason, and the
    // entries are taken away again (before, the answer was "attached").
    await assert.rejects(bare.attach(guest.domid, `vdev=xvdb,target=${dir}/missing.img`), (e: Error) =>
      /^attach: blkback cannot open the disk: disk target '.*missing\.img' does not exist/.test(e.message),
    );
    assert.equal(await host.xs.tryRead(`/local/domain/0/backend/vbd/${guest.domid}/${XVDB}/params`), undefined);
    await until(async () => (host.blkback.vbds.has(`${guest.domid}/${XVDB}`) ? undefined : true), 5000, 'blkback to drop the failed disk');
  } finally {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
