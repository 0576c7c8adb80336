// numjobs expansion as fio 3.33 does it (init.c add_job): the job itself first, then numjobs-1
// clones; thread_number counts 1.. over every job and clone in order. The clones' subjob numbers
// count DOWN (the first clone is numjobs-1, the last is 1), and offset_increment is applied as
// offset + subjob * offset_increment (filesetup.c get_start_offset) - measured with per-I/O logs:
// numjobs=3, offset_increment=64k gives threads 1,2,3 start offsets 0, 128k, 64k.
import type { FioJob, ParsedJobs } from '../job.ts';

export function expandClones(parsed: ParsedJobs): FioJob[] {
  const out: FioJob[] = [];
  let thread = 1;
  for (const job of parsed.jobs) {
    const n = Math.max(1, job.numjobs);
    const defaultName = job.filename.length === 1 && job.filename[0] === `${job.name}.0.0`;
    for (let k = 0; k < n; k++) {
      const sub = k === 0 ? 0 : n - k;
      out.push({
        ...job,
        threadNumber: thread++,
        cloneIndex: sub,
        offset: job.offsetPercent === 0 ? job.offset + sub * job.offsetIncrement : job.offset,
        // fio clears stonewall and new_group on clones: they start with their parent
        stonewall: k === 0 ? job.stonewall : false,
        newGroup: k === 0 ? job.newGroup : false,
        filename: defaultName ? [`${job.name}.${sub}.0`] : job.filename,
      });
    }
  }
  return out;
}
