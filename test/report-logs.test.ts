import { test } from 'node:test';
import { fioMissing, stopIfMissing } from './helpers-tools.ts';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bandwidthSeriesFromLogs, parseFioLog } from '../src/report/bw-log.ts';
import type { BlockError } from '../src/internal/errors.ts';

test('parseFioLog: 4 to 7 columns, hex prio, blank lines', () => {
  const rows = parseFioLog(
    [
      '500, 332760, 1, 0', // fio <= 2.1.10 shape
      '1001, 422546, 1, 0, 0', // 3.33 windowed: time, bw, ddir, bs, prio
      '2, 3886, 0, 4096, 8192, 0', // log_offset=1
      '10, 591565, 0, 4096, 4096, 0x0000', // log_prio=1
      '12, 1, 0, 4096, 0, 0, 11', // a newer extra column
      '',
    ].join('\n'),
  );
  assert.deepEqual(rows, [
    { timeMs: 500, value: 332760, ddir: 1, bs: 0 },
    { timeMs: 1001, value: 422546, ddir: 1, bs: 0 },
    { timeMs: 2, value: 3886, ddir: 0, bs: 4096 },
    { timeMs: 10, value: 591565, ddir: 0, bs: 4096 },
    { timeMs: 12, value: 1, ddir: 0, bs: 4096 },
  ]);
});

test('parseFioLog: errors name the source and line', () => {
  const cases: [string, RegExp][] = [
    ['500, 1, 1, 0\n500, 2, 1', /^randw_bw\.1\.log:2: expected 4 to 7 comma-separated columns, got 3/],
    ['1, 2, 3, 4, 5, 6, 7, 8', /^randw_bw\.1\.log:1: expected 4 to 7 .* got 8/],
    ['500, fast, 1, 0', /^randw_bw\.1\.log:1: value is not a number/],
    ['500, 10, 1, 0, x', /^randw_bw\.1\.log:1: column 'x' is not a number/],
    ['500, 10, 3, 0', /^randw_bw\.1\.log:1: ddir 3 is not 0, 1 or 2/],
    ['-5, 10, 1, 0', /^randw_bw\.1\.log:1: time is not a number >= 0/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseFioLog(text, 'randw_bw.1.log'),
      (err: BlockError) => {
        assert.equal(err.code, 'BLK_ERR_USAGE');
        assert.match(err.message, message);
        return true;
      },
      text,
    );
  }
});

test("bandwidthSeriesFromLogs: sums a run's jobs per 500 ms window despite fio's drift", () => {
  const job1 = '500, 1000, 1, 0, 0\n1001, 1100, 1, 0, 0\n1501, 1200, 1, 0, 0\n2002, 1300, 1, 0, 0\n';
  const job2 = '499, 10, 1, 0, 0\n1000, 20, 1, 0, 0\n1500, 30, 1, 0, 0\n1999, 40, 1, 0, 0\n';
  const [a, b] = bandwidthSeriesFromLogs([
    { label: 'phy run 1', group: 'phy', run: 1, files: [job1, job2] },
    { label: 'phy run 2', group: 'phy', run: 2, files: [job2] },
  ]);
  assert.deepEqual(a, {
    label: 'phy run 1',
    group: 'phy',
    run: 1,
    points: [
      [500, 1010],
      [1000, 1120],
      [1500, 1230],
      [2000, 1340],
    ],
  });
  assert.deepEqual(b?.points, [
    [500, 10],
    [1000, 20],
    [1500, 30],
    [2000, 40],
  ]);
});

test('bandwidthSeriesFromLogs: directions add, finer windows average, gaps read 0', () => {
  // randrw: one read and one write row per window.
  const rw = '500, 800, 0, 0, 0\n500, 200, 1, 0, 0\n1000, 600, 0, 0, 0\n1001, 150, 1, 0, 0\n';
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'r', group: 'g', run: 1, files: [rw] }])[0]?.points, [
    [500, 1000],
    [1000, 750],
  ]);
  // log_avg_msec=250 into 500 ms windows: rows at 250 and 500 round to window 1, 750 and 1000 to
  // window 2; each pair of rates averages.
  const fine = '250, 100, 1, 0, 0\n500, 300, 1, 0, 0\n750, 50, 1, 0, 0\n1000, 150, 1, 0, 0\n';
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'f', group: 'g', run: 1, files: [fine] }])[0]?.points, [
    [500, 200],
    [1000, 100],
  ]);
  // A window nobody logged in (the guest stalled) is 0, not a line bridging the gap.
  const gap = '500, 100, 1, 0, 0\n1500, 300, 1, 0, 0\n';
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'x', group: 'g', run: 1, files: [gap] }])[0]?.points, [
    [500, 100],
    [1000, 0],
    [1500, 300],
  ]);
  // A time_based run where one job logged one window more than the other: that fragment is dropped;
  // a run whose last window has all its jobs keeps it, and a lone job keeps everything.
  const early = '500, 100, 1, 0, 0\n1000, 100, 1, 0, 0\n';
  const late = '502, 100, 1, 0, 0\n1003, 100, 1, 0, 0\n1503, 100, 1, 0, 0\n';
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'x', group: 'g', run: 1, files: [early, late] }])[0]?.points, [
    [500, 200],
    [1000, 200],
  ]);
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'x', group: 'g', run: 1, files: [late, late] }])[0]?.points, [
    [500, 200],
    [1000, 200],
    [1500, 200],
  ]);
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'x', group: 'g', run: 1, files: [late] }])[0]?.points, [
    [500, 100],
    [1000, 100],
    [1500, 100],
  ]);
  // A custom window.
  const oneSecond = bandwidthSeriesFromLogs([{ label: 'x', group: 'g', run: 1, files: ['1000, 7, 1, 0, 0\n2001, 9, 1, 0, 0'] }], 1000);
  assert.deepEqual(oneSecond[0]?.points, [
    [1000, 7],
    [2000, 9],
  ]);
  assert.throws(() => bandwidthSeriesFromLogs([], 0), /window 0 ms/);
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'e', group: 'g', run: 1, files: [''] }])[0]?.points, []);
});

test('bandwidthSeriesFromLogs: per-I/O rows count bytes; fio 2011 windowed rows keep their rate', () => {
  // log_avg_msec=0: one row per 64 KiB I/O, value the I/O's own rate. 8 I/Os in window 1, 4 in 2.
  const perIo: string[] = [];
  for (let i = 0; i < 8; i++) perIo.push(`${300 + i * 40}, 999999, 1, 65536, 0`);
  for (let i = 0; i < 4; i++) perIo.push(`${800 + i * 40}, 999999, 1, 65536, 0`);
  const kibPerWindow = (n: number): number => (n * 64) / 0.5;
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'p', group: 'g', run: 1, files: [perIo.join('\n')] }])[0]?.points, [
    [500, kibPerWindow(8)],
    [1000, kibPerWindow(4)],
  ]);
  // The seed's fio: 4 columns, one row per >= 500 ms carrying the last I/O's size.
  const legacy = '500, 332760, 1, 65536\n1001, 422546, 1, 65536\n1502, 400000, 1, 65536\n';
  assert.deepEqual(bandwidthSeriesFromLogs([{ label: 'l', group: 'g', run: 1, files: [legacy] }])[0]?.points, [
    [500, 332760],
    [1000, 422546],
    [1500, 400000],
  ]);
});

test('bandwidthSeriesFromLogs: real fio 3.33 logs of two jobs', (t) => {
  if (stopIfMissing(t, fioMissing())) return;
  const dir = mkdtempSync(join(tmpdir(), 'report-fio-'));
  const shm = mkdtempSync('/dev/shm/report-fio-');
  try {
    const json = execFileSync(
      'fio',
      [
        '--name=x',
        `--filename=${join(shm, 'f')}`,
        '--size=32m',
        '--rw=randwrite',
        '--bs=64k',
        '--ioengine=psync',
        '--numjobs=2',
        '--time_based',
        '--runtime=2',
        '--write_bw_log=x',
        '--log_avg_msec=500',
        '--output-format=json',
      ],
      { cwd: dir, encoding: 'utf8', timeout: 30_000 },
    );
    const logs = readdirSync(dir)
      .filter((f) => /^x_bw\.\d\.log$/.test(f))
      .sort();
    assert.deepEqual(logs, ['x_bw.1.log', 'x_bw.2.log']);
    const texts = logs.map((f) => readFileSync(join(dir, f), 'utf8'));
    const [series] = bandwidthSeriesFromLogs([{ label: 'fio', group: 'bare', run: 1, files: texts }]);
    assert.ok(series);
    assert.ok(series.points.length >= 3, `${series.points.length} windows`);

    // Each point is the two jobs' rows of that window added, read independently here.
    const byWindow = new Map<number, number>();
    for (const text of texts) {
      for (const line of text.trim().split('\n')) {
        const [ms, kib] = line.split(',').map((f) => Number(f.trim()));
        const w = Math.round((ms as number) / 500) * 500;
        byWindow.set(w, (byWindow.get(w) ?? 0) + (kib as number));
      }
    }
    const expected = [...byWindow.entries()].sort((a, b) => a[0] - b[0]);
    const rowsIn = (w: number): number =>
      texts.filter((text) =>
        text
          .trim()
          .split('\n')
          .some((l) => Math.round(Number(l.split(',')[0]) / 500) * 500 === w),
      ).length;
    const lastWindow = expected[expected.length - 1]?.[0] ?? 0;
    if (rowsIn(lastWindow) < rowsIn(lastWindow - 500)) expected.pop();
    assert.deepEqual(series.points, expected);

    // And the plotted level agrees with fio's own summary (sum of both jobs' mean write bw).
    const report = JSON.parse(json.slice(json.indexOf('{'))) as { jobs: { write: { bw: number } }[] };
    const fioTotal = report.jobs.reduce((s, j) => s + j.write.bw, 0);
    const full = series.points.filter(([ms]) => ms <= 2000);
    const mean = full.reduce((s, [, v]) => s + v, 0) / full.length;
    t.diagnostic(`plotted mean ${mean.toFixed(0)} KiB/s, fio's ${fioTotal} KiB/s`);
    assert.ok(Math.abs(mean / fioTotal - 1) < 0.3, `plotted mean ${mean} vs fio ${fioTotal} KiB/s`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
});
