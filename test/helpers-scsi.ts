// An independent CDB encoder for the device server's tests: CDBs written field by field with
// Buffer methods from the SBC-4 layouts, never with src/scsi/cdb.ts (the code under test).

export const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
export const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export const READ6 = 0x08,
  WRITE6 = 0x0a,
  READ10 = 0x28,
  WRITE10 = 0x2a,
  READ12 = 0xa8,
  WRITE12 = 0xaa,
  READ16 = 0x88,
  WRITE16 = 0x8a;
export const VERIFY10 = 0x2f,
  VERIFY16 = 0x8f,
  WRITE_VERIFY10 = 0x2e,
  PREFETCH10 = 0x34,
  PREFETCH16 = 0x90,
  SYNC10 = 0x35,
  SYNC16 = 0x91;
export const WS10 = 0x41,
  WS16 = 0x93,
  ORWRITE = 0x8b,
  COMPARE_AND_WRITE = 0x89;

/** READ(6)/WRITE(6): a 21-bit LBA, a one-byte length (0 means 256) and no flags. */
export function rw6(op: number, lba: number, n: number): number[] {
  return [op, (lba >>> 16) & 0x1f, (lba >>> 8) & 0xff, lba & 0xff, n & 0xff, 0];
}

/** A 10-byte block command (READ, WRITE, VERIFY, SYNCHRONIZE CACHE, ...): LBA at 2, length at 7. */
export function rw10(op: number, lba: number, n: number, flags = 0): number[] {
  const b = Buffer.alloc(10);
  b[0] = op;
  b[1] = flags;
  b.writeUInt32BE(lba >>> 0, 2);
  b.writeUInt16BE(n, 7);
  return [...b];
}

/** A 12-byte block command: LBA at 2, length at 6. */
export function rw12(op: number, lba: number, n: number, flags = 0): number[] {
  const b = Buffer.alloc(12);
  b[0] = op;
  b[1] = flags;
  b.writeUInt32BE(lba >>> 0, 2);
  b.writeUInt32BE(n, 6);
  return [...b];
}

/** A 16-byte block command: 64-bit LBA at 2, length at 10. */
export function rw16(op: number, lba: bigint | number, n: number, flags = 0): number[] {
  const b = Buffer.alloc(16);
  b[0] = op;
  b[1] = flags;
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(n, 10);
  return [...b];
}

/** COMPARE AND WRITE: 64-bit LBA at 2, a one-byte NUMBER OF LOGICAL BLOCKS at 13. */
export function compareAndWriteCdb(lba: number, n: number, flags = 0): number[] {
  const b = Buffer.alloc(16);
  b[0] = COMPARE_AND_WRITE;
  b[1] = flags;
  b.writeBigUInt64BE(BigInt(lba), 2);
  b[13] = n;
  return [...b];
}
