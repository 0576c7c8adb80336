// The frontend's side of one connected blkif ring: turns reads, writes and control operations into
// ring requests, grants their data pages to the backend (through an indirect page when a request
// has more segments than fit in a slot), publishes them with one notify at most per batch, and
// completes each operation from its responses. I/O larger than one request is split; more I/O than
// the ring has slots waits in a queue here, counted in `stats.queued`. The xenbus handshake that
// produced the ring is not here (handshake.ts).
//
//   user op ──split──► pieces ──(slot free, grants free)──► shadow[id] + ring slot ──► backend
//   response(id) ──► end grants, free id ──► op done when its last piece is
//
// With persistent grants (feature-persistent, both sides agreed), the backend is never granted the
// user's pages: each segment goes through a page of a pool granted once and reused for the life of
// the connection (Linux xen-blkfront's rinfo->grants), so the backend can keep its mapping and skip
// the map and unmap calls. A write's data is copied into the pool pages when the request is issued,
// a read's out of them when it is answered; indirect pages come from the same pool. The pool grows
// on demand (Linux fills it up front: ring size x (segments + indirect pages)) up to that bound.
import { BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP, BLKIF_RSP, SECTOR_SIZE, SEGS_PER_INDIRECT_FRAME, XEN_PAGE_SIZE } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { BlkifRequest, BlkifResponse, decodeResponse, encodeIndirectSegments, encodeRequest } from '../blkif/codec.ts';
import { FrontRing } from '../blkif/ring.ts';
import type { SharedRing } from '../blkif/ring.ts';
import type { EventChannel, GuestGrants, GuestMemory } from '../hypervisor/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { endAccessOrRetry } from './end-access.ts';

/** Counters of one ring, or of several rings counting into one object. */
export interface RingStats {
  requests: number;
  responses: number;
  /** I/O pieces that had to wait because the ring (or the grant table) was full. */
  queued: number;
  maxQueued: number;
  notifies: number;
  events: number;
  errors: number;
  /** Requests sent as BLKIF_OP_INDIRECT. */
  indirect: number;
}

export interface RingClientOptions {
  readonly memory: GuestMemory;
  readonly grants: GuestGrants;
  readonly backendId: number;
  /** The granted ring, already initialised by the frontend (frontRingInit). */
  readonly sring: SharedRing;
  /** The ring's event channel, bound by the backend. */
  readonly events: EventChannel;
  readonly abi: BlkifAbi;
  /** Every request's `handle` field (the device id, as Linux blkfront sends it). */
  readonly handle: number;
  readonly name: string;
  /** Segments per request: 11, or more when the backend takes indirect requests (at most one indirect page's worth). */
  readonly maxSegments: number;
  readonly stats: RingStats;
  /** feature-persistent was agreed: data goes through the pool of persistently granted pages. */
  readonly persistent?: boolean;
}

/** One user call (read, write, flush, discard); may become several ring requests. */
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

/** What the frontend remembers of the request in slot id `id` until its response. */
interface Shadow {
  piece: Piece | null;
  refs: Int32Array;
  /** Persistent grants: the pool entry of each segment (-1: none). */
  entries: Int32Array;
  /** Persistent grants: the pool entry holding the indirect segment list (-1: none). */
  indirectEntry: number;
  /** The page holding this slot's indirect segment list (allocated on first use), and its grant while in flight. */
  indirectFrame: number;
  indirectRef: number;
}

export class RingClient {
  readonly #memory: GuestMemory;
  readonly #grants: GuestGrants;
  readonly #backendId: number;
  readonly #abi: BlkifAbi;
  readonly #handle: number;
  readonly #name: string;
  readonly #stats: RingStats;
  readonly #events: EventChannel;
  readonly #sring: SharedRing;
  readonly #ring: FrontRing;
  readonly #maxSegs: number;
  readonly #segRefs: Uint32Array;
  readonly #shadows: Shadow[] = [];
  readonly #freeIds: number[] = [];
  #queue: Piece[] = [];
  #queueHead = 0;
  readonly #req = new BlkifRequest();
  readonly #rsp = new BlkifResponse();
  readonly #slot: Uint8Array;
  #pumpScheduled = false;
  #inflight = 0;
  #responses = 0;
  #idle: (() => void) | null = null;
  /** All of guest memory: pool pages and user pages are copied between with copyWithin. */
  readonly #mem: Uint8Array;
  readonly #persistent: boolean;
  /** The pool: each entry's page, and its grant ref (-1: not granted now). */
  readonly #poolFrame: number[] = [];
  readonly #poolRef: number[] = [];
  /** Free entries the backend still holds mapped (reused first), and free entries with no grant. */
  readonly #poolGranted: number[] = [];
  readonly #poolBare: number[] = [];
  /** Entries the pool may grow to: every slot carrying a largest request (Linux's fill_grant_buffer). */
  readonly #poolMax: number;

  constructor(o: RingClientOptions) {
    this.#memory = o.memory;
    this.#grants = o.grants;
    this.#backendId = o.backendId;
    this.#abi = o.abi;
    this.#handle = o.handle & 0xffff;
    this.#name = o.name;
    this.#stats = o.stats;
    this.#events = o.events;
    this.#sring = o.sring;
    this.#ring = new FrontRing(o.sring);
    this.#maxSegs = Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, o.maxSegments);
    this.#segRefs = new Uint32Array(this.#maxSegs);
    this.#slot = new Uint8Array(o.sring.stride);
    this.#mem = new Uint8Array(o.memory.buffer);
    this.#persistent = o.persistent === true;
    const indirectPages = this.#maxSegs > BLKIF_MAX_SEGMENTS_PER_REQUEST ? Math.ceil(this.#maxSegs / SEGS_PER_INDIRECT_FRAME) : 0;
    this.#poolMax = o.sring.size * (this.#maxSegs + indirectPages);
    for (let id = o.sring.size - 1; id >= 0; id--) {
      this.#shadows[id] = {
        piece: null,
        refs: new Int32Array(this.#maxSegs).fill(-1),
        entries: new Int32Array(this.#persistent ? this.#maxSegs : 0).fill(-1),
        indirectEntry: -1,
        indirectFrame: -1,
        indirectRef: -1,
      };
      this.#freeIds.push(id);
    }
    this.#events.onEvent(this.#onEvent);
  }

  /** Slots in the ring. */
  get size(): number {
    return this.#sring.size;
  }

  /** Pieces submitted and not yet answered (queued here or on the ring). */
  get inflight(): number {
    return this.#inflight;
  }

  /** Responses to our requests taken from this ring (the shared stats count those of every ring). */
  get responses(): number {
    return this.#responses;
  }

  /** Persistent grants: pages in the pool, and how many of them are granted now. */
  get grantPool(): { readonly pages: number; readonly granted: number } {
    let granted = 0;
    for (const ref of this.#poolRef) if (ref >= 0) granted++;
    return { pages: this.#poolFrame.length, granted };
  }

  /**
   * Reads into or writes from `iov` at `sector`. Buffers in guest memory and sector-aligned are
   * granted as they are; others go through a bounce buffer of our own.
   */
  submitData(op: number, sector: number, iov: readonly Uint8Array[]): Promise<void> {
    let length = 0;
    for (const b of iov) length += b.length;
    if (length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const io: UserIo = { remaining: 0, error: null, resolve, reject, bounce: null };
      let vec = iov;
      if (!this.#grantable(iov)) {
        const pages = Math.ceil(length / XEN_PAGE_SIZE);
        const frame = this.#memory.allocPages(pages);
        if (frame < 0) {
          reject(new BlockError('BLK_ERR_NOMEM', `${this.#name}: no guest memory for a ${length}-byte bounce buffer`));
          return;
        }
        const bounce = this.#memory.view(frame, pages).subarray(0, length);
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
      this.#split(op, sector, vec, io);
    });
  }

  /** A request without data: flush, barrier, or discard of `nrSectors` at `sector`. */
  submitControl(op: number, sector: number, nrSectors: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const io: UserIo = { remaining: 1, error: null, resolve, reject, bounce: null };
      this.#enqueue({ op, sector, nseg: 0, frames: EMPTY_U32, first: EMPTY_U8, last: EMPTY_U8, nrSectors, io });
    });
  }

  /** Resolves once nothing is in flight. */
  whenIdle(): Promise<void> {
    if (this.#inflight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => (this.#idle = resolve));
  }

  /**
   * Frees the indirect pages and the pool; call once idle and the backend has let go of the ring
   * (it unmaps the grants it kept when it stops the ring). A pool page whose grant the backend still
   * maps is freed only once it lets go.
   */
  release(): void {
    for (const shadow of this.#shadows) {
      if (shadow.indirectFrame >= 0) this.#memory.freePages(shadow.indirectFrame, 1);
      shadow.indirectFrame = -1;
    }
    const memory = this.#memory;
    for (let e = 0; e < this.#poolFrame.length; e++) {
      const frame = this.#poolFrame[e]!;
      const ref = this.#poolRef[e]!;
      if (ref < 0) memory.freePages(frame, 1);
      else endAccessOrRetry(this.#grants, ref, () => memory.freePages(frame, 1));
    }
    this.#poolFrame.length = 0;
    this.#poolRef.length = 0;
    this.#poolGranted.length = 0;
    this.#poolBare.length = 0;
  }

  #grantable(iov: readonly Uint8Array[]): boolean {
    const buffer = this.#memory.buffer;
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
    if (!this.#pumpScheduled) {
      this.#pumpScheduled = true;
      queueMicrotask(this.#pump);
    }
  }

  /** Moves queued pieces onto the ring while it has room, then publishes them with one notify at most. */
  readonly #pump = (): void => {
    this.#pumpScheduled = false;
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
      this.#stats.queued += waiting;
      if (waiting > this.#stats.maxQueued) this.#stats.maxQueued = waiting;
    }
    if (pushed > 0 && this.#ring.pushRequestsAndCheckNotify()) {
      this.#stats.notifies++;
      this.#events.notify();
    }
  };

  #issue(piece: Piece): boolean {
    const id = this.#freeIds[this.#freeIds.length - 1]!;
    const shadow = this.#shadows[id]!;
    if (this.#persistent) {
      if (!this.#takePoolPages(piece, shadow)) return false;
    } else {
      const readOnlyGrant = piece.op !== BLKIF_OP.READ; // the backend only reads pages we write from
      for (let i = 0; i < piece.nseg; i++) {
        const ref = this.#grants.grantAccess(this.#backendId, piece.frames[i]!, readOnlyGrant);
        if (ref < 0) {
          this.#ungrant(shadow, i);
          return false;
        }
        shadow.refs[i] = ref;
      }
    }
    const indirect = piece.nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST;
    if (indirect && !this.#grantIndirectPage(piece, shadow)) {
      this.#ungrant(shadow, piece.nseg);
      return false;
    }
    this.#freeIds.pop();
    shadow.piece = piece;
    const r = this.#req;
    r.operation = piece.op;
    r.handle = this.#handle;
    r.idLo = id;
    r.idHi = 0;
    r.sectorNumber = piece.sector;
    if (indirect) {
      r.operation = BLKIF_OP.INDIRECT;
      r.indirectOp = piece.op;
      r.indirectNrSegments = piece.nseg;
      r.indirectGrefs.fill(0);
      r.indirectGrefs[0] = shadow.indirectRef;
      this.#stats.indirect++;
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
    this.#stats.requests++;
    return true;
  }

  /** Revokes the first `count` data grants of a request that could not be issued (never published: none is mapped). */
  #ungrant(shadow: Shadow, count: number): void {
    if (this.#persistent) {
      // Pool grants stay granted: they go back to the pool as they are.
      for (let j = 0; j < count; j++) {
        this.#poolGranted.push(shadow.entries[j]!);
        shadow.entries[j] = -1;
        shadow.refs[j] = -1;
      }
      return;
    }
    for (let j = 0; j < count; j++) {
      this.#grants.endAccess(shadow.refs[j]!);
      shadow.refs[j] = -1;
    }
  }

  /**
   * Persistent grants: a pool page for each segment, at the segment's own offset in the page (Linux
   * blkif_setup_rw_req_grant), with a write's data copied in. False, taking nothing, when the pool
   * cannot give enough (out of guest memory or grants).
   */
  #takePoolPages(piece: Piece, shadow: Shadow): boolean {
    const mem = this.#mem;
    const write = piece.op !== BLKIF_OP.READ;
    for (let i = 0; i < piece.nseg; i++) {
      const e = this.#takeEntry();
      if (e < 0) {
        this.#ungrant(shadow, i);
        return false;
      }
      shadow.entries[i] = e;
      shadow.refs[i] = this.#poolRef[e]!;
      if (write) {
        const from = piece.frames[i]! * XEN_PAGE_SIZE + piece.first[i]! * SECTOR_SIZE;
        const to = this.#poolFrame[e]! * XEN_PAGE_SIZE + piece.first[i]! * SECTOR_SIZE;
        mem.copyWithin(to, from, from + (piece.last[i]! - piece.first[i]! + 1) * SECTOR_SIZE);
      }
    }
    return true;
  }

  /** A free pool entry, granted (writable: a page carries reads and writes in turn), or -1. */
  #takeEntry(): number {
    const granted = this.#poolGranted.pop();
    if (granted !== undefined) return granted;
    let e = this.#poolBare.pop();
    if (e === undefined) {
      if (this.#poolFrame.length >= this.#poolMax) return -1;
      const frame = this.#memory.allocPages(1);
      if (frame < 0) return -1;
      e = this.#poolFrame.length;
      this.#poolFrame.push(frame);
      this.#poolRef.push(-1);
    }
    const ref = this.#grants.grantAccess(this.#backendId, this.#poolFrame[e]!, false);
    if (ref < 0) {
      this.#poolBare.push(e);
      return -1;
    }
    this.#poolRef[e] = ref;
    return e;
  }

  /**
   * An answered request's pool entry goes back. If the backend still maps its grant it chose to keep
   * it: we keep it too, and it is reused first. Otherwise the grant ends and the page waits,
   * ungranted, to be granted again when needed (Linux blkif_completion).
   */
  #putEntry(e: number): void {
    if (!this.#grants.endAccess(this.#poolRef[e]!)) {
      this.#poolGranted.push(e);
      return;
    }
    this.#poolRef[e] = -1;
    this.#poolBare.push(e);
  }

  /**
   * Writes the piece's segment list to the slot's indirect page and grants it (read-only), or to a
   * pool page (persistent grants); false if out of memory or grants.
   */
  #grantIndirectPage(piece: Piece, shadow: Shadow): boolean {
    if (this.#persistent) {
      const e = this.#takeEntry();
      if (e < 0) return false;
      const refs = this.#segRefs;
      for (let i = 0; i < piece.nseg; i++) refs[i] = shadow.refs[i]!;
      encodeIndirectSegments(this.#memory.view(this.#poolFrame[e]!, 1), piece.nseg, refs, piece.first, piece.last, 0);
      shadow.indirectEntry = e;
      shadow.indirectRef = this.#poolRef[e]!;
      return true;
    }
    if (shadow.indirectFrame < 0) {
      shadow.indirectFrame = this.#memory.allocPages(1);
      if (shadow.indirectFrame < 0) return false;
    }
    const refs = this.#segRefs;
    for (let i = 0; i < piece.nseg; i++) refs[i] = shadow.refs[i]!;
    encodeIndirectSegments(this.#memory.view(shadow.indirectFrame, 1), piece.nseg, refs, piece.first, piece.last, 0);
    const ref = this.#grants.grantAccess(this.#backendId, shadow.indirectFrame, true);
    if (ref < 0) return false;
    shadow.indirectRef = ref;
    return true;
  }

  readonly #onEvent = (): void => {
    this.#stats.events++;
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
      this.#stats.errors++;
      return; // a response for no request of ours: ignore it
    }
    this.#stats.responses++;
    this.#responses++;
    if (this.#persistent) this.#returnPoolPages(piece, shadow, rsp.status === BLKIF_RSP.OKAY);
    else {
      for (let i = 0; i < piece.nseg; i++) {
        endAccessOrRetry(this.#grants, shadow.refs[i]!);
        shadow.refs[i] = -1;
      }
      if (shadow.indirectRef >= 0) {
        endAccessOrRetry(this.#grants, shadow.indirectRef);
        shadow.indirectRef = -1;
      }
    }
    shadow.piece = null;
    this.#freeIds.push(id);
    this.#inflight--;
    const io = piece.io;
    if (rsp.status !== BLKIF_RSP.OKAY && io.error === null) {
      this.#stats.errors++;
      const what = OP_NAMES[piece.op] ?? `op ${piece.op}`;
      const status = rsp.status === BLKIF_RSP.EOPNOTSUPP ? 'EOPNOTSUPP' : 'ERROR';
      io.error = new BlockError(
        'BLK_ERR_IO',
        `${this.#name}: backend answered BLKIF_RSP_${status} to ${what} of ${piece.nrSectors} sectors at sector ${piece.sector}`,
        {
          errno: rsp.status === BLKIF_RSP.EOPNOTSUPP ? Errno.EOPNOTSUPP : Errno.EIO,
        },
      );
    }
    if (--io.remaining === 0) this.#finish(io, piece.op);
    if (this.#inflight === 0 && this.#idle !== null) {
      const idle = this.#idle;
      this.#idle = null;
      idle();
    }
  }

  /** Persistent grants: a read's data is copied out of the pool pages (if it succeeded), and the pages go back. */
  #returnPoolPages(piece: Piece, shadow: Shadow, ok: boolean): void {
    const mem = this.#mem;
    const read = ok && piece.op === BLKIF_OP.READ;
    for (let i = 0; i < piece.nseg; i++) {
      const e = shadow.entries[i]!;
      if (read) {
        const from = this.#poolFrame[e]! * XEN_PAGE_SIZE + piece.first[i]! * SECTOR_SIZE;
        const to = piece.frames[i]! * XEN_PAGE_SIZE + piece.first[i]! * SECTOR_SIZE;
        mem.copyWithin(to, from, from + (piece.last[i]! - piece.first[i]! + 1) * SECTOR_SIZE);
      }
      this.#putEntry(e);
      shadow.entries[i] = -1;
      shadow.refs[i] = -1;
    }
    if (shadow.indirectEntry >= 0) {
      this.#putEntry(shadow.indirectEntry);
      shadow.indirectEntry = -1;
      shadow.indirectRef = -1;
    }
  }

  #finish(io: UserIo, op: number): void {
    const bounce = io.bounce;
    if (bounce !== null) {
      if (op === BLKIF_OP.READ && io.error === null) {
        const src = this.#memory.view(bounce.frame, bounce.pages);
        let at = 0;
        for (const b of bounce.iov) {
          b.set(src.subarray(at, at + b.length));
          at += b.length;
        }
      }
      this.#memory.freePages(bounce.frame, bounce.pages);
    }
    if (io.error !== null) io.reject(io.error);
    else io.resolve();
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
