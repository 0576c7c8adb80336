// The side-by-side of one harness run with the kernel's xen-blkback and one with ours: a markdown
// table (write MB/s per job and guest type, and ours/kernel) and a plot per job (fio's write MB/s
// per run as bars, and the guests' fio bw logs over time), drawn with the project's chart code
// (src/report, as `blkback reproduce` does).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../internal/errors.ts';
import { svgToPng } from '../report/index.ts';
import type { BarGroup } from '../report/comparison-bars.ts';
import { renderComparisonChart } from '../report/comparison-chart.ts';
import type { ComparisonChartInput } from '../report/comparison-chart.ts';
import type { StepSeries } from '../report/comparison-steps.ts';
import { runWindows } from '../report/run-windows.ts';
import type { FioFigures, Mode } from './checks.ts';
import type { JobCpu } from './cpu.ts';

export interface ComparisonRow {
  readonly job: string;
  readonly guest: string;
  /** Write MB/s of each run, in run order (empty in the 'all' rows). */
  readonly kernelRuns: readonly number[];
  readonly oursRuns: readonly number[];
  /** The median over runs (the 'all' rows: the harmonic mean of the guests' medians). */
  readonly kernelMBps: number;
  readonly oursMBps: number;
  readonly ratio: number;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * Per job and guest type, the median write bandwidth of each backend's runs and their ratio. The
 * runs of the two backends come from different boots, so they are not paired: medians, not a
 * median of per-run ratios.
 */
export function comparisonRows(kernel: readonly FioFigures[], ours: readonly FioFigures[]): ComparisonRow[] {
  const rows: ComparisonRow[] = [];
  const runsOf = (figures: readonly FioFigures[], job: string, guest: string): number[] =>
    figures
      .filter((x) => x.job === job && x.guest === guest)
      .sort((a, b) => a.run - b.run)
      .map((x) => x.writeMBps);
  const pairs = [...new Map(kernel.map((k) => [`${k.job}/${k.guest}`, k])).values()];
  for (const k of pairs) {
    const kernelRuns = runsOf(kernel, k.job, k.guest);
    const oursRuns = runsOf(ours, k.job, k.guest);
    if (oursRuns.length === 0) continue;
    const kernelMBps = median(kernelRuns);
    const oursMBps = median(oursRuns);
    rows.push({ job: k.job, guest: k.guest, kernelRuns, oursRuns, kernelMBps, oursMBps, ratio: kernelMBps > 0 ? oursMBps / kernelMBps : 0 });
  }
  // per job over the guest types: total bytes over total time is the mean of rates weighted by
  // time; with equal bytes per guest that is the harmonic mean
  for (const job of [...new Set(rows.map((r) => r.job))]) {
    const of = rows.filter((r) => r.job === job);
    const harmonic = (xs: number[]): number => xs.length / xs.reduce((s, x) => s + 1 / x, 0);
    const k = harmonic(of.map((r) => r.kernelMBps));
    const o = harmonic(of.map((r) => r.oursMBps));
    rows.push({ job, guest: 'all', kernelRuns: [], oursRuns: [], kernelMBps: k, oursMBps: o, ratio: k > 0 ? o / k : 0 });
  }
  return rows;
}

export function comparisonMarkdown(rows: readonly ComparisonRow[], goal: number): string {
  const cell = (mbps: number, runs: readonly number[]): string =>
    runs.length > 1 ? `${mbps.toFixed(1)} (${runs.map((x) => x.toFixed(1)).join(', ')})` : mbps.toFixed(1);
  const lines = [
    '| job | guest | kernel xen-blkback MB/s | blkback serve MB/s | ours / kernel |',
    '|---|---|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.job} | ${r.guest} | ${cell(r.kernelMBps, r.kernelRuns)} | ${cell(r.oursMBps, r.oursRuns)} | ${r.ratio.toFixed(2)}` +
        `${r.guest === 'all' ? (r.ratio >= goal ? ' (>= goal)' : ' (< goal)') : ''} |`,
    ),
  ];
  const several = rows.some((r) => r.kernelRuns.length > 1 || r.oursRuns.length > 1);
  const note = several ? '\nWith several runs a cell is their median, then each run in order; the ratio is of the medians.\n' : '';
  return `${lines.join('\n')}\n${note}`;
}

export interface PairedRow {
  readonly job: string;
  /** 1, 2, ...; 0 for the job's summary row (medians over the pairs). */
  readonly pair: number;
  readonly kernelMBps: number;
  readonly oursMBps: number;
  readonly ratio: number;
}

/**
 * --mode paired: per job, each pair's two runs (same boot, back to back) and their ratio, then a
 * summary row: the median of each backend's runs and the median of the pairs' ratios.
 */
export function pairedRows(fio: readonly FioFigures[], pairs: number): PairedRow[] {
  const rows: PairedRow[] = [];
  for (const job of [...new Set(fio.map((f) => f.job))]) {
    const of: PairedRow[] = [];
    for (let pair = 1; pair <= pairs; pair++) {
      const k = fio.find((f) => f.job === job && f.guest === `kernel-${pair}`);
      const o = fio.find((f) => f.job === job && f.guest === `ours-${pair}`);
      if (k === undefined || o === undefined || !(k.writeMBps > 0)) continue;
      of.push({ job, pair, kernelMBps: k.writeMBps, oursMBps: o.writeMBps, ratio: o.writeMBps / k.writeMBps });
    }
    if (of.length === 0) continue;
    rows.push(...of, {
      job,
      pair: 0,
      kernelMBps: median(of.map((r) => r.kernelMBps)),
      oursMBps: median(of.map((r) => r.oursMBps)),
      ratio: median(of.map((r) => r.ratio)),
    });
  }
  return rows;
}

export function pairedMarkdown(rows: readonly PairedRow[], goal: number, how: string): string {
  const lines = [
    '| job | pair | kernel xen-blkback MB/s | blkback serve MB/s | ours / kernel |',
    '|---|---|---:|---:|---:|',
    ...rows.map((r) =>
      r.pair === 0
        ? `| ${r.job} | median | ${r.kernelMBps.toFixed(1)} | ${r.oursMBps.toFixed(1)} | **${r.ratio.toFixed(2)}** ${r.ratio >= goal ? '(>= goal)' : '(< goal)'} |`
        : `| ${r.job} | ${r.pair} | ${r.kernelMBps.toFixed(1)} | ${r.oursMBps.toFixed(1)} | ${r.ratio.toFixed(2)} |`,
    ),
  ];
  return `${lines.join('\n')}\n\n${how}\n`;
}

/** Only the write rows (ddir 1) of a bw log: the verify phase's reads are another workload. */
export function writeRows(log: string): string {
  return log
    .split('\n')
    .filter((l) => l.split(',')[2]?.trim() === '1')
    .join('\n');
}

export interface BwLogs {
  readonly mode: Mode;
  readonly guest: string;
  readonly job: string;
  readonly run: number;
  readonly files: readonly string[];
}

/** The fio figures a plot's bars show, as the harness's mode pairs them. */
export type PlotFigures =
  /** --mode both: each backend's own boot; run N with one beside run N with the other, per guest type. */
  | { readonly kind: 'boots'; readonly kernel: readonly FioFigures[]; readonly ours: readonly FioFigures[] }
  /** --mode paired / same-guest: one boot; guests kernel-N and ours-N are pair N. */
  | { readonly kind: 'pairs'; readonly fio: readonly FioFigures[] };

const KERNEL = 'kernel xen-blkback';
const OURS = 'blkback serve';
/** fio's bw logs are in KiB/s; fio's figures and the tables in MB/s (10^6 bytes). */
const MB_PER_KIB = 1024 / 1e6;
/** Fewer full windows than this is a point, not a time series. */
const MIN_WINDOWS = 2;

/**
 * One PNG and SVG per job (a job with fio figures or bw logs): fio's write MB/s per run and backend
 * as bars with the ratios, beside each run's write bandwidth over time. Returns the files written.
 */
export function writePlots(logs: readonly BwLogs[], outDir: string, prefix: string, figures: PlotFigures): string[] {
  const written: string[] = [];
  const figureJobs = figures.kind === 'boots' ? [...figures.kernel, ...figures.ours] : figures.fio;
  for (const job of [...new Set([...logs.map((l) => l.job), ...figureJobs.map((f) => f.job)])]) {
    const svg = renderComparisonChart(plotInput(job, logs, figures));
    writeFileSync(join(outDir, `${prefix}${job}-bw.svg`), svg);
    writeFileSync(join(outDir, `${prefix}${job}-bw.png`), svgToPng(svg));
    written.push(`${prefix}${job}-bw.png`, `${prefix}${job}-bw.svg`);
  }
  return written;
}

/** What one job's plot shows. */
export function plotInput(job: string, logs: readonly BwLogs[], figures: PlotFigures): ComparisonChartInput {
  const { groups, headline } = figures.kind === 'boots' ? bootBars(job, figures.kernel, figures.ours) : pairBars(job, figures.fio);
  const series = timeSeries(job, logs, figures.kind === 'pairs' ? 'pair' : 'run');
  const anyLogs = series.some((s) => s.note !== 'no bw log');
  return {
    title: `Write bandwidth - ${job} (Xen under QEMU TCG)`,
    ...(headline === undefined ? {} : { subtitle: headline }),
    bars: {
      title: figures.kind === 'pairs' ? "fio's write MB/s per pair" : "fio's write MB/s per run",
      yLabel: 'Write (MB/s)',
      backends: [KERNEL, OURS],
      groups,
      ratioLabel: 'ours / kernel',
      empty: 'no fio results for this job',
    },
    time: {
      title: 'Write bandwidth over time (all threads, 500 ms windows)',
      xLabel: "Time since the run's start (s)",
      yLabel: 'Write (MB/s)',
      series,
      empty: anyLogs ? `too short for a time series (no run logged ${MIN_WINDOWS} full windows)` : 'no fio bw logs for this job',
    },
  };
}

function ratioText(kernel: number | undefined, ours: number | undefined): string {
  return kernel !== undefined && ours !== undefined && kernel > 0 && Number.isFinite(ours) ? (ours / kernel).toFixed(2) : '-';
}

/** --mode both: a group per guest type and run, then per guest type the medians (as comparisonRows). */
function bootBars(job: string, kernel: readonly FioFigures[], ours: readonly FioFigures[]): { groups: BarGroup[]; headline?: string } {
  const rows = comparisonRows(kernel, ours).filter((r) => r.job === job);
  const of = [...kernel, ...ours].filter((f) => f.job === job);
  const guests = [...new Set(of.map((f) => f.guest))];
  const groups: BarGroup[] = [];
  for (const guest of guests) {
    const runs = [...new Set(of.filter((f) => f.guest === guest).map((f) => f.run))].sort((a, b) => a - b);
    for (const run of runs) {
      const k = kernel.find((f) => f.job === job && f.guest === guest && f.run === run)?.writeMBps;
      const o = ours.find((f) => f.job === job && f.guest === guest && f.run === run)?.writeMBps;
      groups.push({ label: `run ${run}`, detail: guest, values: [k, o], ratio: ratioText(k, o) });
    }
    const row = rows.find((r) => r.guest === guest);
    if (row !== undefined && runs.length > 1) {
      groups.push({ label: 'median', detail: guest, values: [row.kernelMBps, row.oursMBps], ratio: ratioText(row.kernelMBps, row.oursMBps), summary: true });
    }
  }
  const perGuest = rows.filter((r) => r.guest !== 'all');
  const all = rows.find((r) => r.guest === 'all');
  if (perGuest.length > 1 && all !== undefined) {
    groups.push({
      label: 'all guests',
      detail: 'harmonic mean',
      values: [all.kernelMBps, all.oursMBps],
      ratio: ratioText(all.kernelMBps, all.oursMBps),
      summary: true,
    });
  }
  const head = perGuest.length > 1 ? all : perGuest[0];
  if (head === undefined || !(head.kernelMBps > 0)) return { groups };
  const runs = Math.max(head.kernelRuns.length, head.oursRuns.length);
  const how = perGuest.length > 1 ? 'harmonic mean over the guest types of their medians' : runs > 1 ? `ratio of the medians of ${runs} runs` : 'one run each';
  return { groups, headline: `${OURS} / ${KERNEL}: ${ratioText(head.kernelMBps, head.oursMBps)} (${how})` };
}

/** --mode paired / same-guest: a group per pair, then the medians (as pairedRows: the median ratio is of the pairs' ratios). */
function pairBars(job: string, fio: readonly FioFigures[]): { groups: BarGroup[]; headline?: string } {
  const pairOf = (f: FioFigures): { backend: string; pair: number } | undefined => {
    const m = /^(kernel|ours)-(\d+)$/.exec(f.guest);
    return m === null ? undefined : { backend: m[1] as string, pair: Number(m[2]) };
  };
  const of = fio.filter((f) => f.job === job && pairOf(f) !== undefined);
  const pairs = [...new Set(of.map((f) => pairOf(f)?.pair as number))].sort((a, b) => a - b);
  const figure = (backend: string, pair: number): number | undefined => of.find((f) => f.guest === `${backend}-${pair}`)?.writeMBps;
  const groups: BarGroup[] = pairs.map((pair) => {
    const k = figure('kernel', pair);
    const o = figure('ours', pair);
    return { label: `pair ${pair}`, values: [k, o], ratio: ratioText(k, o) };
  });
  const rows = pairedRows(of, Math.max(0, ...pairs)).filter((r) => r.job === job);
  const summary = rows.find((r) => r.pair === 0);
  if (summary === undefined) return { groups };
  const counted = rows.length - 1;
  if (pairs.length > 1) {
    groups.push({ label: 'median', values: [summary.kernelMBps, summary.oursMBps], ratio: summary.ratio.toFixed(2), summary: true });
  }
  const how = counted > 1 ? `median of ${counted} pairs' ratios` : 'one pair';
  return { groups, headline: `${OURS} / ${KERNEL}: ${summary.ratio.toFixed(2)} (${how})` };
}

/** Each run's write bandwidth over time, summed over its threads (runWindows has the rules). */
function timeSeries(job: string, logs: readonly BwLogs[], runWord: 'run' | 'pair'): StepSeries[] {
  // the kernel's runs, then ours (the legend's order)
  const of = logs.filter((l) => l.job === job).sort((a, b) => Number(a.mode !== 'kernel') - Number(b.mode !== 'kernel'));
  const several = of.some((l) => l.run > 1);
  const shade = new Map<string, number>();
  return of.map((l) => {
    const backend = l.mode === 'kernel' ? 0 : 1;
    // within a backend, each guest type's runs in turn: pv runs 1-3, then pvh's
    const key = `${backend}/${l.guest}/${l.run}`;
    if (!shade.has(key)) shade.set(key, [...shade.keys()].filter((k) => k.startsWith(`${backend}/`)).length + 1);
    const label = `${backend === 0 ? KERNEL : OURS} (${l.guest}${several ? `, ${runWord} ${l.run}` : ''})`;
    const base = { label, backend, run: shade.get(key) as number };
    if (l.files.length === 0) return { ...base, windows: [], note: 'no bw log' };
    let windows;
    try {
      windows = runWindows(l.files, { ddir: 1, source: label });
    } catch (error) {
      if (error instanceof UsageError) return { ...base, windows: [], note: 'unreadable bw log' };
      throw error;
    }
    if (windows.length < MIN_WINDOWS) return { ...base, windows: [], note: 'too short' };
    return { ...base, windows: windows.map((w) => ({ startMs: w.startMs, endMs: w.endMs, value: w.kibps * MB_PER_KIB })) };
  });
}

export interface CpuPerIoRow {
  readonly job: string;
  /** 1, 2, ...; 0 for the job's summary row (medians over the pairs). */
  readonly pair: number;
  /** Milliseconds of dom0 CPU per I/O while the kernel's backend served the run. */
  readonly kernelMs: number;
  /** The same while serve did, and serve's own share of it. */
  readonly oursMs: number;
  readonly serveMs: number;
  readonly ratio: number;
}

/**
 * dom0's CPU per I/O, per backend: dom0's busy CPUs during the run (the 2-second samples inside it,
 * cpu.ts) times the run's seconds, over the run's I/Os (fio's writes and verify reads). Pairs as in
 * pairedRows; a run without CPU samples, I/O count or wall time is left out.
 */
export function cpuPerIoRows(fio: readonly FioFigures[], cpu: readonly JobCpu[]): CpuPerIoRow[] {
  const perIo = (f: FioFigures | undefined, pick: (c: JobCpu) => number): number | undefined => {
    if (f === undefined || !((f.ios ?? 0) > 0) || !((f.seconds ?? 0) > 0)) return undefined;
    const c = cpu.find((x) => x.guest === f.guest && x.job === f.job && x.run === f.run);
    return c === undefined ? undefined : (pick(c) * (f.seconds as number) * 1000) / (f.ios as number);
  };
  const rows: CpuPerIoRow[] = [];
  for (const job of [...new Set(fio.map((f) => f.job))]) {
    const of: CpuPerIoRow[] = [];
    const pairs = [...new Set(fio.map((f) => Number(/^(?:kernel|ours)-(\d+)$/.exec(f.guest)?.[1] ?? 0)))].filter((p) => p > 0).sort((a, b) => a - b);
    for (const pair of pairs) {
      const k = fio.find((f) => f.job === job && f.guest === `kernel-${pair}`);
      const o = fio.find((f) => f.job === job && f.guest === `ours-${pair}`);
      const kernelMs = perIo(k, (c) => c.dom0Busy);
      const oursMs = perIo(o, (c) => c.dom0Busy);
      const serveMs = perIo(o, (c) => c.serve);
      if (kernelMs === undefined || oursMs === undefined || serveMs === undefined || !(kernelMs > 0)) continue;
      of.push({ job, pair, kernelMs, oursMs, serveMs, ratio: oursMs / kernelMs });
    }
    if (of.length === 0) continue;
    rows.push(...of, {
      job,
      pair: 0,
      kernelMs: median(of.map((r) => r.kernelMs)),
      oursMs: median(of.map((r) => r.oursMs)),
      serveMs: median(of.map((r) => r.serveMs)),
      ratio: median(of.map((r) => r.ratio)),
    });
  }
  return rows;
}

export function cpuPerIoMarkdown(rows: readonly CpuPerIoRow[]): string {
  if (rows.length === 0) return 'No run had both CPU samples and an I/O count.\n';
  const lines = [
    '| job | pair | kernel xen-blkback: dom0 CPU ms per I/O | blkback serve: dom0 CPU ms per I/O | of it serve | ours / kernel |',
    '|---|---|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.job} | ${r.pair === 0 ? 'median' : r.pair} | ${r.kernelMs.toFixed(2)} | ${r.oursMs.toFixed(2)} | ${r.serveMs.toFixed(2)} | ` +
        `${r.pair === 0 ? `**${r.ratio.toFixed(2)}**` : r.ratio.toFixed(2)} |`,
    ),
  ];
  return (
    `${lines.join('\n')}\n\n` +
    "dom0's busy CPUs during the run (its 2-second samples inside the run) times the run's seconds, over the run's I/Os " +
    "(fio's writes and its verify reads); the median ratio is the median of the pairs' ratios. Emulated CPU time: it swings " +
    'with the emulator, as the MB/s do.\n'
  );
}
