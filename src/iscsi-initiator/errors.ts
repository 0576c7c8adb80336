// The initiator's errors: one line each, saying which thing went wrong, never carrying a secret
// (messages are built from the target's address, names and status codes only).
import { BlockError, Errno } from '../internal/errors.ts';
import { LoginStatus } from '../iscsi/constants.ts';

/** The target refused the login; `status` is Status-Class << 8 | Status-Detail (RFC 7143 §11.13.5). */
export class IscsiLoginError extends BlockError {
  readonly status: number;

  constructor(where: string, status: number, detail: string) {
    super('BLK_ERR_ISCSI_LOGIN', `${where}: login failed: ${detail} (login status 0x${status.toString(16).padStart(4, '0')})`, { errno: loginErrno(status) });
    this.name = 'IscsiLoginError';
    this.status = status;
  }
}

/** What a login status means, in words naming the cause. */
export function describeLoginStatus(status: number, targetName: string, initiatorName: string): string {
  switch (status) {
    case LoginStatus.AUTHENTICATION_FAILURE:
      return 'authentication failed (wrong CHAP user or secret, or the target wants CHAP)';
    case LoginStatus.AUTHORIZATION_FAILURE:
      return `refused by the target's access list (initiator ${initiatorName} is not allowed)`;
    case LoginStatus.NOT_FOUND:
      return `no such target ${targetName}`;
    case LoginStatus.TARGET_REMOVED:
      return `target ${targetName} was removed`;
    case LoginStatus.TARGET_MOVED_TEMPORARILY:
    case LoginStatus.TARGET_MOVED_PERMANENTLY:
      return 'the target moved (redirection is not supported)';
    case LoginStatus.TOO_MANY_CONNECTIONS:
      return 'the target has too many connections';
    case LoginStatus.SERVICE_UNAVAILABLE:
    case LoginStatus.OUT_OF_RESOURCES:
      return 'the target is unavailable or out of resources';
    default: {
      const cls = status >> 8;
      const kind = cls === 2 ? 'initiator error' : cls === 3 ? 'target error' : 'refused';
      return `${kind}, status class ${cls} detail ${status & 0xff}`;
    }
  }
}

function loginErrno(status: number): number {
  if (status === LoginStatus.AUTHENTICATION_FAILURE || status === LoginStatus.AUTHORIZATION_FAILURE) return Errno.EACCES;
  if (status === LoginStatus.NOT_FOUND || status === LoginStatus.TARGET_REMOVED) return Errno.ENOENT;
  return Errno.EIO;
}

/** The connection dropped or broke the protocol; commands in flight may be retried on a new one. */
export class IscsiConnectionLost extends BlockError {
  constructor(message: string) {
    super('BLK_ERR_ISCSI_CONNECTION', message, { errno: Errno.EIO, fatal: true });
    this.name = 'IscsiConnectionLost';
  }
}

/** A SCSI command ended with a status other than GOOD. */
export class ScsiCommandError extends BlockError {
  readonly status: number;
  readonly senseKey: number;
  readonly asc: number;
  readonly ascq: number;

  constructor(what: string, status: number, sense: { key: number; asc: number; ascq: number } | undefined) {
    const s =
      sense === undefined
        ? ''
        : `, sense key 0x${sense.key.toString(16)} ASC/ASCQ 0x${sense.asc.toString(16).padStart(2, '0')}/0x${sense.ascq.toString(16).padStart(2, '0')}`;
    super('BLK_ERR_SCSI', `${what}: SCSI status 0x${status.toString(16).padStart(2, '0')}${s}`, { errno: senseErrno(sense?.key, sense?.asc) });
    this.name = 'ScsiCommandError';
    this.status = status;
    this.senseKey = sense?.key ?? 0;
    this.asc = sense?.asc ?? 0;
    this.ascq = sense?.ascq ?? 0;
  }
}

function senseErrno(key: number | undefined, asc: number | undefined): number {
  if (key === 0x07) return Errno.EROFS; // DATA PROTECT
  if (key === 0x05 && asc === 0x21) return Errno.EINVAL; // LBA out of range
  if (key === 0x05 && asc === 0x20) return Errno.EOPNOTSUPP; // invalid command operation code
  return Errno.EIO;
}
