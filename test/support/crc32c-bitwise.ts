// The reference CRC32C for the iSCSI digest tests and the crc32c micro-benchmark.

/**
 * CRC32C one bit at a time, straight from the reflected Castagnoli polynomial 0x82F63B78 (init and
 * final xor ~0, as iSCSI digests use it): the independent reference the table-driven and native
 * engines in crc32c.ts are checked against, and the baseline of their benchmark. `crc` continues
 * an earlier result.
 */
export function crc32cBitwise(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) {
    c ^= data[i]!;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}
