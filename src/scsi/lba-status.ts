// GET LBA STATUS (SBC-4 §5.7): the device's allocation map, as LBA status descriptors.
//
//   parameter data: 0-3 PARAMETER DATA LENGTH (n-3), 4-7 reserved, then 16-byte descriptors:
//   0-7 STARTING LBA, 8-11 NUMBER OF LOGICAL BLOCKS, 12 PROVISIONING STATUS (bits 3-0), 13-15 reserved
//
// The first descriptor starts at the requested LBA; neighbours in the same state are merged; a
// stretch the device does not describe counts as mapped (what a fully provisioned LU says of all).
import type { BlockExtent } from '../block/types.ts';
import { ProvisioningStatus } from './constants.ts';
import { putU32, putU64 } from './cdb.ts';

/** A descriptor: starting LBA, number of blocks (≤ 2^32-1), provisioning status. */
export type LbaStatus = [lba: number, blocks: number, status: number];

/** Bytes one blockStatus call may cover. */
const SPAN_BYTES = 2 ** 40;
/** Calls to blockStatus per command, at most. */
const MAX_CALLS = 64;
const MAX_BLOCKS = 0xffffffff;

function add(list: LbaStatus[], start: number, blocks: number, status: number): void {
  const last = list[list.length - 1];
  if (last !== undefined && last[2] === status && last[0] + last[1] === start && last[1] + blocks <= MAX_BLOCKS) {
    last[1] += blocks;
    return;
  }
  list.push([start, blocks, status]);
}

/**
 * Up to `max` descriptors from `lba` (below `end`, both in blocks of `bs` bytes). Without
 * `blockStatus` everything is mapped.
 */
export async function collectLbaStatus(
  blockStatus: ((offset: number, length: number) => Promise<readonly BlockExtent[]>) | undefined,
  lba: number,
  end: number,
  bs: number,
  max: number,
): Promise<LbaStatus[]> {
  const list: LbaStatus[] = [];
  if (blockStatus !== undefined) {
    let pos = lba;
    for (let calls = 0; pos < end && calls < MAX_CALLS && list.length <= max; calls++) {
      const extents = await blockStatus(pos * bs, Math.min((end - pos) * bs, SPAN_BYTES));
      if (extents.length === 0) break;
      for (const e of extents) {
        const from = Math.max(pos, Math.floor(e.offset / bs));
        const to = Math.min(end, Math.ceil((e.offset + e.length) / bs));
        if (to <= from) continue;
        if (from > pos) add(list, pos, Math.min(from - pos, MAX_BLOCKS), ProvisioningStatus.MAPPED);
        const n = Math.min(to - from, MAX_BLOCKS);
        add(list, from, n, e.allocated ? ProvisioningStatus.MAPPED : ProvisioningStatus.DEALLOCATED);
        pos = from + n;
        if (list.length > max) break;
      }
    }
  }
  if (list.length === 0) add(list, lba, Math.min(end - lba, MAX_BLOCKS), ProvisioningStatus.MAPPED);
  if (list.length > max) list.length = max;
  return list;
}

export function encodeLbaStatus(list: readonly LbaStatus[]): Uint8Array {
  const out = new Uint8Array(8 + 16 * list.length);
  putU32(out, 0, out.byteLength - 4);
  list.forEach(([start, blocks, status], i) => {
    putU64(out, 8 + 16 * i, start);
    putU32(out, 16 + 16 * i, blocks);
    out[20 + 16 * i] = status;
  });
  return out;
}
