// Which disk a job runs on. In a guest, a job's filename /dev/xvdX (or the seeds' job name
// [/dev/xvda], which fio uses as the filename when it names a device) is the guest's disk xvdX.
import type { FioJob } from './job.ts';

export function jobDisk(job: FioJob): string {
  const file = job.filename[0] ?? job.name;
  const base = file.startsWith('/dev/') ? file.slice('/dev/'.length) : file;
  return base;
}

/** The bytes a set of jobs reaches into their disk: the RAM disk to make when the user gives none. */
export function bytesNeeded(jobs: readonly FioJob[]): number {
  let need = 0;
  for (const j of jobs) need = Math.max(need, j.offset + (j.size > 0 ? j.size : 0));
  return need;
}
