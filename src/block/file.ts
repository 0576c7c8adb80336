// A regular file or block device through the page cache: the QEMU qdisk analog ("file:"). Positional
// readv/writev on libuv's pool, or on the calling thread for files in memory (tmpfs: memory-fs.ts);
// flush is fdatasync, so the device has a volatile cache (the page cache) and FUA is a write
// followed by fdatasync.
//
// Discard, write-zeroes and block status go to the kernel (host-space.ts): holes punched in a regular
// file, BLKDISCARD/BLKZEROOUT on a block device. Without the FFI (koffi) there is no discard and
// writeZeroes writes a zero buffer.
import type { BlockDevice, BlockDeviceInfo } from './types.ts';
import { WRITE_FUA } from './types.ts';
import { UsageError } from '../internal/errors.ts';
import { closeFd, fdatasync, ftruncate, preadvFull, preadvInline, pwritevFull, pwritevInline, writeZeroRange } from './fs-io.ts';
import { isMemoryBacked } from './memory-fs.ts';
import { FILE_LOGICAL_BLOCK, openHostTarget } from './host-target.ts';
import type { CheckedTarget } from './host-target.ts';
import { probeHostSpace } from './host-space.ts';
import type { ZeroMethod } from './host-space.ts';

export interface FileDiskOptions {
  readonly readOnly?: boolean;
  /** Name for messages; default "file:PATH". */
  readonly name?: string;
  /** Open this already-checked file (path-policy.ts) rather than whatever `path` names now. */
  readonly checked?: CheckedTarget;
}

export interface FileDisk extends BlockDevice {
  /** Why discard is not offered (undefined when it is): no FFI, a filesystem without holes, ... */
  readonly discardProblem: string | undefined;
  /** How writeZeroes reaches the store now (learnt on first use for ZERO_RANGE). */
  readonly zeroMethod: ZeroMethod;
  /** Reads and writes run on the calling thread: the file is in memory (tmpfs, ramfs). */
  readonly inline: boolean;
}

const ZERO_BUFFER_SIZE = 1 << 20;
let zeroBuffer: Uint8Array | undefined;

export async function openFileDisk(path: string, opts: FileDiskOptions = {}): Promise<FileDisk> {
  const name = opts.name ?? `file:${path}`;
  const readOnly = opts.readOnly ?? false;
  const target = await openHostTarget(path, name, readOnly, 0, opts.checked);
  const { fd, stat, geometry } = target;
  let space;
  try {
    space = await probeHostSpace({
      fd,
      name,
      target,
      readOnly,
      logicalBlockSize: geometry.logicalBlockSize,
      size: () => info.size,
      writeZeroesByWriting: (offset, length) => {
        zeroBuffer ??= new Uint8Array(ZERO_BUFFER_SIZE);
        return writeZeroRange(fd, name, offset, length, zeroBuffer);
      },
    });
  } catch (err) {
    await closeFd(fd).catch(() => undefined);
    throw err;
  }
  const makeInfo = (size: number): BlockDeviceInfo => ({
    ...geometry,
    size,
    // The page cache always holds writes until fdatasync, whatever the device below does.
    volatileCache: true,
    canFlush: true,
    canFua: true,
    canDiscard: space.canDiscard,
    canWriteZeroes: true,
    discardGranularity: space.discardGranularity,
    bufferAlignment: 1,
    discardZeroes: space.discardZeroes,
  });
  let info = makeInfo(geometry.size);
  let closed = false;
  const blockStatus = space.blockStatus;
  const inline = stat.isFile() && isMemoryBacked(fd);
  const readv = inline ? preadvInline : preadvFull;
  const writev = inline ? pwritevInline : pwritevFull;

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
    discardProblem: space.discardProblem,
    get zeroMethod() {
      return space.zeroMethod;
    },
    inline,
    readv(offset, iov) {
      return readv(fd, name, offset, iov);
    },
    writev(offset, iov, flags = 0) {
      const written = writev(fd, name, offset, iov);
      return (flags & WRITE_FUA) === 0 ? written : written.then(() => fdatasync(fd, name));
    },
    flush() {
      return fdatasync(fd, name);
    },
    discard: space.discard,
    writeZeroes: space.writeZeroes,
    ...(blockStatus === undefined ? {} : { blockStatus }),
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      return closeFd(fd);
    },
    share: () => ({ kind: 'file', name, path, fd, dev: stat.dev, ino: stat.ino, readOnly }),
    // Only a regular file can change size (a block device's size is the host's business).
    ...(stat.isFile() && !readOnly ? { resize } : {}),
  };
}
