// fio's JSON "job options" object: the options written in the job's own section (after ${VAR} and
// keyword substitution, canonical names, the last of repeated keys), bare keys left out - as
// fio 3.33 prints it.
import type { FioJob } from '../job.ts';

export function jobOptionsJson(job: FioJob): Record<string, string> {
  return { ...job.options };
}
