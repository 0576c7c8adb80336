// The hostile guest's pages and grants, and how a generated request's ref classes (generator.ts REF)
// become real refs. Two worlds that never meet: the checked disks' pages (whose grant entries stay
// as granted, so every answer can be predicted) and the chaos disk's (whose entries and pages the
// guest rewrites while requests are in flight).
//
//   checked data:   C D C D ... D C   data pages granted writable, each between two canaries
//   read-only:      canaries granted read-only to the backend
//   other-domain:   canaries granted writable to another domain
//   revoked:        canaries whose entry the guest cleared behind the grant API's back
//   never:          the last entries of the table, which the guest's allocator (lowest first) never reaches
//   chaos data:     C D C D ... D C   the same shape, for the chaos disk
//   indirect pages: per disk; the checked ones verified after each answer, the chaos ones scribbled
import { GTF_permit_access, GTF_readonly, GTF_reading, GTF_writing } from '../hypervisor/sim/constants.ts';
import type { GuestHypervisor } from '../hypervisor/types.ts';
import { REF } from './generator.ts';
import type { RefClass } from './generator.ts';
import type { PageLedger } from './page-ledger.ts';

const DATA_PAGES = 12;
const READ_ONLY_PAGES = 4;
const OTHER_PAGES = 2;
const REVOKED_PAGES = 2;
const NEVER_REFS = 8;
const CHAOS_DATA_PAGES = 16;
const CHAOS_INDIRECT_PAGES = 8;
const RESERVED_REFS = 8;

export interface IndirectPage {
  readonly frame: number;
  readonly ref: number;
  readonly view: Uint8Array;
  /** What the guest last wrote to it (checked pages: compared after the answer). */
  readonly shadow: Uint8Array;
  bytes: number;
}

export class GuestPools {
  readonly hv: GuestHypervisor;
  readonly ledger: PageLedger;
  /** The guest's grant table as u32 words: [2*ref] flags | domid << 16, [2*ref+1] frame. */
  readonly table: Uint32Array;
  readonly nrEntries: number;
  readonly data: number[] = [];
  readonly readOnly: number[] = [];
  readonly other: number[] = [];
  readonly revoked: number[] = [];
  readonly never: number[] = [];
  readonly chaosData: number[] = [];
  readonly chaosFrames: number[] = [];
  readonly chaosIndirect: IndirectPage[] = [];
  /** Every ref granted through the grant API, to revoke at the end, with what it is for. */
  readonly granted: { readonly ref: number; readonly label: string }[] = [];

  constructor(hv: GuestHypervisor, ledger: PageLedger, grantTable: SharedArrayBuffer, otherDomid: number, backendDomid: number) {
    this.hv = hv;
    this.ledger = ledger;
    this.table = new Uint32Array(grantTable);
    this.nrEntries = this.table.length / 2;
    for (let i = 0; i < NEVER_REFS; i++) this.never.push(this.nrEntries - 1 - i);
    const grant = (domid: number, frame: number, readOnly: boolean, label: string): number => {
      const ref = hv.grants.grantAccess(domid, frame, readOnly);
      if (ref < 0) throw new Error('fuzz guest: grant table full');
      this.granted.push({ ref, label });
      return ref;
    };
    for (const frame of this.#interleaved(DATA_PAGES, 'guard page between checked data pages'))
      this.data.push(grant(backendDomid, frame, false, 'checked data page'));
    for (let i = 0; i < READ_ONLY_PAGES; i++) this.readOnly.push(grant(backendDomid, ledger.allocCanary('page granted read-only'), true, 'read-only page'));
    for (let i = 0; i < OTHER_PAGES; i++)
      this.other.push(grant(otherDomid, ledger.allocCanary(`page granted to domain ${otherDomid}`), false, 'other-domain page'));
    for (let i = 0; i < REVOKED_PAGES; i++) {
      const ref = grant(backendDomid, ledger.allocCanary('page whose grant was revoked'), false, 'revoked page');
      Atomics.store(this.table, 2 * ref, 0); // flags cleared: no longer a grant, though the guest's API still holds the ref
      this.revoked.push(ref);
    }
    for (const frame of this.#interleaved(CHAOS_DATA_PAGES, 'guard page between chaos data pages')) {
      this.chaosFrames.push(frame);
      this.chaosData.push(grant(backendDomid, frame, false, 'chaos data page'));
    }
    for (let i = 0; i < CHAOS_INDIRECT_PAGES; i++) this.chaosIndirect.push(this.indirectPage(backendDomid, 'chaos indirect page'));
  }

  /** `count` data frames with a canary before, between and after them; returns the data frames. */
  #interleaved(count: number, label: string): number[] {
    const block = this.ledger.allocWritable(2 * count + 1);
    const frames: number[] = [];
    for (let i = 0; i <= 2 * count; i++) {
      if (i % 2 === 0) this.ledger.markCanary(block + i, label);
      else frames.push(block + i);
    }
    return frames;
  }

  /** A page for indirect segment lists, granted read-only to the backend. */
  indirectPage(backendDomid: number, label: string): IndirectPage {
    const frame = this.ledger.allocWritable(1);
    const ref = this.hv.grants.grantAccess(backendDomid, frame, true);
    if (ref < 0) throw new Error('fuzz guest: grant table full');
    this.granted.push({ ref, label });
    return { frame, ref, view: this.hv.memory.view(frame), shadow: new Uint8Array(4096), bytes: 0 };
  }

  /**
   * The ref for class `cls` and free pick `pick`. `chaos`: data pages are the chaos disk's. The
   * indirect class is resolved by the caller (it is the request's own page).
   */
  resolve(cls: RefClass, pick: number, chaos: boolean): number {
    switch (cls) {
      case REF.data:
        return chaos ? this.chaosData[pick % this.chaosData.length]! : this.data[pick % this.data.length]!;
      case REF.readOnly:
        return this.readOnly[pick % this.readOnly.length]!;
      case REF.otherDomain:
        return this.other[pick % this.other.length]!;
      case REF.revoked:
        return this.revoked[pick % this.revoked.length]!;
      case REF.never:
        return this.never[pick % this.never.length]!;
      case REF.reserved:
        return pick % RESERVED_REFS;
      case REF.outside:
        return (this.nrEntries + (pick % (0x100000000 - this.nrEntries))) >>> 0;
      default:
        return this.chaosIndirect[pick % this.chaosIndirect.length]!.ref;
    }
  }

  /** Refs safeRef() may return, besides reserved, never-granted and outside-the-table ones. */
  readonly #safe = new Set<number>();

  /** Whether chaos may leave `value` in a word the backend may read as a ref. */
  isSafeRef(value: number): boolean {
    return value < RESERVED_REFS || value >= this.nrEntries - NEVER_REFS || this.#safeSet().has(value);
  }

  #safeSet(): Set<number> {
    if (this.#safe.size === 0) {
      for (const ref of [...this.chaosData, ...this.chaosIndirect.map((p) => p.ref), ...this.readOnly, ...this.other, ...this.revoked]) this.#safe.add(ref);
    }
    return this.#safe;
  }

  /** A ref chaos may write into a word the backend may read as a ref: never one of the rings' or the checked data pages'. */
  safeRef(pick: number, choice: number): number {
    switch (choice % 8) {
      case 0:
      case 1:
      case 2:
        return this.chaosData[pick % this.chaosData.length]!;
      case 3:
        return this.chaosIndirect[pick % this.chaosIndirect.length]!.ref;
      case 4:
        return this.resolve(REF.outside, pick, true);
      case 5:
        return this.resolve(REF.reserved, pick, true);
      case 6:
        return this.resolve(REF.never, pick, true);
      default:
        return this.resolve([REF.readOnly, REF.otherDomain, REF.revoked][pick % 3] as RefClass, pick >>> 2, true);
    }
  }

  /** Rewrites the flags|domid word of chaos data entry `pick` (`variant` picks how). */
  scribbleFlags(pick: number, variant: number, value: number, backendDomid: number): void {
    const ref = this.chaosData[pick % this.chaosData.length]!;
    const at = 2 * ref;
    let word: number;
    switch (variant % 6) {
      case 0:
        word = value; // anything
        break;
      case 1:
        word = GTF_permit_access | ((1 + (value % 0xfffe)) << 16); // granted to someone else
        break;
      case 2:
        word = GTF_permit_access | GTF_readonly | (backendDomid << 16);
        break;
      case 3:
        word = 0; // revoked
        break;
      default:
        word = GTF_permit_access | (backendDomid << 16);
    }
    this.#storeKeepingStatus(at, word);
  }

  /**
   * Stores `word` over an entry's flags|domid, keeping GTF_reading/GTF_writing as the backend has
   * them: those bits record its pins, and garbage there would only confuse the guest's own revoke.
   */
  #storeKeepingStatus(at: number, word: number): void {
    const status = GTF_reading | GTF_writing;
    for (;;) {
      const seen = Atomics.load(this.table, at);
      const next = ((word & ~status) | (seen & status)) >>> 0;
      if (Atomics.compareExchange(this.table, at, seen, next) === seen) return;
    }
  }

  /** Rewrites the frame of chaos data entry `pick`: another chaos data frame (legal) or one outside memory. */
  scribbleFrame(pick: number, variant: number, value: number): void {
    const i = pick % this.chaosData.length;
    const at = 2 * this.chaosData[i]! + 1;
    const pages = this.hv.memory.pages;
    const frame = variant % 3 === 0 ? pages + (value % (0x100000000 - pages)) : this.chaosFrames[value % this.chaosFrames.length]!;
    Atomics.store(this.table, at, frame >>> 0);
  }

  /** Puts the chaos entries back as granted, keeping the status bits of pins the backend holds. */
  restoreChaos(backendDomid: number): void {
    for (let i = 0; i < this.chaosData.length; i++) {
      const at = 2 * this.chaosData[i]!;
      Atomics.store(this.table, at + 1, this.chaosFrames[i]!);
      this.#storeKeepingStatus(at, GTF_permit_access | (backendDomid << 16));
    }
  }

  /** Revokes every grant; returns those the backend still held (pinned). */
  revokeAll(): string[] {
    const held: string[] = [];
    for (const { ref, label } of this.granted) {
      if (!this.hv.grants.endAccess(ref)) held.push(`ref ${ref} (${label}, entry 0x${Atomics.load(this.table, 2 * ref).toString(16)})`);
    }
    return held;
  }
}
