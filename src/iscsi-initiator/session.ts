// One iSCSI connection (one session, ErrorRecoveryLevel 0) from the initiator's side, sans-IO: bytes
// come in through `receive`, PDUs go out through the injected transport (see transport.ts for TCP).
// It logs in with the shared negotiator (mutual CHAP when asked; a response the target sends in
// parts, C bit, is joined before the negotiator reads it), then runs SCSI commands: as many as the
// target's CmdSN window (MaxCmdSN) allows are in flight, the rest wait in order. Write data goes as
// immediate data, then unsolicited Data-Out up to FirstBurstLength, then Data-Out answering each R2T;
// read data is copied by the PDU reader straight from the socket into the caller's buffer.
//
// PDUs made while one socket read is handled leave in one write once it is handled. At a queue depth
// of 16 or more new commands wait a little longer, until the target has no more of ours left than
// wait here (HOLD_MIN_AT_TARGET): then about half the depth leaves in one write, which saves system
// calls and wake-ups on both sides while the target still has half the depth to work on. Large
// transfers wait only while less than 128 KiB of them wait (HOLD_MAX_BYTES).
//
// Anything from the target that breaks the protocol (data outside the command's buffer, an R2T for
// a read, an unknown task) counts in `counters.protocolErrors` and ends the connection: the commands
// in flight fail with IscsiConnectionLost, which the device above may retry on a new connection.
import { randomBytes } from 'node:crypto';
import { Bhs, putU32, snAdd, snLess, snLessOrEqual, u32 } from '../iscsi/bhs.ts';
import { AsyncEvent, BHS_LENGTH, Flag, IMMEDIATE_BIT, LoginStatus, Opcode, RESERVED_TAG } from '../iscsi/constants.ts';
import { PduReader } from '../iscsi/pdu-reader.ts';
import type { FramingErrorKind, PduSink } from '../iscsi/pdu-reader.ts';
import { PduWriter } from '../iscsi/pdu-writer.ts';
import type { PduOutput } from '../iscsi/pdu-writer.ts';
import { InitiatorNegotiator } from '../iscsi/negotiation.ts';
import type { SessionParameters } from '../iscsi/negotiation.ts';
import { TextAccumulator, decodeText, encodeText } from '../iscsi/text.ts';
import { ChapInitiator } from '../iscsi/chap.ts';
import type { ChapSecret } from '../iscsi/chap.ts';
import { encodeLun } from '../scsi/lun.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { IscsiConnectionLost, IscsiLoginError, describeLoginStatus } from './errors.ts';

export interface SessionTransport extends PduOutput {
  /** Closes the transport; `closed` is then called (once). */
  destroy(): void;
}

export interface LoginSettings {
  /** For messages: "iscsi://host:port/iqn/lun". */
  readonly where: string;
  readonly initiatorName: string;
  readonly targetName: string;
  readonly chap: ChapCredentials | undefined;
  readonly digest: boolean;
  /** 6 bytes; the same ISID on a new connection reinstates the old session (RFC 7143 §6.3.5). */
  readonly isid: Uint8Array;
  readonly loginTimeoutMs: number;
}

/** Our CHAP name and secret; with `mutual`, the name and secret the target must prove (mutual CHAP). */
export interface ChapCredentials {
  readonly name: string;
  readonly secret: ChapSecret;
  readonly mutual?: { readonly name: string; readonly secret: ChapSecret };
}

export interface ScsiRequest {
  /** 16 bytes. */
  readonly cdb: Uint8Array;
  readonly lun: number;
  /** Data to the target (W bit); kept by reference until the command completes. */
  readonly dataOut?: Uint8Array;
  /** Where data from the target goes (R bit); its length is the expected transfer length. */
  readonly dataIn?: Uint8Array;
}

export interface ScsiResult {
  readonly status: number;
  /** Sense data (without the 2-byte length), when the target sent some. */
  readonly sense: Uint8Array | undefined;
  /** Bytes not transferred (underflow), or 0. */
  readonly residual: number;
}

export interface SessionCounters {
  commands: number;
  /** Most commands in flight at once (the CmdSN window's effect). */
  maxInFlight: number;
  r2ts: number;
  dataOutPdus: number;
  immediateBytes: number;
  unsolicitedBytes: number;
  nopReplies: number;
  protocolErrors: number;
  /** Asynchronous messages and sense data reporting a power-on or reset unit attention. */
  unitAttentions: number;
}

export function newSessionCounters(): SessionCounters {
  return { commands: 0, maxInFlight: 0, r2ts: 0, dataOutPdus: 0, immediateBytes: 0, unsolicitedBytes: 0, nopReplies: 0, protocolErrors: 0, unitAttentions: 0 };
}

interface Task {
  readonly itt: number;
  readonly req: ScsiRequest;
  readonly resolve: (r: ScsiResult) => void;
  readonly reject: (e: Error) => void;
  /** Data-In bytes received so far. */
  received: number;
}

interface LoginWaiter {
  resolve(pdu: { header: Buffer; data: Buffer }): void;
}

/** What we receive per PDU and accept per burst; the target may lower both. */
const OUR_MAX_RECV_DATA_SEGMENT = 262144;
const OUR_MAX_BURST = 1 << 20;
const OUR_FIRST_BURST = 262144;
/** During login both sides use 8192 (§13.12). */
const LOGIN_DATA_SEGMENT = 8192;
const LOGIN_ITT = 0;
const MAX_LOGIN_ROUNDS = 16;
/** Bound on one response's joined text (§6.1 asks at least 64 KiB where authentication needs it). */
const LOGIN_TEXT_MAX = 65536;
/** Bound on continued Login Responses (C bit) in one login: each costs a round trip, even an empty one. */
const MAX_CONTINUED_RESPONSES = 64;

/**
 * Commands are held back, not written yet, while the target still has at least this many of ours to
 * work on and more than are waiting here: at a high queue depth they then leave in batches of about
 * half the depth (one write for us, one read for the target) instead of a write after every socket
 * read, and the target never runs dry. Below this depth every command leaves at once, as before.
 */
const HOLD_MIN_AT_TARGET = 16;
/** ...and never longer than this by default (a target sitting on many commands). */
const HOLD_MAX_MS = 10;
/**
 * ...and only while the held commands move less data than this. A batch of large transfers makes
 * the target answer more at once than a socket buffer holds: its writes then stall on a full socket
 * (tgt at 64 KiB QD32 spent 112 µs of CPU per read with the batches, 79 without them), while the
 * system calls a batch saves are lost in the cost of moving the data. 4 KiB commands batch as before.
 */
const HOLD_MAX_BYTES = 131072;

export interface SessionOptions {
  /** Longest a command is held back for a batch (default 10 ms; tests raise it to see the rule alone). */
  readonly holdMaxMs?: number;
}

const resolved = Promise.resolve();

/**
 * Runs `fn` once the current callback and the promise jobs it queued are done: a promise job itself.
 * Not queueMicrotask, which wraps every callback in an async resource of its own (an allocation and a
 * bound function per flush).
 */
function afterThisTurn(fn: () => void): void {
  void resolved.then(fn);
}

export function randomIsid(): Uint8Array {
  // type 0x80 (random, RFC 7143 §11.12.5): 0b10 then 22 random bits, then a 16-bit qualifier
  const isid = Uint8Array.from(randomBytes(6));
  isid[0] = 0x80 | ((isid[0] as number) & 0x3f);
  return isid;
}

export class InitiatorSession implements PduSink {
  readonly counters: SessionCounters;
  readonly reader = new PduReader(this);

  /** Data-In payload the commands in flight still wait for (the transport's low-water mark). */
  get dataInDue(): number {
    return this.#dataInDue;
  }

  /** Wire size (header included) of the last Data-In PDU that carried data. */
  get lastDataInPdu(): number {
    return this.#lastDataInPdu;
  }
  readonly #writer: PduWriter;
  readonly #transport: SessionTransport;
  readonly #onUnitAttention: () => void;
  #params: SessionParameters | undefined;
  #loginWaiter: LoginWaiter | undefined;
  #logoutWaiter: (() => void) | undefined;
  readonly #tasks = new Map<number, Task>();
  /** Data-In payload the tasks in flight still wait for (reads whose data has not all come). */
  #dataInDue = 0;
  /** Wire size of the last Data-In PDU with data (header included). */
  #lastDataInPdu = 0;
  readonly #queue: Task[] = [];
  #nextItt = 1;
  #cmdSN = 1;
  #expCmdSN = 1;
  #maxCmdSN = 1;
  #expStatSN = 0;
  #lost: IscsiConnectionLost | undefined;
  #lastReceived = Date.now();
  #lun = -1;
  /** SCSI commands in the writer's batch, not yet handed to the transport. */
  #unflushed = 0;
  /** Data the unflushed commands transfer, both directions (see HOLD_MAX_BYTES). */
  #unflushedBytes = 0;
  /** The batch has a PDU that must not wait (login, ping, NOP answer, Data-Out for an R2T, logout). */
  #urgent = false;
  /** The writer's flush, while the batch is held back (see HOLD_MIN_AT_TARGET). */
  #held: (() => void) | undefined;
  #writerFlush: (() => void) | undefined;
  #holdTimer: NodeJS.Timeout | undefined;
  readonly #holdMaxMs: number;
  readonly #flushBatch = (): void => {
    this.#unflushed = 0;
    this.#unflushedBytes = 0;
    this.#urgent = false;
    this.#writerFlush?.();
  };
  readonly #lunBytes = new Uint8Array(8);
  readonly #lostListeners: ((e: IscsiConnectionLost) => void)[] = [];

  constructor(transport: SessionTransport, counters: SessionCounters, onUnitAttention: () => void, options: SessionOptions = {}) {
    this.#transport = transport;
    this.#holdMaxMs = options.holdMaxMs ?? HOLD_MAX_MS;
    // flushed once the current callback and its promise jobs are done (one writev), not after the
    // event loop has read every socket: new commands reach the target while we parse what came in
    // (unless held back for a batch, see #scheduleFlush)
    this.#writer = new PduWriter(transport, (flush) => this.#scheduleFlush(flush));
    this.counters = counters;
    this.#onUnitAttention = onUnitAttention;
    this.reader.maxDataSegmentLength = LOGIN_DATA_SEGMENT;
  }

  get parameters(): SessionParameters | undefined {
    return this.#params;
  }

  get lost(): boolean {
    return this.#lost !== undefined;
  }

  onLost(fn: (e: IscsiConnectionLost) => void): void {
    if (this.#lost !== undefined) fn(this.#lost);
    else this.#lostListeners.push(fn);
  }

  /** Bytes from the transport: the first `length` of `chunk`, which may be reused once this returns. */
  receive(chunk: Uint8Array, length: number = chunk.byteLength): void {
    this.#lastReceived = Date.now();
    this.reader.push(chunk, length);
  }

  /** Milliseconds since the target last sent anything. */
  get idleMs(): number {
    return Date.now() - this.#lastReceived;
  }

  /** A NOP-Out the target must answer (§11.18): keeps a quiet connection proven alive. */
  ping(): void {
    if (this.#lost !== undefined || this.#params === undefined) return;
    const h = this.#writer.header();
    h[Bhs.OPCODE] = Opcode.NOP_OUT | IMMEDIATE_BIT;
    h[Bhs.FLAGS] = Flag.F;
    putU32(h, Bhs.ITT, this.#allocateItt());
    putU32(h, Bhs.WORD20, RESERVED_TAG);
    putU32(h, Bhs.WORD24, this.#cmdSN);
    putU32(h, Bhs.WORD28, this.#expStatSN);
    this.#sendUrgent(null);
  }

  /** The transport is gone: everything in flight or queued fails. */
  closed(why: string): void {
    if (this.#lost !== undefined) return;
    const e = new IscsiConnectionLost(why);
    this.#lost = e;
    this.reader.stop();
    this.#held = undefined;
    clearTimeout(this.#holdTimer);
    this.#writer.close();
    const tasks = [...this.#tasks.values(), ...this.#queue];
    this.#tasks.clear();
    this.#dataInDue = 0;
    this.#queue.length = 0;
    for (const t of tasks) t.reject(e);
    this.#loginWaiter?.resolve({ header: Buffer.alloc(0), data: Buffer.alloc(0) });
    this.#logoutWaiter?.();
    for (const fn of this.#lostListeners.splice(0)) fn(e);
  }

  /** Ends the connection from our side (after a logout, or when closing). */
  shutdown(why: string): void {
    this.closed(why);
    this.#transport.destroy();
  }

  #fail(why: string): void {
    this.counters.protocolErrors++;
    this.closed(why);
    this.#transport.destroy();
  }

  // -------------------------------------------------------------------------------------------
  // Login

  async login(s: LoginSettings): Promise<SessionParameters> {
    const digests = s.digest ? (['CRC32C'] as const) : (['None'] as const);
    const chap =
      s.chap === undefined
        ? undefined
        : new ChapInitiator({
            name: s.chap.name,
            secret: s.chap.secret,
            // the target must prove the secret of the name in the mutual file (RFC 7143 §12.1.3)
            ...(s.chap.mutual === undefined ? {} : { mutual: { secret: s.chap.mutual.secret, targetName: s.chap.mutual.name } }),
            random: (n) => randomBytes(n),
          });
    const neg = new InitiatorNegotiator({
      initiatorName: s.initiatorName,
      targetName: s.targetName,
      sessionType: 'Normal',
      ...(chap === undefined ? {} : { auth: chap }),
      headerDigest: digests,
      dataDigest: digests,
      maxRecvDataSegmentLength: OUR_MAX_RECV_DATA_SEGMENT,
      maxBurstLength: OUR_MAX_BURST,
      firstBurstLength: OUR_FIRST_BURST,
      immediateData: true,
      initialR2T: false,
      maxOutstandingR2T: 1,
    });
    const timer = setTimeout(() => this.#fail(`${s.where}: login timed out after ${s.loginTimeoutMs} ms`), s.loginTimeoutMs);
    const text = new TextAccumulator(LOGIN_TEXT_MAX);
    let continuedResponses = 0;
    try {
      let req = neg.start();
      for (let round = 0; round < MAX_LOGIN_ROUNDS; round++) {
        let r = await this.#loginExchange(s, req.csg, req.nsg, req.transit, encodeText(req.pairs));
        // A response in parts (C bit, RFC 7143 §11.13.2): each part is answered with an empty Login
        // Request until the last one; keys may be cut anywhere, so the parts are joined first.
        for (;;) {
          if (this.#lost !== undefined) throw this.#lost;
          const status = ((r.header[Bhs.LOGIN_STATUS] as number) << 8) | (r.header[Bhs.LOGIN_STATUS + 1] as number);
          if (status !== 0) throw new IscsiLoginError(s.where, status, this.#loginRefusal(s, status, chap));
          const rf = r.header[Bhs.FLAGS] as number;
          const continued = (rf & Flag.C) !== 0;
          if (continued && (rf & Flag.T) !== 0) throw this.#loginViolation(s, 'a Login Response with both the C and T bits set');
          if (((rf >> 2) & 3) !== req.csg) throw this.#loginViolation(s, `a Login Response in stage ${(rf >> 2) & 3} to a request in stage ${req.csg}`);
          if (!text.push(r.data)) throw this.#loginViolation(s, `login text longer than ${LOGIN_TEXT_MAX} bytes`);
          if (!continued) break;
          if (++continuedResponses > MAX_CONTINUED_RESPONSES) throw this.#loginViolation(s, `more than ${MAX_CONTINUED_RESPONSES} continued Login Responses`);
          // T=0 and no text: only asks for the next part; the stages stay those of our request
          r = await this.#loginExchange(s, req.csg, req.nsg, false, null);
        }
        const decoded = decodeText(text.take());
        if (!decoded.ok) throw this.#loginViolation(s, `bad text from the target: ${decoded.error.message}`);
        const rf = r.header[Bhs.FLAGS] as number;
        const answering = chap?.state === 'await-target-response';
        const step = neg.receiveLogin({ csg: (rf >> 2) & 3, nsg: rf & 3, transit: (rf & Flag.T) !== 0 }, decoded.pairs);
        if (!step.ok) {
          // our challenge was out: an authentication failure now is the target failing to prove its secret
          const mutual = answering && step.status === LoginStatus.AUTHENTICATION_FAILURE;
          throw new IscsiLoginError(s.where, step.status, mutual ? `mutual CHAP: ${step.reason}` : step.reason);
        }
        if (step.complete) {
          const p = neg.parameters();
          this.#params = p;
          this.reader.maxDataSegmentLength = p.maxRecvDataSegmentLength;
          this.reader.headerDigest = p.headerDigest;
          this.reader.dataDigest = p.dataDigest;
          this.#writer.headerDigest = p.headerDigest;
          this.#writer.dataDigest = p.dataDigest;
          return p;
        }
        req = step.next!;
      }
      throw new Error(`${s.where}: login failed: not finished after ${MAX_LOGIN_ROUNDS} rounds`);
    } catch (err) {
      this.closed(err instanceof Error ? err.message : String(err));
      this.#transport.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
      this.#loginWaiter = undefined;
    }
  }

  /** Sends one Login Request and waits for the Login Response. */
  #loginExchange(s: LoginSettings, csg: number, nsg: number, transit: boolean, text: Uint8Array | null): Promise<{ header: Buffer; data: Buffer }> {
    const h = this.#writer.header();
    h[Bhs.OPCODE] = Opcode.LOGIN_REQUEST | IMMEDIATE_BIT;
    h[Bhs.FLAGS] = (transit ? Flag.T : 0) | (csg << 2) | nsg;
    h.set(s.isid, Bhs.ISID); // TSIH 0: a new session (or the reinstatement of ours)
    putU32(h, Bhs.ITT, LOGIN_ITT);
    putU32(h, Bhs.WORD24, this.#cmdSN);
    putU32(h, Bhs.WORD28, this.#expStatSN);
    const response = new Promise<{ header: Buffer; data: Buffer }>((resolve) => {
      this.#loginWaiter = { resolve };
    });
    this.#sendUrgent(text === null || text.byteLength === 0 ? null : text);
    return response;
  }

  /** The target broke the login rules: counted, and the login fails with the reason. */
  #loginViolation(s: LoginSettings, what: string): Error {
    this.counters.protocolErrors++;
    return new IscsiLoginError(s.where, LoginStatus.TARGET_ERROR, `the target broke the protocol: ${what}`);
  }

  /** Words for a refusal from the target; with mutual CHAP under way the target may have refused that. */
  #loginRefusal(s: LoginSettings, status: number, chap: ChapInitiator | undefined): string {
    if (status === LoginStatus.AUTHENTICATION_FAILURE && s.chap?.mutual !== undefined && chap?.state === 'await-target-response') {
      // our response and our challenge went in one request: the refusal may be of either
      return 'authentication failed (wrong CHAP user or secret, or the target does not do mutual CHAP: has it a secret of its own?)';
    }
    return describeLoginStatus(status, s.targetName, s.initiatorName);
  }

  // -------------------------------------------------------------------------------------------
  // Commands

  execute(req: ScsiRequest): Promise<ScsiResult> {
    if (this.#lost !== undefined) return Promise.reject(this.#lost);
    return new Promise((resolve, reject) => {
      const task: Task = { itt: this.#allocateItt(), req, resolve, reject, received: 0 };
      if (this.#queue.length === 0 && snLessOrEqual(this.#cmdSN, this.#maxCmdSN)) this.#start(task);
      else {
        this.#queue.push(task);
        this.#pump();
      }
    });
  }

  #allocateItt(): number {
    for (;;) {
      const itt = this.#nextItt;
      this.#nextItt = itt + 1 >= RESERVED_TAG ? 1 : itt + 1;
      if (!this.#tasks.has(itt) && (this.#queue.length === 0 || !this.#queued(itt))) return itt;
    }
  }

  #queued(itt: number): boolean {
    for (const t of this.#queue) if (t.itt === itt) return true;
    return false;
  }

  /** Sends queued commands while the CmdSN window has room. */
  #pump(): void {
    while (this.#queue.length > 0 && snLessOrEqual(this.#cmdSN, this.#maxCmdSN)) this.#start(this.#queue.shift()!);
  }

  #start(task: Task): void {
    this.#tasks.set(task.itt, task);
    if (task.req.dataOut === undefined) this.#dataInDue += task.req.dataIn?.byteLength ?? 0;
    if (this.#tasks.size > this.counters.maxInFlight) this.counters.maxInFlight = this.#tasks.size;
    this.#sendCommand(task);
  }

  #sendCommand(task: Task): void {
    const p = this.#params!;
    const { req } = task;
    const out = req.dataOut;
    const edtl = out !== undefined ? out.byteLength : (req.dataIn?.byteLength ?? 0);
    const firstBurst = out === undefined || p.initialR2T ? 0 : Math.min(p.firstBurstLength, edtl);
    const immediate = out === undefined || !p.immediateData ? 0 : Math.min(p.firstBurstLength, p.maxXmitDataSegmentLength, edtl);
    const unsolicited = Math.max(firstBurst, immediate);
    const h = this.#writer.header();
    h[Bhs.OPCODE] = Opcode.SCSI_COMMAND;
    // F: no unsolicited Data-Out follows; task attribute SIMPLE (1)
    h[Bhs.FLAGS] = (unsolicited > immediate ? 0 : Flag.F) | (out !== undefined ? Flag.W : 0) | (req.dataIn !== undefined ? Flag.R : 0) | 1;
    this.#putLun(h, req.lun);
    putU32(h, Bhs.ITT, task.itt);
    putU32(h, Bhs.WORD20, edtl);
    putU32(h, Bhs.WORD24, this.#cmdSN);
    putU32(h, Bhs.WORD28, this.#expStatSN);
    // byte by byte: subarray() of a small Uint8Array (kept inside V8's heap) would move it out, a malloc per command
    const cdb = req.cdb;
    for (let i = 0; i < 16; i++) h[Bhs.CDB + i] = cdb[i] ?? 0;
    this.#cmdSN = snAdd(this.#cmdSN, 1);
    this.counters.commands++;
    this.#unflushed++;
    this.#unflushedBytes += edtl;
    this.#writer.send(immediate > 0 ? out!.subarray(0, immediate) : null);
    this.counters.immediateBytes += immediate;
    if (unsolicited > immediate) {
      this.counters.unsolicitedBytes += unsolicited - immediate;
      this.#sendDataOut(task, RESERVED_TAG, immediate, unsolicited - immediate);
    }
    if (this.#held !== undefined && !this.#mayHold()) this.#release();
  }

  /** The writer asks for a flush of its new batch: now (after this turn), or once the target runs low. */
  #scheduleFlush(flush: () => void): void {
    this.#writerFlush = flush;
    if (this.#mayHold()) {
      this.#held = flush;
      if (this.#holdTimer === undefined) {
        this.#holdTimer = setTimeout(() => {
          if (this.#held !== undefined) this.#release();
        }, this.#holdMaxMs);
        this.#holdTimer.unref();
      } else this.#holdTimer.refresh();
    } else afterThisTurn(this.#flushBatch);
  }

  /** Whether the batch may wait: nothing urgent in it, and the target busy with more than it holds. */
  #mayHold(): boolean {
    if (this.#urgent || this.#unflushedBytes >= HOLD_MAX_BYTES) return false;
    const atTarget = this.#tasks.size - this.#unflushed;
    return atTarget >= HOLD_MIN_AT_TARGET && atTarget > this.#unflushed;
  }

  #release(): void {
    this.#held = undefined;
    afterThisTurn(this.#flushBatch);
  }

  /** A PDU that goes out with the next flush, which is not held back for it. */
  #sendUrgent(data: Uint8Array | null): void {
    this.#urgent = true;
    this.#writer.send(data);
    if (this.#held !== undefined) this.#release();
  }

  /** The LUN field (8 bytes), from the last LUN's encoding when it is the same LUN (every command but a few). */
  #putLun(h: Uint8Array, lun: number): void {
    if (lun !== this.#lun) {
      encodeLun(lun, this.#lunBytes);
      this.#lun = lun;
    }
    const b = this.#lunBytes;
    for (let i = 0; i < 8; i++) h[Bhs.LUN + i] = b[i] as number;
  }

  /** Data-Out PDUs for [offset, offset+length) of the task's data, DataSN from 0 (one sequence). */
  #sendDataOut(task: Task, ttt: number, offset: number, length: number): void {
    const p = this.#params!;
    const data = task.req.dataOut!;
    const end = offset + length;
    let dataSN = 0;
    for (let at = offset; at < end; ) {
      const n = Math.min(p.maxXmitDataSegmentLength, end - at);
      const h = this.#writer.header();
      h[Bhs.OPCODE] = Opcode.SCSI_DATA_OUT;
      h[Bhs.FLAGS] = at + n === end ? Flag.F : 0;
      this.#putLun(h, task.req.lun);
      putU32(h, Bhs.ITT, task.itt);
      putU32(h, Bhs.WORD20, ttt);
      putU32(h, Bhs.WORD28, this.#expStatSN);
      putU32(h, Bhs.WORD36, dataSN++);
      putU32(h, Bhs.WORD40, at);
      this.#writer.send(data.subarray(at, at + n));
      this.counters.dataOutPdus++;
      at += n;
    }
  }

  /** Ends the session politely (Logout, close the session); resolves when answered or after `timeoutMs`. */
  async logout(timeoutMs: number): Promise<void> {
    if (this.#lost !== undefined || this.#params === undefined) return;
    const h = this.#writer.header();
    h[Bhs.OPCODE] = Opcode.LOGOUT_REQUEST | IMMEDIATE_BIT;
    h[Bhs.FLAGS] = Flag.F; // reason 0: close the session
    putU32(h, Bhs.ITT, this.#nextItt);
    putU32(h, Bhs.WORD24, this.#cmdSN);
    putU32(h, Bhs.WORD28, this.#expStatSN);
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.#logoutWaiter = resolve;
      timer = setTimeout(resolve, timeoutMs);
      this.#sendUrgent(null);
    });
    clearTimeout(timer);
    this.#logoutWaiter = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // From the target (PduSink)

  dataBuffer(header: Uint8Array, length: number): Uint8Array | undefined {
    if (((header[0] as number) & 0x3f) !== Opcode.SCSI_DATA_IN) return undefined;
    const task = this.#tasks.get(u32(header, Bhs.ITT));
    const buf = task?.req.dataIn;
    const offset = u32(header, Bhs.WORD40);
    if (buf === undefined || offset + length > buf.byteLength) return undefined;
    // the whole buffer in one PDU (a read's usual case): no view to make
    return offset === 0 && length === buf.byteLength ? buf : buf.subarray(offset, offset + length);
  }

  onPdu(h: Uint8Array, _ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    const opcode = (h[0] as number) & 0x3f;
    if (opcode === Opcode.LOGIN_RESPONSE) {
      const w = this.#loginWaiter;
      if (w === undefined) return this.#fail('a Login Response outside the login');
      this.#statSN(h);
      this.#window(h);
      this.#loginWaiter = undefined;
      return w.resolve({ header: Buffer.from(h), data: data === null ? Buffer.alloc(0) : Buffer.from(data.subarray(0, length)) });
    }
    if (this.#params === undefined) return this.#fail(`opcode 0x${opcode.toString(16)} during the login`);
    this.#window(h);
    this.#dispatch(opcode, h, data, length);
    // after the PDU's own effect, so a completed task has left the window it opened
    if (this.#queue.length > 0 && this.#lost === undefined) this.#pump();
    if (this.#held !== undefined && !this.#mayHold()) this.#release();
  }

  #dispatch(opcode: number, h: Uint8Array, data: Uint8Array | null, length: number): void {
    switch (opcode) {
      case Opcode.SCSI_DATA_IN:
        return this.#dataIn(h, data, length);
      case Opcode.SCSI_RESPONSE:
        return this.#response(h, data, length);
      case Opcode.R2T:
        return this.#r2t(h);
      case Opcode.NOP_IN:
        return this.#nopIn(h);
      case Opcode.ASYNC_MESSAGE:
        return this.#asyncMessage(h, data, length);
      case Opcode.LOGOUT_RESPONSE:
        this.#statSN(h);
        this.#logoutWaiter?.();
        return;
      case Opcode.REJECT:
        return this.#fail(`the target rejected a PDU (reason 0x${(h[2] as number).toString(16)})`);
      default:
        return this.#fail(`unexpected opcode 0x${opcode.toString(16)} from the target`);
    }
  }

  onDataDigestError(): void {
    // ERL 0 has no recovery for one PDU: drop the connection, the device retries on a new one
    this.#fail('data digest error from the target');
  }

  onFramingError(kind: FramingErrorKind, message: string): void {
    this.#fail(`framing error (${kind}): ${message}`);
  }

  #statSN(h: Uint8Array): void {
    this.#expStatSN = snAdd(u32(h, Bhs.WORD24), 1);
  }

  /** ExpCmdSN and MaxCmdSN from any target PDU (§4.2.2.1): only moves forward, ignored when invalid. */
  #window(h: Uint8Array): void {
    const exp = u32(h, Bhs.WORD28);
    const max = u32(h, Bhs.WORD32);
    if (snLess(max, snAdd(exp, -1 >>> 0))) return; // MaxCmdSN < ExpCmdSN - 1: to be ignored
    if (snLess(this.#expCmdSN, exp)) this.#expCmdSN = exp;
    if (snLess(this.#maxCmdSN, max) || this.#params === undefined) this.#maxCmdSN = max;
  }

  #dataIn(h: Uint8Array, data: Uint8Array | null, length: number): void {
    const task = this.#tasks.get(u32(h, Bhs.ITT));
    if (task === undefined) return this.#fail('Data-In for a task we do not have');
    const buf = task.req.dataIn;
    const offset = u32(h, Bhs.WORD40);
    if (length > 0 && (buf === undefined || data === null || offset + length > buf.byteLength)) {
      return this.#fail(`Data-In outside the command's buffer (offset ${offset}, ${length} bytes)`);
    }
    task.received += length;
    if (task.req.dataOut === undefined) this.#dataInDue -= length;
    if (length > 0) this.#lastDataInPdu = BHS_LENGTH + length;
    if (((h[Bhs.FLAGS] as number) & Flag.S) === 0) return;
    this.#statSN(h);
    this.#complete(task, h[Bhs.BYTE3] as number, undefined, h);
  }

  #response(h: Uint8Array, data: Uint8Array | null, length: number): void {
    this.#statSN(h);
    const task = this.#tasks.get(u32(h, Bhs.ITT));
    if (task === undefined) return this.#fail('SCSI Response for a task we do not have');
    if ((h[Bhs.BYTE2] as number) !== 0) {
      this.#forget(task);
      task.reject(
        new BlockError('BLK_ERR_ISCSI_TARGET_FAILURE', `the target failed the command (iSCSI response 0x${(h[Bhs.BYTE2] as number).toString(16)})`, {
          errno: Errno.EIO,
        }),
      );
      return;
    }
    let sense: Uint8Array | undefined;
    if (data !== null && length >= 2) {
      const n = ((data[0] as number) << 8) | (data[1] as number);
      sense = Uint8Array.from(data.subarray(2, Math.min(length, 2 + n)));
    }
    this.#complete(task, h[Bhs.BYTE3] as number, sense, h);
  }

  /** The task leaves the window; data it was still due (a read answered short) is no longer awaited. */
  #forget(task: Task): void {
    this.#tasks.delete(task.itt);
    if (task.req.dataOut === undefined) this.#dataInDue -= (task.req.dataIn?.byteLength ?? 0) - task.received;
  }

  #complete(task: Task, status: number, sense: Uint8Array | undefined, h: Uint8Array): void {
    this.#forget(task);
    const f = h[Bhs.FLAGS] as number;
    const residual = (f & Flag.U) !== 0 ? u32(h, Bhs.WORD44) : 0;
    task.resolve({ status, sense, residual });
  }

  #r2t(h: Uint8Array): void {
    const task = this.#tasks.get(u32(h, Bhs.ITT));
    const offset = u32(h, Bhs.WORD40);
    const length = u32(h, Bhs.WORD44);
    const out = task?.req.dataOut;
    if (task === undefined || out === undefined) return this.#fail('R2T for a task that has no data to send');
    if (length === 0 || offset + length > out.byteLength)
      return this.#fail(`R2T outside the command's data (offset ${offset}, ${length} bytes of ${out.byteLength})`);
    this.counters.r2ts++;
    // the target waits for this data: it goes with the next flush, held commands with it
    this.#urgent = true;
    this.#sendDataOut(task, u32(h, Bhs.WORD20), offset, length);
    if (this.#held !== undefined) this.#release();
  }

  #nopIn(h: Uint8Array): void {
    const ttt = u32(h, Bhs.WORD20);
    if (u32(h, Bhs.ITT) !== RESERVED_TAG) return this.#statSN(h);
    if (ttt === RESERVED_TAG) return;
    // a ping from the target: answer with its TTT and LUN, as an immediate NOP-Out (§11.18)
    const o = this.#writer.header();
    o[Bhs.OPCODE] = Opcode.NOP_OUT | IMMEDIATE_BIT;
    o[Bhs.FLAGS] = Flag.F;
    o.set(h.subarray(Bhs.LUN, Bhs.LUN + 8), Bhs.LUN);
    putU32(o, Bhs.ITT, RESERVED_TAG);
    putU32(o, Bhs.WORD20, ttt);
    putU32(o, Bhs.WORD24, this.#cmdSN);
    putU32(o, Bhs.WORD28, this.#expStatSN);
    this.#sendUrgent(null);
    this.counters.nopReplies++;
  }

  #asyncMessage(h: Uint8Array, data: Uint8Array | null, length: number): void {
    this.#statSN(h);
    const event = h[36] as number;
    if (event === AsyncEvent.SCSI_ASYNC_EVENT && data !== null && length >= 2 + 14) {
      // sense data of the event: a power-on/reset unit attention means the target's cache may be gone
      const sense = data.subarray(2, length);
      const code = (sense[0] as number) & 0x7f;
      const asc = code === 0x72 || code === 0x73 ? sense[2] : sense[12];
      if (asc === 0x29) {
        this.counters.unitAttentions++;
        this.#onUnitAttention();
      }
    }
    // logout requests and drop notices: the connection will end; the device logs in again then
  }
}
