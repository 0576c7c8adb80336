// Latency histogram with fio's bucket scheme (stat.h: FIO_IO_U_PLAT_BITS = 6, FIO_IO_U_PLAT_GROUP_NR = 29,
// so 29 * 64 = 1856 buckets over nanoseconds). Values below 128 ns get one bucket each; above, every power
// of two is split into 64 linear buckets, so a bucket's relative error is at most 1/64. Using fio's own
// scheme makes our percentiles agree with fio's to the bucket.

export const PLAT_BITS = 6;
export const PLAT_VAL = 1 << PLAT_BITS;
export const PLAT_GROUP_NR = 29;
export const PLAT_NR = PLAT_GROUP_NR * PLAT_VAL;

/** Bucket index of a latency in nanoseconds. */
export function latencyToBucket(ns: number): number {
  const v = ns < 0 ? 0 : Math.floor(ns);
  if (v < PLAT_VAL << 1) return v;
  // The hot path (every I/O records three latencies): below 2^32 the most significant bit is exact
  // from Math.clz32, and a 32-bit shift does the division. Larger values (and NaN) take the
  // float formula, whose results the fast path reproduces bit for bit.
  if (v < 0x1_0000_0000) {
    const errorBits = 31 - Math.clz32(v) - PLAT_BITS;
    return ((errorBits + 1) << PLAT_BITS) + ((v >>> errorBits) & (PLAT_VAL - 1));
  }
  return latencyToBucketWide(v);
}

/** The general formula, for integers of 2^32 and above (latencies over 4.3 s) and non-numbers. */
function latencyToBucketWide(v: number): number {
  const msb = Math.floor(Math.log2(v));
  // Math.log2 can round up just below a power of two; correct it.
  const top = 2 ** msb > v ? msb - 1 : msb;
  const errorBits = top - PLAT_BITS;
  const base = (errorBits + 1) << PLAT_BITS;
  const offset = Math.floor(v / 2 ** errorBits) & (PLAT_VAL - 1);
  const index = base + offset;
  return index < PLAT_NR ? index : PLAT_NR - 1;
}

/** Representative value (nanoseconds) of a bucket: its midpoint, as fio reports percentiles. */
export function bucketToLatency(index: number): number {
  if (index < PLAT_VAL << 1) return index;
  const errorBits = (index >> PLAT_BITS) - 1;
  const base = 2 ** (errorBits + PLAT_BITS);
  const k = index % PLAT_VAL;
  return base + (k + 0.5) * 2 ** errorBits;
}

export class LatencyHistogram {
  readonly buckets = new Float64Array(PLAT_NR);
  count = 0;
  sum = 0;
  sumSquares = 0;
  min = Number.POSITIVE_INFINITY;
  max = 0;

  record(ns: number): void {
    this.buckets[latencyToBucket(ns)]! += 1;
    this.count++;
    this.sum += ns;
    this.sumSquares += ns * ns;
    if (ns < this.min) this.min = ns;
    if (ns > this.max) this.max = ns;
  }

  merge(other: LatencyHistogram): void {
    for (let i = 0; i < PLAT_NR; i++) this.buckets[i]! += other.buckets[i]!;
    this.count += other.count;
    this.sum += other.sum;
    this.sumSquares += other.sumSquares;
    if (other.min < this.min) this.min = other.min;
    if (other.max > this.max) this.max = other.max;
  }

  get mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  get stddev(): number {
    if (this.count < 2) return 0;
    const m = this.mean;
    return Math.sqrt(Math.max(0, (this.sumSquares - this.count * m * m) / (this.count - 1)));
  }

  /** Values (ns) at the given percentiles (0..100), fio's way: the first bucket whose cumulative count reaches the rank. */
  percentiles(list: readonly number[]): number[] {
    const out: number[] = [];
    if (this.count === 0) return list.map(() => 0);
    const sorted = list.map((p, i) => ({ p, i })).sort((a, b) => a.p - b.p);
    const result = new Array<number>(list.length).fill(0);
    let cumulative = 0;
    let j = 0;
    for (let b = 0; b < PLAT_NR && j < sorted.length; b++) {
      cumulative += this.buckets[b]!;
      while (j < sorted.length && cumulative >= (sorted[j]!.p / 100) * this.count) {
        result[sorted[j]!.i] = bucketToLatency(b);
        j++;
      }
    }
    while (j < sorted.length) result[sorted[j++]!.i] = bucketToLatency(PLAT_NR - 1);
    out.push(...result);
    return out;
  }

  toJSON(): { count: number; min: number; max: number; mean: number; p50: number; p99: number; p999: number } {
    const [p50, p99, p999] = this.percentiles([50, 99, 99.9]);
    return { count: this.count, min: this.count ? this.min : 0, max: this.max, mean: this.mean, p50: p50!, p99: p99!, p999: p999! };
  }
}

/** A histogram that crossed a thread boundary (structured clone drops the prototype): give it back its methods. */
export function reviveHistogram(data: { buckets: Float64Array; count: number; sum: number; sumSquares: number; min: number; max: number }): LatencyHistogram {
  const h = new LatencyHistogram();
  h.buckets.set(data.buckets);
  h.count = data.count;
  h.sum = data.sum;
  h.sumSquares = data.sumSquares;
  h.min = data.min;
  h.max = data.max;
  return h;
}
