// fio's job scheduling (backend.c run_threads, init.c add_job): jobs start together unless a
// stonewall (explicit, or implied by the first job of a later job file) makes them wait for every
// earlier job; wait_for=name waits for that job only. Group ids go up at each stonewall or
// new_group that follows some job; clones inherit their parent's group and start with it.
import type { FioJob } from '../job.ts';
import type { JobResult } from '../stats.ts';
import { JobRunner } from './runner.ts';
import type { EngineContext, RunHooks } from './types.ts';

function startsBarrier(jobs: readonly FioJob[], i: number): boolean {
  const job = jobs[i]!;
  if (i === 0 || job.cloneIndex !== 0) return false;
  return job.stonewall || job.fileIndex !== jobs[i - 1]!.fileIndex;
}

/** fio's groupid per job. */
export function assignGroups(jobs: readonly FioJob[]): number[] {
  const ids: number[] = [];
  let group = 0;
  for (let i = 0; i < jobs.length; i++) {
    if (startsBarrier(jobs, i) || (i > 0 && jobs[i]!.cloneIndex === 0 && jobs[i]!.newGroup)) group++;
    ids.push(group);
  }
  return ids;
}

/** Runs clone-expanded jobs on ctx.device with fio's ordering; results in job order. */
export async function runJobs(jobs: readonly FioJob[], ctx: EngineContext, hooks: RunHooks = {}): Promise<JobResult[]> {
  const groups = assignGroups(jobs);
  const finished: Promise<void>[] = [];
  const results: JobResult[] = new Array<JobResult>(jobs.length);
  let barrier: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < jobs.length; i++) {
    const job = jobs[i]!;
    if (startsBarrier(jobs, i)) barrier = Promise.allSettled(finished.slice(0, i));
    const waits: Promise<unknown>[] = [barrier];
    if (job.waitFor !== '') {
      for (let j = 0; j < i; j++) if (jobs[j]!.name === job.waitFor) waits.push(finished[j]!.catch(() => {}));
    }
    finished.push(
      Promise.all(waits).then(async () => {
        const runner = new JobRunner(job, ctx.deviceFor === undefined ? ctx : { ...ctx, device: ctx.deviceFor(job) });
        hooks.onStart?.(runner);
        const control = hooks.signal === undefined ? { groupId: groups[i]! } : { groupId: groups[i]!, signal: hooks.signal };
        const result = await runner.run(control);
        results[i] = result;
        hooks.onEnd?.(result);
      }),
    );
  }
  await Promise.all(finished);
  return results;
}
