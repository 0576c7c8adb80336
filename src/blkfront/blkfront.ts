// The guest's half of a virtual block device, presented to code in the guest as a BlockDevice.
// Handshake as Linux xen-blkfront: wait for the backend's InitWait, allocate and grant the ring
// (2^order pages, bounded by the backend's max-ring-page-order), allocate an event channel, publish
// ring-ref(s)/event-channel/protocol and go Initialised, wait for Connected, read the disk's size
// and features. I/O larger than one request (11 segments, 44 KiB) is split; more I/O than the ring
// has slots waits in a queue here, counted in `stats.queued`.
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP,
  BLKIF_RSP,
  SECTOR_SIZE,
  SEGS_PER_INDIRECT_FRAME,
  VDISK_READONLY,
  XEN_PAGE_SIZE,
} from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { BlkifRequest, BlkifResponse, decodeResponse, encodeIndirectSegments, encodeRequest } from '../blkif/codec.ts';
import { FrontRing, frontRingInit, SharedRing } from '../blkif/ring.ts';
import type { BlockDevice, BlockDeviceInfo } from '../block/types.ts';
import type { EventChannel, GuestHypervisor } from '../hypervisor/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { parseXenbusState, XenbusState } from '../xenbus/state.ts';

export interface BlkfrontOptions {
  /** Ring ABI to speak (default x86_64). */
  readonly abi?: BlkifAbi;
  /** Wanted ring size as 2^order pages (default 4, capped by the backend's max-ring-page-order). */
  readonly ringPageOrder?: number;
  /** How long to wait for each handshake step (ms, default 10000). */
  readonly timeoutMs?: number;
  /**
   * Segments per request when the backend offers indirect requests (default 32, Linux blkfront's
   * max_indirect_segments; at most 512, one indirect page). 0 or <= 11: direct requests only.
   */
  readonly maxIndirectSegments?: number;
}

export interface BlkfrontStats {
  requests: number;
  responses: number;
  /** I/O pieces that had to wait because the ring (or the grant table) was full. */
  queued: number;
  maxQueued: number;
  notifies: number;
  events: number;
  errors: number;
  /** Size changes announced by the backend. */
  resizes: number;
  /** Requests sent as BLKIF_OP_INDIRECT. */
  indirect: number;
}

/** One user call (readv, writev, flush, discard); may become several ring requests. */
interface UserIo {
  remaining: number;
  error: BlockError | null;
  resolve: () => void;
  reject: (err: BlockError) => void;
  bounce: { frame: number; pages: number; iov: readonly Uint8Array[]; length: number } | null;
}

/** One ring request waiting for a slot, or in flight. */
interface Piece {
  op: number;
  sector: number;
  nseg: number;
  frames: Uint32Array;
  first: Uint8Array;
  last: Uint8Array;
  nrSectors: number;
  io: UserIo;
}

interface Shadow {
  piece: Piece | null;
  refs: Int32Array;
  /** The page holding this slot's indirect segment list (allocated on first use), and its grant while in flight. */
  indirectFrame: number;
  indirectRef: number;
}

const PROTOCOL_NAME: Record<BlkifAbi, string> = { x86_64: 'x86_64-abi', x86_32: 'x86_32-abi' };

export class Blkfront implements BlockDevice {
  readonly name: string;
  readonly devid: number;
  readonly stats: BlkfrontStats = { requests: 0, responses: 0, queued: 0, maxQueued: 0, notifies: 0, events: 0, errors: 0, resizes: 0, indirect: 0 };
  #info: BlockDeviceInfo;
  #hv: GuestHypervisor;
  #abi: BlkifAbi;
  #frontendPath: string;
  #backendPath = '';
  #backendId = 0;
  #ring!: FrontRing;
  #sring!: SharedRing;
  #ringFrame = -1;
  #ringPages = 0;
  #ringRefs: number[] = [];
  #events!: EventChannel;
  #shadows: Shadow[] = [];
  #freeIds: number[] = [];
  #queue: Piece[] = [];
  #queueHead = 0;
  #req = new BlkifRequest();
  #rsp = new BlkifResponse();
  #slot!: Uint8Array;
  #flushScheduled = false;
  #featureFlush = false;
  #featureBarrier = false;
  #featureDiscard = false;
  #inflight = 0;
  #closed = false;
  #idle: (() => void) | null = null;
  #timeoutMs: number;
  #wantedIndirect: number;
  /** Segments per request: 11, or what indirect requests allow. */
  #maxSegs = BLKIF_MAX_SEGMENTS_PER_REQUEST;
  #segRefs = new Uint32Array(BLKIF_MAX_SEGMENTS_PER_REQUEST);

  private constructor(hv: GuestHypervisor, devid: number, name: string, options: BlkfrontOptions) {
    this.#hv = hv;
    this.devid = devid;
    this.name = name;
    this.#abi = options.abi ?? 'x86_64';
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#wantedIndirect = Math.max(0, Math.min(SEGS_PER_INDIRECT_FRAME, options.maxIndirectSegments ?? 32));
    this.#frontendPath = `/local/domain/${hv.domid}/device/vbd/${devid}`;
    this.#info = emptyInfo();
  }

  static async connect(hv: GuestHypervisor, devid: number, name: string, options: BlkfrontOptions = {}): Promise<Blkfront> {
    const front = new Blkfront(hv, devid, name, options);
    await front.#handshake(options.ringPageOrder ?? 4);
    return front;
  }

  get info(): BlockDeviceInfo {
    return this.#info;
  }

  get abi(): BlkifAbi {
    return this.#abi;
  }

  get ringSize(): number {
    return this.#sring.size;
  }

  get ringPages(): number {
    return this.#ringPages;
  }

  get inflight(): number {
    return this.#inflight;
  }

  // ------------------------------------------------------------------ handshake

  async #handshake(wantedOrder: number): Promise<void> {
    const xs = this.#hv.xenstore;
    const fe = this.#frontendPath;
    const backend = await xs.tryRead(`${fe}/backend`);
    if (backend === undefined) throw new BlockError('BLK_ERR_XENBUS', `${this.name}: ${fe}/backend is missing (no such disk?)`);
    this.#backendPath = backend;
    this.#backendId = Number((await xs.tryRead(`${fe}/backend-id`)) ?? '0');
    // Announce a (re)start: a backend left Closed by an earlier frontend goes back to InitWait on
    // Initialising, and only InitWait means it is ready for our ring (Linux blkfront does the same).
    await xs.write(`${fe}/state`, String(XenbusState.Initialising));
    await this.#waitBackend((s) => s === XenbusState.InitWait, 'InitWait', false);

    const maxOrder = Number((await xs.tryRead(`${backend}/max-ring-page-order`)) ?? '0');
    const order = Math.max(0, Math.min(wantedOrder, Number.isInteger(maxOrder) ? maxOrder : 0));
    const pages = 1 << order;
    const frame = this.#hv.memory.allocPages(pages);
    if (frame < 0) throw new BlockError('BLK_ERR_NOMEM', `${this.name}: no guest memory for a ${pages}-page ring`);
    this.#ringFrame = frame;
    this.#ringPages = pages;
    const pageViews: Uint8Array[] = [];
    for (let i = 0; i < pages; i++) {
      const view = this.#hv.memory.view(frame + i, 1);
      view.fill(0);
      pageViews.push(view);
      const ref = this.#hv.grants.grantAccess(this.#backendId, frame + i, false);
      if (ref < 0) throw new BlockError('BLK_ERR_NOGRANT', `${this.name}: grant table full while granting the ring`);
      this.#ringRefs.push(ref);
    }
    this.#sring = new SharedRing(pageViews, this.#abi);
    frontRingInit(this.#sring);
    this.#ring = new FrontRing(this.#sring);
    this.#slot = new Uint8Array(this.#sring.stride);
    for (let id = this.#sring.size - 1; id >= 0; id--) {
      this.#shadows[id] = { piece: null, refs: new Int32Array(BLKIF_MAX_SEGMENTS_PER_REQUEST).fill(-1), indirectFrame: -1, indirectRef: -1 };
      this.#freeIds.push(id);
    }
    this.#events = this.#hv.events.allocUnbound(this.#backendId);
    this.#events.onEvent(this.#onEvent);

    await xs.transaction(async (tx) => {
      if (order === 0) {
        await xs.write(`${fe}/ring-ref`, String(this.#ringRefs[0]), tx);
      } else {
        await xs.write(`${fe}/ring-page-order`, String(order), tx);
        for (let i = 0; i < pages; i++) await xs.write(`${fe}/ring-ref${i}`, String(this.#ringRefs[i]), tx);
      }
      await xs.write(`${fe}/event-channel`, String(this.#events.localPort), tx);
      await xs.write(`${fe}/protocol`, PROTOCOL_NAME[this.#abi], tx);
    });
    await xs.write(`${fe}/state`, String(XenbusState.Initialised));
    await this.#waitBackend((s) => s === XenbusState.Connected, 'Connected');
    await this.#readDiskInfo();
    await xs.write(`${fe}/state`, String(XenbusState.Connected));
    // The backend announces a resize by rewriting `sectors` and `state` (Connected again): re-read the size.
    await xs.watch(`${this.#backendPath}/state`, this.#resizeToken, () => void this.#backendChanged());
  }

  get #resizeToken(): string {
    return `blkfront-${this.devid}-backend`;
  }

  async #backendChanged(): Promise<void> {
    if (this.#closed) return;
    const xs = this.#hv.xenstore;
    const state = parseXenbusState(await xs.tryRead(`${this.#backendPath}/state`).catch(() => undefined));
    if (state !== XenbusState.Connected) return;
    const text = await xs.tryRead(`${this.#backendPath}/sectors`).catch(() => undefined);
    const sectors = Number(text);
    if (text === undefined || !Number.isSafeInteger(sectors) || sectors < 0) return;
    const size = sectors * SECTOR_SIZE;
    if (size !== this.#info.size) {
      this.stats.resizes++;
      this.#info = { ...this.#info, size };
    }
  }

  async #readDiskInfo(): Promise<void> {
    const xs = this.#hv.xenstore;
    const be = this.#backendPath;
    const num = async (key: string, fallback: number): Promise<number> => {
      const text = await xs.tryRead(`${be}/${key}`);
      const n = text === undefined ? fallback : Number(text);
      if (!Number.isFinite(n) || n < 0) throw new BlockError('BLK_ERR_XENBUS', `${this.name}: ${be}/${key} = '${text}' is not a number`);
      return n;
    };
    const sectors = await num('sectors', 0);
    const sectorSize = await num('sector-size', 512);
    const physical = await num('physical-sector-size', sectorSize);
    const info = await num('info', 0);
    this.#featureFlush = (await num('feature-flush-cache', 0)) === 1;
    this.#featureBarrier = (await num('feature-barrier', 0)) === 1;
    this.#featureDiscard = (await num('feature-discard', 0)) === 1;
    const granularity = this.#featureDiscard ? await num('discard-granularity', sectorSize) : 0;
    const indirect = Math.min(this.#wantedIndirect, await num('feature-max-indirect-segments', 0));
    if (indirect > BLKIF_MAX_SEGMENTS_PER_REQUEST && indirect > this.#maxSegs) {
      this.#maxSegs = indirect;
      this.#segRefs = new Uint32Array(indirect);
      for (const shadow of this.#shadows) shadow.refs = new Int32Array(indirect).fill(-1);
    }
    this.#info = {
      size: sectors * SECTOR_SIZE,
      logicalBlockSize: sectorSize,
      physicalBlockSize: physical,
      readOnly: (info & VDISK_READONLY) !== 0,
      volatileCache: this.#featureFlush || this.#featureBarrier,
      canFlush: true,
      canFua: false,
      canDiscard: this.#featureDiscard,
      canWriteZeroes: false,
      discardGranularity: granularity,
      bufferAlignment: SECTOR_SIZE,
    };
  }

  /** Waits for the backend's state to satisfy `done`; Closing/Closed meanwhile is an error when `failOnClose`. */
  #waitBackend(done: (state: number) => boolean, what: string, failOnClose = true): Promise<number> {
    const xs = this.#hv.xenstore;
    const path = `${this.#backendPath}/state`;
    const token = `blkfront-${this.devid}-${what}`;
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
        () => finish(new BlockError('BLK_ERR_TIMEOUT', `${this.name}: backend ${this.#backendPath} did not reach ${what} within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      void xs
        .watch(path, token, () => {
          void xs.tryRead(path).then((text) => {
            const state = parseXenbusState(text);
            if (done(state)) finish(null, state);
            else if (failOnClose && (state === XenbusState.Closing || state === XenbusState.Closed)) {
              finish(new BlockError('BLK_ERR_XENBUS', `${this.name}: backend went to state ${state} while we waited for ${what}`));
            }
          }, () => undefined);
        })
        .catch((err: unknown) => finish(new BlockError('BLK_ERR_XENBUS', `${this.name}: cannot watch ${path}: ${String(err)}`)));
    });
  }

  // ------------------------------------------------------------------ I/O

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return this.#submitData(BLKIF_OP.READ, offset, iov);
  }

  writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    if (this.#info.readOnly) return Promise.reject(new BlockError('BLK_ERR_READONLY', `${this.name}: read-only disk`, { errno: Errno.EROFS }));
    return this.#submitData(BLKIF_OP.WRITE, offset, iov);
  }

  flush(): Promise<void> {
    const op = this.#featureFlush ? BLKIF_OP.FLUSH_DISKCACHE : this.#featureBarrier ? BLKIF_OP.WRITE_BARRIER : -1;
    if (op < 0) return Promise.resolve(); // no volatile cache behind the backend
    return this.#submitControl(op, 0, 0);
  }

  /** WRITE_BARRIER with no data: the backend drains every earlier request, then flushes. */
  barrier(): Promise<void> {
    if (!this.#featureBarrier) return Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', `${this.name}: backend has no feature-barrier`, { errno: Errno.EOPNOTSUPP }));
    return this.#submitControl(BLKIF_OP.WRITE_BARRIER, 0, 0);
  }

  discard(offset: number, length: number): Promise<void> {
    if (!this.#featureDiscard) return Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', `${this.name}: backend has no feature-discard`, { errno: Errno.EOPNOTSUPP }));
    this.#checkRange(offset, length);
    return this.#submitControl(BLKIF_OP.DISCARD, offset / SECTOR_SIZE, length / SECTOR_SIZE);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    // blkif has no write-zeroes operation: write a zeroed buffer, a page-run at a time.
    this.#checkRange(offset, length);
    const pages = Math.min(16, Math.ceil(length / XEN_PAGE_SIZE));
    const frame = this.#hv.memory.allocPages(pages);
    if (frame < 0) return Promise.reject(new BlockError('BLK_ERR_NOMEM', `${this.name}: no guest memory for a zero buffer`));
    const zero = this.#hv.memory.view(frame, pages).fill(0);
    const run = async (): Promise<void> => {
      try {
        for (let done = 0; done < length; done += zero.length) {
          await this.writev(offset + done, [zero.subarray(0, Math.min(zero.length, length - done))]);
        }
      } finally {
        this.#hv.memory.freePages(frame, pages);
      }
    };
    return run();
  }

  #checkRange(offset: number, length: number): void {
    if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0 || offset < 0 || offset + length > this.#info.size) {
      throw new BlockError('BLK_ERR_RANGE', `${this.name}: ${length} bytes at ${offset} is outside the disk or not sector-aligned`, { errno: Errno.EINVAL });
    }
  }

  #newIo(resolve: () => void, reject: (err: BlockError) => void): UserIo {
    return { remaining: 0, error: null, resolve, reject, bounce: null };
  }

  #submitControl(op: number, sector: number, nrSectors: number): Promise<void> {
    if (this.#closed) return Promise.reject(new BlockError('BLK_ERR_CLOSED', `${this.name}: device closed`));
    return new Promise<void>((resolve, reject) => {
      const io = this.#newIo(resolve, reject);
      io.remaining = 1;
      this.#enqueue({ op, sector, nseg: 0, frames: EMPTY_U32, first: EMPTY_U8, last: EMPTY_U8, nrSectors, io });
    });
  }

  #submitData(op: number, offset: number, iov: readonly Uint8Array[]): Promise<void> {
    if (this.#closed) return Promise.reject(new BlockError('BLK_ERR_CLOSED', `${this.name}: device closed`));
    let length = 0;
    for (const b of iov) length += b.length;
    try {
      this.#checkRange(offset, length);
    } catch (err) {
      return Promise.reject(err);
    }
    if (length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const io = this.#newIo(resolve, reject);
      let vec = iov;
      if (!this.#grantable(iov)) {
        // Buffers outside guest memory or not sector-aligned: go through a bounce buffer we own.
        const pages = Math.ceil(length / XEN_PAGE_SIZE);
        const frame = this.#hv.memory.allocPages(pages);
        if (frame < 0) {
          reject(new BlockError('BLK_ERR_NOMEM', `${this.name}: no guest memory for a ${length}-byte bounce buffer`));
          return;
        }
        const bounce = this.#hv.memory.view(frame, pages).subarray(0, length);
        if (op === BLKIF_OP.WRITE) {
          let at = 0;
          for (const b of iov) {
            bounce.set(b, at);
            at += b.length;
          }
        }
        io.bounce = { frame, pages, iov, length };
        vec = [bounce];
      }
      this.#split(op, offset / SECTOR_SIZE, vec, io);
    });
  }

  #grantable(iov: readonly Uint8Array[]): boolean {
    const buffer = this.#hv.memory.buffer;
    for (const b of iov) {
      if (b.buffer !== buffer || b.byteOffset % SECTOR_SIZE !== 0 || b.length % SECTOR_SIZE !== 0) return false;
    }
    return true;
  }

  /** Cuts the vector into requests of at most #maxSegs page segments each (11 without indirect requests). */
  #split(op: number, sector: number, iov: readonly Uint8Array[], io: UserIo): void {
    let piece = this.#newPiece(op, sector, io);
    const pieces: Piece[] = [piece];
    for (const b of iov) {
      let addr = b.byteOffset;
      const end = addr + b.length;
      while (addr < end) {
        if (piece.nseg === this.#maxSegs) {
          sector += piece.nrSectors;
          piece = this.#newPiece(op, sector, io);
          pieces.push(piece);
        }
        const frame = Math.floor(addr / XEN_PAGE_SIZE);
        const inPage = addr - frame * XEN_PAGE_SIZE;
        const n = Math.min(end - addr, XEN_PAGE_SIZE - inPage);
        const i = piece.nseg++;
        piece.frames[i] = frame;
        piece.first[i] = inPage / SECTOR_SIZE;
        piece.last[i] = (inPage + n) / SECTOR_SIZE - 1;
        piece.nrSectors += n / SECTOR_SIZE;
        addr += n;
      }
    }
    io.remaining = pieces.length;
    for (const p of pieces) this.#enqueue(p);
  }

  #newPiece(op: number, sector: number, io: UserIo): Piece {
    return {
      op,
      sector,
      nseg: 0,
      frames: new Uint32Array(this.#maxSegs),
      first: new Uint8Array(this.#maxSegs),
      last: new Uint8Array(this.#maxSegs),
      nrSectors: 0,
      io,
    };
  }

  #enqueue(piece: Piece): void {
    this.#queue.push(piece);
    this.#inflight++;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(this.#pump);
    }
  }

  /** Moves queued pieces onto the ring while it has room, then publishes them with one notify at most. */
  readonly #pump = (): void => {
    this.#flushScheduled = false;
    let pushed = 0;
    while (this.#queueHead < this.#queue.length) {
      if (this.#ring.full() || this.#freeIds.length === 0) break;
      const piece = this.#queue[this.#queueHead]!;
      if (!this.#issue(piece)) break; // grant table full: retry when responses free refs
      this.#queue[this.#queueHead++] = undefined as unknown as Piece;
      pushed++;
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024) {
      this.#queue.splice(0, this.#queueHead);
      this.#queueHead = 0;
    }
    const waiting = this.#queue.length - this.#queueHead;
    if (waiting > 0) {
      this.stats.queued += waiting;
      if (waiting > this.stats.maxQueued) this.stats.maxQueued = waiting;
    }
    if (pushed > 0 && this.#ring.pushRequestsAndCheckNotify()) {
      this.stats.notifies++;
      this.#events.notify();
    }
  };

  #issue(piece: Piece): boolean {
    const id = this.#freeIds[this.#freeIds.length - 1]!;
    const shadow = this.#shadows[id]!;
    const readOnlyGrant = piece.op !== BLKIF_OP.READ; // the backend only reads pages we write from
    for (let i = 0; i < piece.nseg; i++) {
      const ref = this.#hv.grants.grantAccess(this.#backendId, piece.frames[i]!, readOnlyGrant);
      if (ref < 0) {
        for (let j = 0; j < i; j++) {
          this.#hv.grants.endAccess(shadow.refs[j]!);
          shadow.refs[j] = -1;
        }
        return false;
      }
      shadow.refs[i] = ref;
    }
    const indirect = piece.nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST;
    if (indirect && !this.#grantIndirectPage(piece, shadow)) {
      for (let j = 0; j < piece.nseg; j++) {
        this.#hv.grants.endAccess(shadow.refs[j]!);
        shadow.refs[j] = -1;
      }
      return false;
    }
    this.#freeIds.pop();
    shadow.piece = piece;
    const r = this.#req;
    r.operation = piece.op;
    r.handle = this.devid & 0xffff;
    r.idLo = id;
    r.idHi = 0;
    r.sectorNumber = piece.sector;
    if (indirect) {
      r.operation = BLKIF_OP.INDIRECT;
      r.indirectOp = piece.op;
      r.indirectNrSegments = piece.nseg;
      r.indirectGrefs.fill(0);
      r.indirectGrefs[0] = shadow.indirectRef;
      this.stats.indirect++;
    } else if (piece.op === BLKIF_OP.DISCARD) {
      r.discardFlag = 0;
      r.nrSectors = piece.nrSectors;
      r.nrSegments = 0;
    } else {
      r.nrSegments = piece.nseg;
      for (let i = 0; i < piece.nseg; i++) {
        r.segGref[i] = shadow.refs[i]!;
        r.segFirst[i] = piece.first[i]!;
        r.segLast[i] = piece.last[i]!;
      }
    }
    encodeRequest(this.#abi, r, this.#slot);
    this.#ring.putRequest(this.#slot);
    this.stats.requests++;
    return true;
  }

  /** Writes the piece's segment list to the slot's indirect page and grants it (read-only); false if out of memory or grants. */
  #grantIndirectPage(piece: Piece, shadow: Shadow): boolean {
    if (shadow.indirectFrame < 0) {
      shadow.indirectFrame = this.#hv.memory.allocPages(1);
      if (shadow.indirectFrame < 0) return false;
    }
    const refs = this.#segRefs;
    for (let i = 0; i < piece.nseg; i++) refs[i] = shadow.refs[i]!;
    encodeIndirectSegments(this.#hv.memory.view(shadow.indirectFrame, 1), piece.nseg, refs, piece.first, piece.last, 0);
    const ref = this.#hv.grants.grantAccess(this.#backendId, shadow.indirectFrame, true);
    if (ref < 0) return false;
    shadow.indirectRef = ref;
    return true;
  }

  readonly #onEvent = (): void => {
    this.stats.events++;
    let more = true;
    while (more) {
      while (this.#ring.takeResponse(this.#slot)) {
        decodeResponse(this.#abi, this.#slot, this.#rsp);
        this.#completeResponse(this.#rsp);
      }
      more = this.#ring.finalCheckForResponses();
    }
    if (this.#queueHead < this.#queue.length) this.#pump();
  };

  #completeResponse(rsp: BlkifResponse): void {
    const id = rsp.idLo;
    const shadow = rsp.idHi === 0 ? this.#shadows[id] : undefined;
    const piece = shadow?.piece;
    if (shadow === undefined || piece === undefined || piece === null) {
      this.stats.errors++;
      return; // a response for no request of ours: ignore it
    }
    this.stats.responses++;
    for (let i = 0; i < piece.nseg; i++) {
      const ref = shadow.refs[i]!;
      if (!this.#hv.grants.endAccess(ref)) this.#deferEnd(ref);
      shadow.refs[i] = -1;
    }
    if (shadow.indirectRef >= 0) {
      if (!this.#hv.grants.endAccess(shadow.indirectRef)) this.#deferEnd(shadow.indirectRef);
      shadow.indirectRef = -1;
    }
    shadow.piece = null;
    this.#freeIds.push(id);
    this.#inflight--;
    const io = piece.io;
    if (rsp.status !== BLKIF_RSP.OKAY && io.error === null) {
      this.stats.errors++;
      const what = OP_NAMES[piece.op] ?? `op ${piece.op}`;
      const status = rsp.status === BLKIF_RSP.EOPNOTSUPP ? 'EOPNOTSUPP' : 'ERROR';
      io.error = new BlockError('BLK_ERR_IO', `${this.name}: backend answered BLKIF_RSP_${status} to ${what} of ${piece.nrSectors} sectors at sector ${piece.sector}`, {
        errno: rsp.status === BLKIF_RSP.EOPNOTSUPP ? Errno.EOPNOTSUPP : Errno.EIO,
      });
    }
    if (--io.remaining === 0) this.#finish(io, piece.op);
    if (this.#inflight === 0 && this.#idle !== null) {
      const idle = this.#idle;
      this.#idle = null;
      idle();
    }
  }

  #finish(io: UserIo, op: number): void {
    const bounce = io.bounce;
    if (bounce !== null) {
      if (op === BLKIF_OP.READ && io.error === null) {
        const src = this.#hv.memory.view(bounce.frame, bounce.pages);
        let at = 0;
        for (const b of bounce.iov) {
          b.set(src.subarray(at, at + b.length));
          at += b.length;
        }
      }
      this.#hv.memory.freePages(bounce.frame, bounce.pages);
    }
    if (io.error !== null) io.reject(io.error);
    else io.resolve();
  }

  /** A grant the backend still has mapped after answering: retry ending it later (Linux defers the same way). */
  #deferEnd(ref: number): void {
    const retry = (): void => {
      if (!this.#hv.grants.endAccess(ref)) setTimeout(retry, 100).unref();
    };
    setTimeout(retry, 10).unref();
  }

  // ------------------------------------------------------------------ teardown

  /** Waits for I/O in flight, then Closing -> Closed with the backend, and frees the ring. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#inflight > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
    const xs = this.#hv.xenstore;
    await xs.unwatch(`${this.#backendPath}/state`, this.#resizeToken).catch(() => undefined);
    await xs.write(`${this.#frontendPath}/state`, String(XenbusState.Closing));
    await this.#waitBackend((s) => s >= XenbusState.Closing, 'Closing').catch(() => XenbusState.Closing);
    await xs.write(`${this.#frontendPath}/state`, String(XenbusState.Closed));
    // A backend directory the toolstack already removed (state unreadable: Unknown) is as good as Closed.
    await this.#waitBackend((s) => s === XenbusState.Closed || s === XenbusState.Unknown, 'Closed').catch(() => XenbusState.Closed);
    this.#events.close();
    for (const ref of this.#ringRefs) if (!this.#hv.grants.endAccess(ref)) this.#deferEnd(ref);
    this.#ringRefs = [];
    if (this.#ringFrame >= 0) this.#hv.memory.freePages(this.#ringFrame, this.#ringPages);
    for (const shadow of this.#shadows) {
      if (shadow.indirectFrame >= 0) this.#hv.memory.freePages(shadow.indirectFrame, 1);
      shadow.indirectFrame = -1;
    }
    this.#ringFrame = -1;
  }
}

const OP_NAMES: Record<number, string> = {
  [BLKIF_OP.READ]: 'read',
  [BLKIF_OP.WRITE]: 'write',
  [BLKIF_OP.FLUSH_DISKCACHE]: 'flush',
  [BLKIF_OP.WRITE_BARRIER]: 'barrier',
  [BLKIF_OP.DISCARD]: 'discard',
};

const EMPTY_U32 = new Uint32Array(0);
const EMPTY_U8 = new Uint8Array(0);

function emptyInfo(): BlockDeviceInfo {
  return {
    size: 0,
    logicalBlockSize: SECTOR_SIZE,
    physicalBlockSize: SECTOR_SIZE,
    readOnly: false,
    volatileCache: false,
    canFlush: true,
    canFua: false,
    canDiscard: false,
    canWriteZeroes: false,
    discardGranularity: 0,
    bufferAlignment: SECTOR_SIZE,
  };
}
