// The iSCSI target: one target name, its LUNs (a SCSI device server), who may log in, and the live
// sessions. Owns session identity (TSIH), reinstatement (a new login of the same initiator port
// waits until the old session's commands have settled, so an unacknowledged write of the old
// session can never land after an acknowledged one of the new), discovery answers and resets that
// span sessions. Network-free: server.ts feeds it connections.
import type { ChapConfig, LoginSucceeded } from './login.ts';
import type { ScsiBackend, SessionHost } from './session.ts';
import type { TextHost } from './text-requests.ts';
import { TargetSession } from './session.ts';
import type { ConnectionHost, TargetConnection } from './connection.ts';
import { newTargetCounters } from './counters.ts';
import type { TargetCounters } from './counters.ts';
import type { NegotiationOffer } from '../iscsi/negotiation.ts';
import { answerTextRequest } from './text-requests.ts';
import { DataBufferPool } from '../block/data-buffers.ts';

export interface IscsiTargetConfig {
  /** The target's iSCSI name (iqn.… or eui.… or naa.…). */
  readonly targetName: string;
  readonly targetAlias?: string;
  /** Target Portal Group Tag (one portal group). */
  readonly portalGroupTag: number;
  /** The "host:port" SendTargets reports (the address initiators should connect to). */
  readonly advertise: string;
  /** Initiator names admitted to normal sessions; `'ALL'` admits every one. Empty: nobody. */
  readonly allow: ReadonlySet<string> | 'ALL';
  readonly chap?: ChapConfig;
  /** What we offer in operational negotiation. */
  readonly offer: NegotiationOffer;
  /** Commands a session may have in flight (MaxCmdSN window). */
  readonly queueDepth: number;
  /** Idle time before we ping an initiator with a NOP-In (0: never). */
  readonly nopIntervalMs: number;
  /** How long an initiator has to answer our NOP-In before the connection is closed. */
  readonly nopTimeoutMs: number;
  /** How long a connection may take to log in. */
  readonly loginTimeoutMs: number;
  /** Resolution of the connection timers. */
  readonly timerTickMs: number;
  /** Connections open at once (logged in or not); more are refused at accept. */
  readonly maxConnections: number;
  /** Sessions at once. */
  readonly maxSessions: number;
}

export const TARGET_DEFAULTS = {
  portalGroupTag: 1,
  queueDepth: 128,
  nopIntervalMs: 15_000,
  nopTimeoutMs: 15_000,
  loginTimeoutMs: 15_000,
  timerTickMs: 1_000,
  maxConnections: 1024,
  maxSessions: 256,
} as const;

export class IscsiTarget implements SessionHost, ConnectionHost, TextHost {
  readonly config: IscsiTargetConfig;
  readonly backend: ScsiBackend;
  readonly counters: TargetCounters = newTargetCounters();
  /** Where received SCSI data goes: one pool for every session (segments up to MaxRecvDataSegmentLength). */
  readonly buffers = new DataBufferPool({ maxBufferBytes: 1 << 24, maxIdleBytes: 64 << 20 });
  readonly #sessions = new Map<number, TargetSession>();
  /** Sessions ended whose commands are still settling, by nexus key. */
  readonly #draining = new Map<string, Promise<void>>();
  readonly #connections = new Set<TargetConnection>();
  readonly #log: (line: string) => void;
  #nextTsih = 1;

  constructor(config: IscsiTargetConfig, backend: ScsiBackend, log: (line: string) => void = () => undefined) {
    this.config = config;
    this.backend = backend;
    this.#log = log;
  }

  log(line: string): void {
    this.#log(line);
  }

  get sessions(): readonly TargetSession[] {
    return [...this.#sessions.values()];
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /** May this initiator use this target name in a normal session? */
  isAllowed(initiatorName: string): boolean {
    return this.config.allow === 'ALL' || this.config.allow.has(initiatorName);
  }

  // ------------------------------------------------------------------ connections

  /** A new connection: false when we are at the limit (the server then closes it). */
  connectionOpened(conn: TargetConnection): boolean {
    if (this.#connections.size >= this.config.maxConnections) {
      this.counters.connectionsRefused++;
      return false;
    }
    this.#connections.add(conn);
    this.counters.connectionsAccepted++;
    return true;
  }

  connectionClosed(conn: TargetConnection, reason: string): void {
    if (!this.#connections.delete(conn)) return;
    const session = conn.session;
    if (session !== undefined) {
      this.#log(`iscsi: ${session.describe()} from ${conn.peer} ended: ${reason}`);
      this.#endSession(session);
    }
  }

  #endSession(session: TargetSession): void {
    if (this.#sessions.get(session.tsih) === session) this.#sessions.delete(session.tsih);
    const key = session.nexus.key;
    const drained = session.end().finally(() => {
      if (this.#draining.get(key) === drained) this.#draining.delete(key);
    });
    this.#draining.set(key, drained);
  }

  sessionEnded(session: TargetSession): void {
    this.#endSession(session);
  }

  // ------------------------------------------------------------------ login

  /**
   * Makes the session a successful login asked for. A session of the same initiator port (same
   * name and ISID) is reinstated: the old one ends and its commands settle first (RFC 7143 §6.3.5).
   */
  async admit(conn: TargetConnection, login: LoginSucceeded): Promise<TargetSession> {
    const nexus = login.nexus;
    for (const old of this.#sessions.values()) {
      if (old.nexus.key === nexus.key && old.sessionType === login.sessionType) {
        this.#log(`iscsi: ${old.describe()} is reinstated by a new login from ${conn.peer}`);
        this.#endSession(old);
        for (const c of this.#connections) if (c.session === old) c.close('session reinstated', true);
      }
    }
    const draining = this.#draining.get(nexus.key);
    if (draining !== undefined) await draining;
    if (this.#sessions.size >= this.config.maxSessions) throw new Error(`too many sessions (${this.config.maxSessions})`);
    const tsih = this.#newTsih();
    const session = new TargetSession(
      this,
      { writer: conn.writer, close: (reason, now) => conn.close(reason, now) },
      {
        tsih,
        isid: login.isid,
        nexus,
        sessionType: login.sessionType,
        targetName: login.targetName,
        cid: login.cid,
        params: login.parameters,
        queueDepth: this.config.queueDepth,
        expCmdSN: login.expCmdSN,
        statSN: login.nextStatSN,
      },
    );
    this.#sessions.set(tsih, session);
    this.#log(`iscsi: ${session.describe()} logged in from ${conn.peer} (${login.sessionType}${login.summary === '' ? '' : `, ${login.summary}`})`);
    return session;
  }

  #newTsih(): number {
    // TSIH 0 means "new session" on the wire (§11.12.6), so it is never given out.
    for (;;) {
      const t = this.#nextTsih;
      this.#nextTsih = this.#nextTsih >= 0xffff ? 1 : this.#nextTsih + 1;
      if (!this.#sessions.has(t)) return t;
    }
  }

  /** The session with this TSIH, for a login that names one. */
  sessionByTsih(tsih: number): TargetSession | undefined {
    return this.#sessions.get(tsih);
  }

  // ------------------------------------------------------------------ SessionHost

  async abortEverywhere(lun: number | undefined): Promise<void> {
    const all: Promise<void>[] = [];
    for (const s of this.#sessions.values()) all.push(s.abortTasks((t) => lun === undefined || t.lun === lun));
    await Promise.all(all);
  }

  dropAllSessions(reason: string): void {
    for (const c of [...this.#connections]) if (c.session !== undefined) c.close(reason);
  }

  answerText(session: TargetSession, request: Uint8Array): Uint8Array {
    return answerTextRequest(this, session, request);
  }

  /** Every connection closed, every session drained. */
  async close(): Promise<void> {
    for (const c of [...this.#connections]) c.close('target shutting down', true);
    await Promise.all([...this.#draining.values()]);
  }
}
