// The simulated host with a backend kind other than vbd, as `blkback serve --backend-kind NAME` on
// real Xen: its guests' disks, those it boots with and those its toolstack hot-plugs through the
// control target, live under backend/NAME and nowhere under backend/vbd; the guest's bytes reach
// the store and read back; detach and destroy remove what was written there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { blkbackControlTarget } from '../src/control/blkback-target.ts';
import { simToolstack } from '../src/control/sim-toolstack.ts';
import { parseXlDiskSpec } from '../src/config/xl-disk.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { stepPath } from './fixtures/control/hotplug-guest.ts';
import type { HotplugParams } from './fixtures/control/hotplug-guest.ts';
import { countBadSectors } from './helpers-guest.ts';

const HOTPLUG = new URL('./fixtures/control/hotplug-guest.js', import.meta.url);
const MiB = 1 << 20;
const XVDA = 51712;
const XVDB = 51728;
const KIND = 'simkind';

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

test(`a simulated host started with backend kind '${KIND}': boot and hot-plugged disks live under backend/${KIND} and work`, async (t) => {
  const logs: string[] = [];
  const host = await SimHost.start({ backendKind: KIND, log: (line) => logs.push(line) });
  const root = createRamDisk(16 * MiB);
  const spare = createRamDisk(8 * MiB);
  host.registerStore('kind-root', root);
  host.registerStore('/dev/kind-spare', spare);
  const toolstack = simToolstack(host, { detachTimeoutMs: 8000 });
  const target = blkbackControlTarget(host.blkback, toolstack, { xenstore: host.xs });
  const seen = new Map<string, unknown>();
  const waiting = new Map<string, (m: unknown) => void>();
  const onReport = (m: unknown): void => {
    const type = (m as { type: string }).type;
    seen.set(type, m);
    waiting.get(type)?.(m);
  };
  const next = <T>(type: string): Promise<T> =>
    seen.has(type) ? Promise.resolve(seen.get(type) as T) : new Promise<T>((resolve) => waiting.set(type, resolve as (m: unknown) => void));
  const params: HotplugParams = { seed: 613, ioBytes: 192 << 10, ioOffset: 2 * MiB, hotBytes: MiB, maxWaitMs: 15_000 };
  try {
    assert.equal(host.backendKind, KIND);
    assert.equal(host.blkback.backendKind, KIND, "the host's blkback serves that directory");
    assert.match(toolstack.name, new RegExp(`backend/${KIND}`));
    const guest = await host.createGuest(
      { name: 'kinded', memoryMiB: 32, disks: [{ target: 'kind-root', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: HOTPLUG, params, onReport },
    );
    guest.result.catch(() => undefined); // it waits for a resize this test never makes
    const d = guest.domid;
    const be = (devid: number): string => `/local/domain/0/backend/${KIND}/${d}/${devid}`;
    const fe = (devid: number): string => `/local/domain/${d}/device/vbd/${devid}`;

    await t.test('the boot disk: entries under the kind, I/O reads back, bytes in the store', async () => {
      await within(next('connected'), 10_000, 'the guest to connect xvda');
      assert.equal(await host.xs.tryRead(`${fe(XVDA)}/backend`), be(XVDA));
      assert.equal(await host.xs.tryRead(`${be(XVDA)}/state`), '4', 'Connected');
      assert.deepEqual(await host.xs.directory('/local/domain/0/backend/vbd').catch(() => []), [], 'nothing under backend/vbd');
      await host.xs.write(stepPath(d), 'io');
      assert.equal((await within(next<{ ok: boolean }>('io-done'), 10_000, 'the I/O on xvda')).ok, true, 'the guest read back what it wrote');
      assert.equal(await countBadSectors(root, params.ioOffset, params.ioBytes, params.seed, 1), 0, 'the bytes are in the store');
    });

    await t.test('attach through the simulated toolstack: under the kind, the guest writes and reads back', async () => {
      const attached = await target.attach(d, 'format=raw,vdev=xvdb,access=rw,target=/dev/kind-spare');
      assert.equal(attached.key, `${d}/${XVDB}`);
      const a = await within(next<{ devid: number; size: number; equal: boolean }>('attached'), 10_000, 'the guest to use xvdb');
      assert.equal(a.devid, XVDB);
      assert.equal(a.size, 8 * MiB);
      assert.equal(a.equal, true, 'the guest read back what it wrote');
      assert.equal(await countBadSectors(spare, 0, params.hotBytes, params.seed + 1, 2), 0, 'the bytes are in the hot-plugged store');
      assert.equal(await host.xs.tryRead(`${fe(XVDB)}/backend`), be(XVDB));
      assert.equal(await host.xs.tryRead(`${be(XVDB)}/params`), '/dev/kind-spare');
      assert.equal(await host.xs.tryRead(`${be(XVDB)}/state`), '4', 'Connected');
      assert.deepEqual(await host.xs.directory('/local/domain/0/backend/vbd').catch(() => []), [], 'still nothing under backend/vbd');
      assert.deepEqual([...host.blkback.vbds.keys()].sort(), [`${d}/${XVDA}`, `${d}/${XVDB}`]);
    });

    await t.test('a vdev already served is refused, naming where', async () => {
      await assert.rejects(
        toolstack.attach(d, parseXlDiskSpec('vdev=xvdb,target=/dev/kind-spare')),
        new RegExp(`already has a device xvdb \\(${XVDB}\\), served by ${be(XVDB)}`),
      );
    });

    await t.test('detach: the guest lets go and the entries under the kind go', async () => {
      const started = Date.now();
      await target.detach(d, 'xvdb');
      assert.ok(Date.now() - started < 7000, 'the guest closed the disk: no forced remove');
      assert.equal((await within(next<{ xvdaOk: boolean }>('detached'), 10_000, 'the guest to report the detach')).xvdaOk, true);
      assert.equal(await host.xs.tryRead(`${be(XVDB)}/state`), undefined);
      assert.equal(await host.xs.tryRead(`${fe(XVDB)}/state`), undefined);
      assert.ok(!logs.some((l) => l.includes('removing it anyway')), logs.join('\n'));
    });

    await t.test('destroy removes the guest directory under the kind', async () => {
      await host.destroyGuest(d);
      assert.equal(await host.xs.tryRead(`${be(XVDA)}/frontend`), undefined);
      assert.deepEqual(await host.xs.directory(`/local/domain/0/backend/${KIND}`), []);
      assert.equal(host.blkback.vbds.size, 0);
    });
  } finally {
    await host.stop();
  }
});
