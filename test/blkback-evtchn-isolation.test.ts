// Each domain sees only its own end of its event channels, as Xen's 2-level ABI gives each domain
// its own evtchn_pending/evtchn_mask. A guest that masks every port it can reach and writes all-ones
// over every event table it was handed (test/fixtures/hostile/evtchn-vandal.ts) must not stall or
// slow a neighbour's disk: the neighbour's verified I/O completes, at no less than half the IOPS it
// has beside a guest burning the same bursts of CPU. (When guests were handed dom0's whole table,
// the first masking pass stalled every guest's ring.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { testWorkers } from './helpers-workers.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import type { GoodGuestParams, GoodGuestResult } from './fixtures/hostile/good-guest.ts';
import type { VandalParams, VandalResult } from './fixtures/hostile/evtchn-vandal.ts';

const GOOD = new URL('./fixtures/hostile/good-guest.js', import.meta.url);
const VANDAL = new URL('./fixtures/hostile/evtchn-vandal.js', import.meta.url);
const MIN_SHARE = 0.5;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (stalled?)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** The neighbour's run beside a guest in `mode`; returns both results. */
async function beside(host: SimHost, round: number, mode: VandalParams['mode']): Promise<{ good: GoodGuestResult; vandal: VandalResult }> {
  let started!: () => void;
  const isStarted = new Promise<void>((resolve) => (started = resolve));
  const params: VandalParams = { mode, stopKey: 'stop', maxSeconds: 30 };
  const v = await host.createGuest(
    { name: `${mode}-${round}`, memoryMiB: 16, disks: [] },
    { workload: VANDAL, params, onReport: (m) => (m as { type: string }).type === 'started' && started() },
  );
  await withTimeout(Promise.race([isStarted, v.result]), 10_000, `${mode} guest start`);
  const goodParams: GoodGuestParams = {
    io: { rw: 'randread', bs: 4096, iodepth: 16, seconds: 1, span: 16 << 20, seed: 11 + round },
    verify: { operations: 600, iodepth: 16, maxBytes: 64 << 10, seed: 12 + round, length: 8 << 20, offset: 16 << 20 },
  };
  const g = await host.createGuest(
    { name: `good-${mode}-${round}`, memoryMiB: 32, disks: [{ target: 'good', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
    { workload: GOOD, params: goodParams },
  );
  try {
    const good = (await withTimeout(g.result, 20_000, `the neighbour of the ${mode} guest`)) as GoodGuestResult;
    return { good, vandal: await stopGuest() };
  } catch (error) {
    await stopGuest().catch(() => undefined);
    throw error;
  }
  async function stopGuest(): Promise<VandalResult> {
    await host.xs.write(`/local/domain/${v.domid}/data/stop`, '1');
    return (await withTimeout(v.result, 10_000, `${mode} guest stop`)) as VandalResult;
  }
}

test('a guest masking and overwriting every event table it holds does not stall or slow its neighbour', { timeout: 120_000 }, async (t) => {
  const host = await SimHost.start(testWorkers());
  try {
    host.registerStore('good', createRamDisk(32 << 20));
    const ratios: number[] = [];
    for (let round = 0; round < 2; round++) {
      const base = await beside(host, round, 'idle');
      const attacked = await beside(host, round, 'vandal');
      assert.ok(attacked.vandal.passes > 10, `the vandal kept at it (${attacked.vandal.passes} passes)`);
      assert.ok(attacked.vandal.tables >= 1, 'the vandal found an event table to mask');
      for (const r of [base, attacked]) {
        const verify = r.good.verify as VerifyResult;
        assert.equal(verify.mismatches, 0, verify.firstMismatches.join('\n'));
        assert.ok(verify.reads > 0 && verify.writes > 0);
      }
      const ratio = attacked.good.io.iops / base.good.io.iops;
      ratios.push(ratio);
      t.diagnostic(
        `round ${round}: ${Math.round(attacked.good.io.iops)} IOPS beside the vandal (${attacked.vandal.buffers} buffers, ${attacked.vandal.tables} tables, ${attacked.vandal.passes} passes), ` +
          `${Math.round(base.good.io.iops)} beside the idle burner: ${Math.round(ratio * 100)}%`,
      );
    }
    // The better of two rounds: one round can lose a scheduling lottery on a shared 2-core machine;
    // a stall or a real slowdown loses both.
    const best = Math.max(...ratios);
    assert.ok(best >= MIN_SHARE, `neighbour kept ${ratios.map((r) => `${Math.round(r * 100)}%`).join(', ')} of its IOPS beside an idle burner`);
  } finally {
    await withTimeout(host.stop(), 15_000, 'host.stop');
  }
});
