// What a mapping domain keeps about one granting domain: its grant table, the "active" table in
// which mappers count pins per ref (Xen's struct active_grant_entry, here in shared memory so
// backend threads can share it), and one cached 4 KiB view per frame of its memory.
//
//   active SAB, two i32 words per ref:
//     word 2*ref     pins: bits 0-15 read-only mappings | bits 16-30 writable mappings | bit 31 lock
//     word 2*ref+1   frame resolved when the first pin was taken

import { PAGE_SIZE } from '../types.ts';
import { GRANT_ENTRY_SIZE } from './constants.ts';

export const PIN_READER = 1;
export const PIN_READERS_MASK = 0xffff;
export const PIN_WRITER = 1 << 16;
export const PIN_WRITERS_MASK = 0x7fff0000;
export const PIN_LOCK = 1 << 31;
export const ACTIVE_ENTRY_SIZE = 8;

export class GrantDomain {
  readonly domid: number;
  readonly entries: Uint32Array;
  readonly active: Int32Array;
  readonly nrEntries: number;
  readonly memory: SharedArrayBuffer;
  readonly frames: number;
  // Two levels of 1024 frames so a 4 GiB guest's sparse cache stays in fast (not dictionary) arrays.
  readonly #views: ((Uint8Array | undefined)[] | undefined)[];

  constructor(domid: number, grantTable: SharedArrayBuffer, active: SharedArrayBuffer, memory: SharedArrayBuffer) {
    this.domid = domid;
    this.entries = new Uint32Array(grantTable);
    this.active = new Int32Array(active);
    this.nrEntries = grantTable.byteLength / GRANT_ENTRY_SIZE;
    this.memory = memory;
    this.frames = Math.floor(memory.byteLength / PAGE_SIZE);
    this.#views = new Array<(Uint8Array | undefined)[] | undefined>(Math.ceil(this.frames / 1024));
  }

  /** The view of one frame, made once and reused by every mapping of that frame. */
  frameView(frame: number): Uint8Array {
    let chunk = this.#views[frame >>> 10];
    if (chunk === undefined) {
      chunk = new Array<Uint8Array | undefined>(1024);
      this.#views[frame >>> 10] = chunk;
    }
    let view = chunk[frame & 1023];
    if (view === undefined) {
      view = new Uint8Array(this.memory, frame * PAGE_SIZE, PAGE_SIZE);
      chunk[frame & 1023] = view;
    }
    return view;
  }

  static activeTableBytes(nrEntries: number): number {
    return nrEntries * ACTIVE_ENTRY_SIZE;
  }
}
