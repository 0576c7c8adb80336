// The engine's contracts with its callers: where it runs (EngineContext) and where log rows go (LogSink).
import type { BlockDevice } from '../../block/types.ts';
import type { FioJob, PerDdir } from '../job.ts';
import type { JobResult } from '../stats.ts';

export type LogKind = 'bw' | 'iops' | 'lat' | 'slat' | 'clat';

/**
 * Receives the rows of one job's fio logs, as fio 3.33 writes them: time in ms since the measured
 * period began (restarting after ramp_time), value (bw KiB/s windowed or kB/s per I/O, iops,
 * latencies in ns), direction, block size and offset (0 and 0 in windowed rows).
 */
export interface LogSink {
  row(kind: LogKind, timeMs: number, value: number, ddir: 0 | 1 | 2, bs: number, offset: number): void;
  close(): Promise<void>;
}

export interface EngineContext {
  readonly device: BlockDevice;
  /** The device of one job, when jobs of a run use different disks (a guest's xvda and xvdb); default `device`. */
  readonly deviceFor?: (job: FioJob) => BlockDevice;
  /** A page-aligned buffer (O_DIRECT-capable devices need it); called once per depth slot at job start. */
  allocBuffer(bytes: number): Uint8Array;
  /** A sink for the job's logs, or null when it logs nothing. Called once per job; the engine calls its close() when the job ends. */
  readonly logs?: (job: FioJob) => LogSink | null;
  /** Clock in ms (tests inject one); default performance.now. */
  readonly now?: () => number;
}

export interface JobProgress {
  /** Bytes and I/Os completed so far (ramp included, verify reads included). */
  readonly bytes: PerDdir<number>;
  readonly ios: PerDdir<number>;
  readonly elapsedMs: number;
  readonly done: boolean;
}

export interface RunControl {
  /** Aborting stops the job early: no new I/O is issued, in-flight I/O completes, results are returned. */
  readonly signal?: AbortSignal;
  /** fio's group id for the result (runJobs assigns them). */
  readonly groupId?: number;
}

export interface RunHooks {
  readonly signal?: AbortSignal;
  /** A job is about to start (after its startdelay and any stonewall/wait_for). */
  onStart?(runner: { readonly job: FioJob; progress(): JobProgress; stop(): void }): void;
  onEnd?(result: JobResult): void;
}
