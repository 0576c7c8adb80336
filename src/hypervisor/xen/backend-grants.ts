// BackendGrants on a real Xen dom0, through the XenDevices surface (gntdev and anonymous mmap).
// map() returns PAGE_SIZE views over the pages gntdev mapped; copy() packs its ops into one native
// array of xengnttab_grant_copy_segment_t and makes one call (one ioctl, batched hypercalls);
// allocBuffer() hands out mmap'd pages whose addresses copy() may give to the hypervisor. A buffer
// copy() cannot find in that registry is refused: a JS heap pointer must never reach the kernel.

import { Errno } from '../../internal/errors.ts';
import { GrantError } from '../errors.ts';
import { AllocatedBuffers, checkAllocBytes, checkMapArguments, copyOpStatus } from '../grant-arguments.ts';
import { GNTST, PAGE_SIZE } from '../types.ts';
import type { BackendGrants, GrantCopyEnd, GrantCopyOp, GrantMapping } from '../types.ts';
import {
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
} from './devices.ts';
import type { NativeRegion, XenDevices } from './devices.ts';
import { XenDeviceError, hostErrnoName } from './errors.ts';

const LE = true;
const TWO_32 = 0x1_0000_0000;
/** copy() result for an op that went into the batch; replaced by the segment's status. */
const IN_BATCH = 1;

const NO_PAGES: readonly Uint8Array[] = Object.freeze([]);

/** The GNTST code a gntdev errno stands for (the kernel folds every per-ref status into one errno). */
function statusForErrno(errno: number): number {
  switch (errno) {
    case Errno.ENOMEM:
    case Errno.ENOSPC:
      return GNTST.no_device_space;
    case Errno.EAGAIN:
      return GNTST.eagain;
    default:
      return GNTST.general_error;
  }
}

function roundToPages(bytes: number): number {
  return Math.max(PAGE_SIZE, Math.ceil(bytes / PAGE_SIZE) * PAGE_SIZE);
}

class XenGrantMapping implements GrantMapping {
  pages: readonly Uint8Array[];
  #owner: XenBackendGrants | undefined;
  readonly #address: bigint;
  readonly #count: number;

  constructor(owner: XenBackendGrants, address: bigint, count: number, pages: readonly Uint8Array[]) {
    this.pages = pages;
    this.#owner = owner;
    this.#address = address;
    this.#count = count;
  }

  /** Unmaps once; later calls do nothing. The old views point at unmapped memory: touching one kills the process. */
  unmap(): void {
    const owner = this.#owner;
    if (owner === undefined) return;
    this.#owner = undefined;
    this.pages = NO_PAGES;
    owner.release(this.#address, this.#count);
  }
}

interface HeldBuffer {
  readonly address: bigint;
  readonly bytes: number;
}

export class XenBackendGrants implements BackendGrants {
  readonly #devices: XenDevices;
  #refs = new Uint32Array(32);
  // The reused native segment array and, per segment, the index of the op it came from.
  #segments: NativeRegion | undefined;
  #segmentView: DataView | undefined;
  #segmentBytes = 0;
  #segmentCapacity = 0;
  #opIndex = new Int32Array(0);
  /** allocBuffer's registry: each handed-out buffer's ArrayBuffer and its native address. */
  readonly #buffers = new AllocatedBuffers();
  readonly #reclaim: FinalizationRegistry<HeldBuffer>;

  constructor(devices: XenDevices) {
    this.#devices = devices;
    // A buffer's pages go back to the kernel only once nothing in JS can reach its view.
    this.#reclaim = new FinalizationRegistry<HeldBuffer>((held) => {
      try {
        devices.memory.freePages(held.address, held.bytes);
      } catch {
        // Nothing to report to: the memory stays mapped until the process exits.
      }
    });
  }

  map(domid: number, refs: ArrayLike<number>, count: number, writable: boolean): GrantMapping {
    checkMapArguments(domid, refs, count, writable);
    // gntdev refuses a map of no refs; there is nothing to map anyway.
    if (count === 0) return new XenGrantMapping(this, 0n, 0, []);
    if (this.#refs.length < count) this.#refs = new Uint32Array(Math.max(count, this.#refs.length * 2));
    const scratch = this.#refs;
    for (let i = 0; i < count; i++) scratch[i] = refs[i]!;
    let region: NativeRegion;
    try {
      region = this.#devices.gnttab.mapDomainGrantRefs(domid, scratch, count, writable);
    } catch (error) {
      if (!(error instanceof XenDeviceError)) throw error;
      throw this.#whichRefFailed(domid, refs, count, writable, error);
    }
    const pages = new Array<Uint8Array>(count);
    for (let i = 0; i < count; i++) pages[i] = new Uint8Array(region.view, i * PAGE_SIZE, PAGE_SIZE);
    return new XenGrantMapping(this, region.address, count, pages);
  }

  /** Called by XenGrantMapping.unmap. */
  release(address: bigint, count: number): void {
    if (count > 0) this.#devices.gnttab.unmap(address, count);
  }

  /**
   * Page-aligned, zeroed native memory (anonymous mmap) that copy() ops may name as `buffer` ends
   * (any subarray of it) and O_DIRECT I/O can use. Unlike the simulation's, it is not a
   * SharedArrayBuffer: it cannot be shared with workers. Unmapped once the returned array and every
   * view of its ArrayBuffer are garbage.
   */
  allocBuffer(bytes: number): Uint8Array {
    checkAllocBytes(bytes);
    const size = roundToPages(bytes);
    const region = this.#devices.memory.allocPages(size);
    const address = Number(region.address);
    if (!Number.isSafeInteger(address)) throw new RangeError(`allocBuffer: address 0x${region.address.toString(16)} is above 2^53`);
    this.#buffers.add(region.view, address);
    this.#reclaim.register(region.view, { address: region.address, bytes: size });
    return new Uint8Array(region.view, 0, bytes);
  }

  /** GNTTABOP_copy: one GNTST code per op. Ops that fail the checks here never reach the hypervisor. */
  copy(ops: readonly GrantCopyOp[]): number[] {
    const n = ops.length;
    const result = new Array<number>(n);
    if (n > this.#segmentCapacity) this.#grow(n);
    let count = 0;
    for (let i = 0; i < n; i++) {
      const status = this.#pack(ops[i]!, count);
      result[i] = status;
      if (status === IN_BATCH) this.#opIndex[count++] = i;
    }
    if (count === 0) return result;
    const view = this.#segmentView!;
    try {
      this.#devices.gnttab.grantCopy(this.#segments!.address, count);
    } catch (error) {
      if (!(error instanceof XenDeviceError)) throw error;
      for (let j = 0; j < count; j++) result[this.#opIndex[j]!] = GNTST.general_error;
      return result;
    }
    for (let j = 0; j < count; j++) result[this.#opIndex[j]!] = view.getInt16(j * SEG_SIZE + SEG_STATUS, LE);
    return result;
  }

  /** Writes op as segment `at`; returns IN_BATCH, or the final status of an op that needs no hypercall. */
  #pack(op: GrantCopyOp, at: number): number {
    const status = copyOpStatus(op, this.#buffers);
    if (status !== GNTST.okay) return status;
    const length = op.length;
    const src = op.source;
    const dst = op.dest;
    if ('buffer' in src && 'buffer' in dst) {
      // Local to local: Linux's gntdev refuses the whole batch for it, and no grant is involved.
      dst.buffer.set(src.buffer.subarray(0, length), 0);
      return GNTST.okay;
    }
    const view = this.#segmentView!;
    const base = at * SEG_SIZE;
    this.#writeEnd(view, base + SEG_SOURCE, src);
    this.#writeEnd(view, base + SEG_DEST, dst);
    view.setUint16(base + SEG_LEN, length, LE);
    view.setUint16(base + SEG_FLAGS, ('ref' in src ? GNTCOPY_source_gref : 0) | ('ref' in dst ? GNTCOPY_dest_gref : 0), LE);
    view.setInt16(base + SEG_STATUS, GNTST.general_error, LE);
    return IN_BATCH;
  }

  /** One union side: `void *virt` for a buffer, `{ ref, offset, domid }` for a foreign page. */
  #writeEnd(view: DataView, at: number, end: GrantCopyEnd): void {
    if ('buffer' in end) {
      const address = this.#buffers.addressOf(end.buffer)!; // copyOpStatus saw it is allocBuffer memory
      view.setUint32(at, address % TWO_32, LE);
      view.setUint32(at + 4, Math.floor(address / TWO_32), LE);
    } else {
      view.setUint32(at + SEG_FOREIGN_REF, end.ref, LE);
      view.setUint16(at + SEG_FOREIGN_OFFSET, end.offset, LE);
      view.setUint16(at + SEG_FOREIGN_DOMID, end.domid, LE);
    }
  }

  #grow(ops: number): void {
    const capacity = Math.max(ops, this.#segmentCapacity * 2, PAGE_SIZE / SEG_SIZE);
    const bytes = roundToPages(capacity * SEG_SIZE);
    const region = this.#devices.memory.allocPages(bytes);
    const old = this.#segments;
    this.#segments = region;
    this.#segmentView = new DataView(region.view);
    this.#segmentCapacity = Math.floor(bytes / SEG_SIZE);
    this.#opIndex = new Int32Array(this.#segmentCapacity);
    if (old !== undefined) this.#devices.memory.freePages(old.address, this.#segmentBytes);
    this.#segmentBytes = bytes;
  }

  /**
   * gntdev reports one errno for the whole batch; find the first ref that fails on its own so the
   * error can name it, as the interface promises. Only the failure path pays for this.
   */
  #whichRefFailed(domid: number, refs: ArrayLike<number>, count: number, writable: boolean, batch: XenDeviceError): GrantError {
    const one = new Uint32Array(1);
    for (let i = 0; i < count; i++) {
      one[0] = refs[i]!;
      try {
        const region = this.#devices.gnttab.mapDomainGrantRefs(domid, one, 1, writable);
        this.#devices.gnttab.unmap(region.address, 1);
      } catch (error) {
        if (!(error instanceof XenDeviceError)) throw error;
        const how = writable ? 'writable' : 'read-only';
        return new GrantError(refs[i]!, domid, statusForErrno(error.errno), `gntdev refused to map it ${how} (${hostErrnoName(error.errno)})`, {
          cause: error,
        });
      }
    }
    return new GrantError(
      refs[0]!,
      domid,
      statusForErrno(batch.errno),
      `the batch of ${count} refs failed (${hostErrnoName(batch.errno)}) though each maps alone: did the guest change its grants meanwhile?`,
      { cause: batch },
    );
  }
}
