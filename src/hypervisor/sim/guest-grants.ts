// The guest's half of a grant table (Linux drivers/xen/grant-table.c, v1 entries): fill an entry
// and publish its flags last; revoke with a cmpxchg that fails while the backend has it mapped.
//
//   grant table SAB, one grant_entry_v1 per ref, viewed as u32 words:
//     word 2*ref     flags (bits 0-15) | domid (bits 16-31)   <- one atomic word, as Xen's _set_status sees it
//     word 2*ref+1   frame

import { GrantError } from '../errors.ts';
import { GNTST } from '../types.ts';
import type { GuestGrants } from '../types.ts';
import { GNTTAB_NR_RESERVED_ENTRIES, GRANT_ENTRY_SIZE, GTF_permit_access, GTF_readonly, GTF_reading, GTF_writing, HOST_IS_LITTLE_ENDIAN } from './constants.ts';

export class SimGuestGrants implements GuestGrants {
  readonly #entries: Uint32Array;
  readonly #domid: number;
  readonly #freeRefs: Int32Array; // stack of free refs
  #freeTop = 0;
  readonly #inUse: Uint8Array;

  constructor(table: SharedArrayBuffer, domid: number) {
    if (!HOST_IS_LITTLE_ENDIAN) throw new Error('the simulated grant table needs a little-endian host');
    this.#entries = new Uint32Array(table);
    this.#domid = domid;
    const count = table.byteLength / GRANT_ENTRY_SIZE;
    this.#inUse = new Uint8Array(count);
    this.#freeRefs = new Int32Array(Math.max(0, count - GNTTAB_NR_RESERVED_ENTRIES));
    // Pushed high to low so the lowest refs are handed out first.
    for (let ref = count - 1; ref >= GNTTAB_NR_RESERVED_ENTRIES; ref--) this.#freeRefs[this.#freeTop++] = ref;
  }

  get freeCount(): number {
    return this.#freeTop;
  }

  grantAccess(domid: number, frame: number, readOnly: boolean): number {
    if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) {
      throw new GrantError(-1, this.#domid, GNTST.bad_domain, `cannot grant to domid ${domid}`);
    }
    if (!Number.isInteger(frame) || frame < 0 || frame > 0xffffffff) {
      throw new GrantError(-1, this.#domid, GNTST.bad_page, `frame ${frame} is not a 32-bit frame number`);
    }
    if (this.#freeTop === 0) return -1;
    const ref = this.#freeRefs[--this.#freeTop]!;
    this.#inUse[ref] = 1;
    const entries = this.#entries;
    entries[2 * ref + 1] = frame;
    // domid and flags go out in one atomic store, after the frame (Linux: write frame/domid, wmb(), flags).
    const flags = GTF_permit_access | (readOnly ? GTF_readonly : 0);
    Atomics.store(entries, 2 * ref, (flags | (domid << 16)) >>> 0);
    return ref;
  }

  endAccess(ref: number): boolean {
    if (!Number.isInteger(ref) || ref < 0 || ref >= this.#inUse.length || this.#inUse[ref] !== 1) {
      throw new GrantError(ref, this.#domid, GNTST.bad_gntref, 'endAccess on a ref this guest has not granted');
    }
    const entries = this.#entries;
    const at = 2 * ref;
    let word = Atomics.load(entries, at);
    for (;;) {
      if ((word & (GTF_reading | GTF_writing)) !== 0) return false;
      // Clear the flags half only, as gnttab_end_foreign_access_ref_v1 cmpxchg's flags to 0.
      const seen = Atomics.compareExchange(entries, at, word, (word & 0xffff0000) >>> 0);
      if (seen === word) break;
      word = seen;
    }
    this.#inUse[ref] = 0;
    this.#freeRefs[this.#freeTop++] = ref;
    return true;
  }
}
