// Turns the engine's JobResult[] into what fio prints: one report per job, or per group when
// group_reporting merges consecutive jobs of one group (fio 3.33 stat.c __show_run_stats and
// sum_thread_stats), plus the per-group "Run status" aggregates. Pure data; no formatting here.
import { LatencyHistogram, bucketToLatency, reviveHistogram } from '../../stats/latency-histogram.ts';
import type { FioJob, PerDdir } from '../job.ts';
import type { DirStats, JobResult } from '../stats.ts';

/** fio's struct io_stat: running min/max/mean and sum of squared deviations. */
export interface IoStat {
  min: number;
  max: number;
  mean: number;
  /** Sum of squared deviations from the mean (stddev = sqrt(S / (samples - 1))). */
  S: number;
  samples: number;
}

export interface DirReport {
  ioBytes: number;
  totalIos: number;
  shortIos: number;
  dropIos: number;
  runtimeMs: number;
  slat: LatencyHistogram;
  clat: LatencyHistogram;
  lat: LatencyHistogram;
  /** Bandwidth samples in KiB/s; summed (not averaged) across members, as fio's "pure sum". */
  bw: IoStat;
  iops: IoStat;
}

export interface JobReport {
  /** The first job of the report (fio names a merged group after it). */
  readonly job: FioJob;
  readonly name: string;
  readonly groupId: number;
  members: number;
  error: number;
  errorMessage: string;
  description: string;
  dirs: PerDdir<DirReport>;
  sync: { totalIos: number; lat: LatencyHistogram };
  /** Sum of member runtimes (fio's total_run_time), ms; CPU shares are relative to it. */
  totalRunTimeMs: number;
  usrTimeMs: number;
  sysTimeMs: number;
  ctx: number;
  majf: number;
  minf: number;
  /** Counts (not shares) of I/Os at depth 1, 2, 4, 8, 16, 32, >=64. */
  depthMap: number[];
  submitMap: number[];
  completeMap: number[];
  totalSubmit: number;
  totalComplete: number;
  issued: [number, number, number, number];
  /** Completion-latency distribution counts (fio's io_u_lat_n/u/m), from the clat histograms. */
  latN: number[];
  latU: number[];
  latM: number[];
  startedAt: number;
}

export interface GroupRunStats {
  readonly groupId: number;
  kbBase: 1024 | 1000;
  minRun: PerDdir<number>;
  maxRun: PerDdir<number>;
  minBw: PerDdir<number>;
  maxBw: PerDdir<number>;
  ioBytes: PerDdir<number>;
  /** Aggregate bandwidth, bytes/s: the group's bytes over its longest runtime. */
  agg: PerDdir<number>;
}

export const DEFAULT_PERCENTILES: readonly number[] = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99];
/** fio's FIO_IO_U_LIST_MAX_LEN. */
export const PERCENTILE_LIST_MAX = 20;

/** A histogram as it may arrive from a worker thread (structured clone drops the prototype). */
export function asHistogram(h: LatencyHistogram): LatencyHistogram {
  return typeof (h as Partial<LatencyHistogram>).percentiles === 'function' ? h : reviveHistogram(h);
}

function copyHistogram(h: LatencyHistogram): LatencyHistogram {
  const out = new LatencyHistogram();
  out.merge(asHistogram(h));
  return out;
}

/** fio's add_stat_sample over a list (Welford). */
export function ioStatOf(samples: readonly number[]): IoStat {
  const s: IoStat = { min: 0, max: 0, mean: 0, S: 0, samples: 0 };
  for (const v of samples) {
    if (s.samples === 0 || v < s.min) s.min = v;
    if (s.samples === 0 || v > s.max) s.max = v;
    const delta = v - s.mean;
    if (delta !== 0) {
      s.mean += delta / (s.samples + 1);
      s.S += delta * (v - s.mean);
    }
    s.samples++;
  }
  return s;
}

/** fio's sum_stat(..., pure_sum = true): group bandwidth is the sum of its members'. */
function sumIoStat(dst: IoStat, src: IoStat): void {
  if (src.samples === 0) return;
  if (dst.samples === 0) {
    Object.assign(dst, src);
    return;
  }
  dst.min += src.min;
  dst.max += src.max;
  dst.samples += src.samples;
  dst.mean += src.mean;
  dst.S += src.S;
}

/** fio's calc_lat on an io_stat: [min, max, mean, stddev] or null without samples. */
export function ioStatSummary(s: IoStat): [number, number, number, number] | null {
  if (s.samples === 0) return null;
  return [s.min, s.max, s.mean, s.samples > 1 ? Math.sqrt(s.S / (s.samples - 1)) : 0];
}

/** fio's calc_lat on a latency histogram (ns). */
export function latSummary(h: LatencyHistogram): [number, number, number, number] | null {
  if (h.count === 0) return null;
  return [h.min, h.max, h.mean, h.stddev];
}

/** Index into fio's submit/complete maps for a batch of `nr` I/Os (io_u.c __io_u_mark_map). */
function batchIndex(nr: number): number {
  if (nr <= 0) return 0;
  if (nr <= 4) return 1;
  if (nr <= 8) return 2;
  if (nr <= 16) return 3;
  if (nr <= 32) return 4;
  if (nr <= 64) return 5;
  return 6;
}

/** Bucket of fio's 10 nsec/usec latency ranges (2, 4, 10, 20, 50, 100, 250, 500, 750, 1000). */
function smallIndex(v: number): number {
  if (v >= 750) return 9;
  if (v >= 500) return 8;
  if (v >= 250) return 7;
  if (v >= 100) return 6;
  if (v >= 50) return 5;
  if (v >= 20) return 4;
  if (v >= 10) return 3;
  if (v >= 4) return 2;
  if (v >= 2) return 1;
  return 0;
}

/**
 * fio counts each completion into io_u_lat_n/u/m by its exact clat (io_u.c io_u_mark_latency). We only
 * have the 1856-bucket histogram, so each bucket counts at its midpoint: a bucket straddling a range
 * edge (at most 1/64 wide) lands wholly on one side.
 */
export function latencyDistribution(histograms: readonly LatencyHistogram[]): { n: number[]; u: number[]; m: number[] } {
  const n = new Array<number>(10).fill(0);
  const u = new Array<number>(10).fill(0);
  const m = new Array<number>(12).fill(0);
  for (const h of histograms) {
    if (h.count === 0) continue;
    for (let b = 0; b < h.buckets.length; b++) {
      const c = h.buckets[b]!;
      if (c === 0) continue;
      const ns = Math.floor(bucketToLatency(b));
      if (ns < 1000) n[smallIndex(ns)]! += c;
      else if (ns < 1_000_000) u[smallIndex(Math.floor(ns / 1000))]! += c;
      else {
        const ms = Math.floor(ns / 1_000_000);
        m[ms >= 2000 ? 11 : ms >= 1000 ? 10 : smallIndex(ms)]! += c;
      }
    }
  }
  return { n, u, m };
}

function dirReportOf(d: DirStats): DirReport {
  return {
    ioBytes: d.ioBytes,
    totalIos: d.totalIos,
    shortIos: d.shortIos,
    dropIos: d.dropIos,
    runtimeMs: d.runtimeMs,
    slat: copyHistogram(d.slat),
    clat: copyHistogram(d.clat),
    lat: copyHistogram(d.lat),
    bw: ioStatOf(d.bwSamples),
    iops: ioStatOf(d.iopsSamples),
  };
}

function reportOf(r: JobResult): JobReport {
  const dirs = [dirReportOf(r.dirs[0]), dirReportOf(r.dirs[1]), dirReportOf(r.dirs[2])] as PerDdir<DirReport>;
  const rwIos = dirs[0].totalIos + dirs[1].totalIos + dirs[2].totalIos;
  const depthMap = [0, 0, 0, 0, 0, 0, 0];
  for (let i = 0; i < 7; i++) depthMap[i] = ((r.iodepthLevels[i] ?? 0) / 100) * rwIos;
  // JobResult has no submit/complete batch histograms: every submission and completion is counted at
  // the job's configured batch size, which is what fio reports for sync engines and fixed batches.
  const submitMap = [0, 0, 0, 0, 0, 0, 0];
  const completeMap = [0, 0, 0, 0, 0, 0, 0];
  const submitBatch = Math.max(1, r.job.iodepthBatchSubmit);
  const completeBatch = Math.max(1, r.job.iodepthBatchCompleteMin);
  const totalSubmit = rwIos > 0 ? Math.ceil(rwIos / submitBatch) : 0;
  const totalComplete = rwIos > 0 ? Math.ceil(rwIos / completeBatch) : 0;
  if (totalSubmit) submitMap[batchIndex(submitBatch)] = totalSubmit;
  if (totalComplete) completeMap[batchIndex(completeBatch)] = totalComplete;
  const dist = latencyDistribution(dirs.map((d) => d.clat));
  return {
    job: r.job,
    name: r.job.name,
    groupId: r.groupId,
    members: 1,
    error: r.error,
    errorMessage: r.errorMessage,
    description: r.job.description,
    dirs,
    sync: { totalIos: r.sync.totalIos, lat: copyHistogram(r.sync.lat) },
    totalRunTimeMs: r.runtimeMs,
    // JobResult carries CPU use as percentages of the job's runtime (fio's usr_cpu/sys_cpu).
    usrTimeMs: (r.usrCpu * r.runtimeMs) / 100,
    sysTimeMs: (r.sysCpu * r.runtimeMs) / 100,
    ctx: r.ctx,
    majf: r.majf,
    minf: r.minf,
    depthMap,
    submitMap,
    completeMap,
    totalSubmit,
    totalComplete,
    issued: [r.issued[0], r.issued[1], r.issued[2], r.sync.totalIos],
    latN: dist.n,
    latU: dist.u,
    latM: dist.m,
    startedAt: r.startedAt,
  };
}

function mergeInto(dst: JobReport, src: JobReport): void {
  for (let i = 0; i < 3; i++) {
    const a = dst.dirs[i as 0 | 1 | 2];
    const b = src.dirs[i as 0 | 1 | 2];
    a.slat.merge(b.slat);
    a.clat.merge(b.clat);
    a.lat.merge(b.lat);
    sumIoStat(a.bw, b.bw);
    sumIoStat(a.iops, b.iops);
    a.ioBytes += b.ioBytes;
    a.totalIos += b.totalIos;
    a.shortIos += b.shortIos;
    a.dropIos += b.dropIos;
    if (a.runtimeMs < b.runtimeMs) a.runtimeMs = b.runtimeMs;
  }
  dst.sync.totalIos += src.sync.totalIos;
  dst.sync.lat.merge(src.sync.lat);
  dst.totalRunTimeMs += src.totalRunTimeMs;
  dst.usrTimeMs += src.usrTimeMs;
  dst.sysTimeMs += src.sysTimeMs;
  dst.ctx += src.ctx;
  dst.majf += src.majf;
  dst.minf += src.minf;
  for (let k = 0; k < 7; k++) {
    dst.depthMap[k]! += src.depthMap[k]!;
    dst.submitMap[k]! += src.submitMap[k]!;
    dst.completeMap[k]! += src.completeMap[k]!;
  }
  dst.totalSubmit += src.totalSubmit;
  dst.totalComplete += src.totalComplete;
  for (let k = 0; k < 4; k++) dst.issued[k]! += src.issued[k]!;
  for (let k = 0; k < 10; k++) dst.latN[k]! += src.latN[k]!;
  for (let k = 0; k < 10; k++) dst.latU[k]! += src.latU[k]!;
  for (let k = 0; k < 12; k++) dst.latM[k]! += src.latM[k]!;
  // The first error in the group wins, as fio keeps ts->error once set.
  if (!dst.error && src.error) {
    dst.error = src.error;
    dst.errorMessage = src.errorMessage;
  }
  dst.members++;
}

/**
 * One report per job, except that a job with group_reporting joins the report before it when that
 * report is of the same group (fio's loop in __show_run_stats, quirks included).
 */
export function buildReports(results: readonly JobResult[]): JobReport[] {
  const reports: JobReport[] = [];
  let lastGroup = -1;
  for (const r of results) {
    const current = reports[reports.length - 1];
    if (current !== undefined && r.job.groupReporting && lastGroup === r.groupId) {
      mergeInto(current, reportOf(r));
    } else {
      reports.push(reportOf(r));
    }
    lastGroup = r.groupId;
  }
  return reports;
}

/** fio's group_run_stats for every group that has a report, in group order. */
export function buildGroupStats(reports: readonly JobReport[]): GroupRunStats[] {
  const groups = new Map<number, GroupRunStats>();
  for (const ts of reports) {
    let rs = groups.get(ts.groupId);
    if (rs === undefined) {
      rs = {
        groupId: ts.groupId,
        kbBase: ts.job.kbBase,
        minRun: [0, 0, 0],
        maxRun: [0, 0, 0],
        minBw: [Infinity, Infinity, Infinity],
        maxBw: [0, 0, 0],
        ioBytes: [0, 0, 0],
        agg: [0, 0, 0],
      };
      groups.set(ts.groupId, rs);
    }
    for (let j = 0; j < 3; j++) {
      const d = ts.dirs[j as 0 | 1 | 2];
      if (!d.runtimeMs) continue;
      if (d.runtimeMs < rs.minRun[j]! || !rs.minRun[j]) rs.minRun[j] = d.runtimeMs;
      if (d.runtimeMs > rs.maxRun[j]!) rs.maxRun[j] = d.runtimeMs;
      const bw = Math.floor((d.ioBytes * 1000) / d.runtimeMs);
      if (bw < rs.minBw[j]!) rs.minBw[j] = bw;
      if (bw > rs.maxBw[j]!) rs.maxBw[j] = bw;
      rs.ioBytes[j]! += d.ioBytes;
    }
  }
  const out = [...groups.values()].sort((a, b) => a.groupId - b.groupId);
  for (const rs of out) {
    for (let j = 0; j < 3; j++) {
      if (rs.maxRun[j]) rs.agg[j] = Math.floor((rs.ioBytes[j]! * 1000) / rs.maxRun[j]!);
      if (rs.minBw[j] === Infinity) rs.minBw[j] = 0;
    }
  }
  return out;
}

/** The percentile list a report uses, sorted as fio sorts it, and its print precision. */
export function percentileSpec(job: FioJob): { list: number[]; precision: number } {
  const list = (job.percentileList.length > 0 ? [...job.percentileList] : [...DEFAULT_PERCENTILES])
    .filter((p) => p !== 0)
    .slice(0, PERCENTILE_LIST_MAX)
    .sort((a, b) => a - b);
  // fio's precision is the most digits after a '.' in the option as written (parse.c FIO_OPT_FLOAT_LIST).
  const raw = job.options['percentile_list'];
  const texts = raw !== undefined ? raw.split(':') : job.percentileList.length > 0 ? job.percentileList.map(String) : ['99.95'];
  let precision = 0;
  for (const t of texts) {
    const m = /\.(\d+)/.exec(t);
    if (m && m[1]!.length > precision) precision = m[1]!.length;
  }
  return { list, precision };
}

/** Percent shares of a count map over `total`, with fio's floor of 0.1% for any non-zero count (stat_calc_dist). */
export function depthShares(map: readonly number[], total: number): number[] {
  return map.map((c) => {
    if (!total) return 0;
    const v = (c / total) * 100;
    return v < 0.1 && c ? 0.1 : v;
  });
}

/** Latency range shares (fio's stat_calc_lat): percent of all rw I/Os, floor 0.01% for non-zero. */
export function latShares(counts: readonly number[], total: number): number[] {
  return counts.map((c) => {
    if (!total) return 0;
    const v = (c / total) * 100;
    return v < 0.01 && c ? 0.01 : v;
  });
}

export function rwIos(ts: JobReport): number {
  return ts.dirs[0].totalIos + ts.dirs[1].totalIos + ts.dirs[2].totalIos;
}

/** fio's convert_agg_kbytes_percent: a member's mean bandwidth (truncated to an int) as a share of the group's. */
export function percentOfAgg(rs: GroupRunStats | undefined, ddir: number, mean: number): number {
  const agg = rs?.agg[ddir] ?? 0;
  if (agg <= 1024) return 100;
  const p = (Math.trunc(mean) * 100) / (agg / 1024);
  return p > 100 ? 100 : p;
}
