// A Unix-socket listener that keeps track of its connections, so that closing it also ends them
// and removes the socket file. Claiming the path (stale socket or live server) is the caller's.
import { unlinkSync } from 'node:fs';
import net from 'node:net';

export interface UnixListener {
  /** Stops listening, destroys open connections and removes the socket file. */
  close(): Promise<void>;
}

/** Listens on `path`; `onConnection` gets each socket and how many others are open. */
export async function listenUnixSocket(path: string, onConnection: (socket: net.Socket, othersOpen: number) => void): Promise<UnixListener> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const others = sockets.size;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket, others);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          try {
            unlinkSync(path); // net.Server usually unlinks it already
          } catch {
            // already gone
          }
          resolve();
        });
      });
      return closing;
    },
  };
}
