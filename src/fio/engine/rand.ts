// Seeded pseudo-random streams for the engine. fio uses L'Ecuyer's three-component Tausworthe
// generator (taus88, lib/rand.c) seeded per stream from `randseed` and the job's position; we use
// the same generator family and the same kind of derivation, so a job's offsets repeat run to run
// (bit-exactness with fio's own streams is not a goal).

/** One taus88 stream: 32-bit outputs, period about 2^88. */
export class Taus88 {
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  constructor(seed: number) {
    this.seed(seed);
  }

  seed(seed: number): void {
    // Spread the seed with an LCG (taus88's recommended seeding) and keep each component above its
    // forbidden small values (s1 > 1, s2 > 7, s3 > 15).
    let x = (seed >>> 0) ^ 0x9e3779b9;
    x = lcg(x);
    this.s1 = x >>> 0 < 2 ? x + 2 : x >>> 0;
    x = lcg(x);
    this.s2 = x >>> 0 < 8 ? x + 8 : x >>> 0;
    x = lcg(x);
    this.s3 = x >>> 0 < 16 ? x + 16 : x >>> 0;
    // Warm up: early outputs of a freshly seeded taus88 are correlated with the seed.
    for (let i = 0; i < 10; i++) this.next();
  }

  /** Uniform 32-bit unsigned integer. */
  next(): number {
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    s1 = ((s1 & 0xfffffffe) << 12) ^ (((s1 << 13) ^ s1) >>> 19);
    s2 = ((s2 & 0xfffffff8) << 4) ^ (((s2 << 2) ^ s2) >>> 25);
    s3 = ((s3 & 0xfffffff0) << 17) ^ (((s3 << 3) ^ s3) >>> 11);
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
    return (s1 ^ s2 ^ s3) >>> 0;
  }

  /** Fills `words` with the next words.length outputs of next(), in order. */
  fill(words: Uint32Array): void {
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    for (let i = 0; i < words.length; i++) {
      s1 = ((s1 & 0xfffffffe) << 12) ^ (((s1 << 13) ^ s1) >>> 19);
      s2 = ((s2 & 0xfffffff8) << 4) ^ (((s2 << 2) ^ s2) >>> 25);
      s3 = ((s3 & 0xfffffff0) << 17) ^ (((s3 << 3) ^ s3) >>> 11);
      words[i] = s1 ^ s2 ^ s3;
    }
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }

  /** Uniform double in [0, 1) with 32 bits of randomness. */
  frand(): number {
    return this.next() / 4294967296;
  }

  /** Uniform double in [0, 1) with 53 bits (for ranges above 2^32 blocks). */
  frand53(): number {
    return ((this.next() >>> 5) * 67108864 + (this.next() >>> 6)) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor((n > 0xffffffff ? this.frand53() : this.frand()) * n);
  }
}

function lcg(x: number): number {
  return (Math.imul(x, 69069) + 1) >>> 0;
}

/**
 * The named streams of one job. fio derives each of its per-job seeds from randseed and the job's
 * thread_number; repeatable only when randrepeat (the default) or randseed is set.
 */
export const STREAM = { OFFSET: 0, RWMIX: 1, BS: 2, VERIFY: 3, DIST: 4, STARTDELAY: 5, ZONE: 6, DATA: 7 } as const;

export function streamSeed(baseSeed: number, threadNumber: number, stream: number): number {
  // Mix as a 32-bit hash so neighbouring jobs and streams get unrelated sequences.
  let h = (Math.imul(baseSeed >>> 0, threadNumber || 1) + stream * 0x9e3779b1) >>> 0;
  h ^= Math.floor(baseSeed / 4294967296) >>> 0;
  return hash32(h);
}

/** A 32-bit integer hash (murmur3 finaliser); also scatters hot ranks of skewed distributions. */
export function hash32(v: number): number {
  let h = v >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Scatters a 53-bit value (as fio's __hash_u64 scatters zipf/pareto/normal ranks). */
export function hashIndex(v: number, n: number): number {
  const lo = v >>> 0;
  const hi = Math.floor(v / 4294967296) >>> 0;
  const a = hash32(lo ^ hash32(hi + 0x27d4eb2f));
  if (n <= 0xffffffff) return a % n;
  const b = hash32(a ^ 0x165667b1);
  return ((b >>> 11) * 4294967296 + a) % n;
}
