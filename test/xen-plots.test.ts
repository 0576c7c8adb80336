// The real-Xen harness's plots (src/xen-tcg/report.ts writePlots): fio's write MB/s per run and
// backend as bars with the ratios, beside each run's summed write bandwidth over time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runWindows } from '../src/report/run-windows.ts';
import { decodePng, parseXml, xmlElements } from './support/png-xml.ts';
import type { XmlElement } from './support/png-xml.ts';
import { writePlots } from '../src/xen-tcg/report.ts';
import type { BwLogs, PlotFigures } from '../src/xen-tcg/report.ts';
import type { FioFigures } from '../src/xen-tcg/checks.ts';

/** A windowed fio bw log: `time, KiB/s, ddir, 0, 0` per row. */
const bwLog = (rows: readonly (readonly [number, number])[], ddir = 1): string => rows.map(([t, v]) => `${t}, ${v}, ${ddir}, 0, 0`).join('\n');

/** n rows log_avg_msec apart from `firstMs`, each `drift` ms late, then fio's partial last row. */
function threadLog(firstMs: number, n: number, kib: (i: number) => number, opts: { drift?: number; tail?: [number, number] } = {}): string {
  const rows: [number, number][] = [];
  let t = firstMs;
  for (let i = 0; i < n; i++) {
    rows.push([t, kib(i)]);
    t += 500 + (opts.drift ?? 3);
  }
  const [after, value] = opts.tail ?? [170, 5];
  rows.push([(rows[rows.length - 1] as [number, number])[0] + after, value]);
  return bwLog(rows);
}

function figure(guest: string, job: string, run: number, writeMBps: number): FioFigures {
  return { guest, job, run, jobs: 4, writeMBps, writeIops: 0, verifyMBps: 0, writeBytes: 0, verifyBytes: 0, errors: 0 };
}

const withDir = <T>(fn: (dir: string) => T): T => {
  const dir = mkdtempSync(join(tmpdir(), 'xen-plots-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

const byClass = (root: XmlElement, cls: string): XmlElement[] => xmlElements(root).filter((e) => (e.attrs['class'] ?? '').split(' ').includes(cls));
const texts = (root: XmlElement): string[] =>
  xmlElements(root)
    .filter((e) => e.name === 'text')
    .map((e) => e.text);

/** The time panel's plot frame (x of t = 0) and its lines' first points. */
function timePanel(root: XmlElement): { left: number; bottom: number; starts: [number, number][]; lines: XmlElement[] } {
  const panel = byClass(root, 'time-panel')[0];
  assert.ok(panel !== undefined, 'no time panel');
  const frame = panel.children.find((e) => e.name === 'rect' && e.attrs['stroke'] === '#444444');
  assert.ok(frame !== undefined, 'no plot frame');
  const lines = byClass(panel, 'series-line');
  const starts = lines.map((l): [number, number] => {
    const m = /^M(-?[\d.]+) (-?[\d.]+)/.exec(l.attrs['d'] ?? '');
    assert.ok(m !== null, `path ${l.attrs['d']}`);
    return [Number(m[1]), Number(m[2])];
  });
  return { left: Number(frame.attrs['x']), bottom: Number(frame.attrs['y']) + Number(frame.attrs['height']), starts, lines };
}

test('runWindows: a run whose first row is at 2732 ms is drawn from t = 0, the time before its first completion at 0', () => {
  const threads = [0, 1, 2, 3].map((j) => threadLog(2732 + 11 * j, 6, () => 4000 + j));
  const windows = runWindows(threads);
  assert.equal(windows[0]?.startMs, 0);
  // fio's time is ms since each thread's start and it writes no row for an interval with no bytes:
  // the windows before the first row moved nothing
  const first = windows.findIndex((w) => w.kibps > 0);
  assert.ok(first > 0);
  assert.ok(windows.slice(0, first).every((w) => w.kibps === 0));
  assert.ok(Math.abs((windows[first]?.endMs ?? 0) - (2732 + 16.5)) < 1e-9, `first data window ends at ${windows[first]?.endMs}`);
  // consecutive windows, no gaps or overlaps
  windows.forEach((w, i) => assert.equal(w.startMs, i === 0 ? 0 : windows[i - 1]?.endMs));
});

test("runWindows: each thread's partial last window is dropped, and the run ends with its shortest thread", () => {
  const spike = 987_654;
  const a = threadLog(500, 4, () => 1000, { tail: [90, spike] });
  const b = threadLog(500, 7, () => 2000, { tail: [300, spike] });
  const windows = runWindows([a, b]);
  // a's last full window is its 4th; after it only b runs
  assert.equal(windows.length, 4);
  assert.deepEqual(
    windows.map((w) => w.kibps),
    [3000, 3000, 3000, 3000],
  );
  // alone, b keeps its 7 full windows and never its partial one
  const alone = runWindows([b]);
  assert.equal(alone.length, 7);
  assert.ok(alone.every((w) => w.kibps === 2000));
  // a single row is only a partial window: nothing to draw
  assert.deepEqual(runWindows([bwLog([[1542, 15255]])]), []);
});

test('runWindows: rows numbered by spacing, so drift neither merges nor skips windows; gaps are zeros; reads ignored', () => {
  // 60 rows each 12 ms late: rounding times to a 500 ms grid would put two rows in one cell by row 21
  const drifting = threadLog(500, 60, (i) => 100 + i, { drift: 12 });
  const windows = runWindows([drifting]);
  assert.equal(windows.length, 60);
  assert.deepEqual(
    windows.map((w) => w.kibps),
    Array.from({ length: 60 }, (_, i) => 100 + i),
  );
  assert.ok(Math.abs((windows[59]?.endMs ?? 0) - (500 + 59 * 512)) < 1e-9, "window times are fio's, drift included");
  // an interval with nothing completed has no row: a zero window, not a bridge
  const gap = bwLog([
    [503, 10],
    [1004, 10],
    [2006, 10],
    [2507, 10],
    [2700, 1],
  ]);
  assert.deepEqual(
    runWindows([gap]).map((w) => w.kibps),
    [10, 10, 0, 10, 10],
  );
  // the verify phase's reads (ddir 0) are not writes
  const withReads = `${bwLog([
    [503, 10],
    [1004, 10],
    [1300, 1],
  ])}\n${bwLog(
    [
      [1800, 999],
      [2300, 999],
      [2800, 999],
    ],
    0,
  )}`;
  assert.deepEqual(
    runWindows([withReads]).map((w) => w.kibps),
    [10, 10],
  );
  assert.deepEqual(
    runWindows([withReads], { ddir: 0 }).map((w) => w.kibps),
    [0, 0, 999, 999],
  );
});

test('runWindows: timestamps no fio log has are refused, not allocated', () => {
  assert.throws(
    () =>
      runWindows([
        bwLog([
          [500, 1],
          [1e12, 1],
          [1e12 + 500, 1],
        ]),
      ]),
    /past 100000 windows/,
  );
  assert.throws(() => runWindows(['500, 1, 1']), /4 to 7 comma-separated columns/);
});

/** --mode same-guest with three pairs: kernel-N and ours-N. */
function pairedCase(): { logs: BwLogs[]; fio: FioFigures[] } {
  const fio: FioFigures[] = [];
  const logs: BwLogs[] = [];
  const mbps = { kernel: [22.089, 19.7, 24.31], ours: [11.911, 15.02, 12.5] };
  for (let pair = 1; pair <= 3; pair++) {
    for (const backend of ['kernel', 'ours'] as const) {
      fio.push(figure(`${backend}-${pair}`, 'randw', 1, mbps[backend][pair - 1] as number));
      // ours's first completions come later than the kernel's: its rows start at 2732 ms
      const first = backend === 'kernel' ? 503 : 2732;
      logs.push({
        mode: backend,
        guest: backend === 'kernel' ? 'xvda' : 'xvdb',
        job: 'randw',
        run: pair,
        files: [0, 1, 2, 3].map((j) => threadLog(first + 7 * j, 8, (i) => 3000 + 100 * pair + 10 * i)),
      });
    }
  }
  return { logs, fio };
}

test('writePlots: bars carry the fio figures, the ratios are ours / kernel, every run starts at t = 0', () => {
  const { logs, fio } = pairedCase();
  withDir((dir) => {
    const written = writePlots(logs, dir, 'same-guest-', { kind: 'pairs', fio });
    assert.deepEqual(written, ['same-guest-randw-bw.png', 'same-guest-randw-bw.svg']);
    const root = parseXml(readFileSync(join(dir, 'same-guest-randw-bw.svg'), 'utf8'));
    assert.equal(root.name, 'svg');

    const bars = byClass(root, 'bar');
    const value = (group: string, backend: string): number =>
      Number(bars.find((b) => b.attrs['data-group'] === group && b.attrs['data-backend'] === backend)?.attrs['data-value']);
    for (let pair = 1; pair <= 3; pair++) {
      const k = fio.find((f) => f.guest === `kernel-${pair}`)?.writeMBps as number;
      const o = fio.find((f) => f.guest === `ours-${pair}`)?.writeMBps as number;
      assert.equal(value(`pair ${pair}`, 'kernel xen-blkback'), k);
      assert.equal(value(`pair ${pair}`, 'blkback serve'), o);
      const ratio = byClass(root, 'ratio').find((r) => r.attrs['data-group'] === `pair ${pair}`);
      assert.equal(ratio?.text, (o / k).toFixed(2));
    }
    // the median group: each backend's median, and the median of the pairs' ratios (as the table)
    const middle = (xs: number[]): number => [...xs].sort((a, b) => a - b)[1] as number;
    const kernels = [1, 2, 3].map((p) => fio.find((f) => f.guest === `kernel-${p}`)?.writeMBps as number);
    const ours = [1, 2, 3].map((p) => fio.find((f) => f.guest === `ours-${p}`)?.writeMBps as number);
    assert.equal(value('median', 'kernel xen-blkback'), middle(kernels));
    assert.equal(value('median', 'blkback serve'), middle(ours));
    const medianRatio = middle(ours.map((o, i) => o / (kernels[i] as number))).toFixed(2);
    assert.equal(byClass(root, 'ratio').find((r) => r.attrs['data-group'] === 'median')?.text, medianRatio);
    assert.ok(
      texts(root).some((t) => t.includes(`blkback serve / kernel xen-blkback: ${medianRatio}`)),
      'the headline ratio',
    );
    assert.equal(bars.length, 8);

    // heights are drawn to one scale: height / value is the same for every bar
    const perUnit = bars.map((b) => Number(b.attrs['height']) / Number(b.attrs['data-value']));
    for (const u of perUnit) assert.ok(Math.abs(u - (perUnit[0] as number)) < 0.2, `bar scales ${perUnit.join(', ')}`);

    // a line per run, each from the x of t = 0, though ours's logs start at 2732 ms and the kernel's at 503
    const panel = timePanel(root);
    assert.equal(panel.lines.length, 6);
    for (const [x] of panel.starts) assert.equal(x, panel.left);
    // two backends, three shades each
    assert.equal(new Set(panel.lines.map((l) => l.attrs['stroke'])).size, 6);
    assert.deepEqual(
      byClass(root, 'legend-entry')
        .map((e) => e.text)
        .slice(0, 2),
      ['kernel xen-blkback (xvda, pair 1)', 'kernel xen-blkback (xvda, pair 2)'],
    );

    const png = decodePng(readFileSync(join(dir, 'same-guest-randw-bw.png')));
    assert.equal(png.width, 1600);
    assert.equal(png.height, 800);
    // the bars are there in the backends' colours
    const count = (r: number, g: number, b: number): number => {
      let n = 0;
      for (let i = 0; i < png.rgba.length; i += 4) if (png.rgba[i] === r && png.rgba[i + 1] === g && png.rgba[i + 2] === b) n++;
      return n;
    };
    assert.ok(count(0x1f, 0x77, 0xb4) > 5000, 'kernel blue');
    assert.ok(count(0xd6, 0x27, 0x28) > 5000, 'ours red');
  });
});

test('writePlots --mode both: a group per guest type and run, medians per guest type, the harmonic mean over them', () => {
  const kernel = [figure('pv', 'iometer', 1, 3.6), figure('pv', 'iometer', 2, 4.1), figure('pv', 'iometer', 3, 3.2), figure('pvh', 'iometer', 1, 2.5)];
  const ours = [figure('pv', 'iometer', 1, 1.25), figure('pv', 'iometer', 2, 2.0), figure('pv', 'iometer', 3, 1.5), figure('pvh', 'iometer', 1, 2.6)];
  const logs: BwLogs[] = [
    { mode: 'kernel', guest: 'pv', job: 'iometer', run: 1, files: [threadLog(503, 5, () => 900), threadLog(1007, 4, () => 800)] },
    { mode: 'ours', guest: 'pv', job: 'iometer', run: 1, files: [threadLog(1001, 9, () => 300)] },
  ];
  const figures: PlotFigures = { kind: 'boots', kernel, ours };
  withDir((dir) => {
    assert.deepEqual(writePlots(logs, dir, '', figures), ['iometer-bw.png', 'iometer-bw.svg']);
    const root = parseXml(readFileSync(join(dir, 'iometer-bw.svg'), 'utf8'));
    const groups = byClass(root, 'group-label').map((e) => e.text);
    assert.deepEqual(groups, ['run 1', 'run 2', 'run 3', 'run 1', 'median', 'all guests']);
    const bars = byClass(root, 'bar');
    const ofGroup = (i: number): number[] => bars.slice(2 * i, 2 * i + 2).map((b) => Number(b.attrs['data-value']));
    kernel.forEach((k, i) => assert.deepEqual(ofGroup(i), [k.writeMBps, ours[i]?.writeMBps]));
    assert.deepEqual(ofGroup(4), [3.6, 1.5]);
    const harmonic = (xs: number[]): number => xs.length / xs.reduce((s, x) => s + 1 / x, 0);
    assert.deepEqual(ofGroup(5), [harmonic([3.6, 2.5]), harmonic([1.5, 2.6])]);
    const ratios = byClass(root, 'ratio').map((e) => e.text);
    assert.deepEqual(
      ratios.slice(0, 4),
      kernel.map((k, i) => ((ours[i]?.writeMBps as number) / k.writeMBps).toFixed(2)),
    );
    assert.equal(ratios[4], (1.5 / 3.6).toFixed(2));
    // runs without logs are listed, not drawn
    assert.equal(timePanel(root).lines.length, 2);
  });
});

test('writePlots: a job with no bw logs still gets its bar panel; one window per thread is too short for a time series', () => {
  // the real --pairs 1 tiny jobs: randw's threads logged one (partial) window each
  const randw = (first: number): string[] => [first, first + 28, first + 150, first + 85].map((t) => bwLog([[t, 16000]]));
  const logs: BwLogs[] = [
    { mode: 'kernel', guest: 'xvda', job: 'randw', run: 1, files: randw(1506) },
    // one full window and the partial one: a single window is no time series either
    {
      mode: 'ours',
      guest: 'xvdb',
      job: 'randw',
      run: 1,
      files: [0, 1, 2, 3].map((j) =>
        bwLog([
          [503 + j, 16000],
          [760 + j, 200],
        ]),
      ),
    },
  ];
  const fio = [
    figure('kernel-1', 'randw', 1, 22.09),
    figure('ours-1', 'randw', 1, 11.91),
    figure('kernel-1', 'iometer', 1, 3.6),
    figure('ours-1', 'iometer', 1, 1.25),
  ];
  withDir((dir) => {
    const written = writePlots(logs, dir, 'same-guest-', { kind: 'pairs', fio });
    assert.deepEqual(written.sort(), ['same-guest-iometer-bw.png', 'same-guest-iometer-bw.svg', 'same-guest-randw-bw.png', 'same-guest-randw-bw.svg']);

    const iometer = parseXml(readFileSync(join(dir, 'same-guest-iometer-bw.svg'), 'utf8'));
    assert.deepEqual(
      byClass(iometer, 'bar').map((b) => Number(b.attrs['data-value'])),
      [3.6, 1.25],
    );
    assert.equal(byClass(iometer, 'ratio')[0]?.text, (1.25 / 3.6).toFixed(2));
    assert.ok(texts(iometer).includes('no fio bw logs for this job'));
    assert.equal(timePanel(iometer).lines.length, 0);
    assert.ok(decodePng(readFileSync(join(dir, 'same-guest-iometer-bw.png'))).width > 0);

    const short = parseXml(readFileSync(join(dir, 'same-guest-randw-bw.svg'), 'utf8'));
    assert.equal(timePanel(short).lines.length, 0, 'no dot for a lone window');
    assert.ok(texts(short).some((t) => t.startsWith('too short for a time series')));
    assert.deepEqual(
      byClass(short, 'legend-entry').map((e) => e.text),
      ['kernel xen-blkback (xvda) - too short', 'blkback serve (xvdb) - too short'],
    );
    assert.deepEqual(
      byClass(short, 'bar').map((b) => Number(b.attrs['data-value'])),
      [22.09, 11.91],
    );
  });
});

test('writePlots: an unreadable log marks its run and spares the others; names are escaped', () => {
  const logs: BwLogs[] = [
    { mode: 'kernel', guest: 'pv<&>', job: 'randw', run: 1, files: [threadLog(503, 6, () => 1000)] },
    { mode: 'ours', guest: 'pv<&>', job: 'randw', run: 1, files: ['not a fio log'] },
  ];
  const figures: PlotFigures = { kind: 'boots', kernel: [figure('pv<&>', 'randw', 1, 5)], ours: [figure('pv<&>', 'randw', 1, 0)] };
  withDir((dir) => {
    writePlots(logs, dir, '', figures);
    const root = parseXml(readFileSync(join(dir, 'randw-bw.svg'), 'utf8'));
    assert.equal(timePanel(root).lines.length, 1);
    assert.deepEqual(
      byClass(root, 'legend-entry').map((e) => e.text),
      ['kernel xen-blkback (pv<&>)', 'blkback serve (pv<&>) - unreadable bw log'],
    );
    assert.equal(byClass(root, 'group-detail')[0]?.text, 'pv<&>');
    assert.equal(byClass(root, 'ratio')[0]?.text, (0).toFixed(2));
  });
});
