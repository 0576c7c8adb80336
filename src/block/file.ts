// A regular file or block device through the page cache: the QEMU qdisk analog ("file:"). Positional
// readv/writev on libuv's pool; flush is fdatasync, so the device has a volatile cache (the page
// cache) and FUA is a write followed by fdatasync.
//
// No discard: punching holes needs fallocate(2), which Node does not expose. writeZeroes writes a
// zero buffer.
import type { BlockDevice, BlockDeviceInfo } from './types.ts';
import { WRITE_FUA } from './types.ts';
import { BlockError, Errno, UsageError } from '../internal/errors.ts';
import { closeFd, fdatasync, ftruncate, preadvFull, pwritevFull, writeZeroRange } from './fs-io.ts';
import { FILE_LOGICAL_BLOCK, openHostTarget } from './host-target.ts';

export interface FileDiskOptions {
  readonly readOnly?: boolean;
  /** Name for messages; default "file:PATH". */
  readonly name?: string;
}

const ZERO_BUFFER_SIZE = 1 << 20;
let zeroBuffer: Uint8Array | undefined;

export async function openFileDisk(path: string, opts: FileDiskOptions = {}): Promise<BlockDevice> {
  const name = opts.name ?? `file:${path}`;
  const readOnly = opts.readOnly ?? false;
  const { fd, stat, geometry } = await openHostTarget(path, name, readOnly, 0);
  const makeInfo = (size: number): BlockDeviceInfo => ({
    ...geometry,
    size,
    // The page cache always holds writes until fdatasync, whatever the device below does.
    volatileCache: true,
    canFlush: true,
    canFua: true,
    canDiscard: false,
    canWriteZeroes: true,
    discardGranularity: 0,
    bufferAlignment: 1,
  });
  let info = makeInfo(geometry.size);
  let closed = false;

  const resize = async (newSize: number): Promise<void> => {
    if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % FILE_LOGICAL_BLOCK !== 0) {
      throw new UsageError(`${name}: new size ${newSize} must be a positive multiple of ${FILE_LOGICAL_BLOCK}`);
    }
    await ftruncate(fd, name, newSize);
    info = makeInfo(newSize);
  };

  return {
    name,
    get info() {
      return info;
    },
    readv(offset, iov) {
      return preadvFull(fd, name, offset, iov);
    },
    writev(offset, iov, flags = 0) {
      const written = pwritevFull(fd, name, offset, iov);
      return (flags & WRITE_FUA) === 0 ? written : written.then(() => fdatasync(fd, name));
    },
    flush() {
      return fdatasync(fd, name);
    },
    discard() {
      return Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', `${name}: discard is not supported`, { errno: Errno.EOPNOTSUPP }));
    },
    writeZeroes(offset, length) {
      zeroBuffer ??= new Uint8Array(ZERO_BUFFER_SIZE);
      return writeZeroRange(fd, name, offset, length, zeroBuffer);
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      return closeFd(fd);
    },
    // Only a regular file can change size (a block device's size is the host's business).
    ...(stat.isFile() && !readOnly ? { resize } : {}),
  };
}
