// Logs at most `burst` messages per `intervalMs`; the rest are counted and summarised once the window
// reopens, so a guest that floods us with bad requests cannot flood the log.
export class RateLimitedLog {
  readonly #write: (line: string) => void;
  readonly #burst: number;
  readonly #intervalMs: number;
  #windowStart = 0;
  #inWindow = 0;
  #suppressed = 0;

  constructor(write: (line: string) => void, burst = 10, intervalMs = 5000) {
    this.#write = write;
    this.#burst = burst;
    this.#intervalMs = intervalMs;
  }

  log(line: string): void {
    const now = Date.now();
    if (now - this.#windowStart >= this.#intervalMs) {
      if (this.#suppressed > 0) this.#write(`(${this.#suppressed} similar messages suppressed)`);
      this.#windowStart = now;
      this.#inWindow = 0;
      this.#suppressed = 0;
    }
    if (this.#inWindow < this.#burst) {
      this.#inWindow++;
      this.#write(line);
    } else {
      this.#suppressed++;
    }
  }

  get suppressed(): number {
    return this.#suppressed;
  }
}
