// Per-job accounting while a job runs: the DirStats fio reports, bw/iops samples every
// bw_avg_time/iops_avg_time, IO depth levels, and the rows of fio's bw/iops/lat logs (windowed
// every log_avg_msec with bs=0 and offset=0 per direction, or one row per I/O when log_avg_msec=0).
import type { Ddir, FioJob, PerDdir } from '../job.ts';
import type { DirStats } from '../stats.ts';
import { LatencyHistogram } from '../../stats/latency-histogram.ts';
import type { LogSink } from './types.ts';

export function emptyDirStats(): DirStats {
  return {
    ioBytes: 0,
    totalIos: 0,
    shortIos: 0,
    dropIos: 0,
    runtimeMs: 0,
    slat: new LatencyHistogram(),
    clat: new LatencyHistogram(),
    lat: new LatencyHistogram(),
    bwSamples: [],
    iopsSamples: [],
  };
}

/** fio's IO depth levels: 1, 2, 4, 8, 16, 32, >=64 (io_u_mark_depth). */
export function depthLevel(depth: number): number {
  if (depth <= 1) return 0;
  if (depth <= 2) return 1;
  if (depth <= 4) return 2;
  if (depth <= 8) return 3;
  if (depth <= 16) return 4;
  if (depth <= 32) return 5;
  return 6;
}

interface Window {
  bytes: number;
  ios: number;
  latSum: number;
  slatSum: number;
  clatSum: number;
}

export class StatsCollector {
  readonly dirs: PerDdir<DirStats> = [emptyDirStats(), emptyDirStats(), emptyDirStats()];
  readonly depthCounts = new Float64Array(7);
  readonly issued: [number, number, number] = [0, 0, 0];
  /** Directions that get bw/iops samples and windowed rows even when idle. */
  private readonly active: [boolean, boolean, boolean];
  private readonly sink: LogSink | null;
  private readonly logBw: boolean;
  private readonly logIops: boolean;
  private readonly logLat: boolean;
  private readonly logAvgMsec: number;
  private readonly bwAvgMs: number;
  private readonly iopsAvgMs: number;
  /** Start of the measured period (ms, engine clock). */
  private t0 = 0;
  private lastBw = 0;
  private lastIops = 0;
  private lastLog = 0;
  private readonly bwBase: [number, number, number] = [0, 0, 0];
  private readonly iopsBase: [number, number, number] = [0, 0, 0];
  private readonly win: Window[] = [0, 1, 2].map(() => ({ bytes: 0, ios: 0, latSum: 0, slatSum: 0, clatSum: 0 }));

  constructor(job: FioJob, ddirs: readonly Ddir[], sink: LogSink | null) {
    this.active = [ddirs.includes(0), ddirs.includes(1), ddirs.includes(2)];
    this.sink = sink;
    this.logBw = sink !== null && job.writeBwLog !== null;
    this.logIops = sink !== null && job.writeIopsLog !== null;
    this.logLat = sink !== null && job.writeLatLog !== null;
    this.logAvgMsec = job.logAvgMsec;
    this.bwAvgMs = job.bwAvgTimeMs > 0 ? job.bwAvgTimeMs : 500;
    this.iopsAvgMs = job.iopsAvgTimeMs > 0 ? job.iopsAvgTimeMs : 500;
  }

  /** Starts (or restarts, after ramp_time) the measured period: counts and the log clock go to zero. */
  begin(nowMs: number): void {
    for (let d = 0; d < 3; d++) {
      this.dirs[d as Ddir] = emptyDirStats();
      this.bwBase[d] = 0;
      this.iopsBase[d] = 0;
      const w = this.win[d]!;
      w.bytes = w.ios = w.latSum = w.slatSum = w.clatSum = 0;
    }
    this.depthCounts.fill(0);
    this.issued.fill(0);
    this.t0 = nowMs;
    this.lastBw = this.lastIops = this.lastLog = nowMs;
  }

  /** A direction was used (a verify phase adds reads to a write job). */
  activate(d: Ddir): void {
    this.active[d] = true;
  }

  markIssue(d: Ddir, depthAfter: number): void {
    this.issued[d]++;
    this.depthCounts[depthLevel(depthAfter)]! += 1;
  }

  /** One completed I/O; latencies in ns; `nowMs` is its completion time. */
  complete(d: Ddir, bytes: number, offset: number, slatNs: number, clatNs: number, nowMs: number): void {
    const s = this.dirs[d];
    s.ioBytes += bytes;
    s.totalIos++;
    const latNs = slatNs + clatNs;
    s.slat.record(slatNs);
    s.clat.record(clatNs);
    s.lat.record(latNs);
    if (this.sink === null) return;
    if (this.logAvgMsec > 0) {
      const w = this.win[d]!;
      w.bytes += bytes;
      w.ios++;
      w.latSum += latNs;
      w.slatSum += slatNs;
      w.clatSum += clatNs;
      return;
    }
    const t = Math.floor(nowMs - this.t0);
    const sink = this.sink;
    if (this.logLat) {
      sink.row('lat', t, Math.round(latNs), d, bytes, offset);
      sink.row('slat', t, Math.round(slatNs), d, bytes, offset);
      sink.row('clat', t, Math.round(clatNs), d, bytes, offset);
    }
    // Per-I/O bw rows are bytes * 10^6 / clat_ns: kB/s of that one I/O (fio >= 2.10).
    if (this.logBw) sink.row('bw', t, Math.floor((bytes * 1e6) / Math.max(1, clatNs)), d, bytes, offset);
    if (this.logIops) sink.row('iops', t, 1, d, bytes, offset);
  }

  /** Called often from the job loop: closes bw/iops sample windows and log windows that are due. */
  tick(nowMs: number): void {
    if (nowMs - this.lastBw >= this.bwAvgMs) this.sampleBw(nowMs);
    if (nowMs - this.lastIops >= this.iopsAvgMs) this.sampleIops(nowMs);
    if (this.logAvgMsec > 0 && this.sink !== null && nowMs - this.lastLog >= this.logAvgMsec) this.flushWindow(nowMs, false);
  }

  /** End of the measured period: a last partial log window (as fio's finalize_logs). */
  finish(nowMs: number): void {
    if (this.logAvgMsec > 0 && this.sink !== null && nowMs - this.lastLog >= 1) this.flushWindow(nowMs, true);
  }

  elapsedMs(nowMs: number): number {
    return nowMs - this.t0;
  }

  private sampleBw(nowMs: number): void {
    const span = nowMs - this.lastBw;
    for (let d = 0; d < 3; d++) {
      const s = this.dirs[d as Ddir];
      if (!this.active[d] && s.totalIos === 0) continue;
      s.bwSamples.push(((s.ioBytes - this.bwBase[d]!) * 1000) / span / 1024);
      this.bwBase[d] = s.ioBytes;
    }
    this.lastBw = nowMs;
  }

  private sampleIops(nowMs: number): void {
    const span = nowMs - this.lastIops;
    for (let d = 0; d < 3; d++) {
      const s = this.dirs[d as Ddir];
      if (!this.active[d] && s.totalIos === 0) continue;
      s.iopsSamples.push(((s.totalIos - this.iopsBase[d]!) * 1000) / span);
      this.iopsBase[d] = s.totalIos;
    }
    this.lastIops = nowMs;
  }

  private flushWindow(nowMs: number, final: boolean): void {
    const sink = this.sink!;
    const span = nowMs - this.lastLog;
    const t = Math.floor(nowMs - this.t0);
    for (let d = 0; d < 3; d++) {
      const w = this.win[d]!;
      if (!this.active[d] && w.ios === 0) continue;
      if (final && w.ios === 0) continue;
      const dd = d as Ddir;
      // Windowed rows: bw in KiB/s, iops per second, mean latencies in ns; bs and offset are 0.
      if (this.logBw) sink.row('bw', t, Math.floor((w.bytes * 1000) / span / 1024), dd, 0, 0);
      if (this.logIops) sink.row('iops', t, Math.floor((w.ios * 1000) / span), dd, 0, 0);
      if (this.logLat && w.ios > 0) {
        sink.row('lat', t, Math.round(w.latSum / w.ios), dd, 0, 0);
        sink.row('slat', t, Math.round(w.slatSum / w.ios), dd, 0, 0);
        sink.row('clat', t, Math.round(w.clatSum / w.ios), dd, 0, 0);
      }
      w.bytes = w.ios = w.latSum = w.slatSum = w.clatSum = 0;
    }
    this.lastLog = nowMs;
  }
}
