// The guest's half of the xenbus handshake for one block device, in Linux xen-blkfront's order
// (talk_to_blkback, blkback_changed, blkfront_connect):
//
//   frontend                                   backend (state key)
//   Initialising ─────────────────────────────► InitWait, max-ring-page-order[, multi-queue-max-queues]
//   grant each queue's ring, allocate its event channel
//   ring-page-order, [multi-queue-num-queues], per queue ring-ref*/event-channel, protocol,
//   feature-persistent (one transaction)
//   Initialised ──────────────────────────────► maps, binds; sectors, features ... Connected
//   read the disk and its features; Connected
//   Closing ──────────────────────────────────► Closing;  Closed ─────► Closed
//
// Ring I/O is not here (ring-client.ts): this module leaves each queue's granted ring and event
// channel to whoever serves it. connectFrontend asks for min(wanted, multi-queue-max-queues)
// queues (Linux negotiate_mq), at least one.
import { SECTOR_SIZE } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { frontRingInit, SharedRing } from '../blkif/ring.ts';
import type { EventChannel, GuestHypervisor, XenstoreClient } from '../hypervisor/types.ts';
import { BlockError } from '../internal/errors.ts';
import { frontendDir, queueDir, ringRefKey, VbdKey } from '../xenbus/device-paths.ts';
import { parseXenbusState, XenbusState } from '../xenbus/state.ts';
import { endAccessOrRetry } from './end-access.ts';

const PROTOCOL_NAME: Record<BlkifAbi, string> = { x86_64: 'x86_64-abi', x86_32: 'x86_32-abi' };

/** What the backend allows before the rings exist (it writes these before InitWait). */
export interface RingLimits {
  /** Largest ring as 2^order pages (0 when the backend says nothing: one page). */
  readonly maxRingPageOrder: number;
  /** Queues (rings) the backend serves per device (1 when it says nothing). */
  readonly maxQueues: number;
}

/** The disk and what the backend offers, read once it is Connected. */
export interface BackendDisk {
  /** Size in 512-byte units, whatever sectorSize says. */
  readonly sectors: number;
  readonly sectorSize: number;
  readonly physicalSectorSize: number;
  /** VDISK_* flags. */
  readonly info: number;
  readonly flushCache: boolean;
  readonly barrier: boolean;
  readonly discard: boolean;
  /** 0 without discard. */
  readonly discardGranularity: number;
  /** Segments per indirect request the backend accepts (0: no indirect requests). */
  readonly maxIndirectSegments: number;
  /** The backend keeps grants mapped (feature-persistent): used only if we offered it too. */
  readonly persistent: boolean;
}

/** One queue's shared ring as granted to the backend, with the event channel it is notified on. */
export interface GrantedRing {
  /** First of `pages` contiguous guest frames. */
  readonly frame: number;
  readonly pages: number;
  readonly refs: readonly number[];
  readonly sring: SharedRing;
  readonly events: EventChannel;
}

/**
 * Allocates 2^order zeroed pages, grants each to the backend, lays a front ring over them and
 * allocates an unbound event channel for the backend to bind (Linux setup_blkring). Undoes its
 * work if it cannot finish.
 */
export function grantRing(hv: GuestHypervisor, backendId: number, order: number, abi: BlkifAbi, name: string): GrantedRing {
  const pages = 1 << order;
  const frame = hv.memory.allocPages(pages);
  if (frame < 0) throw new BlockError('BLK_ERR_NOMEM', `${name}: no guest memory for a ${pages}-page ring`);
  const refs: number[] = [];
  const views: Uint8Array[] = [];
  const undo = (): void => {
    for (const ref of refs) hv.grants.endAccess(ref); // not published yet: nobody has them mapped
    hv.memory.freePages(frame, pages);
  };
  for (let i = 0; i < pages; i++) {
    views.push(hv.memory.view(frame + i, 1).fill(0));
    const ref = hv.grants.grantAccess(backendId, frame + i, false);
    if (ref < 0) {
      undo();
      throw new BlockError('BLK_ERR_NOGRANT', `${name}: grant table full while granting the ring`);
    }
    refs.push(ref);
  }
  const sring = new SharedRing(views, abi);
  frontRingInit(sring);
  let events: EventChannel;
  try {
    events = hv.events.allocUnbound(backendId);
  } catch (err) {
    undo();
    throw err;
  }
  return { frame, pages, refs, sring, events };
}

/**
 * Closes the ring's event channel and revokes its grants. The pages are freed only if the backend
 * let go of every one; a page it still maps must not be reused, so it is left allocated while the
 * revocation is retried.
 */
export function releaseRing(hv: GuestHypervisor, ring: GrantedRing): void {
  ring.events.close();
  let held = false;
  for (const ref of ring.refs) {
    if (hv.grants.endAccess(ref)) continue;
    held = true;
    endAccessOrRetry(hv.grants, ref);
  }
  if (!held) hv.memory.freePages(ring.frame, ring.pages);
}

/** What one queue publishes: its ring's grant refs and its event channel's port. */
export interface PublishedQueue {
  readonly refs: readonly number[];
  readonly eventChannel: number;
}

/**
 * The frontend's xenbus device: its directory, the backend it was given, and the state changes of
 * the handshake. Each step waits on the backend's `state` through a watch.
 */
export class XenbusFrontend {
  readonly name: string;
  readonly frontendPath: string;
  readonly backendPath: string;
  readonly backendId: number;
  readonly #xs: XenstoreClient;
  readonly #timeoutMs: number;
  readonly #tokenPrefix: string;
  #resizeWatched = false;

  private constructor(xs: XenstoreClient, frontendPath: string, backendPath: string, backendId: number, name: string, timeoutMs: number) {
    this.#xs = xs;
    this.frontendPath = frontendPath;
    this.backendPath = backendPath;
    this.backendId = backendId;
    this.name = name;
    this.#timeoutMs = timeoutMs;
    this.#tokenPrefix = `blkfront-${frontendPath.slice(frontendPath.lastIndexOf('/') + 1)}`;
  }

  /** The device at `frontendPath` and the backend the toolstack named for it. */
  static async open(xs: XenstoreClient, frontendPath: string, name: string, timeoutMs: number): Promise<XenbusFrontend> {
    const backend = await xs.tryRead(`${frontendPath}/${VbdKey.backend}`);
    if (backend === undefined) throw new BlockError('BLK_ERR_XENBUS', `${name}: ${frontendPath}/${VbdKey.backend} is missing (no such disk?)`);
    const backendId = Number((await xs.tryRead(`${frontendPath}/${VbdKey.backendId}`)) ?? '0');
    return new XenbusFrontend(xs, frontendPath, backend, backendId, name, timeoutMs);
  }

  /**
   * Announces a (re)start: a backend left Closed by an earlier frontend goes back to InitWait on
   * Initialising, and only InitWait means it is ready for our rings (Linux blkfront does the same).
   */
  async restart(): Promise<void> {
    await this.#setState(XenbusState.Initialising);
    await this.#waitBackend((s) => s === XenbusState.InitWait, 'InitWait', false);
  }

  async readRingLimits(): Promise<RingLimits> {
    const order = Number((await this.#xs.tryRead(`${this.backendPath}/${VbdKey.maxRingPageOrder}`)) ?? '0');
    const queues = Number((await this.#xs.tryRead(`${this.backendPath}/${VbdKey.multiQueueMaxQueues}`)) ?? '1');
    return {
      maxRingPageOrder: Number.isInteger(order) && order > 0 ? order : 0,
      maxQueues: Number.isInteger(queues) && queues > 1 ? queues : 1,
    };
  }

  /**
   * Publishes the rings in one transaction, laid out as Linux talk_to_blkback does: ring-page-order
   * (multi-page rings) and multi-queue-num-queues (several queues) in the device's directory, each
   * queue's ring-ref* and event-channel in its queue directory (the device's own with one queue),
   * the ABI in protocol, and feature-persistent = 1 if we offer persistent grants (Linux writes 0
   * or 1; an absent key reads as 0 on both sides, so here it is left out when not offered). Keys an
   * earlier connection left that would change the meaning of these are removed.
   */
  async publishRings(order: number, queues: readonly PublishedQueue[], abi: BlkifAbi, featurePersistent = false): Promise<void> {
    const xs = this.#xs;
    const fe = this.frontendPath;
    const pages = 1 << order;
    await xs.transaction(async (tx) => {
      const drop = (key: string): Promise<void> => xs.rm(`${fe}/${key}`, tx).catch(() => undefined);
      if (order > 0) await xs.write(`${fe}/${VbdKey.ringPageOrder}`, String(order), tx);
      else await drop(VbdKey.ringPageOrder);
      if (queues.length > 1) await xs.write(`${fe}/${VbdKey.multiQueueNumQueues}`, String(queues.length), tx);
      else await drop(VbdKey.multiQueueNumQueues);
      // Queue directories of an earlier connection with more queues (all of them, with one queue).
      for (const name of await xs.directory(fe, tx).catch(() => [] as string[])) {
        const m = /^queue-(\d+)$/.exec(name);
        if (m !== null && (queues.length <= 1 || Number(m[1]) >= queues.length)) await drop(name);
      }
      for (const [q, queue] of queues.entries()) {
        if (queue.refs.length !== pages) throw new Error(`UB: queue ${q} has ${queue.refs.length} ring refs for a ${pages}-page ring`);
        const dir = queueDir(fe, q, queues.length);
        for (let i = 0; i < pages; i++) await xs.write(`${dir}/${ringRefKey(i, order > 0)}`, String(queue.refs[i]), tx);
        await xs.write(`${dir}/${VbdKey.eventChannel}`, String(queue.eventChannel), tx);
      }
      await xs.write(`${fe}/${VbdKey.protocol}`, PROTOCOL_NAME[abi], tx);
      if (featurePersistent) await xs.write(`${fe}/${VbdKey.featurePersistent}`, '1', tx);
      else await drop(VbdKey.featurePersistent);
    });
  }

  /** Initialised: the rings are published; resolves once the backend has connected them. */
  async initialised(): Promise<void> {
    await this.#setState(XenbusState.Initialised);
    await this.#waitBackend((s) => s === XenbusState.Connected, 'Connected');
  }

  /** The disk as the backend describes it once Connected (Linux blkfront_connect, blkfront_gather_backend_features). */
  async readDisk(): Promise<BackendDisk> {
    const num = async (key: string, fallback: number): Promise<number> => {
      const path = `${this.backendPath}/${key}`;
      const text = await this.#xs.tryRead(path);
      const n = text === undefined ? fallback : Number(text);
      if (!Number.isFinite(n) || n < 0) throw new BlockError('BLK_ERR_XENBUS', `${this.name}: ${path} = '${text}' is not a number`);
      return n;
    };
    const sectorSize = await num(VbdKey.sectorSize, SECTOR_SIZE);
    const discard = (await num(VbdKey.featureDiscard, 0)) === 1;
    return {
      sectors: await num(VbdKey.sectors, 0),
      sectorSize,
      physicalSectorSize: await num(VbdKey.physicalSectorSize, sectorSize),
      info: await num(VbdKey.info, 0),
      flushCache: (await num(VbdKey.featureFlushCache, 0)) === 1,
      barrier: (await num(VbdKey.featureBarrier, 0)) === 1,
      discard,
      discardGranularity: discard ? await num(VbdKey.discardGranularity, sectorSize) : 0,
      maxIndirectSegments: await num(VbdKey.featureMaxIndirectSegments, 0),
      persistent: (await num(VbdKey.featurePersistent, 0)) === 1,
    };
  }

  /** Connected: the frontend is ready for I/O. */
  connected(): Promise<void> {
    return this.#setState(XenbusState.Connected);
  }

  /**
   * The backend announces a resize by rewriting `sectors` and `state` (Connected again):
   * `onSectors` gets each size read while the backend is Connected.
   */
  async watchResize(onSectors: (sectors: number) => void): Promise<void> {
    const xs = this.#xs;
    const be = this.backendPath;
    this.#resizeWatched = true;
    await xs.watch(`${be}/${VbdKey.state}`, this.#resizeToken, () => {
      void (async () => {
        const state = parseXenbusState(await xs.tryRead(`${be}/${VbdKey.state}`).catch(() => undefined));
        if (state !== XenbusState.Connected || !this.#resizeWatched) return;
        const text = await xs.tryRead(`${be}/${VbdKey.sectors}`).catch(() => undefined);
        const sectors = Number(text);
        if (text !== undefined && Number.isSafeInteger(sectors) && sectors >= 0 && this.#resizeWatched) onSectors(sectors);
      })();
    });
  }

  /**
   * Closing, then Closed, each after the backend follows (it drains its rings first). A backend
   * directory the toolstack already removed (state unreadable: Unknown) is as good as Closed; a
   * backend that does not answer within the timeout is given up on.
   */
  async close(): Promise<void> {
    if (this.#resizeWatched) {
      this.#resizeWatched = false;
      await this.#xs.unwatch(`${this.backendPath}/${VbdKey.state}`, this.#resizeToken).catch(() => undefined);
    }
    await this.#setState(XenbusState.Closing);
    await this.#waitBackend((s) => s >= XenbusState.Closing, 'Closing').catch(() => XenbusState.Closing);
    await this.#setState(XenbusState.Closed);
    await this.#waitBackend((s) => s === XenbusState.Closed || s === XenbusState.Unknown, 'Closed').catch(() => XenbusState.Closed);
  }

  get #resizeToken(): string {
    return `${this.#tokenPrefix}-backend`;
  }

  #setState(state: number): Promise<void> {
    return this.#xs.write(`${this.frontendPath}/${VbdKey.state}`, String(state));
  }

  /** Waits for the backend's state to satisfy `done`; Closing/Closed meanwhile is an error when `failOnClose`. */
  #waitBackend(done: (state: number) => boolean, what: string, failOnClose = true): Promise<number> {
    const xs = this.#xs;
    const path = `${this.backendPath}/${VbdKey.state}`;
    const token = `${this.#tokenPrefix}-${what}`;
    return new Promise<number>((resolve, reject) => {
      let finished = false;
      const finish = (err: BlockError | null, state = 0): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        void xs.unwatch(path, token).catch(() => undefined);
        if (err === null) resolve(state);
        else reject(err);
      };
      const timer = setTimeout(
        () => finish(new BlockError('BLK_ERR_TIMEOUT', `${this.name}: backend ${this.backendPath} did not reach ${what} within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      void xs
        .watch(path, token, () => {
          void xs.tryRead(path).then(
            (text) => {
              const state = parseXenbusState(text);
              if (done(state)) finish(null, state);
              else if (failOnClose && (state === XenbusState.Closing || state === XenbusState.Closed)) {
                finish(new BlockError('BLK_ERR_XENBUS', `${this.name}: backend went to state ${state} while we waited for ${what}`));
              }
            },
            () => undefined,
          );
        })
        .catch((err: unknown) => finish(new BlockError('BLK_ERR_XENBUS', `${this.name}: cannot watch ${path}: ${String(err)}`)));
    });
  }
}

export interface ConnectOptions {
  readonly abi: BlkifAbi;
  /** Wanted ring size as 2^order pages, capped by the backend's max-ring-page-order. */
  readonly ringPageOrder: number;
  /** Wanted queues (rings), capped by the backend's multi-queue-max-queues (default 1). */
  readonly queues?: number;
  /** Offer persistent grants (feature-persistent; default false here, true in Blkfront as in Linux). */
  readonly persistentGrants?: boolean;
  readonly timeoutMs: number;
}

/** A device through the handshake: Connected on both sides, its rings granted and bound. */
export interface FrontendConnection {
  readonly xenbus: XenbusFrontend;
  readonly ringPageOrder: number;
  /** One per queue. */
  readonly rings: readonly GrantedRing[];
  readonly disk: BackendDisk;
  /** Both sides offered feature-persistent: data goes through a pool of persistently granted pages. */
  readonly persistent: boolean;
}

/**
 * The whole handshake for device `devid` of this guest, up to Connected, with
 * min(wanted queues, the backend's multi-queue-max-queues) rings, each of 2^order pages. On failure
 * the rings are released.
 */
export async function connectFrontend(hv: GuestHypervisor, devid: number, name: string, options: ConnectOptions): Promise<FrontendConnection> {
  const xenbus = await XenbusFrontend.open(hv.xenstore, frontendDir(hv.domid, devid), name, options.timeoutMs);
  await xenbus.restart();
  const limits = await xenbus.readRingLimits();
  const order = Math.max(0, Math.min(options.ringPageOrder, limits.maxRingPageOrder));
  const wanted = options.queues !== undefined && Number.isSafeInteger(options.queues) && options.queues > 1 ? options.queues : 1;
  const queues = Math.min(wanted, limits.maxQueues);
  const rings: GrantedRing[] = [];
  try {
    for (let q = 0; q < queues; q++) rings.push(grantRing(hv, xenbus.backendId, order, options.abi, name));
    await xenbus.publishRings(
      order,
      rings.map((r) => ({ refs: r.refs, eventChannel: r.events.localPort })),
      options.abi,
      options.persistentGrants === true,
    );
    await xenbus.initialised();
    const disk = await xenbus.readDisk();
    await xenbus.connected();
    return { xenbus, ringPageOrder: order, rings, disk, persistent: options.persistentGrants === true && disk.persistent };
  } catch (err) {
    for (const ring of rings) releaseRing(hv, ring);
    throw err;
  }
}
