// The one interface every disk sits behind (docs/architecture.md): RAM, buffered file ("file:"),
// raw/direct ("phy:"), remote drivers later, and the guest's own view through blkfront.
//
// Offsets and lengths are bytes. Callers (blkback, the NBD/iSCSI servers, the fio runner) validate
// range, alignment and read-only centrally before calling; drivers assume valid input
// (nbdkit's validate_request model). Buffers in `iov` may be views of guest memory: a driver reads
// or writes them in place and must not keep them after the returned promise settles.

import type { SharedStoreSpec } from './shared-store.ts';

export const WRITE_FUA = 1 as const;

export interface BlockDeviceInfo {
  /** Size in bytes; a multiple of logicalBlockSize. */
  readonly size: number;
  /** Smallest addressable unit (512 or 4096); offsets and lengths must be multiples of it. */
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly readOnly: boolean;
  /** True when writes may sit in a volatile cache until flush(): flush is then meaningful. */
  readonly volatileCache: boolean;
  /** flush() is supported (always true for drivers here; false only for remote peers that refuse). */
  readonly canFlush: boolean;
  readonly canFua: boolean;
  readonly canDiscard: boolean;
  readonly canWriteZeroes: boolean;
  /** Discard granularity in bytes (0 when canDiscard is false). */
  readonly discardGranularity: number;
  /** Required alignment of buffer addresses, in bytes (O_DIRECT: the logical block size; else 1). */
  readonly bufferAlignment: number;
  /**
   * Requests issued together reach the kernel in one system call (Linux native AIO's io_submit):
   * a backend saves by issuing many at once. Absent or false for stores that complete in-process,
   * where smaller batches let completions overlap the next requests.
   */
  readonly batchedSubmission?: boolean;
  /**
   * Discarded ranges read back as zeroes (SCSI's LBPRZ): true for RAM and null disks, holes punched
   * in files and loop devices; false or absent where the device does not promise it (a real disk's
   * BLKDISCARD).
   */
  readonly discardZeroes?: boolean;
}

/** One run of blocks from BlockDevice.blockStatus. */
export interface BlockExtent {
  readonly offset: number;
  readonly length: number;
  /** False for a hole: deallocated (SCSI) or NBD_STATE_HOLE; such blocks read as zeroes. */
  readonly allocated: boolean;
}

export interface BlockDevice {
  /** What the user called it, for messages: "ram:1G", "/dev/loop0", "file:/tmp/disk.img". */
  readonly name: string;
  /** Current description; `size` changes after resize(). */
  readonly info: BlockDeviceInfo;
  /** Read consecutive bytes starting at `offset` into the buffers, in order. */
  readv(offset: number, iov: readonly Uint8Array[]): Promise<void>;
  /** Write the buffers' bytes, in order, starting at `offset`. With WRITE_FUA it is durable on return. */
  writev(offset: number, iov: readonly Uint8Array[], flags?: number): Promise<void>;
  /** Every write completed before this call is durable when it resolves. */
  flush(): Promise<void>;
  /**
   * The range may read back as anything afterwards (zeroes where info.discardZeroes) and may cost no
   * space (a hole). Rejects with BLK_ERR_UNSUPPORTED (EOPNOTSUPP) when info.canDiscard is false.
   */
  discard(offset: number, length: number): Promise<void>;
  /**
   * The range reads back as zeroes afterwards. It may become a hole (RAM disks; files on tmpfs, which
   * has no ZERO_RANGE) or stay allocated (ZERO_RANGE on ext4/xfs, BLKZEROOUT).
   */
  writeZeroes(offset: number, length: number): Promise<void>;
  /**
   * Which parts of [offset, offset+length) hold data and which are holes (deallocated: read as
   * zeroes, cost no space), as consecutive extents covering at least `offset` onwards (the last may
   * stop short of `length`; callers ask again from where it ends). Drivers that cannot tell leave it
   * out: everything then counts as allocated. For SCSI's GET LBA STATUS and NBD's base:allocation.
   */
  blockStatus?(offset: number, length: number): Promise<readonly BlockExtent[]>;
  /** Grow or shrink (drivers that support it). */
  resize?(newSize: number): Promise<void>;
  /**
   * Stores whose size can change under us (a Ceph image resized by another client) call `listener`
   * with the new size; the returned function stops that. blkback tells the guest (online resize).
   */
  onSizeChange?(listener: (size: number) => void): () => void;
  close(): Promise<void>;
  /**
   * How another thread of this process may open this same store for itself (shared-store.ts:
   * openSharedStore), or absent where it cannot (a network client, a store in JavaScript of this
   * thread). Sharing a RAM disk makes every chunk of it allocated.
   */
  share?(): SharedStoreSpec;
}
