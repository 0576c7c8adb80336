// The fio-compatible engine: runs resolved FioJobs against a BlockDevice and produces JobResults.
import type { FioJob } from '../job.ts';
import type { JobResult } from '../stats.ts';
import { JobRunner } from './runner.ts';
import type { EngineContext, RunControl } from './types.ts';

export type { EngineContext, JobProgress, LogKind, LogSink, RunControl, RunHooks } from './types.ts';
export { JobRunner, effectiveDepth, FIO_DEFAULT_RANDSEED } from './runner.ts';
export { runJobs, assignGroups } from './scheduler.ts';
export { WorkloadPattern, type IoDesc } from './pattern.ts';
export { jobGeometry, type JobGeometry } from './region.ts';
export { RandomMap } from './random-map.ts';
export { crc32c, crc32 } from './checksum.ts';

/** Runs one job to completion (use `new JobRunner(job, ctx)` to read progress or stop it early). */
export function runJob(job: FioJob, ctx: EngineContext, control?: RunControl): Promise<JobResult> {
  return new JobRunner(job, ctx).run(control);
}
