// Guest workload: run fio jobs inside a simulated guest against its disks (blkfront). A job's
// filename /dev/xvdX names the guest's disk xvdX; every job of the guest shares that disk and its
// ring, so numjobs=4 x iodepth=256 offers 1024 I/Os to one ring, as in the seed. Log files are
// written from the guest thread; progress goes to the host once a second for the status line.
import type { GuestContext } from '../guest/context.ts';
import type { BlockDevice } from '../block/types.ts';
import { runJobs } from './engine/index.ts';
import type { FioJob } from './job.ts';
import { openJobLogs } from './output/index.ts';
import type { JobResult } from './stats.ts';
import { jobDisk } from './targets.ts';
import { ProgressTracker } from './progress.ts';

export interface FioGuestParams {
  readonly jobs: readonly FioJob[];
  /** Directory for log files (null: logs disabled). */
  readonly logDir: string | null;
  /** Milliseconds between progress reports. */
  readonly progressMs: number;
}

export default async function fioInGuest(ctx: GuestContext, params: unknown): Promise<JobResult[]> {
  const p = params as FioGuestParams;
  const devices = new Map<FioJob, BlockDevice>();
  for (const job of p.jobs) {
    const name = jobDisk(job);
    const disk = ctx.disks.get(name);
    if (disk === undefined) {
      throw new Error(
        `job '${job.name}' (${job.where}): filename ${job.filename.join(':') || job.name} is not a disk of guest ${ctx.name} (it has ${[...ctx.disks.keys()].map((d) => `/dev/${d}`).join(', ')}; name one with filename=)`,
      );
    }
    devices.set(job, disk);
  }
  const tracker = new ProgressTracker(p.jobs);
  tracker.start(p.progressMs, (progress) => ctx.report(progress));
  try {
    const first = devices.values().next().value as BlockDevice;
    return await runJobs(
      p.jobs,
      {
        device: first,
        deviceFor: (job: FioJob) => devices.get(job) ?? first,
        allocBuffer: (bytes: number) => ctx.allocBuffer(bytes),
        logs: p.logDir === null ? () => null : (job: FioJob) => openJobLogs(job, p.logDir!),
      },
      tracker.hooks,
    );
  } finally {
    tracker.stop();
  }
}
