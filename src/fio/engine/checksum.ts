// Checksums for verify: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, as fio's crc32c and
// iSCSI), CRC-32 (IEEE, reflected 0xEDB88320, as zlib) and MD5 (node:crypto). Table-driven, byte at a time.
import { createHash } from 'node:crypto';

function makeTable(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
}

const CRC32C_TABLE = makeTable(0x82f63b78);
const CRC32_TABLE = makeTable(0xedb88320);

function crc(table: Uint32Array, data: Uint8Array, start: number, end: number): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export function crc32c(data: Uint8Array, start = 0, end = data.length): number {
  return crc(CRC32C_TABLE, data, start, end);
}

export function crc32(data: Uint8Array, start = 0, end = data.length): number {
  return crc(CRC32_TABLE, data, start, end);
}

export function md5(data: Uint8Array, start = 0, end = data.length): Buffer {
  return createHash('md5').update(data.subarray(start, end)).digest();
}
