// Aligned bounce buffers for O_DIRECT when a caller's buffer is not aligned: fixed slots carved from
// one shared WebAssembly.Memory (page-aligned), handed out first come first served. Requests larger
// than a slot go through it piece by piece, so the pool bounds memory and never fails.
import { allocAlignedShared } from './aligned-memory.ts';
import { noteAligned } from './buffer-alignment.ts';

export const BOUNCE_SLOT_SIZE = 1 << 20;
const BOUNCE_SLOTS = 8;

export interface BouncePool {
  acquire(): Promise<Uint8Array>;
  release(slot: Uint8Array): void;
  readonly slotSize: number;
}

export function createBouncePool(slots = BOUNCE_SLOTS, slotSize = BOUNCE_SLOT_SIZE): BouncePool {
  let arena: Uint8Array | undefined;
  const free: Uint8Array[] = [];
  const waiters: ((slot: Uint8Array) => void)[] = [];
  const init = (): void => {
    arena = allocAlignedShared(slots * slotSize);
    noteAligned(arena.buffer, 65536);
    for (let i = 0; i < slots; i++) free.push(arena.subarray(i * slotSize, (i + 1) * slotSize));
  };
  return {
    slotSize,
    acquire(): Promise<Uint8Array> {
      if (arena === undefined) init();
      const slot = free.pop();
      if (slot !== undefined) return Promise.resolve(slot);
      return new Promise((resolve) => waiters.push(resolve));
    },
    release(slot: Uint8Array): void {
      const next = waiters.shift();
      if (next !== undefined) next(slot);
      else free.push(slot);
    },
  };
}

let shared: BouncePool | undefined;
/** The process-wide pool, created on first use. */
export function sharedBouncePool(): BouncePool {
  shared ??= createBouncePool();
  return shared;
}

let zeroes: Uint8Array | undefined;
/** An aligned, never-written region of zeroes for writeZeroes through O_DIRECT. */
export function alignedZeroes(): Uint8Array {
  if (zeroes === undefined) {
    zeroes = allocAlignedShared(BOUNCE_SLOT_SIZE);
    noteAligned(zeroes.buffer, 65536);
  }
  return zeroes;
}
