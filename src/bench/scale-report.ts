// The scale benchmark's table and its goals (issue 16): each figure with its goal beside it.
//   - at 64 guests, total IOPS at least 0.9x the 1-guest figure (once the backend is CPU-bound)
//   - fairness (max/min per-guest IOPS) at most 1.5
//   - memory per connected ring at most 1 MiB beyond the data in flight
//   - CPU µs per I/O with 2 (or N) data-plane workers no higher than with 1
import type { ScaleChartInput, ScaleSeries } from '../report/scale-chart.ts';
import type { ScaleReport, ScaleRow } from './scale-bench.ts';
import { warmupLabel } from './scale-bench.ts';

export const SCALE_GOALS = {
  iopsVsOneGuest: 0.9,
  fairness: 1.5,
  bytesPerRing: 1 << 20,
  goalGuests: 64,
} as const;

const PASS = '✓';
const FAIL = '✗';

function mark(ok: boolean): string {
  return ok ? PASS : FAIL;
}

function num(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** Bytes as KiB (negative when a step freed memory). */
function kib(bytes: number): string {
  return `${num(bytes / 1024)} KiB`;
}

/**
 * The store's own rate against the best the guests got through the backend: the claim that the
 * backend, not the store, is the bottleneck, with the figures that make it (or fail to).
 */
export function storeLine(report: ScaleReport): string {
  const best = report.rows.reduce((n, r) => Math.max(n, r.iops), 0);
  const alone = `alone on this thread it reads ${num(report.storeAloneIops)} IOPS (runRandomIo, QD${report.iodepth})`;
  if (best <= 0) return `store: ${report.store}; ${alone}`;
  const headroom = report.storeAloneIops / best;
  const verdict =
    headroom >= 2
      ? 'so the backend, not the store, sets the pace'
      : 'under 2x: on this run the store figure does not show that the backend is the bottleneck (a loaded machine slows both)';
  return `store: ${report.store}; ${alone}, ${num(headroom, 1)}x the best total through the backend (${num(best)}): ${verdict}`;
}

function pct(share: number): string {
  return Number.isFinite(share) ? `${num(share * 100)} %` : 'n/a';
}

/** Running plus waiting for a CPU (summed over the backend's threads): near 1 per busy thread, the backend was never idle. */
function busy(row: ScaleRow): number {
  return row.backendCpuShare + (Number.isFinite(row.backendWaitShare) ? row.backendWaitShare : 0);
}

/** The row of the same queues and workers with 1 guest, when it ran. */
function oneGuest(report: ScaleReport, row: ScaleRow): ScaleRow | undefined {
  return report.rows.find((r) => r.guests === 1 && r.queues === row.queues && r.workers === row.workers);
}

export function iopsVsOneGuest(report: ScaleReport, row: ScaleRow): number | undefined {
  const base = oneGuest(report, row);
  return base === undefined || base.iops <= 0 ? undefined : row.iops / base.iops;
}

export function formatScaleTable(report: ScaleReport): string {
  const g = SCALE_GOALS;
  const lines = [
    `| guests | queues | workers | IOPS | vs 1 guest (goal ≥ ${g.iopsVsOneGuest} at ${g.goalGuests}) | fairness (goal ≤ ${g.fairness}) | backend CPU µs/IO | backend threads running + waiting for a CPU (s/s) | process CPU µs/IO | process CPU (cores) | responses per guest wake-up | RSS/ring (goal ≤ 1 MiB) | backend heap/ring after I/O (goal ≤ 1 MiB) | RSS/guest | bad reads | warm-up (s) |`,
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of report.rows) {
    const ratio = iopsVsOneGuest(report, r);
    const ratioText = ratio === undefined ? '–' : `${num(ratio, 2)}${r.guests === g.goalGuests ? ` ${mark(ratio >= g.iopsVsOneGuest)}` : ''}`;
    const fairness = r.fairness === null ? `∞ ${FAIL}` : `${num(r.fairness, 2)} ${mark(r.fairness <= g.fairness)}`;
    lines.push(
      `| ${r.guests} | ${r.queues} | ${r.workers} | ${num(r.iops)} | ${ratioText} | ${fairness} | ${num(r.cpuUsPerIo, 2)} | ${num(r.backendCpuShare, 2)} + ${num(r.backendWaitShare, 2)} | ${num(r.processCpuUsPerIo, 2)} | ${num(r.processCpuShare, 2)} | ` +
        `${num(r.responsesPerGuestWakeup, 1)} | ${kib(r.rssPerRing)} ${mark(r.rssPerRing <= g.bytesPerRing)} | ${kib(r.heapPerRingAfterIo)} ${mark(r.heapPerRingAfterIo <= g.bytesPerRing)} | ${num(r.rssPerGuest / 2 ** 20, 1)} MiB | ${r.badReads} | ${num(r.warmupSeconds, 1)} |`,
    );
  }
  return lines.join('\n');
}

/** One line per goal: met, missed, or why it could not be judged. */
export function scaleGoalLines(report: ScaleReport): string[] {
  const g = SCALE_GOALS;
  const out: string[] = [];
  const rows = report.rows;
  const biggest = rows.reduce((n, r) => Math.max(n, r.guests), 0);
  for (const r of rows.filter((x) => x.guests === biggest && biggest > 1)) {
    const base = oneGuest(report, r);
    const ratio = iopsVsOneGuest(report, r);
    if (base === undefined || ratio === undefined) continue;
    const where = biggest === g.goalGuests ? `${biggest} guests` : `${biggest} guests (the goal is for ${g.goalGuests}; not in this sweep)`;
    out.push(
      `scaling (queues ${r.queues}, workers ${r.workers}): ${where} give ${num(ratio, 2)}x the 1-guest IOPS (goal ≥ ${g.iopsVsOneGuest}) ${mark(ratio >= g.iopsVsOneGuest)}; ` +
        `the backend's threads (main and workers) ran ${pct(base.backendCpuShare)} and waited for a CPU ${pct(base.backendWaitShare)} of the time with 1 guest, ${pct(r.backendCpuShare)} and ${pct(r.backendWaitShare)} with ${biggest} ` +
        `(the whole process used ${num(base.processCpuShare, 2)} and ${num(r.processCpuShare, 2)} of ${report.machine.cores} cores)` +
        (busy(base) < 0.9 ? '; with 1 guest the backend was idle part of the time: the guest, not the backend, set the pace' : ''),
    );
  }
  const fairnessValues = rows.filter((r) => r.guests > 1).map((r) => r.fairness ?? Number.POSITIVE_INFINITY);
  if (fairnessValues.length > 0) {
    const worst = Math.max(...fairnessValues);
    out.push(
      `fairness: worst max/min per-guest IOPS ${Number.isFinite(worst) ? num(worst, 2) : '∞ (a guest did no I/O)'} (goal ≤ ${g.fairness}) ${mark(worst <= g.fairness)}`,
    );
  }
  if (rows.length > 0) {
    // Many rings divide the step's noise: the largest sweep point is the figure to trust.
    const r = rows.reduce((a, b) => (b.guests > a.guests ? b : a));
    out.push(
      `memory per ring (${r.guests} guest${r.guests === 1 ? '' : 's'}, rings of ${r.ringPages} page${r.ringPages === 1 ? '' : 's'} and ${r.ringSlots} slots): backend heap ${kib(r.heapPerRingAfterIo)} after I/O ${mark(r.heapPerRingAfterIo <= g.bytesPerRing)}, ` +
        `process RSS ${kib(r.rssPerRing)} at connect (includes the guest's side: blkfront and its ring pages) ${mark(r.rssPerRing <= g.bytesPerRing)} (goal ≤ 1 MiB beyond data in flight; 4 KiB reads at QD${report.iodepth} hold ${kib(report.iodepth * report.bs)} of guest pages, none of it the backend's)`,
    );
  }
  const workers = [...new Set(rows.map((r) => r.workers))].sort((a, b) => a - b);
  if (workers.length < 2) {
    out.push(
      `CPU µs/IO with more data-plane workers not higher than with 1: not measured; ${report.skipped.find((s) => s.what === 'workers')?.reason ?? 'only one workers value in this sweep'}`,
    );
  } else {
    for (const w of workers.slice(1)) {
      const pairs = rows
        .filter((r) => r.workers === w)
        .map((r) => [rows.find((o) => o.workers === workers[0] && o.guests === r.guests && o.queues === r.queues), r] as const);
      const worse = pairs.filter(([one, many]) => one !== undefined && many.cpuUsPerIo > one.cpuUsPerIo);
      out.push(`CPU µs/IO with ${w} workers vs ${workers[0]}: higher at ${worse.length} of ${pairs.length} points (goal: none) ${mark(worse.length === 0)}`);
    }
  }
  const bad = rows.reduce((n, r) => n + r.badReads, 0);
  out.push(`data: ${bad === 0 ? 'every read carried the stamp of the block asked for' : `${bad} reads returned the wrong block ${FAIL}`}`);
  return out;
}

/** The plot's input: a line per (queues, workers) configuration, the goals as dashed lines. */
export function scaleChartInput(report: ScaleReport): ScaleChartInput {
  const keys = [...new Set(report.rows.map((r) => `${r.queues}/${r.workers}`))];
  const severalQueues = new Set(report.rows.map((r) => r.queues)).size > 1;
  const series: ScaleSeries[] = keys.map((key) => {
    const rows = report.rows.filter((r) => `${r.queues}/${r.workers}` === key).sort((a, b) => a.guests - b.guests);
    const { queues, workers } = rows[0]!;
    const label = `${workers} worker${workers === 1 ? '' : 's'}${severalQueues ? `, ${queues} queue${queues === 1 ? '' : 's'}` : ''}`;
    return { label, points: rows.map((r) => ({ guests: r.guests, iops: r.iops, fairness: r.fairness })) };
  });
  const base = report.rows.find((r) => r.guests === 1 && r.queues === 1 && r.workers === 1);
  const m = report.machine;
  return {
    title: `One blkback, G guests: 4 KiB random reads, QD${report.iodepth} each`,
    subtitle: `${report.seconds} s measured after a ${warmupLabel(report.warmupSeconds, report.maxWarmupSeconds, 'stopped')}; RAM store; ${m.cpu}, ${m.cores} cores, Node ${m.node}`,
    series,
    ...(base === undefined
      ? {}
      : {
          iopsGoal: {
            value: SCALE_GOALS.iopsVsOneGuest * base.iops,
            label: `goal at ${SCALE_GOALS.goalGuests} guests: ≥ ${SCALE_GOALS.iopsVsOneGuest} × 1 guest`,
          },
        }),
    fairnessGoal: { value: SCALE_GOALS.fairness, label: `goal ≤ ${SCALE_GOALS.fairness}` },
  };
}
