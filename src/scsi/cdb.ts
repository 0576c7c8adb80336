// Pure CDB field readers (SPC-4 §4.2). Big-endian throughout, as every SCSI field is.
//
// 64-bit LBAs are read as a JavaScript number: exact below 2^53 and, above, a float at least as
// large as the true value, so "lba + count > capacity" stays correct for any capacity we can serve
// (our capacities are below 2^53 bytes) without BigInt on the hot path.

/** CDB length by GROUP CODE (the opcode's top 3 bits), SPC-4 §4.2.5.1; 0 for variable/vendor groups. */
const GROUP_LENGTH = [6, 10, 10, 0, 16, 12, 0, 0] as const;

/** The length a CDB with this operation code has, or 0 when the group does not fix it. */
export function cdbLengthFor(opcode: number): number {
  return GROUP_LENGTH[(opcode >>> 5) & 7] ?? 0;
}

export function u16(b: Uint8Array, o: number): number {
  return ((b[o] as number) << 8) | (b[o + 1] as number);
}

export function u24(b: Uint8Array, o: number): number {
  return ((b[o] as number) << 16) | ((b[o + 1] as number) << 8) | (b[o + 2] as number);
}

export function u32(b: Uint8Array, o: number): number {
  return (((b[o] as number) << 24) >>> 0) + (((b[o + 1] as number) << 16) | ((b[o + 2] as number) << 8) | (b[o + 3] as number));
}

/** A 64-bit field as a number (see the note above: exact below 2^53, never smaller than the truth). */
export function u64(b: Uint8Array, o: number): number {
  return u32(b, o) * 0x100000000 + u32(b, o + 4);
}

/** A 64-bit field as a bigint, for reservation keys (compared and echoed, never computed on). */
export function u64big(b: Uint8Array, o: number): bigint {
  return (BigInt(u32(b, o)) << 32n) | BigInt(u32(b, o + 4));
}

export function putU16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}

export function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/** Writes a non-negative integer below 2^53 as a 64-bit field. */
export function putU64(b: Uint8Array, o: number, v: number): void {
  putU32(b, o, Math.floor(v / 0x100000000));
  putU32(b, o + 4, v >>> 0);
}

export function putU64big(b: Uint8Array, o: number, v: bigint): void {
  putU32(b, o, Number((v >> 32n) & 0xffffffffn));
  putU32(b, o + 4, Number(v & 0xffffffffn));
}

/**
 * The block-addressing fields of READ/WRITE/VERIFY/WRITE AND VERIFY/ORWRITE/PRE-FETCH/SYNCHRONIZE
 * CACHE/WRITE SAME CDBs (SBC-4 §5), by CDB size. Decoded into a caller's reusable object.
 */
export interface BlockFields {
  lba: number;
  /** TRANSFER LENGTH / NUMBER OF LOGICAL BLOCKS as written (READ(6)/WRITE(6): 0 already means 256). */
  count: number;
  /** Byte 1 (protection field, DPO, FUA, BYTCHK, UNMAP, …). */
  flags: number;
  /** Byte index of the transfer length field, for sense field pointers. */
  countByte: number;
}

/** Decodes the LBA and length of a 6/10/12/16-byte block command; false when the CDB is too short. */
export function decodeBlockFields(cdb: Uint8Array, into: BlockFields): boolean {
  const op = cdb[0] as number;
  switch (cdbLengthFor(op)) {
    case 6:
      if (cdb.length < 6) return false;
      into.lba = (((cdb[1] as number) & 0x1f) << 16) | ((cdb[2] as number) << 8) | (cdb[3] as number);
      // SBC-4 §5.16: a TRANSFER LENGTH of 0 in READ(6)/WRITE(6) means 256 blocks.
      into.count = cdb[4] === 0 ? 256 : (cdb[4] as number);
      into.flags = 0;
      into.countByte = 4;
      return true;
    case 10:
      if (cdb.length < 10) return false;
      into.lba = u32(cdb, 2);
      into.count = u16(cdb, 7);
      into.flags = cdb[1] as number;
      into.countByte = 7;
      return true;
    case 12:
      if (cdb.length < 12) return false;
      into.lba = u32(cdb, 2);
      into.count = u32(cdb, 6);
      into.flags = cdb[1] as number;
      into.countByte = 6;
      return true;
    case 16:
      if (cdb.length < 16) return false;
      into.lba = u64(cdb, 2);
      into.count = u32(cdb, 10);
      into.flags = cdb[1] as number;
      into.countByte = 10;
      return true;
    default:
      return false;
  }
}
