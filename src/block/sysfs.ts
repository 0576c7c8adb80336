// Geometry of a host block device from sysfs (/sys/dev/block/MAJ:MIN/…). `size` there is in 512-byte
// units whatever the logical block size (Documentation/ABI/stable/sysfs-block); a partition has no
// queue/ directory of its own, its parent disk's applies.
import { readFile, realpath } from 'node:fs/promises';
import path from 'node:path';

export interface HostBlockGeometry {
  readonly size: number;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly readOnly: boolean;
  /** queue/write_cache says "write back": the device has a volatile cache that needs flushes. */
  readonly writeBack: boolean;
  /** queue/discard_max_bytes: the largest discard the device takes at once; 0 when it cannot discard. */
  readonly discardMaxBytes: number;
  /** queue/discard_granularity in bytes (0 when the device cannot discard). */
  readonly discardGranularity: number;
  /** A loop device (loop/ in sysfs): its discards punch holes in the backing file, so they read back as zeroes. */
  readonly loop: boolean;
  readonly sysfsDir: string;
}

/** glibc's gnu_dev_major/gnu_dev_minor on the 64-bit dev_t. */
export function splitDevT(rdev: number | bigint): { major: number; minor: number } {
  const d = BigInt(rdev);
  const major = Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & 0xfffff000n));
  const minor = Number((d & 0xffn) | ((d >> 12n) & 0xffffff00n));
  return { major, minor };
}

async function readTrim(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

export async function hostBlockGeometry(rdev: number | bigint): Promise<HostBlockGeometry> {
  const { major, minor } = splitDevT(rdev);
  const dir = await realpath(`/sys/dev/block/${major}:${minor}`);
  const sectors = await readTrim(path.join(dir, 'size'));
  if (sectors === undefined) throw new Error(`no ${dir}/size in sysfs`);
  let queue = path.join(dir, 'queue');
  if ((await readTrim(path.join(queue, 'logical_block_size'))) === undefined) queue = path.join(dir, '..', 'queue');
  const logical = Number((await readTrim(path.join(queue, 'logical_block_size'))) ?? 512);
  const physical = Number((await readTrim(path.join(queue, 'physical_block_size'))) ?? logical);
  const writeCache = await readTrim(path.join(queue, 'write_cache'));
  const ro = await readTrim(path.join(dir, 'ro'));
  const discardMax = Number((await readTrim(path.join(queue, 'discard_max_bytes'))) ?? 0);
  const discardGranularity = Number((await readTrim(path.join(queue, 'discard_granularity'))) ?? 0);
  // A partition's loop/ is its parent's.
  const loop = (await readTrim(path.join(queue, '..', 'loop', 'backing_file'))) !== undefined;
  const size = Number(sectors) * 512;
  return {
    size: size - (size % logical),
    logicalBlockSize: logical,
    physicalBlockSize: Math.max(physical, logical),
    readOnly: ro === '1',
    writeBack: writeCache === undefined ? true : writeCache.startsWith('write back'),
    discardMaxBytes: Number.isSafeInteger(discardMax) ? discardMax : 0,
    discardGranularity: Number.isSafeInteger(discardGranularity) ? discardGranularity : 0,
    loop,
    sysfsDir: dir,
  };
}
