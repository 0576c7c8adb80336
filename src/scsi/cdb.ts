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
  const length = cdbLengthFor(cdb[0] as number);
  if (cdb.length < length) return false;
  switch (length) {
    case 6: {
      // READ(6)/WRITE(6): a 21-bit LBA in bytes 1-3 and no flags. SBC-4 §5.16: a TRANSFER LENGTH
      // of 0 means 256 blocks.
      const count = cdb[4] === 0 ? 256 : (cdb[4] as number);
      return setBlockFields(into, u24(cdb, 1) & 0x1fffff, count, 0, 4);
    }
    case 10:
      return setBlockFields(into, u32(cdb, 2), u16(cdb, 7), cdb[1] as number, 7);
    case 12:
      return setBlockFields(into, u32(cdb, 2), u32(cdb, 6), cdb[1] as number, 6);
    case 16:
      return setBlockFields(into, u64(cdb, 2), u32(cdb, 10), cdb[1] as number, 10);
    default:
      return false;
  }
}

function setBlockFields(into: BlockFields, lba: number, count: number, flags: number, countByte: number): true {
  into.lba = lba;
  into.count = count;
  into.flags = flags;
  into.countByte = countByte;
  return true;
}
