// The mapping domain's grant operations: GNTTABOP_map_grant_ref / unmap_grant_ref / copy with
// Xen's checks (xen/common/grant_table.c: _set_status_v1, map_grant_ref, acquire_grant_for_copy).
// The first pin of a ref checks the entry (permit_access, granted to us, not read-only when
// writing), sets GTF_reading (and GTF_writing) with a cmpxchg on the flags|domid word and resolves
// the frame; later pins reuse that frame, as Xen's active entry does. The last unpin clears them.
// Arguments are checked first by grant-arguments.ts, exactly as the real-Xen binding checks them.

import { GrantError } from '../errors.ts';
import { AllocatedBuffers, checkAllocBytes, checkMapArguments, copyOpStatus } from '../grant-arguments.ts';
import { GNTST } from '../types.ts';
import type { BackendGrants, GrantCopyOp, GrantMapping } from '../types.ts';
import {
  GTF_permit_access,
  GTF_readonly,
  GTF_reading,
  GTF_sub_page,
  GTF_type_mask,
  GTF_writing,
  HOST_IS_LITTLE_ENDIAN,
  SET_STATUS_RETRIES,
} from './constants.ts';
import { PIN_LOCK, PIN_READER, PIN_READERS_MASK, PIN_WRITER, PIN_WRITERS_MASK } from './grant-domain.ts';
import type { GrantDomain } from './grant-domain.ts';
import { createSharedMemory } from './wasm-memory.ts';

const WASM_PAGE_BYTES = 65536;

// Why the last pin failed; turned into words only when an error is thrown.
const Why = {
  none: 0,
  badRef: 1,
  notPermitted: 2,
  wrongDomid: 3,
  readOnly: 4,
  unstable: 5,
  badFrame: 6,
  overflow: 7,
  lockStuck: 8,
} as const;
type Why = (typeof Why)[keyof typeof Why];

/** A spinning mapper gives up (GNTST_general_error) rather than hang if a thread died holding an entry lock. */
const LOCK_SPIN_LIMIT = 50_000_000;
/** Mapping slots of up to this many refs are pooled, at most POOL_DEPTH per size. */
const POOL_MAX_COUNT = 512;
const POOL_DEPTH = 256;

interface Slot {
  readonly pages: Uint8Array[];
  readonly refs: Uint32Array;
}

const NO_PAGES: readonly Uint8Array[] = Object.freeze([]);

class SimGrantMapping implements GrantMapping {
  pages: readonly Uint8Array[];
  #owner: SimBackendGrants | undefined;
  readonly #domain: GrantDomain;
  readonly #slot: Slot;
  readonly #writable: boolean;

  constructor(owner: SimBackendGrants, domain: GrantDomain, slot: Slot, writable: boolean) {
    this.pages = slot.pages;
    this.#owner = owner;
    this.#domain = domain;
    this.#slot = slot;
    this.#writable = writable;
  }

  /** Drops the pins; a second call does nothing. */
  unmap(): void {
    const owner = this.#owner;
    if (owner === undefined) return;
    this.#owner = undefined;
    this.pages = NO_PAGES;
    owner.release(this.#domain, this.#slot, this.#writable);
  }
}

export type GrantDomainLookup = (domid: number) => GrantDomain | undefined;

export interface SimBackendGrantsOptions {
  /**
   * Refuse copy() buffer ends that allocBuffer did not hand out, as real Xen must (default true).
   * Off, any Uint8Array will do: only for code that predates the rule.
   */
  readonly strictBuffers?: boolean;
}

export class SimBackendGrants implements BackendGrants {
  /** The domain doing the mapping (0 for dom0). */
  readonly domid: number;
  readonly #lookup: GrantDomainLookup;
  readonly #pool: (Slot[] | undefined)[] = [];
  readonly #allocated = new AllocatedBuffers();
  /** The registry copy() checks buffer ends against; undefined when strictBuffers is off. */
  readonly #copyBuffers: AllocatedBuffers | undefined;
  // Out-parameters of #pin, kept here so the hot path allocates nothing.
  #frame = 0;
  #why: Why = Why.none;
  #seen = 0;

  constructor(domid: number, lookup: GrantDomainLookup, options: SimBackendGrantsOptions = {}) {
    if (!HOST_IS_LITTLE_ENDIAN) throw new Error('the simulated grant table needs a little-endian host');
    this.domid = domid;
    this.#lookup = lookup;
    this.#copyBuffers = options.strictBuffers === false ? undefined : this.#allocated;
  }

  allocBuffer(bytes: number): Uint8Array {
    checkAllocBytes(bytes);
    const memory = createSharedMemory(Math.ceil(bytes / WASM_PAGE_BYTES)).buffer;
    this.#allocated.add(memory);
    return new Uint8Array(memory, 0, bytes);
  }

  map(domid: number, refs: ArrayLike<number>, count: number, writable: boolean): GrantMapping {
    checkMapArguments(domid, refs, count, writable);
    const domain = this.#lookup(domid);
    if (domain === undefined) {
      throw new GrantError(count > 0 ? refs[0]! : -1, domid, GNTST.bad_domain, 'no such domain');
    }
    const slot = this.#take(count);
    for (let i = 0; i < count; i++) {
      const ref = refs[i]!;
      const status = this.#pin(domain, ref, writable, true);
      if (status !== GNTST.okay) {
        for (let j = 0; j < i; j++) this.#unpin(domain, slot.refs[j]!, writable);
        this.#give(slot);
        throw this.#error(domain, ref, status, writable);
      }
      slot.refs[i] = ref;
      slot.pages[i] = domain.frameView(this.#frame);
    }
    return new SimGrantMapping(this, domain, slot, writable);
  }

  copy(ops: readonly GrantCopyOp[]): number[] {
    const result = new Array<number>(ops.length);
    for (let i = 0; i < ops.length; i++) result[i] = this.#copyOne(ops[i]!);
    return result;
  }

  /** Called by SimGrantMapping.unmap. */
  release(domain: GrantDomain, slot: Slot, writable: boolean): void {
    const refs = slot.refs;
    for (let i = 0; i < refs.length; i++) this.#unpin(domain, refs[i]!, writable);
    this.#give(slot);
  }

  #copyOne(op: GrantCopyOp): number {
    let status = copyOpStatus(op, this.#copyBuffers);
    if (status !== GNTST.okay) return status;
    const length = op.length;
    const src = op.source;
    const dst = op.dest;

    let srcDomain: GrantDomain | undefined;
    let srcView: Uint8Array;
    if ('buffer' in src) {
      srcView = src.buffer.subarray(0, length);
    } else {
      srcDomain = this.#lookup(src.domid);
      if (srcDomain === undefined) return GNTST.bad_domain;
      status = this.#pin(srcDomain, src.ref, false, false);
      if (status !== GNTST.okay) return status;
      srcView = srcDomain.frameView(this.#frame).subarray(src.offset, src.offset + length);
    }
    let dstDomain: GrantDomain | undefined;
    let dstView: Uint8Array;
    if ('buffer' in dst) {
      dstView = dst.buffer;
    } else {
      dstDomain = this.#lookup(dst.domid);
      status = dstDomain === undefined ? GNTST.bad_domain : this.#pin(dstDomain, dst.ref, true, false);
      if (status !== GNTST.okay) {
        if (srcDomain !== undefined) this.#unpin(srcDomain, (src as { ref: number }).ref, false);
        return status;
      }
      dstView = dstDomain!.frameView(this.#frame).subarray(dst.offset, dst.offset + length);
    }
    dstView.set(srcView, 0);
    if (srcDomain !== undefined) this.#unpin(srcDomain, (src as { ref: number }).ref, false);
    if (dstDomain !== undefined) this.#unpin(dstDomain, (dst as { ref: number }).ref, true);
    return GNTST.okay;
  }

  /** Takes one pin on `ref`; on success the frame is in #frame, on failure the cause is in #why. */
  #pin(domain: GrantDomain, ref: number, writable: boolean, mapping: boolean): number {
    if (!(ref >= 0 && ref < domain.nrEntries) || ref !== Math.floor(ref)) {
      this.#why = Why.badRef;
      return GNTST.bad_gntref;
    }
    const active = domain.active;
    const at = 2 * ref;
    const pins = this.#lock(active, at);
    if (pins < 0) {
      this.#why = Why.lockStuck;
      return GNTST.general_error;
    }
    const writers = (pins & PIN_WRITERS_MASK) >>> 16;
    if (writable ? writers === PIN_WRITERS_MASK >>> 16 : (pins & PIN_READERS_MASK) === PIN_READERS_MASK) {
      Atomics.store(active, at, pins);
      this.#why = Why.overflow;
      return GNTST.general_error;
    }
    if (pins === 0 || (writable && writers === 0)) {
      const status = this.#setStatus(domain, at, writable, pins !== 0, mapping);
      if (status !== GNTST.okay) {
        Atomics.store(active, at, pins);
        return status;
      }
    }
    let frame: number;
    if (pins === 0) {
      frame = Atomics.load(domain.entries, at + 1);
      if (frame >= domain.frames) {
        Atomics.and(domain.entries, at, ~(GTF_reading | GTF_writing));
        Atomics.store(active, at, pins);
        this.#why = Why.badFrame;
        this.#seen = frame;
        return GNTST.bad_page;
      }
      Atomics.store(active, at + 1, frame);
    } else {
      frame = active[at + 1]!; // written by an earlier pin under the lock we hold
    }
    Atomics.store(active, at, pins + (writable ? PIN_WRITER : PIN_READER));
    this.#frame = frame;
    return GNTST.okay;
  }

  #unpin(domain: GrantDomain, ref: number, writable: boolean): void {
    const active = domain.active;
    const at = 2 * ref;
    let pins = this.#lock(active, at);
    if (pins < 0) return; // a dead thread holds the entry: leave it pinned rather than corrupt it
    pins -= writable ? PIN_WRITER : PIN_READER;
    let clear = 0;
    if (writable && (pins & PIN_WRITERS_MASK) === 0) clear |= GTF_writing;
    if (pins === 0) clear |= GTF_reading;
    if (clear !== 0) Atomics.and(domain.entries, at, ~clear);
    Atomics.store(active, at, pins);
  }

  /**
   * Xen's _set_status_v1: check the entry (unless already pinned) and set GTF_reading and, for a
   * writable pin, GTF_writing, comparing and exchanging flags and domid as one word so a guest
   * rewriting the entry concurrently is either seen or loses.
   */
  #setStatus(domain: GrantDomain, at: number, writable: boolean, pinned: boolean, mapping: boolean): number {
    const entries = domain.entries;
    const typeMask = mapping ? GTF_type_mask | GTF_sub_page : GTF_type_mask;
    // A plain read: the checks below are only trusted once the compare-exchange confirms the word.
    let word = entries[at]!;
    for (let retries = 0; ; retries++) {
      if (!pinned) {
        if ((word & typeMask) !== GTF_permit_access) {
          this.#why = Why.notPermitted;
          this.#seen = word;
          return GNTST.general_error;
        }
        if (word >>> 16 !== this.domid) {
          this.#why = Why.wrongDomid;
          this.#seen = word;
          return GNTST.general_error;
        }
      }
      let next = word | GTF_reading;
      if (writable) {
        if ((word & GTF_readonly) !== 0) {
          this.#why = Why.readOnly;
          return GNTST.general_error;
        }
        next |= GTF_writing;
      }
      const seen = Atomics.compareExchange(entries, at, word, next >>> 0);
      if (seen === word) return GNTST.okay;
      if (retries === SET_STATUS_RETRIES - 1) {
        this.#why = Why.unstable;
        return GNTST.general_error;
      }
      word = seen;
    }
  }

  /** Spins for the entry's lock bit; returns the pin counts, or -1 if the lock never came free. */
  #lock(active: Int32Array, at: number): number {
    for (let spins = 0; spins < LOCK_SPIN_LIMIT; spins++) {
      // A plain read picks the value to compare with: the exchange below is the access that counts.
      const pins = active[at]!;
      if ((pins & PIN_LOCK) === 0 && Atomics.compareExchange(active, at, pins, pins | PIN_LOCK) === pins) return pins;
    }
    return -1;
  }

  #take(count: number): Slot {
    const bucket = count <= POOL_MAX_COUNT ? this.#pool[count] : undefined;
    const slot = bucket?.pop();
    if (slot !== undefined) return slot;
    return { pages: new Array<Uint8Array>(count), refs: new Uint32Array(count) };
  }

  #give(slot: Slot): void {
    const count = slot.refs.length;
    if (count > POOL_MAX_COUNT) return;
    let bucket = this.#pool[count];
    if (bucket === undefined) {
      bucket = [];
      this.#pool[count] = bucket;
    }
    if (bucket.length < POOL_DEPTH) bucket.push(slot);
  }

  #error(domain: GrantDomain, ref: number, status: number, writable: boolean): GrantError {
    const seen = this.#seen;
    let reason: string;
    switch (this.#why) {
      case Why.badRef:
        reason = `ref out of range (the table has ${domain.nrEntries} entries)`;
        break;
      case Why.notPermitted:
        reason = `permission denied (not a permit_access grant: flags 0x${(seen & 0xffff).toString(16)})`;
        break;
      case Why.wrongDomid:
        reason = `permission denied (granted to domain ${seen >>> 16}, not to domain ${this.domid})`;
        break;
      case Why.readOnly:
        reason = 'permission denied (granted read-only, mapped writable)';
        break;
      case Why.unstable:
        reason = 'the guest kept changing the entry while it was being mapped';
        break;
      case Why.badFrame:
        reason = `frame ${seen} is outside the domain's ${domain.frames} frames of memory`;
        break;
      case Why.overflow:
        reason = `too many ${writable ? 'writable' : 'read-only'} mappings of one ref`;
        break;
      case Why.lockStuck:
        reason = 'its active entry stayed locked (a mapping thread died?)';
        break;
      default:
        reason = 'mapping failed';
    }
    return new GrantError(ref, domain.domid, status, reason);
  }
}
