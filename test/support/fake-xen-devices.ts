// A stand-in for a Xen dom0's devices, for testing the Xen adapters without Xen: foreign domains
// with pages and a grant table, their event ports, gntdev's all-or-nothing maps and per-segment
// grant copy (read from packed segments in "native" memory, as the kernel reads them), and the
// evtchn driver's rule that a reported port stays masked until unmasked.
//
// Native memory is simulated: each allocation is an ArrayBuffer at a made-up address. A writable
// one-page mapping is the guest's frame itself, as gntdev's is, so a shared ring works: both sides see
// each other's writes at once. Any other mapping is a snapshot of the granted pages (one ArrayBuffer
// cannot alias several separate frames), written back to the guest on unmap when writable; on a
// read-only mapping (PROT_READ on real Xen, where a write kills the process) writes never reach the
// guest and are counted in readOnlyWrites. Unmapped snapshots and freed views are detached, so stale
// use shows up as zero-length views instead of reading someone else's memory.

import { GNTDEV_MAP_LIMIT } from '../../src/hypervisor/grant-arguments.ts';
import { PAGE_SIZE, GNTST } from '../../src/hypervisor/types.ts';
import type { EvtchnDevice, GnttabDevice, NativeMemory, NativeRegion, PendingListener, XenDevices } from '../../src/hypervisor/xen/devices.ts';
import {
  checkAllocPagesBytes,
  GNTCOPY_dest_gref,
  GNTCOPY_source_gref,
  SEG_DEST,
  SEG_FLAGS,
  SEG_FOREIGN_DOMID,
  SEG_FOREIGN_OFFSET,
  SEG_FOREIGN_REF,
  SEG_LEN,
  SEG_SIZE,
  SEG_SOURCE,
  SEG_STATUS,
} from '../../src/hypervisor/xen/devices.ts';
import { XenDeviceError } from '../../src/hypervisor/xen/errors.ts';
import { constants } from 'node:os';

const E = constants.errno;
const LE = true;
const BASE_ADDRESS = 0x7f00_0000_0000;

interface Grant {
  readonly frame: number;
  readonly readOnly: boolean;
  readonly to: number;
}

interface GuestPort {
  /** The backend's local port once bound, else -1 (unbound for the backend). */
  bound: number;
  notifications: number;
}

function detach(buffer: ArrayBuffer): void {
  structuredClone(buffer, { transfer: [buffer] });
}

/** A foreign domain as the fake sees it: its frames, its grant table and its event ports. */
export class FakeForeignDomain {
  readonly domid: number;
  readonly #frames: Uint8Array[];
  readonly grants = new Map<number, Grant>();
  readonly ports = new Map<number, GuestPort>();
  #nextPort = 1;
  /** Set by the fake: raises the backend port bound to one of ours. */
  sendToBackend: ((guestPort: number) => void) | undefined;

  constructor(domid: number, frames: number) {
    this.domid = domid;
    this.#frames = Array.from({ length: frames }, () => new Uint8Array(PAGE_SIZE));
  }

  page(frame: number): Uint8Array {
    const page = this.#frames[frame];
    if (page === undefined) throw new RangeError(`domain ${this.domid} has no frame ${frame}`);
    return page;
  }

  /** gnttab_grant_foreign_access: `ref` lets domain `to` (default 0) at `frame`. */
  grant(ref: number, frame: number, readOnly = false, to = 0): void {
    this.page(frame);
    this.grants.set(ref, { frame, readOnly, to });
  }

  revoke(ref: number): void {
    this.grants.delete(ref);
  }

  /** EVTCHNOP_alloc_unbound for the backend: the port the backend will bind to. */
  allocUnbound(): number {
    const port = this.#nextPort++;
    this.ports.set(port, { bound: -1, notifications: 0 });
    return port;
  }

  /** How many times the backend notified this port. */
  notifications(port: number): number {
    return this.ports.get(port)?.notifications ?? 0;
  }

  /** The guest notifies the backend over `port`. */
  notify(port: number): void {
    this.sendToBackend?.(port);
  }
}

interface Region {
  readonly address: number;
  readonly view: ArrayBuffer;
}

interface Mapping {
  readonly domain: FakeForeignDomain;
  readonly frames: number[];
  readonly writable: boolean;
  readonly snapshot: Uint8Array;
  readonly view: ArrayBuffer;
  /** The view is the guest's frame (a writable one-page run), not a snapshot. */
  readonly live: boolean;
}

interface BackendPort {
  readonly domain: FakeForeignDomain;
  readonly remotePort: number;
  /** Reported to the listener and not yet unmasked. */
  masked: boolean;
  /** Raised while masked: delivered again at unmask. */
  pending: boolean;
}

export class FakeXenDevices implements XenDevices {
  /** The domain these devices speak for (grants must be made to it). */
  readonly domid: number;
  readonly domains = new Map<number, FakeForeignDomain>();
  /** Calls made through the device surface, by name: what the adapters asked of "the kernel". */
  readonly calls = new Map<string, number>();
  /** Writes found on a read-only mapping at unmap (on real Xen each would have been a SIGSEGV). */
  readOnlyWrites = 0;
  readonly gnttab: GnttabDevice;
  readonly evtchn: EvtchnDevice;
  readonly memory: NativeMemory;
  readonly #regions = new Map<number, Region>();
  readonly #mappings = new Map<number, Mapping>();
  readonly #ports = new Map<number, BackendPort>();
  #nextAddress = BASE_ADDRESS;
  #nextPort = 1;
  #listener: PendingListener | undefined;
  #reports: number[] = [];
  #lost = false;
  #reportScheduled = false;
  #closed = false;

  constructor(domid = 0) {
    this.domid = domid;
    this.memory = {
      allocPages: (bytes) => this.#allocPages(bytes),
      freePages: (address, bytes) => this.#freePages(address, bytes),
    };
    this.gnttab = {
      mapDomainGrantRefs: (domid, refs, count, writable) => this.#map(domid, refs, count, writable),
      unmap: (address, count) => this.#unmap(address, count),
      grantCopy: (segments, count) => this.#grantCopy(segments, count),
    };
    this.evtchn = {
      bindInterdomain: (domid, remotePort) => this.#bind(domid, remotePort),
      notify: (port) => this.#notify(port),
      unmask: (port) => this.#unmask(port),
      unbind: (port) => this.#unbind(port),
      listen: (listener) => {
        this.#count('listen');
        this.#listener = listener;
      },
    };
  }

  addDomain(domid: number, frames = 16): FakeForeignDomain {
    const domain = new FakeForeignDomain(domid, frames);
    domain.sendToBackend = (guestPort) => {
      const bound = domain.ports.get(guestPort)?.bound ?? -1;
      if (bound >= 0) this.#raise(bound);
    };
    this.domains.set(domid, domain);
    return domain;
  }

  /** Grant runs still mapped. */
  get mappedRuns(): number {
    return this.#mappings.size;
  }

  /** Native regions still allocated (mappings not included). */
  get allocatedRegions(): number {
    return this.#regions.size;
  }

  /** Backend ports still bound. */
  get boundPorts(): number {
    return this.#ports.size;
  }

  /** Whether the backend's `port` is masked in the "kernel" (reported, not yet unmasked). */
  isMasked(port: number): boolean {
    return this.#ports.get(port)?.masked ?? false;
  }

  /** Simulates the kernel's pending ring overflowing: the listener hears `lost`. */
  loseEvents(): void {
    this.#lost = true;
    this.#scheduleReport();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async close(): Promise<void> {
    this.#count('close');
    this.#closed = true;
    this.#listener = undefined;
  }

  // ---------------------------------------------------------------- memory

  #allocPages(bytes: number): NativeRegion {
    this.#count('allocPages');
    checkAllocPagesBytes(bytes);
    const region = this.#newRegion(bytes);
    this.#regions.set(region.address, region);
    return { address: BigInt(region.address), view: region.view };
  }

  #freePages(address: bigint, bytes: number): void {
    this.#count('freePages');
    const region = this.#regions.get(Number(address));
    if (region === undefined || region.view.byteLength !== bytes) throw new XenDeviceError('munmap', E.EINVAL, `0x${address.toString(16)}`);
    this.#regions.delete(region.address);
    detach(region.view);
  }

  #newRegion(bytes: number): Region {
    const address = this.#nextAddress;
    this.#nextAddress += bytes + PAGE_SIZE; // a guard page between regions
    return { address, view: new ArrayBuffer(bytes) };
  }

  /** The allocated region holding [address, address + length), and the offset in it. */
  #resolve(address: number, length: number): { view: ArrayBuffer; offset: number } | undefined {
    for (const region of this.#regions.values()) {
      const offset = address - region.address;
      if (offset >= 0 && offset + length <= region.view.byteLength) return { view: region.view, offset };
    }
    return undefined;
  }

  // ---------------------------------------------------------------- gntdev

  #checkOpen(op: string): void {
    this.#count(op);
    if (this.#closed) throw new XenDeviceError(op, E.EBADF, 'the Xen devices are closed');
  }

  #map(domid: number, refs: Uint32Array, count: number, writable: boolean): NativeRegion {
    this.#checkOpen('mapDomainGrantRefs');
    // gntdev_test_page_count: IOCTL_GNTDEV_MAP_GRANT_REF refuses no refs and more than its limit.
    if (count === 0 || count > GNTDEV_MAP_LIMIT) throw new XenDeviceError('xengnttab_map_domain_grant_refs', E.EINVAL, `${count} refs`);
    const domain = this.domains.get(domid);
    if (domain === undefined) throw new XenDeviceError('xengnttab_map_domain_grant_refs', E.EINVAL, `no domain ${domid}`);
    const frames: number[] = [];
    for (let i = 0; i < count; i++) {
      const grant = domain.grants.get(refs[i]!);
      // gntdev folds every per-ref GNTST into one errno for the whole run, as this does.
      if (grant === undefined || grant.to !== this.domid || (writable && grant.readOnly)) {
        throw new XenDeviceError('xengnttab_map_domain_grant_refs', E.EINVAL, `${count} refs of domain ${domid}`);
      }
      frames.push(grant.frame);
    }
    if (count === 1 && writable) {
      // Each frame is its own PAGE_SIZE ArrayBuffer: hand out the frame itself, at a fresh address.
      const address = this.#newRegion(PAGE_SIZE).address;
      const view = domain.page(frames[0]!).buffer as ArrayBuffer;
      this.#mappings.set(address, { domain, frames, writable, snapshot: new Uint8Array(0), view, live: true });
      return { address: BigInt(address), view };
    }
    const region = this.#newRegion(count * PAGE_SIZE);
    const bytes = new Uint8Array(region.view);
    for (let i = 0; i < count; i++) bytes.set(domain.page(frames[i]!), i * PAGE_SIZE);
    this.#mappings.set(region.address, { domain, frames, writable, snapshot: bytes.slice(), view: region.view, live: false });
    return { address: BigInt(region.address), view: region.view };
  }

  #unmap(address: bigint, count: number): void {
    this.#checkOpen('unmap');
    const mapping = this.#mappings.get(Number(address));
    if (mapping === undefined || mapping.frames.length !== count) throw new XenDeviceError('xengnttab_unmap', E.EINVAL, `0x${address.toString(16)}`);
    this.#mappings.delete(Number(address));
    if (mapping.live) return; // the guest's own page: nothing to write back, and it must stay attached
    const bytes = new Uint8Array(mapping.view);
    for (let i = 0; i < count; i++) {
      const mapped = bytes.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
      if (mapping.writable) {
        mapping.domain.page(mapping.frames[i]!).set(mapped);
      } else if (Buffer.compare(mapped, mapping.snapshot.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)) !== 0) {
        this.readOnlyWrites++;
      }
    }
    detach(mapping.view);
  }

  #grantCopy(segments: bigint, count: number): void {
    this.#checkOpen('grantCopy');
    const at = this.#resolve(Number(segments), count * SEG_SIZE);
    if (at === undefined) throw new XenDeviceError('xengnttab_grant_copy', E.EFAULT, 'segment array is not native memory');
    const view = new DataView(at.view, at.offset, count * SEG_SIZE);
    // Like Linux's gntdev, refuse the whole batch for a malformed segment before copying anything.
    for (let i = 0; i < count; i++) {
      const base = i * SEG_SIZE;
      const flags = view.getUint16(base + SEG_FLAGS, LE);
      const len = view.getUint16(base + SEG_LEN, LE);
      if ((flags & (GNTCOPY_source_gref | GNTCOPY_dest_gref)) === 0)
        throw new XenDeviceError('xengnttab_grant_copy', E.EINVAL, `segment ${i} is local to local`);
      for (const [side, bit] of [
        [SEG_SOURCE, GNTCOPY_source_gref],
        [SEG_DEST, GNTCOPY_dest_gref],
      ] as const) {
        if ((flags & bit) !== 0) {
          if (view.getUint16(base + side + SEG_FOREIGN_OFFSET, LE) + len > PAGE_SIZE)
            throw new XenDeviceError('xengnttab_grant_copy', E.EINVAL, `segment ${i} crosses a page`);
        } else if (this.#resolve(this.#virt(view, base + side), len) === undefined) {
          throw new XenDeviceError('xengnttab_grant_copy', E.EFAULT, `segment ${i} names memory that is not mapped`);
        }
      }
    }
    for (let i = 0; i < count; i++) {
      const base = i * SEG_SIZE;
      const flags = view.getUint16(base + SEG_FLAGS, LE);
      const len = view.getUint16(base + SEG_LEN, LE);
      const src = this.#end(view, base + SEG_SOURCE, (flags & GNTCOPY_source_gref) !== 0, len, false);
      const dst = typeof src === 'number' ? src : this.#end(view, base + SEG_DEST, (flags & GNTCOPY_dest_gref) !== 0, len, true);
      if (typeof src !== 'number' && typeof dst !== 'number') dst.set(src);
      view.setInt16(base + SEG_STATUS, typeof dst === 'number' ? dst : GNTST.okay, LE);
    }
  }

  #virt(view: DataView, at: number): number {
    return view.getUint32(at, LE) + view.getUint32(at + 4, LE) * 0x1_0000_0000;
  }

  /** One side of a segment as bytes, or the GNTST code Xen's acquire_grant_for_copy would give. */
  #end(view: DataView, at: number, foreign: boolean, len: number, writing: boolean): Uint8Array | number {
    if (!foreign) {
      const local = this.#resolve(this.#virt(view, at), len)!;
      return new Uint8Array(local.view, local.offset, len);
    }
    const domain = this.domains.get(view.getUint16(at + SEG_FOREIGN_DOMID, LE));
    if (domain === undefined) return GNTST.bad_domain;
    const grant = domain.grants.get(view.getUint32(at + SEG_FOREIGN_REF, LE));
    if (grant === undefined) return GNTST.bad_gntref;
    if (grant.to !== this.domid || (writing && grant.readOnly)) return GNTST.general_error;
    const offset = view.getUint16(at + SEG_FOREIGN_OFFSET, LE);
    return domain.page(grant.frame).subarray(offset, offset + len);
  }

  // ---------------------------------------------------------------- evtchn

  #bind(domid: number, remotePort: number): number {
    this.#checkOpen('bindInterdomain');
    const domain = this.domains.get(domid);
    if (domain === undefined) throw new XenDeviceError('xenevtchn_bind_interdomain', E.ESRCH, `no domain ${domid}`);
    const guest = domain.ports.get(remotePort);
    if (guest === undefined || guest.bound >= 0)
      throw new XenDeviceError('xenevtchn_bind_interdomain', E.EINVAL, `port ${remotePort} of domain ${domid} is not unbound`);
    const port = this.#nextPort++;
    guest.bound = port;
    this.#ports.set(port, { domain, remotePort, masked: false, pending: false });
    this.#raise(port); // Xen sets a newly bound local port pending
    return port;
  }

  #notify(port: number): void {
    this.#checkOpen('notify');
    const state = this.#ports.get(port);
    if (state === undefined) throw new XenDeviceError('xenevtchn_notify', E.EINVAL, `port ${port} is not bound`);
    state.domain.ports.get(state.remotePort)!.notifications++;
  }

  #unmask(port: number): void {
    this.#checkOpen('unmask');
    const state = this.#ports.get(port);
    if (state === undefined || !state.masked) return; // the driver ignores such writes
    state.masked = false;
    if (state.pending) {
      state.pending = false;
      this.#raise(port);
    }
  }

  #unbind(port: number): void {
    this.#checkOpen('unbind');
    const state = this.#ports.get(port);
    if (state === undefined) throw new XenDeviceError('xenevtchn_unbind', E.ENOTCONN, `port ${port} is not bound`);
    this.#ports.delete(port);
    const guest = state.domain.ports.get(state.remotePort);
    if (guest !== undefined) guest.bound = -1;
  }

  /** The driver's upcall: report the port and mask it, or remember it for the unmask. */
  #raise(port: number): void {
    const state = this.#ports.get(port)!;
    if (state.masked) {
      state.pending = true;
      return;
    }
    state.masked = true;
    this.#reports.push(port);
    this.#scheduleReport();
  }

  #scheduleReport(): void {
    if (this.#reportScheduled) return;
    this.#reportScheduled = true;
    // Reports reach the listener on a later turn, as reads of the fd do.
    setImmediate(() => {
      this.#reportScheduled = false;
      const ports = this.#reports;
      const lost = this.#lost;
      this.#reports = [];
      this.#lost = false;
      if (this.#closed) return;
      if (lost) this.#listener?.([], true);
      if (ports.length > 0) this.#listener?.(ports, false);
    });
  }

  #count(op: string): void {
    this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
  }
}
