// A RAM disk: memory in chunks of at most 1 GiB (a typed array is capped at 4 GiB and one fs call at
// 2 GiB), each a SharedArrayBuffer so a worker can later share it, allocated on first write; a chunk
// never written reads as zeroes, so a 10 GiB disk costs only what is written. Requests crossing a
// chunk edge are split. The data path allocates nothing but the subarray views `set` needs, and every
// op returns one shared, already-resolved promise.
//
// Holes (for blockStatus: SCSI GET LBA STATUS, NBD base:allocation) are tracked per logical block, the
// discard granularity: a chunk that is not allocated is all hole; an allocated chunk either has no
// hole map (all data: the steady state of a written disk, where a write pays one array load and a
// compare) or a bitmap with a bit set for each block that is a hole, and a count of the set bits. A
// new chunk starts as all holes; each write then clears the bits of its blocks (once a request, and
// only while some chunk has a map), and a map is dropped when its count reaches zero. discard and
// writeZeroes zero the memory, set the bits, and free a chunk that becomes all hole. Reads never
// look at the map. (A map is 256 KiB for a 1 GiB chunk of 512-byte blocks, only while it has holes.)
import type { BlockDevice, BlockDeviceInfo, BlockExtent } from './types.ts';
import { UsageError } from '../internal/errors.ts';
import { memoryDiskInfo } from './memory-info.ts';
import type { SharedRamSpec } from './shared-store.ts';

export const RAM_CHUNK_SIZE = 1 << 30;

export interface RamDiskOptions {
  readonly name?: string;
  readonly logicalBlockSize?: number;
  /** Chunk size in bytes (a power of two, multiple of the logical block, at most 1 GiB); tests use small ones. */
  readonly chunkSize?: number;
  readonly readOnly?: boolean;
}

export interface RamDisk extends BlockDevice {
  /** For another thread's view of the same memory (shared-store.ts); from then on every chunk is allocated and no hole is tracked. */
  share(): SharedRamSpec;
  /** Bytes of chunk memory currently allocated. */
  readonly allocatedBytes: number;
  /** The memory of chunk `index` (undefined until first written), e.g. to share with a worker. */
  chunkBuffer(index: number): SharedArrayBuffer | undefined;
}

const DONE: Promise<void> = Promise.resolve();

/** Extents one blockStatus call returns at most (callers ask again from where the last ends). */
export const RAM_STATUS_MAX_EXTENTS = 4096;

/** Bits [0, k) of a 32-bit word, 0 <= k <= 32. */
function lowMask(k: number): number {
  return k === 0 ? 0 : -1 >>> (32 - k);
}

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/** Sets (set=true) or clears bits [from, to) of the map; returns how many bits changed. */
function changeBits(map: Uint32Array, from: number, to: number, set: boolean): number {
  if (to <= from) return 0;
  let changed = 0;
  const last = (to - 1) >>> 5;
  let lo = from & 31;
  for (let w = from >>> 5; w <= last; w++) {
    const hi = w === last ? ((to - 1) & 31) + 1 : 32;
    const mask = lowMask(hi) & ~lowMask(lo);
    const old = map[w] as number;
    const flip = (set ? ~old : old) & mask;
    if (flip !== 0) {
      changed += popcount32(flip);
      map[w] = set ? old | mask : old & ~mask;
    }
    lo = 0;
  }
  return changed;
}

/** The first bit at or after `from` (and before `to`) whose value is not `hole`; `to` if none. */
function nextOtherBit(map: Uint32Array, from: number, to: number, hole: boolean): number {
  let g = from;
  while (g < to) {
    const w = g >>> 5;
    const word = map[w] as number;
    const other = (hole ? ~word : word) & ~lowMask(g & 31);
    if (other !== 0) return Math.min(to, (w << 5) + (31 - Math.clz32(other & -other)));
    g = (w + 1) << 5;
  }
  return to;
}

function holeMapWords(blocks: number): number {
  return Math.ceil(blocks / 32);
}

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
  const blockShift = Math.log2(lbs);

  let diskSize = size;
  const chunkCount = (n: number): number => Math.ceil(n / chunkSize);
  let chunks: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(chunkCount(size)).fill(undefined);
  /** Per chunk: undefined (no holes, or chunk not allocated) or a bit per block, set for a hole. */
  let holeMaps: (Uint32Array | undefined)[] = new Array<Uint32Array | undefined>(chunks.length).fill(undefined);
  /** Per chunk: set bits in its hole map. */
  let holeCounts: number[] = new Array<number>(chunks.length).fill(0);
  /** share() was called: another thread holds the chunks, so none is freed or replaced, and no hole is tracked. */
  let shared = false;
  /** Chunks with a hole map: while none has, a write does not look at the maps at all. */
  let liveMaps = 0;
  let allocated = 0;

  const setMap = (index: number, map: Uint32Array | undefined, holes: number): void => {
    liveMaps += (map === undefined ? 0 : 1) - (holeMaps[index] === undefined ? 0 : 1);
    holeMaps[index] = map;
    holeCounts[index] = holes;
  };

  const chunkLength = (index: number): number => Math.min(chunkSize, diskSize - index * chunkSize);

  const freeChunk = (index: number): void => {
    if (shared) {
      // Another thread writes this memory too: zero it rather than let go of it.
      chunks[index]?.fill(0);
      return;
    }
    const c = chunks[index];
    if (c !== undefined) allocated -= c.byteLength;
    chunks[index] = undefined;
    setMap(index, undefined, 0);
  };

  const chunkForWrite = (index: number): Uint8Array => {
    let c = chunks[index];
    if (c === undefined) {
      const len = chunkLength(index);
      c = new Uint8Array(new SharedArrayBuffer(len));
      chunks[index] = c;
      allocated += len;
      if (shared) return c;
      // All hole until written: the caller clears the bits of what it writes.
      const blocks = len >>> blockShift;
      const map = new Uint32Array(holeMapWords(blocks));
      changeBits(map, 0, blocks, true);
      setMap(index, map, blocks);
    }
    return c;
  };

  // After a write of [offset, end) (whole blocks), while some chunk has holes: clears their bits.
  const markWritten = (offset: number, end: number): void => {
    for (let pos = offset; pos < end; ) {
      const index = Math.floor(pos / chunkSize);
      const within = pos & mask;
      const n = Math.min(chunkLength(index) - within, end - pos);
      const map = holeMaps[index];
      if (map !== undefined) {
        const left = (holeCounts[index] as number) - changeBits(map, within >>> blockShift, (within + n + lbs - 1) >>> blockShift, false);
        if (left === 0) setMap(index, undefined, 0);
        else holeCounts[index] = left;
      }
      pos += n;
    }
  };

  const makeInfo = (): BlockDeviceInfo => memoryDiskInfo(diskSize, lbs, opts.readOnly ?? false);
  let info = makeInfo();

  // Makes [offset, offset+length) (whole blocks) a hole: zeroes it, marks it, and frees chunks that
  // end up all hole.
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
          freeChunk(index);
        } else {
          c.fill(0, within, within + n);
          if (shared) {
            pos += n;
            continue;
          }
          const blocks = c.byteLength >>> blockShift;
          let map = holeMaps[index];
          if (map === undefined) {
            map = new Uint32Array(holeMapWords(blocks));
            setMap(index, map, 0);
          }
          const holes = (holeCounts[index] as number) + changeBits(map, within >>> blockShift, (within + n) >>> blockShift, true);
          holeCounts[index] = holes;
          if (holes === blocks) freeChunk(index);
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

    share(): SharedRamSpec {
      if (!shared) {
        for (let i = 0; i < chunks.length; i++) {
          chunkForWrite(i);
          setMap(i, undefined, 0);
        }
        shared = true;
      }
      return { kind: 'ram', name, info, chunkSize, chunks: chunks.map((c) => c!.buffer as SharedArrayBuffer) };
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
      if (liveMaps !== 0) markWritten(offset, pos);
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

    blockStatus(offset: number, length: number): Promise<readonly BlockExtent[]> {
      const out: { offset: number; length: number; allocated: boolean }[] = [];
      const push = (from: number, to: number, data: boolean): void => {
        const last = out[out.length - 1];
        if (last !== undefined && last.allocated === data && last.offset + last.length === from) last.length += to - from;
        else out.push({ offset: from, length: to - from, allocated: data });
      };
      const end = Math.min(offset + length, diskSize);
      let pos = offset;
      while (pos < end && out.length < RAM_STATUS_MAX_EXTENTS) {
        const index = Math.floor(pos / chunkSize);
        const base = index * chunkSize;
        const stop = Math.min(base + chunkLength(index), end);
        const map = holeMaps[index];
        if (chunks[index] === undefined || map === undefined) {
          push(pos, stop, chunks[index] !== undefined);
        } else {
          let b = (pos - base) >>> blockShift;
          const bEnd = (stop - base + lbs - 1) >>> blockShift;
          while (b < bEnd && out.length < RAM_STATUS_MAX_EXTENTS) {
            const hole = ((map[b >>> 5] as number) & (1 << (b & 31))) !== 0;
            const next = nextOtherBit(map, b, bEnd, hole);
            push(base + b * lbs, Math.min(stop, base + next * lbs), !hole);
            b = next;
          }
        }
        pos = stop;
      }
      return Promise.resolve(out);
    },

    resize(newSize: number): Promise<void> {
      if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % lbs !== 0) {
        return Promise.reject(new UsageError(`${name}: new size ${newSize} must be a positive multiple of ${lbs}`));
      }
      const count = chunkCount(newSize);
      for (let i = count; i < chunks.length; i++) freeChunk(i);
      const keep = Math.min(count, chunks.length);
      const next: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(count).fill(undefined);
      const nextMaps: (Uint32Array | undefined)[] = new Array<Uint32Array | undefined>(count).fill(undefined);
      const nextCounts: number[] = new Array<number>(count).fill(0);
      for (let i = 0; i < keep; i++) {
        next[i] = chunks[i];
        nextMaps[i] = holeMaps[i];
        nextCounts[i] = holeCounts[i] as number;
      }
      chunks = next;
      holeMaps = nextMaps;
      holeCounts = nextCounts;
      liveMaps = 0;
      for (const m of holeMaps) if (m !== undefined) liveMaps++;
      diskSize = newSize;
      // The last chunk may be shorter than chunkSize: give it exactly its new length, keeping the bytes
      // that stay inside the disk (so bytes cut off by a shrink read as zeroes after a regrow), and its
      // hole map the same length (blocks added by a growth are holes).
      // Shared: new chunks are allocated now (the other thread gets them with a new share()).
      if (shared) for (let i = 0; i < count; i++) chunkForWrite(i);
      for (let i = 0; i < count; i++) {
        const c = chunks[i];
        const len = chunkLength(i);
        if (shared && c !== undefined && c.byteLength >= len) {
          // Kept whole (the other thread writes it until it has the new share()), its cut-off bytes zeroed.
          c.fill(0, len);
          continue;
        }
        if (c !== undefined && c.byteLength !== len) {
          const resized = new Uint8Array(new SharedArrayBuffer(len));
          resized.set(c.subarray(0, Math.min(len, c.byteLength)));
          allocated += len - c.byteLength;
          chunks[i] = resized;
          const oldBlocks = c.byteLength >>> blockShift;
          const blocks = len >>> blockShift;
          const map = new Uint32Array(holeMapWords(blocks));
          const old = holeMaps[i];
          if (old !== undefined) map.set(old.subarray(0, Math.min(old.length, map.length)));
          changeBits(map, Math.min(oldBlocks, blocks), map.length * 32, false);
          changeBits(map, oldBlocks, blocks, true);
          let holes = 0;
          for (let w = 0; w < map.length; w++) holes += popcount32(map[w] as number);
          setMap(i, holes === 0 || shared ? undefined : map, shared ? 0 : holes);
        }
      }
      info = makeInfo();
      return DONE;
    },

    close(): Promise<void> {
      chunks = [];
      holeMaps = [];
      holeCounts = [];
      liveMaps = 0;
      allocated = 0;
      return DONE;
    },
  };
  return disk;
}
