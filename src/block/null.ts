// A disk with no storage (QEMU's block/null.c, nbdkit's null plugin): reads return zeroes, writes
// and discards are dropped. For benchmarks of everything above the block layer.
import type { BlockDevice, BlockDeviceInfo } from './types.ts';
import { UsageError } from '../internal/errors.ts';

const DONE: Promise<void> = Promise.resolve();

export function createNullDisk(size: number, opts: { readonly name?: string; readonly logicalBlockSize?: number; readonly readOnly?: boolean } = {}): BlockDevice {
  const lbs = opts.logicalBlockSize ?? 512;
  const name = opts.name ?? `null:${size}`;
  const check = (n: number): void => {
    if (!Number.isSafeInteger(n) || n <= 0 || n % lbs !== 0) {
      throw new UsageError(`${name}: size ${n} must be a positive multiple of the ${lbs}-byte logical block`);
    }
  };
  check(size);
  const makeInfo = (s: number): BlockDeviceInfo => ({
    size: s,
    logicalBlockSize: lbs,
    physicalBlockSize: lbs,
    readOnly: opts.readOnly ?? false,
    volatileCache: false,
    canFlush: true,
    canFua: true,
    canDiscard: true,
    canWriteZeroes: true,
    discardGranularity: lbs,
    bufferAlignment: 1,
  });
  let info = makeInfo(size);
  return {
    name,
    get info() {
      return info;
    },
    readv(_offset: number, iov: readonly Uint8Array[]): Promise<void> {
      for (let i = 0; i < iov.length; i++) (iov[i] as Uint8Array).fill(0);
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
