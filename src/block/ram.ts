// A RAM disk: memory in chunks of at most 1 GiB (a typed array is capped at 4 GiB and one fs call at
// 2 GiB), each a SharedArrayBuffer so a worker can later share it, allocated on first write; a chunk
// never written reads as zeroes, so a 10 GiB disk costs only what is written. Requests crossing a
// chunk edge are split. The data path allocates nothing but the subarray views `set` needs, and every
// op returns one shared, already-resolved promise.
import type { BlockDevice, BlockDeviceInfo } from './types.ts';
import { UsageError } from '../internal/errors.ts';
import { memoryDiskInfo } from './memory-info.ts';

export const RAM_CHUNK_SIZE = 1 << 30;

export interface RamDiskOptions {
  readonly name?: string;
  readonly logicalBlockSize?: number;
  /** Chunk size in bytes (a power of two, multiple of the logical block, at most 1 GiB); tests use small ones. */
  readonly chunkSize?: number;
  readonly readOnly?: boolean;
}

export interface RamDisk extends BlockDevice {
  /** Bytes of chunk memory currently allocated. */
  readonly allocatedBytes: number;
  /** The memory of chunk `index` (undefined until first written), e.g. to share with a worker. */
  chunkBuffer(index: number): SharedArrayBuffer | undefined;
}

const DONE: Promise<void> = Promise.resolve();

export function createRamDisk(size: number, opts: RamDiskOptions = {}): RamDisk {
  const lbs = opts.logicalBlockSize ?? 512;
  const chunkSize = opts.chunkSize ?? RAM_CHUNK_SIZE;
  const name = opts.name ?? `ram:${size}`;
  if (lbs !== 512 && lbs !== 4096) throw new UsageError(`${name}: logical block size ${lbs} must be 512 or 4096`);
  if (!Number.isSafeInteger(size) || size <= 0 || size % lbs !== 0) {
    throw new UsageError(`${name}: size ${size} must be a positive multiple of the ${lbs}-byte logical block`);
  }
  if (!Number.isInteger(Math.log2(chunkSize)) || chunkSize < lbs || chunkSize > RAM_CHUNK_SIZE) {
    throw new UsageError(`${name}: chunk size ${chunkSize} must be a power of two between ${lbs} and ${RAM_CHUNK_SIZE}`);
  }
  const shift = Math.log2(chunkSize);
  const mask = chunkSize - 1;

  let diskSize = size;
  let chunks: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(Math.ceil(size / chunkSize)).fill(undefined);
  let allocated = 0;

  const chunkLength = (index: number): number => Math.min(chunkSize, diskSize - index * chunkSize);

  const chunkForWrite = (index: number): Uint8Array => {
    let c = chunks[index];
    if (c === undefined) {
      const len = chunkLength(index);
      c = new Uint8Array(new SharedArrayBuffer(len));
      chunks[index] = c;
      allocated += len;
    }
    return c;
  };

  const makeInfo = (): BlockDeviceInfo => memoryDiskInfo(diskSize, lbs, opts.readOnly ?? false);
  let info = makeInfo();

  // Zeroes [offset, offset+length); frees chunks wholly inside it.
  const zeroRange = (offset: number, length: number): void => {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const index = Math.floor(pos / chunkSize);
      const within = pos & mask;
      const n = Math.min(chunkLength(index) - within, end - pos);
      const c = chunks[index];
      if (c !== undefined) {
        if (n === c.byteLength) {
          chunks[index] = undefined;
          allocated -= c.byteLength;
        } else {
          c.fill(0, within, within + n);
        }
      }
      pos += n;
    }
  };

  const disk: RamDisk = {
    name,
    get info() {
      return info;
    },
    get allocatedBytes() {
      return allocated;
    },
    chunkBuffer(index: number) {
      return chunks[index]?.buffer as SharedArrayBuffer | undefined;
    },

    readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
      let pos = offset;
      for (let b = 0; b < iov.length; b++) {
        const buf = iov[b] as Uint8Array;
        let done = 0;
        while (done < buf.byteLength) {
          const index = pos >= 2 ** 31 ? Math.floor(pos / chunkSize) : pos >>> shift;
          const within = pos % chunkSize;
          const n = Math.min(chunkSize - within, buf.byteLength - done);
          const c = chunks[index];
          if (c === undefined) buf.fill(0, done, done + n);
          else buf.set(c.subarray(within, within + n), done);
          done += n;
          pos += n;
        }
      }
      return DONE;
    },

    writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
      let pos = offset;
      for (let b = 0; b < iov.length; b++) {
        const buf = iov[b] as Uint8Array;
        let done = 0;
        while (done < buf.byteLength) {
          const index = pos >= 2 ** 31 ? Math.floor(pos / chunkSize) : pos >>> shift;
          const within = pos % chunkSize;
          const n = Math.min(chunkSize - within, buf.byteLength - done);
          const c = chunkForWrite(index);
          c.set(n === buf.byteLength ? buf : buf.subarray(done, done + n), within);
          done += n;
          pos += n;
        }
      }
      return DONE;
    },

    flush(): Promise<void> {
      return DONE;
    },

    discard(offset: number, length: number): Promise<void> {
      zeroRange(offset, length);
      return DONE;
    },

    writeZeroes(offset: number, length: number): Promise<void> {
      zeroRange(offset, length);
      return DONE;
    },

    resize(newSize: number): Promise<void> {
      if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % lbs !== 0) {
        return Promise.reject(new UsageError(`${name}: new size ${newSize} must be a positive multiple of ${lbs}`));
      }
      const count = Math.ceil(newSize / chunkSize);
      const next: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(count).fill(undefined);
      for (let i = 0; i < Math.min(count, chunks.length); i++) next[i] = chunks[i];
      for (let i = count; i < chunks.length; i++) allocated -= chunks[i]?.byteLength ?? 0;
      chunks = next;
      diskSize = newSize;
      // The last chunk may be shorter than chunkSize: give it exactly its new length, keeping the bytes
      // that stay inside the disk (so bytes cut off by a shrink read as zeroes after a regrow).
      for (let i = 0; i < count; i++) {
        const c = chunks[i];
        const len = chunkLength(i);
        if (c !== undefined && c.byteLength !== len) {
          const resized = new Uint8Array(new SharedArrayBuffer(len));
          resized.set(c.subarray(0, Math.min(len, c.byteLength)));
          allocated += len - c.byteLength;
          chunks[i] = resized;
        }
      }
      info = makeInfo();
      return DONE;
    },

    close(): Promise<void> {
      chunks = [];
      allocated = 0;
      return DONE;
    },
  };
  return disk;
}
