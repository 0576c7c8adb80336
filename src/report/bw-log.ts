// fio bandwidth logs to plottable series. Pure: log texts in, points out.
//
// Row layout (fio-compat.md §4): `time ms, value, ddir, bs[, offset][, prio][, ...]`, 4 to 7 columns
// across fio 1.x-3.37. Only the first four are read here. bw values are KiB/s over a window when the
// job logs windowed averages (log_avg_msec > 0: bs column 0; or fio <= 2.1.10's 4-column rows, one
// per >= 500 ms with the bs of the last I/O), and a per-I/O rate when log_avg_msec=0 (fio >= 2.10:
// one row per I/O, bs = the I/O's size).
import { UsageError } from '../internal/errors.ts';

export interface FioLogRow {
  readonly timeMs: number;
  readonly value: number;
  /** 0 read, 1 write, 2 trim. */
  readonly ddir: number;
  readonly bs: number;
}

export function parseFioLog(text: string, source = 'fio log'): FioLogRow[] {
  const rows: FioLogRow[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    const fields = line.split(',').map((f) => f.trim());
    if (fields.length < 4 || fields.length > 7) {
      throw new UsageError(`${source}:${i + 1}: expected 4 to 7 comma-separated columns, got ${fields.length}: '${clip(line)}'`);
    }
    const [timeMs, value, ddir, bs] = fields.slice(0, 4).map(Number) as [number, number, number, number];
    for (const [name, n] of [
      ['time', timeMs],
      ['value', value],
      ['ddir', ddir],
      ['bs', bs],
    ] as const) {
      if (!Number.isFinite(n) || n < 0) throw new UsageError(`${source}:${i + 1}: ${name} is not a number >= 0: '${clip(line)}'`);
    }
    // Columns 5-7 (offset, prio as decimal or 0x%04x, newer extras) are not needed for bandwidth,
    // but a non-number there still means this is not a fio log.
    for (const extra of fields.slice(4)) {
      if (extra === '' || !Number.isFinite(Number(extra))) {
        throw new UsageError(`${source}:${i + 1}: column '${clip(extra)}' is not a number: '${clip(line)}'`);
      }
    }
    if (ddir > 2 || !Number.isInteger(ddir)) throw new UsageError(`${source}:${i + 1}: ddir ${ddir} is not 0, 1 or 2`);
    rows.push({ timeMs, value, ddir, bs });
  }
  return rows;
}

function clip(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

export interface RunLogs {
  readonly label: string;
  readonly group: string;
  readonly run: number;
  /** The texts of the run's per-job bw logs (one per job/clone). */
  readonly files: readonly string[];
}

export interface BandwidthSeries {
  readonly label: string;
  readonly group: string;
  readonly run: number;
  /** [window end in ms, KiB/s summed over the run's jobs and directions]. */
  readonly points: [number, number][];
}

/**
 * One series per run: each job's bandwidth per window, summed over the run's jobs and over read and
 * write. A row at t ms lands in window round(t / windowMs), so fio's drifting 500, 1001, 1501 ...
 * line up across jobs; the point is drawn at the window's nominal end (500, 1000, 1500 ...).
 */
export function bandwidthSeriesFromLogs(logs: readonly RunLogs[], windowMs = 500): BandwidthSeries[] {
  if (!(windowMs > 0)) throw new UsageError(`bandwidthSeriesFromLogs: window ${windowMs} ms is not > 0`);
  return logs.map((run) => {
    const total = new Map<number, number>();
    const jobsIn = new Map<number, number>();
    run.files.forEach((text, j) => {
      const source = `${run.label} job ${j + 1} bw log`;
      for (const [bucket, kib] of jobWindows(parseFioLog(text, source), windowMs)) {
        total.set(bucket, (total.get(bucket) ?? 0) + kib);
        jobsIn.set(bucket, (jobsIn.get(bucket) ?? 0) + 1);
      }
    });
    const buckets = [...total.keys()].sort((a, b) => a - b);
    const points: [number, number][] = [];
    if (buckets.length > 0) {
      const first = buckets[0] as number;
      let last = buckets[buckets.length - 1] as number;
      // Jobs of a time_based run stop together, but one whose windows started a few ms later can
      // log one window more than the rest (fio 3.33: 2 of 4 jobs with a row at 3001 ms of a 3 s
      // run). Summed, that last window reads as a collapse, so a last window with fewer jobs than
      // the one before it is dropped. The cost: a job that outlives the others by exactly one
      // window loses that window from the plot (its log keeps it).
      const before = jobsIn.get(last - 1) ?? 0;
      if (buckets.length > 1 && (jobsIn.get(last) ?? 0) < before) last -= 1;
      // A window no job logged in moved no data: plot it as 0 rather than bridging the gap.
      for (let b = first; b <= last; b++) points.push([b * windowMs, round3(total.get(b) ?? 0)]);
    }
    return { label: run.label, group: run.group, run: run.run, points };
  });
}

/** One job's KiB/s per window, read + write + trim. */
function jobWindows(rows: readonly FioLogRow[], windowMs: number): Map<number, number> {
  const out = new Map<number, number>();
  if (rows.length === 0) return out;
  if (isPerIoLog(rows, windowMs)) {
    // Per-I/O rows: the window's rate is the bytes completed in it, not any row's value.
    for (const row of rows) {
      const b = Math.round(row.timeMs / windowMs);
      out.set(b, (out.get(b) ?? 0) + row.bs / 1024 / (windowMs / 1000));
    }
    return out;
  }
  // Windowed rows are rates over fio's own window: several in one of ours (log_avg_msec smaller
  // than windowMs) average, directions add.
  const perDir = new Map<string, { sum: number; n: number }>();
  for (const row of rows) {
    const key = `${Math.round(row.timeMs / windowMs)}:${row.ddir}`;
    const acc = perDir.get(key) ?? { sum: 0, n: 0 };
    acc.sum += row.value;
    acc.n += 1;
    perDir.set(key, acc);
  }
  for (const [key, acc] of perDir) {
    const b = Number(key.slice(0, key.indexOf(':')));
    out.set(b, (out.get(b) ?? 0) + acc.sum / acc.n);
  }
  return out;
}

/**
 * Per-I/O rows carry the I/O's size (windowed 3.x rows carry 0) and come several per window per
 * direction; fio <= 2.1.10's windowed rows also carry a size but come at most one per 500 ms.
 */
function isPerIoLog(rows: readonly FioLogRow[], windowMs: number): boolean {
  if (rows.some((r) => r.bs === 0)) return false;
  const windows = new Set<string>();
  for (const r of rows) windows.add(`${Math.round(r.timeMs / windowMs)}:${r.ddir}`);
  return rows.length > 1.5 * windows.size;
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
