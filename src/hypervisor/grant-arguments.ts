// The arguments of BackendGrants.map, copy and allocBuffer, checked in one place for both
// implementations (sim/backend-grants.ts and xen/backend-grants.ts), which refuse a bad call with
// the same GrantError or GNTST code. The simulation is therefore at least as strict as real Xen: a
// backend bug it accepts cannot first show up on a dom0. Only the arguments are checked here;
// whether a ref is granted, to whom and how is for the grant table (Xen's or the simulation's).
//
//   argument                  accepted                        refusal              limit from
//   map count                 integer, 0..refs.length         GrantError general   this interface
//                             at most GNTDEV_MAP_LIMIT        GrantError general   Linux drivers/xen/gntdev.c `limit`
//   map writable              a boolean                       GrantError general   GNTMAP_readonly is one flag bit (grant_table.h)
//   domid (map, copy)         integer, 0..DOMID_MAX           bad_domain           domid_t, DOMID_FIRST_RESERVED (xen.h)
//   ref (map, copy)           integer, below 2^32             bad_gntref           grant_ref_t (grant_table.h)
//   copy length               integer, 0..XEN_PAGE_SIZE       bad_copy_arg         len is uint16_t; gnttab_copy's "copy
//   copy ref end offset       integer, offset + length <= XEN_PAGE_SIZE               beyond page area" (xen/common/grant_table.c),
//                                                                                  gntdev_grant_copy_seg's EINVAL (Linux)
//   copy end kind             a ref end or a Uint8Array       bad_copy_arg         GNTCOPY_source_gref/dest_gref (grant_table.h)
//   copy buffer end           at least `length` bytes         bad_copy_arg
//                             memory from allocBuffer         general_error        gntdev copies through user virtual
//                                                                                  addresses (get_user_pages): only native
//                                                                                  memory has one, never the JS heap
//   allocBuffer bytes         positive safe integer           RangeError
//
// Map refusals are thrown (map is all or nothing); copy refusals are the op's status, as
// GNTTABOP_copy reports them per op. A grant mapping's unmap() takes no arguments: nothing to check.

import { DOMID_MAX, GNTST, GRANT_REF_LIMIT, XEN_PAGE_SIZE } from '../abi/xen.ts';
import { GrantError } from './errors.ts';
import type { GrantCopyEnd, GrantCopyOp } from './types.ts';

/**
 * Grants one IOCTL_GNTDEV_MAP_GRANT_REF may map: Linux's gntdev refuses more with EINVAL (its
 * `limit` module parameter, 64 * 1024 per request by default; older kernels counted it per device).
 */
export const GNTDEV_MAP_LIMIT = 64 * 1024;

/**
 * The memory allocBuffer handed out, by its ArrayBuffer (or SharedArrayBuffer), with the native
 * address of its first byte where there is one (the simulation has none and records 0). Weak: a
 * buffer nothing else holds is forgotten.
 */
export class AllocatedBuffers {
  readonly #addresses = new WeakMap<ArrayBufferLike, number>();

  add(memory: ArrayBufferLike, address = 0): void {
    this.#addresses.set(memory, address);
  }

  has(view: Uint8Array): boolean {
    return this.#addresses.has(view.buffer);
  }

  /** The native address of view[0], or undefined when view is not allocBuffer memory. */
  addressOf(view: Uint8Array): number | undefined {
    const base = this.#addresses.get(view.buffer);
    return base === undefined ? undefined : base + view.byteOffset;
  }
}

function isDomid(domid: number): boolean {
  return Number.isInteger(domid) && domid >= 0 && domid <= DOMID_MAX;
}

function isRef(ref: number): boolean {
  return Number.isInteger(ref) && ref >= 0 && ref < GRANT_REF_LIMIT;
}

/** Throws the GrantError both implementations throw for these map() arguments; returns when they are fine. */
export function checkMapArguments(domid: number, refs: ArrayLike<number>, count: number, writable: boolean): void {
  if (!Number.isInteger(count) || count < 0 || count > refs.length) {
    throw new GrantError(-1, domid, GNTST.general_error, `map of ${count} refs from a list of ${refs.length}`);
  }
  const first = count > 0 ? refs[0]! : -1;
  if (count > GNTDEV_MAP_LIMIT) {
    throw new GrantError(first, domid, GNTST.general_error, `map of ${count} refs: gntdev maps at most ${GNTDEV_MAP_LIMIT} in one request`);
  }
  if (typeof writable !== 'boolean') throw new GrantError(first, domid, GNTST.general_error, `writable must be a boolean, not ${typeof writable}`);
  if (!isDomid(domid)) throw new GrantError(first, domid, GNTST.bad_domain, 'not a domid a grant can come from');
  for (let i = 0; i < count; i++) {
    const ref = refs[i]!;
    if (!isRef(ref)) throw new GrantError(ref, domid, GNTST.bad_gntref, 'not a grant reference (u32)');
  }
}

/**
 * GNTST.okay when `op` may be handed to the grant table, else the status both implementations
 * return for it. With `allocated` undefined a buffer end may be any Uint8Array (the simulation's
 * lenient mode); real Xen always passes its registry.
 */
export function copyOpStatus(op: GrantCopyOp, allocated: AllocatedBuffers | undefined): number {
  const length = op.length;
  if (!Number.isInteger(length) || length < 0 || length > XEN_PAGE_SIZE) return GNTST.bad_copy_arg;
  const status = endStatus(op.source, length, allocated);
  return status !== GNTST.okay ? status : endStatus(op.dest, length, allocated);
}

function endStatus(end: GrantCopyEnd, length: number, allocated: AllocatedBuffers | undefined): number {
  if ('buffer' in end) {
    const buffer = end.buffer;
    if (!(buffer instanceof Uint8Array) || length > buffer.length) return GNTST.bad_copy_arg;
    return allocated === undefined || allocated.has(buffer) ? GNTST.okay : GNTST.general_error;
  }
  if (!('ref' in end)) return GNTST.bad_copy_arg;
  if (!isRef(end.ref)) return GNTST.bad_gntref;
  if (!isDomid(end.domid)) return GNTST.bad_domain;
  const offset = end.offset;
  if (!Number.isInteger(offset) || offset < 0 || offset + length > XEN_PAGE_SIZE) return GNTST.bad_copy_arg;
  return GNTST.okay;
}

/** allocBuffer's size check, the same in both implementations. */
export function checkAllocBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new RangeError(`allocBuffer: bad size ${bytes}`);
}
