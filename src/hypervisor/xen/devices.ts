// The narrow surface the Xen adapters (XenBackendGrants, XenBackendEvents) need from a dom0:
// libxengnttab's map/unmap/copy, libxenevtchn's bind/notify/unmask/unbind plus a stream of pending
// ports, and page-aligned native memory whose address is known. koffi-devices.ts implements it over
// the real libraries; test/support/fake-xen-devices.ts (not shipped) simulates a foreign domain for
// tests, passed in through openXenHypervisor's `devices` option. Nothing above this interface
// touches koffi.

import { XEN_PAGE_SIZE } from '../../abi/xen.ts';

/** Native memory: its address for the C side and an ArrayBuffer over it for the JS side. */
export interface NativeRegion {
  readonly address: bigint;
  readonly view: ArrayBuffer;
}

export interface GnttabDevice {
  /**
   * xengnttab_map_domain_grant_refs: maps refs[0..count) granted by `domid` into one contiguous run
   * of count pages, PROT_READ plus PROT_WRITE when `writable`. On failure nothing stays mapped and a
   * XenDeviceError carries the errno; which ref failed is not reported by the kernel.
   */
  mapDomainGrantRefs(domid: number, refs: Uint32Array, count: number, writable: boolean): NativeRegion;
  /** xengnttab_unmap of a run returned by mapDomainGrantRefs. The region's view must not be touched after. */
  unmap(address: bigint, count: number): void;
  /**
   * xengnttab_grant_copy over `count` segments packed at `segments` in the C layout below (the
   * memory must come from NativeMemory.allocPages). Per-segment GNTST codes are written into each
   * segment's status field. Throws XenDeviceError if the call as a whole fails (Linux's gntdev
   * rejects the whole batch for a local-to-local segment or offset + len past the page).
   */
  grantCopy(segments: bigint, count: number): void;
}

/**
 * Called on the JS thread with ports the kernel reported pending. Each such port stays masked (no
 * further delivery) until unmask(port). `lost` is true when the kernel's pending ring overflowed:
 * events were dropped, so every bound port must be treated as pending.
 */
export type PendingListener = (ports: ArrayLike<number>, lost: boolean) => void;

export interface EvtchnDevice {
  /** xenevtchn_bind_interdomain: the new local port (Xen marks it pending at once). Throws XenDeviceError. */
  bindInterdomain(domid: number, remotePort: number): number;
  /** xenevtchn_notify (EVTCHNOP_send on the local port). */
  notify(port: number): void;
  /** xenevtchn_unmask: allows the next delivery; an event that came while masked is delivered then. */
  unmask(port: number): void;
  /** xenevtchn_unbind. */
  unbind(port: number): void;
  /** Sets (or clears) the one listener for pending ports. Waiting happens off the JS thread. */
  listen(listener: PendingListener | undefined): void;
}

export interface NativeMemory {
  /** Anonymous, private, read-write, page-aligned memory (mmap); `bytes` is a multiple of the page size (else RangeError). */
  allocPages(bytes: number): NativeRegion;
  /** munmap of an allocPages region; its view must not be touched after. */
  freePages(address: bigint, bytes: number): void;
}

/** allocPages' size rule, shared by every NativeMemory so the fake refuses what the real one does. */
export function checkAllocPagesBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % XEN_PAGE_SIZE !== 0) {
    throw new RangeError(`allocPages: ${bytes} is not a positive multiple of ${XEN_PAGE_SIZE}`);
  }
}

export interface XenDevices {
  readonly gnttab: GnttabDevice;
  readonly evtchn: EvtchnDevice;
  readonly memory: NativeMemory;
  /** Stops the pending-port waiter and closes both handles. Mappings still open are the caller's leak. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------- xengnttab_grant_copy_segment_t
// From /usr/include/xengnttab.h (Xen 4.17), LP64 and little-endian (x86_64, arm64):
//
//   0  union { void *virt; struct { uint32_t ref; uint16_t offset; uint16_t domid; } foreign; } source
//   8  union { ... } dest
//  16  uint16_t len
//  18  uint16_t flags        GNTCOPY_source_gref (1) | GNTCOPY_dest_gref (2)  (xen/grant_table.h)
//  20  int16_t  status       GNTST_*
//  24  sizeof (8-byte aligned)
//
// The test compiles a C program against the header and checks these against it and koffi's struct.

export const SEG_SOURCE = 0;
export const SEG_DEST = 8;
/** Offsets inside one union side when it names a foreign page. */
export const SEG_FOREIGN_REF = 0;
export const SEG_FOREIGN_OFFSET = 4;
export const SEG_FOREIGN_DOMID = 6;
export const SEG_LEN = 16;
export const SEG_FLAGS = 18;
export const SEG_STATUS = 20;
export const SEG_SIZE = 24;

export { GNTCOPY_source_gref, GNTCOPY_dest_gref } from '../../abi/xen.ts';
