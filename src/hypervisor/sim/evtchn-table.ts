// One domain's event-channel state in a SharedArrayBuffer of i32 words, after Xen's 2-level ABI
// (xen/common/event_2l.c): a pending and a mask bit per port, a selector word whose bits say which
// pending words to look at, and an upcall word the domain's dispatcher waits on.
//
//   [0]                    upcall pending
//   [SEL   .. SEL+S)       pending selector: bit (w % 32) of word (w / 32) <=> pending word w may hold work
//   [PEND  .. PEND+W)      pending bits, port p at word p/32, bit p%32
//   [MASK  .. MASK+W)      mask bits
//   [STATE .. STATE+P)     port state: ECS_* in bits 0-3 | remote domid in bits 16-31
//   [RPORT .. RPORT+P)     remote port, meaningful while ECS_INTERDOMAIN
// with P ports, W = P/32 and S = ceil(W/32). Port 0 is never allocated, as in Xen.

import { ECS_FREE, ECS_RESERVED } from './constants.ts';

export const UPCALL = 0;
const SEL = 1;
const KIND_MASK = 0xf;

export function evtchnTableBytes(ports: number): number {
  const words = ports / 32;
  return 4 * (1 + Math.ceil(words / 32) + 2 * words + 2 * ports);
}

/** How a port looks at one instant. */
export function portKind(state: number): number {
  return state & KIND_MASK;
}
export function portRemoteDomid(state: number): number {
  return state >>> 16;
}
export function portState(kind: number, remoteDomid: number): number {
  return (kind | (remoteDomid << 16)) | 0;
}

export class EvtchnTable {
  readonly domid: number;
  readonly sab: SharedArrayBuffer;
  readonly words: Int32Array;
  readonly ports: number;
  readonly #selWords: number;
  readonly #pend: number;
  readonly #mask: number;
  readonly #state: number;
  readonly #rport: number;

  constructor(domid: number, sab: SharedArrayBuffer, ports: number) {
    if (evtchnTableBytes(ports) !== sab.byteLength) {
      throw new RangeError(`an event table of ${sab.byteLength} bytes does not hold ${ports} ports`);
    }
    this.domid = domid;
    this.sab = sab;
    this.words = new Int32Array(sab);
    this.ports = ports;
    const w = ports / 32;
    this.#selWords = Math.ceil(w / 32);
    this.#pend = SEL + this.#selWords;
    this.#mask = this.#pend + w;
    this.#state = this.#mask + w;
    this.#rport = this.#state + ports;
  }

  state(port: number): number {
    return Atomics.load(this.words, this.#state + port);
  }

  remotePort(port: number): number {
    return Atomics.load(this.words, this.#rport + port);
  }

  casState(port: number, expected: number, next: number): boolean {
    return Atomics.compareExchange(this.words, this.#state + port, expected, next) === expected;
  }

  setState(port: number, state: number): void {
    Atomics.store(this.words, this.#state + port, state);
  }

  setRemotePort(port: number, remote: number): void {
    Atomics.store(this.words, this.#rport + port, remote);
  }

  /** Claims a free port (ECS_FREE -> ECS_RESERVED) with its bits cleared; -1 if none is free. */
  reservePort(): number {
    for (let port = 1; port < this.ports; port++) {
      if (this.casState(port, ECS_FREE, ECS_RESERVED)) {
        this.#clearBits(port);
        return port;
      }
    }
    return -1;
  }

  /** Returns a reserved port to the free pool. */
  freePort(port: number): void {
    this.#clearBits(port);
    this.setState(port, ECS_FREE);
  }

  /**
   * evtchn_2l_set_pending: set the port pending; if it was not, and is unmasked, and its selector
   * bit was clear, raise the upcall and wake the dispatcher.
   */
  setPending(port: number): void {
    const words = this.words;
    const w = port >>> 5;
    const bit = 1 << (port & 31);
    if ((Atomics.or(words, this.#pend + w, bit) & bit) !== 0) return;
    if ((Atomics.load(words, this.#mask + w) & bit) !== 0) return;
    this.#raise(w);
  }

  /**
   * setPending for the dispatcher of this table's own thread, which scans next: the upcall word is
   * raised but nobody is woken.
   */
  markPending(port: number): void {
    const words = this.words;
    const w = port >>> 5;
    const bit = 1 << (port & 31);
    if ((Atomics.or(words, this.#pend + w, bit) & bit) !== 0) return;
    if ((Atomics.load(words, this.#mask + w) & bit) !== 0) return;
    const sbit = 1 << (w & 31);
    if ((Atomics.or(words, SEL + (w >>> 5), sbit) & sbit) !== 0) return;
    Atomics.store(words, UPCALL, 1);
  }

  isPending(port: number): boolean {
    return (Atomics.load(this.words, this.#pend + (port >>> 5)) & (1 << (port & 31))) !== 0;
  }

  mask(port: number): void {
    Atomics.or(this.words, this.#mask + (port >>> 5), 1 << (port & 31));
  }

  /** evtchn_2l_unmask: clear the mask; an event that arrived meanwhile raises the upcall now. */
  unmask(port: number): void {
    const w = port >>> 5;
    const bit = 1 << (port & 31);
    if ((Atomics.and(this.words, this.#mask + w, ~bit) & bit) === 0) return;
    if ((Atomics.load(this.words, this.#pend + w) & bit) !== 0) this.#raise(w);
  }

  /** Re-raises a pending, unmasked port whose selector bit was consumed without delivering it. */
  repost(port: number): void {
    const w = port >>> 5;
    const bit = 1 << (port & 31);
    if ((Atomics.load(this.words, this.#pend + w) & bit) === 0) return;
    if ((Atomics.load(this.words, this.#mask + w) & bit) !== 0) return;
    this.#raise(w);
  }

  /**
   * The upcall handler's scan (Linux's xen_evtchn_handle_events for 2-level): take the selector
   * words, and for every pending unmasked port call `deliver(port)`; when it returns true the
   * pending bit is cleared first. Returns the number of ports delivered.
   */
  scan(deliver: (port: number) => boolean): number {
    const words = this.words;
    let delivered = 0;
    for (let s = 0; s < this.#selWords; s++) {
      let sel = Atomics.exchange(words, SEL + s, 0);
      while (sel !== 0) {
        const low = sel & -sel;
        sel ^= low;
        const w = (s << 5) + (31 - Math.clz32(low));
        let bits = Atomics.load(words, this.#pend + w) & ~Atomics.load(words, this.#mask + w);
        while (bits !== 0) {
          const b = bits & -bits;
          bits ^= b;
          const port = (w << 5) + (31 - Math.clz32(b));
          if (deliver(port)) delivered++;
        }
      }
    }
    return delivered;
  }

  /** Clears a port's pending bit (done just before its handler runs, so a new notify re-raises). */
  clearPending(port: number): void {
    Atomics.and(this.words, this.#pend + (port >>> 5), ~(1 << (port & 31)));
  }

  #raise(w: number): void {
    const sbit = 1 << (w & 31);
    if ((Atomics.or(this.words, SEL + (w >>> 5), sbit) & sbit) !== 0) return;
    if (Atomics.exchange(this.words, UPCALL, 1) === 0) Atomics.notify(this.words, UPCALL);
  }

  #clearBits(port: number): void {
    const bit = ~(1 << (port & 31));
    Atomics.and(this.words, this.#pend + (port >>> 5), bit);
    Atomics.and(this.words, this.#mask + (port >>> 5), bit);
  }
}
