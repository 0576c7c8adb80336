// The NBD server: its exports, its listeners (a Unix socket under our socket rules, or TCP when
// asked) and its connections. Several clients at once, each with its own handshake; connections to
// one export share its block device.
import net from 'node:net';
import { listenUnixSocket, type UnixListener } from '../internal/unix-listener.ts';
import { NbdConnection } from './connection.ts';
import { newNbdServerCounters, ProblemLog, summedCounters, type NbdServerCounters } from './counters.ts';
import type { NbdExport } from './export.ts';
import type { TlsMode } from './option-haggling.ts';
import type { NbdTlsConfig } from './tls.ts';
import { NbdWorkerPool } from './worker-pool.ts';

export type NbdListenAddress = { readonly kind: 'unix'; readonly path: string } | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

export interface NbdServerOptions {
  readonly exports: readonly NbdExport[];
  readonly tls?: NbdTlsConfig;
  readonly log?: (line: string) => void;
  /** Connections served at once; more are closed at accept (default 256). */
  readonly maxConnections?: number;
}

export function formatListenAddress(a: NbdListenAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export class NbdServer {
  /** This thread's counts; `counters` adds the workers'. */
  readonly #own: NbdServerCounters = newNbdServerCounters();
  /** Everything counted so far, on every thread (read it at any time). */
  readonly counters: NbdServerCounters = summedCounters(this.#own, () => this.#workers?.counters ?? []);
  readonly #exports: Map<string, NbdExport>;
  readonly #exportList: readonly NbdExport[];
  readonly #tls: NbdTlsConfig | undefined;
  readonly #tlsMode: TlsMode;
  readonly #log: (line: string) => void;
  readonly #problems: ProblemLog;
  readonly #maxConnections: number;
  readonly #connections = new Set<NbdConnection>();
  readonly #closers: (() => Promise<void>)[] = [];
  #nextId = 1;
  #workers: NbdWorkerPool | undefined;

  constructor(options: NbdServerOptions) {
    this.#exportList = options.exports;
    this.#exports = new Map(options.exports.map((e) => [e.name, e]));
    this.#tls = options.tls;
    this.#tlsMode = options.tls?.mode ?? 'off';
    this.#log = options.log ?? (() => undefined);
    this.#problems = new ProblemLog(this.#log);
    this.#maxConnections = options.maxConnections ?? 256;
  }

  get exports(): readonly NbdExport[] {
    return this.#exportList;
  }

  get connectionCount(): number {
    return this.#connections.size + (this.#workers?.connectionCount ?? 0);
  }

  /** The transmission workers, when started. */
  get workers(): NbdWorkerPool | undefined {
    return this.#workers;
  }

  /**
   * Serves the transmission phase of plain connections on `count` worker threads (worker-pool.ts)
   * from now on; 0 keeps everything on this thread.
   */
  async startWorkers(count: number): Promise<void> {
    if (count <= 0 || this.#workers !== undefined) return;
    this.#workers = await NbdWorkerPool.start({ count, exports: this.#exportList, log: this.#log });
  }

  /** Serves one accepted socket (the listeners call it; tests may hand in one end of a socket pair). */
  accept(socket: net.Socket, peer: string): void {
    if (this.connectionCount >= this.#maxConnections) {
      this.#own.connectionsRefused++;
      this.#problems.report('too-many-connections', `nbd-server: ${peer}: refused, ${this.#maxConnections} connections already open`);
      socket.destroy();
      return;
    }
    this.#own.connectionsAccepted++;
    const connection = new NbdConnection(
      socket,
      {
        // The empty name is the default export: the one named "", else the first.
        findExport: (name) => this.#exports.get(name) ?? (name === '' ? this.#exportList[0] : undefined),
        listExports: () => this.#exportList,
        tlsMode: this.#tlsMode,
        tls: this.#tls,
        counters: this.#own,
        problems: this.#problems,
        ...(this.#workers === undefined ? {} : { handOff: this.#workers }),
      },
      `connection ${this.#nextId++} (${peer})`,
      () => this.#connections.delete(connection),
    );
    this.#connections.add(connection);
  }

  async listen(address: NbdListenAddress): Promise<NbdListenAddress> {
    if (address.kind === 'unix') {
      const listener: UnixListener = await listenUnixSocket(address.path, (socket) => this.accept(socket, 'unix'), { name: 'nbd', log: this.#log });
      this.#closers.push(() => listener.close());
      return address;
    }
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) =>
      this.accept(socket, `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(address.port, address.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.#log(`nbd-server: ${formatListenAddress(address)}: ${err.message}`));
    this.#closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const bound = server.address() as net.AddressInfo;
    return { kind: 'tcp', host: address.host, port: bound.port };
  }

  /** Stops listening and ends every connection (the devices are the caller's to close). */
  async close(): Promise<void> {
    for (const c of this.#connections) c.destroy();
    await Promise.all(this.#closers.splice(0).map((close) => close()));
    await this.#workers?.close();
  }
}
