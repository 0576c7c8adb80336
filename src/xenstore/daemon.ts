// XenstoreDaemon: one store, many connections. Each connection speaks for one domain and runs
// over any XsTransport: an in-process pair, a worker's MessagePort, or a Unix socket (dom0).

import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { XS_DEFAULT_QUOTA, XS_SPECIAL_INTRODUCE, XS_SPECIAL_RELEASE } from './constants.ts';
import { XsSession } from './session.ts';
import type { XsEvent, XsSessionHost } from './session.ts';
import { XsStore } from './store.ts';
import type { XsCaller, XsLimits } from './store.ts';
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
  /** Receives one line per request, reply and watch event. */
  readonly log?: (line: string) => void;
}

/** One served connection. */
export interface XsConnection {
  readonly domid: number;
  close(): void;
}

export class XenstoreDaemon {
  readonly store = new XsStore();
  readonly #limits: XsLimits;
  readonly #maxWatches: number;
  readonly #maxTransactions: number;
  readonly #log: ((line: string) => void) | undefined;
  readonly #sessions = new Map<XsSession, XsTransport>();
  readonly #introduced = new Set<number>();
  readonly #targets = new Map<number, number>();
  readonly #servers = new Set<XsUnixServer>();
  readonly #host: XsSessionHost;

  constructor(options: XenstoreDaemonOptions = {}) {
    this.#limits = {
      nodes: options.quotaNodes ?? XS_DEFAULT_QUOTA.nodes,
      valueSize: options.quotaValueSize ?? XS_DEFAULT_QUOTA.valueSize,
    };
    this.#maxWatches = options.quotaWatches ?? XS_DEFAULT_QUOTA.watches;
    this.#maxTransactions = options.quotaTransactions ?? XS_DEFAULT_QUOTA.transactions;
    this.#log = options.log;
    const sessionsOf = (domid: number): XsSession[] => [...this.#sessions.keys()].filter((s) => s.domid === domid);
    this.#host = {
      store: this.store,
      limits: this.#limits,
      maxWatches: this.#maxWatches,
      maxTransactions: this.#maxTransactions,
      caller: (domid) => this.#caller(domid),
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
    const session = new XsSession(this.#host, domid, (bytes) => transport.send(bytes));
    this.#sessions.set(session, transport);
    transport.onData((bytes) => session.receive(bytes));
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
    for (const t of this.#sessions.values()) t.close();
    await Promise.all([...this.#servers].map((s) => s.close()));
    this.#servers.clear();
  }

  #caller(domid: number): XsCaller {
    return { domid, privileged: domid === 0, target: this.#targets.get(domid) };
  }

  #fire(events: readonly XsEvent[]): void {
    for (const ev of events) for (const s of this.#sessions.keys()) s.notify(ev);
  }
}

// connectInProcess lives beside XsClient (workers import the client without the daemon).
export { connectInProcess } from './client.ts';
