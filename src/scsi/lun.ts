// The 8-byte LUN structure (SAM-5 §4.7), single level only:
//
//   byte 0: ADDRESS METHOD (7-6) | bus identifier or LUN bits 13-8 (5-0)
//   byte 1: LUN bits 7-0
//   bytes 2-7: second to fourth level, zero for a single-level LUN
//
// Peripheral device addressing (00b, bus 0) for LUNs below 256, flat space addressing (01b) for
// LUNs below 16384: what Linux's scsilun_to_int and every initiator we care about understand.

/** Largest LUN flat space addressing can carry. */
export const MAX_LUN = 0x3fff;

const PERIPHERAL = 0x00;
const FLAT_SPACE = 0x40;

/** Writes the LUN structure for `lun` into `out` at `offset` (8 bytes). */
export function encodeLun(lun: number, out: Uint8Array = new Uint8Array(8), offset = 0): Uint8Array {
  if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) throw new RangeError(`LUN ${lun} is outside 0..${MAX_LUN}`);
  out.fill(0, offset, offset + 8);
  if (lun < 256) {
    out[offset] = PERIPHERAL;
    out[offset + 1] = lun;
  } else {
    out[offset] = FLAT_SPACE | (lun >>> 8);
    out[offset + 1] = lun & 0xff;
  }
  return out;
}

/**
 * The LUN a LUN structure addresses, or -1 for an address this target cannot have (other address
 * methods, a non-zero bus, or more than one level): the device server answers -1 as a LUN that
 * does not exist.
 */
export function decodeLun(b: Uint8Array, offset = 0): number {
  if (b.length < offset + 8) return -1;
  for (let i = 2; i < 8; i++) if (b[offset + i] !== 0) return -1;
  const b0 = b[offset] as number;
  const b1 = b[offset + 1] as number;
  switch (b0 & 0xc0) {
    case PERIPHERAL:
      return (b0 & 0x3f) === 0 ? b1 : -1;
    case FLAT_SPACE:
      return ((b0 & 0x3f) << 8) | b1;
    default:
      return -1;
  }
}
