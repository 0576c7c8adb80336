// A guest flooding xenstore must cost a neighbour's disk no more than a guest burning a CPU does
// (issue 14, finding 1). Both hostile guests and the neighbour run at once; the host switches the
// flood and the burner on and off in turns (order alternating by round) while the neighbour does
// 4 KiB random reads at queue depth 16, and compares the neighbour's IOPS in the two conditions of
// each round (adjacent in time, so a load elsewhere on the machine mostly moves both), taking the
// median over the rounds. On a busy machine single rounds swing both ways (0.6-1.5 with a CPU hog
// beside the test, against 0.01 before the daemon took turns): when the median of the first ROUNDS
// falls short, ROUNDS more are measured and the median of all of them decides.
import assert from 'node:assert/strict';
import test from 'node:test';
import { createRamDisk } from '../src/block/ram.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { GuestHandle } from '../src/sim-host/host.ts';
import { absNow } from './helpers-xenstore.ts';
import type { FloodResult, NeighbourResult, XsGuestParams } from './helpers-xenstore.ts';

const GUEST = new URL('./helpers-xenstore.js', import.meta.url);

const ROUNDS = 7;
/** After switching a condition on: let queues fill (or drain) before measuring. */
const SETTLE_MS = 150;
const MEASURE_MS = 300;
/** After switching it off: let the flood's outstanding requests drain. */
const REST_MS = 100;
/** Neighbour IOPS beside the flood must be at least this share of its IOPS beside the burner. */
const MIN_RATIO = 0.8;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** IOPS of the neighbour over [from, to) (absolute ms), from the buckets wholly inside it. */
function iopsIn(r: NeighbourResult, from: number, to: number): number {
  const first = Math.ceil((from - r.start) / r.bucketMs);
  const last = Math.floor((to - r.start) / r.bucketMs); // exclusive
  let n = 0;
  for (let b = first; b < last; b++) n += r.counts[b] ?? 0;
  return (n * 1000) / ((last - first) * r.bucketMs);
}

test('a guest flooding xenstore costs a neighbour no more disk IOPS than a guest burning a CPU', { timeout: 60_000 }, async (t) => {
  const host = await SimHost.start();
  try {
    host.registerStore('neighbour', createRamDisk(32 << 20));
    const start = async (name: string, params: XsGuestParams, disk: boolean, ready: string, onReport?: (m: unknown) => void): Promise<GuestHandle> => {
      let isReady!: () => void;
      const readyP = new Promise<void>((resolve) => (isReady = resolve));
      const g = await host.createGuest(
        { name, memoryMiB: 32, disks: disk ? [{ target: 'neighbour', vdev: 'xvda', readOnly: true, backendtype: 'phy' }] : [] },
        {
          workload: GUEST,
          params,
          onReport: (m) => {
            if ((m as { type: string }).type === ready) isReady();
            onReport?.(m);
          },
        },
      );
      await withTimeout(Promise.race([readyP, g.result.then(() => assert.fail(`${name} finished early`))]), 15_000, `${name} start`);
      return g;
    };
    const flooder = await start('flooder', { mode: 'flood', outstanding: 256, keys: 256, valueBytes: 64 }, false, 'ready');
    const burner = await start('burner', { mode: 'burn' }, false, 'ready');
    const go = (g: GuestHandle, v: string): Promise<void> => host.xs.write(`/local/domain/${g.domid}/data/go`, v);

    const seconds = (300 + (2 * ROUNDS + 1) * 2 * (SETTLE_MS + MEASURE_MS + REST_MS) + 2000) / 1000;
    let counts: ((r: NeighbourResult) => void) | undefined;
    const nb = await start('neighbour', { mode: 'neighbour', seconds, bucketMs: 10, iodepth: 16, bs: 4096, span: 16 << 20 }, true, 'ready', (m) => {
      if ((m as { type: string }).type === 'counts') counts?.(m as NeighbourResult);
    });
    await sleep(300);
    const quiet: [number, number][] = [];
    const intervals: Record<'flood' | 'burn', [number, number][]> = { flood: [], burn: [] };
    const measure = async (first: number, end: number): Promise<void> => {
      for (let r = first; r < end; r++) {
        const order = r % 2 === 0 ? (['flood', 'burn'] as const) : (['burn', 'flood'] as const);
        for (const cond of order) {
          const g = cond === 'flood' ? flooder : burner;
          await go(g, '1');
          await sleep(SETTLE_MS);
          const from = absNow();
          await sleep(MEASURE_MS);
          if (r >= 0) intervals[cond].push([from, absNow()]);
          await go(g, '0');
          const restFrom = absNow();
          await sleep(REST_MS);
          if (cond === order[1] && r >= 0) quiet.push([restFrom + 50, absNow()]);
        }
      }
    };
    const snapshot = async (): Promise<NeighbourResult> => {
      const got = new Promise<NeighbourResult>((resolve) => (counts = resolve));
      await go(nb, 'report');
      return withTimeout(got, 10_000, 'neighbour counts');
    };
    const ratios = (r: NeighbourResult): { flood: number[]; burn: number[]; ratio: number } => {
      const flood = intervals.flood.map(([a, b]) => iopsIn(r, a, b));
      const burn = intervals.burn.map(([a, b]) => iopsIn(r, a, b));
      return { flood, burn, ratio: median(flood.map((f, i) => f / (burn[i] as number))) };
    };
    // Round -1 warms up (the JIT, the flood's first burst) and is not counted.
    await measure(-1, ROUNDS);
    let result = await snapshot();
    let extended = false;
    if (ratios(result).ratio < MIN_RATIO) {
      extended = true;
      await measure(ROUNDS, 2 * ROUNDS);
      result = await snapshot();
    }
    await go(nb, 'stop');
    await withTimeout(nb.result, 20_000, 'neighbour');
    await go(flooder, 'stop');
    await go(burner, 'stop');
    const fl = (await withTimeout(flooder.result, 20_000, 'flooder')) as FloodResult;
    await withTimeout(burner.result, 20_000, 'burner');

    const { flood, burn, ratio } = ratios(result);
    const calm = quiet.map(([a, b]) => iopsIn(result, a, b));
    const rounds = flood.map((f, i) => `${Math.round(f / 1000)}k/${Math.round((burn[i] as number) / 1000)}k`).join(' ');
    t.diagnostic(
      `xenstore flood: neighbour ${Math.round(median(flood))} IOPS beside the flood, ${Math.round(median(burn))} beside a CPU burner, ` +
        `${Math.round(median(calm))} between; median ratio ${ratio.toFixed(2)} over ${flood.length} rounds${extended ? ' (extended)' : ''} (flood/burner: ${rounds}); ` +
        `the flood completed ${fl.writes} writes (${Math.round(fl.writes / (((flood.length + 1) * (SETTLE_MS + MEASURE_MS)) / 1000))}/s while on)`,
    );
    assert.equal(fl.errors, 0, 'the flood’s writes all succeed (it is slowed, not refused)');
    assert.ok(fl.writes > 1000, `the flood was served (${fl.writes} writes)`);
    assert.ok(
      ratio >= MIN_RATIO,
      `neighbour beside the flood kept a median ${ratio.toFixed(2)} of its IOPS beside the burner, < ${MIN_RATIO} (rounds flood/burner: ${rounds})`,
    );
  } finally {
    await withTimeout(host.stop(), 15_000, 'host.stop');
  }
});
