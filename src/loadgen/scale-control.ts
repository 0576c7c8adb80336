// What the scale benchmark's host and its guests share: one control block in a SharedArrayBuffer
// (the phase the host sets, and each guest's counters, which the host reads without asking), and
// the stamp every 4 KiB block of the store carries so a guest can check what it read for the price
// of two loads. Pure: no I/O, no clocks.
//
//   Int32 [0]            phase (ScalePhase), set by the host, waited on by the guests
//   Int32 [1 + g]        reads guest g completed (Atomics.add per read)
//   Int32 [1 + G + g]    reads guest g found with the wrong stamp

export const ScalePhase = {
  /** Booted, no disk yet: the host takes its "before" memory figures. */
  Boot: 0,
  /** Connect blkfront to the disk the host has just attached. */
  Connect: 1,
  /** Keep the queue full and count. */
  Run: 2,
  /** Let in-flight reads finish, stay connected, report idle. */
  Stop: 3,
  /** Close the disk and return. */
  Done: 4,
} as const;
export type ScalePhase = (typeof ScalePhase)[keyof typeof ScalePhase];

export const STAMP_BLOCK = 4096;
const STAMP_MAGIC = 0x5ca1eb10;
const LE = true;

export class ScaleControl {
  readonly words: Int32Array;
  readonly guests: number;

  constructor(buffer: SharedArrayBuffer, guests: number) {
    this.words = new Int32Array(buffer);
    this.guests = guests;
    if (this.words.length < 1 + 2 * guests) throw new RangeError(`scale control: ${buffer.byteLength} bytes is too small for ${guests} guests`);
  }

  static create(guests: number): ScaleControl {
    return new ScaleControl(new SharedArrayBuffer(4 * (1 + 2 * guests)), guests);
  }

  get buffer(): SharedArrayBuffer {
    return this.words.buffer as SharedArrayBuffer;
  }

  get phase(): number {
    return Atomics.load(this.words, 0);
  }

  setPhase(phase: ScalePhase): void {
    Atomics.store(this.words, 0, phase);
    Atomics.notify(this.words, 0);
  }

  /** Resolves once the phase is at least `phase` (Atomics.waitAsync: the guest's event loop keeps running). */
  async reach(phase: ScalePhase): Promise<void> {
    for (let now = this.phase; now < phase; now = this.phase) {
      const wait = Atomics.waitAsync(this.words, 0, now);
      if (wait.async) await wait.value;
    }
  }

  countRead(guest: number): void {
    Atomics.add(this.words, 1 + guest, 1);
  }

  countBad(guest: number): void {
    Atomics.add(this.words, 1 + this.guests + guest, 1);
  }

  reads(guest: number): number {
    return Atomics.load(this.words, 1 + guest);
  }

  bad(guest: number): number {
    return Atomics.load(this.words, 1 + this.guests + guest);
  }
}

/** Writes the stamp of block `index` at the start of `block` (STAMP_BLOCK bytes, or more). */
export function stampBlock(block: Uint8Array, index: number): void {
  const view = new DataView(block.buffer, block.byteOffset, 8);
  view.setUint32(0, index, LE);
  view.setUint32(4, STAMP_MAGIC, LE);
}

/** Does `block` start with the stamp of block `index`? */
export function hasStamp(view: DataView, at: number, index: number): boolean {
  return view.getUint32(at, LE) === index >>> 0 && view.getUint32(at + 4, LE) === STAMP_MAGIC;
}
