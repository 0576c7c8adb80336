// Live progress of a fio run for the status line: which jobs run, what they moved, and the current
// rates (from the difference between two samples). Works the same in a guest worker (sent to the
// host as a report) and bare on the main thread.
import type { RunHooks } from './engine/index.ts';
import type { FioJob } from './job.ts';

export interface FioProgress {
  readonly kind: 'fio-progress';
  /** Per job, in the run's job order: 'P' not started, 'R' running, '_' done (fio's status characters). */
  readonly states: string;
  readonly bytes: [number, number, number];
  readonly ios: [number, number, number];
  readonly bps: [number, number, number];
  readonly iops: [number, number, number];
  readonly jobsRunning: number;
  readonly elapsedMs: number;
}

interface Tracked {
  progress(): { bytes: readonly number[]; ios: readonly number[]; done: boolean };
}

export class ProgressTracker {
  readonly #jobs: readonly FioJob[];
  readonly #runners = new Map<FioJob, Tracked>();
  readonly #started = performance.now();
  #last = { t: performance.now(), bytes: [0, 0, 0], ios: [0, 0, 0] };
  #timer: NodeJS.Timeout | null = null;

  constructor(jobs: readonly FioJob[]) {
    this.#jobs = jobs;
  }

  readonly hooks: RunHooks = {
    onStart: (runner) => {
      this.#runners.set(runner.job, runner);
    },
  };

  /** Calls `report` every `intervalMs` until stop(). */
  start(intervalMs: number, report: (p: FioProgress) => void): void {
    this.#timer = setInterval(() => report(this.sample()), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  sample(): FioProgress {
    const bytes: [number, number, number] = [0, 0, 0];
    const ios: [number, number, number] = [0, 0, 0];
    let states = '';
    let running = 0;
    for (const job of this.#jobs) {
      const r = this.#runners.get(job);
      if (r === undefined) {
        states += 'P';
        continue;
      }
      const p = r.progress();
      for (let d = 0; d < 3; d++) {
        bytes[d]! += p.bytes[d]!;
        ios[d]! += p.ios[d]!;
      }
      if (p.done) states += '_';
      else {
        states += 'R';
        running++;
      }
    }
    const now = performance.now();
    const dt = Math.max(1e-3, (now - this.#last.t) / 1000);
    const rate = (now3: number[], then: number[]): [number, number, number] =>
      [0, 1, 2].map((d) => Math.max(0, (now3[d]! - then[d]!) / dt)) as [number, number, number];
    const out: FioProgress = {
      kind: 'fio-progress',
      states,
      bytes,
      ios,
      bps: rate(bytes, this.#last.bytes),
      iops: rate(ios, this.#last.ios),
      jobsRunning: running,
      elapsedMs: now - this.#started,
    };
    this.#last = { t: now, bytes, ios };
    return out;
  }
}
