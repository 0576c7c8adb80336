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
//   - before each request, a ring looks at the other domains' rings (their req_prod, a word of guest
//     memory read for scheduling only): while one that can take has requests waiting and is a
//     quantum or more behind, the ring ends its turn and kicks that one's ring.
// It is work-conserving: a ring stops only for a ring that can take now, never for a clock or a
// window, so the backend is never idle while a ring it can serve has requests; a guest whose own
// thread is slow to refill its ring gets less only because it has less waiting. Nothing here reads
// a clock, so a busy host that preempts the backend thread changes when turns happen, not who gets
// them.
//
// The share this gives is counted where it is delivered: a request's segments, when it is
// answered, count as contended if another domain then has requests waiting or in flight
// (VbdStats.seg_contended), which is how test/blkback-fairness.test.ts measures it.

/** What FairShare needs of a ring (RingServer). */
export interface FairRing {
  /** Requests published and not taken that this ring could take now (0 if it is halted, stopping or full). */
  waitingRequests(): number;
  /** Requests published and not yet answered: waiting (takeable or not) or in flight. Halted rings have none. */
  hasQueued(): boolean;
  /** Schedules a turn, unless one is queued. */
  kick(): void;
}

/** One domain's account. Rings hold theirs (FairShare.join), so the hot path looks nothing up. */
export class DomainShare {
  readonly domid: number;
  readonly rings: FairRing[] = [];
  /** Segments taken: this domain's service clock. */
  service = 0;
  /** Requests taken and not yet answered, over all its rings. */
  inflight = 0;
  /** Rings that ended their last turn with work left (they share the turn quantum). */
  readonly busy = new Set<FairRing>();

  constructor(domid: number) {
    this.domid = domid;
  }
}

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

export class FairShare {
  readonly #quantum: number;
  readonly #byDomid = new Map<number, DomainShare>();
  /** Domains with at least one ring, for the scans below (replaced, never mutated, on join/leave). */
  #domains: readonly DomainShare[] = [];
  /** The virtual time: the service clock of the last domain that took a request. */
  #vtime = 0;

  constructor(quantum: number) {
    this.#quantum = quantum;
  }

  /** Adds a ring of `domid`; returns the domain's account. */
  join(domid: number, ring: FairRing): DomainShare {
    let share = this.#byDomid.get(domid);
    if (share === undefined) {
      share = new DomainShare(domid);
      // Not "lately served": its first request lifts it to a quantum behind (took).
      share.service = this.#vtime - RECENT_QUANTA * this.#quantum;
      this.#byDomid.set(domid, share);
      this.#domains = [...this.#domains, share];
    }
    if (!share.rings.includes(ring)) share.rings.push(ring);
    return share;
  }

  /** Removes a ring (stopping: it takes no more). Answers still due are counted on the account it holds. */
  leave(share: DomainShare, ring: FairRing): void {
    const at = share.rings.indexOf(ring);
    if (at >= 0) share.rings.splice(at, 1);
    share.busy.delete(ring);
    if (share.rings.length === 0 && this.#byDomid.get(share.domid) === share) {
      this.#byDomid.delete(share.domid);
      this.#domains = this.#domains.filter((d) => d !== share);
    }
  }

  /** The domain's account, if it has a ring. */
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

  /** No other domain has requests waiting or in flight, or took any lately (RECENT_QUANTA). */
  alone(share: DomainShare): boolean {
    const domains = this.#domains;
    if (domains.length === 1 && domains[0] === share) return true;
    const recent = this.#vtime - RECENT_QUANTA * this.#quantum;
    for (let i = 0; i < domains.length; i++) {
      const other = domains[i]!;
      if (other !== share && (other.service > recent || FairShare.#queued(other))) return false;
    }
    return true;
  }

  setBusy(share: DomainShare, ring: FairRing, busy: boolean): void {
    if (busy) share.busy.add(ring);
    else share.busy.delete(ring);
  }

  /**
   * Whether a ring of `share` may take its next request: false while another domain has a ring
   * that can take requests waiting and is a quantum or more behind; that ring is then kicked (its
   * turn is queued before ours comes back).
   */
  mayTake(share: DomainShare): boolean {
    const domains = this.#domains;
    if (domains.length <= 1) return true;
    const floor = this.#vtime - this.#quantum;
    const limit = share.service - this.#quantum;
    for (let i = 0; i < domains.length; i++) {
      const other = domains[i]!;
      if (other === share) continue;
      const rings = other.rings;
      let waiting: FairRing | null = null;
      for (let r = 0; r < rings.length; r++) {
        if (rings[r]!.waitingRequests() > 0) {
          waiting = rings[r]!;
          break;
        }
      }
      if (waiting === null) continue;
      if (other.service < floor) other.service = floor; // back from a pause: see took
      if (other.service > limit) continue;
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
    const floor = this.#vtime - this.#quantum;
    if (share.service < floor) share.service = floor;
    else if (share.service > this.#vtime) this.#vtime = share.service;
    share.service += cost;
    share.inflight++;
  }

  /**
   * A request of the domain was answered. Returns whether another domain then had requests waiting
   * or in flight: its segments were served while both had work queued (VbdStats.seg_contended).
   */
  answered(share: DomainShare): boolean {
    share.inflight--;
    const domains = this.#domains;
    if (domains.length <= 1) return false;
    for (let i = 0; i < domains.length; i++) {
      const other = domains[i]!;
      if (other !== share && FairShare.#queued(other)) return true;
    }
    return false;
  }

  static #queued(share: DomainShare): boolean {
    if (share.inflight > 0) return true;
    const rings = share.rings;
    for (let r = 0; r < rings.length; r++) if (rings[r]!.hasQueued()) return true;
    return false;
  }
}
