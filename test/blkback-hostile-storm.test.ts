// blkback against guests that abuse the ring's signalling rather than its contents, each beside a
// well-behaved neighbour doing verified I/O:
//   - an event-channel storm (test/fixtures/hostile/storm-guest.ts): 10^6 notifies and more on the
//     port of its ring, which must keep working too;
//   - a guest that never consumes responses (test/fixtures/hostile/hoarder-guest.ts): the backend
//     must answer exactly what was asked, leave the answers it gave alone, and hold no more requests
//     than the ring has slots however long the guest keeps it full.
// In both, the backend process must not grow (RSS, sampled throughout, stays within a bound), must
// keep nothing per event or per request (its memory after a full collection), and the neighbour's
// data must stay intact. Afterwards a new guest still gets verified I/O.
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import type { Vbd } from '../src/blkback/vbd.ts';
import { vdevToDeviceId } from '../src/config/xl-disk.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { testWorkers } from './helpers-workers.ts';
import { WorkerRingHost } from '../src/blkback/workers/worker-ring-host.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import { VERIFY } from './helpers-guest.ts';
import { fillDiskPattern } from './fixtures/hostile/disk-pattern.ts';
import type { GoodGuestParams, GoodGuestResult } from './fixtures/hostile/good-guest.ts';
import { RUN, STOP, setControl } from './fixtures/hostile/guest-control.ts';
import type { HoarderParams, HoarderResult } from './fixtures/hostile/hoarder-guest.ts';
import type { StormParams, StormResult } from './fixtures/hostile/storm-guest.ts';
import { slowStore } from './fixtures/hostile/slow-store.ts';
import { attachRawDisk } from './fixtures/hostile/toolstack.ts';

const GOOD = new URL('./fixtures/hostile/good-guest.js', import.meta.url);
const STORM = new URL('./fixtures/hostile/storm-guest.js', import.meta.url);
const HOARDER = new URL('./fixtures/hostile/hoarder-guest.js', import.meta.url);
/** Most the backend process may grow while a hostile guest runs beside the neighbour. */
const MAX_RSS_GROWTH = 64 << 20;
const NOTIFIES = 1_000_000;
/**
 * The storm lasts at least this long, also after the neighbour is done: the backend takes 10-15k
 * events a second here, and the RSS bound must be able to catch a leak of 1 KiB an event.
 */
const STORM_SECONDS = 8;
const MiB = 1 << 20;

/**
 * Most the backend's own memory may keep after a run, measured after a full collection: its heap and
 * the buffers it allocated (the main thread's, and each data-plane worker's when blkback has them;
 * guests are workers with heaps of their own, which RSS counts too). Idle runs keep nothing (within half a MiB either way); the storm alone delivers over
 * ten thousand events even on a loaded machine, so keeping 128 bytes an event would cross it.
 */
const MAX_RETAINED = 2 << 20;

setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
/** The main thread's heap and buffers, plus each data-plane worker's (BLKBACK_TEST_WORKERS): where the backend keeps things. */
async function retained(host: SimHost): Promise<number> {
  collect();
  const m = process.memoryUsage();
  const rings = host.blkback.ringHost;
  const workers = rings instanceof WorkerRingHost ? await rings.memory() : [];
  return m.heapUsed + m.external + workers.reduce((a, b) => a + b, 0);
}
const HOARD_DELAY_MS = 2;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (stalled?)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface Beside<R> {
  readonly hostile: R;
  readonly good: GoodGuestResult;
  readonly goodVbd: Vbd;
  readonly hostileVbd: Vbd;
  /** Largest RSS seen while both ran, over the RSS when the hostile guest was let go. */
  readonly rssGrowth: number;
  /** What the backend's memory kept over the run (MAX_RETAINED). */
  readonly retainedGrowth: number;
  readonly maxInflight: number;
}

/**
 * Runs the hostile guest `workload` on disk `target` (it reports { type: 'started', control }) and,
 * once it is let go, the neighbour beside it; stops it when the neighbour is done.
 */
async function beside<R>(host: SimHost, name: string, workload: URL, target: string, params: (devid: number) => unknown, round: number): Promise<Beside<R>> {
  const vdev = 'xvdb';
  const devid = vdevToDeviceId(vdev);
  let control = -1;
  let started!: () => void;
  const isStarted = new Promise<void>((resolve) => (started = resolve));
  const h = await host.createGuest(
    { name, memoryMiB: 16, disks: [] },
    {
      workload,
      params: params(devid),
      onReport: (m) => {
        const report = m as { type: string; control?: number };
        if (report.type === 'started') {
          control = report.control!;
          started();
        }
      },
    },
  );
  await attachRawDisk(host, h.domid, { target, vdev, readOnly: false });
  await withTimeout(Promise.race([isStarted, h.result.then(() => assert.fail(`${name} finished before it started`))]), 15_000, `${name} start`);
  const hostileVbd = host.blkback.vbds.get(`${h.domid}/${devid}`);
  assert.ok(hostileVbd !== undefined, `blkback serves ${name}'s disk`);

  let goodStarted!: () => void;
  const isGoodStarted = new Promise<void>((resolve) => (goodStarted = resolve));
  const goodParams: GoodGuestParams = {
    io: { rw: 'randread', bs: 4096, iodepth: 16, seconds: 1, span: 16 << 20, seed: 20 + round },
    verify: { operations: 800, iodepth: 16, maxBytes: 64 << 10, seed: 30 + round, length: 8 << 20, offset: 16 << 20 },
  };
  const g = await host.createGuest(
    { name: `good-${round}`, memoryMiB: 32, disks: [{ target: 'good', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
    { workload: GOOD, params: goodParams, onReport: (m) => (m as { type: string }).type === 'started' && goodStarted() },
  );
  await withTimeout(Promise.race([isGoodStarted, g.result]), 15_000, `good-${round} start`);
  const goodVbd = host.blkback.vbds.get(`${g.domid}/${vdevToDeviceId('xvda')}`);
  assert.ok(goodVbd !== undefined, 'blkback serves the neighbour');

  // From here on the backend serves both: sample its process and the hostile ring's requests in flight.
  const retainedAtStart = await retained(host);
  const rssAtStart = process.memoryUsage.rss();
  let rssMax = rssAtStart;
  let maxInflight = 0;
  const sample = (): void => {
    rssMax = Math.max(rssMax, process.memoryUsage.rss());
    maxInflight = Math.max(maxInflight, hostileVbd.inflight);
  };
  const sampler = setInterval(sample, 5);
  try {
    setControl(host, h.domid, control, RUN);
    const good = (await withTimeout(g.result, 60_000, `the neighbour of ${name}`)) as GoodGuestResult;
    setControl(host, h.domid, control, STOP);
    const hostile = (await withTimeout(h.result, 60_000, name)) as R;
    sample();
    return { hostile, good, goodVbd, hostileVbd, rssGrowth: rssMax - rssAtStart, retainedGrowth: (await retained(host)) - retainedAtStart, maxInflight };
  } finally {
    clearInterval(sampler);
    setControl(host, h.domid, control, STOP);
  }
}

function checkNeighbour(r: Beside<unknown>): void {
  const verify = r.good.verify as VerifyResult;
  assert.equal(verify.mismatches, 0, verify.firstMismatches.join('\n'));
  assert.ok(verify.reads > 0 && verify.writes > 0, 'the neighbour did verified reads and writes');
  assert.ok(r.good.io.ios > 0, 'the neighbour did random I/O beside the hostile guest');
  assert.deepEqual(
    Object.values(r.goodVbd.stats.errors).reduce((a, b) => a + b, 0),
    0,
    'no errors on the neighbour',
  );
}

test('blkback beside guests that storm the event channel and never consume responses', { timeout: 180_000 }, async (t: TestContext) => {
  const host = await SimHost.start(testWorkers());
  try {
    // Written through once, so the neighbour's I/O does not grow the process as it first touches it.
    const good = createRamDisk(32 << 20);
    await fillDiskPattern(good, 0x600d);
    host.registerStore('good', good);
    const stormSeed = 0x5702;
    const stormDisk = createRamDisk(1 << 20);
    await fillDiskPattern(stormDisk, stormSeed);
    host.registerStore('storm', stormDisk);
    // Slow, so the hoarder's requests stay in flight and the ring's slots are all taken at times.
    host.registerStore('hoard', slowStore(createRamDisk(1 << 20), HOARD_DELAY_MS));

    await t.test('an event-channel storm of 10^6 notifies on its ring', async (st) => {
      const r = await beside<StormResult>(
        host,
        'stormer',
        STORM,
        'storm',
        (devid): StormParams => ({ devid, notifies: NOTIFIES, burst: 1000, minSeconds: STORM_SECONDS, diskSeed: stormSeed, maxSeconds: 60 }),
        0,
      );
      const s = r.hostile;
      st.diagnostic(
        `${s.notifies} notifies in ${Math.round(s.stormMs)} ms, ${s.delivered} events taken by the backend's side, ${s.reads} reads on the stormed ring; ` +
          `neighbour ${Math.round(r.good.io.iops)} IOPS, ${(r.good.verify as VerifyResult).reads + (r.good.verify as VerifyResult).writes} verified ops; RSS grew ${(r.rssGrowth / MiB).toFixed(1)} MiB, the backend kept ${(r.retainedGrowth / MiB).toFixed(2)} MiB`,
      );
      assert.ok(s.notifies >= NOTIFIES, `the guest sent ${s.notifies} notifies`);
      assert.ok(s.delivered > 0, `the backend's side took ${s.delivered} events`);
      assert.equal(s.stalled, false, 'the stormed ring kept answering');
      assert.equal(s.badReads, 0, 'every read on the stormed ring came back right');
      assert.ok(s.reads > 0);
      checkNeighbour(r);
      assert.ok(r.rssGrowth < MAX_RSS_GROWTH, `the backend process grew ${(r.rssGrowth / MiB).toFixed(1)} MiB during the storm`);
      assert.ok(r.retainedGrowth < MAX_RETAINED, `the backend kept ${(r.retainedGrowth / MiB).toFixed(2)} MiB after ${s.delivered} events`);
      assert.equal(r.hostileVbd.halted, false);
      assert.equal(
        Object.values(r.hostileVbd.stats.errors).reduce((a, b) => a + b, 0),
        0,
        'notifies alone are no error',
      );
    });

    await t.test('a guest that never consumes responses and keeps its ring full', async (st) => {
      const r = await beside<HoarderResult>(host, 'hoarder', HOARDER, 'hoard', (devid): HoarderParams => ({ devid, stallMs: 300, maxSeconds: 60 }), 1);
      const h = r.hostile;
      st.diagnostic(
        `${h.size}-slot ring: stall answered ${h.stall.answered} and stayed put through ${h.stall.notifies} notifies; ` +
          `then ${h.full.requests} requests kept it full (${h.full.answered} answered, at most ${r.maxInflight} in flight); ` +
          `neighbour ${Math.round(r.good.io.iops)} IOPS; RSS grew ${(r.rssGrowth / MiB).toFixed(1)} MiB, the backend kept ${(r.retainedGrowth / MiB).toFixed(2)} MiB`,
      );
      assert.equal(h.stall.answered, h.size, 'a full ring of requests is answered in full, and no further');
      assert.equal(h.stall.badAnswers, 0, 'each answer answers one of the requests');
      assert.equal(h.stall.ahead, 0, 'rsp_prod never passed req_prod');
      assert.equal(h.stall.changedBytes, 0, 'the unconsumed answers were left alone while the guest only notified');
      assert.ok(h.stall.notifies > 0);
      assert.equal(h.full.stalled, false, 'every request of the full ring was answered');
      assert.equal(h.full.badAnswers, 0, 'each answer answers one of the requests');
      assert.equal(h.full.ahead, 0, 'rsp_prod never passed req_prod');
      assert.equal(h.full.answered, h.full.requests, 'as many answers as requests');
      assert.ok(h.full.requests > h.size, `the ring was refilled (${h.full.requests} requests)`);
      assert.ok(r.maxInflight > 0 && r.maxInflight <= h.size, `never more requests held than the ring has slots (${r.maxInflight})`);
      checkNeighbour(r);
      assert.ok(r.rssGrowth < MAX_RSS_GROWTH, `the backend process grew ${(r.rssGrowth / MiB).toFixed(1)} MiB beside the hoarder`);
      assert.ok(r.retainedGrowth < MAX_RETAINED, `the backend kept ${(r.retainedGrowth / MiB).toFixed(2)} MiB after ${h.full.requests} requests`);
      assert.equal(r.hostileVbd.halted, false);
    });

    host.registerStore('fresh', createRamDisk(8 << 20));
    const fresh = await host.createGuest(
      { name: 'fresh', memoryMiB: 32, disks: [{ target: 'fresh', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: VERIFY, params: { operations: 300, iodepth: 16, seed: 97 } },
    );
    const fr = (await withTimeout(fresh.result, 20_000, 'fresh guest')) as VerifyResult;
    assert.equal(fr.mismatches, 0, fr.firstMismatches.join('\n'));
    assert.equal(host.blkback.budget.used, 0, 'no in-flight budget leaked');
  } finally {
    await withTimeout(host.stop(), 15_000, 'host.stop');
  }
});
