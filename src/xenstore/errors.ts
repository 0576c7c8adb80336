import { BlockError, Errno } from '../internal/errors.ts';
import type { BlockErrorOptions } from '../internal/errors.ts';

function errnoFor(code: string): number {
  const known: Record<string, number> = Errno;
  return known[code] ?? Errno.EIO;
}

/**
 * A xenstore request failed. `code` is the xenstore error name as it travels in an XS_ERROR
 * payload ('ENOENT', 'EACCES', 'EAGAIN', 'EQUOTA', ...); the message names the operation and path.
 */
export class XenstoreError extends BlockError {
  constructor(code: string, message: string, options: BlockErrorOptions = {}) {
    super(code, message, { errno: errnoFor(code), ...options });
    this.name = 'XenstoreError';
  }
}

/**
 * `xenstore <op> <path>: <code>` — the one message shape for daemon and client errors. Without a
 * stack: the daemon only sends the code (a guest's ENOENT or EQUOTA is routine, and capturing a
 * stack was its largest single cost), and a client's error is made where the reply is decoded,
 * whose stack says nothing about the caller.
 */
export function xsError(code: string, op: string, path?: string, detail?: string): XenstoreError {
  const where = path === undefined ? op : `${op} ${path}`;
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new XenstoreError(code, `xenstore ${where}: ${code}${detail === undefined ? '' : ` (${detail})`}`);
  } finally {
    Error.stackTraceLimit = limit;
  }
}
