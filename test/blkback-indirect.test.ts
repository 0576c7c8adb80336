// Indirect requests (BLKIF_OP_INDIRECT: a segment list in granted pages, so one request carries up
// to 256 segments instead of 11) and the grant-copy data path that real Xen uses by default. Both
// end to end: guest -> blkfront -> ring -> blkback -> store, every read checked in the guest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { GuestDisk } from '../src/sim-host/host.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import { countBadSectors, scratchLoop, VERIFY, WRITE_PATTERN } from './helpers-guest.ts';

type VerifyOutput = VerifyResult & { front: { requests: number; indirect: number }; abi: string };

const XVDA = 51712;

function disk(target: string, backendtype: 'phy' | 'qdisk' = 'phy'): GuestDisk {
  return { target, vdev: 'xvda', readOnly: false, backendtype };
}

/** Reads backend key `key` once the backend is Connected (state 4), which is when Linux writes its features. */
async function readWhenConnected(host: SimHost, backend: string, key: string): Promise<string | undefined> {
  for (let i = 0; i < 500; i++) {
    if ((await host.xs.tryRead(`${backend}/state`)) === '4') return host.xs.tryRead(`${backend}/${key}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`${backend} never reached Connected`);
}

function assertClean(r: VerifyOutput, label: string): void {
  assert.equal(r.mismatches, 0, `${label}: ${r.firstMismatches.join('\n')}`);
  assert.ok(r.reads > 0 && r.writes > 0, `${label}: did both reads and writes`);
}

test('indirect requests: I/O up to 128 KiB is one ring request each, and the data is intact', async () => {
  const host = await SimHost.start();
  try {
    host.registerStore('ram', createRamDisk(32 << 20));
    const g = await host.createGuest(
      { name: 'big-io', memoryMiB: 64, disks: [disk('ram')] },
      { workload: VERIFY, params: { operations: 1200, iodepth: 32, minBytes: 48 << 10, maxBytes: 128 << 10, seed: 41 }, front: { maxIndirectSegments: 32 } },
    );
    const advertised = await readWhenConnected(host, `/local/domain/0/backend/vbd/${g.domid}/${XVDA}`, 'feature-max-indirect-segments');
    assert.equal(advertised, '256', 'advertised as Linux does (MAX_INDIRECT_SEGMENTS)');
    const r = (await g.result) as VerifyOutput;
    assertClean(r, 'indirect');
    // Each random I/O is above 44 KiB and at most 32 pages: one indirect request, never split.
    // (The workload's final read-back adds requests of its own.)
    assert.ok(r.front.indirect >= r.operations, `indirect ${r.front.indirect} of ${r.front.requests} requests, ${r.operations} I/Os`);
    const stats = host.blkback.vbds.get(`${g.domid}/${XVDA}`)!.stats;
    assert.equal(
      Object.values(stats.errors).reduce((a, b) => a + b, 0),
      0,
      'no request was refused',
    );
    assert.equal(stats.rd_req + stats.wr_req, r.front.requests);
  } finally {
    await host.stop();
  }
});

test('without feature-max-indirect-segments the frontend falls back to 11-segment requests', async () => {
  const host = await SimHost.start({ maxIndirectSegments: 0 });
  try {
    host.registerStore('ram', createRamDisk(16 << 20));
    const g = await host.createGuest(
      { name: 'direct-only', memoryMiB: 32, disks: [disk('ram')] },
      { workload: VERIFY, params: { operations: 600, iodepth: 16, minBytes: 48 << 10, maxBytes: 96 << 10, seed: 42 } },
    );
    const key = await readWhenConnected(host, `/local/domain/0/backend/vbd/${g.domid}/${XVDA}`, 'feature-max-indirect-segments');
    assert.equal(key, undefined);
    const r = (await g.result) as VerifyOutput;
    assertClean(r, 'direct');
    assert.equal(r.front.indirect, 0);
    assert.ok(r.front.requests >= 2 * r.operations, 'each I/O above 44 KiB took at least two requests');
  } finally {
    await host.stop();
  }
});

test('grant-copy data path: both ABIs, direct and indirect requests, data intact and on the store', async () => {
  const host = await SimHost.start({ dataPath: 'copy' });
  try {
    for (const abi of ['x86_64', 'x86_32'] as const) {
      host.registerStore(`ram-${abi}`, createRamDisk(24 << 20));
      const g = await host.createGuest(
        { name: `copy-${abi}`, memoryMiB: 64, disks: [disk(`ram-${abi}`)] },
        { workload: VERIFY, params: { operations: 1200, iodepth: 48, maxBytes: 160 << 10, flushEvery: 300, seed: 43 }, front: { abi, ringPageOrder: 1 } },
      );
      const r = (await g.result) as VerifyOutput;
      assertClean(r, `copy ${abi}`);
      assert.ok(r.front.indirect > 0 && r.front.indirect < r.front.requests, 'both kinds of request were used');
    }
    const ram = createRamDisk(8 << 20);
    host.registerStore('checked', ram);
    const w = await host.createGuest(
      { name: 'copy-writer', memoryMiB: 32, disks: [disk('checked')] },
      { workload: WRITE_PATTERN, params: { offset: 1 << 20, length: 5 << 20, bs: 96 << 10, iodepth: 8, seed: 44, generation: 3 } },
    );
    await w.result;
    assert.equal(await countBadSectors(ram, 1 << 20, 5 << 20, 44, 3), 0, 'the store holds what the guest wrote');
    assert.equal(await countBadSectors(ram, 0, 1 << 20, 44, 3), 2048, 'nothing written outside the range');
  } finally {
    await host.stop();
  }
});

test('grant-copy data path on phy: O_DIRECT through page-aligned bounce pages', async (t) => {
  const loop = scratchLoop(t, 'copy', 16 << 20);
  if (loop === null) return;
  const host = await SimHost.start({ dataPath: 'copy' });
  try {
    const g = await host.createGuest(
      { name: 'copy-phy', memoryMiB: 32, disks: [disk(loop.device)] },
      { workload: VERIFY, params: { operations: 800, iodepth: 32, maxBytes: 128 << 10, seed: 45 } },
    );
    assertClean((await g.result) as VerifyOutput, 'copy phy');
  } finally {
    await host.stop();
    loop.drop();
  }
});
