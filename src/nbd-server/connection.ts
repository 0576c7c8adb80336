// One client connection: the socket glue around the handshake (option-haggling.ts) and the
// transmission phase (transmission.ts), including the upgrade to TLS after NBD_OPT_STARTTLS.
//
// Replies produced in one turn of the event loop are sent together: the socket is corked at the
// first and uncorked on the next tick, so a burst of completions becomes one writev.
//
// With transmission workers (worker-pool.ts), a plain connection is handed over once the handshake
// is done: reading stops in the same turn the handshake ended (what the kernel still holds stays
// there for the worker), the handshake's last replies are flushed, and then the worker gets a
// duplicate of the descriptor plus the bytes already read past the handshake (fd-handoff.ts).
import net from 'node:net';
import tls from 'node:tls';
import { ByteQueue } from '../nbd/wire.ts';
import type { NbdServerCounters } from './counters.ts';
import type { ProblemLog } from './counters.ts';
import type { NbdExport } from './export.ts';
import { dupSocketFd } from './fd-handoff.ts';
import { OptionHaggler, type Negotiated, type TlsMode } from './option-haggling.ts';
import { ReadSlabs, readIntoSlabs, socketFromFd } from './read-slabs.ts';
import type { NbdTlsConfig } from './tls.ts';
import { TransmissionSession } from './transmission.ts';

/** Replies queued in the socket before we stop reading requests (a client that does not read). */
const MAX_UNSENT_BYTES = 32 * 1024 * 1024;
/** How long a closing connection may take to flush before it is cut. */
const CLOSE_LINGER_MS = 5000;
/** How long the handshake may take: a client that connects and says nothing must not keep a slot. */
export const HANDSHAKE_TIMEOUT_MS = 60_000;

export interface ConnectionContext {
  findExport(name: string): NbdExport | undefined;
  listExports(): readonly NbdExport[];
  readonly tlsMode: TlsMode;
  readonly tls: NbdTlsConfig | undefined;
  readonly counters: NbdServerCounters;
  readonly problems: ProblemLog;
  /** Where plain connections go for their transmission phase (worker threads); absent: served here. */
  readonly handOff?: ConnectionHandOff;
}

export interface ConnectionHandOff {
  /** Whether a connection to this export can be served elsewhere (its store can be shared). */
  accepts(exp: NbdExport): boolean;
  /** Takes the connection: `fd` is now the taker's to close; `leftover` are its first bytes. */
  give(connection: HandedOffConnection): void;
}

export interface HandedOffConnection {
  readonly fd: number;
  readonly negotiated: Negotiated;
  /** Bytes read past the end of the handshake (the first requests), in order. */
  readonly leftover: Uint8Array;
  readonly label: string;
}

/** A socket adopted by a worker: its descriptor, what the handshake agreed, and its first bytes. */
export interface AdoptedSocket {
  readonly fd: number;
  readonly negotiated: Negotiated;
  readonly leftover: Uint8Array;
}

export class NbdConnection {
  readonly #context: ConnectionContext;
  readonly #label: string;
  readonly #queue = new ByteQueue();
  readonly #haggler: OptionHaggler;
  #socket: net.Socket;
  readonly #slabs: ReadSlabs;
  /** STARTTLS began: the plain socket's bytes are TLS records now, no longer ours to decode. */
  #tlsStarted = false;
  #session: TransmissionSession | undefined;
  #tlsActive = false;
  #corked = false;
  #paused = false;
  #waitingForDrain = false;
  #closed = false;
  #handshakeTimer: NodeJS.Timeout | undefined;
  /** Reads go into our slabs with onread (so pause() stops reading at once: a hand-off loses no byte). */
  readonly #slabbed: boolean;
  /** Reading stopped for a hand-off to a worker; the socket is no longer ours to decode. */
  #handingOff = false;
  readonly #onData = (chunk: Buffer): void => {
    try {
      if (this.#session !== undefined) return this.#session.push(chunk);
      this.#queue.push(chunk);
      this.#haggler.drain();
    } catch (err) {
      // A bug of ours, not the client's: this connection ends, the server goes on.
      this.#problem('internal', `internal error: ${(err as Error).stack ?? String(err)}`);
      this.#socket.destroy();
    }
  };

  readonly #onClosed: () => void;

  /**
   * `onClosed` runs once, when the connection's socket has closed. An accepted socket starts with
   * the handshake; an adopted one (a worker's) starts in the transmission phase.
   */
  constructor(source: net.Socket | AdoptedSocket, context: ConnectionContext, label: string, onClosed: () => void = () => undefined) {
    this.#onClosed = onClosed;
    this.#slabs = new ReadSlabs((memory) => this.#queue.holds(memory));
    const deliver = (chunk: Buffer): void => {
      if (!this.#tlsStarted && !this.#handingOff) this.#onData(chunk);
    };
    const adopted = source instanceof net.Socket ? undefined : source;
    let socket: net.Socket;
    if (adopted === undefined) {
      const accepted = source as net.Socket;
      const slabbed = readIntoSlabs(accepted, this.#slabs, deliver);
      this.#slabbed = slabbed !== undefined;
      socket = slabbed ?? accepted;
    } else {
      socket = socketFromFd(adopted.fd, this.#slabs, deliver);
      this.#slabbed = true;
    }
    this.#socket = socket;
    this.#context = context;
    this.#label = label;
    socket.setNoDelay?.(true);
    this.#haggler = new OptionHaggler(
      {
        findExport: (name) => context.findExport(name),
        listExports: () => context.listExports(),
        tlsMode: context.tlsMode,
        tlsActive: () => this.#tlsActive,
        counters: context.counters,
        send: (bytes) => this.#send([bytes]),
        startTls: () => this.#startTls(),
        enterTransmission: (result) => this.#enterTransmission(result),
        close: (problem) => {
          if (problem !== undefined) this.#problem(problem.kind, problem.message);
          this.#end();
        },
      },
      this.#queue,
    );
    this.#watch(socket);
    if (adopted !== undefined) {
      this.#queue.push(Buffer.from(adopted.leftover.buffer, adopted.leftover.byteOffset, adopted.leftover.byteLength));
      this.#enterTransmission(adopted.negotiated);
      return;
    }
    this.#haggler.start();
    this.#handshakeTimer = setTimeout(() => {
      if (this.#session !== undefined || this.#closed) return;
      context.counters.handshakeErrors++;
      this.#problem('handshake-timeout', `no transmission phase after ${HANDSHAKE_TIMEOUT_MS / 1000} s; closing`);
      this.#socket.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    this.#handshakeTimer.unref();
  }

  /** Ends the connection now (server shutdown). */
  destroy(): void {
    this.#socket.destroy();
  }

  #watch(socket: net.Socket): void {
    socket.on('data', this.#onData);
    socket.on('error', () => undefined); // 'close' follows; a reset client is not our problem
    socket.on('close', () => this.#onClose());
    socket.on('drain', () => {
      if (!this.#waitingForDrain) return;
      this.#waitingForDrain = false;
      if (!this.#paused) socket.resume();
    });
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#handshakeTimer);
    this.#session?.closed();
    this.#onClosed();
  }

  /** `sent` runs once the socket is done with the buffers (written, or the connection gone). */
  #send(buffers: readonly Uint8Array[], sent?: () => void): void {
    const socket = this.#socket;
    if (this.#closed || socket.destroyed) return sent?.();
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(() => this.#uncork());
    }
    const last = buffers.length - 1;
    for (let i = 0; i < last; i++) socket.write(buffers[i]!);
    if (sent === undefined) socket.write(buffers[last]!);
    else socket.write(buffers[last]!, () => sent());
    if (socket.writableLength > MAX_UNSENT_BYTES && !this.#waitingForDrain) {
      this.#waitingForDrain = true;
      socket.pause();
    }
  }

  #uncork(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#socket.uncork();
  }

  #startTls(): void {
    const raw = this.#socket;
    const config = this.#context.tls!;
    this.#tlsStarted = true;
    raw.pause();
    raw.removeListener('data', this.#onData);
    this.#uncork();
    // Wrap only once the ACK has left: a TLS socket takes over the handle, not our write queue.
    raw.write(Buffer.alloc(0), () => {
      if (this.#closed) return;
      const secure = new tls.TLSSocket(raw, { isServer: true, ...config.options });
      this.#socket = secure;
      secure.on('secure', () => {
        this.#context.counters.tlsHandshakes++;
        this.#tlsActive = true;
        this.#haggler.tlsReady();
      });
      secure.on('error', (err) => {
        if (this.#tlsActive) return;
        this.#context.counters.tlsFailures++;
        this.#context.counters.connectionsRefused++;
        this.#problem('tls-failed', `TLS handshake failed: ${err.message}`);
        secure.destroy();
      });
      this.#watch(secure);
      secure.resume();
    });
  }

  #enterTransmission(result: Negotiated): void {
    clearTimeout(this.#handshakeTimer);
    const handOff = this.#context.handOff;
    if (handOff !== undefined && this.#slabbed && !this.#tlsStarted && handOff.accepts(result.export)) {
      this.#handOff(handOff, result);
      return;
    }
    this.#serve(result);
  }

  #serve(result: Negotiated): void {
    this.#session = new TransmissionSession(
      {
        counters: this.#context.counters,
        send: (buffers, sent) => this.#send(buffers, sent),
        pause: () => {
          this.#paused = true;
          this.#socket.pause();
        },
        resume: () => {
          this.#paused = false;
          if (!this.#waitingForDrain) this.#socket.resume();
        },
        end: () => this.#end(),
        drop: (kind, message) => {
          this.#problem(kind, `${message}; dropping the connection`);
          this.#socket.destroy();
        },
        problem: (kind, message) => this.#problem(kind, message),
        hold: (payload) => this.#slabs.hold(payload),
        release: (payload) => this.#slabs.release(payload),
      },
      result,
      this.#queue,
    );
    this.#session.drain();
  }

  #handOff(handOff: ConnectionHandOff, negotiated: Negotiated): void {
    const socket = this.#socket;
    this.#handingOff = true;
    // onread mode: pause() stops reading now, inside this very read's callback.
    socket.pause();
    this.#uncork();
    // Hand over once the handshake's replies have left, so the worker's replies cannot pass them.
    socket.write(Buffer.alloc(0), () => {
      if (this.#closed || socket.destroyed) return;
      const fd = dupSocketFd(socket);
      if (fd === undefined) {
        // No descriptor to give (no libc binding): served here after all.
        this.#handingOff = false;
        this.#serve(negotiated);
        socket.resume();
        return;
      }
      const rest = this.#queue.take(this.#queue.length)!;
      const leftover = new Uint8Array(rest.length);
      leftover.set(rest);
      this.#closed = true;
      this.#onClosed();
      socket.destroy();
      handOff.give({ fd, negotiated, leftover, label: this.#label });
    });
  }

  #end(): void {
    const socket = this.#socket;
    this.#uncork();
    socket.end();
    setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  #problem(kind: string, message: string): void {
    this.#context.problems.report(kind, `nbd-server: ${this.#label}: ${message}`);
  }
}
