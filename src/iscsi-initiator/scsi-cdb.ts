// The SCSI commands the initiator sends (SBC-4, SPC-5) and the answers it reads. Pure byte work,
// big-endian as SCSI is: every CDB is laid out in a 16-byte buffer (the iSCSI command PDU's CDB field).

export const ScsiOp = {
  TEST_UNIT_READY: 0x00,
  INQUIRY: 0x12,
  SYNCHRONIZE_CACHE_16: 0x91,
  READ_16: 0x88,
  WRITE_16: 0x8a,
  UNMAP: 0x42,
  MODE_SENSE_6: 0x1a,
  MODE_SENSE_10: 0x5a,
  /** SERVICE ACTION IN (16), service action 0x10: READ CAPACITY (16). */
  SERVICE_ACTION_IN_16: 0x9e,
} as const;

export const ScsiStatus = { GOOD: 0x00, CHECK_CONDITION: 0x02, BUSY: 0x08, TASK_SET_FULL: 0x28 } as const;
export const SenseKey = { NOT_READY: 0x02, UNIT_ATTENTION: 0x06, ABORTED_COMMAND: 0x0b } as const;
/** ASC 0x29: power on, reset or bus device reset occurred (any ASCQ): a volatile cache may be gone. */
export const ASC_POWER_ON_RESET = 0x29;
/** WRITE(16) byte 1 bit 3: Force Unit Access. */
const FUA = 0x08;

function put64(c: Uint8Array, at: number, v: number): void {
  const hi = Math.floor(v / 0x1_0000_0000);
  put32(c, at, hi);
  put32(c, at + 4, v >>> 0);
}

function put32(c: Uint8Array, at: number, v: number): void {
  c[at] = v >>> 24;
  c[at + 1] = v >>> 16;
  c[at + 2] = v >>> 8;
  c[at + 3] = v;
}

function get32(b: Uint8Array, at: number): number {
  return (((b[at] as number) << 24) | ((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number)) >>> 0;
}

function get64(b: Uint8Array, at: number): number {
  return get32(b, at) * 0x1_0000_0000 + get32(b, at + 4);
}

/** Zeroes a CDB (a loop: fill() is a runtime call, dearer than 16 stores on every I/O). */
function clear16(out: Uint8Array): void {
  for (let i = 0; i < 16; i++) out[i] = 0;
}

export function readCdb(out: Uint8Array, lba: number, blocks: number): void {
  clear16(out);
  out[0] = ScsiOp.READ_16;
  put64(out, 2, lba);
  put32(out, 10, blocks);
}

export function writeCdb(out: Uint8Array, lba: number, blocks: number, fua: boolean): void {
  clear16(out);
  out[0] = ScsiOp.WRITE_16;
  out[1] = fua ? FUA : 0;
  put64(out, 2, lba);
  put32(out, 10, blocks);
}

/** SYNCHRONIZE CACHE (16) of the whole LUN (LBA 0, 0 blocks means to the end). */
export function synchronizeCacheCdb(out: Uint8Array): void {
  out.fill(0, 0, 16);
  out[0] = ScsiOp.SYNCHRONIZE_CACHE_16;
}

export function testUnitReadyCdb(out: Uint8Array): void {
  out.fill(0, 0, 16);
}

export function inquiryCdb(out: Uint8Array, page: number | undefined, allocation: number): void {
  out.fill(0, 0, 16);
  out[0] = ScsiOp.INQUIRY;
  if (page !== undefined) {
    out[1] = 0x01; // EVPD
    out[2] = page;
  }
  out[3] = allocation >>> 8;
  out[4] = allocation;
}

export const READ_CAPACITY_16_LENGTH = 32;

export function readCapacity16Cdb(out: Uint8Array): void {
  out.fill(0, 0, 16);
  out[0] = ScsiOp.SERVICE_ACTION_IN_16;
  out[1] = 0x10;
  put32(out, 10, READ_CAPACITY_16_LENGTH);
}

/** UNMAP with one block descriptor; the parameter list (24 bytes) is built by unmapParameters. */
export const UNMAP_PARAMETERS_LENGTH = 24;

export function unmapCdb(out: Uint8Array): void {
  out.fill(0, 0, 16);
  out[0] = ScsiOp.UNMAP;
  out[7] = UNMAP_PARAMETERS_LENGTH >>> 8;
  out[8] = UNMAP_PARAMETERS_LENGTH;
}

export function unmapParameters(lba: number, blocks: number): Uint8Array {
  const p = new Uint8Array(UNMAP_PARAMETERS_LENGTH);
  p[1] = UNMAP_PARAMETERS_LENGTH - 2; // UNMAP data length
  p[3] = 16; // block descriptor data length
  put64(p, 8, lba);
  put32(p, 16, blocks);
  return p;
}

/**
 * MODE SENSE asking for every page (3Fh), current values, as Linux's sd does to learn write
 * protection: all we read is the header, and 3Fh is the page code targets refuse least.
 */
const ALL_MODE_PAGES = 0x3f;
/** Allocation length for either MODE SENSE: room for the header, a block descriptor and some pages. */
export const MODE_SENSE_LENGTH = 192;
/** WP in the mode parameter header's DEVICE-SPECIFIC PARAMETER for direct-access devices (SBC-4 §6.5.1). */
const WRITE_PROTECT = 0x80;

export function modeSense6Cdb(out: Uint8Array): void {
  out.fill(0, 0, 16);
  out[0] = ScsiOp.MODE_SENSE_6;
  out[2] = ALL_MODE_PAGES;
  out[4] = MODE_SENSE_LENGTH;
}

export function modeSense10Cdb(out: Uint8Array): void {
  out.fill(0, 0, 16);
  out[0] = ScsiOp.MODE_SENSE_10;
  out[2] = ALL_MODE_PAGES;
  out[7] = MODE_SENSE_LENGTH >>> 8;
  out[8] = MODE_SENSE_LENGTH;
}

/**
 * The WP bit from MODE SENSE parameter data (SPC-5 §7.5.5: the header is 4 bytes after MODE
 * SENSE(6), the device-specific parameter at byte 2; 8 bytes after MODE SENSE(10), at byte 3).
 * `received` is how many bytes the target sent; null when that is less than the header.
 */
export function parseWriteProtect(b: Uint8Array, received: number, ten: boolean): boolean | null {
  const header = ten ? 8 : 4;
  if (received < header || b.byteLength < header) return null;
  return ((b[ten ? 3 : 2] as number) & WRITE_PROTECT) !== 0;
}

export interface Capacity {
  readonly blocks: number;
  readonly blockSize: number;
  /** Logical blocks per physical block exponent. */
  readonly physicalExponent: number;
  /** LBPME: the LUN is thin (logical block provisioning management enabled). */
  readonly thin: boolean;
  /** LBPRZ: unmapped blocks read as zeroes. */
  readonly unmappedReadZeroes: boolean;
}

/** READ CAPACITY (16) parameter data (SBC-4 §5.20.2); null when short or nonsense. */
export function parseCapacity16(b: Uint8Array): Capacity | null {
  if (b.byteLength < 16) return null;
  const lastLba = get64(b, 0);
  const blockSize = get32(b, 8);
  if (!Number.isSafeInteger(lastLba + 1) || blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) return null;
  const blocks = lastLba + 1;
  if (!Number.isSafeInteger(blocks * blockSize)) return null;
  return {
    blocks,
    blockSize,
    physicalExponent: (b[13] as number) & 0x0f,
    thin: ((b[14] as number) & 0x80) !== 0,
    unmappedReadZeroes: ((b[14] as number) & 0x40) !== 0,
  };
}

export interface BlockLimits {
  /** In logical blocks; 0 when the target states no limit. */
  readonly maxTransferBlocks: number;
  readonly maxUnmapBlocks: number;
  readonly unmapGranularityBlocks: number;
}

export const BLOCK_LIMITS_PAGE = 0xb0;

/** Block Limits VPD page (SBC-4 §6.6.4); null when it is not that page or too short. */
export function parseBlockLimits(b: Uint8Array): BlockLimits | null {
  if (b.byteLength < 32 || b[1] !== BLOCK_LIMITS_PAGE) return null;
  return {
    maxTransferBlocks: get32(b, 8),
    maxUnmapBlocks: get32(b, 20),
    unmapGranularityBlocks: b.byteLength >= 32 ? get32(b, 28) & 0x7fffffff : 0,
  };
}

export interface Sense {
  readonly key: number;
  readonly asc: number;
  readonly ascq: number;
}

/** Fixed (0x70/0x71) or descriptor (0x72/0x73) sense data; undefined when neither. */
export function parseSense(b: Uint8Array | undefined): Sense | undefined {
  if (b === undefined || b.byteLength < 2) return undefined;
  const code = (b[0] as number) & 0x7f;
  if ((code === 0x70 || code === 0x71) && b.byteLength >= 14) return { key: (b[2] as number) & 0x0f, asc: b[12] as number, ascq: b[13] as number };
  if ((code === 0x72 || code === 0x73) && b.byteLength >= 4) return { key: (b[1] as number) & 0x0f, asc: b[2] as number, ascq: b[3] as number };
  return undefined;
}
