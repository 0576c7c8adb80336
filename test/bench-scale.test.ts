// `blkback bench --suite scale --quick`, run as a user would, with very short windows: what is
// checked is the shape of what it reports (one row per configuration that can run, every guest
// doing I/O, every read carrying its block's stamp, the configurations that cannot run yet named
// and skipped, a PNG plot), never a speed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ScaleReport } from '../src/bench/scale-bench.ts';
import { renderScaleChart } from '../src/report/scale-chart.ts';
import { hasStamp, stampBlock, STAMP_BLOCK } from '../src/loadgen/scale-control.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 240_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

test('stamps: a block read back carries its own number, and a different block is told apart', () => {
  const block = new Uint8Array(2 * STAMP_BLOCK);
  stampBlock(block, 5);
  stampBlock(block.subarray(STAMP_BLOCK), 6);
  const view = new DataView(block.buffer);
  assert.equal(hasStamp(view, 0, 5), true);
  assert.equal(hasStamp(view, 0, 6), false);
  assert.equal(hasStamp(view, STAMP_BLOCK, 6), true);
  assert.equal(hasStamp(new DataView(new ArrayBuffer(8)), 0, 0), false, 'an unstamped (zero) block is not block 0');
});

test('bench --suite scale --quick: a row per guest count, every guest reads the right blocks, two queues per guest, rings on the main thread and on two workers, a PNG plot', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-scale-'));
  try {
    const results = join(dir, 'scale.json');
    const plot = join(dir, 'scale.png');
    const r = await runCli([
      'bench',
      '--suite',
      'scale',
      '--quick',
      '--seconds',
      '0.3',
      '--warmup',
      '0.1',
      '--guests',
      '1,4',
      '--queues',
      '1,2',
      '--workers',
      '0,2',
      '--results',
      results,
      '--plot',
      plot,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(results, 'utf8')) as ScaleReport;

    assert.equal(typeof report.machine.cpu, 'string');
    assert.ok(report.machine.cores >= 1);
    assert.match(report.store, /RAM disk/);
    assert.ok(report.storeAloneIops > 0);
    assert.deepEqual(
      report.rows.map((row) => [row.guests, row.queues, row.workers]),
      [
        [1, 1, 0],
        [4, 1, 0],
        [1, 2, 0],
        [4, 2, 0],
        [1, 1, 2],
        [4, 1, 2],
        [1, 2, 2],
        [4, 2, 2],
      ],
    );
    for (const row of report.rows) {
      const what = `${row.guests} guests`;
      for (const key of [
        'iops',
        'minGuestIops',
        'maxGuestIops',
        'cpuUsPerIo',
        'backendCpuShare',
        'processCpuUsPerIo',
        'processCpuShare',
        'rssPerRing',
        'heapPerRing',
        'heapPerRingAfterIo',
        'rssPerGuest',
        'windowSeconds',
        'responsesPerGuestWakeup',
        'requestsPerGuestNotify',
      ] as const) {
        assert.ok(Number.isFinite(row[key]), `${what}: ${key} = ${row[key]}`);
      }
      // NaN (null in JSON) where the kernel keeps no schedstat.
      assert.ok(row.backendWaitShare === null || row.backendWaitShare >= 0, `${what}: backendWaitShare = ${row.backendWaitShare}`);
      assert.ok(row.minGuestIops > 0, `${what}: every guest did I/O in the window`);
      assert.ok(row.fairness !== null && row.fairness >= 1, `${what}: fairness ${row.fairness}`);
      assert.ok(row.iops > 0 && row.reads > 0);
      assert.ok(row.cpuUsPerIo > 0, `${what}: the backend thread spent CPU`);
      assert.ok(row.ringPages >= 1);
      assert.equal(row.badReads, 0, `${what}: every read carried the stamp of the block asked for`);
      assert.ok(
        row.warmupSeconds >= 0.09 && row.warmupSeconds < 1,
        `${what}: the fixed warm-up (0.1 s, timers may fire a little early), ${row.warmupSeconds} s`,
      );
    }
    assert.equal(report.maxWarmupSeconds, report.warmupSeconds, 'a fixed warm-up');
    assert.equal(report.rows[0]!.fairness, 1, 'one guest is as fair as can be');
    assert.deepEqual(report.skipped, [], 'every configuration ran');

    assert.match(r.stdout, /## scale: one blkback, G guests/);
    assert.match(r.stdout, /\| guests \| queues \| workers \| IOPS \|/);
    assert.match(r.stdout, /fairness: worst max\/min per-guest IOPS/);
    assert.match(r.stdout, /data: every read carried the stamp/);
    assert.match(r.stderr, /\[8\/8\] 4 guests, 2 queues, 2 workers: warm-up/, 'progress lines while it runs');

    const png = readFileSync(plot);
    assert.deepEqual([...png.subarray(0, 8)], PNG_SIGNATURE);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench --suite scale --warmup auto: at least 1 s, then 2 s windows until three in a row do not beat the best, said in the report', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-scale-auto-'));
  try {
    const results = join(dir, 'scale.json');
    const args = ['bench', '--suite', 'scale', '--seconds', '0.3', '--warmup', 'auto', '--guests', '1', '--queues', '1', '--workers', '0'];
    const r = await runCli([...args, '--results', results, '--plot', join(dir, 'scale.png')]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(results, 'utf8')) as ScaleReport;
    assert.equal(report.warmupSeconds, 1);
    assert.equal(report.maxWarmupSeconds, 90);
    const row = report.rows[0]!;
    // 1 s, then at least one rising window (the first beats nothing) and three flat ones
    assert.ok(row.warmupSeconds >= 1 + 4 * 2 - 0.1 && row.warmupSeconds <= 90 + 1, `warm-up ${row.warmupSeconds} s`);
    assert.match(r.stdout, /warm-up until the rate stopped rising \(1-90 s\)/);
    assert.match(r.stderr, /warm-up until the rate stops rising \(1-90 s\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('scale chart: a line per series in both panels, goal lines, and a point with no fairness left out', () => {
  const svg = renderScaleChart({
    title: 'scale',
    series: [
      {
        label: '1 worker',
        points: [
          { guests: 1, iops: 100, fairness: 1 },
          { guests: 4, iops: 90, fairness: null },
        ],
      },
      {
        label: '2 workers',
        points: [
          { guests: 1, iops: 120, fairness: 1 },
          { guests: 4, iops: 130, fairness: 1.2 },
        ],
      },
    ],
    iopsGoal: { value: 90, label: 'goal' },
    fairnessGoal: { value: 1.5, label: 'goal ≤ 1.5' },
  });
  assert.equal(svg.match(/class="series-line"/g)?.length, 4);
  assert.equal(svg.match(/class="goal"/g)?.length, 2);
  // 4 IOPS points and 3 fairness points, plus one marker per legend entry.
  assert.equal(svg.match(/<circle /g)?.length, 4 + 3 + 2);
});
