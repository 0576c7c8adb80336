// Errors raised by the hypervisor layer (simulated or, later, real). GrantError carries Xen's GNTST
// code so a backend can log it and answer BLKIF_RSP_ERROR for the request that named the ref.

import { BlockError, Errno } from '../internal/errors.ts';
import type { BlockErrorOptions } from '../internal/errors.ts';
import { GNTST } from './types.ts';

/** 'GNTST_permission_denied' for -8, and so on; unknown codes print as numbers. */
export function gntstName(status: number): string {
  for (const [name, value] of Object.entries(GNTST)) if (value === status) return `GNTST_${name}`;
  return `GNTST ${status}`;
}

function grantErrno(status: number): number {
  switch (status) {
    case GNTST.general_error:
    case GNTST.permission_denied:
      return Errno.EACCES;
    case GNTST.eagain:
      return Errno.EAGAIN;
    case GNTST.no_device_space:
      return Errno.ENOSPC;
    default:
      return Errno.EINVAL;
  }
}

/** A grant reference could not be mapped, copied, granted or revoked. */
export class GrantError extends BlockError {
  readonly ref: number;
  readonly domid: number;
  /** The GNTST_* code Xen would have returned for this ref. */
  readonly status: number;

  constructor(ref: number, domid: number, status: number, reason: string, options: BlockErrorOptions = {}) {
    super('BLK_ERR_GRANT', `grant ref ${ref} of domain ${domid}: ${reason} (${gntstName(status)})`, {
      errno: grantErrno(status),
      ...options,
    });
    this.name = 'GrantError';
    this.ref = ref;
    this.domid = domid;
    this.status = status;
  }
}

/** An event-channel operation was refused (bind to a port that is not unbound for us, no free port, ...). */
export class EventChannelError extends BlockError {
  readonly domid: number;
  readonly port: number;

  constructor(domid: number, port: number, message: string, options: BlockErrorOptions = {}) {
    super('BLK_ERR_EVTCHN', message, { errno: Errno.EINVAL, ...options });
    this.name = 'EventChannelError';
    this.domid = domid;
    this.port = port;
  }
}

/** Creating, finding or destroying a domain failed, or guest memory was used out of bounds. */
export class DomainError extends BlockError {
  constructor(message: string, options: BlockErrorOptions = {}) {
    super('BLK_ERR_DOMAIN', message, { errno: Errno.EINVAL, ...options });
    this.name = 'DomainError';
  }
}
