// Transmission workers: the main thread keeps the listener, the socket rules and the handshake
// (STARTTLS included); a plain connection that reaches the transmission phase moves to the worker
// serving the fewest connections, so the data path of several connections runs on several cores.
//
// Only exports whose store can be shared (BlockDevice.share: RAM disks, files, block devices) move:
// every worker opens the same memory or the same kernel file, so a flush on any connection covers
// the writes of all. A network client or a store wrapped in JavaScript of this thread (a volatile
// cache) cannot be opened twice and keeps its connections here, as do TLS connections.
import { Worker } from 'node:worker_threads';
import type { SharedStoreSpec } from '../block/shared-store.ts';
import type { ConnectionHandOff, HandedOffConnection } from './connection.ts';
import { countersIn, newSharedCounterMemory, type NbdServerCounters } from './counters.ts';
import type { NbdExport } from './export.ts';
import { closeFd, handoffProblem } from './fd-handoff.ts';
import type { FromTransmissionWorker, ToTransmissionWorker, TransmissionWorkerData, WorkerExport } from './worker-messages.ts';

/** How long a stopping worker may take to close its connections before it is terminated. */
const STOP_TIMEOUT_MS = 5000;

interface PoolWorker {
  readonly worker: Worker;
  readonly index: number;
  /** Connection ids served there. */
  readonly connections: Set<number>;
  /** Exports whose store description it has been sent. */
  readonly knows: Set<number>;
  /** What it counted (shared memory it writes). */
  readonly counters: NbdServerCounters;
  alive: boolean;
  stopped: Promise<void>;
}

export interface WorkerPoolOptions {
  readonly count: number;
  readonly exports: readonly NbdExport[];
  readonly log: (line: string) => void;
}

export class NbdWorkerPool implements ConnectionHandOff {
  readonly #workers: PoolWorker[];
  readonly #exports: readonly NbdExport[];
  readonly #log: (line: string) => void;
  /** Per export: its store's description for other threads, or null when it cannot be shared. */
  readonly #stores = new Map<number, SharedStoreSpec | null>();
  #nextId = 1;
  #closing = false;

  private constructor(o: WorkerPoolOptions, workers: PoolWorker[]) {
    this.#workers = workers;
    this.#exports = o.exports;
    this.#log = o.log;
  }

  /** Starts `count` workers (at least 1); fails when descriptors cannot be handed over here. */
  static async start(o: WorkerPoolOptions): Promise<NbdWorkerPool> {
    const problem = handoffProblem();
    if (problem !== undefined) throw new Error(`nbd-server: transmission workers: ${problem}`);
    const workers: PoolWorker[] = [];
    const pool = new NbdWorkerPool(o, workers);
    const ready: Promise<void>[] = [];
    for (let index = 0; index < o.count; index++) {
      const memory = newSharedCounterMemory();
      const workerData: TransmissionWorkerData = { counters: memory };
      const worker = new Worker(new URL('./transmission-worker.js', import.meta.url), { workerData, name: `nbd-server transmission ${index}` });
      const w: PoolWorker = { worker, index, connections: new Set(), knows: new Set(), counters: countersIn(memory), alive: true, stopped: Promise.resolve() };
      workers.push(w);
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.once('error', reject);
          worker.once('exit', () => reject(new Error(`transmission worker ${index} exited at start`)));
          worker.on('message', (m: FromTransmissionWorker) => {
            if (m.type === 'ready') {
              worker.removeListener('error', reject);
              worker.removeAllListeners('exit');
              pool.#watch(w);
              resolve();
            } else pool.#onMessage(w, m);
          });
        }),
      );
    }
    try {
      await Promise.all(ready);
    } catch (err) {
      await Promise.all(workers.map((w) => w.worker.terminate()));
      throw err;
    }
    return pool;
  }

  /** Connections served by workers now. */
  get connectionCount(): number {
    let n = 0;
    for (const w of this.#workers) n += w.connections.size;
    return n;
  }

  /** Each worker's counters (they stay readable after it stopped). */
  get counters(): readonly NbdServerCounters[] {
    return this.#workers.map((w) => w.counters);
  }

  /** Connections per worker (tests: spreading). */
  get connectionsPerWorker(): number[] {
    return this.#workers.map((w) => w.connections.size);
  }

  accepts(exp: NbdExport): boolean {
    if (this.#closing || !this.#workers.some((w) => w.alive)) return false;
    const index = this.#exports.indexOf(exp);
    if (index < 0) return false;
    let store = this.#stores.get(index);
    if (store === undefined) {
      try {
        store = exp.device.share?.() ?? null;
      } catch (err) {
        this.#log(`nbd-server: export '${exp.name}': its store cannot be shared with workers (${(err as Error).message}); served on the main thread`);
        store = null;
      }
      this.#stores.set(index, store);
    }
    return store !== null;
  }

  give(c: HandedOffConnection): void {
    const index = this.#exports.indexOf(c.negotiated.export);
    const store = this.#stores.get(index);
    let target: PoolWorker | undefined;
    for (const w of this.#workers) if (w.alive && (target === undefined || w.connections.size < target.connections.size)) target = w;
    if (this.#closing || target === undefined || store === undefined || store === null) {
      // Stopped (or every worker gone) while the hand-off was under way: the client is cut off.
      closeFd(c.fd);
      return;
    }
    const id = this.#nextId++;
    const exp = c.negotiated.export;
    const first = !target.knows.has(index);
    target.knows.add(index);
    target.connections.add(id);
    const wexp: WorkerExport = { index, name: exp.name, description: exp.description, readOnly: exp.readOnly, ...(first ? { store } : {}) };
    this.#post(target, {
      type: 'connection',
      id,
      fd: c.fd,
      leftover: c.leftover,
      export: wexp,
      structuredReplies: c.negotiated.structuredReplies,
      metaContext: c.negotiated.metaContext,
      label: `${c.label} on worker ${target.index}`,
    });
  }

  /** Ends every worker's connections, closes their stores and stops the threads. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const w of this.#workers) {
      if (!w.alive) continue;
      w.stopped = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, STOP_TIMEOUT_MS);
        w.worker.on('message', (m: FromTransmissionWorker) => {
          if (m.type !== 'stopped') return;
          clearTimeout(timer);
          resolve();
        });
        w.worker.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.#post(w, { type: 'stop' });
    }
    await Promise.all(this.#workers.map((w) => w.stopped));
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
  }

  #post(w: PoolWorker, m: ToTransmissionWorker): void {
    w.worker.postMessage(m);
  }

  #watch(w: PoolWorker): void {
    w.worker.on('error', (err) => this.#log(`nbd-server: transmission worker ${w.index} failed: ${err.stack ?? err.message}`));
    w.worker.on('exit', (code) => {
      w.alive = false;
      // Its sockets closed with its thread (Node closes a worker's handles as it exits).
      if (!this.#closing) this.#log(`nbd-server: transmission worker ${w.index} exited (code ${code}); its ${w.connections.size} connections were lost`);
      w.connections.clear();
    });
  }

  #onMessage(w: PoolWorker, m: FromTransmissionWorker): void {
    switch (m.type) {
      case 'log':
        this.#log(m.line);
        break;
      case 'closed':
        w.connections.delete(m.id);
        break;
      default:
        break;
    }
  }
}
