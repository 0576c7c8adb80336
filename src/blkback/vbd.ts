// One virtual block device: the backend half of the xenbus handshake for
// /local/domain/0/backend/vbd/<frontend-domid>/<devid>, in the order Linux xen-blkback uses
// (protocol-notes §2): advertise multi-queue-max-queues and max-ring-page-order and go to InitWait;
// when the frontend is Initialised read its protocol, queue count, ring size and each queue's ring
// refs and event channel, map and bind one ring per queue, write the disk's description and
// features in one transaction, then Connected; Closing/Closed; reconnect; resize.
//
// Multi-queue (Linux connect_ring / read_per_ring_refs, blkif.h "Multiple Queues"):
//
//   frontend dir   protocol, ring-page-order (all queues), multi-queue-num-queues (absent: 1)
//     one queue:   ring-ref | ring-ref0..N, event-channel        in the frontend dir itself
//     N queues:    queue-0/{ring-ref*, event-channel} .. queue-(N-1)/...
//
// Each queue is its own RingServer (its own ring mapping and event channel), served by the
// backend's RingHost on the main thread or on a data-plane worker (workers/); each counts into a
// statistics block of its own that this Vbd sums (VbdStatsTotal), and all draw on the backend's one
// budget and share the domain's one FairShare account, so a guest gains no share by asking for more
// queues.
import { abiFromProtocol, SECTOR_SIZE, VDISK_READONLY } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import type { BlockDevice } from '../block/types.ts';
import type { BackendHypervisor } from '../hypervisor/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { backendDir, errorDir, queueDir, ringRefKey, VbdKey } from '../xenbus/device-paths.ts';
import { backendReaction, parseXenbusState, XenbusState, xenbusStateName } from '../xenbus/state.ts';
import type { InflightBudget } from './inflight-budget.ts';
import type { FairShare } from './fair-share.ts';
import type { DataPath } from './ring-server.ts';
import { VbdStatsTotal } from './stats.ts';
import type { RingHost, ServedRing } from './workers/ring-host.ts';

export const MAX_RING_PAGE_ORDER = 4; // 16 pages, 512 requests (Linux's default xen_blkif_max_ring_order)
/**
 * The most queues `maxQueues` may allow. Linux sets no bound of its own (its default is the number
 * of online CPUs); this one keeps a misconfigured backend from inviting a guest to make it map
 * thousands of rings.
 */
export const MAX_QUEUES_LIMIT = 256;

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
  /** Advertised as multi-queue-max-queues: rings a frontend may use per device (1..MAX_QUEUES_LIMIT). */
  readonly maxQueues: number;
  /** Advertised as feature-max-indirect-segments; 0 advertises none. */
  readonly maxIndirectSegments: number;
  readonly dataPath: DataPath;
  /** Where rings are served: this thread, or data-plane workers (workers/ring-host.ts). */
  readonly rings: RingHost;
  /** The backend directory under /local/domain/<self>/backend ("vbd" unless serve was told otherwise). */
  readonly backendKind: string;
  readonly log: (message: string) => void;
  readonly logError: (message: string) => void;
}

export class Vbd {
  readonly frontendDomid: number;
  readonly devid: number;
  readonly backendPath: string;
  /** Counters summed over the rings of every connection (each ring counts into a block of its own: stats.ts). */
  readonly stats = new VbdStatsTotal();
  frontendPath = '';
  state: number = XenbusState.Initialising;
  abi: BlkifAbi | undefined;
  /** Pages of each ring (all queues' rings have the same size: ring-page-order is per device). */
  ringPages = 0;
  /** Queues (rings) of the current connection; 0 before the frontend connects. */
  queues = 0;
  /** Why the store in `params` could not be opened; the device then stays Closed. */
  openFailure: string | undefined;
  /** The frontend agreed to persistent grants (data path `persistent`) at the last connect. */
  persistentGrants = false;
  #ctx: VbdContext;
  #opened: OpenedDevice | null = null;
  #readOnly = false;
  #discard = false;
  /** One per queue of the current connection, in queue order. */
  #rings: ServedRing[] = [];
  #serial: Promise<void> = Promise.resolve();
  #watchToken = '';
  #removed = false;
  /** Stops the store's size-change notifications (stores that give them: onSizeChange). */
  #stopSizeWatch: (() => void) | undefined;
  /** The `sectors` last written for the frontend (-1: none yet). */
  #announcedSectors = -1;

  constructor(ctx: VbdContext, frontendDomid: number, devid: number) {
    this.#ctx = ctx;
    this.frontendDomid = frontendDomid;
    this.devid = devid;
    this.backendPath = backendDir(ctx.backendKind, frontendDomid, devid, ctx.hv.domid);
  }

  get name(): string {
    return `vbd ${this.frontendDomid}/${this.devid}`;
  }

  get device(): BlockDevice | null {
    return this.#opened?.device ?? null;
  }

  /** Requests in flight over every queue. */
  get inflight(): number {
    let n = 0;
    for (const r of this.#rings) n += r.inflight;
    return n;
  }

  /** How guest data moves on the current connection (null before the frontend connects); the same on every queue. */
  get dataPath(): DataPath | null {
    return this.#rings[0]?.dataPath ?? null;
  }

  /** Persistent grants kept mapped on the current connection, over every queue. */
  get grantsKept(): number {
    let n = 0;
    for (const r of this.#rings) n += r.grantsKept;
    return n;
  }

  /** Some queue's ring was halted (a frontend that broke the ring protocol on it). */
  get halted(): boolean {
    return this.#rings.some((r) => r.halted);
  }

  /** The rings of the current connection, in queue order (which thread serves each, their counters). */
  get servedRings(): readonly ServedRing[] {
    return this.#rings;
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
      await xs.write(`${errorDir(this.#ctx.backendKind, this.frontendDomid, this.devid, xs.domid)}/${VbdKey.error}`, message);
      await this.#disconnect();
      await this.#switchState(XenbusState.Closing);
    } catch {
      // The store may be gone (guest destroyed); nothing more to tell anyone.
    }
  }

  probe(): Promise<void> {
    return this.#enqueue(async () => {
      const xs = this.#ctx.hv.xenstore;
      const frontend = await xs.tryRead(`${this.backendPath}/${VbdKey.frontend}`);
      const params = await xs.tryRead(`${this.backendPath}/${VbdKey.params}`);
      const type = (await xs.tryRead(`${this.backendPath}/${VbdKey.type}`)) ?? 'phy';
      const mode = (await xs.tryRead(`${this.backendPath}/${VbdKey.mode}`)) ?? 'w';
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
      const opened = this.#opened.device;
      this.#stopSizeWatch = opened.onSizeChange?.(() => void this.#serial.then(() => this.#announceSize(opened)).catch(() => undefined));
      const info = opened.info;
      this.#readOnly ||= info.readOnly;
      const discardEnable = (await xs.tryRead(`${this.backendPath}/${VbdKey.discardEnable}`)) ?? '1';
      this.#discard = info.canDiscard && discardEnable !== '0' && !this.#readOnly;
      // Linux xen_blkbk_probe writes multi-queue-max-queues whatever its value, 1 included: a
      // frontend then knows the backend has heard of multi-queue and offers one ring.
      await xs.write(`${this.backendPath}/${VbdKey.multiQueueMaxQueues}`, String(this.#ctx.maxQueues));
      await xs.write(`${this.backendPath}/${VbdKey.maxRingPageOrder}`, String(this.#ctx.maxRingPageOrder));
      await this.#switchState(XenbusState.InitWait);
      this.#ctx.log(`${this.name}: ${type}:${params} (${info.size} bytes) waiting for frontend ${frontend}`);
      this.#watchToken = `vbd-${this.frontendDomid}-${this.devid}`;
      await xs.watch(`${frontend}/${VbdKey.state}`, this.#watchToken, () => void this.#enqueue(() => this.#frontendChanged()));
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
      await xs.write(`${errorDir(this.#ctx.backendKind, this.frontendDomid, this.devid, xs.domid)}/${VbdKey.error}`, `${errno} ${message}`);
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
    await this.#ctx.hv.xenstore.write(`${this.backendPath}/${VbdKey.state}`, String(state), tx);
  }

  async #frontendChanged(): Promise<void> {
    if (this.#removed) return;
    const xs = this.#ctx.hv.xenstore;
    const frontState = parseXenbusState(await xs.tryRead(`${this.frontendPath}/${VbdKey.state}`));
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

  /**
   * Reads what the frontend published, then maps each queue's ring and binds its event channel
   * (Linux connect_ring). Every key is read and checked before anything is mapped, so a bad value
   * in the last queue costs no mapping; a mapping that fails undoes the queues already set up.
   */
  async #connectRing(): Promise<void> {
    const xs = this.#ctx.hv.xenstore;
    const fe = this.frontendPath;
    const protocol = await xs.tryRead(`${fe}/${VbdKey.protocol}`);
    const abi = abiFromProtocol(protocol);
    if (abi === undefined) throw new BlockError('BLK_ERR_XENBUS', `${fe}/protocol: unknown protocol '${protocol}'`);
    const queues = await this.#readNumQueues(fe);
    const orderText = await xs.tryRead(`${fe}/${VbdKey.ringPageOrder}`);
    // ring-page-order is the device's, in the frontend's directory, for every queue (as Linux reads it).
    let order = -1; // -1: no ring-page-order, a one-page ring named by plain ring-ref
    if (orderText !== undefined) {
      order = parseUint(orderText, `${fe}/${VbdKey.ringPageOrder}`);
      if (order > this.#ctx.maxRingPageOrder) {
        throw new BlockError('BLK_ERR_XENBUS', `${fe}/ring-page-order ${order} is above max-ring-page-order ${this.#ctx.maxRingPageOrder}`);
      }
    }
    const published: { refs: number[]; port: number }[] = [];
    for (let q = 0; q < queues; q++) {
      const dir = queueDir(fe, q, queues);
      const refs: number[] = [];
      // Without ring-page-order read only ring-ref: a stale ring-ref0 from an earlier frontend must not count.
      if (order < 0) refs.push(await this.#readUint(`${dir}/${ringRefKey(0, false)}`));
      else for (let i = 0; i < 1 << order; i++) refs.push(await this.#readUint(`${dir}/${ringRefKey(i, true)}`));
      published.push({ refs, port: await this.#readUint(`${dir}/${VbdKey.eventChannel}`) });
    }
    // Persistent grants only when both sides want them (Linux connect_ring: our parameter and the
    // frontend's feature-persistent). Without them the persistent path copies: mapping and
    // unmapping every request's grants costs more (docs/xen-tcg.md).
    let dataPath = this.#ctx.dataPath;
    if (dataPath === 'persistent' && (await xs.tryRead(`${fe}/${VbdKey.featurePersistent}`)) !== '1') dataPath = 'copy';
    this.persistentGrants = dataPath === 'persistent';
    this.abi = abi;
    this.ringPages = order < 0 ? 1 : 1 << order;
    this.queues = queues;
    const device = this.#opened!.device;
    for (const [q, { refs, port }] of published.entries()) {
      // The ring host maps the ring, binds its channel and serves it, here or on a data-plane worker;
      // on a throw nothing of this ring stays, and the rings already in #rings are stopped and
      // unmapped by #fatal's #disconnect.
      const ring = await this.#ctx.rings.attach({
        frontendDomid: this.frontendDomid,
        devid: this.devid,
        queue: q,
        queues,
        refs,
        port,
        abi,
        device,
        readOnly: this.#readOnly,
        discard: this.#discard,
        maxIndirectSegments: this.#ctx.maxIndirectSegments,
        dataPath,
        name: queues > 1 ? `${this.name} queue ${q}` : this.name,
      });
      this.#rings.push(ring);
      this.stats.add(ring.stats);
    }
  }

  /**
   * multi-queue-num-queues: absent means one queue (a frontend without multi-queue). Zero, more than
   * we advertised, or not a number is a frontend we cannot serve: a xenbus error naming the key
   * (Linux connect_ring: "guest requested %u queues, exceeding the maximum"; Linux reads garbage as
   * 1, we refuse it as the other bad values).
   */
  async #readNumQueues(fe: string): Promise<number> {
    const path = `${fe}/${VbdKey.multiQueueNumQueues}`;
    const text = await this.#ctx.hv.xenstore.tryRead(path);
    if (text === undefined) return 1;
    const max = this.#ctx.maxQueues;
    const n = /^\d{1,10}$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
    if (!Number.isInteger(n) || n < 1 || n > max) {
      const what = Number.isInteger(n) ? `${n} queues` : `'${text}', which is not a number of queues`;
      throw new BlockError('BLK_ERR_XENBUS', `${path}: the frontend asked for ${what}; this backend serves 1 to ${max} (multi-queue-max-queues ${max})`);
    }
    return n;
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
      await xs.write(`${be}/${VbdKey.featureFlushCache}`, '1', tx);
      await xs.write(`${be}/${VbdKey.featureBarrier}`, '1', tx);
      if (this.#ctx.dataPath === 'persistent') await xs.write(`${be}/${VbdKey.featurePersistent}`, '1', tx);
      if (this.#ctx.maxIndirectSegments > 0) await xs.write(`${be}/${VbdKey.featureMaxIndirectSegments}`, String(this.#ctx.maxIndirectSegments), tx);
      if (this.#discard) {
        await xs.write(`${be}/${VbdKey.discardGranularity}`, String(info.discardGranularity || info.logicalBlockSize), tx);
        await xs.write(`${be}/${VbdKey.discardAlignment}`, '0', tx);
        await xs.write(`${be}/${VbdKey.discardSecure}`, '0', tx);
        await xs.write(`${be}/${VbdKey.featureDiscard}`, '1', tx);
      }
      // `sectors` is always in 512-byte units, as Linux writes it; sector-size only constrains alignment.
      this.#announcedSectors = Math.floor(info.size / SECTOR_SIZE);
      await xs.write(`${be}/${VbdKey.sectors}`, String(this.#announcedSectors), tx);
      await xs.write(`${be}/${VbdKey.info}`, String(this.#readOnly ? VDISK_READONLY : 0), tx);
      await xs.write(`${be}/${VbdKey.sectorSize}`, String(info.logicalBlockSize), tx);
      await xs.write(`${be}/${VbdKey.physicalSectorSize}`, String(info.physicalBlockSize), tx);
      await this.#switchState(XenbusState.Connected, tx);
    });
    const rings = this.queues > 1 ? `${this.queues} queues of ${this.ringPages}-page rings` : `${this.ringPages}-page ring`;
    this.#ctx.log(`${this.name}: connected (${rings}, ${this.abi} ABI${this.persistentGrants ? ', persistent grants' : ''})`);
    for (const r of this.#rings) r.kick(); // requests may already be waiting
  }

  /** Drains I/O in flight on every queue, then unmaps the rings and closes their event channels. Idempotent. */
  async #disconnect(): Promise<void> {
    const rings = this.#rings;
    if (rings.length === 0) return;
    this.#rings = [];
    await Promise.all(rings.map((r) => r.stop()));
    for (const r of rings) this.stats.retire(r.stats);
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
      await this.#announceSize(device);
    });
    this.#serial = run.catch(() => undefined);
    return run;
  }

  /** Rings and frontend learn the store's current size (after resize(), or a change made by someone else). */
  async #announceSize(device: BlockDevice): Promise<void> {
    const sectors = Math.floor(device.info.size / SECTOR_SIZE);
    if (this.#opened?.device !== device || sectors === this.#announcedSectors) return;
    this.#announcedSectors = sectors;
    await this.#ctx.rings.deviceChanged(device); // rings served on workers see the new size
    const xs = this.#ctx.hv.xenstore;
    await xs.transaction(async (tx) => {
      await xs.write(`${this.backendPath}/${VbdKey.sectors}`, String(sectors), tx);
      await xs.write(`${this.backendPath}/${VbdKey.state}`, String(this.state), tx);
    });
  }

  /** The toolstack removed the device (or the domain died): stop serving and release the store. */
  remove(): Promise<void> {
    return this.#enqueue(async () => {
      if (this.#removed) return;
      this.#removed = true;
      const xs = this.#ctx.hv.xenstore;
      if (this.#watchToken !== '') await xs.unwatch(`${this.frontendPath}/${VbdKey.state}`, this.#watchToken).catch(() => undefined);
      await this.#disconnect();
      this.#stopSizeWatch?.();
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
