// The target on TCP: accepts connections on a portal and adapts each net.Socket to a
// TargetConnection. Every socket is read into one buffer shared by all (net.Socket's onread: no
// buffer allocated per read, and the PDU reader copies out what it keeps), where a plain 'data'
// listener would get a fresh 64 KiB buffer per read for the garbage collector (at 64 KiB writes
// that was a third of the target's CPU). Writes of one turn leave in one writev (cork/uncork); a
// peer that stops reading stops being read from once a few megabytes of answers wait for it, so
// memory stays bounded.
import net from 'node:net';
import { TargetConnection } from './connection.ts';
import type { ConnectionIo } from './connection.ts';
import type { IscsiTarget } from './target.ts';

/** Answers waiting in a socket before we stop reading that socket's requests. */
const HIGH_WATER = 8 << 20;
/** The one read buffer: reads of up to this much at once (a 256 KiB write in one system call). */
const READ_BUFFER = 256 * 1024;

export interface Portal {
  readonly host: string;
  readonly port: number;
}

export interface IscsiServer {
  /** Where it listens (the port is the real one when 0 was asked for). */
  readonly portal: Portal;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** "host:port", "[v6]:port" or "host" (port 3260) to a Portal; undefined if it is not one. */
export function parsePortal(text: string, defaultPort = 3260): Portal | undefined {
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(text);
  const v4 = /^([^:\s[\]]+)(?::(\d+))?$/.exec(text);
  const m = v6 ?? v4;
  if (m === null) return undefined;
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  return { host: m[1] as string, port };
}

export function formatPortal(p: Portal): string {
  return p.host.includes(':') ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`;
}

export async function listenIscsi(target: IscsiTarget, portal: Portal): Promise<IscsiServer> {
  const sockets = new Set<net.Socket>();
  const readBuffer = Buffer.allocUnsafeSlow(READ_BUFFER);
  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (accepted) => {
    const socket = withReadBuffer(accepted, readBuffer);
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serveSocket(target, socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: portal.host, port: portal.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => target.log(`iscsi: listener error: ${err.message}`));
  const address = server.address() as net.AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    portal: { host: portal.host, port: address.port },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }).then(() => target.close());
      return closing;
    },
  };
}

/** Where each read's bytes go before the connection's reader takes them (set per socket). */
const kDeliver = Symbol('deliver');
type ReadingSocket = net.Socket & { [kDeliver]?: (bytes: Uint8Array) => void };

/**
 * The accepted socket again, reading into `buffer`. Node offers onread only when a socket is made,
 * so the accepted (paused, never read) socket's libuv handle moves into a new net.Socket that has
 * it; where that handle is not reachable, the socket stays as it is and is read the usual way.
 */
function withReadBuffer(accepted: net.Socket, buffer: Buffer): ReadingSocket {
  const holder = accepted as unknown as { _handle: unknown };
  const handle = holder._handle;
  if (handle === null || handle === undefined) {
    accepted.on('data', (chunk: Buffer) => (accepted as ReadingSocket)[kDeliver]?.(chunk));
    accepted.resume();
    return accepted;
  }
  holder._handle = null;
  accepted.destroy();
  const socket: ReadingSocket = new net.Socket({
    handle,
    readable: true,
    writable: true,
    onread: {
      buffer,
      callback: (n: number, buf: Uint8Array): boolean => {
        socket[kDeliver]?.(buf.subarray(0, n));
        return true;
      },
    },
  } as net.SocketConstructorOpts);
  socket.setNoDelay(true);
  return socket;
}

function serveSocket(target: IscsiTarget, socket: ReadingSocket): void {
  socket.setKeepAlive(true, 30_000);
  const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
  let paused = false;
  const io: ConnectionIo = {
    peer,
    write(chunks, done) {
      if (socket.destroyed) return done();
      socket.cork();
      const last = chunks.length - 1;
      for (let i = 0; i < last; i++) socket.write(chunks[i] as Uint8Array);
      socket.write(chunks[last] as Uint8Array, () => done());
      socket.uncork();
      if (!paused && socket.writableLength > HIGH_WATER) {
        paused = true;
        socket.pause();
      }
    },
    end(now) {
      if (now) socket.destroy();
      else socket.end();
    },
  };
  socket.on('drain', () => {
    if (paused) {
      paused = false;
      socket.resume();
    }
  });
  const conn = new TargetConnection(target, io);
  if (!target.connectionOpened(conn)) {
    conn.close('too many connections', true);
    return;
  }
  socket[kDeliver] = (bytes) => conn.receive(bytes);
  socket.on('error', () => undefined); // 'close' follows, which is what we act on
  socket.on('close', () => conn.transportClosed());
}
