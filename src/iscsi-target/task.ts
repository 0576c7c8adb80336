// One SCSI command in flight on a session: what the device server sees as a ScsiTask, plus the
// iSCSI bookkeeping of its data-out buffer (RFC 7143 §4.2.4 and §11.7-11.8): immediate data, the
// unsolicited burst, and the solicited sequences it asked for with R2Ts.
//
// Data arrives in buffer-offset order: DataPDUInOrder and DataSequenceInOrder are Yes on every
// session of ours (we offer Yes; the result is the OR of both sides, §13.19-13.20), so the pieces
// of each sequence are checked to start where the last one ended, with DataSN counting from 0.
import { BlockError, Errno } from '../internal/errors.ts';
import type { ItNexus, ScsiResult, ScsiTask, TaskAttribute } from '../scsi/types.ts';
import type { DataBuffer } from '../block/data-buffers.ts';

/** One R2T we sent and the Data-Out PDUs answering it. */
export interface Solicitation {
  readonly task: IscsiTask;
  readonly ttt: number;
  readonly offset: number;
  readonly length: number;
  received: number;
  nextDataSN: number;
  readonly views: Uint8Array[];
}

export class IscsiTask implements ScsiTask {
  readonly nexus: ItNexus;
  readonly lun: number;
  /** The request's 8-byte LUN field, echoed in Data-In and R2T PDUs. */
  readonly lunField: Uint8Array;
  readonly cdb: Uint8Array;
  readonly expectedDataTransferLength: number;
  readonly writeBit: boolean;
  readonly readBit: boolean;
  readonly attribute: TaskAttribute;
  readonly itt: number;
  readonly cmdSN: number;
  readonly immediate: boolean;
  aborted = false;
  /** The device server has answered (or failed). */
  settled = false;

  // ---- data-out
  /** The largest unsolicited burst the initiator may send: min(FirstBurstLength, expected length). */
  readonly unsolicitedLimit: number;
  /** No more unsolicited data will come (F bit seen, or none was allowed). */
  unsolicitedDone: boolean;
  /** Bytes received in the unsolicited part (immediate data included), from offset 0. */
  unsolicitedReceived: number;
  /** DataSN the next unsolicited Data-Out must carry. */
  nextUnsolicitedDataSN = 0;
  /** The pooled buffers this command's data was received into, released when it is done. */
  readonly buffers: DataBuffer[] = [];
  /** Views of the unsolicited bytes, in order. */
  readonly unsolicitedViews: Uint8Array[] = [];
  /** Bytes the device server asked for with dataOut(), or -1 before it asked. */
  wanted = -1;
  /** Next offset to solicit, once the unsolicited part is done. */
  nextSolicitOffset = 0;
  /** R2Ts sent so far (R2TSN of the next one; also the ExpDataSN of a write's response). */
  r2tSN = 0;
  /** Solicitations in offset order, answered or not. */
  readonly solicitations: Solicitation[] = [];
  /** Solicitations still waiting for data. */
  outstanding = 0;
  #waiter: { resolve: (views: readonly Uint8Array[]) => void; reject: (err: Error) => void } | undefined;
  /** Sense data for a Data-Out out of sequence: the command fails with it, whatever the device server said. */
  dataError: Uint8Array | undefined;
  /** A result that arrived before the unsolicited burst ended: sent once it has. */
  heldResult: ScsiResult | undefined;
  #onSettled: (() => void)[] | undefined;
  readonly #solicit: (task: IscsiTask) => void;

  constructor(
    fields: {
      nexus: ItNexus;
      lun: number;
      lunField: Uint8Array;
      cdb: Uint8Array;
      edtl: number;
      writeBit: boolean;
      readBit: boolean;
      attribute: TaskAttribute;
      itt: number;
      cmdSN: number;
      immediate: boolean;
      unsolicitedLimit: number;
      unsolicitedDone: boolean;
    },
    /** Called when dataOut() needs data the initiator has not sent: the session sends R2Ts. */
    solicit: (task: IscsiTask) => void,
  ) {
    this.#solicit = solicit;
    this.nexus = fields.nexus;
    this.lun = fields.lun;
    this.lunField = fields.lunField;
    this.cdb = fields.cdb;
    this.expectedDataTransferLength = fields.edtl;
    this.writeBit = fields.writeBit;
    this.readBit = fields.readBit;
    this.attribute = fields.attribute;
    this.itt = fields.itt;
    this.cmdSN = fields.cmdSN;
    this.immediate = fields.immediate;
    this.unsolicitedLimit = fields.unsolicitedLimit;
    this.unsolicitedDone = fields.unsolicitedDone;
    this.unsolicitedReceived = 0;
  }

  dataOut(length: number): Promise<readonly Uint8Array[]> {
    if (this.aborted) return Promise.reject(abortedError(this));
    if (this.wanted >= 0) return Promise.reject(new BlockError('BLK_ERR_INTERNAL', `task 0x${this.itt.toString(16)}: dataOut called twice`));
    if (!Number.isSafeInteger(length) || length <= 0 || length > this.expectedDataTransferLength) {
      return Promise.reject(
        new BlockError('BLK_ERR_INTERNAL', `task 0x${this.itt.toString(16)}: dataOut(${length}) outside 1..${this.expectedDataTransferLength}`),
      );
    }
    this.wanted = length;
    const ready = this.#gathered();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.#solicit(this);
    });
  }

  /** Called by the session after data arrived: hands the buffer over once all of it is here. */
  dataArrived(): void {
    if (this.#waiter === undefined) return;
    const ready = this.#gathered();
    if (ready === undefined) return;
    const w = this.#waiter;
    this.#waiter = undefined;
    w.resolve(ready);
  }

  /** Fails a pending dataOut(): the task was aborted or its connection lost. */
  failData(err: Error): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(err);
  }

  /** The first `wanted` bytes, if the initiator has sent them all. */
  #gathered(): readonly Uint8Array[] | undefined {
    const want = this.wanted;
    // What the device server needs may all be in the unsolicited part, finished or not.
    if (this.unsolicitedReceived >= want) return cut(this.unsolicitedViews, want);
    if (!this.unsolicitedDone) return undefined;
    let have = this.unsolicitedReceived;
    for (const s of this.solicitations) {
      if (s.received < s.length) return undefined;
      have += s.length;
    }
    if (have < want) return undefined;
    const all: Uint8Array[] = [...this.unsolicitedViews];
    for (const s of this.solicitations) for (const v of s.views) all.push(v);
    return cut(all, want);
  }

  /** Runs `fn` once the device server has answered (at once if it has). */
  whenSettled(fn: () => void): void {
    if (this.settled) return fn();
    (this.#onSettled ??= []).push(fn);
  }

  markSettled(): void {
    this.settled = true;
    const fns = this.#onSettled;
    this.#onSettled = undefined;
    if (fns !== undefined) for (const fn of fns) fn();
  }
}

export function abortedError(task: IscsiTask): BlockError {
  return new BlockError('BLK_ERR_ABORTED', `task 0x${task.itt.toString(16)} was aborted`, { errno: Errno.EIO });
}

/** The first `n` bytes of `views` (n <= their total), reusing the array when it is exactly that. */
function cut(views: Uint8Array[], n: number): Uint8Array[] {
  let total = 0;
  for (const v of views) total += v.byteLength;
  if (total === n) return views;
  const out: Uint8Array[] = [];
  for (const v of views) {
    if (n === 0) break;
    if (v.byteLength <= n) {
      out.push(v);
      n -= v.byteLength;
    } else {
      out.push(v.subarray(0, n));
      n = 0;
    }
  }
  return out;
}
