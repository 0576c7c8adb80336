// Catches the one hang the guests cannot report: the backend's own thread (this one) stuck in a
// loop, so that no event, timer or message is handled any more. This thread bumps a shared counter
// every BEAT_MS; a worker thread checks it, and if it stands still for `limitMs` it prints the
// finding and ends the process with status 1 (a stuck thread cannot be interrupted from JavaScript).
import { Worker } from 'node:worker_threads';

const BEAT_MS = 100;
/** Words of the shared state: the beat counter, the stop flag, and what the campaign is doing now. */
export const WATCHDOG_BEAT = 0;
export const WATCHDOG_STOP = 1;

export interface WatchdogData {
  readonly state: SharedArrayBuffer;
  readonly limitMs: number;
  /** Said before the process ends: what was running (seed, data path). */
  readonly context: SharedArrayBuffer;
}

export class Watchdog {
  readonly #state = new SharedArrayBuffer(8);
  readonly #words = new Int32Array(this.#state);
  readonly #context = new SharedArrayBuffer(512);
  readonly #worker: Worker;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(limitMs: number) {
    const data: WatchdogData = { state: this.#state, limitMs, context: this.#context };
    this.#worker = new Worker(new URL('./watchdog-worker.js', import.meta.url), { workerData: data });
    this.#worker.unref();
    this.#timer = setInterval(() => Atomics.add(this.#words, WATCHDOG_BEAT, 1), BEAT_MS);
    this.#timer.unref();
  }

  /** What to name if the thread gets stuck (at most 500 bytes of UTF-8). */
  set context(text: string) {
    const bytes = new TextEncoder().encode(text).subarray(0, 500);
    const view = new Uint8Array(this.#context);
    view.fill(0);
    view.set(bytes);
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    Atomics.store(this.#words, WATCHDOG_STOP, 1);
    Atomics.notify(this.#words, WATCHDOG_STOP);
    await this.#worker.terminate();
  }
}
