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
// durable than required is allowed) and drop the overlay's copies of the blocks they cover. When
// they drop a block from a snapshot a flush is writing back, that flush completes only once they
// have landed: it covered the older write, and what replaced it must be on the medium first (else
// a failed FUA write would leave neither, under a flush that said OKAY).
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
// What a flush may claim after a power cut. A flush in flight at the cut fails (BLK_ERR_POWER_CUT),
// even one whose write-back had finished: the command never completed. The blocks whose newest
// acknowledged data the cut dropped are remembered, and every flush called while any remains fails
// with BLK_ERR_DATA_LOST (EIO), after writing back what it covers. A block leaves that set only when
// it is written again (write, FUA write, discard, writeZeroes): the client has replaced what was
// lost. A new cache over the same base (a reopen) starts clean. Not Linux's errseq rule (report the
// error once, then succeed): a guest retrying its failed flush would then be told that writes the
// cut dropped are durable (PostgreSQL's "fsyncgate"), and which of several racing flushes sees the
// one error would be down to timing. A real power cut takes the host down with the disk; here the
// guest lives on, so the device keeps saying so.
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
  /**
   * Drops every write not yet on the base device (optionally letting a seeded random subset through).
   * The effect is immediate; the promise settles once the base is quiet and the survivors are on it.
   */
  powerCut(opts?: PowerCutOptions): Promise<void>;
  /** Bytes held in the cache and not yet on the base (unflushed, or queued for a flush's write-back). */
  readonly dirtyBytes: number;
  /** Bytes of blocks whose newest data a power cut dropped and that nobody wrote since: flushes fail while this is not 0. */
  readonly lostBytes: number;
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
  /** Blocks whose newest acknowledged data a power cut dropped, not written since. */
  const lost = new Set<number>();
  /** Base writes (FUA, discard, writeZeroes) that replaced blocks of a snapshot being flushed; its flush waits for them. */
  const superseders = new Map<Overlay, Promise<unknown>[]>();

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

  const deleteRange = (set: Map<number, unknown> | Set<number>, first: number, count: number): void => {
    if (count > set.size) {
      for (const block of set.keys()) if (block >= first && block < first + count) set.delete(block);
    } else {
      for (let b = first; b < first + count; b++) set.delete(b);
    }
  };

  /** Blocks written again: whatever a power cut took from them has been replaced. */
  const rewritten = (first: number, count: number): void => {
    if (lost.size > 0) deleteRange(lost, first, count);
  };

  /** A base write replacing [first, first+count): drops the cached copies; flushes writing back one of them wait for `op`. */
  const supersede = <T>(first: number, count: number, op: () => Promise<T>): Promise<T> => {
    rewritten(first, count);
    deleteRange(dirty, first, count);
    const touched: Overlay[] = [];
    for (const snapshot of flushing) {
      const before = snapshot.size;
      deleteRange(snapshot, first, count);
      if (snapshot.size < before) touched.push(snapshot);
    }
    const run = serial(op);
    for (const snapshot of touched) {
      const list = superseders.get(snapshot);
      if (list === undefined) superseders.set(snapshot, [run]);
      else list.push(run);
    }
    return run;
  };

  const powerCutError = (): BlockError => new BlockError('BLK_ERR_POWER_CUT', `${name}: flush interrupted by a power cut`, { errno: Errno.EIO });

  const writeBack = async (snapshot: Overlay, gen: number): Promise<void> => {
    // Sorted, and adjacent blocks merged into one vectored write.
    const blocks = [...snapshot.keys()].sort((x, y) => x - y);
    for (let i = 0; i < blocks.length; ) {
      if (gen !== generation) throw powerCutError();
      const start = blocks[i] as number;
      const iov: Uint8Array[] = [];
      let j = i;
      while (j < blocks.length && blocks[j] === start + (j - i) && iov.length < 256) {
        const data = snapshot.get(blocks[j] as number);
        if (data === undefined) break; // dropped by a later FUA write or discard
        iov.push(data);
        j++;
      }
      if (iov.length > 0) {
        await base.writev(start * bs, iov);
        // On the base now: no longer the cache's to lose (unless replaced meanwhile, by a FUA write).
        for (let k = 0; k < iov.length; k++) if (snapshot.get(start + k) === iov[k]) snapshot.delete(start + k);
      }
      i = Math.max(j, i + 1);
    }
    if (gen !== generation) throw powerCutError();
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
    get lostBytes() {
      return lost.size * bs;
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
        return supersede(offset / bs, total / bs, () => base.writev(offset, iov, WRITE_FUA));
      }
      // Copy the caller's bytes into fresh blocks (never into a block a flush may be writing back).
      const first = offset / bs;
      let block = first;
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
      rewritten(first, block - first);
      return Promise.resolve();
    },

    flush() {
      const snapshot = dirty;
      dirty = new Map();
      flushing.push(snapshot);
      const gen = generation;
      // Taken now: the writes this flush covers are those completed before this call.
      const lostBlocks = lost.size;
      const settle = (): Promise<unknown>[] | undefined => {
        const i = flushing.indexOf(snapshot);
        if (i >= 0) flushing.splice(i, 1);
        const replaced = superseders.get(snapshot);
        superseders.delete(snapshot);
        return replaced;
      };
      return serial(() => writeBack(snapshot, gen)).then(
        async () => {
          const replaced = settle();
          if (replaced !== undefined) await Promise.all(replaced);
          if (gen !== generation) throw powerCutError();
          if (lostBlocks > 0) {
            throw new BlockError(
              'BLK_ERR_DATA_LOST',
              `${name}: a power cut dropped ${lostBlocks} acknowledged blocks not written since; flushes fail until they are rewritten or the device is reopened`,
              {
                errno: Errno.EIO,
              },
            );
          }
        },
        (err: unknown) => {
          // The flush failed: the writes it replaced are not waited for (their own callers see them).
          void settle();
          throw err;
        },
      );
    },

    discard(offset, length) {
      if (!base.info.canDiscard) return base.discard(offset, length); // rejects: unsupported
      return supersede(offset / bs, length / bs, () => base.discard(offset, length));
    },

    writeZeroes(offset, length) {
      if (!base.info.canWriteZeroes) return base.writeZeroes(offset, length);
      return supersede(offset / bs, length / bs, () => base.writeZeroes(offset, length));
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
      const dropped: Overlay[] = [...flushing, dirty];
      flushing.length = 0;
      dirty = new Map();
      // Newest copy of each block wins; a surviving block reaches the medium whole, the others are lost.
      const newest: Overlay = new Map();
      for (const overlay of dropped) for (const [block, data] of overlay) newest.set(block, data);
      const fraction = cut.surviveFraction ?? 0;
      const random = prng(cut.seed ?? 1);
      const survivors: number[] = [];
      for (const block of [...newest.keys()].sort((x, y) => x - y)) {
        if (fraction > 0 && random() < fraction) survivors.push(block);
        else lost.add(block);
      }
      await serial(async () => {
        for (const block of survivors) await base.writev(block * bs, [newest.get(block) as Uint8Array]);
        if (survivors.length > 0) await base.flush();
      });
    },

    ...(base.resize === undefined
      ? {}
      : {
          resize(newSize: number) {
            return serial(async () => {
              const blocks = newSize / bs;
              for (const overlay of [dirty, ...flushing]) for (const b of overlay.keys()) if (b >= blocks) overlay.delete(b);
              for (const b of lost) if (b >= blocks) lost.delete(b);
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
