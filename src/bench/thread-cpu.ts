// CPU time of threads of this process, from procfs. The simulated guests are worker threads of the
// process that runs blkback, so process.cpuUsage() counts them too: the backend's own cost is the
// CPU of its thread(s) alone. schedstat gives, in nanoseconds, the time a thread ran and the time
// it waited on a run queue (ready, but a CPU was busy with another thread): running plus waiting
// near 1 s per second means the thread was never idle, the mark of a bottleneck even when it got
// little CPU. Where the kernel has no schedstat, stat's utime + stime (fields 14 and 15, USER_HZ
// ticks of 10 ms) give the running time and the waiting time is unknown (NaN).
import { readFileSync } from 'node:fs';

const USER_HZ = 100;

/** The main thread's id: on Linux the main thread's tid is the pid. */
export const MAIN_THREAD = process.pid;

export interface ThreadTime {
  /** Seconds on a CPU (user + system). */
  readonly cpu: number;
  /** Seconds ready to run but waiting for a CPU; NaN where schedstat is missing. */
  readonly runqueue: number;
}

/** Thread `tid` of this process so far; NaNs where procfs is missing. */
export function threadTime(tid: number): ThreadTime {
  const task = `/proc/self/task/${tid}`;
  try {
    const [run, wait] = readFileSync(`${task}/schedstat`, 'utf8').split(' ').map(Number);
    if (Number.isFinite(run) && Number.isFinite(wait)) return { cpu: run! / 1e9, runqueue: wait! / 1e9 };
  } catch {
    // no schedstat here: fall back to stat's ticks
  }
  try {
    const stat = readFileSync(`${task}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { cpu: (Number(fields[11]) + Number(fields[12])) / USER_HZ, runqueue: Number.NaN };
  } catch {
    return { cpu: Number.NaN, runqueue: Number.NaN };
  }
}

/** The given threads together. */
export function threadsTime(tids: readonly number[]): ThreadTime {
  let cpu = 0;
  let runqueue = 0;
  for (const tid of tids) {
    const t = threadTime(tid);
    cpu += t.cpu;
    runqueue += t.runqueue;
  }
  return { cpu, runqueue };
}
