// How a guest's EVTCHNOP_send reaches dom0 without the guest touching dom0's event table. In Xen the
// hypercall runs in the hypervisor, which looks the port's binding up in its own memory and sets the
// remote domain's pending bit; a domain sees only its own shared_info (its pending and mask bits).
// Here a guest's hypercalls run on the guest's thread, so they may write only memory the guest holds:
// its own event table and this outbox, which it shares with dom0 alone. dom0's dispatcher (the
// hypervisor's half, on dom0's thread) drains the outbox and delivers each posted port through the
// routes it keeps privately (guest port -> dom0 port, set when dom0 binds). Whatever a guest writes
// here can only raise events on channels dom0 bound to that same guest.
//
//   [0]               doorbell: raised after a post; dom0 waits on it with Atomics.waitAsync
//   [SEL  .. SEL+S)   selector: bit (w % 32) of word (w / 32) <=> send word w may hold posts
//   [SEND .. SEND+W)  one bit per guest port: "notify the peer of this port"
// with W = ports / 32 and S = ceil(W / 32).

import { ECS_INTERDOMAIN } from './constants.ts';
import { portState } from './evtchn-table.ts';
import type { EvtchnTable } from './evtchn-table.ts';

export const DOORBELL = 0;
const SEL = 1;

/** dom0's routes of one guest's posts (OutboxReceiver): a word per guest port, then a bit per guest port. */
export function outboxRoutesBytes(ports: number): number {
  return 4 * (ports + ports / 32);
}

export function evtchnOutboxBytes(ports: number): number {
  const words = ports / 32;
  return 4 * (1 + Math.ceil(words / 32) + words);
}

/** The guest's side: post a port (EVTCHNOP_send on it). */
export class EvtchnOutbox {
  readonly words: Int32Array;
  readonly ports: number;
  readonly #send: number;

  constructor(sab: SharedArrayBuffer, ports: number) {
    if (evtchnOutboxBytes(ports) !== sab.byteLength) {
      throw new RangeError(`an event outbox of ${sab.byteLength} bytes does not hold ${ports} ports`);
    }
    this.words = new Int32Array(sab);
    this.ports = ports;
    this.#send = SEL + Math.ceil(ports / 32 / 32);
  }

  /**
   * Same order as evtchn_2l_set_pending: the port's bit, then its selector bit, then the doorbell;
   * the receiver clears them in the reverse order, so a post racing a drain is seen by it or the next.
   */
  post(port: number): void {
    const words = this.words;
    const w = port >>> 5;
    const bit = 1 << (port & 31);
    if ((Atomics.or(words, this.#send + w, bit) & bit) !== 0) return; // already posted, not yet drained
    const sbit = 1 << (w & 31);
    if ((Atomics.or(words, SEL + (w >>> 5), sbit) & sbit) !== 0) return;
    if (Atomics.exchange(words, DOORBELL, 1) === 0) Atomics.notify(words, DOORBELL);
  }
}

/**
 * dom0's side of one guest's outbox: the routes (dom0's alone: never handed to a guest) and the
 * drain. Only posts on routed ports are delivered, so garbage in the outbox costs at most a scan of
 * it. The routes live in shared memory so that every dom0 thread (vCPU) with a port of this guest
 * can drain its outbox (dom0's threads are one domain, as Xen's vCPUs of dom0 are): a post is taken
 * by exactly one drainer (Atomics.exchange) and raised on the vCPU its port is bound to.
 */
export class OutboxReceiver {
  readonly domid: number;
  readonly words: Int32Array;
  /** The routes' memory, for another dom0 thread's receiver of the same outbox. */
  readonly routes: SharedArrayBuffer;
  readonly #table: EvtchnTable;
  readonly #selWords: number;
  readonly #send: number;
  /** Guest port -> dom0 port (0: none). */
  readonly #route: Int32Array;
  /** Per send word, the bits of routed ports: garbage in other bits is dropped without a lookup. */
  readonly #routed: Int32Array;
  readonly #boundState: number;
  /** Selector bits that name a send word (the last selector word may be partly unused). */
  readonly #lastSelBits: number;

  /** `routes`: the routes of another thread's receiver of this outbox (default: new, empty ones). */
  constructor(domid: number, sab: SharedArrayBuffer, ports: number, dom0Table: EvtchnTable, routes?: SharedArrayBuffer) {
    const outbox = new EvtchnOutbox(sab, ports);
    this.domid = domid;
    this.words = outbox.words;
    this.#table = dom0Table;
    this.#selWords = Math.ceil(ports / 32 / 32);
    this.#send = SEL + this.#selWords;
    routes ??= new SharedArrayBuffer(outboxRoutesBytes(ports));
    if (routes.byteLength !== outboxRoutesBytes(ports)) throw new RangeError(`outbox routes of ${routes.byteLength} bytes do not hold ${ports} ports`);
    this.routes = routes;
    this.#route = new Int32Array(routes, 0, ports);
    this.#routed = new Int32Array(routes, 4 * ports, ports / 32);
    this.#boundState = portState(ECS_INTERDOMAIN, domid);
    const tail = (ports / 32) % 32;
    this.#lastSelBits = tail === 0 ? -1 : (1 << tail) - 1;
  }

  /** dom0's port `dom0Port` is now bound to the guest's `guestPort`. */
  route(guestPort: number, dom0Port: number): void {
    Atomics.store(this.#route, guestPort, dom0Port);
    Atomics.or(this.#routed, guestPort >>> 5, 1 << (guestPort & 31));
  }

  /** dom0's port was closed (or its peer went away): forget its route, if it is still this one. */
  unroute(guestPort: number, dom0Port: number): void {
    if (guestPort < 1 || guestPort >= this.#route.length) return;
    if (Atomics.compareExchange(this.#route, guestPort, dom0Port, 0) !== dom0Port) return;
    Atomics.and(this.#routed, guestPort >>> 5, ~(1 << (guestPort & 31)));
  }

  /**
   * Delivers every posted, routed port into dom0's table (pending bit and upcall word; without a
   * wake-up for a port of the caller's own vCPU, whose dispatcher scans next). The caller has taken
   * the doorbell.
   */
  drain(): void {
    const words = this.words;
    const table = this.#table;
    const route = this.#route;
    const routed = this.#routed;
    const last = this.#selWords - 1;
    for (let s = 0; s <= last; s++) {
      // The guest may have set any bit: only those naming send words are looked at.
      let sel = Atomics.exchange(words, SEL + s, 0) & (s === last ? this.#lastSelBits : -1);
      while (sel !== 0) {
        const low = sel & -sel;
        sel ^= low;
        const w = (s << 5) + (31 - Math.clz32(low));
        let bits = Atomics.exchange(words, this.#send + w, 0) & Atomics.load(routed, w);
        while (bits !== 0) {
          const b = bits & -bits;
          bits ^= b;
          const guestPort = (w << 5) + (31 - Math.clz32(b));
          const port = Atomics.load(route, guestPort);
          // The state check is against a close racing the drain (on this thread or another of dom0's).
          if (port !== 0 && table.state(port) === this.#boundState && table.remotePort(port) === guestPort) table.markPending(port);
        }
      }
    }
  }
}
