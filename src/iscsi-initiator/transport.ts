// TCP under an InitiatorSession: connects, feeds the socket's bytes to the session, writes the PDU
// writer's batches with one cork/uncork (one writev), and reports the end of the socket.
import net from 'node:net';
import type { InitiatorSession, SessionTransport } from './session.ts';

export interface TcpConnection {
  readonly transport: SessionTransport;
  /** Starts feeding the session; call once the session exists. */
  attach(session: InitiatorSession): void;
}

export function connectTcp(host: string, port: number, timeoutMs: number, where: string): Promise<TcpConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host, port, noDelay: true });
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
        attach(session) {
          socket.on('data', (chunk: Buffer) => session.receive(chunk));
          socket.once('close', () => session.closed(`${where}: connection to ${host}:${port} lost`));
          if (socket.destroyed) session.closed(`${where}: connection to ${host}:${port} lost`);
        },
      });
    });
  });
}
