// Small helpers over data-out buffers as the transport hands them over: an ordered list of views.

export function iovLength(iov: readonly Uint8Array[]): number {
  let n = 0;
  for (let i = 0; i < iov.length; i++) n += (iov[i] as Uint8Array).byteLength;
  return n;
}

/** The bytes as one array (a copy unless there is a single view). */
export function concatIov(iov: readonly Uint8Array[]): Uint8Array {
  if (iov.length === 1) return iov[0] as Uint8Array;
  const out = new Uint8Array(iovLength(iov));
  let p = 0;
  for (const v of iov) {
    out.set(v, p);
    p += v.byteLength;
  }
  return out;
}

/** Views of bytes [start, start+length) of the iov, no copy. */
export function sliceIov(iov: readonly Uint8Array[], start: number, length: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (const v of iov) {
    if (length === 0) break;
    const end = pos + v.byteLength;
    if (end > start) {
      const from = Math.max(0, start - pos);
      const take = Math.min(v.byteLength - from, length);
      out.push(from === 0 && take === v.byteLength ? v : v.subarray(from, from + take));
      length -= take;
      start += take;
    }
    pos = end;
  }
  return out;
}

function asBuffer(v: Uint8Array): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Offset of the first byte where `a` (from 0) and the iov bytes [start, start+a.length) differ,
 * or -1 when they are equal.
 */
export function firstDifference(a: Uint8Array, iov: readonly Uint8Array[], start = 0): number {
  let done = 0;
  for (const piece of sliceIov(iov, start, a.byteLength)) {
    const mine = a.subarray(done, done + piece.byteLength);
    if (!asBuffer(mine).equals(asBuffer(piece))) {
      for (let i = 0; i < piece.byteLength; i++) if (mine[i] !== piece[i]) return done + i;
    }
    done += piece.byteLength;
  }
  return -1;
}

/** ORs the iov's bytes into `target`, from its start (ORWRITE's modify step). */
export function orInto(target: Uint8Array, iov: readonly Uint8Array[]): void {
  let p = 0;
  for (const v of iov) {
    for (let i = 0; i < v.byteLength; i++) target[p + i] = (target[p + i] as number) | (v[i] as number);
    p += v.byteLength;
  }
}

/** True when every byte is zero. */
export function isAllZero(b: Uint8Array): boolean {
  let i = 0;
  if (b.byteOffset % 4 === 0) {
    const words = b.byteLength >>> 2;
    const w = new Uint32Array(b.buffer, b.byteOffset, words);
    for (; i < words; i++) if (w[i] !== 0) return false;
    i = words << 2;
  }
  for (; i < b.byteLength; i++) if (b[i] !== 0) return false;
  return true;
}
