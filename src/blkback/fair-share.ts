// Fairness between guests, in service: the backend's work is counted in segments taken (a request
// costs its segment count, at least 1), per domain, and while two domains have requests waiting
// neither may get more than a quantum ahead of the other. Not between rings: a domain with several
// rings (disks, queues) has one account, so flooding more rings buys it nothing.
//
// This is start-time fair queuing (Goyal et al., SIGCOMM 1996) at the grain of a request:
//   - each domain has a service clock S (segments taken), and the backend a virtual time V, the
//     clock of the domain that took last (never going back);
//   - a domain that finds requests waiting after a pause starts from max(S, V - QUANTUM): it cannot
//     bank service for the time it had nothing to do, beyond one quantum of head start, which is
//     what lets a light guest's burst be taken at once next to a flooding one;
//   - before each request, a ring looks for another domain a quantum or more behind (the clocks,
//     then only that domain's rings: their req_prod, a word of guest memory read for scheduling
//     only): while one that can take has requests waiting, the ring ends its turn and kicks it.
// It is work-conserving: a ring stops only for a ring that can take now, never for a clock or a
// window, so the backend is never idle while a ring it can serve has requests; a guest whose own
// thread is slow to refill its ring gets less only because it has less waiting. Nothing here reads
// a clock, so a busy host that preempts the backend thread changes when turns happen, not who gets
// them.
//
// The share this gives is counted where it is delivered: a request's segments, when it is
// answered, count as contended if another domain then has requests waiting or in flight
// (VbdStats.seg_contended), which is how test/blkback-fairness.test.ts measures it.
//
// Across data-plane worker threads (blkback/workers/) each thread runs a FairShare of its own over
// one FairShareTable in shared memory: the accounts (service clocks, requests in flight, rings on
// all threads) and the virtual time are the backend's, whole, updated with atomics;
// the rings are each thread's own. So a domain whose queues are spread over several workers is
// charged on each of them for everything it was served on all: flooding more rings (or more
// workers) still buys it nothing. What is shared between domains is a thread's time, so the
// comparisons are made between the domains a thread serves: only rings on the calling thread are
// asked for requests waiting and kicked (mayTake), since giving up a turn helps only a ring this
// thread can then serve, and stopping for a ring another thread serves would leave this one idle
// (not work-conserving); "alone" and "contended" (alone, answered) likewise look at the other
// domains with rings on this thread. Domains served by different workers do not wait for each
// other at all: each has a thread's time of its own (where several workers share fewer cores, the
// kernel's scheduler shares the cores between them). VbdStats.seg_contended therefore counts
// service given while another domain of the same thread had work queued.
//
// Service clocks and the virtual time are i32 segment counts compared by their difference (as ring
// indices are), so they may wrap: a domain more than 2^29 segments behind is lifted before it could.

/** What FairShare needs of a ring (RingServer). */
export interface FairRing {
  /** Requests published and not taken that this ring could take now (0 if it is halted, stopping or full). */
  waitingRequests(): number;
  /** Requests published and not yet answered: waiting (takeable or not) or in flight. Halted rings have none. */
  hasQueued(): boolean;
  /** Schedules a turn, unless one is queued. */
  kick(): void;
}

/** One domain's account as one thread sees it: its rings on this thread, its totals in the table. */
export class DomainShare {
  readonly domid: number;
  /** This thread's rings of the domain. */
  readonly rings: FairRing[] = [];
  /** This thread's rings that ended their last turn with work left (they share the turn quantum). */
  readonly busy = new Set<FairRing>();
  /** The account's first word in the table. */
  readonly at: number;
  readonly #words: Int32Array;

  constructor(domid: number, words: Int32Array, at: number) {
    this.domid = domid;
    this.#words = words;
    this.at = at;
  }

  /** Segments taken (over every thread): this domain's service clock. */
  get service(): number {
    return Atomics.load(this.#words, this.at + ACCOUNT_SERVICE);
  }

  set service(value: number) {
    Atomics.store(this.#words, this.at + ACCOUNT_SERVICE, value | 0);
  }

  /** Requests taken and not yet answered, over all its rings (on every thread). */
  get inflight(): number {
    return Atomics.load(this.#words, this.at + ACCOUNT_INFLIGHT);
  }
}

/**
 * The accounts of every domain a backend serves, in memory its threads share (or a plain buffer for
 * a backend on one thread):
 *
 *   [0] virtual time   [1] high-water mark of accounts in use   [2] lock for join/leave   [3] unused
 *   then ACCOUNTS accounts of ACCOUNT_WORDS words:
 *     +0 domid + 1 (0: free)   +1 service clock   +2 requests in flight   +3 rings (all threads)
 *     +4..7 unused
 */
export class FairShareTable {
  readonly words: Int32Array;
  readonly accounts: number;

  constructor(buffer: SharedArrayBuffer | ArrayBuffer) {
    if (buffer.byteLength < 4 * (HEADER_WORDS + ACCOUNT_WORDS) || buffer.byteLength % (4 * ACCOUNT_WORDS) !== 0) {
      throw new RangeError(`a fair-share table of ${buffer.byteLength} bytes holds no whole account`);
    }
    this.words = new Int32Array(buffer);
    this.accounts = (this.words.length - HEADER_WORDS) / ACCOUNT_WORDS;
  }

  /** A table for `accounts` domains; shared (for worker threads) unless `shared` is false. */
  static create(accounts = DEFAULT_ACCOUNTS, shared = true): FairShareTable {
    const bytes = 4 * (HEADER_WORDS + accounts * ACCOUNT_WORDS);
    return new FairShareTable(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  }

  get buffer(): SharedArrayBuffer | ArrayBuffer {
    return this.words.buffer;
  }
}

const HEADER_WORDS = 8;
const VTIME = 0;
const HWM = 1;
const LOCK = 2;
const ACCOUNT_WORDS = 8;
const ACCOUNT_DOMID = 0;
const ACCOUNT_SERVICE = 1;
const ACCOUNT_INFLIGHT = 2;
const ACCOUNT_RINGS = 3;
/** Domains one backend serves at once (each with a ring); more is refused at connect. */
const DEFAULT_ACCOUNTS = 4096;
/** Spins for the join/leave lock before taking it from a thread that must have died holding it. */
const LOCK_SPIN_LIMIT = 50_000_000;
/** A clock this far behind the virtual time is lifted (to "not lately served") before it could wrap. */
const FAR_BEHIND = 1 << 29;

/**
 * A domain alone gets this many quanta per turn: nobody waits behind it, and fewer, longer turns cut
 * the per-turn cost (the event-loop round trip and a response push) that otherwise bounds large
 * sequential I/O.
 */
const SOLO_QUANTA = 4;
/**
 * Alone means no other domain has requests waiting or in flight, and none took any in the last this
 * many quanta of the backend's service (virtual time, not a clock). A light guest's requests are
 * answered within microseconds, so between its bursts it has nothing queued; without this memory a
 * flooder next to it would take solo turns in those gaps, and the guest's next burst would wait for
 * a four-quantum turn instead of one (the answers of a turn go out when its store calls return).
 */
const RECENT_QUANTA = 8;
/**
 * ...and, on a store that takes a turn's requests in one system call (native AIO; RingServer asks
 * BlockDeviceInfo.batchedSubmission), at least this many requests whatever their size: a ring of
 * 64 KiB requests (16 segments each) would otherwise take four a turn, each turn an event-loop round
 * trip and an io_submit. Linux's blkfront ring holds 32, so a full one goes to the kernel in one
 * call. Counted in requests, so small requests keep the segment quantum (docs/benchmarks.md §2).
 */
const SOLO_REQUESTS = 32;

/** a - b for clocks that may wrap. */
function ahead(a: number, b: number): number {
  return (a - b) | 0;
}

export class FairShare {
  readonly #quantum: number;
  readonly #table: FairShareTable;
  readonly #words: Int32Array;
  readonly #byDomid = new Map<number, DomainShare>();
  /** Domains with at least one ring on this thread (replaced, never mutated, on join/leave). */
  #domains: readonly DomainShare[] = [];

  /** `table`: the backend's accounts, shared by its threads (default: this FairShare's own). */
  constructor(quantum: number, table: FairShareTable = FairShareTable.create(DEFAULT_ACCOUNTS, false)) {
    this.#quantum = quantum;
    this.#table = table;
    this.#words = table.words;
  }

  get #vtime(): number {
    return Atomics.load(this.#words, VTIME);
  }

  /** Adds a ring of `domid`; returns the domain's account. */
  join(domid: number, ring: FairRing): DomainShare {
    let share = this.#byDomid.get(domid);
    if (share === undefined) {
      share = new DomainShare(domid, this.#words, this.#claim(domid));
      this.#byDomid.set(domid, share);
      this.#domains = [...this.#domains, share];
    }
    if (!share.rings.includes(ring)) {
      share.rings.push(ring);
      Atomics.add(this.#words, share.at + ACCOUNT_RINGS, 1);
    }
    return share;
  }

  /** Removes a ring (stopping: it takes no more). Answers still due are counted on the account it holds. */
  leave(share: DomainShare, ring: FairRing): void {
    const at = share.rings.indexOf(ring);
    if (at >= 0) {
      share.rings.splice(at, 1);
      Atomics.sub(this.#words, share.at + ACCOUNT_RINGS, 1);
    }
    this.setBusy(share, ring, false);
    if (share.rings.length === 0 && this.#byDomid.get(share.domid) === share) {
      this.#byDomid.delete(share.domid);
      this.#domains = this.#domains.filter((d) => d !== share);
    }
    this.#release(share);
  }

  /** The domain's account, if it has a ring on this thread. */
  share(domid: number): DomainShare | undefined {
    return this.#byDomid.get(domid);
  }

  /** Segments a ring of this domain may take this turn. */
  quantum(share: DomainShare): number {
    const base = this.alone(share) ? this.#quantum * SOLO_QUANTA : this.#quantum;
    const busy = share.busy.size;
    return busy <= 1 ? base : Math.max(1, Math.floor(base / busy));
  }

  /** Requests a ring of this domain may take this turn even past its segment quantum (0 next to others). */
  minRequests(share: DomainShare): number {
    if (!this.alone(share)) return 0;
    const busy = share.busy.size;
    return busy <= 1 ? SOLO_REQUESTS : Math.max(1, Math.floor(SOLO_REQUESTS / busy));
  }

  /**
   * No other domain with a ring on this thread has requests waiting or in flight, or took any lately
   * (RECENT_QUANTA of the backend's service). Domains served only by other threads do not count:
   * what a turn here costs, or an answered ring's spin for its next requests, is this thread's time,
   * not theirs.
   */
  alone(share: DomainShare): boolean {
    const domains = this.#domains;
    if (domains.length === 1 && domains[0] === share) return true;
    const words = this.#words;
    const recent = (this.#vtime - RECENT_QUANTA * this.#quantum) | 0;
    for (let i = 0; i < domains.length; i++) {
      const other = domains[i]!;
      if (other === share) continue;
      const service = Atomics.load(words, other.at + ACCOUNT_SERVICE);
      if (ahead(service, recent) < -FAR_BEHIND) Atomics.compareExchange(words, other.at + ACCOUNT_SERVICE, service, (recent - 1) | 0);
      else if (ahead(service, recent) > 0) return false;
      if (FairShare.#queued(other)) return false;
    }
    return true;
  }

  setBusy(share: DomainShare, ring: FairRing, busy: boolean): void {
    if (busy) share.busy.add(ring);
    else share.busy.delete(ring);
  }

  /**
   * Whether a ring of `share` may take its next request: false while another domain has a ring on
   * this thread that can take requests waiting and is a quantum or more behind; that ring is then
   * kicked (its turn is queued before ours comes back).
   */
  mayTake(share: DomainShare): boolean {
    const domains = this.#domains;
    if (domains.length <= 1) return true;
    const floor = (this.#vtime - this.#quantum) | 0;
    const limit = (share.service - this.#quantum) | 0;
    // The clocks first (one table, a word each), the rings only of a domain a quantum behind: their
    // req_prod lives in each guest's memory, a cache miss apiece. Read for every domain before every
    // request, that cost 64-guest hosts 2.6x the backend CPU per request of a single guest's.
    for (let i = 0; i < domains.length; i++) {
      const other = domains[i]!;
      if (other === share) continue;
      const raw = other.service;
      // Back from a pause a domain counts from the floor (see took); lifted below once found waiting.
      if (ahead(ahead(raw, floor) < 0 ? floor : raw, limit) > 0) continue;
      const rings = other.rings;
      let waiting = false;
      for (let r = 0; r < rings.length; r++) {
        if (rings[r]!.waitingRequests() > 0) {
          waiting = true;
          break;
        }
      }
      if (!waiting) continue;
      this.#lift(other.at, floor);
      for (let r = 0; r < rings.length; r++) if (rings[r]!.waitingRequests() > 0) rings[r]!.kick();
      return false;
    }
    return true;
  }

  /**
   * A ring of the domain took a request costing `cost` segments. A domain back from a pause starts
   * at most a quantum behind the virtual time (so does one another ring found waiting, in mayTake).
   */
  took(share: DomainShare, cost: number): void {
    const words = this.#words;
    const at = share.at + ACCOUNT_SERVICE;
    for (;;) {
      const vtime = Atomics.load(words, VTIME);
      const floor = (vtime - this.#quantum) | 0;
      const service = Atomics.load(words, at);
      let start = service;
      if (ahead(service, floor) < 0) start = floor;
      else if (ahead(service, vtime) > 0) this.#raiseVtime(service);
      if (Atomics.compareExchange(words, at, service, (start + cost) | 0) === service) break;
    }
    Atomics.add(words, share.at + ACCOUNT_INFLIGHT, 1);
  }

  /**
   * A request of the domain was answered. Returns whether another domain then had requests waiting
   * or in flight: its segments were served while both had work queued (VbdStats.seg_contended).
   */
  answered(share: DomainShare): boolean {
    if (Atomics.sub(this.#words, share.at + ACCOUNT_INFLIGHT, 1) === 1 && share.rings.length === 0) this.#release(share);
    const domains = this.#domains;
    if (domains.length <= 1) return false;
    for (let i = 0; i < domains.length; i++) {
      const other = domains[i]!;
      if (other !== share && FairShare.#queued(other)) return true;
    }
    return false;
  }

  /** Requests published and not yet answered: in flight (on any thread), or on a ring of this thread. */
  static #queued(share: DomainShare): boolean {
    if (share.inflight > 0) return true;
    const rings = share.rings;
    for (let r = 0; r < rings.length; r++) if (rings[r]!.hasQueued()) return true;
    return false;
  }

  /** Lifts an account's clock to `floor` if it is behind it (and nobody changed it meanwhile). */
  #lift(at: number, floor: number): void {
    const service = Atomics.load(this.#words, at + ACCOUNT_SERVICE);
    if (ahead(service, floor) < 0) Atomics.compareExchange(this.#words, at + ACCOUNT_SERVICE, service, floor);
  }

  #raiseVtime(to: number): void {
    const words = this.#words;
    for (;;) {
      const vtime = Atomics.load(words, VTIME);
      if (ahead(to, vtime) <= 0 || Atomics.compareExchange(words, VTIME, vtime, to) === vtime) return;
    }
  }

  /** The account of `domid` (found, or a free one claimed for it) under the table's lock. */
  #claim(domid: number): number {
    const words = this.#words;
    this.#lock();
    try {
      const hwm = Atomics.load(words, HWM);
      let free = -1;
      for (let i = 0; i < hwm; i++) {
        const at = HEADER_WORDS + i * ACCOUNT_WORDS;
        const owner = Atomics.load(words, at + ACCOUNT_DOMID);
        if (owner === domid + 1) return at;
        if (owner === 0 && free < 0) free = i;
      }
      if (free < 0) {
        if (hwm === this.#table.accounts)
          throw new RangeError(`the fair share has no account left for domain ${domid} (${this.#table.accounts} domains served)`);
        free = hwm;
        Atomics.store(words, HWM, hwm + 1);
      }
      const at = HEADER_WORDS + free * ACCOUNT_WORDS;
      // Not "lately served": its first request lifts it to a quantum behind (took).
      Atomics.store(words, at + ACCOUNT_SERVICE, (this.#vtime - RECENT_QUANTA * this.#quantum) | 0);
      Atomics.store(words, at + ACCOUNT_INFLIGHT, 0);
      Atomics.store(words, at + ACCOUNT_RINGS, 0);
      Atomics.store(words, at + ACCOUNT_DOMID, domid + 1);
      return at;
    } finally {
      Atomics.store(words, LOCK, 0);
    }
  }

  /** Frees the account once no thread has a ring of it and nothing of it is in flight. */
  #release(share: DomainShare): void {
    const words = this.#words;
    if (Atomics.load(words, share.at + ACCOUNT_RINGS) !== 0 || Atomics.load(words, share.at + ACCOUNT_INFLIGHT) !== 0) return;
    this.#lock();
    try {
      if (Atomics.load(words, share.at + ACCOUNT_DOMID) !== share.domid + 1) return;
      if (Atomics.load(words, share.at + ACCOUNT_RINGS) !== 0 || Atomics.load(words, share.at + ACCOUNT_INFLIGHT) !== 0) return;
      Atomics.store(words, share.at + ACCOUNT_DOMID, 0);
      let hwm = Atomics.load(words, HWM);
      while (hwm > 0 && Atomics.load(words, HEADER_WORDS + (hwm - 1) * ACCOUNT_WORDS + ACCOUNT_DOMID) === 0) hwm--;
      Atomics.store(words, HWM, hwm);
    } finally {
      Atomics.store(words, LOCK, 0);
    }
  }

  /**
   * The join/leave lock: held for a scan of the accounts, never while waiting for anything. Another
   * thread holds it for a few hundred nanoseconds; one that was terminated holding it (a worker
   * stopped mid-join) must not hang this one: past the bound the lock is taken anyway.
   */
  #lock(): void {
    for (let spins = 0; spins < LOCK_SPIN_LIMIT; spins++) {
      if (Atomics.compareExchange(this.#words, LOCK, 0, 1) === 0) return;
    }
    Atomics.store(this.#words, LOCK, 1);
  }
}
