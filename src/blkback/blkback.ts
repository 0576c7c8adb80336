// The backend service: owns /local/domain/<self>/backend/<kind> (vbd unless told otherwise),
// creating a Vbd for each <frontend-domid>/<devid> the toolstack writes there and tearing it down
// when the directory goes.
import type { BackendHypervisor } from '../hypervisor/types.ts';
import { BlockError } from '../internal/errors.ts';
import { RateLimitedLog } from '../stats/rate-limited-log.ts';
import { InflightBudget } from './inflight-budget.ts';
import { FairShare } from './fair-share.ts';
import { MAX_INDIRECT_SEGMENTS, TURN_COST } from './ring-server.ts';
import type { DataPath } from './ring-server.ts';
import { MAX_RING_PAGE_ORDER, Vbd } from './vbd.ts';
import type { DeviceOpener, VbdContext } from './vbd.ts';

export interface BlkbackOptions {
  readonly open: DeviceOpener;
  /** Largest ring the frontend may use, as 2^order pages (0..4; default 4). */
  readonly maxRingPageOrder?: number;
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
    const backendKind = options.backendKind ?? 'vbd';
    if (!isBackendKind(backendKind)) throw new BlockError('BLK_ERR_CONFIG', `backend kind '${backendKind}' is not a xenstore directory name (a-z, 0-9, _ and -, a letter first)`);
    this.backendKind = backendKind;
    const log = options.log ?? (() => undefined);
    // Protocol errors are rate-limited so a hostile guest cannot flood the log.
    this.#errors = new RateLimitedLog(log, 20, 5000);
    this.#ctx = {
      hv,
      open: options.open,
      budget: new InflightBudget(options.maxInflight ?? 4096),
      fairShare: new FairShare(TURN_COST),
      maxIndirectSegments: Math.max(0, Math.min(MAX_INDIRECT_SEGMENTS, options.maxIndirectSegments ?? MAX_INDIRECT_SEGMENTS)),
      dataPath: options.dataPath ?? 'map',
      maxRingPageOrder: Math.min(MAX_RING_PAGE_ORDER, Math.max(0, options.maxRingPageOrder ?? MAX_RING_PAGE_ORDER)),
      backendKind,
      log,
      logError: (message) => this.#errors.log(message),
    };
    this.#root = `/local/domain/${hv.domid}/backend/${backendKind}`;
  }

  async start(): Promise<void> {
    const xs = this.#hv.xenstore;
    await xs.mkdir(this.#root);
    await xs.watch(this.#root, 'blkback', () => void this.#scan());
  }

  /** Devices currently served, keyed "<domid>/<devid>". */
  get vbds(): ReadonlyMap<string, Vbd> {
    return this.#vbds;
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
        const frontend = await xs.tryRead(`${this.#root}/${key}/frontend`);
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
  }

  stats(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [key, vbd] of this.#vbds) {
      out[key] = { state: vbd.state, abi: vbd.abi, ringPages: vbd.ringPages, inflight: vbd.inflight, halted: vbd.halted, ...vbd.stats.toJSON() };
    }
    return out;
  }
}
