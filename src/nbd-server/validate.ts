// Every request is checked here, once, before any store sees it (house style rule 7, after
// nbdkit's validate_request): the command is known, its flags are ones the document allows for it
// and the handshake offered, the range lies inside the export and on the advertised minimum block
// size, and writes go to writable exports. Stores assume valid input.
//
// Errors (proto.md "Error values"): writes past the end ENOSPC, every other range error EINVAL;
// writes and trims to a read-only export EPERM (checked before the flags, so the answer says why);
// unknown commands and flags EINVAL. Zero-length requests, which the document leaves unspecified,
// succeed as no-ops, except NBD_CMD_BLOCK_STATUS, whose reply must describe at least one byte
// (EINVAL). A read above the maximum block size is EINVAL (EOVERFLOW with NBD_CMD_FLAG_DF).
import { Command, CommandFlag, NbdErrno, TransmissionFlag } from '../nbd/constants.ts';
import type { RequestHeader } from '../nbd/transmission.ts';
import type { CounterName } from './counters.ts';
import { MAX_PAYLOAD } from './export.ts';

/** What the connection negotiated, as validation needs it. */
export interface NegotiatedState {
  readonly size: number;
  readonly minimumBlockSize: number;
  readonly transmissionFlags: number;
  readonly readOnly: boolean;
  readonly structuredReplies: boolean;
  /** base:allocation was selected with NBD_OPT_SET_META_CONTEXT. */
  readonly metaContext: boolean;
}

export interface Refusal {
  readonly errno: number;
  readonly counter: CounterName;
  readonly why: string;
}

const {
  NBD_CMD_FLAG_FUA: FUA,
  NBD_CMD_FLAG_NO_HOLE: NO_HOLE,
  NBD_CMD_FLAG_DF: DF,
  NBD_CMD_FLAG_REQ_ONE: REQ_ONE,
  NBD_CMD_FLAG_FAST_ZERO: FAST_ZERO,
} = CommandFlag;

function refuse(errno: number, counter: CounterName, why: string): Refusal {
  return { errno, counter, why };
}

/** Undefined when the request may go to the store; else the error to answer and why. */
export function validateRequest(h: Readonly<RequestHeader>, s: NegotiatedState): Refusal | undefined {
  const type = h.type;
  const writes = type === Command.NBD_CMD_WRITE || type === Command.NBD_CMD_WRITE_ZEROES || type === Command.NBD_CMD_TRIM;
  if (writes && s.readOnly) return refuse(NbdErrno.NBD_EPERM, 'readOnlyWrites', 'write to a read-only export');

  let allowed = (s.transmissionFlags & TransmissionFlag.NBD_FLAG_SEND_FUA) !== 0 ? FUA : 0;
  switch (type) {
    case Command.NBD_CMD_READ:
      if (s.structuredReplies) allowed |= DF;
      break;
    case Command.NBD_CMD_WRITE:
    case Command.NBD_CMD_CACHE:
      break;
    case Command.NBD_CMD_FLUSH:
      if (h.offset !== 0 || h.length !== 0) return refuse(NbdErrno.NBD_EINVAL, 'badFlags', 'flush with a non-zero offset or length');
      break;
    case Command.NBD_CMD_TRIM:
      if ((s.transmissionFlags & TransmissionFlag.NBD_FLAG_SEND_TRIM) === 0)
        return refuse(NbdErrno.NBD_EINVAL, 'notNegotiated', 'trim, which this export does not offer');
      break;
    case Command.NBD_CMD_WRITE_ZEROES:
      allowed |= NO_HOLE;
      if ((s.transmissionFlags & TransmissionFlag.NBD_FLAG_SEND_FAST_ZERO) !== 0) allowed |= FAST_ZERO;
      break;
    case Command.NBD_CMD_BLOCK_STATUS:
      if (!s.metaContext) return refuse(NbdErrno.NBD_EINVAL, 'notNegotiated', 'block status without a metadata context (NBD_OPT_SET_META_CONTEXT)');
      allowed |= REQ_ONE;
      break;
    default:
      return refuse(NbdErrno.NBD_EINVAL, 'unknownCommand', `unknown command ${type}`);
  }
  if ((h.flags & ~allowed) !== 0) return refuse(NbdErrno.NBD_EINVAL, 'badFlags', `flags 0x${h.flags.toString(16)} not valid here`);
  if (type === Command.NBD_CMD_FLUSH) return undefined;

  if (h.offset + h.length > s.size) {
    const errno = type === Command.NBD_CMD_WRITE || type === Command.NBD_CMD_WRITE_ZEROES ? NbdErrno.NBD_ENOSPC : NbdErrno.NBD_EINVAL;
    return refuse(errno, 'outOfRange', `${h.length} bytes at ${h.offset} lie past the end (${s.size} bytes)`);
  }
  const min = s.minimumBlockSize;
  if (h.offset % min !== 0 || h.length % min !== 0) {
    return refuse(NbdErrno.NBD_EINVAL, 'unaligned', `${h.length} bytes at ${h.offset} are not aligned to the ${min}-byte minimum block size`);
  }
  if (type === Command.NBD_CMD_BLOCK_STATUS && h.length === 0) return refuse(NbdErrno.NBD_EINVAL, 'badFlags', 'block status of zero bytes');
  if (type === Command.NBD_CMD_READ && h.length > MAX_PAYLOAD) {
    return refuse(
      (h.flags & DF) !== 0 ? NbdErrno.NBD_EOVERFLOW : NbdErrno.NBD_EINVAL,
      'tooLarge',
      `read of ${h.length} bytes, above the ${MAX_PAYLOAD} maximum`,
    );
  }
  return undefined;
}
