// A guest's RAM as 4 KiB frames with a first-fit allocator over a bitmap. The allocator is
// private to the guest's thread; only the bytes are shared.

import { DomainError } from '../errors.ts';
import { PAGE_SIZE } from '../types.ts';
import type { GuestMemory } from '../types.ts';

export class SimGuestMemory implements GuestMemory {
  readonly buffer: SharedArrayBuffer;
  readonly pages: number;
  readonly #used: Uint32Array; // bit f set = frame f allocated
  #free: number;
  #hint = 0; // lowest frame that may be free

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.pages = Math.floor(buffer.byteLength / PAGE_SIZE);
    this.#used = new Uint32Array(Math.ceil(this.pages / 32));
    this.#free = this.pages;
  }

  get freePageCount(): number {
    return this.#free;
  }

  allocPages(count: number): number {
    if (!Number.isInteger(count) || count < 1) throw new DomainError(`allocPages: count ${count} is not a positive integer`);
    if (count > this.#free) return -1;
    const used = this.#used;
    let run = 0;
    for (let f = this.#hint; f < this.pages; f++) {
      const word = used[f >>> 5]!;
      if (word === 0xffffffff) {
        // A full word: skip its remaining frames.
        run = 0;
        f |= 31;
        continue;
      }
      if ((word & (1 << (f & 31))) !== 0) {
        run = 0;
        continue;
      }
      if (++run === count) {
        const first = f - count + 1;
        this.#mark(first, count, true);
        this.#free -= count;
        if (first === this.#hint) this.#hint = first + count;
        return first;
      }
    }
    return -1;
  }

  freePages(frame: number, count: number): void {
    this.#checkRange(frame, count, 'freePages');
    for (let f = frame; f < frame + count; f++) {
      if ((this.#used[f >>> 5]! & (1 << (f & 31))) === 0) {
        throw new DomainError(`freePages(${frame}, ${count}): frame ${f} is not allocated`);
      }
    }
    this.#mark(frame, count, false);
    this.#free += count;
    if (frame < this.#hint) this.#hint = frame;
  }

  view(frame: number, count = 1): Uint8Array {
    this.#checkRange(frame, count, 'view');
    return new Uint8Array(this.buffer, frame * PAGE_SIZE, count * PAGE_SIZE);
  }

  #mark(frame: number, count: number, used: boolean): void {
    const bits = this.#used;
    for (let f = frame; f < frame + count; f++) {
      const bit = 1 << (f & 31);
      bits[f >>> 5] = used ? bits[f >>> 5]! | bit : bits[f >>> 5]! & ~bit;
    }
  }

  #checkRange(frame: number, count: number, what: string): void {
    if (!Number.isInteger(frame) || !Number.isInteger(count) || frame < 0 || count < 1 || frame + count > this.pages) {
      throw new DomainError(`${what}(${frame}, ${count}): outside guest memory of ${this.pages} frames`);
    }
  }
}
