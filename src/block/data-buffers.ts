// Pooled, page-aligned I/O buffers: data-in for READ and friends (the SCSI device server) and
// received data-out (the iSCSI transport). They live in the block layer, under both.
//
// Buffers come in power-of-two size classes from 4 KiB up to the largest transfer we advertise.
// They are carved from slabs of shared WebAssembly memory (page-aligned, so an O_DIRECT store reads
// into them without a bounce; aligned-memory.ts), several buffers per slab: each wasm memory
// reserves a large stretch of address space, so one per buffer would not scale to a deep queue.
//
// A buffer's `release` is bound once, when the buffer is made, so a result can hand it to the
// transport without a closure per command. Each class keeps at most its share of `maxIdleBytes`
// idle (and never less than one slab's worth, so a slab just carved is not dropped piece by piece);
// a dropped buffer's slab goes back to the garbage collector once none of its buffers is referenced.
import { allocAlignedShared } from './aligned-memory.ts';
import { noteAligned } from './buffer-alignment.ts';

const MIN_CLASS_SHIFT = 12;
/** Slabs are at least this big (or one buffer, for larger classes). */
const SLAB_BYTES = 4 << 20;

export class DataBuffer {
  /** The whole buffer (its class size). */
  readonly bytes: Uint8Array;
  /** A view of the first `length` bytes, and the one-element iov around it, reused while `length` repeats. */
  view: Uint8Array;
  readonly iov: Uint8Array[];
  /** Returns the buffer to its pool; safe to call detached, once per take(). */
  readonly release: () => void;
  leased = false;
  readonly #pool: DataBufferPool;
  readonly classIndex: number;

  constructor(pool: DataBufferPool, bytes: Uint8Array, classIndex: number) {
    this.#pool = pool;
    this.bytes = bytes;
    this.classIndex = classIndex;
    this.view = bytes;
    this.iov = [bytes];
    this.release = () => this.#pool.put(this);
  }

  /** Sets the view to the first `length` bytes. */
  resize(length: number): void {
    if (this.view.byteLength !== length) {
      this.view = length === this.bytes.byteLength ? this.bytes : this.bytes.subarray(0, length);
      this.iov[0] = this.view;
    }
  }
}

export interface DataBufferPoolOptions {
  /** Largest buffer handed out (bytes); larger requests get a one-off buffer. Default 8 MiB. */
  readonly maxBufferBytes?: number;
  /** Idle bytes kept for reuse, shared out among the classes (each keeps at least one slab). Default 64 MiB. */
  readonly maxIdleBytes?: number;
}

export class DataBufferPool {
  readonly #free: DataBuffer[][] = [];
  /** Most idle buffers kept per class. */
  readonly #keep: number[] = [];
  readonly #maxClass: number;
  #idleBytes = 0;
  /** Buffers currently leased (for tests and stats). */
  leased = 0;

  constructor(options: DataBufferPoolOptions = {}) {
    const max = options.maxBufferBytes ?? 8 << 20;
    this.#maxClass = Math.max(0, Math.ceil(Math.log2(Math.max(max, 1 << MIN_CLASS_SHIFT))) - MIN_CLASS_SHIFT);
    const share = (options.maxIdleBytes ?? 64 << 20) / (this.#maxClass + 1);
    for (let i = 0; i <= this.#maxClass; i++) {
      const size = 1 << (i + MIN_CLASS_SHIFT);
      this.#free.push([]);
      this.#keep.push(Math.max(slabCount(size), Math.floor(share / size)));
    }
  }

  /** A buffer of at least `length` bytes whose `view` is exactly `length` bytes (length > 0). */
  take(length: number): DataBuffer {
    const ci = classIndex(length);
    let buf: DataBuffer | undefined;
    if (ci <= this.#maxClass) {
      const list = this.#free[ci] as DataBuffer[];
      buf = list.pop();
      if (buf === undefined) {
        this.#grow(ci);
        buf = list.pop() as DataBuffer;
      } else {
        this.#idleBytes -= buf.bytes.byteLength;
      }
    } else {
      buf = new DataBuffer(this, alignedBytes(1 << (ci + MIN_CLASS_SHIFT)), ci);
    }
    buf.leased = true;
    this.leased++;
    buf.resize(length);
    return buf;
  }

  put(buf: DataBuffer): void {
    if (!buf.leased) return;
    buf.leased = false;
    this.leased--;
    if (buf.classIndex > this.#maxClass) return;
    const list = this.#free[buf.classIndex] as DataBuffer[];
    if (list.length >= (this.#keep[buf.classIndex] as number)) return;
    this.#idleBytes += buf.bytes.byteLength;
    list.push(buf);
  }

  get idleBytes(): number {
    return this.#idleBytes;
  }

  #grow(ci: number): void {
    const size = 1 << (ci + MIN_CLASS_SHIFT);
    const count = slabCount(size);
    const slab = alignedBytes(size * count);
    const list = this.#free[ci] as DataBuffer[];
    for (let i = 0; i < count; i++) {
      list.push(new DataBuffer(this, slab.subarray(i * size, (i + 1) * size), ci));
      this.#idleBytes += size;
    }
    const taken = list[list.length - 1] as DataBuffer;
    this.#idleBytes -= taken.bytes.byteLength;
  }
}

function slabCount(size: number): number {
  return Math.max(1, Math.floor(SLAB_BYTES / size));
}

function classIndex(length: number): number {
  if (length <= 1 << MIN_CLASS_SHIFT) return 0;
  return Math.ceil(Math.log2(length)) - MIN_CLASS_SHIFT;
}

function alignedBytes(size: number): Uint8Array {
  const b = allocAlignedShared(size);
  noteAligned(b.buffer, 65536);
  return b;
}
