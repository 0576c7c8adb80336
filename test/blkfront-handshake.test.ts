// blkfront's xenbus handshake (src/blkfront/handshake.ts) against a real xenstore daemon, with the
// test playing the backend: the keys the frontend publishes are Linux xen-blkfront's layout (one
// queue and several, one-page and multi-page rings, both ABIs), keys left by an earlier connection
// are not misread, the backend's description is read back as written, and a backend that never
// connects gets its ring pages, grants and event channel back. Last, the same through the real
// backend: a reconnect with a smaller ring on a device whose first frontend used a large one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectFrontend, XenbusFrontend } from '../src/blkfront/handshake.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { EventChannel, GuestHypervisor, XenstoreClient } from '../src/hypervisor/types.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { connectInProcess } from '../src/xenstore/client.ts';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import type { ReconnectResult } from './fixtures/guest2/reconnect.ts';
import { countBadSectors } from './helpers-guest.ts';

const PAGE = 4096;
const DOMID = 7;
const DEVID = 51712;
const FE = `/local/domain/${DOMID}/device/vbd/${DEVID}`;
const BE = `/local/domain/0/backend/vbd/${DOMID}/${DEVID}`;
const MiB = 1 << 20;

/** A guest's memory, grant table and event channels, counting what is in use. */
function fakeGuest(
  xs: XenstoreClient,
  pages = 64,
): GuestHypervisor & { used(): { pages: number; grants: number; ports: number }; granted: Map<number, number> } {
  const buffer = new SharedArrayBuffer(pages * PAGE);
  const taken = new Uint8Array(pages);
  const granted = new Map<number, number>(); // ref -> frame
  let nextRef = 8;
  let nextPort = 3;
  const open = new Set<number>();
  return {
    domid: DOMID,
    xenstore: xs,
    granted,
    memory: {
      buffer,
      pages,
      allocPages(count) {
        for (let f = 0; f + count <= pages; f++) {
          if (taken.subarray(f, f + count).every((t) => t === 0)) {
            taken.fill(1, f, f + count);
            return f;
          }
        }
        return -1;
      },
      freePages(frame, count) {
        assert.ok(
          taken.subarray(frame, frame + count).every((t) => t === 1),
          `freeing frames ${frame}+${count} that are not allocated`,
        );
        taken.fill(0, frame, frame + count);
      },
      view: (frame, count = 1) => new Uint8Array(buffer, frame * PAGE, count * PAGE),
    },
    grants: {
      grantAccess(domid, frame) {
        assert.equal(domid, 0, 'granted to the backend domain');
        granted.set(nextRef, frame);
        return nextRef++;
      },
      endAccess: (ref) => granted.delete(ref),
      get freeCount() {
        return 1000 - granted.size;
      },
    },
    events: {
      allocUnbound(remote): EventChannel {
        assert.equal(remote, 0);
        const port = nextPort++;
        open.add(port);
        return { localPort: port, notify() {}, onEvent() {}, mask() {}, unmask() {}, close: () => void open.delete(port) };
      },
    },
    used: () => ({ pages: taken.reduce((a, b) => a + b, 0), grants: granted.size, ports: open.size }),
  };
}

async function store(): Promise<{ xs: XenstoreClient; close: () => Promise<void> }> {
  const daemon = new XenstoreDaemon();
  const xs = connectInProcess(daemon, 0);
  await xs.write(`${FE}/backend`, BE);
  await xs.write(`${FE}/backend-id`, '0');
  await xs.write(`${FE}/state`, '1');
  await xs.write(`${BE}/frontend`, FE);
  await xs.write(`${BE}/state`, '1');
  return {
    xs,
    close: async () => {
      xs.close();
      await daemon.close();
    },
  };
}

/** Every key below `dir`, relative to it, with its value. */
async function tree(xs: XenstoreClient, dir: string, prefix = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of await xs.directory(dir)) {
    const path = `${dir}/${name}`;
    const value = await xs.tryRead(path);
    if (value !== undefined && value !== '') out[`${prefix}${name}`] = value;
    Object.assign(out, await tree(xs, path, `${prefix}${name}/`));
  }
  return out;
}

/**
 * The backend's side: InitWait with `limits`; once the frontend is Initialised, records the
 * frontend's keys, describes the disk and goes Connected.
 */
function playBackend(xs: XenstoreClient, limits: Record<string, string>, disk: Record<string, string>): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    let done = false;
    void (async () => {
      for (const [k, v] of Object.entries(limits)) await xs.write(`${BE}/${k}`, v);
      await xs.write(`${BE}/state`, '2');
      await xs.watch(`${FE}/state`, 'test-backend', () => {
        void (async () => {
          if (done || (await xs.tryRead(`${FE}/state`)) !== '3') return;
          done = true;
          const published = await tree(xs, FE);
          await xs.transaction(async (tx) => {
            for (const [k, v] of Object.entries(disk)) await xs.write(`${BE}/${k}`, v, tx);
            await xs.write(`${BE}/state`, '4', tx);
          });
          await xs.unwatch(`${FE}/state`, 'test-backend');
          resolve(published);
        })().catch(reject);
      });
    })().catch(reject);
  });
}

const TOOLSTACK_KEYS = { backend: BE, 'backend-id': '0' };

test('one queue, a 4-page ring, x86_32: ring-page-order, ring-ref0..3, event-channel, protocol; the disk read back', async () => {
  const { xs, close } = await store();
  try {
    const hv = fakeGuest(xs);
    const backend = playBackend(
      xs,
      { 'max-ring-page-order': '2' },
      {
        sectors: '24576',
        'sector-size': '4096',
        'physical-sector-size': '4096',
        info: '4',
        'feature-flush-cache': '1',
        'feature-discard': '1',
        'discard-granularity': '65536',
        'feature-max-indirect-segments': '256',
      },
    );
    const c = await connectFrontend(hv, DEVID, 'xvda', { abi: 'x86_32', ringPageOrder: 4, timeoutMs: 3000 });
    const published = await backend;
    assert.equal(c.ringPageOrder, 2, 'the wanted order capped by max-ring-page-order');
    assert.equal(c.rings.length, 1);
    const ring = c.rings[0]!;
    assert.equal(ring.pages, 4);
    assert.deepEqual([...hv.granted.keys()], ring.refs, 'exactly the ring pages are granted');
    assert.deepEqual(
      ring.refs.map((r) => hv.granted.get(r)),
      [0, 1, 2, 3].map((i) => ring.frame + i),
      'ring-ref<i> grants page i of the ring',
    );
    assert.deepEqual(published, {
      ...TOOLSTACK_KEYS,
      state: '3',
      'ring-page-order': '2',
      'ring-ref0': String(ring.refs[0]),
      'ring-ref1': String(ring.refs[1]),
      'ring-ref2': String(ring.refs[2]),
      'ring-ref3': String(ring.refs[3]),
      'event-channel': String(ring.events.localPort),
      protocol: 'x86_32-abi',
    });
    assert.deepEqual(c.disk, {
      sectors: 24576,
      sectorSize: 4096,
      physicalSectorSize: 4096,
      info: 4,
      flushCache: true,
      barrier: false,
      discard: true,
      discardGranularity: 65536,
      maxIndirectSegments: 256,
      // This backend wrote no feature-persistent.
      persistent: false,
    });
    assert.equal(await xs.tryRead(`${FE}/state`), '4', 'the frontend ends Connected');
  } finally {
    await close();
  }
});

test('a one-page ring after a multi-queue, multi-page connection: ring-ref alone, stale ring-page-order and multi-queue-num-queues gone', async () => {
  const { xs, close } = await store();
  try {
    // What an earlier frontend on this device left behind.
    await xs.write(`${FE}/ring-page-order`, '3');
    await xs.write(`${FE}/multi-queue-num-queues`, '2');
    const hv = fakeGuest(xs);
    const backend = playBackend(xs, {}, { sectors: '2048' }); // says nothing of ring size: one page
    const c = await connectFrontend(hv, DEVID, 'xvda', { abi: 'x86_64', ringPageOrder: 4, timeoutMs: 3000 });
    const published = await backend;
    assert.equal(c.ringPageOrder, 0);
    assert.deepEqual(published, {
      ...TOOLSTACK_KEYS,
      state: '3',
      'ring-ref': String(c.rings[0]!.refs[0]),
      'event-channel': String(c.rings[0]!.events.localPort),
      protocol: 'x86_64-abi',
    });
    assert.equal(c.disk.sectors, 2048);
    assert.equal(c.disk.sectorSize, 512, 'sector-size defaults to 512');
    assert.equal(c.disk.maxIndirectSegments, 0);
    assert.equal(c.disk.discardGranularity, 0);
  } finally {
    await close();
  }
});

test('several queues: multi-queue-num-queues and ring-page-order at the top, ring-ref* and event-channel under queue-N', async () => {
  const { xs, close } = await store();
  try {
    const front = await XenbusFrontend.open(xs, FE, 'xvda', 1000);
    assert.equal(front.backendPath, BE);
    await front.publishRings(
      1,
      [
        { refs: [10, 11], eventChannel: 5 },
        { refs: [12, 13], eventChannel: 6 },
      ],
      'x86_64',
    );
    assert.deepEqual(await tree(xs, FE), {
      ...TOOLSTACK_KEYS,
      state: '1',
      'ring-page-order': '1',
      'multi-queue-num-queues': '2',
      'queue-0/ring-ref0': '10',
      'queue-0/ring-ref1': '11',
      'queue-0/event-channel': '5',
      'queue-1/ring-ref0': '12',
      'queue-1/ring-ref1': '13',
      'queue-1/event-channel': '6',
      protocol: 'x86_64-abi',
    });
    await front.publishRings(
      0,
      [
        { refs: [20], eventChannel: 7 },
        { refs: [21], eventChannel: 8 },
        { refs: [22], eventChannel: 9 },
      ],
      'x86_32',
    );
    const after = await tree(xs, FE);
    assert.equal(after['ring-page-order'], undefined, 'one-page rings: no ring-page-order');
    assert.equal(after['multi-queue-num-queues'], '3');
    assert.equal(after['queue-2/ring-ref'], '22');
    assert.equal(after['queue-2/event-channel'], '9');
    assert.equal(after.protocol, 'x86_32-abi');
    // max-ring-page-order and multi-queue-max-queues: the backend's limits, read where xen-blkback writes them.
    await xs.write(`${BE}/max-ring-page-order`, '3');
    await xs.write(`${BE}/multi-queue-max-queues`, '4');
    assert.deepEqual(await front.readRingLimits(), { maxRingPageOrder: 3, maxQueues: 4 });
  } finally {
    await close();
  }
});

test('a backend that never connects: the handshake times out and gives back ring pages, grants and the event channel', async () => {
  const { xs, close } = await store();
  try {
    const hv = fakeGuest(xs);
    await xs.write(`${BE}/max-ring-page-order`, '1');
    await xs.write(`${BE}/state`, '2'); // InitWait, and no further
    await assert.rejects(connectFrontend(hv, DEVID, 'xvda', { abi: 'x86_64', ringPageOrder: 1, timeoutMs: 300 }), /did not reach Connected within 300 ms/);
    assert.equal((await xs.tryRead(`${FE}/ring-ref1`)) !== undefined, true, 'it had published a 2-page ring');
    assert.deepEqual(hv.used(), { pages: 0, grants: 0, ports: 0 });
  } finally {
    await close();
  }
});

test('through the real backend: closed, then reconnected with a one-page ring after a 16-page one', async () => {
  const host = await SimHost.start();
  try {
    const ram = createRamDisk(8 * MiB);
    host.registerStore('shrink', ram);
    const guest = await host.createGuest(
      { name: 'shrink', memoryMiB: 32, disks: [{ target: 'shrink', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      {
        workload: new URL('./fixtures/guest2/reconnect.js', import.meta.url),
        params: { seed: 57, length: 256 << 10, ringPageOrder: 0 },
        front: { ringPageOrder: 4 },
      },
    );
    const r = (await guest.result) as ReconnectResult;
    assert.equal(r.error, null, 'the second connection came up');
    assert.equal(r.ringPages, 1);
    assert.equal(r.mismatchesAfterReconnect, 0, 'what the first connection wrote reads back');
    assert.equal(r.mismatchesAfterRewrite, 0);
    assert.equal(await countBadSectors(ram, 0, 256 << 10, 57, 2), 0, 'the store holds what the second connection wrote');
  } finally {
    await host.stop();
  }
});
