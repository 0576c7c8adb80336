// fio 3.33's --output-format=json (stat.c show_thread_status_json, add_ddir_status_json,
// add_ddir_lat_json), same keys in the same order, and a printer with fio's own layout (json.c:
// two-space indent, `"key" : value`, floats as "%f") so tools that scrape the text also work.
import type { LatencyHistogram } from '../../stats/latency-histogram.ts';
import type { JobResult } from '../stats.ts';
import { cFixed } from './num2str.ts';
import { FIO_VERSION_LABEL, ctime } from './normal.ts';
import {
  PERCENTILE_LIST_MAX,
  buildGroupStats,
  buildReports,
  depthShares,
  ioStatSummary,
  latShares,
  latSummary,
  percentOfAgg,
  percentileSpec,
  rwIos,
} from './report.ts';
import type { GroupRunStats, JobReport } from './report.ts';

export type FioJsonValue = string | number | FioJsonObject | FioJsonValue[];
export interface FioJsonObject {
  [key: string]: FioJsonValue;
}

export interface JsonOptions {
  /** The final merged [global] options (ParsedJobs.globalOptions). */
  readonly globalOptions: Readonly<Record<string, string>>;
  /** Epoch ms of the report (default: now). */
  readonly timestamp?: number;
  readonly fioVersionLabel?: string;
}

function latObject(h: LatencyHistogram, withPercentiles: boolean, list: readonly number[]): FioJsonObject {
  const s = latSummary(h);
  const o: FioJsonObject = {
    min: s ? s[0] : 0,
    max: s ? s[1] : 0,
    mean: s ? s[2] : 0,
    stddev: s ? s[3] : 0,
    N: h.count,
  };
  if (withPercentiles && h.count > 0 && list.length > 0) {
    const vals = h.percentiles(list);
    const p: FioJsonObject = {};
    for (let i = 0; i < Math.min(list.length, PERCENTILE_LIST_MAX); i++) p[cFixed(list[i]!, 6)] = vals[i]!;
    o['percentile'] = p;
  }
  return o;
}

function ddirObject(ts: JobReport, rs: GroupRunStats | undefined, ddir: 0 | 1 | 2): FioJsonObject {
  const d = ts.dirs[ddir];
  let bwBytes = 0;
  let iops = 0;
  if (d.runtimeMs) {
    bwBytes = Math.floor((1000 * d.ioBytes) / d.runtimeMs);
    iops = (1000 * d.totalIos) / d.runtimeMs;
  }
  const { list } = percentileSpec(ts.job);
  const o: FioJsonObject = {
    io_bytes: d.ioBytes,
    io_kbytes: Math.floor(d.ioBytes / 1024),
    bw_bytes: bwBytes,
    bw: Math.floor(bwBytes / 1024),
    iops,
    runtime: d.runtimeMs,
    total_ios: d.totalIos,
    short_ios: d.shortIos,
    drop_ios: d.dropIos,
    // fio's defaults: clat percentiles on, slat and lat percentiles off.
    slat_ns: latObject(d.slat, false, list),
    clat_ns: latObject(d.clat, true, list),
    lat_ns: latObject(d.lat, false, list),
  };
  const bw = ioStatSummary(d.bw);
  o['bw_min'] = bw ? Math.trunc(bw[0]) : 0;
  o['bw_max'] = bw ? Math.trunc(bw[1]) : 0;
  o['bw_agg'] = bw ? percentOfAgg(rs, ddir, bw[2]) : 0;
  o['bw_mean'] = bw ? bw[2] : 0;
  o['bw_dev'] = bw ? bw[3] : 0;
  o['bw_samples'] = d.bw.samples;
  const io = ioStatSummary(d.iops);
  o['iops_min'] = io ? Math.trunc(io[0]) : 0;
  o['iops_max'] = io ? Math.trunc(io[1]) : 0;
  o['iops_mean'] = io ? io[2] : 0;
  o['iops_stddev'] = io ? io[3] : 0;
  o['iops_samples'] = d.iops.samples;
  return o;
}

function shareObject(keys: readonly string[], shares: readonly number[]): FioJsonObject {
  const o: FioJsonObject = {};
  keys.forEach((k, i) => {
    o[k] = shares[i]!;
  });
  return o;
}

const RANGES_10 = ['2', '4', '10', '20', '50', '100', '250', '500', '750', '1000'] as const;
const RANGES_12 = [...RANGES_10, '2000', '>=2000'] as const;

function jobObject(ts: JobReport, rs: GroupRunStats | undefined, globals: Readonly<Record<string, string>>, etaElapsed: number): FioJsonObject {
  const o: FioJsonObject = { jobname: ts.name, groupid: ts.groupId, error: ts.error, eta: 0, elapsed: etaElapsed };
  // fio lists only the options set in the job's own section; an inherited value equal to the
  // global one is taken to be inherited.
  const own: FioJsonObject = {};
  for (const [k, v] of Object.entries(ts.job.options)) if (globals[k] !== v) own[k] = v;
  if (Object.keys(own).length > 0) o['job options'] = own;
  o['read'] = ddirObject(ts, rs, 0);
  o['write'] = ddirObject(ts, rs, 1);
  o['trim'] = ddirObject(ts, rs, 2);
  const { list } = percentileSpec(ts.job);
  o['sync'] = { total_ios: ts.sync.totalIos, lat_ns: latObject(ts.sync.lat, true, list) };
  o['job_runtime'] = ts.totalRunTimeMs;
  o['usr_cpu'] = ts.totalRunTimeMs ? (ts.usrTimeMs * 100) / ts.totalRunTimeMs : 0;
  o['sys_cpu'] = ts.totalRunTimeMs ? (ts.sysTimeMs * 100) / ts.totalRunTimeMs : 0;
  o['ctx'] = ts.ctx;
  o['majf'] = ts.majf;
  o['minf'] = ts.minf;
  const total = rwIos(ts);
  o['iodepth_level'] = shareObject(['1', '2', '4', '8', '16', '32', '>=64'], depthShares(ts.depthMap, total));
  o['iodepth_submit'] = shareObject(['0', '4', '8', '16', '32', '64', '>=64'], depthShares(ts.submitMap, ts.totalSubmit));
  o['iodepth_complete'] = shareObject(['0', '4', '8', '16', '32', '64', '>=64'], depthShares(ts.completeMap, ts.totalComplete));
  o['latency_ns'] = shareObject(RANGES_10, latShares(ts.latN, total));
  o['latency_us'] = shareObject(RANGES_10, latShares(ts.latU, total));
  o['latency_ms'] = shareObject(RANGES_12, latShares(ts.latM, total));
  o['latency_depth'] = ts.job.iodepth;
  o['latency_target'] = 0;
  o['latency_percentile'] = 100;
  o['latency_window'] = 0;
  if (ts.description) o['desc'] = ts.description;
  return o;
}

/** fio's JSON document for a finished run: one jobs[] entry per job, or per group with group_reporting. */
export function formatJson(results: readonly JobResult[], opts: JsonOptions): FioJsonObject {
  const now = opts.timestamp ?? Date.now();
  const reports = buildReports(results);
  const groups = new Map(buildGroupStats(reports).map((g) => [g.groupId, g]));
  const started = results.length ? Math.min(...results.map((r) => r.startedAt)) : now;
  const elapsed = Math.max(0, Math.ceil((now - started) / 1000));
  const root: FioJsonObject = {
    'fio version': opts.fioVersionLabel ?? FIO_VERSION_LABEL,
    timestamp: Math.floor(now / 1000),
    timestamp_ms: now,
    time: ctime(new Date(now)),
  };
  if (Object.keys(opts.globalOptions).length > 0) root['global options'] = { ...opts.globalOptions };
  // At the end of a run fio's ETA is finished: it prints INT_MAX ("unknown") for eta.
  root['jobs'] = reports.map((ts) => {
    const j = jobObject(ts, groups.get(ts.groupId), opts.globalOptions, elapsed);
    j['eta'] = 2147483647;
    return j;
  });
  return root;
}

/** Values fio prints with "%f" (json_object_add_value_float); every other number is an integer. */
const FLOAT_KEYS = new Set(['mean', 'stddev', 'iops', 'bw_agg', 'bw_mean', 'bw_dev', 'iops_mean', 'iops_stddev', 'usr_cpu', 'sys_cpu', 'latency_percentile']);
const FLOAT_PARENTS = new Set(['iodepth_level', 'iodepth_submit', 'iodepth_complete', 'latency_ns', 'latency_us', 'latency_ms']);

/** Text exactly in fio's layout (json.c json_print_object), with a trailing newline. */
export function stringifyFioJson(root: FioJsonObject): string {
  const pad = (level: number) => '  '.repeat(level);
  const value = (v: FioJsonValue, key: string, parent: string, level: number): string => {
    if (typeof v === 'string') return JSON.stringify(v);
    if (typeof v === 'number') {
      return FLOAT_KEYS.has(key) || FLOAT_PARENTS.has(parent) ? cFixed(v, 6) : String(Math.trunc(v));
    }
    if (Array.isArray(v)) {
      if (v.length === 0) return `[\n\n${pad(level)}]`;
      return `[\n${v.map((x) => pad(level + 1) + value(x, '', key, level + 1)).join(',\n')}\n${pad(level)}]`;
    }
    const entries = Object.entries(v);
    return `{\n${entries.map(([k, x]) => `${pad(level + 1)}${JSON.stringify(k)} : ${value(x, k, key, level + 1)}`).join(',\n')}\n${pad(level)}}`;
  };
  return value(root, '', '', 0) + '\n';
}
