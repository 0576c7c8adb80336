// The side-by-side of one harness run with the kernel's xen-blkback and one with ours: a markdown
// table (write MB/s per job and guest type, and ours/kernel) and bandwidth-over-time plots from the
// guests' fio bw logs, drawn with the project's chart code (src/report, as `blkback reproduce` does).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bandwidthSeriesFromLogs, renderBandwidthChart, svgToPng } from '../../src/report/index.ts';
import type { RunLogs } from '../../src/report/index.ts';
import type { FioFigures, Mode } from './checks.ts';

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

/** One PNG and SVG per job: a line per backend, guest type and run. Returns the files written. */
export function writePlots(logs: readonly BwLogs[], outDir: string, prefix = ''): string[] {
  const written: string[] = [];
  for (const job of [...new Set(logs.map((l) => l.job))]) {
    const several = logs.some((l) => l.job === job && l.run > 1);
    // within a backend, each guest type's runs in turn: pv runs 1-3, then pvh's
    const order = [...new Set(logs.filter((l) => l.job === job).map((l) => `${l.guest}/${l.run}`))];
    const runs: RunLogs[] = logs
      .filter((l) => l.job === job && l.files.length > 0)
      .map((l) => ({
        label: `${l.mode === 'kernel' ? 'kernel xen-blkback' : 'blkback serve'} (${l.guest}${several ? `, ${prefix === '' ? 'run' : 'pair'} ${l.run}` : ''})`,
        group: l.mode,
        run: order.indexOf(`${l.guest}/${l.run}`) + 1,
        files: l.files.map(writeRows),
      }));
    if (runs.length === 0) continue;
    const svg = renderBandwidthChart({ title: `Write bandwidth - ${job} (Xen under QEMU TCG)`, series: bandwidthSeriesFromLogs(runs) });
    writeFileSync(join(outDir, `${prefix}${job}-bw.svg`), svg);
    writeFileSync(join(outDir, `${prefix}${job}-bw.png`), svgToPng(svg));
    written.push(`${prefix}${job}-bw.png`, `${prefix}${job}-bw.svg`);
  }
  return written;
}
