// xenstored's Unix socket: listen, refuse to steal a live daemon's path, remove the file at close.

import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { xsError } from './errors.ts';
import { socketTransport } from './transport.ts';
import { listenUnixSocket } from '../internal/unix-listener.ts';
import type { UnixListenOptions } from '../internal/unix-listener.ts';
import type { XsTransport } from './transport.ts';

export interface XsUnixServer {
  readonly path: string;
  /** Stops listening, closes its connections and removes the socket file. */
  close(): Promise<void>;
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Every connection speaks for dom0, so the socket is created 0600 and only root, our uid and
 * `options.allowUids` (or the process's configureSocketAccess) are served (internal/unix-listener.ts).
 */
export async function listenUnix(path: string, onConnection: (t: XsTransport) => void, options: UnixListenOptions = {}): Promise<XsUnixServer> {
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) throw xsError('EEXIST', 'listen', path, 'exists and is not a socket');
    if (await probe(path)) throw xsError('EBUSY', 'listen', path, 'another daemon is serving this socket');
    unlinkSync(path); // stale socket of a daemon that died
  }
  const listener = await listenUnixSocket(path, (socket) => onConnection(socketTransport(socket)), { name: 'xenstore', ...options });
  return {
    path,
    close: () => listener.close(),
  };
}
