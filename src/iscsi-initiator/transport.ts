// TCP under an InitiatorSession: connects, feeds the socket's bytes to the session, writes the PDU
// writer's batches with one cork/uncork (one writev), and reports the end of the socket.
//
// The socket reads into one buffer of ours, reused for every read (`onread`): the PDU reader copies
// each chunk out before returning (Data-In payload straight into the command's buffer), so nothing
// needs a fresh 64 KiB Buffer per read, which cost an allocation, page faults and GC per read.
import net from 'node:net';
import type { InitiatorSession, SessionTransport } from './session.ts';

/** Bytes per socket read: several 64 KiB Data-In PDUs per system call at high queue depths. */
const READ_BUFFER_BYTES = 256 * 1024;

export interface TcpConnection {
  readonly transport: SessionTransport;
  /** Starts feeding the session; call once the session exists. */
  attach(session: InitiatorSession): void;
}

export function connectTcp(host: string, port: number, timeoutMs: number, where: string): Promise<TcpConnection> {
  return new Promise((resolve, reject) => {
    let session: InitiatorSession | undefined;
    // bytes that arrive before attach() (none in a normal login): kept in order until then
    const early: Buffer[] = [];
    const socket = net.createConnection({
      host,
      port,
      noDelay: true,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback: (n, buf) => {
          if (session !== undefined) session.receive(buf.subarray(0, n));
          else early.push(Buffer.from(buf.subarray(0, n)));
          return true; // keep reading (false would pause the socket)
        },
      },
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${where}: cannot connect to ${host}:${port}: timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`${where}: cannot connect to ${host}:${port}: ${err.code ?? err.message}`));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', () => undefined); // 'close' follows and says it
      const transport: SessionTransport = {
        write(chunks, done) {
          if (socket.destroyed) return done();
          socket.cork();
          for (let i = 0; i < chunks.length; i++) socket.write(chunks[i]!, i === chunks.length - 1 ? () => done() : undefined);
          socket.uncork();
        },
        destroy() {
          socket.destroy();
        },
      };
      resolve({
        transport,
        attach(s) {
          session = s;
          for (const chunk of early.splice(0)) s.receive(chunk);
          socket.once('close', () => s.closed(`${where}: connection to ${host}:${port} lost`));
          if (socket.destroyed) s.closed(`${where}: connection to ${host}:${port} lost`);
        },
      });
    });
  });
}
