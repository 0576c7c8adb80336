// Non-uniform random_distribution: which block a random I/O lands on (lib/zipf.c, lib/gauss.c and
// io_u.c's zoned picker in fio). zipf, pareto and normal produce a rank (0 = hottest) that is then
// hashed over the region, so hot blocks are scattered rather than packed at the start, as in fio.
import type { Ddir, RandomDistribution } from '../job.ts';
import { hashIndex, type Taus88 } from './rand.ts';

export interface BlockPicker {
  /** A block index in [0, blocks) for direction `ddir`. */
  pick(ddir: Ddir): number;
}

/** fio caps the zeta sum at this many terms (ZIPF_MAX_GEN) so initialisation stays cheap. */
const ZIPF_MAX_GEN = 10_000_000;

export function createPicker(dist: RandomDistribution, blocks: number, rand: Taus88, blockSize: number, regionBytes: number): BlockPicker {
  switch (dist.kind) {
    case 'random':
      return { pick: () => rand.below(blocks) };
    case 'zipf':
      return zipfPicker(dist.theta, dist.center, blocks, rand);
    case 'pareto':
      return paretoPicker(dist.h, dist.center, blocks, rand);
    case 'normal':
      return normalPicker(dist.dev, dist.center, blocks, rand);
    case 'zoned':
    case 'zoned_abs':
      return zonedPicker(dist, blocks, rand, blockSize, regionBytes);
  }
}

function scatter(rank: number, center: number, blocks: number): number {
  const off = Math.floor(center * blocks);
  return hashIndex(rank + off, blocks);
}

function zipfPicker(theta: number, center: number, blocks: number, rand: Taus88): BlockPicker {
  // Gray et al., "Quickly generating billion-record synthetic databases" (the method fio uses).
  const n = Math.min(blocks, ZIPF_MAX_GEN);
  let zetan = 0;
  for (let i = 1; i <= n; i++) zetan += 1 / i ** theta;
  const zeta2 = 1 + 1 / 2 ** theta;
  const alpha = 1 / (1 - theta);
  const eta = (1 - (2 / n) ** (1 - theta)) / (1 - zeta2 / zetan);
  const half = 1 + 0.5 ** theta;
  return {
    pick: () => {
      const u = rand.frand();
      const z = u * zetan;
      let rank: number;
      if (z < 1) rank = 0;
      else if (z < half) rank = 1;
      else rank = Math.floor(blocks * (eta * u - eta + 1) ** alpha);
      if (rank >= blocks) rank = blocks - 1;
      return scatter(rank, center, blocks);
    },
  };
}

function paretoPicker(h: number, center: number, blocks: number, rand: Taus88): BlockPicker {
  const power = Math.log(h) / Math.log(1 - h);
  return {
    pick: () => {
      const rank = Math.floor((blocks - 1) * rand.frand() ** power);
      return scatter(rank, center, blocks);
    },
  };
}

function normalPicker(devPercent: number, center: number, blocks: number, rand: Taus88): BlockPicker {
  // A normal around the centre with a standard deviation of dev% of the region (Box-Muller), folded
  // into the region, then scattered like fio's hashed gauss output.
  const sd = Math.max(1, (devPercent / 100) * blocks);
  const mid = blocks / 2;
  return {
    pick: () => {
      const u1 = 1 - rand.frand();
      const u2 = rand.frand();
      const g = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
      let v = Math.floor(mid + g * sd);
      if (v < 0) v = 0;
      if (v >= blocks) v = blocks - 1;
      return scatter(v, center, blocks);
    },
  };
}

function zonedPicker(
  dist: Extract<RandomDistribution, { kind: 'zoned' | 'zoned_abs' }>,
  blocks: number,
  rand: Taus88,
  blockSize: number,
  regionBytes: number,
): BlockPicker {
  // Per direction: cumulative access percentages and each zone's block range.
  const tables = dist.zones.map((zones) => {
    const cum: number[] = [];
    const first: number[] = [];
    const count: number[] = [];
    let acc = 0;
    let start = 0;
    for (const z of zones) {
      const bytes = dist.kind === 'zoned' ? (z.size / 100) * regionBytes : z.size;
      const n = Math.max(1, Math.min(blocks - start, Math.floor(bytes / blockSize)));
      acc += z.accessPerc;
      cum.push(acc);
      first.push(Math.min(start, blocks - 1));
      count.push(n);
      start += n;
    }
    return { cum, first, count };
  });
  return {
    pick: (ddir: Ddir) => {
      const t = tables[ddir]!;
      if (t.cum.length === 0) return rand.below(blocks);
      const total = t.cum[t.cum.length - 1]!;
      const r = rand.frand() * total;
      let i = 0;
      while (i < t.cum.length - 1 && r >= t.cum[i]!) i++;
      return t.first[i]! + rand.below(t.count[i]!);
    },
  };
}
