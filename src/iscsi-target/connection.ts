// One TCP connection to the target, from accept to close: framing (PduReader/PduWriter), the login
// phase (login.ts), then the session's full feature phase (session.ts), and the timers that notice
// a dead or stalled initiator (a login that never ends; NOP-In pings left unanswered).
// Socket-free: the server (server.ts) adapts a net.Socket to ConnectionIo.
import { RESERVED_TAG } from '../iscsi/constants.ts';
import { PduReader } from '../iscsi/pdu-reader.ts';
import type { FramingErrorKind, PduSink } from '../iscsi/pdu-reader.ts';
import { PduWriter } from '../iscsi/pdu-writer.ts';
import type { PduOutput } from '../iscsi/pdu-writer.ts';
import type { LoginHost, LoginOutcome, LoginSucceeded } from './login.ts';
import { LoginPhase } from './login.ts';
import type { TargetSession } from './session.ts';
import type { TargetCounters } from './counters.ts';

/** What a connection needs from the target it belongs to. */
export interface ConnectionHost extends LoginHost {
  readonly config: LoginHost['config'] & {
    readonly nopIntervalMs: number;
    readonly nopTimeoutMs: number;
    readonly loginTimeoutMs: number;
    readonly timerTickMs: number;
  };
  readonly counters: TargetCounters;
  log(line: string): void;
  /** Makes the session a successful login asked for (after any older session of its nexus has settled). */
  admit(conn: TargetConnection, login: LoginSucceeded): Promise<TargetSession>;
  /** The connection is gone; its session, if any, ends. */
  connectionClosed(conn: TargetConnection, reason: string): void;
  sessionEnded(session: TargetSession): void;
}

/** The transport under a connection. */
export interface ConnectionIo extends PduOutput {
  /** "address:port" of the initiator, for logs. */
  readonly peer: string;
  /** Ends the transport (after what was written, unless `now`). */
  end(now: boolean): void;
}

/** Timers, injected so tests can run them by hand. */
export interface ConnectionTimers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

const realTimers: ConnectionTimers = {
  setInterval: (fn, ms) => {
    const t = setInterval(fn, ms);
    t.unref();
    return t;
  },
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
};

export class TargetConnection implements PduSink {
  readonly #target: ConnectionHost;
  readonly #io: ConnectionIo;
  readonly reader: PduReader;
  readonly writer: PduWriter;
  readonly #login: LoginPhase;
  #session: TargetSession | undefined;
  #closed = false;
  #timer: unknown;
  readonly #timers: ConnectionTimers;
  readonly openedAt = Date.now();
  /** Milliseconds since the last PDU arrived, advanced by the timer. */
  #idleMs = 0;
  #pingSentMs = -1;
  #nextPingTtt = 0x40000000;
  /** Set while a login's final answer waits for an older session of the same nexus to drain. */
  #admitting = false;

  constructor(target: ConnectionHost, io: ConnectionIo, timers: ConnectionTimers = realTimers) {
    this.#target = target;
    this.#io = io;
    this.#timers = timers;
    this.reader = new PduReader(this);
    this.writer = new PduWriter(io);
    this.#login = new LoginPhase(target, io.peer);
    const tick = target.config.timerTickMs;
    this.#timer = timers.setInterval(() => this.#tick(tick), tick);
  }

  get peer(): string {
    return this.#io.peer;
  }

  get session(): TargetSession | undefined {
    return this.#session;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes off the wire; not kept after the call (the transport reads into one reused buffer). */
  receive(chunk: Uint8Array): void {
    this.reader.push(chunk);
  }

  // ------------------------------------------------------------------ PduSink

  dataBuffer(header: Uint8Array, length: number): Uint8Array | undefined {
    return this.#session?.dataBuffer(header, length);
  }

  onPdu(header: Uint8Array, ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    if (this.#closed) return;
    this.#idleMs = 0;
    this.#target.counters.pdusIn++;
    const session = this.#session;
    if (session !== undefined) return session.onPdu(header as Buffer, ahs, data, length);
    if (this.#admitting) {
      // nothing may come before the final Login Response (§6.3); an initiator that does not wait is broken
      return this.close('PDU before the login finished');
    }
    const outcome = this.#login.receive(header, data, length, this.writer);
    this.#afterLogin(outcome);
  }

  onDataDigestError(header: Uint8Array): void {
    if (this.#closed) return;
    this.#idleMs = 0;
    this.#target.counters.pdusIn++;
    if (this.#session !== undefined) return this.#session.onDataDigestError(header as Buffer);
    this.close('data digest error during login');
  }

  onFramingError(kind: FramingErrorKind, message: string): void {
    this.#target.counters.framingErrors++;
    if (kind === 'header-digest') this.#target.counters.digestErrors++;
    this.close(message);
  }

  // ------------------------------------------------------------------ login

  #afterLogin(outcome: LoginOutcome): void {
    switch (outcome.kind) {
      case 'continue':
        return;
      case 'failed':
        this.#target.counters.loginsFailed++;
        this.#target.log(`iscsi: login from ${this.peer} refused: ${outcome.reason}`);
        this.close(`login refused: ${outcome.reason}`);
        return;
      case 'succeeded':
        this.#admitting = true;
        this.#target.admit(this, outcome).then(
          (session) => {
            this.#admitting = false;
            if (this.#closed) {
              void session.end();
              this.#target.sessionEnded(session);
              return;
            }
            this.#session = session;
            this.#target.counters.loginsSucceeded++;
            outcome.sendFinalResponse(this.writer, session.tsih);
            // digests and segment sizes apply from the first PDU after the final Login Response
            const p = outcome.parameters;
            this.reader.headerDigest = p.headerDigest;
            this.reader.dataDigest = p.dataDigest;
            this.reader.maxDataSegmentLength = p.maxRecvDataSegmentLength;
            this.writer.flush();
            this.writer.headerDigest = p.headerDigest;
            this.writer.dataDigest = p.dataDigest;
          },
          (err: unknown) => {
            this.#admitting = false;
            this.#target.log(`iscsi: login from ${this.peer} failed: ${err instanceof Error ? err.message : String(err)}`);
            this.close('session could not be admitted');
          },
        );
        return;
    }
  }

  // ------------------------------------------------------------------ timers

  #tick(ms: number): void {
    if (this.#closed) return;
    const cfg = this.#target.config;
    this.#idleMs += ms;
    const session = this.#session;
    if (session === undefined) {
      if (!this.#admitting && Date.now() - this.openedAt > cfg.loginTimeoutMs) {
        this.#target.counters.loginTimeouts++;
        this.close(`login not finished within ${cfg.loginTimeoutMs / 1000} s`);
      }
      return;
    }
    if (cfg.nopIntervalMs <= 0) return;
    if (session.pingTtt !== RESERVED_TAG) {
      this.#pingSentMs += ms;
      if (this.#pingSentMs >= cfg.nopTimeoutMs) {
        this.#target.counters.nopTimeouts++;
        this.#target.log(`iscsi: ${session.describe()} from ${this.peer} did not answer a NOP-In within ${cfg.nopTimeoutMs / 1000} s; closing`);
        this.close('NOP-In timeout', true);
      }
      return;
    }
    if (this.#idleMs >= cfg.nopIntervalMs) {
      this.#pingSentMs = 0;
      this.#nextPingTtt = this.#nextPingTtt >= 0x7ffffffe ? 0x40000000 : this.#nextPingTtt + 1;
      session.ping(this.#nextPingTtt);
      this.#idleMs = 0;
    }
  }

  // ------------------------------------------------------------------ the end

  /** Ends the connection: after the output queued so far, or at once. */
  close(reason: string, now = false): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#timers.clearInterval(this.#timer);
    this.reader.stop();
    if (now) this.writer.close();
    else this.writer.flush();
    this.#io.end(now);
    this.#target.connectionClosed(this, reason);
  }

  /** The transport went away (reset, EOF, error). */
  transportClosed(): void {
    if (this.#closed) {
      this.writer.close();
      return;
    }
    this.#closed = true;
    this.#timers.clearInterval(this.#timer);
    this.reader.stop();
    this.writer.close();
    this.#target.connectionClosed(this, 'connection closed by the initiator');
  }
}
