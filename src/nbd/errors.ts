// What the NBD codec throws. A fatal error means the byte stream cannot be followed any more (a bad
// magic, a length past a limit): the document's answer is to drop the connection. A payload error
// means one option's data was malformed but its length was right: the stream is still in step and
// the server answers NBD_REP_ERR_INVALID.
import { BlockError, Errno } from '../internal/errors.ts';

export type NbdProtocolErrorKind = 'bad-magic' | 'too-long' | 'bad-payload' | 'unsafe-integer' | 'unexpected-reply';

export class NbdProtocolError extends BlockError {
  readonly kind: NbdProtocolErrorKind;

  constructor(kind: NbdProtocolErrorKind, message: string, fatal: boolean) {
    super(fatal ? 'NBD_ERR_PROTOCOL' : 'NBD_ERR_PAYLOAD', message, { errno: Errno.EINVAL, fatal });
    this.name = 'NbdProtocolError';
    this.kind = kind;
  }
}
