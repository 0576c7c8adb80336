// Self-describing sector contents for integrity checks: every 512-byte sector written carries a
// pattern derived from (seed, sector number, generation), so a reader can tell exactly which write
// it is looking at without keeping a copy of the data: a stale, misplaced or torn sector shows.

const SECTOR_WORDS = 128;

function mix(seed: number, sector: number, generation: number): number {
  let x = (seed ^ Math.imul(sector | 0, 0x9e3779b1) ^ Math.imul((sector / 0x100000000) | 0, 0x85ebca6b) ^ Math.imul(generation, 0xc2b2ae35)) | 0;
  if (x === 0) x = 0x2545f491;
  return x;
}

/** Fills `count` sectors of `words` (from word 0) for sectors starting at `sector`. */
export function fillSectors(words: Uint32Array, seed: number, sector: number, generations: ArrayLike<number>, count: number): void {
  for (let s = 0; s < count; s++) {
    let x = mix(seed, sector + s, generations[s]!);
    const base = s * SECTOR_WORDS;
    words[base] = 0x424c4b42; // "BKLB"
    words[base + 1] = (sector + s) >>> 0;
    words[base + 2] = generations[s]! >>> 0;
    for (let i = 3; i < SECTOR_WORDS; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[base + i] = x >>> 0;
    }
  }
}

/** Index of the first word of sector `s` that differs from the expected pattern, or -1. */
export function checkSector(words: Uint32Array, s: number, seed: number, sector: number, generation: number): number {
  const base = s * SECTOR_WORDS;
  if (words[base] !== 0x424c4b42) return 0;
  if (words[base + 1] !== sector >>> 0) return 1;
  if (words[base + 2] !== generation >>> 0) return 2;
  let x = mix(seed, sector, generation);
  for (let i = 3; i < SECTOR_WORDS; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    if (words[base + i] !== x >>> 0) return i;
  }
  return -1;
}

/** Small, fast, seedable PRNG (xorshift128+ folded to 32 bits), so runs repeat. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    this.#a = seed | 0 || 1;
    this.#b = 0x6c078965;
    this.#c = 0x12345678 ^ seed;
    this.#d = 0x9abcdef0;
    for (let i = 0; i < 16; i++) this.next();
  }

  /** Uniform 32-bit unsigned integer. */
  next(): number {
    // xoshiro128** (Blackman & Vigna)
    const result = Math.imul(rotl(Math.imul(this.#b, 5), 7), 9) >>> 0;
    const t = this.#b << 9;
    this.#c ^= this.#a;
    this.#d ^= this.#b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return result;
  }

  /** Uniform integer in [0, n) for n up to 2^53. */
  below(n: number): number {
    if (n <= 0x100000000) return Math.floor((this.next() / 0x100000000) * n);
    return Math.floor(((this.next() * 0x200000 + (this.next() >>> 11)) / 2 ** 53) * n);
  }

  float(): number {
    return this.next() / 0x100000000;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
