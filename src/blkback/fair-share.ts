// Fairness between guests, not between rings: a domain with several saturated rings (several disks
// or queues) shares one turn quantum among them, so a guest cannot buy more of the backend's time by
// flooding more rings. Rings report whether they ended their last turn with work left (saturated).
export class FairShare {
  readonly #quantum: number;
  readonly #busy = new Map<number, Set<object>>();

  constructor(quantum: number) {
    this.#quantum = quantum;
  }

  /** Segments a ring of `domid` may take this turn. */
  quantum(domid: number): number {
    const busy = this.#busy.get(domid)?.size ?? 0;
    return busy <= 1 ? this.#quantum : Math.max(1, Math.floor(this.#quantum / busy));
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
}
