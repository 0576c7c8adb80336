// Grant copies on the copy path come in batches, not one per request: the data of the reads the
// store completes together goes out to the guest in one copy call, and the segment lists of a
// turn's indirect requests come in with one (a write's data with one more). Counted with the
// benchmark's counter around a real backend, for a simulated guest keeping 32 or 16 I/Os in flight
// on a RAM disk. (One copy per request each way was the cost before; the integrity of the copied
// data is checked by blkback-indirect and blkback-data-paths.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countXenCalls, emptyXenCallCounts } from '../src/bench/xen-call-counter.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { RandomIoParams } from '../src/loadgen/random-io.ts';

async function copiesPerRequest(params: Omit<RandomIoParams, 'seconds'>): Promise<{ copies: number; requests: number; segments: number }> {
  const counts = emptyXenCallCounts();
  const host = await SimHost.start({ dataPath: 'copy', instrumentBackend: (hv) => countXenCalls(hv, counts) });
  const ram = createRamDisk(16 << 20, { name: 'ram:batching' });
  host.registerStore('batching', ram);
  try {
    const guest = await host.createGuest(
      { name: 'batching', memoryMiB: 32, disks: [{ target: 'batching', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: new URL('../src/guest/workloads/random-io.js', import.meta.url), params: { ...params, seconds: 0.4, seed: 11 } },
    );
    const result = (await guest.result) as { ios: number };
    const vbd = [...host.blkback.vbds.values()][0]!;
    const requests = vbd.stats.rd_req + vbd.stats.wr_req;
    assert.ok(requests >= result.ios && result.ios > 100, `${result.ios} I/Os, ${requests} requests`);
    return { copies: counts.copies, requests, segments: counts.copySegments };
  } finally {
    await host.stop();
    await ram.close();
  }
}

test('copy path, 4 KiB reads at QD32: the reads completed together are delivered with one copy call', async () => {
  const { copies, requests, segments } = await copiesPerRequest({ rw: 'randread', bs: 4096, iodepth: 32 });
  assert.ok(segments >= requests, 'every read was copied out');
  assert.ok(copies <= 0.5 * requests, `${copies} copy calls for ${requests} reads`);
});

test('copy path, 64 KiB indirect reads and writes at QD16: lists and data copied per turn and per completion batch', async () => {
  for (const rw of ['randread', 'randwrite'] as const) {
    const { copies, requests, segments } = await copiesPerRequest({ rw, bs: 65536, iodepth: 16 });
    // Each request is one indirect page and 16 data segments, all copied.
    assert.ok(segments >= 17 * requests, `${rw}: ${segments} segments copied for ${requests} requests`);
    // One call for a turn's lists and one for its writes' data (reads: one per completion batch):
    // less than one a request, where one list copy plus one data copy each used to be two.
    assert.ok(copies <= requests, `${rw}: ${copies} copy calls for ${requests} requests`);
  }
});
