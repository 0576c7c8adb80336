// Sockets under the NBD client: TCP or a Unix socket, connected with a time limit, and the TLS
// upgrade after NBD_OPT_STARTTLS (node:tls over the same socket, x509 or a pre-shared key).
// Messages say which step failed and where, in one line.
import net from 'node:net';
import tls from 'node:tls';
import { Errno } from '../internal/errors.ts';
import { NbdConnectError } from './errors.ts';

export interface Endpoint {
  readonly transport: 'tcp' | 'unix';
  readonly host: string;
  readonly port: number;
  readonly socket: string;
}

/** The TLS credentials, read from their files (tls-credentials.ts). */
export type TlsCredentials =
  | {
      readonly kind: 'x509';
      readonly ca: Buffer | undefined;
      readonly cert: Buffer | undefined;
      readonly key: Buffer | undefined;
      readonly hostname: string | undefined;
      readonly verifyPeer: boolean;
    }
  | { readonly kind: 'psk'; readonly identity: string; readonly key: Buffer };

function endpointText(e: Endpoint): string {
  return e.transport === 'unix' ? `socket ${e.socket.replace(/\0/g, '@')}` : `${e.host}:${e.port}`;
}

const CONNECT_ERRORS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused (is the server running?)',
  ENOENT: 'no such socket',
  EACCES: 'permission denied',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
};

/**
 * The socket's bytes, as views valid only during the call: a listener keeps what it needs by
 * copying. Plain sockets from connectSocket read into one buffer of their own, reused for every
 * read (net.Socket's onread): a fresh 64 KiB Buffer per read cost an allocation and its garbage
 * collection per read, and read data is copied out into the caller's buffers anyway. Other sockets
 * (TLS) deliver their 'data' chunks. Returns the function that stops the listening.
 */
export function onSocketBytes(socket: net.Socket, listener: (bytes: Buffer) => void): () => void {
  const reused = reusedReads.get(socket);
  if (reused !== undefined) {
    reused.listener = listener;
    for (const bytes of reused.early.splice(0)) listener(bytes);
    return () => {
      if (reused.listener === listener) reused.listener = undefined;
    };
  }
  socket.on('data', listener);
  return () => socket.off('data', listener);
}

/** Several 64 KiB replies per read at high queue depths. */
const READ_BUFFER_BYTES = 256 * 1024;

interface ReusedReads {
  listener: ((bytes: Buffer) => void) | undefined;
  /** Bytes that came before anyone listened (kept as copies). */
  readonly early: Buffer[];
}

const reusedReads = new WeakMap<net.Socket, ReusedReads>();

export function connectSocket(e: Endpoint, timeoutMs: number, where: string, o: { readonly reuseReadBuffer?: boolean } = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const reads: ReusedReads = { listener: undefined, early: [] };
    const buffer = o.reuseReadBuffer === true ? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES) : undefined;
    const onread =
      buffer === undefined
        ? undefined
        : {
            buffer,
            callback: (n: number, buf: Uint8Array): boolean => {
              const bytes = (buf as Buffer).subarray(0, n);
              if (reads.listener !== undefined) reads.listener(bytes);
              else reads.early.push(Buffer.from(bytes));
              return true;
            },
          };
    const options = e.transport === 'unix' ? { path: e.socket } : { host: e.host, port: e.port, noDelay: true };
    const socket = net.createConnection(onread === undefined ? options : ({ ...options, onread } as net.NetConnectOpts));
    if (onread !== undefined) reusedReads.set(socket, reads);
    const fail = (why: string, errno: number): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new NbdConnectError('BLK_ERR_NBD_CONNECT', `${where}: cannot connect to ${endpointText(e)}: ${why}`, errno));
    };
    const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms`, Errno.EIO), timeoutMs);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      fail(
        CONNECT_ERRORS[code] === undefined ? (code === '' ? err.message : code) : `${CONNECT_ERRORS[code]}, ${code}`,
        code === 'ENOENT' ? Errno.ENOENT : Errno.EIO,
      );
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

/**
 * TLS over `socket`, which has just had NBD_OPT_STARTTLS acknowledged. The server is checked
 * against the CA (and the host name, or tls-hostname) unless verification is off; with PSK both
 * sides prove they know the key.
 */
export function upgradeToTls(socket: net.Socket, creds: TlsCredentials, e: Endpoint, timeoutMs: number, where: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    let options: tls.ConnectionOptions;
    if (creds.kind === 'psk') {
      options = {
        socket,
        // PSK needs TLS 1.2 here: Node's TLS 1.3 PSK works only for session resumption-style identities
        maxVersion: 'TLSv1.2',
        ciphers: 'PSK',
        pskCallback: () => ({ psk: creds.key, identity: creds.identity }),
        checkServerIdentity: () => undefined,
      };
    } else {
      const servername = creds.hostname ?? (e.transport === 'tcp' ? e.host : 'localhost');
      options = {
        socket,
        ...(net.isIP(servername) === 0 ? { servername } : {}),
        rejectUnauthorized: creds.verifyPeer,
        ...(creds.ca === undefined ? {} : { ca: creds.ca }),
        ...(creds.cert === undefined ? {} : { cert: creds.cert }),
        ...(creds.key === undefined ? {} : { key: creds.key }),
        checkServerIdentity: creds.verifyPeer ? (_host, cert) => tls.checkServerIdentity(servername, cert) : () => undefined,
      };
    }
    const secure = tls.connect(options);
    const timer = setTimeout(() => {
      secure.destroy();
      reject(new NbdConnectError('BLK_ERR_NBD_TLS', `${where}: TLS failed: no TLS handshake within ${timeoutMs} ms`));
    }, timeoutMs);
    secure.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      secure.destroy();
      const why = err.code === undefined ? err.message : `${err.code}${err.message.includes(err.code) ? '' : `: ${err.message}`}`;
      reject(new NbdConnectError('BLK_ERR_NBD_TLS', `${where}: TLS failed: ${why.split('\n')[0]}`, Errno.EACCES));
    });
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      secure.removeAllListeners('error');
      resolve(secure);
    });
  });
}
