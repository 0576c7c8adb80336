// Integrity load: random reads and writes of random sizes at random sector-aligned offsets, many in
// flight, with no two overlapping I/Os in flight at once (so the expected content is well defined);
// every read is checked against the generation last written there, and a final pass reads the
// whole region back. Runs on any BlockDevice: bare, or inside a guest on blkfront.
import type { BlockDevice } from '../block/types.ts';
import { checkSector, fillSectors, Rng } from './pattern.ts';

export interface VerifyParams {
  /** Bytes of the disk to use, from `offset` (default: the whole disk, at most 64 MiB). */
  readonly length?: number;
  readonly offset?: number;
  /** Use only slice `index` of `count` equal slices of the disk (guests sharing one store). */
  readonly slice?: readonly [index: number, count: number];
  readonly operations?: number;
  readonly iodepth?: number;
  /** Largest I/O in bytes (default 128 KiB: larger than one blkif request, so splitting is exercised). */
  readonly maxBytes?: number;
  /** Smallest I/O in bytes (default one block). */
  readonly minBytes?: number;
  readonly seed?: number;
  /** Share of writes among operations, 0..1 (default 0.6). */
  readonly writeFraction?: number;
  /** Issue a flush every N operations (0: never). */
  readonly flushEvery?: number;
  /** Share of I/Os whose buffer is not in guest memory / not aligned (exercises blkfront's bounce path). */
  readonly bounceFraction?: number;
}

export interface VerifyResult {
  operations: number;
  reads: number;
  writes: number;
  flushes: number;
  bytes: number;
  mismatches: number;
  firstMismatches: string[];
  elapsedMs: number;
}

export type BufferAllocator = (bytes: number) => Uint8Array;

export async function runVerify(device: BlockDevice, allocate: BufferAllocator, params: VerifyParams = {}): Promise<VerifyResult> {
  const block = device.info.logicalBlockSize;
  let offset = params.offset ?? 0;
  let room = device.info.size - offset;
  if (params.slice !== undefined) {
    const [index, count] = params.slice;
    room = Math.floor(room / count / block) * block;
    offset += index * room;
  }
  const length = Math.floor(Math.min(params.length ?? Math.min(room, 64 << 20), room) / block) * block;
  const sectors = length / 512;
  const firstSector = offset / 512;
  const operations = params.operations ?? 2000;
  const depth = params.iodepth ?? 32;
  const maxBytes = Math.max(block, Math.floor(Math.min(params.maxBytes ?? 128 << 10, length) / block) * block);
  const minBlocks = Math.max(1, Math.min(maxBytes / block, Math.floor((params.minBytes ?? block) / block)));
  const seed = params.seed ?? 1;
  const writeFraction = params.writeFraction ?? 0.6;
  const rng = new Rng(seed);
  const generations = new Uint32Array(sectors); // 0: never written by us
  const busy = new Uint8Array(sectors);
  let nextGeneration = 1;
  const result: VerifyResult = { operations: 0, reads: 0, writes: 0, flushes: 0, bytes: 0, mismatches: 0, firstMismatches: [], elapsedMs: 0 };
  const started = performance.now();

  const note = (what: string): void => {
    result.mismatches++;
    if (result.firstMismatches.length < 10) result.firstMismatches.push(what);
  };

  const check = (buf: Uint8Array, startSector: number, count: number, when: string): void => {
    const words = new Uint32Array(buf.buffer, buf.byteOffset, count * 128);
    for (let s = 0; s < count; s++) {
      const rel = startSector - firstSector + s;
      const gen = generations[rel]!;
      if (gen === 0) continue;
      const bad = checkSector(words, s, seed, startSector + s, gen);
      if (bad >= 0)
        note(
          `${when}: sector ${startSector + s} (byte ${(startSector + s) * 512}) differs at word ${bad}: expected generation ${gen}, found header ${words[s * 128]!.toString(16)}/${words[s * 128 + 1]}/${words[s * 128 + 2]}`,
        );
    }
  };

  const worker = async (): Promise<void> => {
    const aligned = allocate(maxBytes);
    const plain = new Uint8Array(maxBytes + 512); // not in guest memory, and misaligned by 8 bytes below
    const gens = new Uint32Array(maxBytes / 512);
    while (result.operations < operations) {
      const n = result.operations++;
      if (params.flushEvery && n > 0 && n % params.flushEvery === 0) {
        await device.flush();
        result.flushes++;
        continue;
      }
      const blocks = minBlocks + rng.below(maxBytes / block - minBlocks + 1);
      const count = (blocks * block) / 512;
      // Find a free range (no overlap with I/O in flight); give up after a few tries and just wait a turn.
      let start = -1;
      for (let attempt = 0; attempt < 8 && start < 0; attempt++) {
        const candidate = rng.below((sectors - count) / (block / 512) + 1) * (block / 512);
        let free = true;
        for (let s = 0; s < count && free; s++) if (busy[candidate + s]) free = false;
        if (free) start = candidate;
      }
      if (start < 0) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      busy.fill(1, start, start + count);
      const bytes = count * 512;
      const useBounce = params.bounceFraction !== undefined && rng.float() < params.bounceFraction;
      const buf = useBounce ? plain.subarray(8, 8 + bytes) : aligned.subarray(0, bytes);
      const sector = firstSector + start;
      try {
        if (rng.float() < writeFraction) {
          for (let s = 0; s < count; s++) gens[s] = nextGeneration++;
          const words = useBounce ? new Uint32Array(bytes / 4) : new Uint32Array(buf.buffer, buf.byteOffset, bytes / 4);
          fillSectors(words, seed, sector, gens, count);
          if (useBounce) buf.set(new Uint8Array(words.buffer));
          await device.writev(sector * 512, splitIov(buf, rng, block));
          generations.set(gens.subarray(0, count), start);
          result.writes++;
        } else {
          buf.fill(0xee);
          await device.readv(sector * 512, splitIov(buf, rng, block));
          const view = useBounce ? new Uint8Array(buf) : buf;
          check(view, sector, count, `read of ${bytes} bytes at ${sector * 512}`);
          result.reads++;
        }
        result.bytes += bytes;
      } finally {
        busy.fill(0, start, start + count);
      }
    }
  };

  await Promise.all(Array.from({ length: depth }, () => worker()));

  // Final pass: the whole region, as the disk holds it now.
  const chunk = Math.min(1 << 20, length);
  const buf = allocate(chunk);
  for (let at = 0; at < length; at += chunk) {
    const n = Math.min(chunk, length - at);
    await device.readv(offset + at, [buf.subarray(0, n)]);
    check(buf, (offset + at) / 512, n / 512, 'final read-back');
  }
  result.elapsedMs = performance.now() - started;
  return result;
}

/** Splits a buffer into 1-3 sector-aligned pieces, so vectored I/O is exercised. */
function splitIov(buf: Uint8Array, rng: Rng, block: number): Uint8Array[] {
  const blocks = buf.length / block;
  if (blocks < 2 || rng.float() < 0.5) return [buf];
  const cut = (1 + rng.below(blocks - 1)) * block;
  return [buf.subarray(0, cut), buf.subarray(cut)];
}
