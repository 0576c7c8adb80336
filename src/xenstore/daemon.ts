// XenstoreDaemon: one store, many connections. Each connection speaks for one domain and runs
// over any XsTransport: an in-process pair, a worker's MessagePort, or a Unix socket (dom0).
//
// The daemon shares its thread with the backend's data plane, so requests are answered in turns
// rather than as they arrive (which let a guest keeping 256 writes outstanding cut a neighbour's
// 4 KiB reads from ~67k to under 1k IOPS, test/xenstore-fairness.test.ts):
// - A connection with a whole request waiting joins a round-robin queue; each visit answers at most
//   TURN_BURST of its requests, and a turn ends after TURN_MS (having answered at least one), so
//   the data plane waits at most about that long for the thread.
// - Turns follow each other through setImmediate while dom0 has requests waiting, or when a request
//   arrives at an idle daemon. When only unprivileged domains still have requests waiting after a
//   turn (a sustained load from guests), the next turn waits PACE_MS on a timer instead: guests get
//   up to about TURN_MS of every PACE_MS between them (some ten thousand requests a second), and the
//   event loop can sleep rather than spin for them. C xenstored limits guests much harder (a write
//   rate limit of 200 a second, tools/xenstored/domain.c WRL_RATE); measured here, turns alone still
//   kept the loop spinning, which cost a neighbour as much as a guest burning a core.

import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { XS_DEFAULT_FLOW, XS_DEFAULT_QUOTA, XS_SPECIAL_INTRODUCE, XS_SPECIAL_RELEASE } from './constants.ts';
import { XsSession } from './session.ts';
import type { XsEvent, XsFlowLimits, XsSessionHost } from './session.ts';
import { XsStore } from './store.ts';
import type { XsCaller, XsLimits, XsTxLimits } from './store.ts';
import { messagePortTransport } from './transport.ts';
import type { XsTransport } from './transport.ts';
import { listenUnix } from './unix.ts';
import type { XsUnixServer } from './unix.ts';

export interface XenstoreDaemonOptions {
  /** Nodes each unprivileged domain may own (default 1000, as xenstored). */
  readonly quotaNodes?: number;
  /** Watches per unprivileged domain (default 128). */
  readonly quotaWatches?: number;
  /** Open transactions per unprivileged domain (default 10). */
  readonly quotaTransactions?: number;
  /** Longest value an unprivileged domain may write (default 2048). */
  readonly quotaValueSize?: number;
  /** C xenstored's `transaction-nodes`: nodes one transaction of an unprivileged domain may access (default 1024; ENOSPC past it). */
  readonly quotaTransactionNodes?: number;
  /** C xenstored's `memory`, here bytes an unprivileged domain's open transactions may hold (default 2.5 MiB; ENOMEM past it). */
  readonly quotaMemory?: number;
  /** Bytes any one transaction may hold, dom0's included (default 32 MiB; ENOMEM past it). */
  readonly transactionMemory?: number;
  /** Bytes of unanswered requests held per connection before it is no longer read (default 64 KiB). */
  readonly inputBuffer?: number;
  /** Bytes of unread replies per connection past which its requests wait (default 64 KiB). */
  readonly outputBuffer?: number;
  /** Bytes of unread replies and watch events per connection past which it is dropped (default 1 MiB). */
  readonly outputDrop?: number;
  /** Receives one line per request, reply and watch event. */
  readonly log?: (line: string) => void;
}

/** One served connection. */
export interface XsConnection {
  readonly domid: number;
  close(): void;
}

/** Requests one connection may have answered per visit of a turn. */
const TURN_BURST = 4;
/** A turn ends once it has run this long. */
const TURN_MS = 0.1;
/** Period of turns while only unprivileged domains have requests waiting. */
const PACE_MS = 2;

export class XenstoreDaemon {
  readonly store = new XsStore();
  readonly #limits: XsLimits;
  readonly #txLimits: XsTxLimits;
  readonly #flow: XsFlowLimits;
  readonly #maxWatches: number;
  readonly #maxTransactions: number;
  readonly #log: ((line: string) => void) | undefined;
  readonly #sessions = new Map<XsSession, XsTransport>();
  readonly #introduced = new Set<number>();
  readonly #targets = new Map<number, number>();
  readonly #servers = new Set<XsUnixServer>();
  readonly #host: XsSessionHost;
  /** Connections with requests waiting, in turn order; a connection is in it at most once. */
  #runq: XsSession[] = [];
  readonly #queued = new Set<XsSession>();
  /** A turn is due at the next setImmediate. */
  #immediate = false;
  /** A paced turn is due on this timer. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** A turn is running: it decides when the next one is due. */
  #inTurn = false;

  constructor(options: XenstoreDaemonOptions = {}) {
    this.#limits = {
      nodes: options.quotaNodes ?? XS_DEFAULT_QUOTA.nodes,
      valueSize: options.quotaValueSize ?? XS_DEFAULT_QUOTA.valueSize,
    };
    this.#maxWatches = options.quotaWatches ?? XS_DEFAULT_QUOTA.watches;
    this.#maxTransactions = options.quotaTransactions ?? XS_DEFAULT_QUOTA.transactions;
    this.#txLimits = {
      transactionNodes: options.quotaTransactionNodes ?? XS_DEFAULT_QUOTA.transactionNodes,
      memory: options.quotaMemory ?? XS_DEFAULT_QUOTA.memory,
      transactionMemory: options.transactionMemory ?? XS_DEFAULT_FLOW.transactionMemory,
    };
    this.#flow = {
      inputLimit: options.inputBuffer ?? XS_DEFAULT_FLOW.inputBuffer,
      outputLimit: options.outputBuffer ?? XS_DEFAULT_FLOW.outputBuffer,
      outputDropLimit: options.outputDrop ?? XS_DEFAULT_FLOW.outputDrop,
    };
    this.#log = options.log;
    const sessionsOf = (domid: number): XsSession[] => [...this.#sessions.keys()].filter((s) => s.domid === domid);
    this.#host = {
      store: this.store,
      limits: this.#limits,
      txLimits: this.#txLimits,
      flow: this.#flow,
      maxWatches: this.#maxWatches,
      maxTransactions: this.#maxTransactions,
      logging: this.#log !== undefined,
      caller: (domid) => this.#caller(domid),
      transactionBytes: (domid) => sessionsOf(domid).reduce((n, s) => [...s.transactions.values()].reduce((m, t) => m + t.bytes, n), 0),
      wake: (session) => this.#wake(session),
      fire: (events) => this.#fire(events),
      watchCount: (domid) => sessionsOf(domid).reduce((n, s) => n + s.watches.length, 0),
      transactionCount: (domid) => sessionsOf(domid).reduce((n, s) => n + s.transactions.size, 0),
      introduce: (domid) => {
        this.#introduced.add(domid);
        this.#fire([{ path: XS_SPECIAL_INTRODUCE, perms: [], kind: 'special' }]);
      },
      release: (domid) => {
        this.#introduced.delete(domid);
        this.#targets.delete(domid);
        // xenstored drops the released domain's connection.
        for (const s of sessionsOf(domid)) this.#sessions.get(s)?.close();
        this.#fire([{ path: XS_SPECIAL_RELEASE, perms: [], kind: 'special' }]);
      },
      isIntroduced: (domid) => this.#introduced.has(domid),
      setTarget: (domid, target) => void this.#targets.set(domid, target),
      log: (line) => this.#log?.(line),
    };
  }

  /** Number of open connections. */
  get connectionCount(): number {
    return this.#sessions.size;
  }

  /** Serves a connection that speaks for `domid` (0 is privileged) over `transport`. */
  connect(domid: number, transport: XsTransport): XsConnection {
    const session = new XsSession(this.#host, domid, transport);
    this.#sessions.set(session, transport);
    transport.onData((bytes) => session.receive(bytes));
    transport.onDrain(() => this.#wake(session));
    transport.onClose(() => {
      session.close();
      this.#sessions.delete(session);
    });
    this.#log?.(`CONNECT d${domid}`);
    return { domid, close: () => transport.close() };
  }

  /** Serves `port` (one end of a MessageChannel) for `domid`. */
  connectPort(domid: number, port: MessagePort): XsConnection {
    return this.connect(domid, messagePortTransport(port));
  }

  /** A new MessageChannel served for `domid`; returns the other end, to transfer to a worker. */
  createPort(domid: number): MessagePort {
    const { port1, port2 } = new MessageChannel();
    this.connectPort(domid, port1);
    return port2;
  }

  /** Listens on a Unix socket as xenstored does; every socket connection speaks for dom0. */
  async listenUnix(path: string): Promise<XsUnixServer> {
    const server = await listenUnix(path, (transport) => this.connect(0, transport));
    this.#servers.add(server);
    return {
      path: server.path,
      close: async () => {
        this.#servers.delete(server);
        await server.close();
      },
    };
  }

  /** Closes every connection and socket server. */
  async close(): Promise<void> {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const t of this.#sessions.values()) t.close();
    await Promise.all([...this.#servers].map((s) => s.close()));
    this.#servers.clear();
  }

  /** Queues `session` for a turn if it has a request it can answer. */
  #wake(session: XsSession): void {
    if (this.#queued.has(session) || !session.runnable) return;
    this.#queued.add(session);
    this.#runq.push(session);
    // A request to an idle daemon, or dom0's, is answered at once; guests wait for a paced turn.
    if (!this.#inTurn && (this.#timer === undefined || session.domid === 0)) this.#scheduleNow();
  }

  #scheduleNow(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#immediate) return;
    this.#immediate = true;
    setImmediate(this.#turn);
  }

  readonly #turn = (): void => {
    this.#immediate = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#inTurn = true;
    const start = performance.now();
    try {
      while (this.#runq.length > 0) {
        const session = this.#runq.shift() as XsSession;
        this.#queued.delete(session);
        let spent = false;
        for (let i = 0; i < TURN_BURST && session.step(); i++) {
          spent = performance.now() - start >= TURN_MS;
          if (spent) break;
        }
        // Still work: to the back of the queue, behind everyone else waiting.
        this.#wake(session);
        if (spent) break;
      }
    } finally {
      this.#inTurn = false;
    }
    if (this.#runq.length === 0) return;
    if (this.#runq.some((s) => s.domid === 0)) this.#scheduleNow();
    else this.#timer = setTimeout(this.#turn, PACE_MS);
  };

  #caller(domid: number): XsCaller {
    return { domid, privileged: domid === 0, target: this.#targets.get(domid) };
  }

  #fire(events: readonly XsEvent[]): void {
    for (const ev of events) for (const s of this.#sessions.keys()) s.notify(ev);
  }
}
