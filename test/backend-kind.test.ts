// Two backends side by side, as `blkback serve --backend-kind blkback` runs beside the kernel's
// xen-blkback on real Xen: the simulated host's blkback owns backend/vbd (the guest's xvda), a second
// one owns backend/blkback, and `blkback ctl attach` (its own toolstack, no xl) gives the same guest
// an xvdb there. Each serves only its own directory; the guest's bytes land in the right store; a
// detach closes the disk with the guest, and one whose guest died is removed without waiting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Blkback } from '../src/blkback/blkback.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { blkbackControlTarget } from '../src/control/blkback-target.ts';
import { serveControl } from '../src/control/server.ts';
import { xenstoreToolstack } from '../src/control/xenstore-toolstack.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { stepPath } from './fixtures/control/hotplug-guest.ts';
import type { HotplugParams } from './fixtures/control/hotplug-guest.ts';
import { countBadSectors } from './helpers-guest.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const HOTPLUG = new URL('./fixtures/control/hotplug-guest.js', import.meta.url);
const MiB = 1 << 20;
const XVDA = 51712;
const XVDB = 51728;

function blkback(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

test('a second backend under backend/blkback beside the one under backend/vbd, one guest using both', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-kind-'));
  const socket = join(dir, 'control.sock');
  const logs: string[] = [];
  const host = await SimHost.start({ log: (line) => logs.push(`host: ${line}`) });
  const root = createRamDisk(16 * MiB);
  const spare = createRamDisk(8 * MiB);
  host.registerStore('kind-root', root);
  host.registerStore('/dev/kind-spare', spare);
  const ours = new Blkback(host.hypervisor.backend(host.xs), { open: host.stores.open, backendKind: 'blkback', log: (line) => logs.push(`ours: ${line}`) });
  await ours.start();
  const log = (line: string): void => void logs.push(`toolstack: ${line}`);
  const control = await serveControl(blkbackControlTarget(ours, xenstoreToolstack(host.xs, 'blkback', { log }), { xenstore: host.xs }), { path: socket });
  const seen = new Map<string, unknown>();
  const waiting = new Map<string, (m: unknown) => void>();
  const onReport = (m: unknown): void => {
    const type = (m as { type: string }).type;
    seen.set(type, m);
    waiting.get(type)?.(m);
  };
  const next = <T>(type: string): Promise<T> =>
    seen.has(type) ? Promise.resolve(seen.get(type) as T) : new Promise<T>((resolve) => waiting.set(type, resolve as (m: unknown) => void));
  const params: HotplugParams = { seed: 93, ioBytes: 128 << 10, ioOffset: MiB, hotBytes: MiB, maxWaitMs: 15_000 };
  try {
    const guest = await host.createGuest(
      { name: 'twin', memoryMiB: 32, disks: [{ target: 'kind-root', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: HOTPLUG, params, onReport },
    );
    guest.result.catch(() => undefined); // it waits for a resize this test never makes
    const d = guest.domid;
    await within(next('connected'), 10_000, 'the guest to connect xvda');
    await host.xs.write(stepPath(d), 'io');
    assert.equal((await within(next<{ ok: boolean }>('io-done'), 10_000, 'the I/O on xvda')).ok, true);

    await t.test('ctl attach writes the entries under backend/blkback; only the second backend serves it', async () => {
      const out = await blkback(['ctl', '--socket', socket, 'attach', String(d), 'format=raw,vdev=xvdb,access=rw,target=/dev/kind-spare']);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stdout, `attached xvdb to domain ${d} (disk ${d}/${XVDB})\n`);
      const a = await within(next<{ devid: number; size: number; equal: boolean }>('attached'), 10_000, 'the guest to use xvdb');
      assert.equal(a.devid, XVDB);
      assert.equal(a.size, 8 * MiB);
      assert.equal(a.equal, true, 'the guest read back what it wrote');
      assert.equal(await countBadSectors(spare, 0, params.hotBytes, params.seed + 1, 2), 0, 'the bytes are in the second backend store');
      assert.equal(await host.xs.tryRead(`/local/domain/${d}/device/vbd/${XVDB}/backend`), `/local/domain/0/backend/blkback/${d}/${XVDB}`);
      assert.equal(await host.xs.tryRead(`/local/domain/0/backend/blkback/${d}/${XVDB}/state`), '4', 'Connected');
      assert.equal(await host.xs.tryRead(`/local/domain/0/backend/vbd/${d}/${XVDB}/state`), undefined);
      assert.deepEqual([...ours.vbds.keys()], [`${d}/${XVDB}`]);
      assert.deepEqual([...host.blkback.vbds.keys()], [`${d}/${XVDA}`], 'the backend under vbd never saw xvdb');
      const list = await blkback(['ctl', '--socket', socket, 'list']);
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, new RegExp(`^${d}/${XVDB}\\s+xvdb\\s+Connected\\s+8 MiB\\s+rw`, 'm'));
      assert.doesNotMatch(list.stdout, /xvda/);
    });

    await t.test('attach refuses a vdev another backend serves, and what it cannot honour', async () => {
      const taken = await blkback(['ctl', '--socket', socket, 'attach', String(d), 'vdev=xvda,target=/dev/kind-spare']);
      assert.equal(taken.code, 1);
      assert.match(taken.stderr, new RegExp(`already has a device xvda \\(${XVDA}\\), served by /local/domain/0/backend/vbd/${d}/${XVDA}`));
      const script = await blkback(['ctl', '--socket', socket, 'attach', String(d), 'vdev=xvdc,script=block-iscsi,target=/dev/kind-spare']);
      assert.equal(script.code, 1);
      assert.match(script.stderr, /script=.*no hotplug script runs here/);
      const nodomain = await blkback(['ctl', '--socket', socket, 'attach', '77', 'vdev=xvdc,target=/dev/kind-spare']);
      assert.equal(nodomain.code, 1);
      assert.match(nodomain.stderr, /there is no domain 77/);
      assert.equal(await host.xs.tryRead(`/local/domain/${d}/device/vbd/51744/backend`), undefined, 'nothing written for xvdc');
    });

    await t.test('ctl detach: the guest lets go, the entries go, xvda still works', async () => {
      const started = Date.now();
      const out = await blkback(['ctl', '--socket', socket, 'detach', String(d), 'xvdb']);
      assert.equal(out.code, 0, out.stderr);
      assert.ok(Date.now() - started < 9000, 'the guest closed the disk: no forced remove');
      const detached = await within(next<{ xvdaOk: boolean }>('detached'), 10_000, 'the guest to report the detach');
      assert.equal(detached.xvdaOk, true);
      assert.equal(ours.vbds.size, 0);
      assert.equal(await host.xs.tryRead(`/local/domain/0/backend/blkback/${d}/${XVDB}/state`), undefined);
      assert.equal(await host.xs.tryRead(`/local/domain/${d}/device/vbd/${XVDB}/state`), undefined);
      assert.ok(!logs.some((l) => l.includes('removing it anyway')), logs.join('\n'));
    });

    await t.test('a disk whose guest died is detached at once', async () => {
      const out = await blkback(['ctl', '--socket', socket, 'attach', String(d), 'vdev=xvdb,target=/dev/kind-spare']);
      assert.equal(out.code, 0, out.stderr);
      await host.destroyGuest(d); // removes what the host's own toolstack made, not backend/blkback
      assert.notEqual(await host.xs.tryRead(`/local/domain/0/backend/blkback/${d}/${XVDB}/frontend`), undefined);
      const started = Date.now();
      const detach = await blkback(['ctl', '--socket', socket, 'detach', String(d), 'xvdb']);
      assert.equal(detach.code, 0, detach.stderr);
      assert.ok(Date.now() - started < 5000, `no wait for a guest that is gone (${Date.now() - started} ms)`);
      assert.ok(
        logs.some((l) => l.includes('has no frontend left; removing it anyway')),
        logs.join('\n'),
      );
      assert.equal(await host.xs.tryRead(`/local/domain/0/backend/blkback/${d}/${XVDB}/frontend`), undefined);
      assert.equal(ours.vbds.size, 0);
    });
  } finally {
    await control.close();
    await ours.stop();
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('backend kinds: a bad name is refused, by Blkback and by serve', async () => {
  const host = await SimHost.start({});
  try {
    assert.throws(
      () => new Blkback(host.hypervisor.backend(host.xs), { open: host.stores.open, backendKind: 'a/b' }),
      /backend kind 'a\/b' is not a xenstore directory name/,
    );
  } finally {
    await host.stop();
  }
  const slash = await blkback(['serve', '--backend-kind', '../vbd']);
  assert.equal(slash.code, 2);
  assert.match(slash.stderr, /--backend-kind '\.\.\/vbd' is not a xenstore directory name/);
  const qdisk = await blkback(['serve', '--backend-kind', 'qdisk']);
  assert.equal(qdisk.code, 2);
  assert.match(qdisk.stderr, /qdisk is QEMU's directory/);
  const help = await blkback(['serve', '--help']);
  assert.match(help.stdout, /--backend-kind NAME/);
});
