// One virtual block device: the backend half of the xenbus handshake for
// /local/domain/0/backend/vbd/<frontend-domid>/<devid>, in the order Linux xen-blkback uses
// (protocol-notes §2): advertise max-ring-page-order and go to InitWait; when the frontend is
// Initialised read its ring refs, event channel and protocol, map and bind, write the disk's
// description and features in one transaction, then Connected; Closing/Closed; reconnect; resize.
import { abiFromProtocol, SECTOR_SIZE, VDISK_READONLY } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { SharedRing } from '../blkif/ring.ts';
import type { BlockDevice } from '../block/types.ts';
import type { BackendHypervisor, EventChannel, GrantMapping } from '../hypervisor/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { backendReaction, parseXenbusState, XenbusState, xenbusStateName } from '../xenbus/state.ts';
import type { InflightBudget } from './inflight-budget.ts';
import type { FairShare } from './fair-share.ts';
import { RingServer } from './ring-server.ts';
import type { DataPath } from './ring-server.ts';
import { VbdStats } from './stats.ts';

export const MAX_RING_PAGE_ORDER = 4; // 16 pages, 512 requests (Linux's default xen_blkif_max_ring_order)

/** Opens the store named by the toolstack's `type` and `params` keys. */
export type DeviceOpener = (request: {
  readonly type: string;
  readonly params: string;
  readonly readOnly: boolean;
  readonly frontendDomid: number;
  readonly devid: number;
}) => Promise<OpenedDevice>;

export interface OpenedDevice {
  readonly device: BlockDevice;
  release(): Promise<void>;
}

export interface VbdContext {
  readonly hv: BackendHypervisor;
  readonly open: DeviceOpener;
  readonly budget: InflightBudget;
  readonly fairShare: FairShare;
  readonly maxRingPageOrder: number;
  /** Advertised as feature-max-indirect-segments; 0 advertises none. */
  readonly maxIndirectSegments: number;
  readonly dataPath: DataPath;
  /** The backend directory under /local/domain/<self>/backend ("vbd" unless serve was told otherwise). */
  readonly backendKind: string;
  readonly log: (message: string) => void;
  readonly logError: (message: string) => void;
}

export class Vbd {
  readonly frontendDomid: number;
  readonly devid: number;
  readonly backendPath: string;
  readonly stats = new VbdStats();
  frontendPath = '';
  state: number = XenbusState.Initialising;
  abi: BlkifAbi | undefined;
  ringPages = 0;
  /** Why the store in `params` could not be opened; the device then stays Closed. */
  openFailure: string | undefined;
  /** The frontend agreed to persistent grants (data path `persistent`) at the last connect. */
  persistentGrants = false;
  #ctx: VbdContext;
  #opened: OpenedDevice | null = null;
  #readOnly = false;
  #discard = false;
  #server: RingServer | null = null;
  #ringMapping: GrantMapping | null = null;
  #events: EventChannel | null = null;
  #serial: Promise<void> = Promise.resolve();
  #watchToken = '';
  #removed = false;

  constructor(ctx: VbdContext, frontendDomid: number, devid: number) {
    this.#ctx = ctx;
    this.frontendDomid = frontendDomid;
    this.devid = devid;
    this.backendPath = `/local/domain/${ctx.hv.domid}/backend/${ctx.backendKind}/${frontendDomid}/${devid}`;
  }

  get name(): string {
    return `vbd ${this.frontendDomid}/${this.devid}`;
  }

  get device(): BlockDevice | null {
    return this.#opened?.device ?? null;
  }

  get inflight(): number {
    return this.#server?.inflight ?? 0;
  }

  /** How guest data moves on the current connection (null before the frontend connects). */
  get dataPath(): DataPath | null {
    return this.#server?.dataPath ?? null;
  }

  /** Persistent grants kept mapped on the current connection. */
  get grantsKept(): number {
    return this.#server?.persistentGrants ?? 0;
  }

  get halted(): boolean {
    return this.#server?.halted ?? false;
  }

  /** Runs handshake steps one at a time: watch events may arrive while a step awaits the store. */
  #enqueue(step: () => Promise<void>): Promise<void> {
    const run = this.#serial.then(step).catch((err: unknown) => this.#fatal(err));
    this.#serial = run;
    return run;
  }

  async #fatal(err: unknown): Promise<void> {
    const message = err instanceof Error ? err.message : String(err);
    this.#ctx.logError(`${this.name}: ${message}`);
    const xs = this.#ctx.hv.xenstore;
    try {
      // xenbus_dev_fatal: record the error where the toolstack looks, then give up on the device.
      await xs.write(`/local/domain/${xs.domid}/error/backend/${this.#ctx.backendKind}/${this.frontendDomid}/${this.devid}/error`, message);
      await this.#disconnect();
      await this.#switchState(XenbusState.Closing);
    } catch {
      // The store may be gone (guest destroyed); nothing more to tell anyone.
    }
  }

  probe(): Promise<void> {
    return this.#enqueue(async () => {
      const xs = this.#ctx.hv.xenstore;
      const frontend = await xs.tryRead(`${this.backendPath}/frontend`);
      const params = await xs.tryRead(`${this.backendPath}/params`);
      const type = (await xs.tryRead(`${this.backendPath}/type`)) ?? 'phy';
      const mode = (await xs.tryRead(`${this.backendPath}/mode`)) ?? 'w';
      if (frontend === undefined) throw new BlockError('BLK_ERR_XENBUS', `${this.backendPath}/frontend is missing`);
      if (params === undefined) throw new BlockError('BLK_ERR_XENBUS', `${this.backendPath}/params is missing`);
      this.frontendPath = frontend;
      this.#readOnly = mode !== 'w';
      try {
        this.#opened = await this.#ctx.open({ type, params, readOnly: this.#readOnly, frontendDomid: this.frontendDomid, devid: this.devid });
      } catch (err) {
        await this.#openFailed(err);
        return;
      }
      const info = this.#opened.device.info;
      this.#readOnly ||= info.readOnly;
      const discardEnable = (await xs.tryRead(`${this.backendPath}/discard-enable`)) ?? '1';
      this.#discard = info.canDiscard && discardEnable !== '0' && !this.#readOnly;
      await xs.write(`${this.backendPath}/max-ring-page-order`, String(this.#ctx.maxRingPageOrder));
      await this.#switchState(XenbusState.InitWait);
      this.#ctx.log(`${this.name}: ${type}:${params} (${info.size} bytes) waiting for frontend ${frontend}`);
      this.#watchToken = `vbd-${this.frontendDomid}-${this.devid}`;
      await xs.watch(`${frontend}/state`, this.#watchToken, () => void this.#enqueue(() => this.#frontendChanged()));
    });
  }

  /**
   * The store in `params` cannot be opened (the path policy refuses it, it does not exist, ...). As
   * Linux's xen-blkback when it cannot open the device (xenbus_dev_fatal "creating vbd structure"):
   * log, write "<errno> <message>" to error/backend/<kind>/<domid>/<devid>/error under our domain,
   * where toolstacks look, and go to Closing. Linux then waits for the frontend to close before
   * Closed; with no store and no ring there is nothing to wait for, so Closed follows at once and a
   * toolstack removing the device (libxl waits for Closed) is not held up. `openFailure` is set last,
   * once the store shows all of it.
   */
  async #openFailed(err: unknown): Promise<void> {
    const message = err instanceof Error ? err.message : String(err);
    const errno = err instanceof BlockError ? err.errno : Errno.EIO;
    this.#ctx.logError(`${this.name}: ${message}`);
    const xs = this.#ctx.hv.xenstore;
    try {
      await xs.write(`/local/domain/${xs.domid}/error/backend/${this.#ctx.backendKind}/${this.frontendDomid}/${this.devid}/error`, `${errno} ${message}`);
      await this.#switchState(XenbusState.Closing);
      await this.#switchState(XenbusState.Closed);
    } catch {
      // The store may be gone (guest destroyed); nothing more to tell anyone.
    } finally {
      this.openFailure = message;
    }
  }

  async #switchState(state: number, tx?: number): Promise<void> {
    this.state = state;
    await this.#ctx.hv.xenstore.write(`${this.backendPath}/state`, String(state), tx);
  }

  async #frontendChanged(): Promise<void> {
    if (this.#removed) return;
    const xs = this.#ctx.hv.xenstore;
    const frontState = parseXenbusState(await xs.tryRead(`${this.frontendPath}/state`));
    const action = backendReaction(this.state, frontState);
    switch (action) {
      case 'none':
        return;
      case 'connect':
        await this.#disconnect();
        await this.#connectRing();
        await this.#connect();
        return;
      case 'closing':
        await this.#switchState(XenbusState.Closing);
        return;
      case 'close':
        await this.#disconnect();
        await this.#switchState(XenbusState.Closed);
        return;
      case 'reinit':
        await this.#switchState(XenbusState.InitWait);
        return;
      case 'remove':
        await this.#disconnect();
        return;
      case 'fatal':
        throw new BlockError('BLK_ERR_XENBUS', `frontend in unexpected state ${xenbusStateName(frontState)}`);
    }
  }

  /** Reads what the frontend published, maps the ring and binds the event channel (Linux connect_ring). */
  async #connectRing(): Promise<void> {
    const xs = this.#ctx.hv.xenstore;
    const fe = this.frontendPath;
    const protocol = await xs.tryRead(`${fe}/protocol`);
    const abi = abiFromProtocol(protocol);
    if (abi === undefined) throw new BlockError('BLK_ERR_XENBUS', `${fe}/protocol: unknown protocol '${protocol}'`);
    const orderText = await xs.tryRead(`${fe}/ring-page-order`);
    let refs: number[];
    if (orderText === undefined) {
      // Without ring-page-order read only ring-ref: a stale ring-ref0 from an earlier frontend must not count.
      refs = [await this.#readUint(`${fe}/ring-ref`)];
    } else {
      const order = parseUint(orderText, `${fe}/ring-page-order`);
      if (order > this.#ctx.maxRingPageOrder) {
        throw new BlockError('BLK_ERR_XENBUS', `${fe}/ring-page-order ${order} is above max-ring-page-order ${this.#ctx.maxRingPageOrder}`);
      }
      refs = [];
      for (let i = 0; i < 1 << order; i++) refs.push(await this.#readUint(`${fe}/ring-ref${i}`));
    }
    const port = await this.#readUint(`${fe}/event-channel`);
    // Persistent grants only when both sides want them (Linux connect_ring: our parameter and the
    // frontend's feature-persistent). Without them the persistent path copies: mapping and
    // unmapping every request's grants costs more (docs/xen-tcg.md).
    let dataPath = this.#ctx.dataPath;
    if (dataPath === 'persistent' && (await xs.tryRead(`${fe}/feature-persistent`)) !== '1') dataPath = 'copy';
    this.persistentGrants = dataPath === 'persistent';
    const mapping = this.#ctx.hv.grants.map(this.frontendDomid, refs, refs.length, true);
    let events: EventChannel;
    try {
      events = this.#ctx.hv.events.bindInterdomain(this.frontendDomid, port);
    } catch (err) {
      mapping.unmap();
      throw err;
    }
    this.#ringMapping = mapping;
    this.#events = events;
    this.abi = abi;
    this.ringPages = refs.length;
    const ring = new SharedRing(mapping.pages, abi);
    const device = this.#opened!.device;
    this.#server = new RingServer({
      ring,
      abi,
      frontendDomid: this.frontendDomid,
      grants: this.#ctx.hv.grants,
      events,
      device,
      readOnly: this.#readOnly,
      discard: this.#discard,
      maxIndirectSegments: this.#ctx.maxIndirectSegments,
      dataPath,
      stats: this.stats,
      budget: this.#ctx.budget,
      fairShare: this.#ctx.fairShare,
      name: this.name,
      logError: this.#ctx.logError,
    });
  }

  async #readUint(path: string): Promise<number> {
    const text = await this.#ctx.hv.xenstore.tryRead(path);
    if (text === undefined) throw new BlockError('BLK_ERR_XENBUS', `${path} is missing`);
    return parseUint(text, path);
  }

  /** Advertises the disk and switches to Connected, in one transaction (Linux connect()). */
  async #connect(): Promise<void> {
    const xs = this.#ctx.hv.xenstore;
    const info = this.#opened!.device.info;
    const be = this.backendPath;
    await xs.transaction(async (tx) => {
      await xs.write(`${be}/feature-flush-cache`, '1', tx);
      await xs.write(`${be}/feature-barrier`, '1', tx);
      if (this.#ctx.dataPath === 'persistent') await xs.write(`${be}/feature-persistent`, '1', tx);
      if (this.#ctx.maxIndirectSegments > 0) await xs.write(`${be}/feature-max-indirect-segments`, String(this.#ctx.maxIndirectSegments), tx);
      if (this.#discard) {
        await xs.write(`${be}/discard-granularity`, String(info.discardGranularity || info.logicalBlockSize), tx);
        await xs.write(`${be}/discard-alignment`, '0', tx);
        await xs.write(`${be}/discard-secure`, '0', tx);
        await xs.write(`${be}/feature-discard`, '1', tx);
      }
      // `sectors` is always in 512-byte units, as Linux writes it; sector-size only constrains alignment.
      await xs.write(`${be}/sectors`, String(Math.floor(info.size / SECTOR_SIZE)), tx);
      await xs.write(`${be}/info`, String(this.#readOnly ? VDISK_READONLY : 0), tx);
      await xs.write(`${be}/sector-size`, String(info.logicalBlockSize), tx);
      await xs.write(`${be}/physical-sector-size`, String(info.physicalBlockSize), tx);
      await this.#switchState(XenbusState.Connected, tx);
    });
    this.#ctx.log(`${this.name}: connected (${this.ringPages}-page ring, ${this.abi} ABI${this.persistentGrants ? ', persistent grants' : ''})`);
    this.#server!.kick(); // requests may already be waiting
  }

  /** Drains I/O in flight, then unmaps the ring and closes the event channel. Idempotent. */
  async #disconnect(): Promise<void> {
    const server = this.#server;
    if (server === null) return;
    this.#server = null;
    await server.stop();
    this.#events?.close();
    this.#events = null;
    this.#ringMapping?.unmap();
    this.#ringMapping = null;
  }

  /** Tells the frontend the disk changed size: `sectors` and a rewrite of `state`, in one transaction. */
  resize(newSize: number): Promise<void> {
    const device = this.#opened?.device;
    if (device?.resize === undefined) {
      return Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', `${this.name}: the store (${device?.name ?? 'not open'}) cannot be resized`));
    }
    // A refused resize is the caller's error, not the device's: it must not tear the disk down.
    const run = this.#serial.then(async () => {
      await device.resize!(newSize);
      const xs = this.#ctx.hv.xenstore;
      await xs.transaction(async (tx) => {
        await xs.write(`${this.backendPath}/sectors`, String(Math.floor(device.info.size / SECTOR_SIZE)), tx);
        await xs.write(`${this.backendPath}/state`, String(this.state), tx);
      });
    });
    this.#serial = run.catch(() => undefined);
    return run;
  }

  /** The toolstack removed the device (or the domain died): stop serving and release the store. */
  remove(): Promise<void> {
    return this.#enqueue(async () => {
      if (this.#removed) return;
      this.#removed = true;
      const xs = this.#ctx.hv.xenstore;
      if (this.#watchToken !== '') await xs.unwatch(`${this.frontendPath}/state`, this.#watchToken).catch(() => undefined);
      await this.#disconnect();
      await this.#opened?.release();
      this.#opened = null;
    });
  }
}

function parseUint(text: string, path: string): number {
  if (!/^\d{1,10}$/.test(text.trim())) throw new BlockError('BLK_ERR_XENBUS', `${path}: '${text}' is not an unsigned integer`);
  const n = Number(text.trim());
  if (n > 0xffffffff) throw new BlockError('BLK_ERR_XENBUS', `${path}: ${n} does not fit in 32 bits`);
  return n;
}
