// Byte-level helpers shared by the NBD codec: 64-bit big-endian integers as numbers, and a queue of
// received chunks that hands out views where it can.
//
// 64-bit fields (sizes, offsets) are JavaScript numbers: exact below 2^53, which covers every disk
// we can open (a typed array or file offset here is far smaller). readU64 of a larger value returns
// an inexact number above Number.MAX_SAFE_INTEGER; callers compare against the export size, so such
// an offset always fails the range check (EINVAL, ENOSPC for writes) and a size that large is refused
// with isSafeU64 (EOVERFLOW). Cookies are opaque: two u32 halves, echoed back bit for bit.

const TWO_32 = 0x100000000;

export function readU64(src: Uint8Array, at: number): number {
  return readU32(src, at) * TWO_32 + readU32(src, at + 4);
}

export function writeU64(target: Uint8Array, at: number, value: number): void {
  writeU32(target, at, Math.floor(value / TWO_32));
  writeU32(target, at + 4, value >>> 0);
}

export function isSafeU64(value: number): boolean {
  return value <= Number.MAX_SAFE_INTEGER;
}

export function readU32(src: Uint8Array, at: number): number {
  return ((src[at]! << 24) | (src[at + 1]! << 16) | (src[at + 2]! << 8) | src[at + 3]!) >>> 0;
}

export function writeU32(target: Uint8Array, at: number, value: number): void {
  target[at] = value >>> 24;
  target[at + 1] = value >>> 16;
  target[at + 2] = value >>> 8;
  target[at + 3] = value;
}

export function readU16(src: Uint8Array, at: number): number {
  return (src[at]! << 8) | src[at + 1]!;
}

export function writeU16(target: Uint8Array, at: number, value: number): void {
  target[at] = value >>> 8;
  target[at + 1] = value;
}

/**
 * The bytes received and not yet decoded, as the list of chunks they came in. It keeps references
 * to the chunks pushed: callers must not reuse a chunk's memory after pushing it (a net.Socket's
 * 'data' chunks are fresh each time, so they qualify).
 *
 *   chunks: [ ....|xxxxxxxx ] [ xxxxxxxxxxxx ] [ xxxx ]
 *                 ^ head (offset in chunks[0])      length = all x
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The byte `at` positions ahead, without consuming; undefined when not yet received. */
  peekU8(at: number): number | undefined {
    if (at >= this.#length) return undefined;
    let i = 0;
    let pos = this.#head + at;
    for (;;) {
      const chunk = this.#chunks[i++]!;
      if (pos < chunk.length) return chunk[pos];
      pos -= chunk.length;
    }
  }

  /** The big-endian u32 at `at` positions ahead, without consuming; undefined when short. */
  peekU32(at: number): number | undefined {
    if (at + 4 > this.#length) return undefined;
    const first = this.#chunks[0]!;
    const pos = this.#head + at;
    if (pos + 4 <= first.length) return readU32(first, pos);
    return ((this.peekU8(at)! << 24) | (this.peekU8(at + 1)! << 16) | (this.peekU8(at + 2)! << 8) | this.peekU8(at + 3)!) >>> 0;
  }

  /**
   * The next `n` bytes, consumed: a view of the chunk when one chunk holds them all (no copy), a
   * fresh copy when they straddle chunks. Undefined, consuming nothing, when fewer have arrived.
   */
  take(n: number): Buffer | undefined {
    if (n > this.#length) return undefined;
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    if (this.#head + n <= first.length) {
      const view = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return view;
    }
    const copy = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(n - filled, chunk.length - this.#head);
      chunk.copy(copy, filled, this.#head, this.#head + count);
      filled += count;
      this.#advance(count);
    }
    return copy;
  }

  /** Copies the next `n` bytes into `target` at `at`, consumed; false, consuming nothing, when short. */
  takeInto(n: number, target: Uint8Array, at = 0): boolean {
    if (n > this.#length) return false;
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(n - filled, chunk.length - this.#head);
      target.set(chunk.subarray(this.#head, this.#head + count), at + filled);
      filled += count;
      this.#advance(count);
    }
    return true;
  }

  /** The next `n` bytes as views of the chunks they lie in (never copied), consumed; undefined when short. */
  takeIov(n: number): Buffer[] | undefined {
    if (n > this.#length) return undefined;
    const iov: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(left, chunk.length - this.#head);
      iov.push(chunk.subarray(this.#head, this.#head + count));
      left -= count;
      this.#advance(count);
    }
    return iov;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let left = Math.min(n, this.#length);
    const dropped = left;
    while (left > 0) {
      const count = Math.min(left, this.#chunks[0]!.length - this.#head);
      left -= count;
      this.#advance(count);
    }
    return dropped;
  }

  /** Whether some byte still queued lies in `memory` (so the memory may not be reused yet). */
  holds(memory: ArrayBufferLike): boolean {
    for (const chunk of this.#chunks) if (chunk.buffer === memory) return true;
    return false;
  }

  /**
   * Copies what is still queued into memory of the queue's own: for chunks that were views of a
   * buffer the caller reuses for its next read.
   */
  own(): void {
    if (this.#length === 0) {
      this.clear();
      return;
    }
    const copy = Buffer.allocUnsafe(this.#length);
    this.takeInto(this.#length, copy);
    this.clear();
    this.push(copy);
  }

  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#length = 0;
  }

  #advance(n: number): void {
    this.#head += n;
    this.#length -= n;
    if (this.#head === this.#chunks[0]!.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
  }
}
