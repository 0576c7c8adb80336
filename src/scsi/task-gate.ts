// Task attributes (SAM-5 §8.6): SIMPLE tasks run concurrently (the Control mode page says QUEUE
// ALGORITHM MODIFIER 1, unrestricted reordering); an ORDERED task starts only when every task that
// entered before it has ended, and tasks entering after it wait until it has ended; HEAD OF QUEUE
// tasks start at once. The common case (no ORDERED task around) costs two counter updates.
import { TaskAttribute } from './types.ts';

interface Waiter {
  readonly ordered: boolean;
  readonly resolve: () => void;
}

export class TaskGate {
  #active = 0;
  #orderedRunning = false;
  readonly #queue: Waiter[] = [];

  /** True when the task may start now (then call leave() when it ends); false: await admit(). */
  tryEnter(attribute: number): boolean {
    if (attribute === TaskAttribute.HEAD_OF_QUEUE) {
      this.#active++;
      return true;
    }
    if (this.#queue.length !== 0 || this.#orderedRunning) return false;
    if (attribute === TaskAttribute.ORDERED) {
      if (this.#active !== 0) return false;
      this.#orderedRunning = true;
    }
    this.#active++;
    return true;
  }

  /** Queues a task that could not enter; resolves when it has entered. */
  admit(attribute: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#queue.push({ ordered: attribute === TaskAttribute.ORDERED, resolve });
    });
  }

  leave(attribute: number): void {
    this.#active--;
    if (attribute === TaskAttribute.ORDERED) this.#orderedRunning = false;
    this.#drain();
  }

  get active(): number {
    return this.#active;
  }

  #drain(): void {
    while (this.#queue.length !== 0 && !this.#orderedRunning) {
      const w = this.#queue[0] as Waiter;
      if (w.ordered) {
        if (this.#active !== 0) return;
        this.#orderedRunning = true;
      }
      this.#queue.shift();
      this.#active++;
      w.resolve();
    }
  }
}
