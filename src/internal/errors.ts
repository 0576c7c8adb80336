// One error base for the whole project (house style rule 10): a stable string `code`, the errno a
// protocol answer should carry, and `fatal` for errors that end a connection or ring.

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  E2BIG: 7,
  ENOTEMPTY: 39,
  EQUOTA: 122, // xenstored's EDQUOT
  EOPNOTSUPP: 95,
  EISCONN: 106,
  EBUSY: 16,
} as const;

export interface BlockErrorOptions {
  errno?: number;
  fatal?: boolean;
  cause?: unknown;
}

export class BlockError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly fatal: boolean;

  constructor(code: string, message: string, options: BlockErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BlockError';
    this.code = code;
    this.errno = options.errno ?? Errno.EIO;
    this.fatal = options.fatal ?? false;
  }
}

/** A user's input (command line, config file, job file) is wrong; the message names the place. */
export class UsageError extends BlockError {
  constructor(message: string, options: BlockErrorOptions = {}) {
    super('BLK_ERR_USAGE', message, { errno: Errno.EINVAL, ...options });
    this.name = 'UsageError';
  }
}

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(Errno)) if (value === errno) return name;
  return `errno ${errno}`;
}
