// The Basic Header Segment (RFC 7143 §11.2.1): field offsets and accessors over a 48-byte header.
// Pure byte arithmetic on the caller's buffer, big-endian throughout (network order), nothing
// allocated: the PDU reader hands each header over as a view, and writers fill headers in place.
//
//   byte  0        1        2        3
//        +--------+--------+--------+--------+
//      0 |.|I| op |F|  opcode-specific fields  |
//      4 |TotalAHS|     DataSegmentLength      |
//      8 |   LUN or opcode-specific fields     |
//     12 |                                     |
//     16 |       Initiator Task Tag (ITT)      |
//     20 |                                     |
//        /   opcode-specific fields (28 bytes) /
//     44 |                                     |
//        +--------+--------+--------+--------+
import { BHS_LENGTH, IMMEDIATE_BIT, OPCODE_MASK } from './constants.ts';

/** Offsets of the fields most PDUs share, and of the opcode-specific ones we read or write. */
export const Bhs = {
  OPCODE: 0,
  FLAGS: 1,
  BYTE2: 2,
  BYTE3: 3,
  TOTAL_AHS_LENGTH: 4,
  DATA_SEGMENT_LENGTH: 5,
  LUN: 8,
  ITT: 16,
  /** SCSI Command: Expected Data Transfer Length; Data-Out, R2T, NOP, Text: Target Transfer Tag. */
  WORD20: 20,
  /** Requests: CmdSN; responses: StatSN. */
  WORD24: 24,
  /** Requests: ExpStatSN; responses: ExpCmdSN. */
  WORD28: 28,
  /** Responses: MaxCmdSN; TMF request: RefCmdSN. */
  WORD32: 32,
  /** SCSI Command: the CDB (16 bytes). */
  CDB: 32,
  /** Data-In/Out: DataSN; R2T: R2TSN; SCSI Response: ExpDataSN; TMF request: ExpDataSN. */
  WORD36: 36,
  /** Data-In/Out, R2T: Buffer Offset; SCSI Response: bidi residual. */
  WORD40: 40,
  /** Data-In, SCSI Response: Residual Count; R2T: Desired Data Transfer Length. */
  WORD44: 44,
  /** Login: ISID (6 bytes) at 8, TSIH at 14; CID at 20; status class/detail at 36/37. */
  ISID: 8,
  TSIH: 14,
  CID: 20,
  LOGIN_STATUS: 36,
} as const;

export function opcodeOf(h: Uint8Array): number {
  return (h[Bhs.OPCODE] as number) & OPCODE_MASK;
}

export function isImmediate(h: Uint8Array): boolean {
  return ((h[Bhs.OPCODE] as number) & IMMEDIATE_BIT) !== 0;
}

export function flagsOf(h: Uint8Array): number {
  return h[Bhs.FLAGS] as number;
}

/** TotalAHSLength in bytes (the field counts 4-byte words). */
export function ahsLengthOf(h: Uint8Array, o = 0): number {
  return (h[o + Bhs.TOTAL_AHS_LENGTH] as number) * 4;
}

export function dataSegmentLengthOf(h: Uint8Array, o = 0): number {
  return ((h[o + 5] as number) << 16) | ((h[o + 6] as number) << 8) | (h[o + 7] as number);
}

export function u32(h: Uint8Array, offset: number): number {
  return (((h[offset] as number) << 24) | ((h[offset + 1] as number) << 16) | ((h[offset + 2] as number) << 8) | (h[offset + 3] as number)) >>> 0;
}

export function u16(h: Uint8Array, offset: number): number {
  return ((h[offset] as number) << 8) | (h[offset + 1] as number);
}

export function putU32(h: Uint8Array, offset: number, v: number): void {
  h[offset] = v >>> 24;
  h[offset + 1] = v >>> 16;
  h[offset + 2] = v >>> 8;
  h[offset + 3] = v;
}

export function putU16(h: Uint8Array, offset: number, v: number): void {
  h[offset] = v >>> 8;
  h[offset + 1] = v;
}

export function putDataSegmentLength(h: Uint8Array, o: number, length: number): void {
  h[o + 5] = length >>> 16;
  h[o + 6] = length >>> 8;
  h[o + 7] = length;
}

/** Data segments are padded to a multiple of 4 bytes (§11.2.3). */
export function padded(length: number): number {
  return (length + 3) & ~3;
}

/** Zeroes a header-sized region before it is filled. */
export function clearHeader(h: Uint8Array, o: number): void {
  h.fill(0, o, o + BHS_LENGTH);
}

/** Serial number arithmetic on 32-bit sequence numbers (RFC 1982, as §4.2.2.1 requires). */
export function snLess(a: number, b: number): boolean {
  return a !== b && ((b - a) | 0) > 0;
}

export function snLessOrEqual(a: number, b: number): boolean {
  return a === b || ((b - a) | 0) > 0;
}

export function snAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
