// Fairness between guests, not between rings: a domain with several saturated rings (several disks
// or queues) shares one turn quantum among them, so a guest cannot buy more of the backend's time by
// flooding more rings. Rings report whether they ended their last turn with work left (saturated).
//
// Segment-charged turns alone are work-conserving: a flooding guest takes every moment the backend
// thread would otherwise idle. But that thread shares the host's cores with the guests, so those
// moments are CPU taken from a neighbour's own thread (test/blkback-hostile.test.ts: the neighbour
// kept 29-49% of its solo IOPS; with this cap 49-82%, median about 60%). So while a domain that is
// not saturated is being served, a saturated domain's next turns wait once it has used its share of
// the backend thread's time (its turns and their completions) in the current window. Alone, or
// next to other saturated domains (which simply alternate turns), it runs unthrottled.

/** Accounting window, and the share of it a saturated domain may use while others are active. */
const WINDOW_MS = 4;
const BUSY_SHARE = 0.2;
/**
 * A domain alone (no other domain served lately) gets this many quanta per turn: nobody waits
 * behind it, and fewer, longer turns cut the per-turn cost (the event-loop round trip and a
 * response push) that otherwise bounds large sequential I/O.
 */
const SOLO_QUANTA = 4;
/**
 * ...and, on a store that takes a turn's requests in one system call (native AIO; RingServer asks
 * BlockDeviceInfo.batchedSubmission), at least this many requests whatever their size: a ring of
 * 64 KiB requests (16 segments each) would otherwise take four a turn, each turn an event-loop round
 * trip and an io_submit. Linux's blkfront ring holds 32, so a full one goes to the kernel in one
 * call. Counted in requests, so small requests keep the segment quantum (docs/benchmarks.md §2).
 */
const SOLO_REQUESTS = 32;

export class FairShare {
  readonly #quantum: number;
  readonly #busy = new Map<number, Set<object>>();
  /** Backend time (ms) each domain used in the current window; a key means it was active in it. */
  #used = new Map<number, number>();
  /** Domains active in the previous window. */
  #previous = new Map<number, number>();
  #windowStart = 0;

  constructor(quantum: number) {
    this.#quantum = quantum;
  }

  /** Segments a ring of `domid` may take this turn. */
  quantum(domid: number): number {
    const base = this.#anyOther(domid) ? this.#quantum : this.#quantum * SOLO_QUANTA;
    const busy = this.#busy.get(domid)?.size ?? 0;
    return busy <= 1 ? base : Math.max(1, Math.floor(base / busy));
  }

  /** Requests a ring of `domid` may take this turn even past its segment quantum (0 next to others). */
  minRequests(domid: number): number {
    if (this.#anyOther(domid)) return 0;
    const busy = this.#busy.get(domid)?.size ?? 0;
    return busy <= 1 ? SOLO_REQUESTS : Math.max(1, Math.floor(SOLO_REQUESTS / busy));
  }

  /** No other domain was served in this window or the previous one. */
  alone(domid: number): boolean {
    return !this.#anyOther(domid);
  }

  setBusy(domid: number, ring: object, busy: boolean): void {
    let set = this.#busy.get(domid);
    if (busy) {
      if (set === undefined) this.#busy.set(domid, (set = new Set()));
      set.add(ring);
    } else if (set !== undefined) {
      set.delete(ring);
      if (set.size === 0) this.#busy.delete(domid);
    }
  }

  /** Records `ms` of backend time spent on a turn of `domid`, ending at `now` (performance.now()). */
  charge(domid: number, ms: number, now: number): void {
    this.#roll(now);
    this.#used.set(domid, (this.#used.get(domid) ?? 0) + ms);
  }

  /** How long (ms) a saturated ring of `domid` should wait before its next turn; 0: at once. */
  delay(domid: number, now: number): number {
    this.#roll(now);
    const used = this.#used.get(domid) ?? 0;
    if (used < BUSY_SHARE * WINDOW_MS || !this.#othersActive(domid)) return 0;
    return Math.max(1, this.#windowStart + WINDOW_MS - now);
  }

  /** Another domain, saturated or not, was served in this window or the previous one. */
  #anyOther(domid: number): boolean {
    for (const d of this.#used.keys()) if (d !== domid) return true;
    for (const d of this.#previous.keys()) if (d !== domid) return true;
    return false;
  }

  /** Another domain was served lately and is not saturated (saturated ones simply alternate). */
  #othersActive(domid: number): boolean {
    for (const d of this.#used.keys()) if (d !== domid && !this.#busy.has(d)) return true;
    for (const d of this.#previous.keys()) if (d !== domid && !this.#busy.has(d)) return true;
    return false;
  }

  #roll(now: number): void {
    if (now - this.#windowStart < WINDOW_MS) return;
    // More than a window without a turn: nobody was active in the previous one.
    this.#previous = now - this.#windowStart < 2 * WINDOW_MS ? this.#used : new Map();
    this.#used = new Map();
    this.#windowStart = now;
  }
}
