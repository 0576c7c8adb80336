// Test helpers shared by the driver tests: a seeded random workload
// checked against a plain in-memory model of the disk.
import { randomFillSync } from 'node:crypto';
import type { BlockDevice } from '../../src/block/types.ts';
import { WRITE_FUA } from '../../src/block/types.ts';
import { mulberry32Float } from '../../src/internal/prng.ts';

/** mulberry32, as floats in [0, 1). */
export const seededRandom = mulberry32Float;

export interface IntegrityOptions {
  readonly seed: number;
  readonly ops: number;
  /** Largest request in logical blocks. */
  readonly maxBlocks: number;
  /** Allocates an I/O buffer of n bytes (default: a plain Uint8Array). */
  readonly alloc?: (n: number) => Uint8Array;
  /** Buffer lengths within a vector are multiples of this (default 1: any split). */
  readonly bufferGranule?: number;
  /** Only this window [0, window) of the disk is exercised (default: the whole disk). */
  readonly window?: number;
  /** Issue this many requests at once over disjoint ranges (default 1). */
  readonly parallel?: number;
}

export interface IntegrityReport {
  readonly writes: number;
  readonly reads: number;
  readonly zeroes: number;
  readonly vectoredWrites: number;
  readonly mismatches: string[];
}

// Contents come from the OS generator (fast); offsets and sizes from the seed, so a failing geometry
// replays.
function fillRandom(buf: Uint8Array): void {
  for (let i = 0; i < buf.byteLength; i += 65536) randomFillSync(buf, i, Math.min(65536, buf.byteLength - i));
}

/** Splits `total` bytes into 1..4 buffers whose lengths are multiples of `granule`. */
function split(total: number, granule: number, random: () => number, alloc: (n: number) => Uint8Array): Uint8Array[] {
  const units = total / granule;
  const parts = Math.min(units, 1 + Math.floor(random() * 4));
  const cuts = new Set<number>();
  while (cuts.size < parts - 1) cuts.add(1 + Math.floor(random() * (units - 1)));
  const edges = [0, ...[...cuts].sort((a, b) => a - b), units];
  const out: Uint8Array[] = [];
  for (let i = 0; i + 1 < edges.length; i++) out.push(alloc(((edges[i + 1] as number) - (edges[i] as number)) * granule));
  return out;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)) return -1;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * Random aligned writes (vectored, some FUA), reads and write-zeroes over the window; every read is
 * compared with the model, and the whole window is read back at the end.
 */
export async function exerciseIntegrity(dev: BlockDevice, o: IntegrityOptions): Promise<IntegrityReport> {
  const random = seededRandom(o.seed);
  const lbs = dev.info.logicalBlockSize;
  const window = o.window ?? dev.info.size;
  const alloc = o.alloc ?? ((n: number) => new Uint8Array(n));
  const granule = o.bufferGranule ?? 1;
  const model = new Uint8Array(window);
  const mismatches: string[] = [];
  let writes = 0;
  let reads = 0;
  let zeroes = 0;
  let vectoredWrites = 0;
  const windowBlocks = window / lbs;
  const parallel = o.parallel ?? 1;

  // Initialise the window so the model and the device agree.
  await dev.writeZeroes(0, window);

  for (let done = 0; done < o.ops; ) {
    // Disjoint ranges: window split into `parallel` stripes, one request per stripe.
    const stripe = Math.floor(windowBlocks / parallel);
    const batch: Promise<void>[] = [];
    const checks: (() => void)[] = [];
    for (let p = 0; p < parallel && done < o.ops; p++, done++) {
      const blocks = 1 + Math.floor(random() * Math.min(o.maxBlocks, stripe));
      const start = p * stripe + Math.floor(random() * (stripe - blocks + 1));
      const offset = start * lbs;
      const length = blocks * lbs;
      const r = random();
      if (r < 0.5) {
        const iov = split(length, granule, random, alloc);
        let pos = offset;
        for (const b of iov) {
          fillRandom(b);
          model.set(b, pos);
          pos += b.byteLength;
        }
        if (iov.length > 1) vectoredWrites++;
        writes++;
        batch.push(dev.writev(offset, iov, random() < 0.1 && dev.info.canFua ? WRITE_FUA : 0));
      } else if (r < 0.9) {
        const iov = split(length, granule, random, alloc);
        reads++;
        batch.push(dev.readv(offset, iov));
        checks.push(() => {
          let pos = offset;
          for (const b of iov) {
            const want = model.subarray(pos, pos + b.byteLength);
            const at = firstDifference(b, want);
            if (at >= 0) mismatches.push(`read ${offset}+${length}: byte ${pos + at} is ${b[at]}, expected ${want[at]}`);
            pos += b.byteLength;
          }
        });
      } else {
        zeroes++;
        model.fill(0, offset, offset + length);
        batch.push(dev.writeZeroes(offset, length));
      }
    }
    await Promise.all(batch);
    for (const c of checks) c();
  }

  const chunk = Math.min(window, 1 << 20);
  for (let pos = 0; pos < window; pos += chunk) {
    const n = Math.min(chunk, window - pos);
    const buf = alloc(n);
    await dev.readv(pos, [buf]);
    const at = firstDifference(buf, model.subarray(pos, pos + n));
    if (at >= 0) mismatches.push(`final read-back: byte ${pos + at} is ${buf[at]}, expected ${model[pos + at]}`);
  }
  return { writes, reads, zeroes, vectoredWrites, mismatches };
}

/** A bump allocator over one arena that wraps around: buffers live until the arena comes round again. */
export function ringAllocator(arena: Uint8Array, alignment: number, skew = 0): (n: number) => Uint8Array {
  let next = 0;
  return (n: number) => {
    if (next + skew + n > arena.byteLength) next = 0;
    const buf = arena.subarray(next + skew, next + skew + n);
    next += Math.ceil((n + skew) / alignment) * alignment;
    return buf;
  };
}
