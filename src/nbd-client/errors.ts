// The NBD client's errors: one line each, naming which step failed (connect, TLS, export, a
// command) and where, never a key (messages are built from the address, names and error codes).
import { BlockError, Errno } from '../internal/errors.ts';
import { NBD_ERRNO_NAMES, NbdErrno } from '../nbd/constants.ts';

/** Connecting or haggling failed: no such export, connection refused, TLS required or failed. */
export class NbdConnectError extends BlockError {
  constructor(code: string, message: string, errno: number = Errno.EIO) {
    super(code, message, { errno });
    this.name = 'NbdConnectError';
  }
}

/** The connection dropped or the server broke the protocol; requests in flight may go again. */
export class NbdConnectionLost extends BlockError {
  constructor(message: string) {
    super('BLK_ERR_NBD_CONNECTION', message, { errno: Errno.EIO, fatal: true });
    this.name = 'NbdConnectionLost';
  }
}

/** The server answered a command with an error (NBD_E*, the errno values of Linux). */
export class NbdCommandError extends BlockError {
  readonly nbdError: number;

  constructor(what: string, nbdError: number, detail: string) {
    super('BLK_ERR_NBD_COMMAND', `${what}: the server answered ${nbdErrorName(nbdError)}${detail === '' ? '' : ` (${detail})`}`, {
      errno: nbdErrnoToErrno(nbdError),
    });
    this.name = 'NbdCommandError';
    this.nbdError = nbdError;
  }
}

export function nbdErrorName(e: number): string {
  return (NBD_ERRNO_NAMES[e] ?? `error ${e}`).replace(/^NBD_/, '');
}

/** What errno the block layer reports for the server's error (unknown values are EIO, as proto.md says). */
function nbdErrnoToErrno(e: number): number {
  switch (e) {
    case NbdErrno.NBD_EPERM:
      return Errno.EROFS; // a write to a read-only export: the guest sees a read-only disk
    case NbdErrno.NBD_ENOMEM:
      return Errno.ENOMEM;
    case NbdErrno.NBD_EINVAL:
      return Errno.EINVAL;
    case NbdErrno.NBD_ENOSPC:
      return Errno.ENOSPC;
    case NbdErrno.NBD_ENOTSUP:
      return Errno.EOPNOTSUPP;
    default:
      return Errno.EIO;
  }
}
