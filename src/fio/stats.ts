// What running one job (one clone) produces: fio's per-job statistics, as the engine
// (src/fio/engine/) fills them and the output writers (src/fio/output/) print them. Plain data that
// survives postMessage (histograms are revived with reviveHistogram on the receiving side).
import type { LatencyHistogram } from '../stats/latency-histogram.ts';
import type { FioJob, PerDdir } from './job.ts';

export interface DirStats {
  /** Bytes and I/Os completed in the measured period (after ramp_time). */
  ioBytes: number;
  totalIos: number;
  shortIos: number;
  dropIos: number;
  /** Milliseconds this direction was active (fio's per-direction runtime). */
  runtimeMs: number;
  /** Latencies in nanoseconds: submission, completion, total (fio's slat/clat/lat). */
  slat: LatencyHistogram;
  clat: LatencyHistogram;
  lat: LatencyHistogram;
  /** Bandwidth samples (KiB/s) per bw_avg_time window, and IOPS samples per iops_avg_time window. */
  bwSamples: number[];
  iopsSamples: number[];
}

export interface VerifyFailure {
  readonly offset: number;
  readonly length: number;
  readonly message: string;
}

export interface JobResult {
  readonly job: FioJob;
  groupId: number;
  /** 0, or the errno fio would report (err=). */
  error: number;
  errorMessage: string;
  /** When error is set: what fio prints on stderr about it (the io_u error line, verify complaints), and why. */
  errorReport?: string[];
  dirs: PerDdir<DirStats>;
  /** fsync/fdatasync calls. */
  sync: { totalIos: number; lat: LatencyHistogram };
  /** Wall time of the measured period, ms (fio's job_runtime). */
  runtimeMs: number;
  /** Epoch ms when the job started its measured period. */
  startedAt: number;
  usrCpu: number;
  sysCpu: number;
  ctx: number;
  majf: number;
  minf: number;
  /** Share of I/Os (percent) submitted at each depth level: 1, 2, 4, 8, 16, 32, >=64 (fio's "IO depths"). */
  iodepthLevels: number[];
  /** I/Os issued per direction (fio's "issued rwts"). */
  issued: PerDdir<number>;
  verifyFailures: VerifyFailure[];
}
