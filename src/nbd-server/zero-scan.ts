// Holes of a shared RAM disk, found by looking at its bytes. A RAM disk that is shared with other
// threads gives up its hole maps (shared-store.ts: a write on another thread could not clear
// them), so on a transmission worker every block would count as data: reads of never-written
// space would be sent in full and nbdinfo --map would see no holes. Here a logical block that
// reads as all zeroes is a hole (NBD_STATE_HOLE | NBD_STATE_ZERO: the promise that matters, reads
// as zeroes, holds by construction). Data blocks cost one word each to tell apart (the first
// non-zero word ends the look), so sparse reads of data stay cheap.
import type { SharedRamSpec } from '../block/shared-store.ts';
import type { BlockDevice, BlockExtent } from '../block/types.ts';

/** Bytes looked at per call at most (callers ask again from where the answer ends). */
const MAX_SCAN = 8 * 1024 * 1024;

/** `device` (a view of `spec`'s chunks) with a blockStatus that reports all-zero blocks as holes. */
export function withZeroScanStatus(device: BlockDevice, spec: SharedRamSpec): BlockDevice {
  const chunkSize = spec.chunkSize;
  const words = spec.chunks.map((c) => new Int32Array(c, 0, c.byteLength >>> 2));
  const grain = Math.max(4, device.info.logicalBlockSize);
  const zero = (from: number, to: number): boolean => {
    const index = Math.floor(from / chunkSize);
    const chunk = words[index]!;
    const first = (from - index * chunkSize) >>> 2;
    const last = first + ((to - from) >>> 2);
    for (let w = first; w < last; w++) if (chunk[w] !== 0) return false;
    return true;
  };
  const blockStatus = (offset: number, length: number): Promise<readonly BlockExtent[]> => {
    const out: { offset: number; length: number; allocated: boolean }[] = [];
    const end = Math.min(offset + length, device.info.size, offset + MAX_SCAN);
    let pos = offset;
    while (pos < end) {
      // Blocks never straddle chunks: chunk sizes are whole numbers of blocks.
      const next = Math.min(end, (Math.floor(pos / grain) + 1) * grain);
      const allocated = pos % 4 !== 0 || next % 4 !== 0 || !zero(pos, next);
      const last = out[out.length - 1];
      if (last !== undefined && last.allocated === allocated) last.length += next - pos;
      else out.push({ offset: pos, length: next - pos, allocated });
      pos = next;
    }
    return Promise.resolve(out);
  };
  return Object.assign(device, { blockStatus });
}
