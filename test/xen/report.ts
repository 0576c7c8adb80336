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
  readonly kernelMBps: number;
  readonly oursMBps: number;
  readonly ratio: number;
}

export function comparisonRows(kernel: readonly FioFigures[], ours: readonly FioFigures[]): ComparisonRow[] {
  const rows: ComparisonRow[] = [];
  for (const k of kernel) {
    const o = ours.find((x) => x.job === k.job && x.guest === k.guest);
    if (o === undefined) continue;
    rows.push({ job: k.job, guest: k.guest, kernelMBps: k.writeMBps, oursMBps: o.writeMBps, ratio: k.writeMBps > 0 ? o.writeMBps / k.writeMBps : 0 });
  }
  // per job over the guest types: total bytes over total time is the mean of rates weighted by
  // time; with equal bytes per guest that is the harmonic mean
  for (const job of [...new Set(rows.map((r) => r.job))]) {
    const of = rows.filter((r) => r.job === job);
    const harmonic = (xs: number[]): number => xs.length / xs.reduce((s, x) => s + 1 / x, 0);
    const k = harmonic(of.map((r) => r.kernelMBps));
    const o = harmonic(of.map((r) => r.oursMBps));
    rows.push({ job, guest: 'all', kernelMBps: k, oursMBps: o, ratio: k > 0 ? o / k : 0 });
  }
  return rows;
}

export function comparisonMarkdown(rows: readonly ComparisonRow[], goal: number): string {
  const lines = [
    '| job | guest | kernel xen-blkback MB/s | blkback serve MB/s | ours / kernel |',
    '|---|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.job} | ${r.guest} | ${r.kernelMBps.toFixed(1)} | ${r.oursMBps.toFixed(1)} | ${r.ratio.toFixed(2)}${r.guest === 'all' ? (r.ratio >= goal ? ' (>= goal)' : ' (< goal)') : ''} |`),
  ];
  return `${lines.join('\n')}\n`;
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
  readonly files: readonly string[];
}

/** One PNG and SVG per job: a line per backend and guest type. Returns the files written. */
export function writePlots(logs: readonly BwLogs[], outDir: string): string[] {
  const written: string[] = [];
  for (const job of [...new Set(logs.map((l) => l.job))]) {
    const guests = [...new Set(logs.map((l) => l.guest))];
    const runs: RunLogs[] = logs
      .filter((l) => l.job === job && l.files.length > 0)
      .map((l) => ({
        label: `${l.mode === 'kernel' ? 'kernel xen-blkback' : 'blkback serve'} (${l.guest})`,
        group: l.mode,
        run: guests.indexOf(l.guest) + 1,
        files: l.files.map(writeRows),
      }));
    if (runs.length === 0) continue;
    const svg = renderBandwidthChart({ title: `Write bandwidth - ${job} (Xen under QEMU TCG)`, series: bandwidthSeriesFromLogs(runs) });
    writeFileSync(join(outDir, `${job}-bw.svg`), svg);
    writeFileSync(join(outDir, `${job}-bw.png`), svgToPng(svg));
    written.push(`${job}-bw.png`, `${job}-bw.svg`);
  }
  return written;
}
