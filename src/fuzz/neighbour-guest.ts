// The fuzz campaign's well-behaved neighbour (a guest workload): Blkfront on xvda, random reads and
// writes with many in flight and no two overlapping, until the campaign says stop. It first writes
// its whole disk, so that every sector always has a known generation and every byte of every read
// is checked (pattern.ts: a sector names its seed, number and generation); at the end it reads the
// whole disk back. Its disk sits in the same store as the hostile guests', between theirs, so a
// request the backend lets past the end of a hostile disk lands here.
import type { BlockDevice } from '../block/types.ts';
import type { GuestContext } from '../guest/context.ts';
import { checkSector, fillSectors, Rng } from '../loadgen/pattern.ts';
import type { GuestFinding, NeighbourMessage, NeighbourParams, NeighbourProgress, NeighbourResult, NeighbourTally } from './findings.ts';

const PROGRESS_MS = 250;
const DETAILED = 10;
/** A flush every this many operations. */
const FLUSH_EVERY = 64;

export default async function neighbourGuest(ctx: GuestContext, params: unknown): Promise<NeighbourResult> {
  const p = params as NeighbourParams;
  const post = (m: NeighbourMessage): void => ctx.report(m);
  const disk: BlockDevice | undefined = ctx.disks.get('xvda');
  if (disk === undefined) throw new Error(`${ctx.name} has no xvda`);
  const controlFrame = ctx.hv.memory.allocPages(1);
  if (controlFrame < 0) throw new Error(`${ctx.name}: no memory for its control page`);
  const control = new Int32Array(ctx.hv.memory.buffer, controlFrame * 4096, 1);
  Atomics.store(control, 0, 0);

  const block = disk.info.logicalBlockSize;
  const sectors = Math.floor(disk.info.size / 512);
  const perBlock = block / 512;
  const maxBytes = Math.max(block, Math.floor(Math.min(p.maxBytes, disk.info.size) / block) * block);
  const generations = new Uint32Array(sectors);
  const busy = new Uint8Array(sectors);
  let nextGeneration = 1;
  const tally: NeighbourTally = { ops: 0, reads: 0, writes: 0, flushes: 0, bytes: 0, mismatches: 0 };
  let hung = false;
  const rng = new Rng(p.seed);
  const started = new Float64Array(p.iodepth).fill(-1); // when each worker's I/O began (-1: none)

  const finding = (f: GuestFinding): void => post({ type: 'finding', finding: f });
  const check = (buf: Uint8Array, sector: number, count: number, when: string): number => {
    const words = new Uint32Array(buf.buffer, buf.byteOffset, count * 128);
    let bad = 0;
    for (let s = 0; s < count; s++) {
      const gen = generations[sector + s]!;
      const at = checkSector(words, s, p.seed, sector + s, gen);
      if (at < 0) continue;
      bad++;
      if (++tally.mismatches <= DETAILED) {
        finding({
          kind: 'corruption',
          message: `${when}: sector ${sector + s} of the neighbour's disk differs at word ${at} (expected generation ${gen}; found sector ${words[s * 128 + 1]}, generation ${words[s * 128 + 2]})`,
        });
      }
    }
    return bad;
  };

  // Every sector written once, so that every later read is fully checked.
  {
    const chunk = Math.min(1 << 20, sectors * 512);
    const buf = ctx.allocBuffer(chunk);
    const gens = new Uint32Array(chunk / 512).fill(1);
    for (let at = 0; at < sectors; at += chunk / 512) {
      const n = Math.min(chunk / 512, sectors - at);
      fillSectors(new Uint32Array(buf.buffer, buf.byteOffset, n * 128), p.seed, at, gens, n);
      await disk.writev(at * 512, [buf.subarray(0, n * 512)]);
    }
    generations.fill(1);
    nextGeneration = 2;
    ctx.freeBuffer(buf);
  }
  post({ type: 'ready', control: controlFrame });
  const progress = (): NeighbourProgress => ({ type: 'progress', ...tally });
  const timer = setInterval(() => {
    post(progress());
    const now = performance.now();
    for (let i = 0; i < started.length; i++) {
      if (!hung && started[i]! >= 0 && now - started[i]! > p.deadlineMs) {
        hung = true;
        finding({ kind: 'hang', message: `the neighbour's I/O was not answered within ${p.deadlineMs} ms` });
      }
    }
  }, PROGRESS_MS);

  const worker = async (w: number): Promise<void> => {
    const buf = ctx.allocBuffer(maxBytes);
    const gens = new Uint32Array(maxBytes / 512);
    while (Atomics.load(control, 0) === 0 && !hung) {
      const op = tally.ops++;
      started[w] = performance.now();
      if (op % FLUSH_EVERY === FLUSH_EVERY - 1) {
        await disk.flush();
        started[w] = -1;
        tally.flushes++;
        continue;
      }
      const blocks = 1 + rng.below(maxBytes / block);
      const count = blocks * perBlock;
      let start = -1;
      for (let attempt = 0; attempt < 8 && start < 0; attempt++) {
        const candidate = rng.below((sectors - count) / perBlock + 1) * perBlock;
        let free = true;
        for (let s = 0; s < count && free; s++) if (busy[candidate + s]) free = false;
        if (free) start = candidate;
      }
      if (start < 0) {
        started[w] = -1;
        await new Promise((r) => setImmediate(r));
        continue;
      }
      busy.fill(1, start, start + count);
      const view = buf.subarray(0, count * 512);
      if (rng.float() < p.writeFraction) {
        for (let s = 0; s < count; s++) gens[s] = nextGeneration++;
        fillSectors(new Uint32Array(view.buffer, view.byteOffset, count * 128), p.seed, start, gens, count);
        await disk.writev(start * 512, [view]);
        generations.set(gens.subarray(0, count), start);
        tally.writes++;
      } else {
        view.fill(0xee);
        await disk.readv(start * 512, [view]);
        check(view, start, count, `read of ${count * 512} bytes at byte ${start * 512}`);
        tally.reads++;
      }
      started[w] = -1;
      tally.bytes += count * 512;
      busy.fill(0, start, start + count);
    }
  };

  let finalMismatches = 0;
  try {
    // A hung I/O never settles: stop waiting for the workers once one is declared hung.
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        if (hung) {
          clearInterval(poll);
          resolve();
        }
      }, PROGRESS_MS);
      const done = (err?: unknown): void => {
        clearInterval(poll);
        if (err === undefined) resolve();
        else reject(err instanceof Error ? err : new Error(String(err)));
      };
      Promise.all(Array.from({ length: p.iodepth }, (_, w) => worker(w))).then(() => done(), done);
    });
    if (!hung) {
      const chunk = Math.min(1 << 20, sectors * 512);
      const buf = ctx.allocBuffer(chunk);
      for (let at = 0; at < sectors && !hung; at += chunk / 512) {
        const n = Math.min(chunk / 512, sectors - at);
        await disk.readv(at * 512, [buf.subarray(0, n * 512)]);
        finalMismatches += check(buf, at, n, 'final read-back');
      }
    }
  } finally {
    clearInterval(timer);
  }
  const result: NeighbourResult = { ...tally, finalMismatches, hung };
  post(progress());
  // Posted as a report too: after a hang the disk cannot be closed, so the worker never returns
  // its result, and the campaign ends it.
  post({ type: 'done', result });
  return result;
}
