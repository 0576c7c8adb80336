// Rings sharded over data-plane worker threads (`workers: N`). The main thread keeps the control
// plane (xenstore watches, the handshake, ctl); each ring goes to one worker, which maps it, binds
// its event channel with its own hypervisor handle and serves it until stopped
// (data-plane-worker.ts).
//
// Which worker: the one serving the fewest rings now (the lowest index on a tie). Queues of one
// multi-queue disk, attached one after the other, so land on different workers, which is what
// multi-queue is for; and a new guest's ring lands beside the fewest others. Fairness between
// domains does not depend on where their rings land: every worker shares the fair-share accounts
// (fair-share.ts), the in-flight budget (shared-budget.ts) and writes its rings' statistics where
// the main thread reads them (stats.ts).
//
// The store of a ring is opened by the worker itself when it can be (shared-store.ts: RAM disks,
// files, block devices); any other (iscsi://, a store wrapped by code on this thread) is reached
// through this thread (device-proxy.ts), and `ctl list`/stats say so (ServedRing.proxied).
import { Worker } from 'node:worker_threads';
import type { BlockDevice } from '../../block/types.ts';
import { BlockError } from '../../internal/errors.ts';
import { FairShareTable } from '../fair-share.ts';
import { VbdStats } from '../stats.ts';
import type { DataPath } from '../ring-server.ts';
import type { DataPlaneProvider } from './data-plane.ts';
import { DeviceProxies, fromWireError } from './device-proxy.ts';
import type { DeviceRef, FromWorker, ToWorker, WorkerInit } from './protocol.ts';
import type { RingHost, RingPlace, RingSpec, ServedRing } from './ring-host.ts';
import { SharedInflightBudget } from './shared-budget.ts';

/** The most data-plane workers one backend runs. */
export const MAX_WORKERS = 64;

export interface WorkerRingHostOptions {
  readonly workers: number;
  readonly provider: DataPlaneProvider;
  readonly budget: SharedInflightBudget;
  readonly fairShare: FairShareTable;
  readonly quantum: number;
  /** Pins a ring to a worker (its index; undefined: the least loaded). */
  readonly placeRing?: (ring: RingPlace) => number | undefined;
  readonly log: (message: string) => void;
  readonly logError: (message: string) => void;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

class DataPlaneWorker {
  readonly index: number;
  readonly worker: Worker;
  /** The worker's thread id (for per-thread CPU figures); -1 until ready. */
  tid = -1;
  /** Rings served now. */
  rings = 0;
  dead: string | undefined;
  readonly ready: Promise<void>;
  readonly attaching = new Map<number, Waiter>();
  readonly stopping = new Map<number, () => void>();
  readonly memory = new Map<number, (bytes: number) => void>();
  /** 'device' messages not yet acknowledged. */
  readonly updating = new Map<number, () => void>();
  closed: (() => void) | undefined;

  constructor(index: number, worker: Worker, ready: Promise<void>) {
    this.index = index;
    this.worker = worker;
    this.ready = ready;
  }

  post(message: ToWorker): void {
    if (this.dead === undefined) this.worker.postMessage(message);
  }
}

class WorkerRing implements ServedRing {
  readonly stats: VbdStats;
  readonly dataPath: DataPath;
  readonly id: number;
  readonly device: BlockDevice;
  /** The store is reached through the main thread (device-proxy.ts); its number there. */
  readonly proxy: number | null;
  readonly #host: DataPlaneWorker;
  readonly #done: (ring: WorkerRing) => void;
  #stopped: Promise<void> | undefined;

  constructor(host: DataPlaneWorker, id: number, spec: RingSpec, stats: VbdStats, proxy: number | null, done: (ring: WorkerRing) => void) {
    this.#host = host;
    this.id = id;
    this.stats = stats;
    this.dataPath = spec.dataPath;
    this.device = spec.device;
    this.proxy = proxy;
    this.#done = done;
  }

  get worker(): number {
    return this.#host.index;
  }

  get inflight(): number {
    return this.stats.inflight;
  }

  /** Halted by a frontend that broke the ring protocol, or its worker is gone (nothing serves it). */
  get halted(): boolean {
    return this.stats.halted || this.#host.dead !== undefined;
  }

  get grantsKept(): number {
    return this.stats.grantsKept;
  }

  /** The store stays on the main thread: its requests cross to it and back. */
  get proxied(): boolean {
    return this.proxy !== null;
  }

  kick(): void {
    this.#host.post({ t: 'kick', id: this.id });
  }

  stop(): Promise<void> {
    this.#stopped ??= new Promise<void>((resolve) => {
      if (this.#host.dead !== undefined) {
        resolve();
        return;
      }
      this.#host.stopping.set(this.id, resolve);
      this.#host.post({ t: 'stop', id: this.id });
    }).then(() => this.#done(this));
    return this.#stopped;
  }
}

export class WorkerRingHost implements RingHost {
  readonly workers: number;
  readonly #o: WorkerRingHostOptions;
  readonly #pool: DataPlaneWorker[] = [];
  readonly #rings = new Map<number, WorkerRing>();
  readonly #proxies = new DeviceProxies();
  #nextId = 1;
  #closing: Promise<void> | undefined;

  constructor(options: WorkerRingHostOptions) {
    const n = options.workers;
    if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) throw new BlockError('BLK_ERR_CONFIG', `workers ${n} is not a whole number in 1..${MAX_WORKERS}`);
    if (n > options.provider.maxWorkers) {
      throw new BlockError('BLK_ERR_CONFIG', `this hypervisor gives dom0 room for ${options.provider.maxWorkers} data-plane workers, not ${n}`);
    }
    this.workers = n;
    this.#o = options;
    for (let i = 0; i < n; i++) this.#pool.push(this.#start(i));
  }

  /** Resolves once every worker has its hypervisor handle (or rejects with why one could not). */
  async ready(): Promise<void> {
    await Promise.all(this.#pool.map((w) => w.ready));
  }

  /** The workers' thread ids (Linux tids; -1 where unknown), in worker order. */
  get threadIds(): number[] {
    return this.#pool.map((w) => w.tid);
  }

  /** Rings each worker serves now. */
  get load(): number[] {
    return this.#pool.map((w) => w.rings);
  }

  #start(index: number): DataPlaneWorker {
    const o = this.#o;
    const data: WorkerInit = {
      index,
      hypervisor: o.provider.spec(index),
      budget: o.budget.buffer,
      maxInflight: o.budget.limit,
      fairShare: o.fairShare.buffer as SharedArrayBuffer,
      quantum: o.quantum,
    };
    const worker = new Worker(new URL('./data-plane-worker.js', import.meta.url), { workerData: data, name: `blkback data plane ${index}` });
    let ready!: () => void;
    let failed!: (err: unknown) => void;
    const readyPromise = new Promise<void>((resolve, reject) => {
      ready = resolve;
      failed = reject;
    });
    readyPromise.catch(() => undefined);
    const w = new DataPlaneWorker(index, worker, readyPromise);
    worker.on('message', (m: FromWorker) => this.#onMessage(w, m, ready));
    worker.on('error', (err) => this.#lost(w, `data-plane worker ${index} failed: ${err.message}`, failed));
    worker.on('exit', (code) => this.#lost(w, `data-plane worker ${index} exited (code ${code})`, failed));
    return w;
  }

  #onMessage(w: DataPlaneWorker, m: FromWorker, ready: () => void): void {
    switch (m.t) {
      case 'ready':
        w.tid = m.tid;
        ready();
        return;
      case 'attached':
        w.attaching.get(m.id)?.resolve();
        w.attaching.delete(m.id);
        return;
      case 'attach-failed':
        w.attaching.get(m.id)?.reject(fromWireError(m.error));
        w.attaching.delete(m.id);
        return;
      case 'stopped':
        w.stopping.get(m.id)?.();
        w.stopping.delete(m.id);
        return;
      case 'log':
        if (m.error) this.#o.logError(m.line);
        else this.#o.log(m.line);
        return;
      case 'io':
        this.#proxies.run(m, (error) => w.post(error === undefined ? { t: 'io-done', req: m.req } : { t: 'io-done', req: m.req, error }));
        return;
      case 'memory':
        w.memory.get(m.req)?.(m.bytes);
        w.memory.delete(m.req);
        return;
      case 'device-done':
        w.updating.get(m.req)?.();
        w.updating.delete(m.req);
        return;
      case 'closed':
        w.closed?.();
        return;
    }
  }

  /** A worker is gone: its rings are served no more (they read as halted to nobody's benefit: say so). */
  #lost(w: DataPlaneWorker, why: string, failed: (err: unknown) => void): void {
    if (w.dead !== undefined) return;
    w.dead = why;
    failed(new BlockError('BLK_ERR_IO', why));
    if (this.#closing === undefined) this.#o.logError(why);
    for (const waiter of w.attaching.values()) waiter.reject(new BlockError('BLK_ERR_IO', why));
    w.attaching.clear();
    for (const done of w.stopping.values()) done();
    w.stopping.clear();
    for (const done of w.updating.values()) done();
    w.updating.clear();
    w.closed?.();
  }

  /**
   * Each worker's own memory (its heap and external buffers; after a full collection where the
   * process has gc exposed): what the data plane keeps, which the main thread's figures do not show.
   */
  async memory(): Promise<number[]> {
    return Promise.all(
      this.#pool.map((w): Promise<number> => {
        if (w.dead !== undefined) return Promise.resolve(0);
        const req = this.#nextId++;
        return new Promise<number>((resolve) => {
          w.memory.set(req, resolve);
          w.post({ t: 'memory', req });
        });
      }),
    );
  }

  #pick(place: RingPlace): DataPlaneWorker {
    const pinned = this.#o.placeRing?.({ frontendDomid: place.frontendDomid, devid: place.devid, queue: place.queue, queues: place.queues });
    if (pinned !== undefined) {
      const w = this.#pool[pinned];
      if (w === undefined || !Number.isInteger(pinned))
        throw new BlockError('BLK_ERR_CONFIG', `ring placement: there is no data-plane worker ${pinned} (0..${this.#pool.length - 1})`);
      if (w.dead !== undefined) throw new BlockError('BLK_ERR_IO', w.dead);
      return w;
    }
    let best: DataPlaneWorker | undefined;
    for (const w of this.#pool) {
      if (w.dead !== undefined) continue;
      if (best === undefined || w.rings < best.rings) best = w;
    }
    if (best === undefined) throw new BlockError('BLK_ERR_IO', 'no data-plane worker is running');
    return best;
  }

  #deviceRef(device: BlockDevice): { ref: DeviceRef; proxy: number | null } {
    const spec = device.share?.();
    if (spec !== undefined) return { ref: { kind: 'shared', spec, info: device.info }, proxy: null };
    const dev = this.#proxies.add(device);
    return { ref: { kind: 'proxy', dev, name: device.name, info: device.info }, proxy: dev };
  }

  async attach(spec: RingSpec): Promise<ServedRing> {
    if (this.#closing !== undefined) throw new BlockError('BLK_ERR_IO', 'the backend is stopping');
    await this.ready();
    const w = this.#pick(spec);
    const domain = this.#o.provider.domain(spec.frontendDomid);
    const { ref, proxy } = this.#deviceRef(spec.device);
    const id = this.#nextId++;
    const stats = new VbdStats();
    w.rings++;
    try {
      await new Promise<void>((resolve, reject) => {
        w.attaching.set(id, { resolve, reject });
        w.post({
          t: 'attach',
          id,
          frontendDomid: spec.frontendDomid,
          refs: [...spec.refs],
          port: spec.port,
          abi: spec.abi,
          readOnly: spec.readOnly,
          discard: spec.discard,
          maxIndirectSegments: spec.maxIndirectSegments,
          dataPath: spec.dataPath,
          name: spec.name,
          domain,
          device: ref,
          stats: stats.buffer,
        });
      });
    } catch (err) {
      w.rings--;
      if (proxy !== null) this.#proxies.remove(proxy);
      throw err;
    }
    const ring = new WorkerRing(w, id, spec, stats, proxy, (r) => {
      if (!this.#rings.delete(r.id)) return;
      w.rings--;
      if (r.proxy !== null) this.#proxies.remove(r.proxy);
    });
    this.#rings.set(id, ring);
    return ring;
  }

  /** Resolves once every worker serving a ring of `device` has its new description (before the frontend is told). */
  async deviceChanged(device: BlockDevice): Promise<void> {
    let ref: DeviceRef | undefined;
    const acks: Promise<void>[] = [];
    for (const ring of this.#rings.values()) {
      if (ring.device !== device) continue;
      const w = this.#pool[ring.worker]!;
      if (w.dead !== undefined) continue;
      let changed: DeviceRef;
      if (ring.proxy !== null) changed = { kind: 'proxy', dev: ring.proxy, name: device.name, info: device.info };
      else changed = ref ??= { kind: 'shared', spec: device.share!(), info: device.info };
      const req = this.#nextId++;
      acks.push(new Promise<void>((resolve) => w.updating.set(req, resolve)));
      w.post({ t: 'device', req, ids: [ring.id], device: changed });
    }
    await Promise.all(acks);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all(
        this.#pool.map(async (w) => {
          if (w.dead !== undefined) return;
          const closed = new Promise<void>((resolve) => (w.closed = resolve));
          w.post({ t: 'close' });
          await Promise.race([closed, new Promise<void>((resolve) => setTimeout(resolve, 5000).unref())]);
          await w.worker.terminate();
        }),
      );
    })();
    return this.#closing;
  }
}
