// One run's bandwidth per window from its threads' fio bw logs (one log per thread of the job),
// summed over the threads, for plotting runs against each other. Pure: log texts in, windows out.
//
// What fio writes (stat.c, fio 3.x, log_avg_msec > 0): each row is the rate over the last interval
// of about log_avg_msec, stamped with ms since the thread's own start (td->epoch), so every run's
// time already counts from its job's start. An interval in which the thread completed no bytes of
// a direction writes no row for it, but the interval clock moves on. A thread's last row of a
// direction covers a partial interval (the job ended, or its verify phase began, part-way through):
// it reads low or spiky.
import { UsageError } from '../internal/errors.ts';
import { parseFioLog } from './bw-log.ts';

export interface RunWindow {
  readonly startMs: number;
  readonly endMs: number;
  /** KiB/s, summed over the threads. */
  readonly kibps: number;
}

export interface RunWindowOptions {
  /** fio's log_avg_msec. Default 500. */
  readonly windowMs?: number;
  /** Which direction's rows: 0 read, 1 write (default), 2 trim. */
  readonly ddir?: number;
  /** Names the run in error messages. */
  readonly source?: string;
}

/** More windows than this (14 hours of 500 ms) means timestamps that are not a fio log's. */
const MAX_WINDOWS = 100_000;

interface ThreadRow {
  readonly index: number;
  readonly timeMs: number;
  readonly kibps: number;
}

/**
 * The run's windows from t = 0: window k is each thread's k-th interval, summed over the threads.
 *
 * The rules, and why:
 * - A thread's rows are numbered by their spacing (a gap of two intervals skips one window), not by
 *   rounding each timestamp to a grid: fio's intervals drift by a few ms each, which after some
 *   tens of windows puts two rows in one grid cell and none in the next (a spike and a drop).
 * - A thread's last row is dropped (the partial interval above).
 * - The run ends with its shortest-lived thread's last full window: after it, fewer threads are
 *   running, and the sum falls for a reason that is the workload's, not the backend's.
 * - Within that span a window where a thread has no row adds 0 for it: fio wrote none because the
 *   thread completed nothing in that interval. That includes the windows before a thread's first
 *   row, so a run whose first row is at 2732 ms starts at t = 0 with the zeros of the time its
 *   first I/O took, as fio's bandwidth figure (bytes over the whole runtime) counts it.
 * - A thread with no rows of the direction did none of it and is left out.
 * Each window ends at the mean time of its threads' rows (fio's own clock, drift included), or
 * one interval after the previous window where no thread has a row.
 */
export function runWindows(threadLogs: readonly string[], opts: RunWindowOptions = {}): RunWindow[] {
  const windowMs = opts.windowMs ?? 500;
  const ddir = opts.ddir ?? 1;
  const source = opts.source ?? 'run';
  if (!(windowMs > 0)) throw new UsageError(`runWindows: window ${windowMs} ms is not > 0`);

  const threads: Map<number, ThreadRow>[] = [];
  let end = Number.POSITIVE_INFINITY;
  threadLogs.forEach((text, i) => {
    const rows = parseFioLog(text, `${source} thread ${i + 1} bw log`)
      .filter((r) => r.ddir === ddir)
      .sort((a, b) => a.timeMs - b.timeMs);
    if (rows.length === 0) return;
    const kept = new Map<number, ThreadRow>();
    let index = -1;
    let previousMs = 0;
    let last = -1;
    rows.forEach((row, j) => {
      index = j === 0 ? Math.max(0, Math.floor(row.timeMs / windowMs) - 1) : index + Math.max(1, Math.round((row.timeMs - previousMs) / windowMs));
      previousMs = row.timeMs;
      if (index > MAX_WINDOWS)
        throw new UsageError(`${source} thread ${i + 1} bw log: row at ${row.timeMs} ms is past ${MAX_WINDOWS} windows of ${windowMs} ms`);
      if (j === rows.length - 1) return;
      kept.set(index, { index, timeMs: row.timeMs, kibps: row.value });
      last = index;
    });
    threads.push(kept);
    end = Math.min(end, last);
  });

  const windows: RunWindow[] = [];
  if (threads.length === 0) return windows;
  let startMs = 0;
  for (let k = 0; k <= end; k++) {
    let kibps = 0;
    let timeSum = 0;
    let timed = 0;
    for (const kept of threads) {
      const row = kept.get(k);
      if (row === undefined) continue;
      kibps += row.kibps;
      timeSum += row.timeMs;
      timed += 1;
    }
    const endMs = timed > 0 ? Math.max(startMs + 1, timeSum / timed) : startMs + windowMs;
    windows.push({ startMs, endMs, kibps });
    startMs = endMs;
  }
  return windows;
}
