// A cap on requests in flight across every ring of one backend, so many guests together cannot make
// it hold unbounded memory (each request pins up to 44 KiB of guest pages and a pending slot).
// Rings that find the budget spent wait in FIFO order and are kicked as requests complete.
export class InflightBudget {
  readonly limit: number;
  #used = 0;
  readonly #waiters: (() => void)[] = [];

  constructor(limit: number) {
    this.limit = limit;
  }

  get used(): number {
    return this.#used;
  }

  tryAcquire(): boolean {
    if (this.#used >= this.limit) return false;
    this.#used++;
    return true;
  }

  release(): void {
    this.#used--;
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter();
  }

  waitForRoom(kick: () => void): void {
    if (!this.#waiters.includes(kick)) this.#waiters.push(kick);
  }
}
