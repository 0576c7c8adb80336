// Which of a boot's console results the named checks looked at. Pure. A result no named check
// claimed is still evidence: a failure among them fails the boot on its own (checks.ts), so a
// result the checks never ask about (a guest's `wait-*` timeout, a second report from a restarted
// guest) cannot go unseen.
import type { HarnessResult } from './console.ts';

export class ResultLedger {
  readonly #results: readonly HarnessResult[];
  readonly #claimed = new Set<HarnessResult>();

  constructor(results: readonly HarnessResult[]) {
    this.#results = results;
  }

  /** The first result that matches, now counted as looked at. */
  claim(match: (r: HarnessResult) => boolean): HarnessResult | undefined {
    const r = this.#results.find(match);
    if (r !== undefined) this.#claimed.add(r);
    return r;
  }

  /** Every result that matches, all counted as looked at. */
  claimAll(match: (r: HarnessResult) => boolean): HarnessResult[] {
    const all = this.#results.filter(match);
    for (const r of all) this.#claimed.add(r);
    return all;
  }

  /** Results no check has claimed yet, in console order. */
  unclaimed(): HarnessResult[] {
    return this.#results.filter((r) => !this.#claimed.has(r));
  }
}
