// What a network store's client (the iSCSI initiator, the NBD client) does when its connection is
// lost, the same for both: connect again with backoff until a window from the loss runs out, one
// attempt at a time however many requests wait; and the bookkeeping that keeps a lost connection
// from losing writes silently (acknowledged writes the peer may still have held in a volatile
// cache make the next flush fail, once, as Linux reports a writeback error).

/** Waits between attempts to connect again (the last one repeats). */
const BACKOFF_MS = [50, 100, 200, 500, 1000] as const;

export interface ReconnectOptions<C> {
  /** How long after the loss attempts go on. */
  readonly windowMs: number;
  /** One attempt: connects and adopts the connection (then calls connected()), or throws. */
  readonly connect: () => Promise<C>;
  /** The error to end with when the device was closed meanwhile, or undefined while it is open. */
  readonly closed: () => Error | undefined;
  /** The error once the window ran out, given why the last attempt failed. */
  readonly gaveUp: (lastError: string) => Error;
}

export class Reconnector<C> {
  readonly #o: ReconnectOptions<C>;
  /** When the connection was lost (the window counts from here); undefined while connected. */
  #lostAt: number | undefined;
  /** A window ran out: later requests get one attempt each, not a new window. */
  #gaveUp = false;
  #running: Promise<C> | undefined;

  constructor(o: ReconnectOptions<C>) {
    this.#o = o;
  }

  /** The live connection was lost. */
  lost(): void {
    this.#lostAt = Date.now();
  }

  /** A connection was made: the next loss opens a new window. */
  connected(): void {
    this.#lostAt = undefined;
    this.#gaveUp = false;
  }

  /** A new connection; callers waiting at the same time share the attempts. */
  reconnect(): Promise<C> {
    this.#running ??= this.#attempts().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** Resolves once no attempts are running (however they end). */
  async settled(): Promise<void> {
    await this.#running?.catch(() => undefined);
  }

  async #attempts(): Promise<C> {
    const deadline = this.#gaveUp ? Date.now() : (this.#lostAt ?? Date.now()) + this.#o.windowMs;
    let lastError = 'no attempt';
    for (let attempt = 0; ; attempt++) {
      const closed = this.#o.closed();
      if (closed !== undefined) throw closed;
      try {
        return await this.#o.connect();
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
      }
      const wait = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]!;
      if (Date.now() + wait > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    this.#gaveUp = true;
    throw this.#o.gaveUp(lastError);
  }
}

/** Which acknowledged writes a completed flush covers, and whether a loss may have taken some. */
export class UnflushedWrites {
  #acked = 0;
  #flushed = 0;
  #cacheLost = false;

  /** A write was acknowledged (a FUA write is durable already and need not be counted). */
  acked(): void {
    this.#acked++;
  }

  /** The peer's cache may be gone (a lost connection, a reset): flags it if our writes could be there. */
  cacheMayBeLost(): void {
    if (this.#acked > this.#flushed) this.#cacheLost = true;
  }

  /** Before sending a flush: what it will cover, for flushed(). */
  flushStarting(): number {
    return this.#acked;
  }

  /**
   * The flush that started at `covers` completed. True when the cache may have been lost since the
   * last completed flush: the caller fails this flush with EIO (once; the flag is cleared).
   */
  flushed(covers: number): boolean {
    this.#flushed = Math.max(this.#flushed, covers);
    if (!this.#cacheLost) return false;
    this.#cacheLost = false;
    return true;
  }
}
