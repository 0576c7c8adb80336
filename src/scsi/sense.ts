// Sense data (SPC-4 §4.5): fixed format (response code 70h) and descriptor format (72h), chosen per
// logical unit by the Control mode page's D_SENSE bit.
//
// Fixed format, 18 bytes:              Descriptor format, 8 bytes + descriptors:
//   0  VALID | 70h                       0  72h
//   2  sense key                         1  sense key
//   3-6  INFORMATION                     2  ASC   3  ASCQ
//   7  additional length (10)           7  additional length
//   12 ASC  13 ASCQ                      8… information descriptor (00h, 12 bytes)
//   15-17 SKSV | sense-key specific         sense-key specific descriptor (02h, 8 bytes)

/** Sense-key specific field valid (SKSV), the top bit of the 3-byte field. */
const SKSV = 0x800000;
/** C/D: the pointer is into the CDB (set) or into the parameter list (clear). */
const CD = 0x400000;
/** BPV: the bit pointer is valid. */
const BPV = 0x080000;

export const FIXED_SENSE_LENGTH = 18;

/**
 * The 3-byte sense-key specific field for ILLEGAL REQUEST (SPC-4 §4.5.2.4.2): a pointer to the byte
 * (and optionally the bit) of the CDB or parameter list that is wrong.
 */
export function fieldPointer(inCdb: boolean, byte: number, bit?: number): number {
  let v = SKSV | (byte & 0xffff);
  if (inCdb) v |= CD;
  if (bit !== undefined) v |= BPV | ((bit & 7) << 16);
  return v;
}

/**
 * Builds sense data. `information` (when given) fills the INFORMATION field with VALID set;
 * `sks` is a 3-byte sense-key specific value with SKSV set (see fieldPointer), or 0 for none.
 */
export function buildSense(descriptor: boolean, key: number, ascAscq: number, information = -1, sks = 0): Uint8Array {
  if (!descriptor) {
    const s = new Uint8Array(FIXED_SENSE_LENGTH);
    s[0] = 0x70;
    s[2] = key & 0x0f;
    // INFORMATION is 4 bytes here; a value that does not fit leaves VALID clear (SPC-4 §4.5.3).
    if (information >= 0 && information <= 0xffffffff) {
      s[0] = 0xf0;
      writeU32(s, 3, information);
    }
    s[7] = FIXED_SENSE_LENGTH - 8;
    s[12] = ascAscq >>> 8;
    s[13] = ascAscq & 0xff;
    if (sks !== 0) {
      s[15] = (sks >>> 16) & 0xff;
      s[16] = (sks >>> 8) & 0xff;
      s[17] = sks & 0xff;
    }
    return s;
  }
  const infoLength = information >= 0 ? 12 : 0;
  const sksLength = sks !== 0 ? 8 : 0;
  const s = new Uint8Array(8 + infoLength + sksLength);
  s[0] = 0x72;
  s[1] = key & 0x0f;
  s[2] = ascAscq >>> 8;
  s[3] = ascAscq & 0xff;
  s[7] = infoLength + sksLength;
  let p = 8;
  if (infoLength !== 0) {
    // Information descriptor (SPC-4 §4.5.2.2): type 00h, length 0Ah, VALID, 8-byte INFORMATION.
    s[p] = 0x00;
    s[p + 1] = 0x0a;
    s[p + 2] = 0x80;
    writeU32(s, p + 4, Math.floor(information / 0x100000000));
    writeU32(s, p + 8, information >>> 0);
    p += 12;
  }
  if (sksLength !== 0) {
    // Sense key specific descriptor (SPC-4 §4.5.2.4): type 02h, length 06h, the 3 bytes, 1 reserved.
    s[p] = 0x02;
    s[p + 1] = 0x06;
    s[p + 4] = (sks >>> 16) & 0xff;
    s[p + 5] = (sks >>> 8) & 0xff;
    s[p + 6] = sks & 0xff;
  }
  return s;
}

function writeU32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** Sense key, ASC and ASCQ of sense data in either format (for REQUEST SENSE conversions and tests). */
export function parseSense(s: Uint8Array): { key: number; asc: number; ascq: number; descriptor: boolean } {
  const code = (s[0] ?? 0) & 0x7f;
  if (code === 0x72 || code === 0x73) return { key: (s[1] ?? 0) & 0x0f, asc: s[2] ?? 0, ascq: s[3] ?? 0, descriptor: true };
  return { key: (s[2] ?? 0) & 0x0f, asc: s[12] ?? 0, ascq: s[13] ?? 0, descriptor: false };
}
