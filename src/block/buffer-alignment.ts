// What we know about where an ArrayBuffer's bytes start. JavaScript cannot see addresses, and
// O_DIRECT needs every iovec base aligned: a buffer's byteOffset is visible, its backing store's
// base is not (a wasm memory is page-aligned; a SharedArrayBuffer or Buffer only malloc-aligned).
// So we learn it: a direct transfer that succeeds with aligned byteOffsets proves the base aligned
// to that block size; EINVAL with every byteOffset aligned and one backing buffer proves it is not.
// Owners who know (the simulated hypervisor's guest memory) can say so with noteAligned().

interface Knowledge {
  /** Largest alignment known to hold (0: none known). */
  good: number;
  /** Smallest alignment known to fail (Infinity: none known). */
  bad: number;
}

const known = new WeakMap<ArrayBufferLike, Knowledge>();

/** Declares that `buffer`'s base address is aligned to `alignment` bytes (e.g. 65536 for wasm memory). */
export function noteAligned(buffer: ArrayBufferLike, alignment: number): void {
  const k = known.get(buffer);
  if (k === undefined) known.set(buffer, { good: alignment, bad: Infinity });
  else k.good = Math.max(k.good, alignment);
}

export function noteMisaligned(buffer: ArrayBufferLike, alignment: number): void {
  const k = known.get(buffer);
  if (k === undefined) known.set(buffer, { good: 0, bad: alignment });
  else k.bad = Math.min(k.bad, alignment);
}

/** 'yes' / 'no' when known, 'unknown' otherwise, for a base alignment of `alignment`. */
export function baseAligned(buffer: ArrayBufferLike, alignment: number): 'yes' | 'no' | 'unknown' {
  const k = known.get(buffer);
  if (k === undefined) return 'unknown';
  if (alignment <= k.good) return 'yes';
  if (alignment >= k.bad) return 'no';
  return 'unknown';
}
