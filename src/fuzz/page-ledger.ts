// Which pages of the hostile guest's memory the backend may write, and what every other page must
// hold: the out-of-grant detector. A page is writable for the backend only while it is granted
// writable to it (ring pages, data pages); every other page the guest filled is a canary with a
// pattern of its own (pages granted read-only, granted to another domain, revoked, or never
// granted and lying between data pages, where an off-by-one page would land), and memory the guest
// never allocated must stay zero. A scan of the whole memory finds any write the grants did not allow.
import type { GuestMemory } from '../hypervisor/types.ts';

const PAGE = 4096;
const PAGE_WORDS = PAGE / 4;

function canaryWord(frame: number, i: number): number {
  return (Math.imul(frame + 1, 0x85ebca77) ^ Math.imul(i + 1, 0xc2b2ae3d) ^ 0xcafe0001) >>> 0;
}

export interface LedgerDamage {
  readonly frame: number;
  /** What the page is (a canary's label, or "never allocated"). */
  readonly label: string;
  readonly what: 'canary' | 'unallocated';
  readonly word: number;
  readonly found: number;
  readonly expected: number;
}

export class PageLedger {
  readonly #memory: GuestMemory;
  readonly #words: Uint32Array;
  /** Per frame: 0 never allocated (must be zero), 1 the backend may write it, 2 canary. */
  readonly #kind: Uint8Array;
  readonly #labels = new Map<number, string>();
  canaries = 0;

  constructor(memory: GuestMemory) {
    this.#memory = memory;
    this.#words = new Uint32Array(memory.buffer);
    this.#kind = new Uint8Array(memory.pages);
  }

  /**
   * Allocates `count` frames for something the backend may write (rings, data pages, pages we rewrite
   * ourselves). They stay so once freed: a freed ring page keeps what the backend last wrote.
   */
  allocWritable(count: number): number {
    const frame = this.#alloc(count);
    this.#kind.fill(1, frame, frame + count);
    return frame;
  }

  /** Allocates one canary frame and fills it with its pattern; `label` says what it is, for findings. */
  allocCanary(label: string): number {
    const frame = this.#alloc(1);
    this.markCanary(frame, label);
    return frame;
  }

  /** Turns an allocated frame into a canary (its pattern is written now). */
  markCanary(frame: number, label?: string): void {
    if (label !== undefined) this.#labels.set(frame, label);
    const w = this.#words;
    const base = frame * PAGE_WORDS;
    for (let i = 0; i < PAGE_WORDS; i++) w[base + i] = canaryWord(frame, i);
    if (this.#kind[frame] !== 2) this.canaries++;
    this.#kind[frame] = 2;
  }

  #alloc(count: number): number {
    const frame = this.#memory.allocPages(count);
    if (frame < 0) throw new Error(`fuzz guest: out of guest memory allocating ${count} pages`);
    return frame;
  }

  /** Every canary holds its pattern and unallocated memory is zero; lists the first few damaged frames. */
  scan(max = 8): { damaged: number; first: LedgerDamage[] } {
    const w = this.#words;
    const kind = this.#kind;
    let damaged = 0;
    const first: LedgerDamage[] = [];
    for (let frame = 0; frame < kind.length; frame++) {
      const k = kind[frame];
      if (k === 1) continue;
      const base = frame * PAGE_WORDS;
      for (let i = 0; i < PAGE_WORDS; i++) {
        const expected = k === 2 ? canaryWord(frame, i) : 0;
        const found = w[base + i]!;
        if (found !== expected) {
          damaged++;
          if (first.length < max)
            first.push({
              frame,
              label: k === 2 ? (this.#labels.get(frame) ?? 'canary') : 'never allocated',
              what: k === 2 ? 'canary' : 'unallocated',
              word: i,
              found,
              expected,
            });
          // Repair it, so the next scan reports only new damage.
          if (k === 2) this.markCanary(frame);
          else w.fill(0, base, base + PAGE_WORDS);
          break;
        }
      }
    }
    return { damaged, first };
  }
}
