// TCP under an InitiatorSession: connects, feeds the socket's bytes to the session, writes the PDU
// writer's batches with one cork/uncork (one writev), and reports the end of the socket.
//
// The socket reads into one buffer of ours, reused for every read (`onread`): the PDU reader copies
// each chunk out before returning (Data-In payload straight into the command's buffer), so nothing
// needs a fresh 64 KiB Buffer per read, which cost an allocation, page faults and GC per read.
// Each read may fill only a part of it, sized by the PDUs seen lately (see ReadSizer).
//
// While a deep queue of large reads is in flight the socket's receive low-water mark (SO_RCVLOWAT)
// is raised, so the kernel wakes us once several whole Data-In PDUs wait rather than at each
// arriving piece (see LowWaterMark).
import net from 'node:net';
import { receiveLowWater } from '../internal/receive-low-water.ts';
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
  /** The socket's receive low-water mark as we last set it (1: not raised, or not settable here). */
  receiveLowWater?(): number;
}

export function connectTcp(host: string, port: number, timeoutMs: number, where: string): Promise<TcpConnection> {
  return new Promise((resolve, reject) => {
    let session: InitiatorSession | undefined;
    // bytes that arrive before attach() (none in a normal login): kept in order until then
    const early: Buffer[] = [];
    const own = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES); // memory of its own (not the pool)
    const reads = new ReadSizer(own);
    let lowWater: LowWaterMark | undefined;
    const socket = net.createConnection({
      host,
      port,
      noDelay: true,
      onread: {
        // asked after every read for the buffer of the next one
        buffer: () => reads.next(session),
        callback: (n, buf) => {
          if (session !== undefined) {
            session.receive(buf, n);
            lowWater?.afterRead(session);
          } else early.push(Buffer.from(buf.subarray(0, n)));
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
      const setLowWater = receiveLowWater(socket);
      if (setLowWater !== undefined) {
        const mark = new LowWaterMark(setLowWater);
        lowWater = mark;
        socket.once('close', () => mark.stop());
      }
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
        receiveLowWater: () => lowWater?.mark ?? 1,
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

/** Data-In PDUs smaller than this are read as they come: holding them back saves little and delays the commands their answers let go. */
const MIN_LOW_WATER = 16 * 1024;
/** PDUs of data that must be due before the mark goes up (see LowWaterMark.afterRead). */
const LOW_WATER_DEPTH = 8;
/** Most Data-In PDUs one wake-up waits for (a 256 KiB read holds 4 PDUs of 64 KiB). */
const LOW_WATER_PDUS = 4;
/** With the mark up and no read for this long, it goes back to 1 byte (see LowWaterMark). */
const LOW_WATER_WATCHDOG_MS = 2;

/**
 * The socket's receive low-water mark, set after each read. While the reads in flight wait for at
 * least LOW_WATER_DEPTH Data-In PDUs of the size seen last, it is a quarter of that data
 * (LOW_WATER_PDUS or a read buffer at most); otherwise 1 byte (a response, an R2T, a
 * NOP-In: anything may come next, and nothing is shorter than its 48-byte header).
 *
 * The data a read waits for is what it asked, but a target may answer it shorter (an error, a
 * residual): then fewer bytes come than the mark asks, and they would wait in the socket. A
 * watchdog drops the mark to 1 byte when no read came for 2 ms while it was up, so such an answer
 * is late by about that much, never stuck (a slow target trips it too: then we read as without a
 * mark). With 64 KiB reads at queue depth 32 it took our initiator from 0.98x to 1.26x
 * libiscsi's iscsi-perf against tgt, and from 0.87x to 1.06x against our own target (docs/iscsi.md).
 */
class LowWaterMark {
  readonly #set: (bytes: number) => boolean;
  #mark = 1;
  #reads = 0;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #broken = false;

  constructor(set: (bytes: number) => boolean) {
    this.#set = set;
  }

  get mark(): number {
    return this.#mark;
  }

  afterRead(session: InitiatorSession): void {
    this.#reads++;
    const pdu = session.lastDataInPdu;
    // data the socket still owes for sure-ish: what the reads wait for, less what the reader holds of a PDU already
    const due = session.dataInDue - session.reader.buffered;
    // Only with a deep queue of large reads (at least LOW_WATER_DEPTH PDUs due): a quarter of what
    // is due, so three quarters of the queue's data is still on its way when we wake and the target
    // never runs dry; at most LOW_WATER_PDUS. A shallow queue waits on each read's latency, which a
    // wake-up per whole PDU only lengthens.
    const want = pdu >= MIN_LOW_WATER && due >= LOW_WATER_DEPTH * pdu ? Math.min(LOW_WATER_PDUS * pdu, READ_BUFFER_BYTES, Math.floor(due / 4)) : 1;
    if (want !== this.#mark) this.#apply(want);
  }

  stop(): void {
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    this.#broken = true;
  }

  #apply(bytes: number): void {
    if (this.#broken) return;
    if (!this.#set(bytes)) {
      this.stop(); // the socket is gone, or the kernel refuses: read as Node does
      return;
    }
    this.#mark = bytes;
    if (bytes > 1 && this.#watchdog === undefined) {
      this.#reads = 0;
      this.#watchdog = setInterval(this.#check, LOW_WATER_WATCHDOG_MS);
      this.#watchdog.unref();
    } else if (bytes === 1 && this.#watchdog !== undefined) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
    }
  }

  readonly #check = (): void => {
    if (this.#reads === 0) this.#apply(1);
    this.#reads = 0;
  };
}
