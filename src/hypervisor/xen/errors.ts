// Errors of the real-Xen binding. XenUnavailableError says why this process cannot drive Xen at
// all (no devices, no libraries, no xenstored) and how to fix it; XenDeviceError is one failed call
// into libxengnttab/libxenevtchn with the errno the library left.

import { constants } from 'node:os';
import { BlockError, Errno } from '../../internal/errors.ts';
import type { BlockErrorOptions } from '../../internal/errors.ts';

/** 'EINVAL' for 22 and so on, from the host's own table; unknown numbers print as numbers. */
export function hostErrnoName(errno: number): string {
  for (const [name, value] of Object.entries(constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** The host cannot act as a Xen backend domain; the message names what is missing and the fix. */
export class XenUnavailableError extends BlockError {
  constructor(message: string, options: BlockErrorOptions = {}) {
    super('BLK_ERR_XEN_UNAVAILABLE', message, { errno: Errno.ENOENT, fatal: true, ...options });
    this.name = 'XenUnavailableError';
  }
}

/** A call into the grant or event-channel device failed; `op` names the library call. */
export class XenDeviceError extends BlockError {
  readonly op: string;

  constructor(op: string, errno: number, detail = '', options: BlockErrorOptions = {}) {
    super('BLK_ERR_XEN_DEVICE', `${op} failed: ${hostErrnoName(errno)}${detail === '' ? '' : ` (${detail})`}`, {
      errno,
      ...options,
    });
    this.name = 'XenDeviceError';
    this.op = op;
  }
}
