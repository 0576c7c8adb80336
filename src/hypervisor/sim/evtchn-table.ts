// One domain's event-channel state in a SharedArrayBuffer of i32 words, after Xen's 2-level ABI
// (xen/common/event_2l.c): a pending and a mask bit per port, and per vCPU a selector word whose bits
// say which pending words to look at and an upcall word that vCPU's dispatcher waits on.
//
//   [0]                    upcall pending of vCPU 0
//   [SEL   .. SEL+S)       vCPU 0's pending selector: bit (w % 32) of word (w / 32) <=> pending word w may hold work
//   [PEND  .. PEND+W)      pending bits, port p at word p/32, bit p%32
//   [MASK  .. MASK+W)      mask bits
//   [STATE .. STATE+P)     port state: ECS_* in bits 0-3 | remote domid in bits 16-31
//   [RPORT .. RPORT+P)     remote port, meaningful while ECS_INTERDOMAIN
// with P ports, W = P/32 and S = ceil(W/32). Port 0 is never allocated, as in Xen. A domain with more
// than one vCPU (dom0 with data-plane workers: each worker thread is one of its vCPUs) has after that
//   [VCPU  .. VCPU+P)      the vCPU a port is bound to (EVTCHNOP_bind_vcpu; 0 until bound elsewhere)
//   per vCPU v >= 1: [1 word upcall][S words selector]
// As in Xen, a port's event raises the selector and upcall of the vCPU it is bound to and no other;
// a vCPU scans only its own selector and delivers only its own ports (Linux's per-cpu evtchn mask),
// so one worker's dispatcher never takes another's events.

import { ECS_FREE, ECS_RESERVED } from './constants.ts';

export const UPCALL = 0;
const SEL = 1;
const KIND_MASK = 0xf;

export function evtchnTableBytes(ports: number, vcpus = 1): number {
  const words = ports / 32;
  const selWords = Math.ceil(words / 32);
  const perVcpu = vcpus > 1 ? ports + (vcpus - 1) * (1 + selWords) : 0;
  return 4 * (1 + selWords + 2 * words + 2 * ports + perVcpu);
}

/** The most vCPUs a simulated domain may have (dom0: the main thread plus its data-plane workers). */
export const MAX_VCPUS = 257;

/** How a port looks at one instant. */
export function portKind(state: number): number {
  return state & KIND_MASK;
}
export function portRemoteDomid(state: number): number {
  return state >>> 16;
}
export function portState(kind: number, remoteDomid: number): number {
  return kind | (remoteDomid << 16) | 0;
}

/**
 * One thread's view of a domain's event table. `vcpu` is the vCPU this thread is (its upcall word
 * and selector are the ones its dispatcher waits on and scans); `vcpus` how many the domain has.
 */
export class EvtchnTable {
  readonly domid: number;
  readonly sab: SharedArrayBuffer;
  readonly words: Int32Array;
  readonly ports: number;
  readonly vcpus: number;
  readonly vcpu: number;
  /** This thread's upcall word (index into `words`): what its dispatcher waits on. */
  readonly upcall: number;
  readonly #selWords: number;
  /** This thread's selector words. */
  readonly #sel: number;
  readonly #pend: number;
  readonly #mask: number;
  readonly #state: number;
  readonly #rport: number;
  /** Port -> vCPU words (-1 with one vCPU). */
  readonly #vcpuOf: number;

  constructor(domid: number, sab: SharedArrayBuffer, ports: number, vcpus = 1, vcpu = 0) {
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS || !Number.isInteger(vcpu) || vcpu < 0 || vcpu >= vcpus) {
      throw new RangeError(`vCPU ${vcpu} of ${vcpus} is not one a domain may have (1..${MAX_VCPUS} vCPUs)`);
    }
    if (evtchnTableBytes(ports, vcpus) !== sab.byteLength) {
      throw new RangeError(`an event table of ${sab.byteLength} bytes does not hold ${ports} ports${vcpus > 1 ? ` and ${vcpus} vCPUs` : ''}`);
    }
    this.domid = domid;
    this.sab = sab;
    this.words = new Int32Array(sab);
    this.ports = ports;
    this.vcpus = vcpus;
    this.vcpu = vcpu;
    const w = ports / 32;
    this.#selWords = Math.ceil(w / 32);
    this.#pend = SEL + this.#selWords;
    this.#mask = this.#pend + w;
    this.#state = this.#mask + w;
    this.#rport = this.#state + ports;
    this.#vcpuOf = vcpus > 1 ? this.#rport + ports : -1;
    this.upcall = this.#upcallOf(vcpu);
    this.#sel = this.upcall + 1;
  }

  /** The same table as vCPU `vcpu` sees it (for a data-plane worker). */
  forVcpu(vcpu: number): EvtchnTable {
    return new EvtchnTable(this.domid, this.sab, this.ports, this.vcpus, vcpu);
  }

  #upcallOf(vcpu: number): number {
    return vcpu === 0 ? UPCALL : this.#vcpuOf + this.ports + (vcpu - 1) * (1 + this.#selWords);
  }

  /** The vCPU a port's events go to. */
  vcpuOf(port: number): number {
    return this.#vcpuOf < 0 ? 0 : Atomics.load(this.words, this.#vcpuOf + port);
  }

  /**
   * EVTCHNOP_bind_vcpu: the port's events go to `vcpu` from now on. Done before the port is bound
   * (or while it is masked): an event already raised on the old vCPU is re-raised by repost().
   */
  bindVcpu(port: number, vcpu: number): void {
    if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= this.vcpus) throw new RangeError(`domain ${this.domid} has no vCPU ${vcpu}`);
    if (this.#vcpuOf >= 0) Atomics.store(this.words, this.#vcpuOf + port, vcpu);
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

  /**
   * Claims a free port (ECS_FREE -> ECS_RESERVED) with its bits cleared, bound to this thread's vCPU;
   * -1 if none is free.
   */
  reservePort(): number {
    for (let port = 1; port < this.ports; port++) {
      if (this.casState(port, ECS_FREE, ECS_RESERVED)) {
        this.#clearBits(port);
        if (this.#vcpuOf >= 0) Atomics.store(this.words, this.#vcpuOf + port, this.vcpu);
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
    this.#raise(port);
  }

  /**
   * setPending for the dispatcher of this table's own thread, which scans next: for a port of this
   * thread's vCPU the upcall word is raised but nobody is woken; a port of another vCPU wakes it.
   */
  markPending(port: number): void {
    const words = this.words;
    const w = port >>> 5;
    const bit = 1 << (port & 31);
    if ((Atomics.or(words, this.#pend + w, bit) & bit) !== 0) return;
    if ((Atomics.load(words, this.#mask + w) & bit) !== 0) return;
    if (this.#vcpuOf >= 0 && Atomics.load(words, this.#vcpuOf + port) !== this.vcpu) {
      this.#raise(port);
      return;
    }
    const sbit = 1 << (w & 31);
    if ((Atomics.or(words, this.#sel + (w >>> 5), sbit) & sbit) !== 0) return;
    Atomics.store(words, this.upcall, 1);
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
    if ((Atomics.load(this.words, this.#pend + w) & bit) !== 0) this.#raise(port);
  }

  /** Re-raises a pending, unmasked port whose selector bit was consumed without delivering it. */
  repost(port: number): void {
    const w = port >>> 5;
    const bit = 1 << (port & 31);
    if ((Atomics.load(this.words, this.#pend + w) & bit) === 0) return;
    if ((Atomics.load(this.words, this.#mask + w) & bit) !== 0) return;
    this.#raise(port);
  }

  /**
   * The upcall handler's scan (Linux's xen_evtchn_handle_events for 2-level): take this vCPU's
   * selector words, and for every pending unmasked port call `deliver(port)`; when it returns true
   * the pending bit is cleared first. Returns the number of ports delivered. Ports of other vCPUs
   * that share a pending word are the caller's to skip (deliver returns false: they stay pending,
   * and their own vCPU's selector names them).
   */
  scan(deliver: (port: number) => boolean): number {
    const words = this.words;
    const selBase = this.#sel;
    let delivered = 0;
    for (let s = 0; s < this.#selWords; s++) {
      let sel = Atomics.exchange(words, selBase + s, 0);
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

  /** Raises the selector bit and upcall of the port's vCPU, waking its dispatcher. */
  #raise(port: number): void {
    const w = port >>> 5;
    const upcall = this.#vcpuOf < 0 ? UPCALL : this.#upcallOf(Atomics.load(this.words, this.#vcpuOf + port));
    const sbit = 1 << (w & 31);
    if ((Atomics.or(this.words, upcall + 1 + (w >>> 5), sbit) & sbit) !== 0) return;
    if (Atomics.exchange(this.words, upcall, 1) === 0) Atomics.notify(this.words, upcall);
  }

  #clearBits(port: number): void {
    const bit = ~(1 << (port & 31));
    Atomics.and(this.words, this.#pend + (port >>> 5), bit);
    Atomics.and(this.words, this.#mask + (port >>> 5), bit);
  }
}
