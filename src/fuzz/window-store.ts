// Disks that are windows of one backing store, side by side: the campaign's hostile disks and the
// neighbour's share a RAM disk, so an I/O the backend lets run past the end of a hostile disk lands
// in the neighbour's, where its checks see it. A window adds its offset and forwards; like every
// driver it trusts the caller (blkback) to have checked the range, which is the point.
import type { BlockDevice, BlockDeviceInfo } from '../block/types.ts';

export interface WindowOptions {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  /** Logical block size this window presents (its offset and size must be multiples of it). */
  readonly logicalBlockSize?: number;
}

export function windowOf(backing: BlockDevice, options: WindowOptions): BlockDevice {
  const { offset, size } = options;
  const lbs = options.logicalBlockSize ?? backing.info.logicalBlockSize;
  if (offset % lbs !== 0 || size % lbs !== 0 || offset + size > backing.info.size) {
    throw new RangeError(`window ${options.name}: ${offset}+${size} is not whole ${lbs}-byte blocks inside ${backing.name} (${backing.info.size} bytes)`);
  }
  const info: BlockDeviceInfo = {
    ...backing.info,
    size,
    logicalBlockSize: lbs,
    physicalBlockSize: Math.max(lbs, backing.info.physicalBlockSize),
    discardGranularity: backing.info.canDiscard ? Math.max(lbs, backing.info.discardGranularity) : 0,
  };
  return {
    name: options.name,
    info,
    readv: (at, iov) => backing.readv(offset + at, iov),
    writev: (at, iov, flags) => backing.writev(offset + at, iov, flags),
    flush: () => backing.flush(),
    discard: (at, length) => backing.discard(offset + at, length),
    writeZeroes: (at, length) => backing.writeZeroes(offset + at, length),
    close: () => Promise.resolve(),
  };
}
