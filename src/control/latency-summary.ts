// A latency histogram (fio's 1856 buckets) cut down to what a person or a script reads at a glance:
// fio's percentiles and counts per decade from 1 µs to 10 s.
import { bucketToLatency, PLAT_NR } from '../stats/latency-histogram.ts';
import type { LatencyHistogram } from '../stats/latency-histogram.ts';
import type { OpLatency } from './target.ts';

/** Upper edges (ns) of the summary's buckets; a last bucket holds everything above. */
export const SUMMARY_EDGES_NS = [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10] as const;

export function summarizeLatency(h: LatencyHistogram): OpLatency {
  const counts = new Array<number>(SUMMARY_EDGES_NS.length + 1).fill(0);
  if (h.count > 0) {
    let edge = 0;
    for (let b = 0; b < PLAT_NR; b++) {
      const n = h.buckets[b]!;
      if (n === 0) continue;
      // A fio bucket is at most 1/64 wide: its midpoint decides which side of an edge it falls on.
      const value = bucketToLatency(b);
      while (edge < SUMMARY_EDGES_NS.length && value > SUMMARY_EDGES_NS[edge]!) edge++;
      counts[edge]! += n;
    }
  }
  const [p50, p90, p99, p999] = h.percentiles([50, 90, 99, 99.9]);
  return {
    count: h.count,
    min: h.count === 0 ? 0 : h.min,
    max: h.max,
    mean: h.mean,
    p50: p50!,
    p90: p90!,
    p99: p99!,
    p999: p999!,
    buckets: counts.map((count, i) => ({ le_ns: SUMMARY_EDGES_NS[i] ?? null, count })),
  };
}
