// fio's random map (lib/axmap.c): one bit per minimum-size block of the region, so that random I/O
// touches every block exactly once per pass. Two things follow fio exactly because they shape the
// workload: a random pick that lands on a used block moves to the next free block (wrapping), and
// an I/O is trimmed to the run of free blocks at its start (axmap_set_nr), which is why a bssplit
// with large blocks averages far below its nominal size once the map fills up.
//
// Layout: level 0 has one bit per block; level 1 one bit per level-0 word, set when that word is
// full, so the search for a free block skips 32 full words per step.

export class RandomMap {
  readonly blocks: number;
  private readonly bits: Uint32Array;
  private readonly full: Uint32Array;
  private used = 0;

  constructor(blocks: number) {
    this.blocks = blocks;
    this.bits = new Uint32Array(Math.ceil(blocks / 32));
    this.full = new Uint32Array(Math.ceil(this.bits.length / 32));
    // Bits past the end are pre-set so the last word can become "full".
    const tail = blocks % 32;
    if (tail !== 0) this.bits[this.bits.length - 1] = ~((1 << tail) - 1) >>> 0;
  }

  get usedBlocks(): number {
    return this.used;
  }

  get isFull(): boolean {
    return this.used >= this.blocks;
  }

  isFree(block: number): boolean {
    return (this.bits[block >>> 5]! & (1 << (block & 31))) === 0;
  }

  /** Marks up to `n` blocks from `block` on, stopping at the first used one; returns how many were marked. */
  setRun(block: number, n: number): number {
    // A word at a time (an I/O of 64 KiB over 512-byte blocks is 128 bits): the run's bits in this
    // word as a mask; a used bit among them ends the run just before it.
    const bits = this.bits;
    const end = Math.min(block + n, this.blocks);
    let b = block;
    let count = 0;
    while (b < end) {
      const w = b >>> 5;
      const lo = b & 31;
      const span = Math.min(32 - lo, end - b);
      let mask = span === 32 ? 0xffffffff : (((1 << span) - 1) << lo) >>> 0;
      const word = bits[w]!;
      const used = (word & mask) >>> 0;
      let free = span;
      if (used !== 0) {
        free = ctz(used) - lo;
        mask = free === 0 ? 0 : (((1 << free) - 1) << lo) >>> 0;
      }
      if (free > 0) {
        const next = (word | mask) >>> 0;
        bits[w] = next;
        if (next === 0xffffffff) this.markFull(w);
        count += free;
      }
      if (free < span) break;
      b += span;
    }
    this.used += count;
    return count;
  }

  /** The first free block at or after `block`, wrapping to the start; -1 when the map is full. */
  nextFree(block: number): number {
    if (this.isFull) return -1;
    const found = this.scanFrom(block < this.blocks ? block : 0);
    return found >= 0 ? found : this.scanFrom(0);
  }

  reset(): void {
    this.bits.fill(0);
    this.full.fill(0);
    this.used = 0;
    const tail = this.blocks % 32;
    if (tail !== 0) this.bits[this.bits.length - 1] = ~((1 << tail) - 1) >>> 0;
  }

  private markFull(word: number): void {
    this.full[word >>> 5] = (this.full[word >>> 5]! | (1 << (word & 31))) >>> 0;
  }

  private scanFrom(block: number): number {
    let w = block >>> 5;
    // Rest of the first word.
    const first = (this.bits[w]! | ((1 << (block & 31)) - 1)) >>> 0;
    if (first !== 0xffffffff) return w * 32 + ctz(~first >>> 0);
    w++;
    const words = this.bits.length;
    while (w < words) {
      const fw = w >>> 5;
      const fullWord = (this.full[fw]! | ((1 << (w & 31)) - 1)) >>> 0;
      if (fullWord === 0xffffffff) {
        w = (fw + 1) * 32;
        continue;
      }
      w = fw * 32 + ctz(~fullWord >>> 0);
      if (w >= words) break;
      const word = this.bits[w]!;
      if (word !== 0xffffffff) return w * 32 + ctz(~word >>> 0);
      w++;
    }
    return -1;
  }
}

function ctz(v: number): number {
  return 31 - Math.clz32(v & -v);
}
