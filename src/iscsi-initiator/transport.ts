// TCP under an InitiatorSession: connects, feeds the socket's bytes to the session, writes the PDU
// writer's batches with one cork/uncork (one writev), and reports the end of the socket.
//
// The socket reads into one buffer of ours, reused for every read (`onread`): the PDU reader copies
// each chunk out before returning (Data-In payload straight into the command's buffer), so nothing
// needs a fresh 64 KiB Buffer per read, which cost an allocation, page faults and GC per read.
// Each read may fill only a part of it, sized by the PDUs seen lately (see ReadSizer).
import net from 'node:net';
import type { InitiatorSession, SessionTransport } from './session.ts';

/** The read buffer: several 64 KiB Data-In PDUs per system call at high queue depths. */
const READ_BUFFER_BYTES = 256 * 1024;
/** Smallest read (login, small responses). */
const MIN_READ_BYTES = 32 * 1024;
/**
 * A read takes room for about this many PDUs of the size seen lately. Fewer responses per read
 * means their completions' new commands leave sooner (the writer flushes after each read's
 * callback), so the target is not left idle while we parse a long run of small responses.
 */
const PDUS_PER_READ = 8;

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
    const own = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES); // memory of its own (not the pool)
    const reads = new ReadSizer(own);
    const socket = net.createConnection({
      host,
      port,
      noDelay: true,
      onread: {
        // asked after every read for the buffer of the next one
        buffer: () => reads.next(session),
        callback: (n, buf) => {
          if (session !== undefined) session.receive(buf, n);
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
          // one chunk (commands alone, no large data): cork and uncork would only add buffering work
          if (chunks.length === 1) {
            socket.write(chunks[0]!, done);
            return;
          }
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

/** The part of our read buffer the next read may fill: sized by the PDUs seen since the last read. */
class ReadSizer {
  readonly #own: Buffer;
  #view: Buffer;
  #bytes = 0;
  #pdus = 0;

  constructor(own: Buffer) {
    this.#own = own;
    this.#view = own;
  }

  next(session: InitiatorSession | undefined): Buffer {
    if (session === undefined) return this.#view;
    const { bytesIn, pdusIn } = session.reader;
    const pdus = pdusIn - this.#pdus;
    if (pdus > 0) {
      const perPdu = (bytesIn - this.#bytes) / pdus;
      this.#bytes = bytesIn;
      this.#pdus = pdusIn;
      // powers of two, so the view changes only when the PDU size really does
      let want = MIN_READ_BYTES;
      while (want < perPdu * PDUS_PER_READ && want < this.#own.byteLength) want *= 2;
      if (want !== this.#view.byteLength) this.#view = this.#own.subarray(0, Math.min(want, this.#own.byteLength));
    }
    return this.#view;
  }
}
