// The backend's one cap on requests in flight (InflightBudget), over memory every data-plane worker
// shares: a count taken and given back with atomics, so the cap holds across threads. A ring that
// finds it spent waits, as on one thread, in its own thread's FIFO; a thread with rings waiting
// also waits (Atomics.waitAsync) on a generation word that a release on any other thread bumps, so
// room made by another worker wakes it too.
//
//   [0] requests in flight   [1] threads with rings waiting   [2] generation (bumped by releases they wait for)

import { InflightBudget } from '../inflight-budget.ts';

const USED = 0;
const WAITING = 1;
const GENERATION = 2;
export const SHARED_BUDGET_BYTES = 16;

export class SharedInflightBudget extends InflightBudget {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;
  readonly #waiters: (() => void)[] = [];
  /** This thread waits on the generation word. */
  #armed = false;

  constructor(limit: number, buffer: SharedArrayBuffer = new SharedArrayBuffer(SHARED_BUDGET_BYTES)) {
    super(limit);
    this.buffer = buffer;
    this.#words = new Int32Array(buffer);
  }

  override get used(): number {
    return Atomics.load(this.#words, USED);
  }

  override tryAcquire(): boolean {
    const words = this.#words;
    for (;;) {
      const used = Atomics.load(words, USED);
      if (used >= this.limit) return false;
      if (Atomics.compareExchange(words, USED, used, used + 1) === used) return true;
    }
  }

  override release(): void {
    const words = this.#words;
    Atomics.sub(words, USED, 1);
    const local = this.#waiters.shift();
    if (local !== undefined) {
      if (this.#waiters.length === 0) this.#stopWaiting();
      local();
      return;
    }
    if (Atomics.load(words, WAITING) > 0) {
      Atomics.add(words, GENERATION, 1);
      Atomics.notify(words, GENERATION);
    }
  }

  override waitForRoom(kick: () => void): void {
    if (this.#waiters.includes(kick)) return;
    this.#waiters.push(kick);
    if (this.#waiters.length === 1) {
      Atomics.add(this.#words, WAITING, 1);
      this.#arm();
      // Room made between the failed tryAcquire and WAITING going up was announced to nobody.
      if (this.used < this.limit) {
        Atomics.add(this.#words, GENERATION, 1);
        Atomics.notify(this.#words, GENERATION);
      }
    }
  }

  #stopWaiting(): void {
    Atomics.sub(this.#words, WAITING, 1);
  }

  #arm(): void {
    if (this.#armed) return;
    const result = Atomics.waitAsync(this.#words, GENERATION, Atomics.load(this.#words, GENERATION));
    if (!result.async) {
      this.#wake();
      return;
    }
    this.#armed = true;
    void result.value.then(() => {
      this.#armed = false;
      this.#wake();
    });
  }

  /** Another thread gave room back: the first ring waiting here tries again. */
  #wake(): void {
    const kick = this.#waiters.shift();
    if (kick === undefined) return;
    if (this.#waiters.length === 0) this.#stopWaiting();
    else this.#arm();
    kick();
  }
}
