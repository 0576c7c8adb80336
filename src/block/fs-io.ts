// Positional vectored I/O through libuv's callback API (about twice the throughput of FileHandle,
// measured on the 2-core machine docs/benchmarks.md describes). The helpers finish short transfers: libuv may return
// fewer bytes than asked (more iovecs than IOV_MAX, signals, end of a file).
import fs from 'node:fs';
import { BlockError, Errno } from '../internal/errors.ts';

function totalLength(iov: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of iov) n += b.byteLength;
  return n;
}

/** The part of `iov` after its first `skip` bytes (only on the rare short-transfer path). */
export function dropFront(iov: readonly Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of iov) {
    if (skip >= b.byteLength) {
      skip -= b.byteLength;
      continue;
    }
    out.push(skip === 0 ? b : b.subarray(skip));
    skip = 0;
  }
  return out;
}

export function ioError(op: string, name: string, offset: number, length: number, err: NodeJS.ErrnoException): BlockError {
  const errno = typeof err.errno === 'number' ? -err.errno : Errno.EIO;
  return new BlockError('BLK_ERR_IO', `${name}: ${op} of ${length} bytes at offset ${offset} failed: ${err.message}`, {
    errno: errno > 0 ? errno : Errno.EIO,
    cause: err,
  });
}

/** Reads exactly the iov's bytes at `offset`; end of file before that is an EIO BlockError. */
export function preadvFull(fd: number, name: string, offset: number, iov: readonly Uint8Array[]): Promise<void> {
  const want = totalLength(iov);
  return new Promise<void>((resolve, reject) => {
    const step = (pos: number, vec: readonly Uint8Array[], left: number): void => {
      fs.readv(fd, vec as Uint8Array[], pos, (err, n) => {
        if (err !== null) return reject(ioError('read', name, offset, want, err));
        if (n === left) return resolve();
        if (n === 0) {
          return reject(
            new BlockError('BLK_ERR_IO', `${name}: read of ${want} bytes at offset ${offset} hit the end of the file at ${pos}`, { errno: Errno.EIO }),
          );
        }
        step(pos + n, dropFront(vec, n), left - n);
      });
    };
    step(offset, iov, want);
  });
}

/** Writes all of the iov's bytes at `offset`. */
export function pwritevFull(fd: number, name: string, offset: number, iov: readonly Uint8Array[]): Promise<void> {
  const want = totalLength(iov);
  return new Promise<void>((resolve, reject) => {
    const step = (pos: number, vec: readonly Uint8Array[], left: number): void => {
      fs.writev(fd, vec as Uint8Array[], pos, (err, n) => {
        if (err !== null) return reject(ioError('write', name, offset, want, err));
        if (n === left) return resolve();
        if (n === 0) return reject(new BlockError('BLK_ERR_IO', `${name}: write at offset ${pos} made no progress`, { errno: Errno.EIO }));
        step(pos + n, dropFront(vec, n), left - n);
      });
    };
    step(offset, iov, want);
  });
}

export function fdatasync(fd: number, name: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    fs.fdatasync(fd, (err) => (err === null ? resolve() : reject(ioError('flush', name, 0, 0, err))));
  });
}

export function closeFd(fd: number): Promise<void> {
  return new Promise<void>((resolve, reject) => fs.close(fd, (err) => (err === null ? resolve() : reject(err))));
}

export function ftruncate(fd: number, name: string, size: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    fs.ftruncate(fd, size, (err) => (err === null ? resolve() : reject(ioError('resize', name, size, 0, err))));
  });
}

/** Writes zeroes over [offset, offset+length) from `zero` (any length), one buffer-full at a time. */
export async function writeZeroRange(fd: number, name: string, offset: number, length: number, zero: Uint8Array): Promise<void> {
  const one: Uint8Array[] = [zero];
  for (let done = 0; done < length; ) {
    const n = Math.min(zero.byteLength, length - done);
    one[0] = n === zero.byteLength ? zero : zero.subarray(0, n);
    await pwritevFull(fd, name, offset + done, one);
    done += n;
  }
}

/**
 * readv or writev on the calling thread, finishing short transfers; for memory-backed files
 * (memory-fs.ts), where the system call is a copy that never waits for a device.
 */
function transferInline(write: boolean, fd: number, name: string, offset: number, iov: readonly Uint8Array[]): Promise<void> {
  const want = totalLength(iov);
  let pos = offset;
  let vec = iov;
  let left = want;
  try {
    while (left > 0) {
      const n = write ? fs.writevSync(fd, vec as Uint8Array[], pos) : fs.readvSync(fd, vec as Uint8Array[], pos);
      if (n === 0) {
        const why = write ? `write at offset ${pos} made no progress` : `read of ${want} bytes at offset ${offset} hit the end of the file at ${pos}`;
        return Promise.reject(new BlockError('BLK_ERR_IO', `${name}: ${why}`, { errno: Errno.EIO }));
      }
      left -= n;
      pos += n;
      if (left > 0) vec = dropFront(vec, n);
    }
  } catch (err) {
    return Promise.reject(ioError(write ? 'write' : 'read', name, offset, want, err as NodeJS.ErrnoException));
  }
  return DONE;
}

export function preadvInline(fd: number, name: string, offset: number, iov: readonly Uint8Array[]): Promise<void> {
  return transferInline(false, fd, name, offset, iov);
}

export function pwritevInline(fd: number, name: string, offset: number, iov: readonly Uint8Array[]): Promise<void> {
  return transferInline(true, fd, name, offset, iov);
}

const DONE: Promise<void> = Promise.resolve();
