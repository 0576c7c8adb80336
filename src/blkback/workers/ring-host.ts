// Where a ring is served. A Vbd (the control plane: xenstore, the handshake) reads what the frontend
// published and asks its RingHost to serve each queue's ring; it gets back a handle to kick, stop and
// read. Two hosts:
//
//   InlineRingHost   the ring server runs on the calling (main) thread, as blkback always did:
//                    `workers: 0`
//   WorkerRingHost   (worker-ring-host.ts) each ring goes to one of N data-plane worker threads,
//                    which maps it, binds its event channel and serves it there: `workers: N`
//
// Either way a ring counts into a statistics block of its own (stats.ts VbdStats, shared memory the
// main thread reads as it is), draws on the backend's one in-flight budget, and its domain's one
// fair-share account.
import type { BlkifAbi } from '../../blkif/constants.ts';
import { SharedRing } from '../../blkif/ring.ts';
import type { BlockDevice } from '../../block/types.ts';
import type { BackendHypervisor, EventChannel, GrantMapping } from '../../hypervisor/types.ts';
import type { FairShare } from '../fair-share.ts';
import { InflightBudget } from '../inflight-budget.ts';
import { RingServer } from '../ring-server.ts';
import type { DataPath } from '../ring-server.ts';
import { VbdStats } from '../stats.ts';

/** Which ring of which disk: what a placement rule (BlkbackOptions.placeRing) is told. */
export interface RingPlace {
  readonly frontendDomid: number;
  readonly devid: number;
  /** The queue (0-based) of `queues`. */
  readonly queue: number;
  readonly queues: number;
}

/** One queue's ring as the frontend published it, and how to serve it. */
export interface RingSpec extends RingPlace {
  /** The ring's grant refs (1 << ring-page-order of them). */
  readonly refs: readonly number[];
  /** The frontend's event-channel port. */
  readonly port: number;
  readonly abi: BlkifAbi;
  /** The store, as the main thread opened it. */
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly discard: boolean;
  readonly maxIndirectSegments: number;
  readonly dataPath: DataPath;
  /** For messages, e.g. "vbd 3/51712 queue 1". */
  readonly name: string;
}

/** A ring being served. */
export interface ServedRing {
  /** Its counters (the main thread reads them as they are). */
  readonly stats: VbdStats;
  readonly dataPath: DataPath;
  /** Requests taken and not yet answered. */
  readonly inflight: number;
  /** The frontend broke the ring protocol: nothing more is taken from it. */
  readonly halted: boolean;
  /** Persistent grants kept mapped (from a worker: as it last published, at most a quarter second old). */
  readonly grantsKept: number;
  /** The data-plane worker serving it (-1: the main thread). */
  readonly worker: number;
  /** Served by a worker whose store stays on the main thread (not shareable: iscsi://, ...): its requests cross threads. */
  readonly proxied: boolean;
  /** Look for requests (they may be waiting from before the connection). */
  kick(): void;
  /** Takes no more requests, answers those in flight, then unmaps the ring and closes its event channel. */
  stop(): Promise<void>;
}

export interface RingHost {
  /** Maps the ring, binds its event channel and serves it. Throws (nothing left mapped or bound) if it cannot. */
  attach(spec: RingSpec): Promise<ServedRing>;
  /** The store behind rings already served changed (resize): they see its new description. */
  deviceChanged(device: BlockDevice): Promise<void>;
  /** Data-plane worker threads (0: rings are served on the main thread). */
  readonly workers: number;
  /** Lets go of the threads, once every ring has stopped. */
  close(): Promise<void>;
}

/**
 * A ring's view of the backend's budget: the same count (`inner`), plus the ring's own requests in
 * flight, kept in its statistics block so any thread can read it.
 */
export class RingBudget extends InflightBudget {
  readonly #inner: InflightBudget;
  readonly #stats: VbdStats;

  constructor(inner: InflightBudget, stats: VbdStats) {
    super(inner.limit);
    this.#inner = inner;
    this.#stats = stats;
  }

  override get used(): number {
    return this.#inner.used;
  }

  override tryAcquire(): boolean {
    if (!this.#inner.tryAcquire()) return false;
    this.#stats.inflight++;
    return true;
  }

  override release(): void {
    this.#stats.inflight--;
    this.#inner.release();
  }

  override waitForRoom(kick: () => void): void {
    this.#inner.waitForRoom(kick);
  }
}

export interface InlineRingHostOptions {
  readonly hv: BackendHypervisor;
  readonly budget: InflightBudget;
  readonly fairShare: FairShare;
  readonly logError: (message: string) => void;
}

/** Rings served on this thread (`workers: 0`). */
export class InlineRingHost implements RingHost {
  readonly workers = 0;
  readonly #o: InlineRingHostOptions;

  constructor(options: InlineRingHostOptions) {
    this.#o = options;
  }

  async attach(spec: RingSpec): Promise<ServedRing> {
    const { hv } = this.#o;
    const mapping = hv.grants.map(spec.frontendDomid, spec.refs, spec.refs.length, true);
    let events: EventChannel;
    try {
      events = hv.events.bindInterdomain(spec.frontendDomid, spec.port);
    } catch (err) {
      mapping.unmap();
      throw err;
    }
    try {
      return new InlineRing(spec, mapping, events, this.#o);
    } catch (err) {
      events.close();
      mapping.unmap();
      throw err;
    }
  }

  async deviceChanged(): Promise<void> {
    // The ring servers hold the device itself: they see its new size already.
  }

  async close(): Promise<void> {}
}

class InlineRing implements ServedRing {
  readonly stats = new VbdStats();
  readonly dataPath: DataPath;
  readonly worker = -1;
  readonly proxied = false;
  readonly #server: RingServer;
  readonly #mapping: GrantMapping;
  readonly #events: EventChannel;
  #stopped: Promise<void> | undefined;

  constructor(spec: RingSpec, mapping: GrantMapping, events: EventChannel, o: InlineRingHostOptions) {
    this.#mapping = mapping;
    this.#events = events;
    this.dataPath = spec.dataPath;
    this.#server = new RingServer({
      ring: new SharedRing(mapping.pages, spec.abi),
      abi: spec.abi,
      frontendDomid: spec.frontendDomid,
      grants: o.hv.grants,
      events,
      device: spec.device,
      readOnly: spec.readOnly,
      discard: spec.discard,
      maxIndirectSegments: spec.maxIndirectSegments,
      dataPath: spec.dataPath,
      stats: this.stats,
      budget: new RingBudget(o.budget, this.stats),
      fairShare: o.fairShare,
      name: spec.name,
      logError: o.logError,
    });
  }

  get inflight(): number {
    return this.#server.inflight;
  }

  get halted(): boolean {
    return this.#server.halted;
  }

  get grantsKept(): number {
    return this.#server.persistentGrants;
  }

  kick(): void {
    this.#server.kick();
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#server.stop().then(() => {
      this.#events.close();
      this.#mapping.unmap();
    });
    return this.#stopped;
  }
}
