// A disk with no storage (QEMU's block/null.c, nbdkit's null plugin): reads return zeroes, writes
// and discards are dropped. For benchmarks of everything above the block layer. With
// `touchBuffers: false` reads leave the caller's buffers as they are, as fio's null engine does
// (engines/null.c completes every I/O without touching its memory): what is then measured is the
// caller alone, with no memset of the read data. Every block is a hole (nbdkit's null plugin says the
// same): it reads as zeroes and costs nothing.
import type { BlockDevice, BlockDeviceInfo, BlockExtent } from './types.ts';
import { UsageError } from '../internal/errors.ts';
import { memoryDiskInfo } from './memory-info.ts';

const DONE: Promise<void> = Promise.resolve();

export interface NullDiskOptions {
  readonly name?: string;
  readonly logicalBlockSize?: number;
  readonly readOnly?: boolean;
  /** Reads fill the buffers with zeroes (default true); false leaves them untouched, like fio's null engine. */
  readonly touchBuffers?: boolean;
}

export function createNullDisk(size: number, opts: NullDiskOptions = {}): BlockDevice {
  const lbs = opts.logicalBlockSize ?? 512;
  const name = opts.name ?? `null:${size}`;
  const check = (n: number): void => {
    if (!Number.isSafeInteger(n) || n <= 0 || n % lbs !== 0) {
      throw new UsageError(`${name}: size ${n} must be a positive multiple of the ${lbs}-byte logical block`);
    }
  };
  check(size);
  const makeInfo = (s: number): BlockDeviceInfo => memoryDiskInfo(s, lbs, opts.readOnly ?? false);
  let info = makeInfo(size);
  const zeroFill = opts.touchBuffers ?? true;
  return {
    name,
    get info() {
      return info;
    },
    readv(_offset: number, iov: readonly Uint8Array[]): Promise<void> {
      if (zeroFill) for (let i = 0; i < iov.length; i++) (iov[i] as Uint8Array).fill(0);
      return DONE;
    },
    writev(): Promise<void> {
      return DONE;
    },
    flush(): Promise<void> {
      return DONE;
    },
    discard(): Promise<void> {
      return DONE;
    },
    writeZeroes(): Promise<void> {
      return DONE;
    },
    blockStatus(offset: number, length: number): Promise<readonly BlockExtent[]> {
      const end = Math.min(offset + length, info.size);
      return Promise.resolve(end > offset ? [{ offset, length: end - offset, allocated: false }] : []);
    },
    resize(newSize: number): Promise<void> {
      try {
        check(newSize);
      } catch (err) {
        return Promise.reject(err);
      }
      info = makeInfo(newSize);
      return DONE;
    },
    close(): Promise<void> {
      return DONE;
    },
  };
}
