// Discard, write-zeroes and block status for the host drivers (file.ts, direct.ts), through the
// kernel calls of src/internal/fs-extra-ffi.ts:
//
//                  regular file                              block device
//   discard        fallocate(PUNCH_HOLE|KEEP_SIZE)           BLKDISCARD (when discard_max_bytes > 0)
//   writeZeroes    fallocate(ZERO_RANGE|KEEP_SIZE), else     BLKZEROOUT (the kernel writes zero
//                  PUNCH_HOLE (tmpfs), else zeroes written    pages itself where the device has no
//                                                            write-zeroes), else zeroes written
//   blockStatus    lseek SEEK_DATA / SEEK_HOLE               not offered (the kernel calls all of a
//                                                            block device data)
//   granularity    the filesystem block (statfs f_bsize)     queue/discard_granularity
//
// Whether PUNCH_HOLE works is probed once at open, on a block past the end of the file, where it
// changes nothing: ext4, xfs, btrfs and tmpfs all return 0 there without touching the file, and a
// filesystem without the mode answers EOPNOTSUPP. ZERO_RANGE cannot be probed that way (ext4 would
// allocate blocks past the end), so the first writeZeroes finds out, and the answer is kept.
//
// The page cache is the kernel's business: fallocate and both ioctls drop the cached pages of the
// range (for a block device even dirty ones, which is right: the later operation wins), so buffered
// and O_DIRECT readers see the result at once.
import fs from 'node:fs';
import type { BlockExtent } from './types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import {
  BLKDISCARD,
  BLKZEROOUT,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  SEEK_DATA,
  SEEK_HOLE,
  blockRangeIoctl,
  fallocate,
  fsExtraProblem,
  seekDataOrHole,
} from '../internal/fs-extra-ffi.ts';
import type { HostTarget } from './host-target.ts';

/** Extents one blockStatus call returns at most (each costs one or two lseek calls on the pool). */
export const MAX_STATUS_EXTENTS = 256;

export interface HostSpace {
  readonly canDiscard: boolean;
  readonly discardGranularity: number;
  /** Discarded ranges read back as zeroes (holes in a file; a loop device punches its backing file). */
  readonly discardZeroes: boolean;
  /** Why discard is not offered, for messages and tests; undefined when it is. */
  readonly discardProblem: string | undefined;
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Undefined where the store cannot tell (block devices, no FFI). */
  readonly blockStatus: ((offset: number, length: number) => Promise<readonly BlockExtent[]>) | undefined;
  /** How writeZeroes is done now: 'zero-range', 'punch-hole', 'blkzeroout' or 'write'. */
  readonly zeroMethod: ZeroMethod;
}

export type ZeroMethod = 'zero-range' | 'punch-hole' | 'blkzeroout' | 'write';

export interface HostSpaceOptions {
  readonly fd: number;
  readonly name: string;
  readonly target: HostTarget;
  readonly readOnly: boolean;
  readonly logicalBlockSize: number;
  /** The device's current size in bytes (files can be resized). */
  readonly size: () => number;
  /** Writes zeroes over the range: the fallback when the kernel cannot zero it. */
  readonly writeZeroesByWriting: (offset: number, length: number) => Promise<void>;
}

const isUnsupported = (err: unknown): boolean => err instanceof BlockError && err.code === 'BLK_ERR_UNSUPPORTED';

function statfsBlockSize(fd: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    fs.statfs(`/proc/self/fd/${fd}`, (err, st) => resolve(err === null ? st.bsize : undefined));
  });
}

/** A power of two between the logical block and 64 MiB, else the logical block. */
function saneGranularity(bytes: number | undefined, lbs: number): number {
  if (bytes === undefined || !Number.isSafeInteger(bytes) || bytes < lbs || bytes > 64 << 20) return lbs;
  return (bytes & (bytes - 1)) === 0 ? bytes : lbs;
}

function unsupported(name: string, what: string, why: string): Promise<never> {
  return Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', `${name}: ${what} is not supported: ${why}`, { errno: Errno.EOPNOTSUPP }));
}

export async function probeHostSpace(o: HostSpaceOptions): Promise<HostSpace> {
  const { fd, name, target, readOnly } = o;
  const lbs = o.logicalBlockSize;
  const ffiProblem = fsExtraProblem();
  const isBlock = target.block !== undefined;

  let discardProblem: string | undefined;
  let granularity = 0;
  if (ffiProblem !== undefined) discardProblem = ffiProblem;
  else if (readOnly) discardProblem = 'the disk is read-only';
  else if (target.block !== undefined) {
    if (target.block.discardMaxBytes === 0) discardProblem = 'the device does not discard (queue/discard_max_bytes is 0)';
    else granularity = Math.max(lbs, saneGranularity(target.block.discardGranularity, lbs));
  } else {
    granularity = saneGranularity(await statfsBlockSize(fd), lbs);
    const past = Math.ceil(target.stat.size / granularity) * granularity;
    try {
      await fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, past, granularity, name, 'discard probe');
    } catch (err) {
      discardProblem = `the filesystem cannot punch holes: ${(err as Error).message}`;
      granularity = 0;
    }
  }
  const canDiscard = discardProblem === undefined;

  let zeroMethod: ZeroMethod = ffiProblem !== undefined || readOnly ? 'write' : isBlock ? 'blkzeroout' : 'zero-range';

  const discard = (offset: number, length: number): Promise<void> => {
    if (!canDiscard) return unsupported(name, 'discard', discardProblem ?? '');
    return isBlock
      ? blockRangeIoctl(fd, BLKDISCARD, offset, length, name, 'discard')
      : fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length, name, 'discard');
  };

  const writeZeroes = async (offset: number, length: number): Promise<void> => {
    for (;;) {
      const method = zeroMethod;
      try {
        switch (method) {
          case 'zero-range':
            return await fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length, name, 'write zeroes');
          case 'punch-hole':
            return await fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length, name, 'write zeroes');
          case 'blkzeroout':
            return await blockRangeIoctl(fd, BLKZEROOUT, offset, length, name, 'write zeroes');
          case 'write':
            return await o.writeZeroesByWriting(offset, length);
        }
      } catch (err) {
        if (!isUnsupported(err)) throw err;
        // Learn once (another request may have learnt it meanwhile), then try the next way.
        if (zeroMethod === method) zeroMethod = method === 'zero-range' && canDiscard ? 'punch-hole' : 'write';
      }
    }
  };

  const blockStatus = async (offset: number, length: number): Promise<readonly BlockExtent[]> => {
    const out: { offset: number; length: number; allocated: boolean }[] = [];
    const push = (from: number, to: number, allocated: boolean): void => {
      if (to <= from) return;
      const last = out[out.length - 1];
      if (last !== undefined && last.allocated === allocated && last.offset + last.length === from) last.length += to - from;
      else out.push({ offset: from, length: to - from, allocated });
    };
    const end = Math.min(offset + length, o.size());
    let pos = offset;
    while (pos < end && out.length < MAX_STATUS_EXTENTS) {
      const data = await seekDataOrHole(fd, pos, SEEK_DATA, name);
      if (data < 0 || data >= end) {
        push(pos, end, false);
        break;
      }
      // Extents are whole logical blocks, and never call a block with data in it a hole.
      const dataStart = Math.max(pos, Math.floor(data / lbs) * lbs);
      push(pos, dataStart, false);
      const hole = await seekDataOrHole(fd, dataStart, SEEK_HOLE, name);
      let holeStart = hole < 0 ? end : Math.min(end, Math.ceil(hole / lbs) * lbs);
      if (holeStart <= dataStart) holeStart = Math.min(end, dataStart + lbs);
      push(dataStart, holeStart, true);
      pos = holeStart;
    }
    return out;
  };

  return {
    canDiscard,
    discardGranularity: granularity,
    discardZeroes: canDiscard && (!isBlock || target.block?.loop === true),
    discardProblem,
    discard,
    writeZeroes,
    blockStatus: ffiProblem === undefined && !isBlock ? blockStatus : undefined,
    get zeroMethod() {
      return zeroMethod;
    },
  };
}
