// Fairness that survives a busy host. A well-behaved guest (4 KiB random reads, QD 16) runs beside a
// flooding guest (a 512-slot ring kept full of 1-11-segment requests) and beside a guest that only
// burns CPU, on an idle host and with a CPU hog (another process spinning on a core) running
// throughout. Simulated guests are threads on the host's cores, so part of what a neighbour costs is
// CPU the backend cannot give back: the CPU-burning neighbour measures that part. What the backend
// owes is a fair share of its own service:
//   - of the segments the backend answers while both guests have requests queued
//     (VbdStats.seg_contended), the well-behaved guest gets at least 45%;
//   - its IOPS beside the flooder are at least 0.5x its IOPS beside the CPU burner (same hog in both).
//     0.5x is what the fair share owes where the backend's thread is the bottleneck: the good guest
//     saturates too (QD16 as fast as it can), so beside the flooder it is owed half the segments,
//     and its 1-segment requests cost more time per segment than the flooder's. Where its own thread
//     is the bottleneck it gets more. A backend that takes a ring's every waiting request in one turn
//     left it 21-23% here; a fair one measured 61-134% over runs on 2-core machines (69-79% in one CI
//     run, where a bound of 0.8 failed): the backend's work for the flooder shares the two cores, and
//     the burner baseline itself moves by 1.5x between attempts. Round-robin turns of 16 segments
//     with no fair share measured 98-119% (the good guest's ring, idle between its events, is served
//     at each event at once), so this ratio does not show a fair share: the service share does.
// And the backend is work-conserving: beside a guest that needs little, a flooder keeps most of the
// service it gets alone (a cap on its backend time per 4 ms window, as this replaced, left it 13-27%).
//
// Both neighbours run during one run of the well-behaved guest and take turns, in phases of
// PHASE_MS, steered through a word in their own memory (fixtures/hostile/guest-control.ts): other
// load on a shared machine moves the IOPS of runs a few seconds apart by 2x, but it moves adjacent
// phases alike. Each phase is counted from SETTLE_MS after the switch (the flooder's ring drains or
// fills meanwhile) from the backend's counters, after a warm-up with both neighbours paused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { Vbd } from '../src/blkback/vbd.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { vdevToDeviceId } from '../src/config/xl-disk.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { testWorkersSharingOne } from './helpers-workers.ts';
import type { GuestHandle } from '../src/sim-host/host.ts';
import type { GoodGuestParams, GoodGuestResult } from './fixtures/hostile/good-guest.ts';
import type { BurnerParams } from './fixtures/hostile/cpu-burner.ts';
import type { FlooderParams } from './fixtures/hostile/flooder.ts';
import { PAUSE, RUN, STOP, setControl } from './fixtures/hostile/guest-control.ts';
import type { LoadResult } from './fixtures/hostile/hostile-guest.ts';
import type { PulseParams } from './fixtures/hostile/pulse-guest.ts';
import { attachRawDisk } from './fixtures/hostile/toolstack.ts';

const GOOD = new URL('./fixtures/hostile/good-guest.js', import.meta.url);
const FLOODER = new URL('./fixtures/hostile/flooder.js', import.meta.url);
const BURNER = new URL('./fixtures/hostile/cpu-burner.js', import.meta.url);
const PULSE = new URL('./fixtures/hostile/pulse-guest.js', import.meta.url);

/** The well-behaved guest's run: a warm-up with both neighbours paused, then their turns. */
const GOOD_SECONDS = 5;
const WARMUP_MS = 600;
const PHASE_MS = 200;
const SETTLE_MS = 15;
/** The work-conservation check's windows. */
const WC_SECONDS = 1.2;
const MIN_SERVICE_SHARE = 0.45;
const MIN_VS_BURNER = 0.5;
const MIN_WORK_CONSERVED = 0.45;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang?)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Another process burning a core (`node -e 'for(;;){}'`) until stopped. */
function startHog(): ChildProcess {
  return spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' });
}

async function stopHog(hog: ChildProcess): Promise<void> {
  if (hog.exitCode !== null || hog.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => hog.once('exit', () => resolve()));
  hog.kill('SIGKILL');
  await exited;
}

/** A neighbour guest steered by its control word. */
interface Neighbour {
  readonly guest: GuestHandle;
  readonly vbd: () => Vbd | undefined;
  set(value: number): void;
  /** STOP, then its result. */
  stop(): Promise<unknown>;
}

async function startNeighbour(host: SimHost, kind: 'flooder' | 'burner', name: string, initial: number, seed = 1): Promise<Neighbour> {
  let control = -1;
  let started!: () => void;
  const isStarted = new Promise<void>((resolve) => (started = resolve));
  const onReport = (m: unknown): void => {
    const report = m as { type: string; control?: number };
    if (report.type !== 'started' || report.control === undefined) return;
    control = report.control;
    started();
  };
  const devid = vdevToDeviceId('xvdb');
  let guest: GuestHandle;
  if (kind === 'flooder') {
    const params: FlooderParams = { devid, seed, initial, maxSeconds: 90 };
    guest = await host.createGuest({ name, memoryMiB: 32, disks: [] }, { workload: FLOODER, params, onReport });
    await attachRawDisk(host, guest.domid, { target: 'flood', vdev: 'xvdb', readOnly: false });
  } else {
    const params: BurnerParams = { initial, maxSeconds: 90 };
    guest = await host.createGuest({ name, memoryMiB: 16, disks: [] }, { workload: BURNER, params, onReport });
  }
  await withTimeout(Promise.race([isStarted, guest.result]), 15_000, `${name} start`);
  const set = (value: number): void => setControl(host, guest.domid, control, value);
  return {
    guest,
    vbd: () => host.blkback.vbds.get(`${guest.domid}/${devid}`),
    set,
    stop: () => {
      set(STOP);
      return withTimeout(guest.result, 20_000, `${name} stop`);
    },
  };
}

interface Phases {
  /** Per neighbour: the good guest's segments answered, and how long, summed over its phases. */
  readonly goodSegments: { flooder: number; burner: number };
  readonly ms: { flooder: number; burner: number };
  /** Over the flooder's phases: segments answered while the other guest had requests queued. */
  readonly goodContended: number;
  readonly flooderContended: number;
  readonly phases: number;
}

/** Runs the good guest while the flooder and the burner take turns; counts each turn from the backend's counters. */
async function alternate(host: SimHost, label: string): Promise<Phases> {
  const flooder = await startNeighbour(host, 'flooder', `flooder-${label}`, PAUSE);
  const burner = await startNeighbour(host, 'burner', `burner-${label}`, PAUSE);
  const out = { goodSegments: { flooder: 0, burner: 0 }, ms: { flooder: 0, burner: 0 }, goodContended: 0, flooderContended: 0, phases: 0 };
  try {
    let running = false;
    let io!: () => void;
    const ioStarted = new Promise<void>((resolve) => (io = resolve));
    const params: GoodGuestParams = { io: { rw: 'randread', bs: 4096, iodepth: 16, seconds: GOOD_SECONDS, span: 16 << 20, seed: 11 } };
    const good = await host.createGuest(
      { name: `good-${label}`, memoryMiB: 32, disks: [{ target: 'good', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      {
        workload: GOOD,
        params,
        onReport: (m) => {
          const type = (m as { type: string }).type;
          if (type === 'started') {
            running = true;
            io();
          } else if (type === 'io-done') running = false;
        },
      },
    );
    await withTimeout(Promise.race([ioStarted, good.result]), 15_000, `good-${label} start`);
    const goodVbd = host.blkback.vbds.get(`${good.domid}/${vdevToDeviceId('xvda')}`);
    assert.ok(goodVbd !== undefined, 'blkback serves the good guest');
    const vbd = goodVbd;
    await sleep(WARMUP_MS); // the first few hundred milliseconds of a run are slower (JIT): no one's turn
    for (let phase = 0; running; phase++) {
      const kind = phase % 2 === 0 ? 'flooder' : 'burner';
      flooder.set(kind === 'flooder' ? RUN : PAUSE);
      burner.set(kind === 'burner' ? RUN : PAUSE);
      await sleep(SETTLE_MS);
      const t0 = performance.now();
      const seg0 = vbd.stats.seg;
      const gc0 = vbd.stats.seg_contended;
      const fc0 = flooder.vbd()?.stats.seg_contended ?? 0;
      await sleep(PHASE_MS);
      if (!running) break; // the good guest's run ended inside this phase
      out.goodSegments[kind] += vbd.stats.seg - seg0;
      out.ms[kind] += performance.now() - t0;
      if (kind === 'flooder') {
        out.goodContended += vbd.stats.seg_contended - gc0;
        out.flooderContended += (flooder.vbd()?.stats.seg_contended ?? 0) - fc0;
      }
      out.phases++;
    }
    flooder.set(PAUSE);
    burner.set(PAUSE);
    const result = (await withTimeout(good.result, 30_000, `good-${label}`)) as GoodGuestResult;
    assert.ok(result.io.ios > 1000, `the good guest did I/O (${result.io.ios})`);
    assert.deepEqual(
      Object.values(vbd.stats.errors).filter((n) => n > 0),
      [],
      'no errors on the good guest',
    );
  } finally {
    const load = (await flooder.stop()) as LoadResult;
    await burner.stop();
    assert.equal(load.stalled, false, 'the flooded ring never stalled');
    assert.equal(load.errors, 0, `valid flood requests all succeed: ${load.firstErrors.join('; ')}`);
    assert.ok(load.requests > 2 * 512, `the flood kept its ring full (${load.requests} requests)`);
  }
  return out;
}

/**
 * Work conservation: the flooder alone for WC_SECONDS, then beside a guest that needs little (one
 * 4 KiB read a millisecond, fixtures/hostile/pulse-guest.ts), then alone again. Returns the flooder's
 * segments per second alone (the mean of both windows) and beside it, and the light guest's IOPS.
 */
async function floodBesideLight(host: SimHost, round: number): Promise<{ alone: number; beside: number; lightIops: number }> {
  const flooder = await startNeighbour(host, 'flooder', `flooder-wc-${round}`, RUN, 200 + round);
  try {
    const segments = (): number => flooder.vbd()?.stats.seg ?? 0;
    const window = async (): Promise<number> => {
      const t = performance.now();
      const s = segments();
      await sleep(WC_SECONDS * 1000);
      return ((segments() - s) * 1000) / (performance.now() - t);
    };
    await sleep(200); // its ring full and turning
    const alone1 = await window();
    let t0 = 0;
    let s0 = 0;
    let lightStarted!: () => void;
    const isLightStarted = new Promise<void>((resolve) => (lightStarted = resolve));
    const params: PulseParams = { seconds: WC_SECONDS, span: 16 << 20, seed: 31 + round };
    const light = await host.createGuest(
      { name: `light-${round}`, memoryMiB: 32, disks: [{ target: 'good', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      {
        workload: PULSE,
        params,
        onReport: () => {
          t0 = performance.now();
          s0 = segments();
          lightStarted();
        },
      },
    );
    await withTimeout(Promise.race([isLightStarted, light.result]), 15_000, `light-${round} start`);
    const result = (await withTimeout(light.result, 30_000, `light-${round}`)) as { iops: number };
    const beside = ((segments() - s0) * 1000) / (performance.now() - t0);
    const alone = (alone1 + (await window())) / 2;
    return { alone, beside, lightIops: result.iops };
  } finally {
    const load = (await flooder.stop()) as LoadResult;
    assert.equal(load.stalled, false);
    assert.equal(load.errors, 0);
  }
}

for (const hogged of [false, true]) {
  const label = hogged ? 'with a CPU hog beside it' : 'idle host';
  test(`blkback shares its service fairly between a flooding guest and a well-behaved one (${label})`, { timeout: 120_000 }, async (t) => {
    const hog = hogged ? startHog() : null;
    const host = await SimHost.start(testWorkersSharingOne());
    try {
      host.registerStore('good', createRamDisk(32 << 20));
      host.registerStore('flood', createRamDisk(8 << 20));
      // The IOPS comparison is a measurement of threads sharing two cores: with other load on the
      // machine, a run of either neighbour can land a bad stretch of scheduling. It is measured again
      // if it falls short, up to twice more (the service share must hold in every attempt). Beside a
      // hog this ratio was 61-134% over runs here: a backend that starves the good guest (a whole
      // ring per turn: 21-23%) stays far below in every attempt.
      let vsBurner = 0;
      for (let attempt = 0; attempt < 3 && vsBurner < MIN_VS_BURNER; attempt++) {
        const p = await alternate(host, `${hogged ? 'hog' : 'idle'}-${attempt}`);
        const rate = (kind: 'flooder' | 'burner'): number => (p.goodSegments[kind] * 1000) / p.ms[kind];
        const ratio = rate('flooder') / rate('burner');
        vsBurner = Math.max(vsBurner, ratio);
        const share = p.goodContended / Math.max(1, p.goodContended + p.flooderContended);
        const line = `fairness: service share ${Math.round(share * 100)}%, vs CPU-burning neighbour ${Math.round(ratio * 100)}%`;
        t.diagnostic(
          `${label}, attempt ${attempt}: ${p.phases} phases; the good guest's IOPS beside the flooder ${Math.round(rate('flooder'))}, beside the burner ${Math.round(rate('burner'))}; ` +
            `segments answered while both had work queued: good ${p.goodContended}, flooder ${p.flooderContended}`,
        );
        t.diagnostic(`${line} (${label})`);
        console.log(`${line} (${label})`);
        assert.ok(p.phases >= 6, `the neighbours took turns (${p.phases} phases)`);
        assert.ok(p.goodContended + p.flooderContended > 1000, 'both guests had requests queued together');
        assert.ok(share >= MIN_SERVICE_SHARE, `${label}: the good guest got ${Math.round(share * 100)}% of the segments answered while both had work queued`);
      }
      assert.ok(vsBurner >= MIN_VS_BURNER, `${label}: beside the flooder the good guest kept ${Math.round(vsBurner * 100)}% of its IOPS beside a CPU burner`);

      // Work-conserving: the flooder loses to a light neighbour about what that neighbour uses, not
      // a share the backend then leaves idle. Measured again if short, since one window can lose a
      // core to other load; a cap on the flooder fails both.
      let kept = 0;
      for (let attempt = 0; attempt < 2 && kept < MIN_WORK_CONSERVED; attempt++) {
        const wc = await floodBesideLight(host, attempt);
        kept = Math.max(kept, wc.beside / wc.alone);
        t.diagnostic(
          `${label}: the flooder got ${Math.round(wc.alone)} segments/s alone, ${Math.round(wc.beside)} beside a guest reading 4 KiB a millisecond (${Math.round(wc.lightIops)} IOPS): ${Math.round((wc.beside / wc.alone) * 100)}%`,
        );
      }
      assert.ok(
        kept >= MIN_WORK_CONSERVED,
        `${label}: beside a guest that needs little the flooder kept ${Math.round(kept * 100)}% of the service it had alone`,
      );
    } finally {
      await withTimeout(host.stop(), 15_000, 'host.stop');
      if (hog !== null) await stopHog(hog);
    }
  });
}
