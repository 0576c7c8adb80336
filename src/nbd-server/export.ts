// One export: a block device under a name, shared by every connection that opens it (so a flush on
// any connection covers the writes of all: that is what lets us advertise NBD_FLAG_CAN_MULTI_CONN),
// and what the handshake tells clients about it.
import type { BlockDevice } from '../block/types.ts';
import { TransmissionFlag } from '../nbd/constants.ts';

/** The largest request payload we accept and advertise (NBD_INFO_BLOCK_SIZE maximum); 32 MiB as qemu-nbd and nbdkit. */
export const MAX_PAYLOAD = 32 * 1024 * 1024;

export interface NbdExport {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  /** Writes refused with EPERM (the export or its store is read-only). */
  readonly readOnly: boolean;
}

export interface BlockSizes {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

export function blockSizesOf(exp: NbdExport): BlockSizes {
  const info = exp.device.info;
  return { minimum: info.logicalBlockSize, preferred: Math.max(4096, info.physicalBlockSize), maximum: MAX_PAYLOAD };
}

/** The 16 transmission flags for this export (proto.md "Transmission flags"). */
export function transmissionFlagsOf(exp: NbdExport): number {
  const info = exp.device.info;
  let flags = TransmissionFlag.NBD_FLAG_HAS_FLAGS | TransmissionFlag.NBD_FLAG_SEND_FLUSH | TransmissionFlag.NBD_FLAG_SEND_CACHE;
  flags |= TransmissionFlag.NBD_FLAG_CAN_MULTI_CONN | TransmissionFlag.NBD_FLAG_SEND_DF;
  if (exp.readOnly) return flags | TransmissionFlag.NBD_FLAG_READ_ONLY;
  flags |= TransmissionFlag.NBD_FLAG_SEND_FUA | TransmissionFlag.NBD_FLAG_SEND_WRITE_ZEROES;
  if (info.canDiscard) flags |= TransmissionFlag.NBD_FLAG_SEND_TRIM;
  if (info.canWriteZeroes) flags |= TransmissionFlag.NBD_FLAG_SEND_FAST_ZERO;
  return flags;
}
