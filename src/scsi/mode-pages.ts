// Mode parameters of one logical unit (SPC-4 §7.5, SBC-4 §6.5): MODE SENSE(6)/(10) and MODE
// SELECT(6)/(10). Four pages, shared by every I_T nexus:
//
//   01h Read-Write Error Recovery  all zero, nothing changeable
//   08h Caching                    WCE = the device has a volatile cache; changeable only then
//                                  (WCE 0 makes every write FUA)
//   0Ah Control                    QUEUE ALGORITHM MODIFIER 1; D_SENSE and SWP changeable
//   1Ch Informational Exceptions   all zero, nothing changeable
//
// Saved values are not offered (SAVING PARAMETERS NOT SUPPORTED). A MODE SELECT that would change a
// bit the changeable mask does not allow ends in INVALID FIELD IN PARAMETER LIST, pointing at it.
import { Asc, ModePage, PageControl } from './constants.ts';
import { fieldPointer } from './sense.ts';
import { putU16, putU32, putU64, u16, u32, u64 } from './cdb.ts';

interface Page {
  readonly code: number;
  readonly current: Uint8Array;
  readonly defaults: Uint8Array;
  readonly changeable: Uint8Array;
}

/** A failed MODE SENSE/SELECT: ASC/ASCQ and sense-key specific field pointer. */
export interface ModeError {
  readonly ascAscq: number;
  readonly sks: number;
}

export interface ModeSenseRequest {
  readonly ten: boolean;
  readonly dbd: boolean;
  readonly llbaa: boolean;
  readonly pc: number;
  readonly page: number;
  readonly subpage: number;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly writeProtected: boolean;
}

const WCE = 0x04;
const D_SENSE = 0x04;
const SWP = 0x08;
/** Device-specific parameter for direct-access devices (SBC-4 §6.5.1): WP and DPOFUA. */
const WP = 0x80;
const DPOFUA = 0x10;

function page(code: number, length: number, init: (b: Uint8Array) => void, changeable: (b: Uint8Array) => void): Page {
  const mk = (): Uint8Array => {
    const b = new Uint8Array(length + 2);
    b[0] = code;
    b[1] = length;
    return b;
  };
  const defaults = mk();
  init(defaults);
  const current = mk();
  current.set(defaults);
  const mask = mk();
  changeable(mask);
  return { code, current, defaults, changeable: mask };
}

export class ModePages {
  readonly #pages: Page[];
  readonly #caching: Page;
  readonly #control: Page;

  constructor(opts: { volatileCache: boolean }) {
    this.#pages = [
      page(
        ModePage.READ_WRITE_ERROR_RECOVERY,
        0x0a,
        () => {},
        () => {},
      ),
      page(
        ModePage.CACHING,
        0x12,
        (b) => {
          if (opts.volatileCache) b[2] = WCE;
        },
        (b) => {
          if (opts.volatileCache) b[2] = WCE;
        },
      ),
      page(
        ModePage.CONTROL,
        0x0a,
        (b) => {
          b[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering of SIMPLE tasks
        },
        (b) => {
          b[2] = D_SENSE;
          b[4] = SWP;
        },
      ),
      page(
        ModePage.INFORMATIONAL_EXCEPTIONS_CONTROL,
        0x0a,
        () => {},
        () => {},
      ),
    ];
    this.#caching = this.#pages[1] as Page;
    this.#control = this.#pages[2] as Page;
  }

  /** D_SENSE: descriptor-format sense data. */
  get descriptorSense(): boolean {
    return ((this.#control.current[2] as number) & D_SENSE) !== 0;
  }
  /** SWP: software write protect. */
  get softwareWriteProtect(): boolean {
    return ((this.#control.current[4] as number) & SWP) !== 0;
  }
  /** WCE: write cache enabled; when clear every write is made durable before it completes. */
  get writeCacheEnabled(): boolean {
    return ((this.#caching.current[2] as number) & WCE) !== 0;
  }

  /** Back to the default values (logical unit reset, SAM-5 §6.3.3). */
  resetToDefaults(): boolean {
    let changed = false;
    for (const p of this.#pages) {
      for (let i = 0; i < p.current.byteLength; i++) if (p.current[i] !== p.defaults[i]) changed = true;
      p.current.set(p.defaults);
    }
    return changed;
  }

  /** MODE SENSE parameter data (whole; the caller truncates to the allocation length). */
  sense(r: ModeSenseRequest): Uint8Array | ModeError {
    const cdbPageByte = 2;
    if (r.pc === PageControl.SAVED) return { ascAscq: Asc.SAVING_PARAMETERS_NOT_SUPPORTED, sks: fieldPointer(true, cdbPageByte, 7) };
    // No subpages: subpage 00h selects the page, FFh the page and all its (no) subpages.
    if (r.subpage !== 0x00 && r.subpage !== 0xff) return { ascAscq: Asc.INVALID_FIELD_IN_CDB, sks: fieldPointer(true, 3) };
    let selected: Page[];
    if (r.page === ModePage.ALL_PAGES) selected = this.#pages;
    else {
      const p = this.#pages.find((x) => x.code === r.page);
      if (p === undefined) return { ascAscq: Asc.INVALID_FIELD_IN_CDB, sks: fieldPointer(true, cdbPageByte, 5) };
      selected = [p];
    }
    const headerLength = r.ten ? 8 : 4;
    const longLba = r.ten && r.llbaa;
    const descLength = r.dbd ? 0 : longLba ? 16 : 8;
    let pagesLength = 0;
    for (const p of selected) pagesLength += p.current.byteLength;
    const out = new Uint8Array(headerLength + descLength + pagesLength);
    const deviceSpecific = (r.writeProtected ? WP : 0) | DPOFUA;
    if (r.ten) {
      putU16(out, 0, out.byteLength - 2);
      out[3] = deviceSpecific;
      if (longLba) out[4] = 0x01;
      putU16(out, 6, descLength);
    } else {
      out[0] = Math.min(out.byteLength - 1, 0xff);
      out[2] = deviceSpecific;
      out[3] = descLength;
    }
    let p = headerLength;
    // Block descriptor (SBC-4 §6.5.2): number of blocks and block length; changeable values are zero.
    if (descLength === 8) {
      if (r.pc !== PageControl.CHANGEABLE) {
        putU32(out, p, r.numBlocks > 0xffffffff ? 0xffffffff : r.numBlocks);
        out[p + 5] = (r.blockSize >>> 16) & 0xff;
        out[p + 6] = (r.blockSize >>> 8) & 0xff;
        out[p + 7] = r.blockSize & 0xff;
      }
    } else if (descLength === 16 && r.pc !== PageControl.CHANGEABLE) {
      putU64(out, p, r.numBlocks);
      putU32(out, p + 12, r.blockSize);
    }
    p += descLength;
    for (const pg of selected) {
      const src = r.pc === PageControl.CURRENT ? pg.current : r.pc === PageControl.DEFAULT ? pg.defaults : pg.changeable;
      out.set(src, p);
      // PAGE CODE byte: PS 0 (not savable), SPF 0; the length byte stays in every variant.
      out[p] = pg.code;
      out[p + 1] = pg.current[1] as number;
      p += src.byteLength;
    }
    return out;
  }

  /**
   * MODE SELECT with this parameter list. Validates everything before changing anything; returns
   * whether a value changed (then other I_T nexuses get MODE PARAMETERS CHANGED).
   */
  select(data: Uint8Array, ten: boolean, numBlocks: number, blockSize: number): { changed: boolean } | ModeError {
    const headerLength = ten ? 8 : 4;
    if (data.byteLength === 0) return { changed: false };
    if (data.byteLength < headerLength) return { ascAscq: Asc.PARAMETER_LIST_LENGTH_ERROR, sks: 0 };
    const descLength = ten ? u16(data, 6) : (data[3] as number);
    const longLba = ten && ((data[4] as number) & 0x01) !== 0;
    const descByte = ten ? 6 : 3;
    if (descLength !== 0 && descLength !== (longLba ? 16 : 8)) return { ascAscq: Asc.INVALID_FIELD_IN_PARAMETER_LIST, sks: fieldPointer(false, descByte) };
    if (data.byteLength < headerLength + descLength) return { ascAscq: Asc.PARAMETER_LIST_LENGTH_ERROR, sks: 0 };
    if (descLength !== 0) {
      // The capacity and block length cannot change: zero (or the current values) only.
      const d = headerLength;
      const blocks = longLba ? u64(data, d) : u32(data, d);
      const length = longLba ? u32(data, d + 12) : ((data[d + 5] as number) << 16) | u16(data, d + 6);
      const currentBlocks = longLba ? numBlocks : Math.min(numBlocks, 0xffffffff);
      if (blocks !== 0 && blocks !== currentBlocks) return { ascAscq: Asc.INVALID_FIELD_IN_PARAMETER_LIST, sks: fieldPointer(false, d) };
      if (length !== 0 && length !== blockSize) return { ascAscq: Asc.INVALID_FIELD_IN_PARAMETER_LIST, sks: fieldPointer(false, longLba ? d + 12 : d + 5) };
    }
    const updates: [Page, number][] = [];
    let pos = headerLength + descLength;
    while (pos < data.byteLength) {
      if (pos + 2 > data.byteLength) return { ascAscq: Asc.PARAMETER_LIST_LENGTH_ERROR, sks: 0 };
      const b0 = data[pos] as number;
      // PS is reserved in MODE SELECT; SPF would name a subpage we do not have.
      if ((b0 & 0xc0) !== 0) return { ascAscq: Asc.INVALID_FIELD_IN_PARAMETER_LIST, sks: fieldPointer(false, pos, (b0 & 0x80) !== 0 ? 7 : 6) };
      const pg = this.#pages.find((x) => x.code === (b0 & 0x3f));
      if (pg === undefined) return { ascAscq: Asc.INVALID_FIELD_IN_PARAMETER_LIST, sks: fieldPointer(false, pos, 5) };
      const len = data[pos + 1] as number;
      if (len !== (pg.current[1] as number)) return { ascAscq: Asc.INVALID_FIELD_IN_PARAMETER_LIST, sks: fieldPointer(false, pos + 1) };
      if (pos + 2 + len > data.byteLength) return { ascAscq: Asc.PARAMETER_LIST_LENGTH_ERROR, sks: 0 };
      for (let i = 2; i < len + 2; i++) {
        const diff = ((data[pos + i] as number) ^ (pg.current[i] as number)) & ~(pg.changeable[i] as number) & 0xff;
        if (diff !== 0) return { ascAscq: Asc.INVALID_FIELD_IN_PARAMETER_LIST, sks: fieldPointer(false, pos + i, 31 - Math.clz32(diff)) };
      }
      updates.push([pg, pos]);
      pos += 2 + len;
    }
    let changed = false;
    for (const [pg, at] of updates) {
      for (let i = 2; i < pg.current.byteLength; i++) {
        const v = data[at + i] as number;
        if (pg.current[i] !== v) {
          pg.current[i] = v;
          changed = true;
        }
      }
    }
    return { changed };
  }
}
