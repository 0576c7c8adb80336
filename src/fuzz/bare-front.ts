// A bare blkif frontend for the fuzz campaign's hostile guest: it does the xenbus handshake itself
// (no Blkfront), puts whatever bytes it likes in ring slots, publishes any req_prod, and reads
// answers byte for byte. It can close its ring and connect a fresh one (new pages, new grants, new
// event channel, another ABI or size), which is how a campaign goes on after halting a ring on
// purpose. It trusts nothing the backend writes beyond rsp_prod.
import { ABI_LAYOUT } from '../blkif/constants.ts';
import type { BlkifAbi, BlkifLayout } from '../blkif/constants.ts';
import { frontRingInit, SharedRing } from '../blkif/ring.ts';
import type { EventChannel, GuestHypervisor } from '../hypervisor/types.ts';
import { frontendDir, ringRefKey, VbdKey } from '../xenbus/device-paths.ts';
import { XenbusState } from '../xenbus/state.ts';
import { waitForKey } from '../xenbus/wait-for-key.ts';

export { waitForKey };

const PROTOCOL: Record<BlkifAbi, string> = { x86_64: 'x86_64-abi', x86_32: 'x86_32-abi' };

/** What the backend advertised once Connected. */
export interface BackendFeatures {
  readonly sectors: number;
  readonly sectorSize: number;
  readonly readOnly: boolean;
  readonly discard: boolean;
  readonly maxIndirect: number;
  readonly maxRingPageOrder: number;
}

export interface RingChoice {
  readonly abi: BlkifAbi;
  /** Wanted ring size as 2^order pages (capped by the backend's max-ring-page-order). */
  readonly order: number;
}

export class BareFront {
  readonly hv: GuestHypervisor;
  readonly devid: number;
  readonly timeoutMs: number;
  readonly frontendPath: string;
  backendPath = '';
  backendId = 0;
  features!: BackendFeatures;
  abi!: BlkifAbi;
  layout!: BlkifLayout;
  ring!: SharedRing;
  size = 0;
  ringFrame = -1;
  ringPages = 0;
  ringRefs: number[] = [];
  events: EventChannel | null = null;
  /** Private producer index: slots [rspCons, reqProdPvt) are ours. */
  reqProdPvt = 0;
  /** Responses before this index have been read. */
  rspCons = 0;
  /** Connections made so far (1 after connect). */
  connections = 0;
  /** Ring refs the backend still held after Closed (their pages are leaked, never reused). */
  readonly heldRefs: number[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #allocPages: (count: number) => number;

  /** `allocPages` gives the ring its frames (default: the guest's allocator), so a caller can account for them. */
  constructor(hv: GuestHypervisor, devid: number, timeoutMs: number, allocPages?: (count: number) => number) {
    this.hv = hv;
    this.devid = devid;
    this.timeoutMs = timeoutMs;
    this.#allocPages = allocPages ?? ((count) => hv.memory.allocPages(count));
    this.frontendPath = frontendDir(hv.domid, devid);
  }

  /** First connection: waits for the toolstack's entries and the backend's InitWait, then connects. */
  async connect(choice: RingChoice): Promise<void> {
    const xs = this.hv.xenstore;
    const fe = this.frontendPath;
    this.backendPath = (await waitForKey(xs, `${fe}/${VbdKey.backend}`, (v) => v !== undefined, this.timeoutMs))!;
    this.backendId = Number((await xs.tryRead(`${fe}/${VbdKey.backendId}`)) ?? '0');
    await this.#waitBackend((s) => s >= XenbusState.InitWait, 'InitWait or later');
    await this.#attach(choice);
  }

  /**
   * Closes the ring as blkfront does on shutdown (Closing, then Closed) and revokes its grants.
   * Resolves with the ring grants the backend still held after Closed (0 when it let go, as it must).
   */
  async shutdown(): Promise<number> {
    const xs = this.hv.xenstore;
    await xs.write(`${this.frontendPath}/${VbdKey.state}`, String(XenbusState.Closing));
    await this.#waitBackend((s) => s >= XenbusState.Closing, 'Closing');
    await xs.write(`${this.frontendPath}/${VbdKey.state}`, String(XenbusState.Closed));
    await this.#waitBackend((s) => s === XenbusState.Closed, 'Closed');
    this.events?.close();
    this.events = null;
    let held = 0;
    for (const ref of this.ringRefs) {
      if (this.hv.grants.endAccess(ref)) continue;
      held++;
      this.heldRefs.push(ref);
    }
    // A ring page the backend still maps must not be reused: leak it rather than free it.
    if (held === 0) this.hv.memory.freePages(this.ringFrame, this.ringPages);
    this.ringRefs = [];
    return held;
  }

  /** shutdown(), then a fresh ring: the same device, new pages, grants and event channel. */
  async reconnect(choice: RingChoice): Promise<number> {
    const held = await this.shutdown();
    await this.hv.xenstore.write(`${this.frontendPath}/${VbdKey.state}`, String(XenbusState.Initialising));
    await this.#waitBackend((s) => s === XenbusState.InitWait, 'InitWait');
    await this.#attach(choice);
    return held;
  }

  async #waitBackend(done: (state: number) => boolean, what: string): Promise<void> {
    try {
      await waitForKey(this.hv.xenstore, `${this.backendPath}/${VbdKey.state}`, (v) => done(Number(v)), this.timeoutMs);
    } catch {
      throw new Error(`backend ${this.backendPath} did not reach ${what} within ${this.timeoutMs} ms`);
    }
  }

  async #attach(choice: RingChoice): Promise<void> {
    const hv = this.hv;
    const xs = hv.xenstore;
    const fe = this.frontendPath;
    const be = this.backendPath;
    const maxOrder = Number((await xs.tryRead(`${be}/${VbdKey.maxRingPageOrder}`)) ?? '0');
    const order = Math.max(0, Math.min(choice.order, maxOrder));
    const pages = 1 << order;
    const frame = this.#allocPages(pages);
    if (frame < 0) throw new Error(`fuzz front ${this.devid}: no guest memory for a ${pages}-page ring`);
    const views: Uint8Array[] = [];
    const refs: number[] = [];
    for (let i = 0; i < pages; i++) {
      views.push(hv.memory.view(frame + i, 1).fill(0));
      const ref = hv.grants.grantAccess(this.backendId, frame + i, false);
      if (ref < 0) throw new Error(`fuzz front ${this.devid}: grant table full`);
      refs.push(ref);
    }
    const ring = new SharedRing(views, choice.abi);
    frontRingInit(ring);
    const events = hv.events.allocUnbound(this.backendId);
    events.onEvent(() => {
      for (const w of [...this.#waiters]) w();
    });
    await xs.transaction(async (tx) => {
      // Keys of an earlier connection must not linger: a backend reads ring-ref when there is no ring-page-order.
      for (const key of [ringRefKey(0, false), VbdKey.ringPageOrder, ...Array.from({ length: 16 }, (_, i) => ringRefKey(i, true))])
        await xs.rm(`${fe}/${key}`, tx).catch(() => undefined);
      if (order === 0) await xs.write(`${fe}/${ringRefKey(0, false)}`, String(refs[0]), tx);
      else {
        await xs.write(`${fe}/${VbdKey.ringPageOrder}`, String(order), tx);
        for (let i = 0; i < pages; i++) await xs.write(`${fe}/${ringRefKey(i, true)}`, String(refs[i]), tx);
      }
      await xs.write(`${fe}/${VbdKey.eventChannel}`, String(events.localPort), tx);
      await xs.write(`${fe}/${VbdKey.protocol}`, PROTOCOL[choice.abi], tx);
      // As Linux blkfront: the backend uses persistent grants only if both sides offer them.
      await xs.write(`${fe}/${VbdKey.featurePersistent}`, '1', tx);
    });
    await xs.write(`${fe}/${VbdKey.state}`, String(XenbusState.Initialised));
    await this.#waitBackend((s) => s === XenbusState.Connected, 'Connected');
    const read = (key: string): Promise<string | undefined> => xs.tryRead(`${be}/${key}`);
    this.features = {
      sectors: Number(await read(VbdKey.sectors)),
      sectorSize: Number((await read(VbdKey.sectorSize)) ?? '512'),
      readOnly: (Number((await read(VbdKey.info)) ?? '0') & 4) !== 0,
      discard: (await read(VbdKey.featureDiscard)) === '1',
      maxIndirect: Number((await read(VbdKey.featureMaxIndirectSegments)) ?? '0'),
      maxRingPageOrder: maxOrder,
    };
    await xs.write(`${fe}/${VbdKey.state}`, String(XenbusState.Connected));
    this.abi = choice.abi;
    this.layout = ABI_LAYOUT[choice.abi];
    this.ring = ring;
    this.size = ring.size;
    this.ringFrame = frame;
    this.ringPages = pages;
    this.ringRefs = refs;
    this.events = events;
    this.reqProdPvt = 0;
    this.rspCons = 0;
    this.connections++;
  }

  /** Requests filled or published that have no response yet (by rsp_prod). */
  get outstanding(): number {
    return (this.reqProdPvt - this.ring.rspProd) >>> 0;
  }

  /** Slots we may fill: neither awaiting an answer nor holding one we have not read. */
  get free(): number {
    return this.size - ((this.reqProdPvt - this.rspCons) >>> 0);
  }

  /** Copies an encoded request into the next slot. */
  put(slot: Uint8Array): void {
    this.ring.copyIn(this.reqProdPvt, slot, this.ring.requestSize);
    this.reqProdPvt = (this.reqProdPvt + 1) >>> 0;
  }

  /**
   * Publishes req_prod (any value; default what we filled) and notifies when the backend asked for
   * it (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY), or always with `force`.
   */
  publish(reqProd: number = this.reqProdPvt, force = false): void {
    const ring = this.ring;
    const old = ring.reqProd;
    ring.reqProd = reqProd >>> 0;
    const wanted = (reqProd - ring.reqEvent) >>> 0 < (reqProd - old) >>> 0;
    if (force || wanted) this.events?.notify();
  }

  notify(): void {
    this.events?.notify();
  }

  /** Copies response `index` out of the ring. */
  response(index: number, dst: Uint8Array): Uint8Array {
    this.ring.copyOut(index, dst, this.ring.responseSize);
    return dst;
  }

  /** Waits until rsp_prod reaches `target` (free-running); false after `timeoutMs` without. */
  waitResponses(target: number, timeoutMs: number): Promise<boolean> {
    const ring = this.ring;
    const reached = (): boolean => ((ring.rspProd - target) | 0) >= 0;
    if (reached()) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (ok: boolean): void => {
        if (timer !== undefined) clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(ok);
      };
      const check = (): void => {
        for (;;) {
          const prod = ring.rspProd;
          if (((prod - target) | 0) >= 0) {
            finish(true);
            return;
          }
          // Ask for an event when the target is reached (not on the next response: one wake-up for
          // a batch), then look again (RING_FINAL_CHECK_FOR_RESPONSES).
          ring.rspEvent = target >>> 0;
          if (ring.rspProd === prod) return;
        }
      };
      timer = setTimeout(() => finish(reached()), timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  close(): void {
    this.events?.close();
    this.events = null;
  }
}
