// Block-status checks shared by the driver tests (block-ram, block-space).
import assert from 'node:assert/strict';
import type { BlockDevice, BlockExtent } from '../src/block/types.ts';

/**
 * The whole status of [0, size), asking again where an answer stops short, with neighbouring
 * extents of the same kind merged: drivers may split a range anywhere, so tests compare this.
 */
export async function fullStatus(dev: BlockDevice, size: number): Promise<BlockExtent[]> {
  const out: BlockExtent[] = [];
  for (let pos = 0; pos < size; ) {
    const part = await dev.blockStatus!(pos, size - pos);
    assert.ok(part.length > 0, `no extents at ${pos}`);
    assert.equal(part[0]!.offset, pos, 'extents start where asked');
    for (const e of part) {
      const last = out[out.length - 1];
      if (last !== undefined && last.allocated === e.allocated) out[out.length - 1] = { ...last, length: last.length + e.length };
      else out.push(e);
      pos = e.offset + e.length;
    }
  }
  return out;
}
