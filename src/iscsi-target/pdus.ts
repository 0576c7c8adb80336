// The target's PDUs (RFC 7143 §11), written into the writer's header and queued. One function per
// PDU type; the hot ones (Data-In, SCSI Response, R2T) take their fields as arguments so that
// building them allocates nothing.
import { Bhs, putU16, putU32 } from '../iscsi/bhs.ts';
import { Flag, Opcode, RESERVED_TAG } from '../iscsi/constants.ts';
import type { PduWriter } from '../iscsi/pdu-writer.ts';

/** The sequence numbers every target PDU after login carries (§11.2.1: StatSN, ExpCmdSN, MaxCmdSN). */
export interface SequenceNumbers {
  /** The connection's next StatSN (advanced by the PDUs that carry status). */
  statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
}

function numbers(h: Uint8Array, statSN: number, seq: SequenceNumbers): void {
  putU32(h, Bhs.WORD24, statSN);
  putU32(h, Bhs.WORD28, seq.expCmdSN);
  putU32(h, Bhs.WORD32, seq.maxCmdSN);
}

/**
 * The header of a PDU that carries a status (§11.2.1: it takes the next StatSN): opcode, F bit,
 * byte 2, ITT and the sequence numbers filled, StatSN advanced.
 */
function statusHeader(w: PduWriter, seq: SequenceNumbers, opcode: number, byte2: number, itt: number): Buffer {
  const h = w.header();
  h[0] = opcode;
  h[1] = Flag.F;
  h[2] = byte2;
  putU32(h, Bhs.ITT, itt);
  numbers(h, seq.statSN, seq);
  seq.statSN = (seq.statSN + 1) >>> 0;
  return h;
}

/** Copies the 8-byte LUN field from a request header (or zeroes). */
function lunFrom(h: Uint8Array, lun: Uint8Array | null): void {
  if (lun !== null) h.set(lun, Bhs.LUN);
}

/**
 * Data-In (§11.7). With `status >= 0` the PDU also carries the command's status (S bit, phase
 * collapse) and then its residual, and it advances StatSN.
 */
export function sendDataIn(
  w: PduWriter,
  seq: SequenceNumbers,
  lun: Uint8Array,
  itt: number,
  dataSN: number,
  bufferOffset: number,
  data: Uint8Array,
  final: boolean,
  status: number,
  residualFlags: number,
  residual: number,
  release?: () => void,
): void {
  const h = w.header();
  h[0] = Opcode.SCSI_DATA_IN;
  let flags = final ? Flag.F : 0;
  if (status >= 0) {
    flags |= Flag.S | residualFlags;
    h[3] = status;
    putU32(h, Bhs.WORD24, seq.statSN);
    seq.statSN = (seq.statSN + 1) >>> 0;
    putU32(h, Bhs.WORD44, residual);
  }
  h[1] = flags;
  h.set(lun, Bhs.LUN);
  putU32(h, Bhs.ITT, itt);
  putU32(h, Bhs.WORD20, RESERVED_TAG);
  putU32(h, Bhs.WORD28, seq.expCmdSN);
  putU32(h, Bhs.WORD32, seq.maxCmdSN);
  putU32(h, Bhs.WORD36, dataSN);
  putU32(h, Bhs.WORD40, bufferOffset);
  w.send(data, release);
}

/** SCSI Response (§11.4): status, residual, and sense data behind its 2-byte length. */
export function sendScsiResponse(
  w: PduWriter,
  seq: SequenceNumbers,
  itt: number,
  response: number,
  status: number,
  residualFlags: number,
  residual: number,
  expDataSN: number,
  sense: Uint8Array | undefined,
): void {
  const h = statusHeader(w, seq, Opcode.SCSI_RESPONSE, response, itt);
  h[1] = Flag.F | residualFlags;
  h[3] = status;
  putU32(h, Bhs.WORD36, expDataSN);
  putU32(h, Bhs.WORD44, residual);
  let data: Uint8Array | null = null;
  if (sense !== undefined && sense.byteLength > 0) {
    const d = Buffer.allocUnsafe(2 + sense.byteLength);
    d.writeUInt16BE(sense.byteLength, 0);
    d.set(sense, 2);
    data = d;
  }
  w.send(data);
}

/** Ready To Transfer (§11.8): asks for `length` bytes at `offset`; carries but does not advance StatSN. */
export function sendR2T(w: PduWriter, seq: SequenceNumbers, lun: Uint8Array, itt: number, ttt: number, r2tSN: number, offset: number, length: number): void {
  const h = w.header();
  h[0] = Opcode.R2T;
  h[1] = Flag.F;
  h.set(lun, Bhs.LUN);
  putU32(h, Bhs.ITT, itt);
  putU32(h, Bhs.WORD20, ttt);
  numbers(h, seq.statSN, seq);
  putU32(h, Bhs.WORD36, r2tSN);
  putU32(h, Bhs.WORD40, offset);
  putU32(h, Bhs.WORD44, length);
  w.send();
}

/**
 * NOP-In (§11.19): the answer to an initiator's ping (its ITT, advancing StatSN), or our own ping
 * (ITT reserved, a TTT the initiator must echo, StatSN carried but not advanced).
 */
export function sendNopIn(w: PduWriter, seq: SequenceNumbers, lun: Uint8Array | null, itt: number, ttt: number, data: Uint8Array | null): void {
  const h = w.header();
  h[0] = Opcode.NOP_IN;
  h[1] = Flag.F;
  lunFrom(h, lun);
  putU32(h, Bhs.ITT, itt);
  putU32(h, Bhs.WORD20, ttt);
  numbers(h, seq.statSN, seq);
  if (itt !== RESERVED_TAG) seq.statSN = (seq.statSN + 1) >>> 0;
  w.send(data);
}

/** Task Management Function Response (§11.6). */
export function sendTmfResponse(w: PduWriter, seq: SequenceNumbers, itt: number, response: number): void {
  statusHeader(w, seq, Opcode.TASK_MGMT_RESPONSE, response, itt);
  w.send();
}

/** Text Response (§11.11); `ttt` is reserved unless more text follows (C bit). */
export function sendTextResponse(
  w: PduWriter,
  seq: SequenceNumbers,
  lun: Uint8Array | null,
  itt: number,
  ttt: number,
  final: boolean,
  more: boolean,
  text: Uint8Array,
): void {
  const h = w.header();
  h[0] = Opcode.TEXT_RESPONSE;
  h[1] = (final ? Flag.F : 0) | (more ? Flag.C : 0);
  lunFrom(h, lun);
  putU32(h, Bhs.ITT, itt);
  putU32(h, Bhs.WORD20, ttt);
  numbers(h, seq.statSN, seq);
  seq.statSN = (seq.statSN + 1) >>> 0;
  w.send(text.byteLength === 0 ? null : text);
}

/** Logout Response (§11.15); Time2Wait and Time2Retain are 0 at ErrorRecoveryLevel 0. */
export function sendLogoutResponse(w: PduWriter, seq: SequenceNumbers, itt: number, response: number): void {
  statusHeader(w, seq, Opcode.LOGOUT_RESPONSE, response, itt);
  w.send();
}

/** Reject (§11.17): the rejected PDU's header goes back as the data segment. */
export function sendReject(w: PduWriter, seq: SequenceNumbers, reason: number, rejectedHeader: Uint8Array): void {
  const copy = Buffer.from(rejectedHeader.subarray(0, 48));
  statusHeader(w, seq, Opcode.REJECT, reason, RESERVED_TAG);
  w.send(copy);
}

/** Asynchronous Message (§11.9), e.g. a logout request or the notice that we drop the connection. */
export function sendAsyncMessage(w: PduWriter, seq: SequenceNumbers, event: number, parameter1: number, parameter2: number, parameter3: number): void {
  const h = statusHeader(w, seq, Opcode.ASYNC_MESSAGE, 0, RESERVED_TAG);
  h[36] = event;
  putU16(h, 38, parameter1);
  putU16(h, 40, parameter2);
  putU16(h, 42, parameter3);
  w.send();
}

/** Login Response (§11.13). */
export interface LoginResponseFields {
  readonly transit: boolean;
  readonly continued: boolean;
  readonly csg: number;
  readonly nsg: number;
  readonly versionMax: number;
  readonly versionActive: number;
  readonly isid: Uint8Array;
  readonly tsih: number;
  readonly itt: number;
  readonly statSN: number;
  readonly expCmdSN: number;
  readonly maxCmdSN: number;
  readonly status: number;
}

export function sendLoginResponse(w: PduWriter, f: LoginResponseFields, text: Uint8Array | null): void {
  const h = w.header();
  h[0] = Opcode.LOGIN_RESPONSE;
  h[1] = (f.transit ? Flag.T : 0) | (f.continued ? Flag.C : 0) | ((f.csg & 3) << 2) | (f.nsg & 3);
  h[2] = f.versionMax;
  h[3] = f.versionActive;
  h.set(f.isid.subarray(0, 6), Bhs.ISID);
  putU16(h, Bhs.TSIH, f.tsih);
  putU32(h, Bhs.ITT, f.itt);
  putU32(h, Bhs.WORD24, f.statSN);
  putU32(h, Bhs.WORD28, f.expCmdSN);
  putU32(h, Bhs.WORD32, f.maxCmdSN);
  h[36] = f.status >>> 8;
  h[37] = f.status & 0xff;
  w.send(text !== null && text.byteLength > 0 ? text : null);
}
