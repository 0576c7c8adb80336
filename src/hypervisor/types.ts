// What the protocol engines (blkback, blkfront) need from a hypervisor. The simulation in
// src/hypervisor/sim implements it with worker threads and shared memory; a real-Xen binding
// (/dev/xen/gntdev, /dev/xen/evtchn, xenstored's socket) can implement the backend half later.
// Nothing here leaks a raw offset into guest memory: a mapping is a set of views.

import type { XenstoreClient } from '../xenstore/types.ts';

export { XEN_PAGE_SIZE as PAGE_SIZE, DOMID_SELF, GNTST } from '../abi/xen.ts';
// The xenstore client interface lives with xenstore, which must not import this layer.
export type { XenstoreClient, XsPermission, XsWatchCallback } from '../xenstore/types.ts';

// ---------------------------------------------------------------- event channels

export interface EventChannel {
  readonly localPort: number;
  /** Set the remote port pending and raise its upcall (EVTCHNOP_send). */
  notify(): void;
  /** Called after events on this port were delivered (several notifies may coalesce into one call). */
  onEvent(handler: () => void): void;
  mask(): void;
  /** Unmask; if an event arrived while masked it is delivered. */
  unmask(): void;
  close(): void;
}

// ---------------------------------------------------------------- grants (backend side)

export interface GrantMapping {
  /** One PAGE_SIZE view per ref, in the order mapped. Valid until unmap(); stays valid if the guest rewrites its grant entry. */
  readonly pages: readonly Uint8Array[];
  unmap(): void;
}

/** One grant copy operation; `ref` sides name a page granted by `domid`, buffer sides a local buffer. */
export type GrantCopyEnd = { readonly ref: number; readonly domid: number; readonly offset: number } | { readonly buffer: Uint8Array };

export interface GrantCopyOp {
  readonly source: GrantCopyEnd;
  readonly dest: GrantCopyEnd;
  readonly length: number;
}

export interface BackendGrants {
  /**
   * Maps refs 0..count-1 of `refs` granted to us by `domid`. All or nothing: if one ref is not a
   * valid grant to this domain (or is read-only while `writable`), nothing stays mapped and a
   * GrantError naming the ref and its GNTST code is thrown.
   */
  map(domid: number, refs: ArrayLike<number>, count: number, writable: boolean): GrantMapping;
  /**
   * GNTTABOP_copy: returns one GNTST code per op. A `buffer` end must lie in memory from
   * allocBuffer() (else GNTST_general_error, in the simulation too: see grant-arguments.ts).
   */
  copy(ops: readonly GrantCopyOp[]): number[];
  /**
   * Page-aligned local memory (zeroed) for bounce buffers: the only memory copy() ops may name as
   * `buffer` ends (a real hypervisor needs its address), and aligned for O_DIRECT I/O.
   */
  allocBuffer(bytes: number): Uint8Array;
}

export interface BackendEvents {
  /** Binds to an unbound port the remote domain allocated for us. Throws if it is not one. */
  bindInterdomain(remoteDomid: number, remotePort: number): EventChannel;
}

/** What a backend running in a driver domain (dom0) gets from its hypervisor. */
export interface BackendHypervisor {
  readonly domid: number;
  readonly grants: BackendGrants;
  readonly events: BackendEvents;
  readonly xenstore: XenstoreClient;
}

// ---------------------------------------------------------------- guest side

export interface GuestMemory {
  /** The whole guest RAM (a shared, page-aligned WebAssembly.Memory buffer). */
  readonly buffer: SharedArrayBuffer;
  readonly pages: number;
  /** Allocates `count` contiguous PAGE_SIZE frames; returns the first frame number or -1. */
  allocPages(count: number): number;
  freePages(frame: number, count: number): void;
  /** A view of `count` frames starting at `frame`. */
  view(frame: number, count?: number): Uint8Array;
}

export interface GuestGrants {
  /** Fills a free grant entry: frame `frame` accessible to `domid`; returns the ref, or -1 when the table is full. */
  grantAccess(domid: number, frame: number, readOnly: boolean): number;
  /** Revokes a grant (gnttab_end_foreign_access_ref). Returns false, changing nothing, while the other side has it mapped. */
  endAccess(ref: number): boolean;
  readonly freeCount: number;
}

export interface GuestEvents {
  /** EVTCHNOP_alloc_unbound: a port the remote domain may bind to. */
  allocUnbound(remoteDomid: number): EventChannel;
}

export interface GuestHypervisor {
  readonly domid: number;
  readonly memory: GuestMemory;
  readonly grants: GuestGrants;
  readonly events: GuestEvents;
  readonly xenstore: XenstoreClient;
}
