// The kernel calls for managing space that Node does not expose: fallocate(2) (punch a hole, zero a
// range), the BLKDISCARD / BLKZEROOUT ioctls of block devices, and lseek(2) with SEEK_DATA /
// SEEK_HOLE. Called through koffi, as linux-aio.ts calls libc.
//
// Every call is asynchronous (koffi's `fn.async`, which runs it on libuv's thread pool): these calls
// can block for long (a BLKDISCARD on a real disk for seconds, SEEK_HOLE on a large tmpfs file for
// tens of milliseconds), and a synchronous one would stall every guest's event loop meanwhile. The
// async call costs one thread hand-off, about 30 µs, as every libuv file operation does; discards
// are rare next to reads and writes (measurements: docs/benchmarks.md, "Space-management calls").
// At most MAX_IN_FLIGHT calls run at once (more wait here, in order): libuv's pool has 4 threads and
// the reads and writes of file: disks need them too; koffi also throws past its own max_async_calls.
//
// Loaded on first use, not at import: a machine where koffi's native part is missing still runs
// everything else, and the drivers fall back to what they did before (no discard, zeroes written).
//
// Numbers: FALLOC_FL_* from <linux/falloc.h>; SEEK_DATA/SEEK_HOLE from <unistd.h> (Linux values);
// BLKDISCARD and BLKZEROOUT from <linux/fs.h>, `_IO(0x12,119)` and `_IO(0x12,127)`, where
// <asm-generic/ioctl.h> defines _IOC(dir,type,nr,size) as dir<<30 | size<<16 | type<<8 | nr and _IO
// as _IOC(_IOC_NONE = 0, type, nr, 0). (x86_64 and arm64 use the generic encoding; test/block-
// space.test.ts compiles the headers and compares.)
import { getSystemErrorName } from 'node:util';
import { BlockError, Errno } from './errors.ts';
import { libcBinding } from './libc-binding.ts';
import type { Koffi } from './libc-binding.ts';

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** _IO(type, nr) of <asm-generic/ioctl.h>: no data direction, no size. */
function ioctlNumberIO(type: number, nr: number): number {
  return (0 << 30) | (0 << 16) | (type << 8) | nr;
}
/** `_IO(0x12,119)`: discard a byte range of a block device; arg: uint64_t range[2] = {start, len}. */
export const BLKDISCARD = ioctlNumberIO(0x12, 119); // 0x1277
/** `_IO(0x12,127)`: zero a byte range of a block device (write-zeroes, else zero pages written by the kernel). */
export const BLKZEROOUT = ioctlNumberIO(0x12, 127); // 0x127f

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

const ENXIO = 6;

/** Calls running on the pool at once; the rest queue here. */
export const MAX_IN_FLIGHT = 2;

type AsyncFn = ((...args: unknown[]) => number) & { async: (...args: unknown[]) => void };

interface Native {
  readonly koffi: Koffi;
  readonly fallocate: AsyncFn;
  readonly ioctlRange: AsyncFn;
  readonly lseek: AsyncFn;
}

const libc = libcBinding<Native>(
  () => (process.platform !== 'linux' ? `fallocate, BLKDISCARD and SEEK_HOLE are Linux calls (this is ${process.platform})` : undefined),
  (koffi, lib) => ({
    koffi,
    // off_t is 64 bits on the LP64 hosts we run on.
    fallocate: lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as AsyncFn,
    // ioctl is variadic in <sys/ioctl.h>, and koffi cannot call variadic functions asynchronously.
    // On x86_64 and arm64 (Linux) a pointer argument travels in the same register either way, and
    // glibc's ioctl only passes it to the system call, so a fixed prototype is safe (as in linux-aio.ts).
    ioctlRange: lib.func('int ioctl(int fd, unsigned long request, uint64_t *range)') as AsyncFn,
    lseek: lib.func('int64_t lseek(int fd, int64_t offset, int whence)') as AsyncFn,
  }),
);

/** Why these calls cannot be made here (drivers then do without), or undefined when they can. */
export function fsExtraProblem(): string | undefined {
  return libc.problem();
}

/**
 * Tests: behave as if koffi could not be loaded (`reason`), or normally again (undefined). Affects
 * devices opened afterwards.
 */
export function simulateFsExtraUnavailable(reason: string | undefined): void {
  libc.simulate(reason);
}

const waiting: (() => void)[] = [];
let inFlight = 0;

function release(): void {
  inFlight--;
  const next = waiting.shift();
  if (next !== undefined) next();
}

/** Runs `fn.async(...args)` when a slot is free; resolves with its result and the errno it left. */
function callAsync(fn: AsyncFn, args: readonly unknown[]): Promise<{ result: number; errno: number }> {
  return new Promise((resolve, reject) => {
    const start = (): void => {
      inFlight++;
      try {
        fn.async(...args, (err: unknown, result: number) => {
          // koffi restores the worker thread's errno around this callback
          const errno = libc.get()!.koffi.errno();
          release();
          if (err !== null && err !== undefined) reject(err instanceof Error ? err : new Error(String(err)));
          else resolve({ result, errno });
        });
      } catch (err) {
        release();
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    };
    if (inFlight < MAX_IN_FLIGHT) start();
    else waiting.push(start);
  });
}

function errnoText(errno: number): string {
  if (errno === Errno.EOPNOTSUPP) return 'EOPNOTSUPP'; // the kernel's name; Node says ENOTSUP (same number on Linux)
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}

/** `name: <what> of <length> bytes at offset <offset> failed: ENAME (<call>)`, EOPNOTSUPP as BLK_ERR_UNSUPPORTED. */
export function spaceError(name: string, what: string, call: string, offset: number, length: number, errno: number): BlockError {
  const unsupported = errno === Errno.EOPNOTSUPP || errno === 25 /* ENOTTY */;
  return new BlockError(
    unsupported ? 'BLK_ERR_UNSUPPORTED' : 'BLK_ERR_IO',
    `${name}: ${what} of ${length} bytes at offset ${offset} failed: ${errnoText(errno)} (${call})`,
    { errno: errno > 0 ? errno : Errno.EIO },
  );
}

function unavailable(name: string, what: string): BlockError {
  return new BlockError('BLK_ERR_UNSUPPORTED', `${name}: ${what} is not available: ${fsExtraProblem() ?? 'no FFI'}`, { errno: Errno.EOPNOTSUPP });
}

const FALLOC_NAMES: readonly [number, string][] = [
  [FALLOC_FL_PUNCH_HOLE, 'PUNCH_HOLE'],
  [FALLOC_FL_ZERO_RANGE, 'ZERO_RANGE'],
  [FALLOC_FL_KEEP_SIZE, 'KEEP_SIZE'],
];

function fallocateCall(mode: number): string {
  const names = FALLOC_NAMES.filter(([bit]) => (mode & bit) !== 0).map(([, n]) => n);
  return `fallocate(${names.join('|') || '0'})`;
}

/**
 * fallocate(fd, mode, offset, length). Rejects with a BlockError naming `name`, `what` (e.g.
 * "discard") and the range; EOPNOTSUPP (the filesystem lacks the mode) as BLK_ERR_UNSUPPORTED.
 */
export async function fallocate(fd: number, mode: number, offset: number, length: number, name: string, what: string): Promise<void> {
  const nat = libc.get();
  if (nat === undefined) throw unavailable(name, what);
  const { result, errno } = await callAsync(nat.fallocate, [fd, mode, offset, length]);
  if (result !== 0) throw spaceError(name, what, fallocateCall(mode), offset, length, errno);
}

/** ioctl(fd, BLKDISCARD or BLKZEROOUT, {offset, length}); errors as for fallocate. */
export async function blockRangeIoctl(fd: number, request: number, offset: number, length: number, name: string, what: string): Promise<void> {
  const nat = libc.get();
  if (nat === undefined) throw unavailable(name, what);
  const range = new BigUint64Array([BigInt(offset), BigInt(length)]);
  const { result, errno } = await callAsync(nat.ioctlRange, [fd, request, range]);
  const call = request === BLKDISCARD ? 'BLKDISCARD' : request === BLKZEROOUT ? 'BLKZEROOUT' : `ioctl 0x${request.toString(16)}`;
  if (result !== 0) throw spaceError(name, what, call, offset, length, errno);
}

/**
 * lseek(fd, offset, SEEK_DATA or SEEK_HOLE): the next data (or hole) at or after `offset`, or -1
 * when there is none before the end of the file (ENXIO). The end of the file counts as a hole.
 */
export async function seekDataOrHole(fd: number, offset: number, whence: typeof SEEK_DATA | typeof SEEK_HOLE, name: string): Promise<number> {
  const nat = libc.get();
  if (nat === undefined) throw unavailable(name, 'block status');
  const { result, errno } = await callAsync(nat.lseek, [fd, offset, whence]);
  if (result >= 0) return result;
  if (errno === ENXIO) return -1;
  throw spaceError(name, 'block status', whence === SEEK_DATA ? 'lseek(SEEK_DATA)' : 'lseek(SEEK_HOLE)', offset, 0, errno);
}
