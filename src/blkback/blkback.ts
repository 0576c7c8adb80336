// The backend service: owns /local/domain/<self>/backend/<kind> (vbd unless told otherwise),
// creating a Vbd for each <frontend-domid>/<devid> the toolstack writes there and tearing it down
// when the directory goes.
import { availableParallelism } from 'node:os';
import type { BackendHypervisor } from '../hypervisor/types.ts';
import { BlockError } from '../internal/errors.ts';
import { RateLimitedLog } from '../stats/rate-limited-log.ts';
import { backendRoot, DEFAULT_BACKEND_KIND, VbdKey } from '../xenbus/device-paths.ts';
import { InflightBudget } from './inflight-budget.ts';
import { FairShare, FairShareTable } from './fair-share.ts';
import type { DataPlaneProvider } from './workers/data-plane.ts';
import { InlineRingHost } from './workers/ring-host.ts';
import type { RingHost, RingPlace } from './workers/ring-host.ts';
import { SharedInflightBudget } from './workers/shared-budget.ts';
import { MAX_WORKERS, WorkerRingHost } from './workers/worker-ring-host.ts';
import { MAX_INDIRECT_SEGMENTS, TURN_COST } from './ring-server.ts';
import type { DataPath } from './ring-server.ts';
import { MAX_QUEUES_LIMIT, MAX_RING_PAGE_ORDER, Vbd } from './vbd.ts';
import type { DeviceOpener, VbdContext } from './vbd.ts';

export interface BlkbackOptions {
  readonly open: DeviceOpener;
  /** Largest ring the frontend may use, as 2^order pages (0..4; default 4). */
  readonly maxRingPageOrder?: number;
  /**
   * Queues (rings) a frontend may use per device, advertised as multi-queue-max-queues (default:
   * this machine's CPU count, as Linux's xenblk_max_queues defaults to the online CPUs; 1: one
   * ring per device).
   */
  readonly maxQueues?: number;
  /** Segments per indirect request, advertised as feature-max-indirect-segments (default 256, as Linux; 0: none). */
  readonly maxIndirectSegments?: number;
  /** `map` (default; zero-copy into granted pages) or `copy` (grant copy through bounce pages; the default on real Xen). */
  readonly dataPath?: DataPath;
  /** Requests in flight across all rings before rings wait (default 4096). */
  readonly maxInflight?: number;
  /**
   * The backend directory this service owns (default "vbd", Linux xen-blkback's). Another name
   * ("blkback") lets it run beside the kernel's backend, each serving its own guests' disks.
   */
  readonly backendKind?: string;
  /**
   * Data-plane worker threads (default 0). 0: every ring is served on this (the main) thread, with
   * the control plane. N (1..64): rings are spread over N workers, each mapping its rings and
   * binding their event channels with a hypervisor handle of its own (`dataPlane`); this thread
   * keeps xenstore, the handshake and ctl. One worker already takes the data plane off the thread
   * that answers xenstore and ctl.
   */
  readonly workers?: number;
  /** How a worker gets its own hypervisor handle (required with workers > 0): workers/data-plane.ts. */
  readonly dataPlane?: DataPlaneProvider;
  /**
   * With workers: the worker (0-based) a ring is served on, or undefined for the least loaded (the
   * default for every ring). Like pinning a kernel backend's thread: rings put together share
   * their worker's time by the fair share; rings on different workers each have a thread.
   */
  readonly placeRing?: (ring: RingPlace) => number | undefined;
  readonly log?: (message: string) => void;
}

/** A backend directory name: one xenstore path element, as Linux names xenbus device types. */
export function isBackendKind(text: string): boolean {
  return /^[a-z][a-z0-9_-]{0,31}$/.test(text);
}

export class Blkback {
  readonly #hv: BackendHypervisor;
  readonly #ctx: VbdContext;
  readonly #vbds = new Map<string, Vbd>();
  readonly #root: string;
  readonly backendKind: string;
  #scanning = false;
  #rescan = false;
  #stopped = false;
  readonly #errors: RateLimitedLog;

  constructor(hv: BackendHypervisor, options: BlkbackOptions) {
    this.#hv = hv;
    const backendKind = options.backendKind ?? DEFAULT_BACKEND_KIND;
    if (!isBackendKind(backendKind))
      throw new BlockError('BLK_ERR_CONFIG', `backend kind '${backendKind}' is not a xenstore directory name (a-z, 0-9, _ and -, a letter first)`);
    this.backendKind = backendKind;
    const maxQueues = options.maxQueues ?? Math.min(MAX_QUEUES_LIMIT, availableParallelism());
    if (!Number.isInteger(maxQueues) || maxQueues < 1 || maxQueues > MAX_QUEUES_LIMIT) {
      throw new BlockError('BLK_ERR_CONFIG', `maxQueues ${maxQueues} is not a whole number in 1..${MAX_QUEUES_LIMIT}`);
    }
    const log = options.log ?? (() => undefined);
    // Protocol errors are rate-limited so a hostile guest cannot flood the log.
    this.#errors = new RateLimitedLog(log, 20, 5000);
    const logError = (message: string): void => this.#errors.log(message);
    const workers = options.workers ?? 0;
    if (!Number.isInteger(workers) || workers < 0 || workers > MAX_WORKERS) {
      throw new BlockError('BLK_ERR_CONFIG', `workers ${workers} is not a whole number in 0..${MAX_WORKERS}`);
    }
    const maxInflight = options.maxInflight ?? 4096;
    let budget: InflightBudget;
    let fairShare: FairShare;
    let rings: RingHost;
    if (workers === 0) {
      budget = new InflightBudget(maxInflight);
      fairShare = new FairShare(TURN_COST);
      rings = new InlineRingHost({ hv, budget, fairShare, logError });
    } else {
      if (options.dataPlane === undefined)
        throw new BlockError('BLK_ERR_CONFIG', `workers ${workers}: no way for a worker to reach the hypervisor (dataPlane)`);
      // The backend's budget and fair-share accounts, in memory every worker shares.
      const shared = new SharedInflightBudget(maxInflight);
      const table = FairShareTable.create();
      budget = shared;
      fairShare = new FairShare(TURN_COST, table);
      rings = new WorkerRingHost({
        workers,
        provider: options.dataPlane,
        budget: shared,
        fairShare: table,
        quantum: TURN_COST,
        ...(options.placeRing === undefined ? {} : { placeRing: options.placeRing }),
        log,
        logError,
      });
    }
    this.#ctx = {
      hv,
      open: options.open,
      budget,
      fairShare,
      rings,
      maxIndirectSegments: Math.max(0, Math.min(MAX_INDIRECT_SEGMENTS, options.maxIndirectSegments ?? MAX_INDIRECT_SEGMENTS)),
      dataPath: options.dataPath ?? 'map',
      maxRingPageOrder: Math.min(MAX_RING_PAGE_ORDER, Math.max(0, options.maxRingPageOrder ?? MAX_RING_PAGE_ORDER)),
      maxQueues,
      backendKind,
      log,
      logError,
    };
    this.#root = backendRoot(backendKind, hv.domid);
  }

  async start(): Promise<void> {
    if (this.#ctx.rings instanceof WorkerRingHost) await this.#ctx.rings.ready();
    const xs = this.#hv.xenstore;
    await xs.mkdir(this.#root);
    await xs.watch(this.#root, 'blkback', () => void this.#scan());
  }

  /** Devices currently served, keyed "<domid>/<devid>". */
  get vbds(): ReadonlyMap<string, Vbd> {
    return this.#vbds;
  }

  /** What multi-queue-max-queues says on every device. */
  get maxQueues(): number {
    return this.#ctx.maxQueues;
  }

  get budget(): InflightBudget {
    return this.#ctx.budget;
  }

  /** Watch events coalesce: one scan runs at a time, and a scan requested meanwhile runs after it. */
  async #scan(): Promise<void> {
    if (this.#scanning) {
      this.#rescan = true;
      return;
    }
    this.#scanning = true;
    try {
      do {
        this.#rescan = false;
        await this.#scanOnce();
      } while (this.#rescan && !this.#stopped);
    } finally {
      this.#scanning = false;
    }
  }

  async #scanOnce(): Promise<void> {
    if (this.#stopped) return;
    const xs = this.#hv.xenstore;
    const seen = new Set<string>();
    const domids = (await xs.directory(this.#root).catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
    for (const domid of domids) {
      const devids = (await xs.directory(`${this.#root}/${domid}`).catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
      for (const devid of devids) {
        const key = `${domid}/${devid}`;
        seen.add(key);
        if (this.#vbds.has(key)) continue;
        // The toolstack writes `state` last-ish; wait until the node has its frontend key.
        const frontend = await xs.tryRead(`${this.#root}/${key}/${VbdKey.frontend}`);
        if (frontend === undefined) {
          seen.delete(key);
          continue;
        }
        const vbd = new Vbd(this.#ctx, Number(domid), Number(devid));
        this.#vbds.set(key, vbd);
        void vbd.probe();
      }
    }
    for (const [key, vbd] of this.#vbds) {
      if (!seen.has(key)) {
        this.#vbds.delete(key);
        void vbd.remove();
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#hv.xenstore.unwatch(this.#root, 'blkback').catch(() => undefined);
    await Promise.all([...this.#vbds.values()].map((v) => v.remove()));
    this.#vbds.clear();
    await this.#ctx.rings.close();
  }

  /** Where rings are served (its `workers`: 0 on this thread). */
  get ringHost(): RingHost {
    return this.#ctx.rings;
  }

  stats(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [key, vbd] of this.#vbds) {
      out[key] = {
        state: vbd.state,
        abi: vbd.abi,
        queues: vbd.queues,
        ringPages: vbd.ringPages,
        inflight: vbd.inflight,
        halted: vbd.halted,
        // Which thread serves each queue's ring (-1: the main thread), and whether its store is reached through the main thread.
        rings: vbd.servedRings.map((r) => ({ worker: r.worker, proxied: r.proxied })),
        ...vbd.stats.toJSON(),
      };
    }
    return out;
  }
}
