// librados/librbd answer with -errno; these turn the ones users meet while opening an image into one
// line that says what is wrong in their terms (pool, image, snapshot, monitors, user), and the ones
// met during I/O into BlockErrors carrying the errno the guest should see.
import { getSystemErrorName } from 'node:util';
import { BlockError, Errno, UsageError } from '../internal/errors.ts';

export function errnoText(negative: number): string {
  try {
    return getSystemErrorName(negative);
  } catch {
    return `errno ${-negative}`;
  }
}

const ENOENT = -2;
const EACCES = -13;
const EPERM = -1;
const ETIMEDOUT = -110;
const EINVAL = -22;
const ENOTCONN = -107;
const EBLOCKLISTED = -108; // Linux ESHUTDOWN: librados' EBLOCKLISTED

/** The step of opening an image that failed, for the message. */
export type OpenStep = 'conf' | 'conf-set' | 'connect' | 'pool' | 'image' | 'snapshot' | 'stat';

export interface OpenContext {
  readonly image: string;
  readonly pool: string;
  readonly user: string;
  readonly conf: string | undefined;
  readonly detail?: string;
  readonly timeoutS?: number;
}

/** One line for a failed open step; `code` is librados' negative errno. */
export function openError(step: OpenStep, code: number, c: OpenContext): UsageError {
  const errno = code < 0 ? -code : Errno.EIO;
  const e = errnoText(code);
  let why: string;
  switch (step) {
    case 'conf':
      why = `cannot read Ceph configuration ${c.conf ?? '(default search)'}: ${e}`;
      break;
    case 'conf-set':
      why = `Ceph rejected option ${c.detail ?? ''}: ${e}`;
      break;
    case 'connect':
      if (code === ETIMEDOUT)
        why = `the cluster's monitors did not answer within ${c.timeoutS ?? '?'} s (cluster unreachable? check mon_host in ${c.conf ?? 'ceph.conf'})`;
      else if (code === EACCES || code === EPERM) why = `authentication as client.${c.user} failed (${e}): check the keyring and the user's caps`;
      else if (code === ENOENT) why = `cannot connect as client.${c.user}: no monitor address or no keyring found (${e}); give :conf=PATH or :mon_host=ADDR`;
      else if (code === EINVAL) why = `cannot connect as client.${c.user}: invalid configuration (${e})`;
      else why = `cannot connect to the cluster as client.${c.user}: ${e}`;
      break;
    case 'pool':
      why = code === ENOENT ? `no such pool '${c.pool}'` : `cannot open pool '${c.pool}': ${e}`;
      break;
    case 'image':
      if (code === ENOENT) why = `no such image ${c.image}`;
      else if (code === EACCES || code === EPERM) why = `client.${c.user} may not open ${c.image} (${e})`;
      else why = `cannot open image ${c.image}: ${e}`;
      break;
    case 'snapshot':
      why = `image ${c.image.split('@')[0]} has no snapshot '${c.detail ?? ''}'`;
      break;
    case 'stat':
      why = `cannot read the size of ${c.image}: ${e}`;
      break;
  }
  return new UsageError(why, { errno });
}

/** A failed I/O request: the errno travels on to the guest's response (EIO for most). */
export function ioError(what: string, code: number, name: string): BlockError {
  const errno = -code;
  const kind = code === EBLOCKLISTED || code === ENOTCONN ? ' (this client was cut off from the cluster)' : '';
  return new BlockError('BLK_ERR_IO', `${name}: ${what} failed: ${errnoText(code)}${kind}`, { errno: errno > 0 ? errno : Errno.EIO });
}
