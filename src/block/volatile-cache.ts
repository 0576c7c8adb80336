// A filter that models a disk with a volatile write cache, for power-cut tests (this kernel has no
// device-mapper to fake one). Writes land in an in-memory overlay of logical blocks and are
// acknowledged at once; reads see the overlay over the base device; flush() writes the overlay to the
// base and then flushes the base; powerCut() throws away everything not yet written to the base.
//
// The flush rule: flush() covers every write that completed before flush() was called. It takes the
// overlay as it stands (a snapshot) and starts a new one; writes issued after that go into the new
// overlay and need a later flush. Writes to the base (flush write-back, FUA writes, discard,
// writeZeroes) run one at a time in issue order, so an older snapshot never lands over newer data.
//
// FUA writes, discard and writeZeroes go straight to the base (durable on return; being more
// durable than required is allowed) and drop the overlay's copies of the blocks they cover.
//
// Why that is right for discard across a power cut. A write W issued before the discard D is either
// in the overlay (dropped by D, so neither a later flush nor a power cut's surviving fraction can put
// it back over D) or already being written back by a flush (D queues behind that write-back, so W
// lands first and D wins). A write issued after D goes to the new overlay and reaches the base after
// D through the same queue: the power cut may lose it, which leaves D's zeroes, as it should. D
// completes only once the base has done it, so nothing acknowledged is lost; a flush afterwards also
// flushes the base (a hole punched in a file is durable only then). A base that cannot discard is
// refused up front, before the overlay is touched: a failed discard must not eat cached writes.
//
// blockStatus is the base's, except that blocks held in the overlay are data whatever the base says.
import type { BlockDevice, BlockDeviceInfo, BlockExtent } from './types.ts';
import { WRITE_FUA } from './types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { mulberry32Float } from '../internal/prng.ts';

export interface PowerCutOptions {
  /** Fraction (0..1) of unflushed blocks that reach the medium anyway, as on a real disk. Default 0. */
  readonly surviveFraction?: number;
  /** Seed of the choice of surviving blocks (deterministic per seed). Default 1. */
  readonly seed?: number;
}

export interface VolatileCacheDisk extends BlockDevice {
  /** Drops every write not yet on the base device (optionally letting a seeded random subset through). */
  powerCut(opts?: PowerCutOptions): Promise<void>;
  /** Bytes held in the cache (unflushed, or being flushed). */
  readonly dirtyBytes: number;
}

type Overlay = Map<number, Uint8Array>;

/** Picks surviving blocks reproducibly. */
const prng = mulberry32Float;

/** Copies `data` into the iov at logical byte `pos`, across buffer edges. */
function copyToIov(iov: readonly Uint8Array[], pos: number, data: Uint8Array): void {
  let done = 0;
  for (let i = 0; i < iov.length && done < data.byteLength; i++) {
    const buf = iov[i] as Uint8Array;
    if (pos >= buf.byteLength) {
      pos -= buf.byteLength;
      continue;
    }
    const k = Math.min(buf.byteLength - pos, data.byteLength - done);
    buf.set(data.subarray(done, done + k), pos);
    done += k;
    pos = 0;
  }
}

export function createVolatileCache(base: BlockDevice, opts: { readonly name?: string } = {}): VolatileCacheDisk {
  const name = opts.name ?? `volatile:${base.name}`;
  const bs = base.info.logicalBlockSize;
  let dirty: Overlay = new Map();
  /** Snapshots taken by flushes still writing back, oldest first. */
  const flushing: Overlay[] = [];
  /** Bumped by powerCut: write-backs of an older generation stop. */
  let generation = 0;
  /** Tail of the queue of base writes. */
  let baseQueue: Promise<unknown> = Promise.resolve();

  const serial = <T>(op: () => Promise<T>): Promise<T> => {
    const run = baseQueue.then(op, op);
    baseQueue = run.catch(() => undefined);
    return run;
  };

  const lookup = (block: number): Uint8Array | undefined => {
    const d = dirty.get(block);
    if (d !== undefined) return d;
    for (let i = flushing.length - 1; i >= 0; i--) {
      const f = (flushing[i] as Overlay).get(block);
      if (f !== undefined) return f;
    }
    return undefined;
  };

  const dropRange = (first: number, count: number): void => {
    for (const overlay of [dirty, ...flushing]) {
      if (count > overlay.size) {
        for (const block of overlay.keys()) if (block >= first && block < first + count) overlay.delete(block);
      } else {
        for (let b = first; b < first + count; b++) overlay.delete(b);
      }
    }
  };

  const writeBack = async (snapshot: Overlay, gen: number): Promise<void> => {
    // Sorted, and adjacent blocks merged into one vectored write.
    const blocks = [...snapshot.keys()].sort((x, y) => x - y);
    for (let i = 0; i < blocks.length; ) {
      if (gen !== generation) throw new BlockError('BLK_ERR_POWER_CUT', `${name}: flush interrupted by a power cut`, { errno: Errno.EIO });
      const start = blocks[i] as number;
      const iov: Uint8Array[] = [];
      let j = i;
      while (j < blocks.length && blocks[j] === start + (j - i) && iov.length < 256) {
        const data = snapshot.get(blocks[j] as number);
        if (data === undefined) break; // dropped by a later FUA write or discard
        iov.push(data);
        j++;
      }
      if (iov.length > 0) await base.writev(start * bs, iov);
      i = Math.max(j, i + 1);
    }
    if (gen !== generation) throw new BlockError('BLK_ERR_POWER_CUT', `${name}: flush interrupted by a power cut`, { errno: Errno.EIO });
    await base.flush();
  };

  // writes complete in this process (into the cache), whatever the device below does with its own
  const describe = (): BlockDeviceInfo => ({ ...base.info, volatileCache: true, canFlush: true, canFua: true, batchedSubmission: false });
  let info = describe();

  return {
    name,
    get info() {
      return info;
    },
    get dirtyBytes() {
      let blocks = dirty.size;
      for (const f of flushing) blocks += f.size;
      return blocks * bs;
    },

    async readv(offset, iov) {
      let total = 0;
      for (const b of iov) total += b.byteLength;
      const first = offset / bs;
      const count = total / bs;
      // Take the cached blocks before reading the base: a write-back finishing meanwhile then cannot
      // leave us with neither the cached copy nor the new base contents.
      const cached: [number, Uint8Array][] = [];
      for (let b = 0; b < count; b++) {
        const data = lookup(first + b);
        if (data !== undefined) cached.push([b, data]);
      }
      if (cached.length < count) await base.readv(offset, iov);
      for (const [b, data] of cached) copyToIov(iov, b * bs, data);
    },

    writev(offset, iov, flags = 0) {
      if ((flags & WRITE_FUA) !== 0) {
        let total = 0;
        for (const b of iov) total += b.byteLength;
        dropRange(offset / bs, total / bs);
        return serial(() => base.writev(offset, iov, WRITE_FUA));
      }
      // Copy the caller's bytes into fresh blocks (never into a block a flush may be writing back).
      let block = offset / bs;
      let cur = new Uint8Array(bs);
      let fill = 0;
      for (const buf of iov) {
        let pos = 0;
        while (pos < buf.byteLength) {
          const k = Math.min(bs - fill, buf.byteLength - pos);
          cur.set(buf.subarray(pos, pos + k), fill);
          fill += k;
          pos += k;
          if (fill === bs) {
            dirty.set(block++, cur);
            cur = new Uint8Array(bs);
            fill = 0;
          }
        }
      }
      return Promise.resolve();
    },

    flush() {
      const snapshot = dirty;
      dirty = new Map();
      flushing.push(snapshot);
      const gen = generation;
      return serial(() => writeBack(snapshot, gen)).finally(() => {
        const i = flushing.indexOf(snapshot);
        if (i >= 0) flushing.splice(i, 1);
      });
    },

    discard(offset, length) {
      if (!base.info.canDiscard) return base.discard(offset, length); // rejects: unsupported
      dropRange(offset / bs, length / bs);
      return serial(() => base.discard(offset, length));
    },

    writeZeroes(offset, length) {
      if (!base.info.canWriteZeroes) return base.writeZeroes(offset, length);
      dropRange(offset / bs, length / bs);
      return serial(() => base.writeZeroes(offset, length));
    },

    ...(base.blockStatus === undefined
      ? {}
      : {
          async blockStatus(offset: number, length: number): Promise<readonly BlockExtent[]> {
            // Cached blocks first (as readv does): a write-back finishing meanwhile moves a block from
            // the overlay to the base, and it is then seen in one or the other.
            const first = offset / bs;
            const count = length / bs;
            const cached: number[] = [];
            let overlaySize = dirty.size;
            for (const f of flushing) overlaySize += f.size;
            if (count <= overlaySize) {
              for (let b = first; b < first + count; b++) if (lookup(b) !== undefined) cached.push(b);
            } else {
              const seen = new Set<number>();
              for (const overlay of [dirty, ...flushing]) {
                for (const b of overlay.keys()) if (b >= first && b < first + count) seen.add(b);
              }
              cached.push(...[...seen].sort((x, y) => x - y));
            }
            const extents = await (base.blockStatus as (o: number, n: number) => Promise<readonly BlockExtent[]>)(offset, length);
            if (cached.length === 0) return extents;
            const out: { offset: number; length: number; allocated: boolean }[] = [];
            const push = (from: number, to: number, allocated: boolean): void => {
              if (to <= from) return;
              const last = out[out.length - 1];
              if (last !== undefined && last.allocated === allocated && last.offset + last.length === from) last.length += to - from;
              else out.push({ offset: from, length: to - from, allocated });
            };
            let c = 0;
            for (const e of extents) {
              const end = e.offset + e.length;
              if (e.allocated) {
                push(e.offset, end, true);
                continue;
              }
              let pos = e.offset;
              while (c < cached.length && (cached[c] as number) * bs < pos) c++;
              while (c < cached.length && (cached[c] as number) * bs < end) {
                const at = (cached[c] as number) * bs;
                push(pos, at, false);
                push(at, at + bs, true);
                pos = at + bs;
                c++;
              }
              push(pos, end, false);
            }
            return out;
          },
        }),

    async powerCut(cut: PowerCutOptions = {}) {
      generation++;
      const lost: Overlay[] = [...flushing, dirty];
      flushing.length = 0;
      dirty = new Map();
      const fraction = cut.surviveFraction ?? 0;
      if (fraction > 0) {
        // Newest copy of each block wins; a surviving block reaches the medium whole.
        const newest: Overlay = new Map();
        for (const overlay of lost) for (const [block, data] of overlay) newest.set(block, data);
        const random = prng(cut.seed ?? 1);
        const survivors = [...newest.keys()].sort((x, y) => x - y).filter(() => random() < fraction);
        await serial(async () => {
          for (const block of survivors) await base.writev(block * bs, [newest.get(block) as Uint8Array]);
          await base.flush();
        });
      } else {
        await serial(() => Promise.resolve());
      }
    },

    ...(base.resize === undefined
      ? {}
      : {
          resize(newSize: number) {
            return serial(async () => {
              const blocks = newSize / bs;
              for (const overlay of [dirty, ...flushing]) for (const b of overlay.keys()) if (b >= blocks) overlay.delete(b);
              await (base.resize as (n: number) => Promise<void>)(newSize);
              info = describe();
            });
          },
        }),

    close() {
      return serial(() => base.close());
    },
  };
}
