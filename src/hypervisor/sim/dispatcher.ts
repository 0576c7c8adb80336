// The one event dispatcher a thread runs for a domain, as one of its vCPUs (the table's `vcpu`): it
// waits on that vCPU's upcall word with Atomics.waitAsync (so the thread's timers and I/O keep
// running), then scans pending, unmasked ports and calls their handlers. A pending waitAsync does
// not keep Node's event loop alive, so while this thread owns an open port a long idle interval
// timer does; with no open port the thread may exit.
// dom0's dispatcher also plays the hypervisor for the guests' sends: it waits on each guest's outbox
// doorbell as well (one waitAsync per guest, so no guest can swallow another's wake-up) and drains
// the outbox into dom0's own table before it scans (evtchn-outbox.ts). With data-plane workers each
// is a vCPU of dom0 waiting on the outboxes of the guests it has ports of; whichever drains an
// outbox raises each event on the vCPU its port is bound to.

import { DOORBELL } from './evtchn-outbox.ts';
import type { EvtchnTable } from './evtchn-table.ts';

/** Another word this thread waits on, with what to do when it is raised (see OutboxReceiver). */
export interface WakeSource {
  /** Raised (non-zero) at DOORBELL when there is something to drain. */
  readonly words: Int32Array;
  /** Called after the doorbell was taken. */
  drain(): void;
}

class SourceWait {
  readonly source: WakeSource;
  waiting = false;
  removed = false;
  readonly wake: () => void;

  constructor(source: WakeSource, run: () => void) {
    this.source = source;
    this.wake = () => {
      this.waiting = false;
      if (!this.removed) run();
    };
  }
}

/** Wake-ups handled back to back before yielding to the event loop with setImmediate. */
const MAX_ROUNDS = 64;
const KEEP_ALIVE_MS = 0x7fffffff;

const dispatchers = new WeakMap<SharedArrayBuffer, Dispatcher>();

function noop(): void {}
function rethrow(error: unknown): never {
  throw error;
}

export class Dispatcher {
  readonly #table: EvtchnTable;
  readonly #handlers: ((() => void) | undefined)[];
  #open = 0;
  #waiting = false;
  #sources: SourceWait[] = [];
  #running = false;
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  readonly #wake = (): void => {
    this.#waiting = false;
    this.#run();
  };
  readonly #resume = (): void => {
    this.#run();
  };
  readonly #deliver = (port: number): boolean => {
    const handler = this.#handlers[port];
    // A port with no handler yet stays pending; onEvent re-posts it.
    if (handler === undefined) return false;
    this.#table.clearPending(port);
    try {
      handler();
    } catch (error) {
      process.nextTick(rethrow, error);
    }
    return true;
  };

  private constructor(table: EvtchnTable) {
    this.#table = table;
    this.#handlers = new Array<(() => void) | undefined>(table.ports);
  }

  /** This thread's dispatcher for the domain whose event table this is. */
  static for(table: EvtchnTable): Dispatcher {
    let dispatcher = dispatchers.get(table.sab);
    if (dispatcher === undefined) {
      dispatcher = new Dispatcher(table);
      dispatchers.set(table.sab, dispatcher);
    }
    return dispatcher;
  }

  /** Ports this thread has open on the domain. */
  get openPorts(): number {
    return this.#open;
  }

  portOpened(): void {
    if (this.#open++ === 0) this.#keepAlive = setInterval(noop, KEEP_ALIVE_MS);
    this.#run();
  }

  portClosed(port: number): void {
    this.#handlers[port] = undefined;
    if (--this.#open === 0 && this.#keepAlive !== undefined) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = undefined;
    }
  }

  /** Also waits on `source` (idempotent). */
  addSource(source: WakeSource): void {
    if (this.#sources.some((s) => s.source === source)) return;
    this.#sources = [...this.#sources, new SourceWait(source, this.#resume)];
    this.#run();
  }

  removeSource(source: WakeSource): void {
    const wait = this.#sources.find((s) => s.source === source);
    if (wait === undefined) return;
    wait.removed = true;
    this.#sources = this.#sources.filter((s) => s !== wait);
    // Settle its pending waitAsync now rather than leave it to wait for a doorbell nobody rings.
    Atomics.notify(source.words, DOORBELL);
  }

  setHandler(port: number, handler: () => void): void {
    this.#handlers[port] = handler;
    // An event that arrived before the handler was set is still pending: deliver it now.
    this.#table.repost(port);
  }

  #run(): void {
    if (this.#running) return; // a handler opened or re-posted a port: the loop below sees it
    this.#running = true;
    try {
      const words = this.#table.words;
      const upcall = this.#table.upcall; // this thread's vCPU's
      for (let round = 0; round < MAX_ROUNDS; round++) {
        const sources = this.#sources;
        for (let i = 0; i < sources.length; i++) {
          const source = sources[i]!.source;
          if (Atomics.exchange(source.words, DOORBELL, 0) !== 0) source.drain();
        }
        if (Atomics.exchange(words, upcall, 0) !== 0) {
          this.#table.scan(this.#deliver);
          continue;
        }
        if (this.#open === 0) return;
        if (!this.#armSources()) continue; // a doorbell rang meanwhile
        if (this.#waiting) return;
        const result = Atomics.waitAsync(words, upcall, 0);
        if (result.async) {
          this.#waiting = true;
          void result.value.then(this.#wake);
          return;
        }
      }
      setImmediate(this.#resume);
    } finally {
      this.#running = false;
    }
  }

  /** Waits on every source not already waited on; false if one's doorbell is already raised. */
  #armSources(): boolean {
    const sources = this.#sources;
    for (let i = 0; i < sources.length; i++) {
      const wait = sources[i]!;
      if (wait.waiting) continue;
      const result = Atomics.waitAsync(wait.source.words, DOORBELL, 0);
      if (!result.async) return false;
      wait.waiting = true;
      void result.value.then(wait.wake);
    }
    return true;
  }
}
