// Opening a host path for a driver: a regular file or a block device, with its geometry (fstat for
// files; sysfs for block devices). Shared by the buffered (file.ts) and O_DIRECT (direct.ts) drivers.
import fs from 'node:fs';
import type { BlockDeviceInfo } from './types.ts';
import { Errno, UsageError } from '../internal/errors.ts';
import { closeFd } from './fs-io.ts';
import { hostBlockGeometry } from './sysfs.ts';
import type { HostBlockGeometry } from './sysfs.ts';

/** Regular files are addressed in 512-byte blocks (for O_DIRECT this assumes a 512-byte filesystem block). */
export const FILE_LOGICAL_BLOCK = 512;

export type HostGeometry = Pick<BlockDeviceInfo, 'size' | 'logicalBlockSize' | 'physicalBlockSize' | 'readOnly' | 'volatileCache'>;

function openFd(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, flags, (err, fd) => (err === null ? resolve(fd) : reject(err))));
}

function fstat(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err === null ? resolve(st) : reject(err))));
}

/** Which file to open when it has been checked already (path-policy.ts). */
export interface CheckedTarget {
  /**
   * An O_PATH descriptor of the file that was checked: the file is opened again through
   * /proc/self/fd/N, which reaches that very inode whatever has been renamed or replaced since
   * (`path` only names it in messages). The caller keeps it open until the open resolves.
   */
  readonly pathFd: number;
  /** st_dev and st_ino of the checked file; a mismatch after opening refuses the file. */
  readonly dev: number;
  readonly ino: number;
}

export interface HostTarget {
  readonly fd: number;
  readonly stat: fs.Stats;
  readonly geometry: HostGeometry;
  /** What sysfs says about a block device (undefined for a regular file). */
  readonly block: HostBlockGeometry | undefined;
}

/** Opens with `extraFlags` plus O_RDWR or O_RDONLY and describes the target. */
export async function openHostTarget(path: string, name: string, readOnly: boolean, extraFlags: number, checked?: CheckedTarget): Promise<HostTarget> {
  const access = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
  let fd: number;
  try {
    fd = await openFd(checked === undefined ? path : `/proc/self/fd/${checked.pathFd}`, access | extraFlags);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint =
      e.code === 'EINVAL' && (extraFlags & fs.constants.O_DIRECT) !== 0
        ? ' (the filesystem does not support O_DIRECT, e.g. tmpfs before Linux 6.6: use file: instead, or a loop device)'
        : e.code === 'EROFS' || e.code === 'EACCES'
          ? ' (open it read-only?)'
          : '';
    throw new UsageError(`${name}: cannot open ${path}: ${e.message}${hint}`, { cause: err, errno: typeof e.errno === 'number' ? -e.errno : Errno.EIO });
  }
  try {
    const stat = await fstat(fd);
    if (checked !== undefined && (stat.dev !== checked.dev || stat.ino !== checked.ino)) {
      throw new UsageError(`${name}: ${path} changed while it was being opened (device ${stat.dev} inode ${stat.ino}, checked ${checked.dev}/${checked.ino})`, {
        errno: Errno.EACCES,
      });
    }
    if (stat.isBlockDevice()) {
      const g = await hostBlockGeometry(stat.rdev);
      if (g.readOnly && !readOnly) {
        throw new UsageError(`${name}: ${path} is a read-only block device; open it read-only`, { errno: Errno.EROFS });
      }
      return {
        fd,
        stat,
        block: g,
        geometry: {
          size: g.size,
          logicalBlockSize: g.logicalBlockSize,
          physicalBlockSize: g.physicalBlockSize,
          readOnly,
          volatileCache: g.writeBack,
        },
      };
    }
    if (stat.isFile()) {
      // The tail beyond the last whole block is not addressable.
      const size = stat.size - (stat.size % FILE_LOGICAL_BLOCK);
      if (size === 0) throw new UsageError(`${name}: ${path} is smaller than one ${FILE_LOGICAL_BLOCK}-byte block`);
      return {
        fd,
        stat,
        block: undefined,
        geometry: {
          size,
          logicalBlockSize: FILE_LOGICAL_BLOCK,
          physicalBlockSize: stat.blksize >= 4096 ? 4096 : FILE_LOGICAL_BLOCK,
          readOnly,
          volatileCache: true,
        },
      };
    }
    throw new UsageError(`${name}: ${path} is neither a regular file nor a block device`);
  } catch (err) {
    await closeFd(fd).catch(() => undefined);
    throw err;
  }
}
