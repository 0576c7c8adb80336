// An OSD host lost under a guest: three bluestore OSDs, each in its own network namespace (test/support/
// ceph-cluster.ts), pool size 3 / min_size 2. A guest runs the verifying integrity load on its
// rbd: disk through blkback; one OSD is SIGKILLed once the guest is well into it. The guest's I/O
// pauses while the cluster notices (heartbeat grace), then goes on against the two replicas left,
// and every block it wrote reads back as written.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openBlockDevice } from '../src/stores/open.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { VERIFY } from './helpers-guest.ts';
import { stopIfMissing } from './helpers-tools.ts';
import { cephMissing, startCephCluster } from './support/ceph-cluster.ts';
import type { CephCluster } from './support/ceph-cluster.ts';

const MiB = 1 << 20;
const XVDA = 51712;

let cluster: CephCluster | undefined;

before(async () => {
  if (cephMissing(3) === undefined) cluster = await startCephCluster({ osds: 3, objectStore: 'bluestore', osdBytes: 1024 * MiB });
});

after(async () => {
  await cluster?.teardown();
});

async function until(what: string, check: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('an OSD SIGKILLed in the middle of a verifying guest load: I/O goes on and every block verifies', async (t) => {
  if (stopIfMissing(t, cephMissing(3))) return;
  const c = cluster;
  assert.ok(c !== undefined, 'the cluster came up');
  await c.cli('rbd', ['create', '--size', '64M', '--image-feature', 'layering', 'rbd/failover']);
  const dev = await openBlockDevice(`rbd:rbd/failover:conf=${c.conf}`);
  const host = await SimHost.start();
  try {
    host.registerStore('ceph', dev);
    const guest = await host.createGuest(
      { name: 'survivor', memoryMiB: 32, disks: [{ target: 'ceph', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: VERIFY, params: { operations: 6000, iodepth: 16, seed: 29, flushEvery: 200, maxBytes: 64 * 1024 } },
    );
    let settled = false;
    void guest.result.finally(() => (settled = true)).catch(() => undefined);
    const stats = (): { wr_req: number; rd_req: number } | undefined => host.blkback.vbds.get(`${guest.domid}/${XVDA}`)?.stats;
    await until('the guest to be into its load', () => settled || (stats()?.wr_req ?? 0) >= 800, 60_000);
    assert.equal(settled, false, 'the load was still running when the OSD was killed');
    const victim = [...c.osdPids.keys()][1]!;
    const atKill = { wr_req: stats()!.wr_req, rd_req: stats()!.rd_req };
    const killedAt = Date.now();
    c.killOsd(victim);
    // When the cluster has marked it down, the rest of the load runs on two replicas.
    let atDown: { wr_req: number; ms: number } | undefined;
    while (!settled && atDown === undefined) {
      const s = JSON.parse(await c.cli('ceph', ['osd', 'stat', '-f', 'json'])) as { num_up_osds: number };
      if (s.num_up_osds === 2) atDown = { wr_req: stats()!.wr_req, ms: Date.now() - killedAt };
      else await new Promise((res) => setTimeout(res, 200));
    }
    const r = (await guest.result) as { mismatches: number; writes: number; reads: number; firstMismatches: string[] };
    const elapsed = Date.now() - killedAt;
    const end = stats()!;
    t.diagnostic(
      `after the kill: ${end.wr_req - atKill.wr_req} writes, ${end.rd_req - atKill.rd_req} reads in ${elapsed} ms; marked down after ${atDown?.ms ?? '?'} ms`,
    );
    assert.equal(r.mismatches, 0, r.firstMismatches.join('\n'));
    assert.ok(atDown !== undefined, 'the cluster marked the OSD down before the load ended');
    assert.ok(end.wr_req - atDown.wr_req > 100, `writes went on with the OSD down (${end.wr_req - atDown.wr_req})`);
    const osd = JSON.parse(await c.cli('ceph', ['osd', 'stat', '-f', 'json'])) as { num_up_osds: number };
    assert.equal(osd.num_up_osds, 2, 'the cluster marked the killed OSD down and served from the two left');
  } finally {
    await host.stop();
    await dev.close();
  }
});
