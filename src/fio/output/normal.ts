// fio 3.33's human-readable summary (stat.c show_thread_status_normal, show_ddir_status,
// show_group_stats; init.c for the per-job header line), line for line.
import type { LatencyHistogram } from '../../stats/latency-histogram.ts';
import type { FioJob } from '../job.ts';
import type { JobResult } from '../stats.ts';
import { cFloat, cInt, N2S, num2str } from './num2str.ts';
import { buildGroupStats, buildReports, depthShares, ioStatSummary, latShares, latSummary, percentOfAgg, percentileSpec, rwIos } from './report.ts';
import type { GroupRunStats, JobReport } from './report.ts';

export const FIO_VERSION_LABEL = 'fio-3.33';
/** fio's default significant_figures. */
const SIG_FIGS = 4;
const DDIR_NAMES = ['read', 'write', 'trim'] as const;
const GROUP_NAMES = ['   READ', '  WRITE', '   TRIM'] as const;

export interface NormalOptions {
  /** Version line printed after the job header lines; default "fio-3.33". */
  readonly fioVersionLabel?: string;
  /** Print the per-job header lines, version and "Starting N processes" first (default true). */
  readonly withHeader?: boolean;
  /** Clock for the report time stamps (default: now). */
  readonly now?: Date;
  /** pid printed in each report (default: this process). */
  readonly pid?: number;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'] as const;

/** C's ctime() without the newline: "Wed Nov 25 17:15:41 2026" (local time). */
export function ctime(d: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return (
    `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${d.getFullYear()}`
  );
}

function blockSizeRange(job: FioJob, ddir: 0 | 1 | 2): [number, number] {
  const split = job.bssplit[ddir];
  if (split.length > 0) {
    const sizes = split.map((e) => e.bs);
    return [Math.min(...sizes), Math.max(...sizes)];
  }
  return [job.bsMin[ddir], job.bsMax[ddir]];
}

/** init.c add_job: "name: (g=0): rw=randrw, bs=(R) 4096B-4096B, (W) ..., (T) ..., ioengine=psync, iodepth=1". */
export function formatJobHeaderLine(job: FioJob, groupId: number): string {
  const i2p = job.kbBase === 1024;
  const b = (n: number) => num2str(n, SIG_FIGS, 1, i2p, N2S.BYTE);
  const [r0, r1] = blockSizeRange(job, 0);
  const [w0, w1] = blockSizeRange(job, 1);
  const [t0, t1] = blockSizeRange(job, 2);
  return (
    `${job.name}: (g=${groupId}): rw=${job.rw}, bs=(R) ${b(r0)}-${b(r1)}, (W) ${b(w0)}-${b(w1)}, ` +
    `(T) ${b(t0)}-${b(t1)}, ioengine=${job.ioengine}, iodepth=${job.iodepth}`
  );
}

/**
 * What fio prints before the jobs start: one header per job (its first clone; the second clone adds
 * "..."), the version, and "Starting N processes" (threads when the job says `thread`).
 */
export function formatRunHeader(
  entries: readonly { readonly job: FioJob; readonly groupId: number }[],
  opts: { readonly fioVersionLabel?: string } = {},
): string {
  let out = '';
  let threads = 0;
  let processes = 0;
  for (const { job, groupId } of entries) {
    if (job.cloneIndex === 0) out += formatJobHeaderLine(job, groupId) + '\n';
    else if (job.cloneIndex === 1) out += '...\n';
    if (job.options['thread'] !== undefined && job.options['thread'] !== '0') threads++;
    else processes++;
  }
  out += `${opts.fioVersionLabel ?? FIO_VERSION_LABEL}\n`;
  if (threads + processes > 0) {
    out += 'Starting ';
    if (threads) out += `${threads} thread${threads > 1 ? 's' : ''}`;
    if (processes) out += `${threads ? ' and ' : ''}${processes} process${processes > 1 ? 'es' : ''}`;
    out += '\n';
  }
  return out;
}

/** stat.c display_lat: "    clat (usec): min=66, max=14990, avg=379.58, stdev=1023.78". */
export function formatLatLine(name: string, h: LatencyHistogram): string | null {
  const s = latSummary(h);
  if (s === null) return null;
  let [min, max, mean, dev] = s;
  let base = '(nsec)';
  if (min > 2_000_000 && max > 99_999_999 && dev > 1_000_000) {
    min = Math.floor(min / 1e6);
    max = Math.floor(max / 1e6);
    mean /= 1e6;
    dev /= 1e6;
    base = '(msec)';
  } else if (min > 2000 && max > 99_999 && dev > 1000) {
    min = Math.floor(min / 1000);
    max = Math.floor(max / 1000);
    mean /= 1000;
    dev /= 1000;
    base = '(usec)';
  }
  return (
    `    ${name} ${base}: min=${num2str(min, 6, 1, false, N2S.NONE)}, max=${num2str(max, 6, 1, false, N2S.NONE)}, ` +
    `avg=${cFloat(mean, 5, 2)}, stdev=${cFloat(dev, 5, 2)}`
  );
}

/** stat.c show_clat_percentiles: the "clat percentiles (usec):" block with fio's column layout. */
export function formatPercentiles(pre: string, h: LatencyHistogram, list: readonly number[], precision: number): string {
  if (h.count === 0 || list.length === 0) return '';
  const vals = h.percentiles(list);
  let minv = Infinity;
  let maxv = 0;
  for (const v of vals) {
    if (v < minv) minv = v;
    if (v > maxv) maxv = v;
  }
  let scale = 0;
  let divisor = 1;
  let unit = 'nsec';
  if (minv > 2_000_000 && maxv > 99_999_999) {
    scale = 2;
    divisor = 1_000_000;
    unit = 'msec';
  } else if (minv > 2000 && maxv > 99_999) {
    scale = 1;
    divisor = 1000;
    unit = 'usec';
  }
  const timeWidth = Math.max(5, Math.floor(Math.log10(Math.floor(maxv / divisor)) + 1));
  const perLine = Math.floor((80 - 7) / (precision + 10 + timeWidth));
  let out = `    ${pre} percentiles (${unit}):\n     |`;
  for (let j = 0; j < vals.length; j++) {
    if (j !== 0 && j % perLine === 0) out += '     |';
    let v = vals[j]!;
    for (let i = 0; i < scale; i++) v = Math.floor((v + 999) / 1000);
    const last = j === vals.length - 1;
    out += ` ${cFloat(list[j]!, precision + 3, precision)}th=[${cInt(v, timeWidth)}]${last ? '\n' : ','}`;
    if (last) break;
    if (j % perLine === perLine - 1) out += '\n';
  }
  return out;
}

function ddirStatus(rs: GroupRunStats | undefined, ts: JobReport, ddir: 0 | 1 | 2): string {
  const d = ts.dirs[ddir];
  if (!d.runtimeMs) return '';
  const i2p = ts.job.kbBase === 1024;
  const bw = Math.floor((1000 * d.ioBytes) / d.runtimeMs);
  const iops = Math.floor((1000 * d.totalIos) / d.runtimeMs);
  const post = ddir === 1 ? '; 0 zone resets' : '';
  let out =
    `  ${DDIR_NAMES[ddir]}: IOPS=${num2str(iops, SIG_FIGS, 1, false, N2S.NONE)}, ` +
    `BW=${num2str(bw, SIG_FIGS, 1, i2p, N2S.BYTEPERSEC)} (${num2str(bw, SIG_FIGS, 1, !i2p, N2S.BYTEPERSEC)})` +
    `(${num2str(d.ioBytes, SIG_FIGS, 1, i2p, N2S.BYTE)}/${d.runtimeMs}msec)${post}\n`;
  for (const [name, h] of [
    ['slat', d.slat],
    ['clat', d.clat],
    [' lat', d.lat],
  ] as const) {
    const line = formatLatLine(name, h);
    if (line !== null) out += line + '\n';
  }
  const { list, precision } = percentileSpec(ts.job);
  out += formatPercentiles('clat', d.clat, list, precision);

  const bwStat = ioStatSummary(d.bw);
  if (bwStat !== null) {
    let [min, max, mean, dev] = bwStat;
    const kb = ts.job.kbBase;
    let unit = i2p ? 'KiB' : 'kB';
    const perc = percentOfAgg(rs, ddir, mean);
    if (mean > kb * kb) {
      min = Math.trunc(min / kb);
      max = Math.trunc(max / kb);
      mean /= kb;
      dev /= kb;
      unit = 'MiB';
    }
    out +=
      `   bw (${unit.padStart(5, ' ')}/s): min=${cInt(min, 5)}, max=${cInt(max, 5)}, per=${cFloat(perc, 3, 2)}%, ` +
      `avg=${cFloat(mean, 5, 2)}, stdev=${cFloat(dev, 5, 2)}, samples=${d.bw.samples}\n`;
  }
  const iopsStat = ioStatSummary(d.iops);
  if (iopsStat !== null) {
    const [min, max, mean, dev] = iopsStat;
    out += `   iops        : min=${cInt(min, 5)}, max=${cInt(max, 5)}, avg=${cFloat(mean, 5, 2)}, ` + `stdev=${cFloat(dev, 5, 2)}, samples=${d.iops.samples}\n`;
  }
  return out;
}

const LAT_RANGES = ['2=', '4=', '10=', '20=', '50=', '100=', '250=', '500=', '750=', '1000=', '2000=', '>=2000='] as const;

/** stat.c show_lat: non-empty ranges, five per line. */
function latLines(shares: readonly number[], unit: string): string {
  let out = '';
  let inLine = 0;
  for (let i = 0; i < shares.length; i++) {
    if (shares[i]! <= 0) continue;
    if (inLine === 0) out += `${out ? '\n' : ''}  lat (${unit})   : `;
    else out += ', ';
    out += `${LAT_RANGES[i]}${cFloat(shares[i]!, 3, 2)}%`;
    inLine = inLine === 4 ? 0 : inLine + 1;
  }
  return out ? out + '\n' : '';
}

function mapLine(label: string, keys: readonly string[], shares: readonly number[]): string {
  return `${label}: ${keys.map((k, i) => `${k}=${cFloat(shares[i]!, 3, 1)}%`).join(', ')}\n`;
}

function jobReport(ts: JobReport, rs: GroupRunStats | undefined, when: string, pid: number): string {
  const totalRw = rwIos(ts);
  const ioBytes = ts.dirs[0].ioBytes + ts.dirs[1].ioBytes + ts.dirs[2].ioBytes;
  // fio skips a job that neither moved bytes nor issued I/O (total_io_u counts issued I/O): a job
  // whose first I/O failed is shown, with its err=.
  if (!ioBytes && !(ts.issued[0] + ts.issued[1] + ts.issued[2])) return '';
  let out = ts.error
    ? `${ts.name}: (groupid=${ts.groupId}, jobs=${ts.members}): err=${cInt(ts.error, 2)} (${ts.errorMessage}): pid=${pid}: ${when}\n`
    : `${ts.name}: (groupid=${ts.groupId}, jobs=${ts.members}): err=${cInt(ts.error, 2)}: pid=${pid}: ${when}\n`;
  if (ts.description) out += `  Description  : [${ts.description}]\n`;
  for (const ddir of [0, 1, 2] as const) if (ts.dirs[ddir].ioBytes) out += ddirStatus(rs, ts, ddir);

  out += latLines(latShares(ts.latN, totalRw), 'nsec');
  out += latLines(latShares(ts.latU, totalRw), 'usec');
  out += latLines(latShares(ts.latM, totalRw), 'msec');

  if (ts.sync.lat.count > 0) {
    out += '  fsync/fdatasync/sync_file_range:\n';
    out += (formatLatLine('sync', ts.sync.lat) ?? '') + '\n';
    const { list, precision } = percentileSpec(ts.job);
    out += formatPercentiles('sync', ts.sync.lat, list, precision);
  }

  const usr = ts.totalRunTimeMs ? (ts.usrTimeMs * 100) / ts.totalRunTimeMs : 0;
  const sys = ts.totalRunTimeMs ? (ts.sysTimeMs * 100) / ts.totalRunTimeMs : 0;
  out += `  cpu          : usr=${cFloat(usr, 3, 2)}%, sys=${cFloat(sys, 3, 2)}%, ctx=${ts.ctx}, majf=${ts.majf}, minf=${ts.minf}\n`;
  out += mapLine('  IO depths    ', ['1', '2', '4', '8', '16', '32', '>=64'], depthShares(ts.depthMap, totalRw));
  out += mapLine('     submit    ', ['0', '4', '8', '16', '32', '64', '>=64'], depthShares(ts.submitMap, ts.totalSubmit));
  out += mapLine('     complete  ', ['0', '4', '8', '16', '32', '64', '>=64'], depthShares(ts.completeMap, ts.totalComplete));
  const [r, w, t, s] = ts.issued;
  const dd = ts.dirs;
  out +=
    `     issued rwts: total=${r},${w},${t},${s} short=${dd[0].shortIos},${dd[1].shortIos},${dd[2].shortIos},0 ` +
    `dropped=${dd[0].dropIos},${dd[1].dropIos},${dd[2].dropIos},0\n`;
  // latency_target is not implemented: fio then reports target 0, window 0, 100% and the job's depth.
  out += `     latency   : target=0, window=0, percentile=100.00%, depth=${ts.job.iodepth}\n`;
  return out;
}

/** stat.c show_group_stats: "Run status group N (all jobs):" and one line per direction that ran. */
export function formatGroupStats(rs: GroupRunStats): string {
  let out = `\nRun status group ${rs.groupId} (all jobs):\n`;
  const i2p = rs.kbBase === 1024;
  for (const i of [0, 1, 2] as const) {
    if (!rs.maxRun[i]) continue;
    const s = (n: number, p2: boolean, u: 2 | 4) => num2str(n, SIG_FIGS, 1, p2, u);
    out +=
      `${GROUP_NAMES[i]}: bw=${s(rs.agg[i], i2p, N2S.BYTEPERSEC)} (${s(rs.agg[i], !i2p, N2S.BYTEPERSEC)}), ` +
      `${s(rs.minBw[i], i2p, N2S.BYTEPERSEC)}-${s(rs.maxBw[i], i2p, N2S.BYTEPERSEC)} ` +
      `(${s(rs.minBw[i], !i2p, N2S.BYTEPERSEC)}-${s(rs.maxBw[i], !i2p, N2S.BYTEPERSEC)}), ` +
      `io=${s(rs.ioBytes[i], i2p, N2S.BYTE)} (${s(rs.ioBytes[i], !i2p, N2S.BYTE)}), run=${rs.minRun[i]}-${rs.maxRun[i]}msec\n`;
  }
  return out;
}

/** fio's whole normal output for a finished run (without "Disk stats", which we have no source for). */
export function formatNormal(results: readonly JobResult[], opts: NormalOptions = {}): string {
  const reports = buildReports(results);
  const groups = buildGroupStats(reports);
  const byGroup = new Map(groups.map((g) => [g.groupId, g]));
  const when = ctime(opts.now ?? new Date());
  const pid = opts.pid ?? process.pid;
  let out = opts.withHeader === false ? '' : formatRunHeader(results, opts);
  out += '\n';
  for (const ts of reports) out += jobReport(ts, byGroup.get(ts.groupId), when, pid);
  const maxGroup = groups.length ? groups[groups.length - 1]!.groupId : -1;
  for (let g = 0; g <= maxGroup; g++) {
    const rs = byGroup.get(g);
    out += rs ? formatGroupStats(rs) : `\nRun status group ${g} (all jobs):\n`;
  }
  return out;
}
