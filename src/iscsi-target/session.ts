// A session's full feature phase (RFC 7143 §4.2, §11): command numbering, SCSI commands and their
// data, task management, NOP, text and logout. One connection per session (MaxConnections=1) at
// ErrorRecoveryLevel 0, so the connection's StatSN lives here too; a protocol error ends the
// connection, and with it the session (the initiator recovers by logging in again).
//
// Command ordering: non-immediate PDUs are delivered in CmdSN order inside the window
// [ExpCmdSN, MaxCmdSN]; one from beyond a gap waits (copied) for the gap to fill, one outside the
// window is dropped without an answer (§4.2.2.1; libiscsi's iSCSICmdSnTooHigh/TooLow test this).
// MaxCmdSN leaves room for `queueDepth` commands in flight: it grows as commands complete.
import { Bhs, isImmediate, opcodeOf, snLess, snLessOrEqual, u32 } from '../iscsi/bhs.ts';
import { Flag, LogoutReason, LogoutResponse, Opcode, RejectReason, RESERVED_TAG, TmfFunction, TmfResponse, ScsiResponseCode } from '../iscsi/constants.ts';
import type { PduWriter } from '../iscsi/pdu-writer.ts';
import { decodeLun } from '../scsi/lun.ts';
import type { ItNexus, ResetKind, ScsiResult, ScsiTask, TaskAttribute } from '../scsi/types.ts';
import { IscsiTask, abortedError } from './task.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import type { Solicitation } from './task.ts';
import { sendDataIn, sendLogoutResponse, sendNopIn, sendR2T, sendReject, sendScsiResponse, sendTextResponse, sendTmfResponse } from './pdus.ts';
import type { SequenceNumbers } from './pdus.ts';
import type { TargetCounters } from './counters.ts';
import type { SessionParameters } from '../iscsi/negotiation.ts';
import type { DataBuffer, DataBufferPool } from '../block/data-buffers.ts';

/** SAM status GOOD (the only status a Data-In PDU may carry, §11.7.3). */
const STATUS_GOOD = 0;
/** SAM status CHECK CONDITION. */
const STATUS_CHECK_CONDITION = 2;

/** What the SCSI side offers a session (src/scsi's device server). */
export interface ScsiBackend {
  execute(task: ScsiTask): Promise<ScsiResult>;
  hasLun(lun: number): boolean;
  reset(kind: ResetKind, lun: number | undefined, by: ItNexus): Promise<void>;
  nexusLost(nexus: ItNexus): void;
}

/** What a session needs from the target around it. */
export interface SessionHost {
  readonly backend: ScsiBackend;
  readonly counters: TargetCounters;
  /** Buffers SCSI data is received into (page-aligned, so O_DIRECT stores take them as they are). */
  readonly buffers: DataBufferPool;
  /** Aborts the tasks of every session (on `lun`, or all) and waits until they have settled. */
  abortEverywhere(lun: number | undefined): Promise<void>;
  /** TARGET COLD RESET: every session ends once its pending output is written. */
  dropAllSessions(reason: string): void;
  /** Answers a whole Text Request (its key=value bytes) in full feature phase: SendTargets, renegotiation. */
  answerText(session: TargetSession, request: Uint8Array): Uint8Array;
  log(line: string): void;
}

/** The session's side of its connection. */
export interface SessionLink {
  readonly writer: PduWriter;
  /** Ends the connection after the output queued so far (`now`: at once). */
  close(reason: string, now?: boolean): void;
}

/** PDUs held until the CmdSN gap before them fills. */
interface HeldPdu {
  readonly header: Buffer;
  readonly ahs: Uint8Array | null;
  readonly data: Uint8Array | null;
  readonly length: number;
  /** The pooled buffer `data` lives in, if any. */
  readonly buffer: DataBuffer | undefined;
}

/** Text request bytes gathered across PDUs with the C bit, and a long answer being paged out. */
interface TextExchange {
  itt: number;
  ttt: number;
  request: Uint8Array[];
  requestLength: number;
  answer: Uint8Array | undefined;
  answerOffset: number;
}

const MAX_HELD = 256;
const MAX_TEXT_REQUEST = 64 * 1024;
const MAX_IMMEDIATE_IN_FLIGHT = 64;

export interface TargetSessionOptions {
  readonly tsih: number;
  readonly isid: Uint8Array;
  readonly nexus: ItNexus;
  readonly sessionType: 'Normal' | 'Discovery';
  readonly targetName: string;
  readonly cid: number;
  readonly params: SessionParameters;
  /** Commands in flight before MaxCmdSN stops growing. */
  readonly queueDepth: number;
  /** CmdSN of the first command after login (the login's ExpCmdSN). */
  readonly expCmdSN: number;
  /** The connection's next StatSN. */
  readonly statSN: number;
}

export class TargetSession implements SequenceNumbers {
  readonly tsih: number;
  readonly isid: Uint8Array;
  readonly nexus: ItNexus;
  readonly sessionType: 'Normal' | 'Discovery';
  readonly targetName: string;
  readonly cid: number;
  readonly startedAt = Date.now();
  params: SessionParameters;
  statSN: number;
  expCmdSN: number;
  #maxCmdSN: number;
  readonly #queueDepth: number;
  readonly #host: SessionHost;
  #link: SessionLink | undefined;
  readonly #tasks = new Map<number, IscsiTask>();
  readonly #solicitations = new Map<number, Solicitation>();
  #nextTtt = 1;
  /** Non-immediate commands in flight (they hold MaxCmdSN back). */
  #active = 0;
  #immediateInFlight = 0;
  readonly #held = new Map<number, HeldPdu>();
  /** CmdSNs an ABORT TASK named before the command arrived: dropped when they do (§11.5.1). */
  readonly #abortedAhead = new Set<number>();
  #text: TextExchange | undefined;
  /** The pooled buffer the data of the PDU being read or handled is in (see dataBuffer). */
  #incoming: DataBuffer | undefined;
  #ended = false;
  #drained: Promise<void> | undefined;
  #loggingOut = false;
  readonly #readyToEnd: (() => void)[] = [];
  // statistics
  commands = 0;
  bytesRead = 0;
  bytesWritten = 0;
  /** The TTT of the NOP-In ping awaiting its echo, or RESERVED_TAG. */
  pingTtt = RESERVED_TAG;

  constructor(host: SessionHost, link: SessionLink, o: TargetSessionOptions) {
    this.#host = host;
    this.#link = link;
    this.tsih = o.tsih;
    this.isid = o.isid;
    this.nexus = o.nexus;
    this.sessionType = o.sessionType;
    this.targetName = o.targetName;
    this.cid = o.cid;
    this.params = o.params;
    this.#queueDepth = o.queueDepth;
    this.expCmdSN = o.expCmdSN;
    this.statSN = o.statSN;
    this.#maxCmdSN = (o.expCmdSN + o.queueDepth - 1) >>> 0;
  }

  get maxCmdSN(): number {
    // Grows as commands complete, never shrinks (a window, once offered, stays offered).
    const room = this.#queueDepth - this.#active;
    const candidate = (this.expCmdSN + room - 1) >>> 0;
    if (snLess(this.#maxCmdSN, candidate)) this.#maxCmdSN = candidate;
    return this.#maxCmdSN;
  }

  get tasksInFlight(): number {
    return this.#tasks.size;
  }

  get ended(): boolean {
    return this.#ended;
  }

  // ------------------------------------------------------------------ input

  /**
   * Where the data of the PDU with this header goes (PduReader asks before copying it): SCSI data,
   * immediate or in Data-Out PDUs, into a pooled buffer that the command keeps until it is done;
   * anything else into a fresh buffer.
   */
  dataBuffer(h: Uint8Array, length: number): Uint8Array | undefined {
    const op = opcodeOf(h);
    if (this.#ended || (op !== Opcode.SCSI_COMMAND && op !== Opcode.SCSI_DATA_OUT)) return undefined;
    this.#incoming?.release();
    const b = this.#host.buffers.take(length);
    this.#incoming = b;
    return b.view;
  }

  /** Takes over the pooled buffer of the PDU being handled (it is released after the PDU otherwise). */
  #takeIncoming(): DataBuffer | undefined {
    const b = this.#incoming;
    this.#incoming = undefined;
    return b;
  }

  onPdu(h: Buffer, ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    try {
      this.#onPdu(h, ahs, data, length);
    } finally {
      this.#takeIncoming()?.release();
    }
  }

  #onPdu(h: Buffer, ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    if (this.#ended) return;
    const op = opcodeOf(h);
    switch (op) {
      case Opcode.SCSI_DATA_OUT:
        return this.#dataOut(h, data, length);
      case Opcode.SCSI_COMMAND:
      case Opcode.NOP_OUT:
      case Opcode.TASK_MGMT_REQUEST:
      case Opcode.TEXT_REQUEST:
      case Opcode.LOGOUT_REQUEST:
        return this.#ordered(h, ahs, data, length);
      case Opcode.SNACK_REQUEST:
        // ErrorRecoveryLevel 0 has no SNACK (§7.1.4.1)
        this.#host.counters.protocolErrors++;
        return this.#reject(RejectReason.SNACK_REJECT, h);
      case Opcode.LOGIN_REQUEST:
        return this.#protocolError(h, 'a Login Request in full feature phase');
      default:
        this.#host.counters.protocolErrors++;
        return this.#reject(RejectReason.COMMAND_NOT_SUPPORTED, h);
    }
  }

  /** A PDU whose data digest was wrong: Rejected (§7.8); for SCSI data that ends the connection. */
  onDataDigestError(h: Buffer): void {
    this.#takeIncoming()?.release();
    if (this.#ended) return;
    this.#host.counters.digestErrors++;
    this.#reject(RejectReason.DATA_DIGEST_ERROR, h);
    const op = opcodeOf(h);
    // At ErrorRecoveryLevel 0 a command's lost data cannot be asked for again: end the connection
    // so the command fails instead of waiting for data that never comes.
    if (op === Opcode.SCSI_DATA_OUT || op === Opcode.SCSI_COMMAND) this.#link?.close('data digest error on SCSI data');
  }

  #ordered(h: Buffer, ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    if (isImmediate(h)) return this.#deliver(h, ahs, data, length);
    const cmdSN = u32(h, Bhs.WORD24);
    if (cmdSN === this.expCmdSN) {
      this.expCmdSN = (this.expCmdSN + 1) >>> 0;
      if (this.#abortedAhead.delete(cmdSN)) this.#host.counters.abortedAhead++;
      else this.#deliver(h, ahs, data, length);
      this.#drainHeld();
      return;
    }
    const max = this.maxCmdSN;
    if (snLess(this.expCmdSN, cmdSN) && snLessOrEqual(cmdSN, max) && this.#held.size < MAX_HELD && !this.#held.has(cmdSN)) {
      this.#held.set(cmdSN, { header: Buffer.from(h), ahs, data, length, buffer: this.#takeIncoming() });
      return;
    }
    // Outside the window (or a duplicate): dropped silently, as §4.2.2.1 says.
    this.#host.counters.cmdSNOutsideWindow++;
  }

  #drainHeld(): void {
    while (this.#held.size > 0 && !this.#ended) {
      const next = this.#held.get(this.expCmdSN);
      if (next === undefined) return;
      this.#held.delete(this.expCmdSN);
      const cmdSN = this.expCmdSN;
      this.expCmdSN = (this.expCmdSN + 1) >>> 0;
      if (this.#abortedAhead.delete(cmdSN)) {
        next.buffer?.release();
        continue;
      }
      this.#incoming = next.buffer;
      try {
        this.#deliver(next.header, next.ahs, next.data, next.length);
      } finally {
        this.#takeIncoming()?.release();
      }
    }
  }

  #deliver(h: Buffer, ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    if (this.#loggingOut) {
      this.#host.counters.protocolErrors++;
      return this.#reject(RejectReason.WAITING_FOR_LOGOUT, h);
    }
    switch (opcodeOf(h)) {
      case Opcode.SCSI_COMMAND:
        return this.#scsiCommand(h, ahs, data, length);
      case Opcode.NOP_OUT:
        return this.#nopOut(h, data, length);
      case Opcode.TASK_MGMT_REQUEST:
        return void this.#taskManagement(h);
      case Opcode.TEXT_REQUEST:
        return this.#textRequest(h, data, length);
      case Opcode.LOGOUT_REQUEST:
        return this.#logout(h);
    }
  }

  // ------------------------------------------------------------------ SCSI commands

  #scsiCommand(h: Buffer, ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    const itt = u32(h, Bhs.ITT);
    if (this.sessionType === 'Discovery') return this.#protocolError(h, 'a SCSI Command in a discovery session');
    if (itt === RESERVED_TAG || this.#tasks.has(itt)) {
      this.#host.counters.protocolErrors++;
      return this.#reject(RejectReason.INVALID_PDU_FIELD, h);
    }
    const immediate = isImmediate(h);
    if (immediate && this.#immediateInFlight >= MAX_IMMEDIATE_IN_FLIGHT) {
      this.#host.counters.protocolErrors++;
      return this.#reject(RejectReason.IMMEDIATE_COMMAND_REJECT, h);
    }
    const flags = h[Bhs.FLAGS] as number;
    const writeBit = (flags & Flag.W) !== 0;
    const edtl = u32(h, Bhs.WORD20);
    const p = this.params;
    if (length > 0) {
      if (!p.immediateData) return this.#protocolError(h, `immediate data (${length} bytes) while ImmediateData=No`);
      if (!writeBit) return this.#protocolError(h, `immediate data (${length} bytes) on a command without the W bit`);
      if (length > p.firstBurstLength || length > edtl) {
        return this.#protocolError(h, `immediate data of ${length} bytes beyond FirstBurstLength ${p.firstBurstLength} or the expected length ${edtl}`);
      }
    }
    const cdb = commandDescriptorBlock(h, ahs);
    if (cdb === undefined) {
      this.#host.counters.protocolErrors++;
      return this.#reject(RejectReason.INVALID_PDU_FIELD, h);
    }
    const lunField = Buffer.from(h.subarray(Bhs.LUN, Bhs.LUN + 8));
    const unsolicitedLimit = writeBit ? Math.min(p.firstBurstLength, edtl) : 0;
    // Unsolicited Data-Out PDUs follow only with InitialR2T=No and the F bit clear (§11.3.4).
    const unsolicitedFollows = writeBit && !p.initialR2T && (flags & Flag.F) === 0 && length < unsolicitedLimit;
    const task = new IscsiTask(
      {
        nexus: this.nexus,
        lun: decodeLun(lunField),
        lunField,
        cdb,
        edtl,
        writeBit,
        readBit: (flags & Flag.R) !== 0,
        attribute: (flags & Flag.ATTR_MASK) as TaskAttribute,
        itt,
        cmdSN: u32(h, Bhs.WORD24),
        immediate,
        unsolicitedLimit,
        unsolicitedDone: !unsolicitedFollows,
      },
      this.#solicit,
    );
    if (length > 0) {
      this.#keepData(task, task.unsolicitedViews, data, length);
      task.unsolicitedReceived = length;
    }
    task.nextSolicitOffset = length;
    this.#tasks.set(itt, task);
    if (immediate) this.#immediateInFlight++;
    else this.#active++;
    this.commands++;
    this.#host.counters.commands++;
    this.#host.backend.execute(task).then(
      (result) => this.#complete(task, result),
      (err: unknown) => {
        this.#host.log(`iscsi: internal error in task 0x${itt.toString(16)}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        this.#complete(task, TARGET_FAILURE);
      },
    );
  }

  /** The device server wants data the initiator has not sent: ask for it with R2Ts. */
  readonly #solicit = (task: IscsiTask): void => {
    if (!task.unsolicitedDone || task.aborted || this.#ended) return;
    const p = this.params;
    const want = task.wanted;
    while (task.outstanding < p.maxOutstandingR2T && task.nextSolicitOffset < want) {
      const length = Math.min(p.maxBurstLength, want - task.nextSolicitOffset);
      let ttt = this.#nextTtt;
      this.#nextTtt = this.#nextTtt >= 0x7fffffff ? 1 : this.#nextTtt + 1;
      while (this.#solicitations.has(ttt)) ttt++;
      const s: Solicitation = { task, ttt, offset: task.nextSolicitOffset, length, received: 0, nextDataSN: 0, views: [] };
      task.solicitations.push(s);
      task.outstanding++;
      this.#solicitations.set(ttt, s);
      task.nextSolicitOffset += length;
      const link = this.#link;
      if (link !== undefined) sendR2T(link.writer, this, task.lunField, task.itt, ttt, task.r2tSN, s.offset, length);
      task.r2tSN++;
      this.#host.counters.r2ts++;
    }
  };

  #dataOut(h: Buffer, data: Uint8Array | null, length: number): void {
    const itt = u32(h, Bhs.ITT);
    const ttt = u32(h, Bhs.WORD20);
    const dataSN = u32(h, Bhs.WORD36);
    const offset = u32(h, Bhs.WORD40);
    const final = ((h[Bhs.FLAGS] as number) & Flag.F) !== 0;
    if (ttt === RESERVED_TAG) {
      // unsolicited
      const task = this.#tasks.get(itt);
      if (task === undefined || task.aborted) {
        this.#host.counters.dataOutForUnknownTask++;
        return;
      }
      if (task.dataError !== undefined) {
        // the rest of a burst we already failed: wait for its end, then answer
        if (final && !task.unsolicitedDone) this.#endUnsolicited(task);
        return;
      }
      if (task.unsolicitedDone)
        return this.#dataSequenceError(task, final, SENSE_UNEXPECTED_UNSOLICITED, `unsolicited Data-Out after the unsolicited burst ended`);
      if (dataSN !== task.nextUnsolicitedDataSN)
        return this.#dataSequenceError(task, final, SENSE_DATA_PHASE_ERROR, `Data-Out DataSN ${dataSN}, expected ${task.nextUnsolicitedDataSN}`);
      if (offset !== task.unsolicitedReceived)
        return this.#dataSequenceError(task, final, SENSE_DATA_OFFSET_ERROR, `Data-Out buffer offset ${offset}, expected ${task.unsolicitedReceived}`);
      if (task.unsolicitedReceived + length > task.unsolicitedLimit) {
        return this.#dataSequenceError(
          task,
          final,
          SENSE_UNEXPECTED_UNSOLICITED,
          `unsolicited data beyond FirstBurstLength or the expected length (${task.unsolicitedLimit} bytes)`,
        );
      }
      task.nextUnsolicitedDataSN++;
      this.#keepData(task, task.unsolicitedViews, data, length);
      task.unsolicitedReceived += length;
      this.bytesWritten += length;
      if (final || task.unsolicitedReceived === task.unsolicitedLimit) {
        this.#endUnsolicited(task);
        if (task.wanted >= 0 && !task.settled) this.#solicit(task);
      }
      task.dataArrived();
      return;
    }
    const s = this.#solicitations.get(ttt);
    if (s === undefined || s.task.aborted || s.task.dataError !== undefined) {
      // a late answer to an R2T of an aborted or failed task, or a made-up tag: nothing to do with it
      this.#host.counters.dataOutForUnknownTask++;
      return;
    }
    const task = s.task;
    if (task.itt !== itt)
      return this.#protocolError(h, `Data-Out with TTT 0x${ttt.toString(16)} names task 0x${itt.toString(16)}, not 0x${task.itt.toString(16)}`);
    if (dataSN !== s.nextDataSN) return this.#dataSequenceError(task, final, SENSE_DATA_PHASE_ERROR, `Data-Out DataSN ${dataSN}, expected ${s.nextDataSN}`);
    if (offset !== s.offset + s.received)
      return this.#dataSequenceError(task, final, SENSE_DATA_OFFSET_ERROR, `Data-Out buffer offset ${offset}, expected ${s.offset + s.received}`);
    if (s.received + length > s.length)
      return this.#dataSequenceError(task, final, SENSE_DATA_OFFSET_ERROR, `Data-Out beyond the ${s.length} bytes its R2T asked for`);
    if (final && s.received + length < s.length) {
      return this.#dataSequenceError(
        task,
        final,
        SENSE_DATA_PHASE_ERROR,
        `Data-Out sequence ended at ${s.received + length} of the ${s.length} bytes its R2T asked for`,
      );
    }
    s.nextDataSN++;
    this.#keepData(task, s.views, data, length);
    s.received += length;
    this.bytesWritten += length;
    if (s.received === s.length) {
      this.#solicitations.delete(ttt);
      task.outstanding--;
      this.#solicit(task);
      task.dataArrived();
    }
  }

  /** The PDU's data becomes part of the task's data-out buffer (its pooled buffer with it). */
  #keepData(task: IscsiTask, views: Uint8Array[], data: Uint8Array | null, length: number): void {
    if (data === null || length === 0) return;
    const b = this.#takeIncoming();
    if (b !== undefined) task.buffers.push(b);
    views.push(length === data.byteLength ? data : data.subarray(0, length));
  }

  #endUnsolicited(task: IscsiTask): void {
    task.unsolicitedDone = true;
    task.nextSolicitOffset = task.unsolicitedReceived;
    if (task.heldResult !== undefined) {
      const r = task.heldResult;
      task.heldResult = undefined;
      this.#respond(task, r);
    }
  }

  /**
   * A Data-Out out of sequence (DataSN, buffer offset, length). The PDU boundaries are intact, so
   * only the command fails (CHECK CONDITION, ABORTED COMMAND with the ASC saying why, RFC 7143
   * §11.4.7.2 and SPC-4's 4Bh codes); the connection and the other commands go on. Nothing of the
   * command's data is written. Later Data-Out PDUs of the command are ignored.
   */
  #dataSequenceError(task: IscsiTask, final: boolean, sense: Uint8Array, why: string): void {
    this.#host.counters.protocolErrors++;
    this.#host.counters.dataSequenceErrors++;
    this.#host.log(`iscsi: ${this.describe()}: task 0x${task.itt.toString(16)}: ${why}; the command fails`);
    task.dataError = sense;
    task.failData(new BlockError('BLK_ERR_PROTOCOL', `task 0x${task.itt.toString(16)}: ${why}`, { errno: Errno.EIO }));
    for (const sol of task.solicitations) if (this.#solicitations.get(sol.ttt) === sol) this.#solicitations.delete(sol.ttt);
    if (!task.unsolicitedDone && final) task.unsolicitedDone = true;
  }

  #complete(task: IscsiTask, result: ScsiResult): void {
    task.markSettled();
    if (task.aborted || this.#ended) {
      result.release?.();
      this.#forget(task);
      return;
    }
    if (task.dataError !== undefined) {
      result.release?.();
      result = { status: STATUS_CHECK_CONDITION, sense: task.dataError, transferLength: 0 };
    }
    if (!task.unsolicitedDone) {
      // The initiator is still sending data we did not need; answer once it has finished.
      task.heldResult = result;
      return;
    }
    this.#respond(task, result);
  }

  #respond(task: IscsiTask, result: ScsiResult): void {
    this.#forget(task);
    const link = this.#link;
    if (link === undefined) {
      result.release?.();
      return;
    }
    const w = link.writer;
    const edtl = task.expectedDataTransferLength;
    const tl = result.transferLength;
    let residualFlags = 0;
    let residual = 0;
    if (tl > edtl) {
      residualFlags = Flag.O;
      residual = tl - edtl;
    } else if (tl < edtl) {
      residualFlags = Flag.U;
      residual = edtl - tl;
    }
    const dataIn = result.dataIn;
    const n = dataIn === undefined ? 0 : Math.min(dataIn.byteLength, edtl);
    if (result.status !== STATUS_GOOD) this.#host.counters.checkConditions++;
    if (n > 0 && dataIn !== undefined) {
      const collapse = result.status === STATUS_GOOD && result.sense === undefined;
      const maxSegment = this.params.maxXmitDataSegmentLength;
      const maxBurst = this.params.maxBurstLength;
      let dataSN = 0;
      let burstLeft = maxBurst;
      for (let off = 0; off < n; ) {
        const len = Math.min(maxSegment, n - off, burstLeft);
        const last = off + len === n;
        burstLeft -= len;
        const endsSequence = last || burstLeft === 0;
        if (burstLeft === 0) burstLeft = maxBurst;
        sendDataIn(
          w,
          this,
          task.lunField,
          task.itt,
          dataSN++,
          off,
          dataIn.subarray(off, off + len),
          endsSequence,
          last && collapse ? result.status : -1,
          residualFlags,
          residual,
          last ? result.release : undefined,
        );
        off += len;
      }
      this.bytesRead += n;
      if (!collapse)
        sendScsiResponse(w, this, task.itt, ScsiResponseCode.COMMAND_COMPLETED_AT_TARGET, result.status, residualFlags, residual, dataSN, result.sense);
      return;
    }
    result.release?.();
    sendScsiResponse(w, this, task.itt, ScsiResponseCode.COMMAND_COMPLETED_AT_TARGET, result.status, residualFlags, residual, task.r2tSN, result.sense);
  }

  /** Takes a finished or aborted task out of the tables. */
  #forget(task: IscsiTask): void {
    if (this.#tasks.get(task.itt) !== task) return;
    this.#tasks.delete(task.itt);
    for (const b of task.buffers) b.release();
    task.buffers.length = 0;
    for (const s of task.solicitations) if (this.#solicitations.get(s.ttt) === s) this.#solicitations.delete(s.ttt);
    if (task.immediate) this.#immediateInFlight--;
    else this.#active--;
    if (this.#tasks.size === 0) this.#wakeEnders();
  }

  // ------------------------------------------------------------------ aborting

  /** Aborts the tasks `which` selects and resolves once every one has settled. */
  abortTasks(which: (task: IscsiTask) => boolean): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const task of this.#tasks.values()) {
      if (task.aborted || !which(task)) continue;
      task.aborted = true;
      this.#host.counters.tasksAborted++;
      task.failData(abortedError(task));
      if (task.heldResult !== undefined) {
        task.heldResult.release?.();
        task.heldResult = undefined;
        this.#forget(task);
        continue;
      }
      for (const s of task.solicitations) this.#solicitations.delete(s.ttt);
      if (task.settled) {
        this.#forget(task);
        continue;
      }
      pending.push(new Promise<void>((resolve) => task.whenSettled(resolve)));
    }
    return pending.length === 0 ? Promise.resolve() : Promise.all(pending).then(() => undefined);
  }

  // ------------------------------------------------------------------ task management

  async #taskManagement(h: Buffer): Promise<void> {
    const fn = (h[Bhs.FLAGS] as number) & 0x7f;
    const itt = u32(h, Bhs.ITT);
    const rtt = u32(h, Bhs.WORD20);
    const cmdSN = u32(h, Bhs.WORD24);
    const refCmdSN = u32(h, Bhs.WORD32);
    const lun = decodeLun(h.subarray(Bhs.LUN, Bhs.LUN + 8));
    const host = this.#host;
    host.counters.taskManagement++;
    let response: number = TmfResponse.FUNCTION_COMPLETE;
    let cold = false;
    if (this.sessionType === 'Discovery') return this.#protocolError(h, 'task management in a discovery session');
    switch (fn) {
      case TmfFunction.ABORT_TASK: {
        const task = this.#tasks.get(rtt);
        if (task !== undefined && task.lun === lun) {
          await this.abortTasks((t) => t === task);
        } else if (this.#held.has(refCmdSN)) {
          this.#abortedAhead.add(refCmdSN);
        } else if (snLessOrEqual(this.expCmdSN, refCmdSN) && snLess(refCmdSN, cmdSN) && snLessOrEqual(refCmdSN, this.maxCmdSN)) {
          // not arrived yet but inside the window: it counts as received and aborted (§11.5.1)
          this.#abortedAhead.add(refCmdSN);
        } else {
          response = TmfResponse.TASK_DOES_NOT_EXIST;
        }
        break;
      }
      case TmfFunction.ABORT_TASK_SET:
        if (!host.backend.hasLun(lun)) response = TmfResponse.LUN_DOES_NOT_EXIST;
        else await this.abortTasks((t) => t.lun === lun);
        break;
      case TmfFunction.CLEAR_TASK_SET:
        if (!host.backend.hasLun(lun)) response = TmfResponse.LUN_DOES_NOT_EXIST;
        else await host.abortEverywhere(lun);
        break;
      case TmfFunction.LOGICAL_UNIT_RESET:
        if (!host.backend.hasLun(lun)) {
          response = TmfResponse.LUN_DOES_NOT_EXIST;
          break;
        }
        await host.abortEverywhere(lun);
        await host.backend.reset('lun', lun, this.nexus);
        break;
      case TmfFunction.TARGET_WARM_RESET:
        await host.abortEverywhere(undefined);
        await host.backend.reset('target-warm', undefined, this.nexus);
        break;
      case TmfFunction.TARGET_COLD_RESET:
        await host.abortEverywhere(undefined);
        await host.backend.reset('target-cold', undefined, this.nexus);
        cold = true;
        break;
      case TmfFunction.CLEAR_ACA:
        // No ACA: NACA is never accepted, so there is never one to clear.
        response = TmfResponse.FUNCTION_COMPLETE;
        break;
      case TmfFunction.TASK_REASSIGN:
        response = TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED;
        break;
      default:
        response = TmfResponse.FUNCTION_REJECTED;
    }
    const link = this.#link;
    if (this.#ended || link === undefined) return;
    sendTmfResponse(link.writer, this, itt, response);
    // A cold reset ends every session, this one too, once its answer is out (SAM-5 §7.12).
    if (cold) host.dropAllSessions('TARGET COLD RESET');
  }

  // ------------------------------------------------------------------ NOP, text, logout

  #nopOut(h: Buffer, data: Uint8Array | null, length: number): void {
    const itt = u32(h, Bhs.ITT);
    const ttt = u32(h, Bhs.WORD20);
    if (itt === RESERVED_TAG) {
      // the answer to our ping, or a bare ExpStatSN update
      if (ttt !== RESERVED_TAG && ttt === this.pingTtt) this.pingTtt = RESERVED_TAG;
      return;
    }
    if (ttt !== RESERVED_TAG) return this.#protocolError(h, `NOP-Out with ITT 0x${itt.toString(16)} and TTT 0x${ttt.toString(16)}`);
    const link = this.#link;
    if (link === undefined) return;
    const echo = length === 0 || data === null ? null : data.subarray(0, length);
    sendNopIn(link.writer, this, h.subarray(Bhs.LUN, Bhs.LUN + 8), itt, RESERVED_TAG, echo);
  }

  /** Sends our own ping: the initiator must echo `ttt` in a NOP-Out. */
  ping(ttt: number): void {
    const link = this.#link;
    if (link === undefined || this.#ended) return;
    this.pingTtt = ttt;
    sendNopIn(link.writer, this, null, RESERVED_TAG, ttt, null);
  }

  #textRequest(h: Buffer, data: Uint8Array | null, length: number): void {
    const itt = u32(h, Bhs.ITT);
    const ttt = u32(h, Bhs.WORD20);
    const flags = h[Bhs.FLAGS] as number;
    const link = this.#link;
    if (link === undefined) return;
    let x = this.#text;
    if (ttt !== RESERVED_TAG) {
      // continuing an exchange: more of the request, or "go on" for more of our answer
      if (x === undefined || x.ttt !== ttt || x.itt !== itt) return this.#protocolError(h, `Text Request with unknown TTT 0x${ttt.toString(16)}`);
    } else {
      if (x !== undefined && x.itt !== itt) {
        // a new exchange abandons the old one (§11.10.4)
        x = undefined;
      }
      if (x === undefined) {
        x = { itt, ttt: RESERVED_TAG, request: [], requestLength: 0, answer: undefined, answerOffset: 0 };
        this.#text = x;
      }
    }
    if (length > 0) {
      if (x.requestLength + length > MAX_TEXT_REQUEST) return this.#protocolError(h, `text request longer than ${MAX_TEXT_REQUEST} bytes`);
      if (data !== null) x.request.push(data.subarray(0, length));
      x.requestLength += length;
    }
    const lun = h.subarray(Bhs.LUN, Bhs.LUN + 8);
    if ((flags & Flag.C) !== 0) {
      // more request text follows: acknowledge with an empty response that carries a TTT
      x.ttt = this.#newTextTtt();
      sendTextResponse(link.writer, this, lun, itt, x.ttt, false, false, EMPTY);
      return;
    }
    if (x.answer === undefined) {
      const request = Buffer.concat(x.request as Uint8Array[], x.requestLength);
      x.request = [];
      x.answer = this.#host.answerText(this, request);
      x.answerOffset = 0;
    }
    const max = this.params.maxXmitDataSegmentLength;
    const rest = x.answer.byteLength - x.answerOffset;
    if (rest > max) {
      // page the answer out, cutting after a NUL so no key=value is split (§6.1)
      let cutAt = x.answerOffset + max;
      while (cutAt > x.answerOffset && x.answer[cutAt - 1] !== 0) cutAt--;
      if (cutAt === x.answerOffset) cutAt = x.answerOffset + max;
      x.ttt = this.#newTextTtt();
      sendTextResponse(link.writer, this, lun, itt, x.ttt, false, true, x.answer.subarray(x.answerOffset, cutAt));
      x.answerOffset = cutAt;
      return;
    }
    sendTextResponse(link.writer, this, lun, itt, RESERVED_TAG, true, false, x.answer.subarray(x.answerOffset));
    this.#text = undefined;
  }

  #newTextTtt(): number {
    const t = this.#nextTtt;
    this.#nextTtt = this.#nextTtt >= 0x7fffffff ? 1 : this.#nextTtt + 1;
    return t;
  }

  #logout(h: Buffer): void {
    const itt = u32(h, Bhs.ITT);
    const reason = (h[Bhs.FLAGS] as number) & 0x7f;
    const cid = ((h[Bhs.CID] as number) << 8) | (h[Bhs.CID + 1] as number);
    const link = this.#link;
    if (link === undefined) return;
    let response: number = LogoutResponse.SUCCESS;
    if (reason === LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY) response = LogoutResponse.RECOVERY_NOT_SUPPORTED;
    else if (reason === LogoutReason.CLOSE_CONNECTION && cid !== this.cid) response = LogoutResponse.CID_NOT_FOUND;
    else if (reason !== LogoutReason.CLOSE_SESSION && reason !== LogoutReason.CLOSE_CONNECTION) return this.#protocolError(h, `logout reason ${reason}`);
    if (response !== LogoutResponse.SUCCESS) {
      sendLogoutResponse(link.writer, this, itt, response);
      return;
    }
    this.#loggingOut = true;
    // Commands still running finish and answer first; then the logout is answered and the connection closed.
    this.#whenIdle(() => {
      const l = this.#link;
      if (l === undefined || this.#ended) return;
      sendLogoutResponse(l.writer, this, itt, LogoutResponse.SUCCESS);
      l.close('logout');
    });
  }

  #whenIdle(fn: () => void): void {
    if (this.#tasks.size === 0) return fn();
    this.#readyToEnd.push(fn);
  }

  #wakeEnders(): void {
    const fns = this.#readyToEnd.splice(0);
    for (const fn of fns) fn();
  }

  // ------------------------------------------------------------------ errors and the end

  #reject(reason: number, h: Uint8Array): void {
    const link = this.#link;
    if (link !== undefined) sendReject(link.writer, this, reason, h);
  }

  /** A protocol error: Reject with the offending header, then end the connection (ERL 0, §7.1.4.1). */
  #protocolError(h: Uint8Array, why: string): void {
    this.#host.counters.protocolErrors++;
    this.#host.log(`iscsi: ${this.describe()}: protocol error: ${why}; closing the connection`);
    this.#reject(RejectReason.PROTOCOL_ERROR, h);
    this.#link?.close(`protocol error: ${why}`);
  }

  /**
   * The connection is gone: every task is aborted (their store I/O still finishes, but nothing is
   * answered). Resolves once they have all settled, so that a new session of the same initiator
   * cannot race a write of this one.
   */
  end(): Promise<void> {
    if (this.#ended) return this.#drained ?? Promise.resolve();
    this.#ended = true;
    this.#link = undefined;
    for (const held of this.#held.values()) held.buffer?.release();
    this.#held.clear();
    this.#takeIncoming()?.release();
    this.#text = undefined;
    this.#drained = this.abortTasks(() => true).then(() => {
      this.#host.backend.nexusLost(this.nexus);
    });
    return this.#drained;
  }

  describe(): string {
    return `session ${this.tsih} (${this.nexus.initiatorName}, ISID 0x${Buffer.from(this.isid).toString('hex')})`;
  }
}

const EMPTY = new Uint8Array(0);

/** Fixed-format sense (SPC-4 §4.5.3) with ABORTED COMMAND and the given ASC/ASCQ. */
function abortedCommandSense(asc: number, ascq: number): Uint8Array {
  return Uint8Array.from([0x70, 0, 0x0b, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0]);
}
/** DATA PHASE ERROR (4Bh/00h): a DataSN out of sequence. */
const SENSE_DATA_PHASE_ERROR = abortedCommandSense(0x4b, 0x00);
/** DATA OFFSET ERROR (4Bh/05h): a buffer offset not where the data had got to. */
const SENSE_DATA_OFFSET_ERROR = abortedCommandSense(0x4b, 0x05);
/** Unexpected unsolicited data (0Ch/0Ch, RFC 7143 §11.4.7.2). */
const SENSE_UNEXPECTED_UNSOLICITED = abortedCommandSense(0x0c, 0x0c);

/** What a task that failed inside the target answers: CHECK CONDITION, HARDWARE ERROR / INTERNAL TARGET FAILURE (0x44/0x00). */
const TARGET_FAILURE: ScsiResult = {
  status: STATUS_CHECK_CONDITION,
  sense: Uint8Array.from([0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0]),
  transferLength: 0,
};

/**
 * The CDB's bytes: its length follows from the opcode's group code (SPC-4 §4.2.5.1), 16 bytes at most
 * in the BHS; longer ones (variable length, 0x7F) continue in an Extended CDB AHS (§11.3.3, type 1).
 */
export function commandDescriptorBlock(h: Uint8Array, ahs: Uint8Array | null): Uint8Array | undefined {
  const opcode = h[Bhs.CDB] as number;
  const group = opcode >>> 5;
  const length = group === 0 ? 6 : group === 1 || group === 2 ? 10 : group === 4 ? 16 : group === 5 ? 12 : 16;
  if (ahs === null) return Buffer.from(h.subarray(Bhs.CDB, Bhs.CDB + length));
  // Each AHS: AHSLength (2 bytes, counting the type-specific bytes), AHSType, then those bytes,
  // padded to 4. An Extended CDB AHS (type 1) holds a reserved byte and the CDB's bytes past 16.
  for (let o = 0; o + 4 <= ahs.byteLength; ) {
    const ahsLength = ((ahs[o] as number) << 8) | (ahs[o + 1] as number);
    const type = ahs[o + 2] as number;
    if (type === 1) {
      const extra = ahsLength - 1;
      if (extra < 1 || o + 4 + extra > ahs.byteLength) return undefined;
      const cdb = Buffer.allocUnsafe(16 + extra);
      cdb.set(h.subarray(Bhs.CDB, Bhs.CDB + 16), 0);
      cdb.set(ahs.subarray(o + 4, o + 4 + extra), 16);
      return cdb;
    }
    o += (3 + ahsLength + 3) & ~3;
  }
  return Buffer.from(h.subarray(Bhs.CDB, Bhs.CDB + length));
}
