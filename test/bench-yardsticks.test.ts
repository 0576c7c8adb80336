// Honest yardsticks (src/bench): the paths a suite compares take turns, the first rotating with the
// round, and say so; the kernel path's fio does the accounting our paths do (--gtod_reduce=1: no
// per-I/O latency), checked on a real fio run; a fractional runtime reaches fio as asked. Runs are
// a fraction of a second: what is checked is the order and the accounting, never a speed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBench } from '../src/bench/blkif-bench.ts';
import type { BlkifPath } from '../src/bench/blkif-bench.ts';
import { fioRuntime } from '../src/reproduce/fio-runtime.ts';
import { KernelPath, kernelFioArgs } from '../src/bench/kernel-fio.ts';
import { orderLine, rotation } from '../src/reproduce/rotation.ts';
import { runRunnerBench } from '../src/bench/runner-bench.ts';
import { Spawner } from '../src/bench/spawner.ts';
import { runExperiment } from '../src/reproduce/experiment.ts';
import { fioMissing, loopMissing, stopIfMissing } from './helpers-tools.ts';

const MiB = 1 << 20;

test('rotation: round r starts with path r-1, keeps the cycle, and over n rounds puts every path in every place once', () => {
  const paths = ['guest', 'bare', 'kernel'] as const;
  assert.deepEqual(rotation(paths, 1), ['guest', 'bare', 'kernel']);
  assert.deepEqual(rotation(paths, 2), ['bare', 'kernel', 'guest']);
  assert.deepEqual(rotation(paths, 3), ['kernel', 'guest', 'bare']);
  assert.deepEqual(rotation(paths, 4), rotation(paths, 1));
  for (let place = 0; place < paths.length; place++) {
    assert.deepEqual(new Set([1, 2, 3].map((r) => rotation(paths, r)[place])), new Set(paths), `place ${place + 1}`);
  }
  assert.deepEqual(rotation(['phy', 'file'], 2), ['file', 'phy']);
  assert.equal(orderLine(2, rotation(paths, 2)), 'round 2: bare, kernel, guest');
});

test('fioRuntime: fractions of a second reach fio as milliseconds (a bare 0.5 is 0 to fio: no runtime at all)', () => {
  assert.equal(fioRuntime(0.5), '500ms');
  assert.equal(fioRuntime(1.5), '1500ms');
  assert.equal(fioRuntime(3), '3000ms');
  assert.throws(() => fioRuntime(0), RangeError);
  assert.ok(kernelFioArgs('/dev/loop9', 'randread', 4096, 32, 0.25).includes('--runtime=250ms'));
});

test('blkif suite: guest and bare take turns, the first rotating with the round; the order is printed and recorded', async () => {
  const lines: string[] = [];
  const report = await runBench({
    seconds: 0.1,
    rounds: 2,
    span: 4 * MiB,
    cases: [{ rw: 'randread', bs: 4096, iodepth: 1 }],
    kernel: false,
    progress: (l) => lines.push(l),
  });
  const order = (round: number): BlkifPath[] =>
    report.results
      .filter((r) => r.round === round)
      .sort((a, b) => a.position - b.position)
      .map((r) => r.path);
  assert.deepEqual(order(1), ['guest', 'bare']);
  assert.deepEqual(order(2), ['bare', 'guest']);
  // Results are in the order they ran.
  assert.deepEqual(
    report.results.map((r) => `${r.round}:${r.path}`),
    ['1:guest', '1:bare', '2:bare', '2:guest'],
  );
  assert.ok(lines.includes('path order, round 1: guest, bare'), lines.join('\n'));
  assert.ok(lines.includes('path order, round 2: bare, guest'), lines.join('\n'));
  assert.match(report.accounting, /guest and bare count completions.*--gtod_reduce=1/);
  for (const r of report.results) assert.ok(r.iops > 0, `${r.path} round ${r.round} did I/O`);
});

test('kernel path: fio runs with --gtod_reduce=1 and records no latency (equal accounting), for the whole runtime asked', async (t) => {
  if (stopIfMissing(t, loopMissing()) || stopIfMissing(t, fioMissing())) return;
  const spawner = Spawner.start();
  let kernel: KernelPath | undefined;
  try {
    kernel = await KernelPath.create(8 * MiB, spawner);
    const r = await kernel.measure('randread', 4096, 8, 0.3);
    assert.ok(r.iops > 0, 'fio did I/O (a runtime of 0.3 s reached it)');
    assert.equal(r.latencySamples, 0, 'no completion latency recorded: the same accounting as runRandomIo');
  } finally {
    await kernel?.close();
    spawner.close();
  }
});

test('runner suite: our runner and fio take turns, the first rotating; both do full latency accounting, and say so', async (t) => {
  if (stopIfMissing(t, fioMissing())) return;
  const lines: string[] = [];
  const report = await runRunnerBench({ seconds: 0.3, rounds: 2, progress: (l) => lines.push(l) });
  assert.deepEqual(
    report.results.map((r) => `${r.round}:${r.position}:${r.path}`),
    ['1:1:runner', '1:2:fio-null', '2:1:fio-null', '2:2:runner'],
  );
  assert.ok(lines.includes('[runner] path order, round 2: fio-null, runner'), lines.join('\n'));
  assert.match(report.job, /^runtime=300ms$/m);
  assert.match(report.accounting, /full on both/);
  for (const r of report.results) {
    assert.ok(r.ios > 0, `${r.path} round ${r.round} did I/O`);
    // 300 ms asked: a job that reads runtime=0.3 as 0 would stop at once (or run to size=1g).
    assert.ok(r.wallSeconds > 0.2 && r.wallSeconds < 1, `${r.path} ran ${r.wallSeconds} s`);
  }
});

test('reproduce: phy and file take turns, the first rotating run by run; the order is printed and recorded', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'yardstick-reproduce-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  const cfg = (name: string, disk: string): { path: string; text: string } => ({
    path: `${name}.cfg`,
    text: `name = "${name}"\nmemory = 64\ndisk = [ '${disk}:/dev/sdb,xvda,w' ]\n`,
  });
  const lines: string[] = [];
  const outcome = await runExperiment({
    jobFiles: [{ path: 'jobs/tiny.fio', text: '[tiny]\nfilename=/dev/xvda\nrw=randread\nbs=4k\niodepth=1\n' }],
    guestConfigs: { phy: cfg('phy-xvda', 'phy'), file: cfg('qdisk-xvda', 'file') },
    runs: 3,
    runtimeSeconds: 0.1,
    storeBytes: 4 * MiB,
    storage: `ram:${4 * MiB}`,
    outDir: out,
    progress: (l) => lines.push(l),
  });
  assert.deepEqual(
    outcome.records.map((r) => `${r.run}:${r.position}:${r.backend}`),
    ['1:1:phy', '1:2:file', '2:1:file', '2:2:phy', '3:1:phy', '3:2:file'],
  );
  assert.ok(lines.includes('tiny: backend order, run 2: file, phy'), lines.join('\n'));
  assert.ok(
    outcome.notes.some((n) => /first rotating with the run/.test(n)),
    outcome.notes.join('\n'),
  );
  // 0.1 s asked: runtime=0.1 would read as 0, and time_based without a runtime runs to size instead.
  for (const r of outcome.records) {
    assert.ok(
      r.results.every((j) => j.error === 0),
      `${r.backend} run ${r.run} failed`,
    );
    assert.deepEqual(
      r.jobs.map((j) => [j.runtimeUs, j.timeBased]),
      [[100_000, true]],
      `${r.backend} run ${r.run}: the job's runtime`,
    );
  }
});
