import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bucketToLatency, LatencyHistogram, latencyToBucket, PLAT_BITS, PLAT_NR, PLAT_VAL } from '../src/stats/latency-histogram.ts';

// The formula latencyToBucket used before its clz32 fast path (Math.log2 with a correction for the
// rounding just below a power of two). The fast path must give the same bucket for every value.
function referenceBucket(ns: number): number {
  const v = ns < 0 ? 0 : Math.floor(ns);
  if (v < PLAT_VAL << 1) return v;
  const msb = Math.floor(Math.log2(v));
  const top = 2 ** msb > v ? msb - 1 : msb;
  const errorBits = top - PLAT_BITS;
  const base = (errorBits + 1) << PLAT_BITS;
  const offset = Math.floor(v / 2 ** errorBits) & (PLAT_VAL - 1);
  const index = base + offset;
  return index < PLAT_NR ? index : PLAT_NR - 1;
}

function assertSame(ns: number): void {
  const got = latencyToBucket(ns);
  const want = referenceBucket(ns);
  if (!Object.is(got, want)) assert.fail(`latencyToBucket(${ns}) = ${got}, the reference formula gives ${want}`);
}

test('latencyToBucket: every value below 2^20 matches the reference formula', () => {
  for (let v = 0; v < 1 << 20; v++) assertSame(v);
});

test('latencyToBucket: powers of two and their neighbours up to 2^62 match', () => {
  for (let k = 0; k <= 62; k++) {
    const p = 2 ** k;
    for (const d of [-2, -1, -0.5, 0, 0.25, 1, 2]) assertSame(p + d);
    // Just below a power of two in floating point (where Math.log2 rounds up).
    if (k > 0) assertSame(p - (p * Number.EPSILON) / 2);
    // Each bucket boundary of this power's 64 linear buckets, and one either side.
    if (k > PLAT_BITS) {
      const step = 2 ** (k - PLAT_BITS);
      for (let i = 0; i < PLAT_VAL; i++) for (const d of [-1, 0, 1]) assertSame(p + i * step + d);
    }
  }
});

test('latencyToBucket: random values over every magnitude match, fractions and negatives included', () => {
  // A small fixed-seed xorshift, so a failure reproduces.
  let s = 0x9e3779b9;
  const next = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  for (let i = 0; i < 500_000; i++) {
    const magnitude = next() * 64;
    assertSame(2 ** magnitude);
    assertSame(Math.floor(2 ** magnitude));
  }
  for (const v of [-1, -0.5, -1e9, 0.9, 127.99, 128, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1, 2 ** 53, 1e300, Infinity, NaN]) assertSame(v);
});

test('latencyToBucket: known buckets (fio stat.c plat_val_to_idx)', () => {
  assert.equal(latencyToBucket(0), 0);
  assert.equal(latencyToBucket(127), 127);
  assert.equal(latencyToBucket(128), 128); // msb 7, error bits 1: base 2*64, offset 64 & 63 = 0
  assert.equal(latencyToBucket(129), 128);
  assert.equal(latencyToBucket(130), 129);
  assert.equal(latencyToBucket(1_000_000), 954); // msb 19, error bits 13: 14*64 + ((1e6 >> 13 = 122) & 63 = 58)
  assert.equal(latencyToBucket(2 ** 32 - 1), 1727); // the fast path's largest value: 26*64 + 63
  assert.equal(latencyToBucket(2 ** 33), 1792); // msb 33: the last group, 28*64
  assert.equal(latencyToBucket(2 ** 34 - 1), PLAT_NR - 1);
  assert.equal(latencyToBucket(2 ** 34), PLAT_NR - 1); // beyond the table: clamped, as fio does
  assert.equal(latencyToBucket(2 ** 60), PLAT_NR - 1);
});

test('histogram: a recorded value lands in the bucket whose midpoint is within 1/64 of it', () => {
  const h = new LatencyHistogram();
  for (const v of [200, 5_000, 123_456, 9_999_999, 3e9, 7e9]) {
    h.record(v);
    const mid = bucketToLatency(latencyToBucket(v));
    assert.ok(Math.abs(mid - v) / v <= 1 / 64, `${v} -> bucket midpoint ${mid}`);
  }
  assert.equal(h.count, 6);
});
