// fio 3.33's terse output, version 3 (`--minimal`; stat.c show_thread_status_terse_all). One
// ';'-separated line per report: header, READ block, WRITE block (v3 has no TRIM block), CPU, IO
// depths, latency distribution in usec and msec, then one block per disk when disk stats exist.
import { cFixed, cFloat } from './num2str.ts';
import type { JobResult } from '../stats.ts';
import { FIO_VERSION_LABEL } from './normal.ts';
import { PERCENTILE_LIST_MAX, buildGroupStats, buildReports, depthShares, ioStatSummary, latShares, latSummary, percentileSpec, rwIos } from './report.ts';
import type { DirReport, GroupRunStats, JobReport } from './report.ts';

/** One disk's utilisation as fio's "Disk stats" (diskutil.c), for the terse tail. */
export interface DiskUtil {
  readonly name: string;
  readonly ios: readonly [read: number, write: number];
  readonly merges: readonly [read: number, write: number];
  readonly ticks: readonly [read: number, write: number];
  readonly inQueue: number;
  /** Percent. */
  readonly util: number;
}

const f = (x: number) => cFixed(x, 6);

function latFields(s: [number, number, number, number] | null): string {
  if (s === null) return ';0;0;0.000000;0.000000';
  const [min, max, mean, dev] = s;
  return `;${Math.floor(min / 1000)};${Math.floor(max / 1000)};${f(mean / 1000)};${f(dev / 1000)}`;
}

function ddirTerse(ts: JobReport, rs: GroupRunStats | undefined, ddir: 0 | 1 | 2): string {
  const d: DirReport = ts.dirs[ddir];
  let bw = 0;
  let iops = 0;
  if (d.runtimeMs) {
    bw = Math.floor(Math.floor((1000 * d.ioBytes) / d.runtimeMs) / 1024);
    iops = Math.floor((1000 * d.totalIos) / d.runtimeMs);
  }
  let out = `;${Math.floor(d.ioBytes / 1024)};${bw};${iops};${d.runtimeMs}`;
  out += latFields(latSummary(d.slat));
  out += latFields(latSummary(d.clat));
  // fio computes the list even for an empty direction (every value then reads as bucket 0).
  const { list } = percentileSpec(ts.job);
  const vals = d.clat.count > 0 ? d.clat.percentiles(list) : list.map(() => 0);
  for (let i = 0; i < PERCENTILE_LIST_MAX; i++) {
    out += i < list.length ? `;${f(list[i]!)}%=${Math.floor(vals[i]! / 1000)}` : ';0%=0';
  }
  out += latFields(latSummary(d.lat));
  const bwStat = ioStatSummary(d.bw);
  if (bwStat !== null) {
    const [min, max, mean, dev] = bwStat;
    let perc = 100;
    const agg = rs?.agg[ddir] ?? 0;
    if (agg) {
      const kib = Math.floor(agg / 1024);
      perc = kib ? (mean * 100) / kib : 100;
      if (perc > 100) perc = 100;
    }
    out += `;${Math.trunc(min)};${Math.trunc(max)};${f(perc)}%;${f(mean)};${f(dev)}`;
  } else {
    out += ';0;0;0.000000%;0.000000;0.000000';
  }
  return out;
}

function terseLine(ts: JobReport, rs: GroupRunStats | undefined, version: string, disks: readonly DiskUtil[]): string {
  let out = `3;${version};${ts.name};${ts.groupId};${ts.error}`;
  out += ddirTerse(ts, rs, 0);
  out += ddirTerse(ts, rs, 1);
  const usr = ts.totalRunTimeMs ? (ts.usrTimeMs * 100) / ts.totalRunTimeMs : 0;
  const sys = ts.totalRunTimeMs ? (ts.sysTimeMs * 100) / ts.totalRunTimeMs : 0;
  out += `;${f(usr)}%;${f(sys)}%;${ts.ctx};${ts.majf};${ts.minf}`;
  const total = rwIos(ts);
  for (const v of depthShares(ts.depthMap, total)) out += `;${cFloat(v, 3, 1)}%`;
  // Terse v3 has no nsec block: fio adds all nsec completions to the first usec range (stat_calc_lat_nu).
  const u = latShares(ts.latU, total);
  const nsTotal = ts.latN.reduce((a, b) => a + b, 0);
  if (total) u[0] = u[0]! + (100 * nsTotal) / total;
  for (const v of u) out += `;${cFloat(v, 3, 2)}%`;
  for (const v of latShares(ts.latM, total)) out += `;${cFloat(v, 3, 2)}%`;
  for (const d of disks) {
    out += `;${d.name};${d.ios[0]};${d.ios[1]};${d.merges[0]};${d.merges[1]};${d.ticks[0]};${d.ticks[1]};${d.inQueue};${cFloat(d.util, 3, 2)}%`;
  }
  if (ts.description) out += `;${ts.description}`;
  return out + '\n';
}

export interface TerseOptions {
  readonly fioVersionLabel?: string;
  readonly disks?: readonly DiskUtil[];
}

/** fio --minimal (terse version 3): one line per job or group_reporting group. */
export function formatTerse(results: readonly JobResult[], opts: TerseOptions = {}): string {
  const reports = buildReports(results);
  const groups = new Map(buildGroupStats(reports).map((g) => [g.groupId, g]));
  return reports.map((ts) => terseLine(ts, groups.get(ts.groupId), opts.fioVersionLabel ?? FIO_VERSION_LABEL, opts.disks ?? [])).join('');
}
