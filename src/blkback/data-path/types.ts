// How a request's data gets between the guest's granted pages and the store. Three ways, one
// interface; the ring server picks one when the ring connects and never asks which it has:
//
//   map         grant-map the request's pages, I/O straight into them, unmap when answered
//   persistent  map each grant once and keep it (feature-persistent); per-request maps past the limit
//   copy        GNTTABOP_copy between the guest's pages and our own bounce pages
//
//   take ─► attach ─► [fetch: copy brings a write's data in] ─► store ─► [deliver: copy sends a
//           read's data out] ─► answer ─► release
//
// Every step that may cost a grant call takes a batch (a turn's indirect lists, a turn's writes, the
// reads that completed together), so that on real Xen a batch is one GNTTABOP_copy hypercall.
import { decodeIndirectSegments } from '../../blkif/codec.ts';
import { BLKIF_RSP, SEGS_PER_INDIRECT_FRAME } from '../../blkif/constants.ts';
import type { GrantMapping } from '../../hypervisor/types.ts';
import { rejection } from '../request-validator.ts';
import type { Rejection } from '../request-validator.ts';

/**
 * How guest data reaches the store. `map`: grant-map the guest's pages and do I/O straight into them
 * (zero-copy; on the simulator a mapping is just a view). `copy`: GNTTABOP_copy between the guest's
 * pages and our own bounce pages: one hypercall per batch and no mapping to tear down, which on real
 * Xen is cheaper than map+unmap and immune to XSA-229-style unmap races. `persistent`: `map`, but each
 * grant is mapped once and kept (feature-persistent): in the steady state no grant call at all, the
 * fastest on real Xen (docs/xen-tcg.md).
 */
export type DataPath = 'map' | 'copy' | 'persistent';

/** A request's segments, and what a data path holds for it while it is in flight. */
export interface SegmentRequest {
  readonly nseg: number;
  readonly segGref: Uint32Array;
  readonly segFirst: Uint8Array;
  readonly segLast: Uint8Array;
  /** What the store reads or writes: filled by attach(), emptied by the ring server once answered. */
  readonly iov: Uint8Array[];
  /** `map` (and `persistent` when it maps per request): the request's own mapping. */
  mapping: GrantMapping | null;
  /** `copy`: the bounce pages the request holds, as page indices in the path's pool. */
  readonly bouncePages: number[];
}

/** An indirect request's segment list, copied out of its granted pages. */
export interface SegmentList {
  readonly gref: Uint32Array;
  readonly first: Uint8Array;
  readonly last: Uint8Array;
}

/** An indirect request whose segment list is still in the guest's pages. */
export interface IndirectRequest {
  /** The pages holding the list (the request's indirect_grefs), `indirectPages` of them used. */
  readonly indirectRefs: Uint32Array;
  readonly indirectPages: number;
  /** Entries in the list. */
  readonly indirectCount: number;
  /** Where the list is copied to (at least indirectCount entries). */
  readonly segmentList: SegmentList;
}

/** What attach() did: the vector is ready for the store, or will be once fetch() has run (a write on `copy`). */
export type Attached = 'ready' | 'fetch';

export interface GuestDataPath {
  readonly kind: DataPath;
  /** Grants kept mapped across requests (`persistent`); 0 on the other paths. */
  readonly grantsKept: number;
  /**
   * False while a request might not get what attach() needs (`copy`: bounce pages). The ring then
   * takes nothing more until a request is released.
   */
  canTakeRequest(): boolean;
  /**
   * Copies the segment lists of indirect requests[0..count) out of their granted pages, in one
   * batch; then calls read() or failed() for each, in order.
   */
  readIndirect<R extends IndirectRequest>(
    requests: readonly R[],
    count: number,
    read: (request: R) => void,
    failed: (request: R, why: Rejection) => void,
  ): void;
  /** Builds request.iov over its segments. `deviceWrites`: the store fills the pages (a read), so the grants must be writable. */
  attach(request: SegmentRequest, deviceWrites: boolean): Attached | Rejection;
  /**
   * Brings the guest's data into the vectors of requests[0..count), each attached with 'fetch', in
   * one batch; then calls ready() or failed() for each, in order.
   */
  fetch<R extends SegmentRequest>(requests: readonly R[], count: number, ready: (request: R) => void, failed: (request: R, why: Rejection) => void): void;
  /**
   * True when a read's data is not the guest's until deliver() has run (`copy`); false when the
   * store reads straight into the guest's pages.
   */
  readonly delivers: boolean;
  /**
   * The store has filled the vectors of reads requests[0..count): makes them the guest's data, in
   * one batch; then calls delivered() or failed() for each, in order.
   */
  deliver<R extends SegmentRequest>(requests: readonly R[], count: number, delivered: (request: R) => void, failed: (request: R, why: Rejection) => void): void;
  /** The request is answered: lets go of what attach() took (not of request.iov, the ring server's). */
  release(request: SegmentRequest): void;
  /** The ring has stopped and nothing is in flight: lets go of everything kept. */
  close(): void;
}

/**
 * What the mapping paths (grant map, persistent grants) share: the store works in the guest's own
 * mapped pages, so there is nothing to bring in before a write or send out after a read.
 */
export abstract class InPlaceDataPath implements GuestDataPath {
  abstract readonly kind: DataPath;
  abstract readonly grantsKept: number;
  abstract canTakeRequest(): boolean;
  abstract readIndirect<R extends IndirectRequest>(
    requests: readonly R[],
    count: number,
    read: (request: R) => void,
    failed: (request: R, why: Rejection) => void,
  ): void;
  abstract attach(request: SegmentRequest, deviceWrites: boolean): Attached | Rejection;
  abstract release(request: SegmentRequest): void;
  abstract close(): void;

  readonly delivers = false;

  fetch<R extends SegmentRequest>(requests: readonly R[], count: number, ready: (request: R) => void): void {
    for (let i = 0; i < count; i++) ready(requests[i]!);
  }

  deliver<R extends SegmentRequest>(requests: readonly R[], count: number, delivered: (request: R) => void): void {
    for (let i = 0; i < count; i++) delivered(requests[i]!);
  }
}

/** A grant that did not map or copy: the guest's fault, answered BLKIF_RSP_ERROR and counted as bad_grant. */
export function grantFailure(reason: string): Rejection {
  return rejection(BLKIF_RSP.ERROR, 'bad_grant', reason);
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Decodes indirect page `index` of a list of `count` entries into `into`. */
export function decodeIndirectPage(page: Uint8Array, index: number, count: number, into: SegmentList): void {
  const at = index * SEGS_PER_INDIRECT_FRAME;
  decodeIndirectSegments(page, Math.min(SEGS_PER_INDIRECT_FRAME, count - at), into.gref, into.first, into.last, at);
}
