// A block device (or file) opened with O_DIRECT: the "phy:" analog. Transfers go straight between the
// device and the caller's buffers (guest pages are views of a shared, page-aligned WebAssembly.Memory,
// which O_DIRECT accepts). A buffer that is not aligned to the logical block, or whose backing store
// turns out not to be (EINVAL, see buffer-alignment.ts), is bounced through an aligned pool instead:
// a request never fails with EINVAL because of its buffers.
//
// Reads and writes go through Linux native AIO (src/internal/linux-aio.ts) where it works, else libuv's pool
// ('threads'); a short AIO transfer is finished on the pool. FUA writes go through a second
// descriptor opened O_DSYNC|O_DIRECT; flush is fdatasync, which the kernel turns into a cache flush
// of the device. Discard, write-zeroes and block status go to the kernel (host-space.ts): BLKDISCARD
// and BLKZEROOUT on a block device, holes punched in a regular file.
import fs from 'node:fs';
import type { BlockDevice, BlockDeviceInfo } from './types.ts';
import { WRITE_FUA } from './types.ts';
import { BlockError, Errno, UsageError } from '../internal/errors.ts';
import { closeFd, dropFront, fdatasync, ioError, preadvFull, pwritevFull, writeZeroRange } from './fs-io.ts';
import { linuxAioProblem, sharedLinuxAio } from '../internal/linux-aio.ts';
import type { LinuxAio } from '../internal/linux-aio.ts';
import { openHostTarget } from './host-target.ts';
import type { CheckedTarget } from './host-target.ts';
import { probeHostSpace } from './host-space.ts';
import type { ZeroMethod } from './host-space.ts';
import { alignedZeroes, sharedBouncePool } from './bounce-pool.ts';
import type { BouncePool } from './bounce-pool.ts';
import { baseAligned, noteAligned, noteMisaligned } from './buffer-alignment.ts';

export interface DirectDiskOptions {
  readonly readOnly?: boolean;
  /** Name for messages; default "phy:PATH". */
  readonly name?: string;
  /** Bounce buffers for misaligned callers; default: one process-wide pool. */
  readonly bouncePool?: BouncePool;
  /** How requests reach the kernel; default 'native' where Linux AIO works, else 'threads'. */
  readonly ioEngine?: IoEngine;
  /** Open this already-checked file (path-policy.ts) rather than whatever `path` names now. */
  readonly checked?: CheckedTarget;
}

/** 'native': Linux AIO, a turn's requests in one io_submit; 'threads': libuv's pool, one hand-off each. */
export type IoEngine = 'native' | 'threads';
export const IO_ENGINES: readonly IoEngine[] = ['native', 'threads'];

export interface DirectDisk extends BlockDevice {
  /** Requests that went through the bounce pool (misaligned buffers), for tests and statistics. */
  readonly bouncedRequests: number;
  readonly ioEngine: IoEngine;
  /** Why discard is not offered (undefined when it is). */
  readonly discardProblem: string | undefined;
  /** How writeZeroes reaches the store now. */
  readonly zeroMethod: ZeroMethod;
}

function totalLength(iov: readonly Uint8Array[]): number {
  let n = 0;
  for (let i = 0; i < iov.length; i++) n += (iov[i] as Uint8Array).byteLength;
  return n;
}

/** The engine asked for, or an error saying why it cannot be had here. */
function chooseEngine(name: string, asked: IoEngine | undefined): LinuxAio | undefined {
  if (asked === 'threads') return undefined;
  const aio = sharedLinuxAio();
  if (aio === undefined && asked === 'native') {
    throw new UsageError(`${name}: io engine 'native' asked for, but ${linuxAioProblem() ?? 'Linux AIO is unavailable'}; use 'threads'`);
  }
  return aio;
}

/** preadv or pwritev through AIO; a short transfer (end of device, a signal) is finished on the pool. */
function aioTransfer(aio: LinuxAio, write: boolean, fd: number, name: string, offset: number, iov: readonly Uint8Array[]): Promise<void> {
  const want = totalLength(iov);
  return (write ? aio.writev(fd, offset, iov) : aio.readv(fd, offset, iov)).then(
    (n) => {
      if (n === want) return undefined;
      const rest = dropFront(iov, n);
      return write ? pwritevFull(fd, name, offset + n, rest) : preadvFull(fd, name, offset + n, rest);
    },
    (err: NodeJS.ErrnoException) => {
      throw ioError(write ? 'write' : 'read', name, offset, want, err);
    },
  );
}

function openFd(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, flags, (err, fd) => (err === null ? resolve(fd) : reject(err))));
}

const isEinval = (err: unknown): boolean => err instanceof BlockError && err.errno === Errno.EINVAL;

/** Copies `n` bytes between the iov (starting at logical byte `pos`) and `flat`, either way. */
function scatterGather(iov: readonly Uint8Array[], pos: number, flat: Uint8Array, n: number, toIov: boolean): void {
  let done = 0;
  for (let b = 0; b < iov.length && done < n; b++) {
    const buf = iov[b] as Uint8Array;
    if (pos >= buf.byteLength) {
      pos -= buf.byteLength;
      continue;
    }
    const k = Math.min(buf.byteLength - pos, n - done);
    if (toIov) buf.set(flat.subarray(done, done + k), pos);
    else flat.set(buf.subarray(pos, pos + k), done);
    done += k;
    pos = 0;
  }
}

export async function openDirectDisk(path: string, opts: DirectDiskOptions = {}): Promise<DirectDisk> {
  const name = opts.name ?? `phy:${path}`;
  const readOnly = opts.readOnly ?? false;
  const pool = opts.bouncePool ?? sharedBouncePool();
  const aio = chooseEngine(name, opts.ioEngine);
  const target = await openHostTarget(path, name, readOnly, fs.constants.O_DIRECT, opts.checked);
  const { fd, geometry } = target;
  let fuaFd = -1;
  let space;
  try {
    if (!readOnly) {
      // Through /proc/self/fd: the very file the first descriptor has, even if `path` was replaced
      // since (by name only where /proc is missing and nobody checked the file).
      const fuaFlags = fs.constants.O_RDWR | fs.constants.O_DIRECT | fs.constants.O_DSYNC;
      try {
        fuaFd = await openFd(`/proc/self/fd/${fd}`, fuaFlags).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT' || opts.checked !== undefined) throw err;
          return openFd(path, fuaFlags);
        });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new UsageError(`${name}: cannot open ${path} with O_DSYNC for FUA writes: ${e.message}`, { cause: err });
      }
    }
    space = await probeHostSpace({
      fd,
      name,
      target,
      readOnly,
      logicalBlockSize: geometry.logicalBlockSize,
      size: () => geometry.size,
      writeZeroesByWriting: (offset, length) => writeZeroRange(fd, name, offset, length, alignedZeroes()),
    });
  } catch (err) {
    await closeFd(fd).catch(() => undefined);
    if (fuaFd >= 0) await closeFd(fuaFd).catch(() => undefined);
    throw err;
  }
  const align = geometry.logicalBlockSize;
  const info: BlockDeviceInfo = {
    ...geometry,
    canFlush: true,
    canFua: true,
    canDiscard: space.canDiscard,
    canWriteZeroes: true,
    discardGranularity: space.discardGranularity,
    bufferAlignment: align,
    batchedSubmission: aio !== undefined,
    discardZeroes: space.discardZeroes,
  };
  const blockStatus = space.blockStatus;
  let bounced = 0;
  let closed = false;

  // 'yes': go direct; 'no': bounce; 'unknown': try direct and learn from the answer.
  const verdict = (iov: readonly Uint8Array[]): 'yes' | 'no' | 'unknown' => {
    let result: 'yes' | 'no' | 'unknown' = 'yes';
    for (let i = 0; i < iov.length; i++) {
      const b = iov[i] as Uint8Array;
      if (b.byteOffset % align !== 0 || b.byteLength % align !== 0) return 'no';
      const base = baseAligned(b.buffer, align);
      if (base === 'no') return 'no';
      if (base === 'unknown') result = 'unknown';
    }
    return result;
  };

  const learnGood = (iov: readonly Uint8Array[]): void => {
    for (let i = 0; i < iov.length; i++) noteAligned((iov[i] as Uint8Array).buffer, align);
  };

  // EINVAL with aligned offsets and lengths: blame the backing store if there is only one.
  const learnBad = (iov: readonly Uint8Array[]): void => {
    const first = iov[0]?.buffer;
    if (first !== undefined && iov.every((b) => b.buffer === first)) noteMisaligned(first, align);
  };

  const bounceRead = async (offset: number, iov: readonly Uint8Array[]): Promise<void> => {
    bounced++;
    let total = 0;
    for (const b of iov) total += b.byteLength;
    const slot = await pool.acquire();
    try {
      for (let done = 0; done < total; ) {
        const n = Math.min(pool.slotSize, total - done);
        await preadvFull(fd, name, offset + done, [slot.subarray(0, n)]);
        scatterGather(iov, done, slot, n, true);
        done += n;
      }
    } finally {
      pool.release(slot);
    }
  };

  const bounceWrite = async (offset: number, iov: readonly Uint8Array[], wfd: number): Promise<void> => {
    bounced++;
    let total = 0;
    for (const b of iov) total += b.byteLength;
    const slot = await pool.acquire();
    try {
      for (let done = 0; done < total; ) {
        const n = Math.min(pool.slotSize, total - done);
        scatterGather(iov, done, slot, n, false);
        await pwritevFull(wfd, name, offset + done, [slot.subarray(0, n)]);
        done += n;
      }
    } finally {
      pool.release(slot);
    }
  };

  const disk: DirectDisk = {
    name,
    info,
    get bouncedRequests() {
      return bounced;
    },
    ioEngine: aio === undefined ? 'threads' : 'native',
    discardProblem: space.discardProblem,
    get zeroMethod() {
      return space.zeroMethod;
    },
    readv(offset, iov) {
      const v = verdict(iov);
      if (v === 'no') return bounceRead(offset, iov);
      const direct = aio === undefined ? preadvFull(fd, name, offset, iov) : aioTransfer(aio, false, fd, name, offset, iov);
      if (v === 'yes') return direct;
      return direct.then(
        () => learnGood(iov),
        (err: unknown) => {
          if (!isEinval(err)) throw err;
          learnBad(iov);
          return bounceRead(offset, iov);
        },
      );
    },
    writev(offset, iov, flags = 0) {
      const wfd = (flags & WRITE_FUA) !== 0 ? fuaFd : fd;
      const v = verdict(iov);
      if (v === 'no') return bounceWrite(offset, iov, wfd);
      const direct = aio === undefined ? pwritevFull(wfd, name, offset, iov) : aioTransfer(aio, true, wfd, name, offset, iov);
      if (v === 'yes') return direct;
      return direct.then(
        () => learnGood(iov),
        (err: unknown) => {
          if (!isEinval(err)) throw err;
          learnBad(iov);
          return bounceWrite(offset, iov, wfd);
        },
      );
    },
    flush() {
      return fdatasync(fd, name);
    },
    discard: space.discard,
    writeZeroes: space.writeZeroes,
    ...(blockStatus === undefined ? {} : { blockStatus }),
    async close() {
      if (closed) return;
      closed = true;
      await closeFd(fd);
      if (fuaFd >= 0) await closeFd(fuaFd);
    },
    share: () => ({ kind: 'direct', name, path, fd, dev: target.stat.dev, ino: target.stat.ino, readOnly, ioEngine: aio === undefined ? 'threads' : 'native' }),
  };
  return disk;
}
