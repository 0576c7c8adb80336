// The SCSI target device's device server (SAM-5 §4.6): its logical units by LUN, REPORT LUNS, the
// answers for LUNs that do not exist, task management effects and I_T nexus loss. Transports (the
// iSCSI target today) hand it ScsiTasks and send back what the ScsiResults say (types.ts).
//
// A LUN without a logical unit (SPC-4 §4.4.1, §6.6.1, §6.39): INQUIRY answers PERIPHERAL QUALIFIER
// 011b / type 1Fh, REPORT LUNS works, REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as its data,
// everything else ends in CHECK CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
import type { ItNexus, ResetKind, ScsiResult, ScsiTask } from './types.ts';
import { Asc, Op, ProtocolIdentifier, ScsiStatus, SenseKey } from './constants.ts';
import { buildSense, fieldPointer } from './sense.ts';
import { putU32, u32 } from './cdb.ts';
import { encodeLun, MAX_LUN } from './lun.ts';
import { DataBufferPool } from '../block/data-buffers.ts';
import type { DataBufferPoolOptions } from '../block/data-buffers.ts';
import { standardInquiry } from './inquiry.ts';
import type { TargetIdentity } from './inquiry.ts';
import { LogicalUnit } from './logical-unit.ts';
import type { Limits, LogicalUnitContext, LogicalUnitOptions, LogicalUnitStats } from './logical-unit.ts';

export type { LogicalUnitOptions, LogicalUnitStats } from './logical-unit.ts';

export interface ScsiDeviceServerOptions {
  readonly luns: ReadonlyMap<number, LogicalUnitOptions>;
  /** SCSI target device name (iSCSI: the target's IQN), for VPD 83h. */
  readonly targetName: string;
  /** Target portal group tag in the target port name "<name>,t,0x<tag>" (default 1). */
  readonly targetPortGroupTag?: number;
  /** PROTOCOL IDENTIFIER of the transport (default 5, iSCSI). */
  readonly protocolIdentifier?: number;
  /** MAXIMUM TRANSFER LENGTH in bytes (default 8 MiB, at most 1 GiB). */
  readonly maxTransferBytes?: number;
  /** OPTIMAL TRANSFER LENGTH in bytes (default 1 MiB). */
  readonly optimalTransferBytes?: number;
  /** MAXIMUM WRITE SAME LENGTH in blocks (default 65535). */
  readonly maxWriteSameBlocks?: number;
  /** MAXIMUM UNMAP LBA COUNT (default 1 Mi blocks). */
  readonly maxUnmapBlocks?: number;
  /** MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT (default 256). */
  readonly maxUnmapDescriptors?: number;
  /** MAXIMUM COMPARE AND WRITE LENGTH in blocks (default 255, the most the CDB can ask). */
  readonly maxCompareAndWriteBlocks?: number;
  /** Persistent reservation registrations per logical unit (default 1024). */
  readonly maxRegistrations?: number;
  readonly dataBuffers?: DataBufferPoolOptions;
  /** PREEMPT AND ABORT: abort the tasks of these I_T nexuses on this LUN (SPC-4 §5.14.12.3). */
  readonly onPreemptAndAbort?: (lun: number, nexuses: readonly ItNexus[]) => void;
}

/** Lost I_T nexuses remembered so that one coming back hears I_T NEXUS LOSS OCCURRED. */
const MAX_LOST_NEXUSES = 256;

export class ScsiDeviceServer {
  readonly #byLun: (LogicalUnit | undefined)[] = [];
  readonly #units: LogicalUnit[] = [];
  readonly #nexuses = new Map<string, ItNexus>();
  readonly #lost = new Map<string, true>();
  readonly #pool: DataBufferPool;
  readonly #absentInquiry: Uint8Array;
  #closed = false;

  constructor(options: ScsiDeviceServerOptions) {
    const maxTransferBytes = options.maxTransferBytes ?? 8 << 20;
    if (!Number.isSafeInteger(maxTransferBytes) || maxTransferBytes < 4096 || maxTransferBytes > 1 << 30) {
      throw new RangeError(`maxTransferBytes ${maxTransferBytes} must be between 4 KiB and 1 GiB`);
    }
    const limits: Limits = {
      maxTransferBytes,
      optimalTransferBytes: Math.min(options.optimalTransferBytes ?? 1 << 20, maxTransferBytes),
      maxWriteSameBlocks: bounded('maxWriteSameBlocks', options.maxWriteSameBlocks ?? 0xffff, 1, 0xffffffff),
      maxUnmapBlocks: bounded('maxUnmapBlocks', options.maxUnmapBlocks ?? 1 << 20, 1, 0xffffffff),
      maxUnmapDescriptors: bounded('maxUnmapDescriptors', options.maxUnmapDescriptors ?? 256, 1, 4095),
      maxCompareAndWriteBlocks: bounded('maxCompareAndWriteBlocks', options.maxCompareAndWriteBlocks ?? 255, 1, 255),
      maxRegistrations: bounded('maxRegistrations', options.maxRegistrations ?? 1024, 1, 1 << 16),
    };
    const tag = options.targetPortGroupTag ?? 1;
    const target: TargetIdentity = {
      targetName: options.targetName,
      targetPortName: `${options.targetName},t,0x${tag.toString(16).padStart(4, '0')}`,
      protocolIdentifier: options.protocolIdentifier ?? ProtocolIdentifier.ISCSI,
    };
    this.#pool = new DataBufferPool({ maxBufferBytes: Math.max(maxTransferBytes, 1 << 20), ...options.dataBuffers });
    const ctx: LogicalUnitContext = {
      pool: this.#pool,
      target,
      limits,
      nexuses: () => this.#nexuses.values(),
      noteNexus: (n) => this.#noteNexus(n),
      abortTasksOf: (lun, nexuses) => options.onPreemptAndAbort?.(lun, nexuses),
    };
    let vendor = 'BLKBACK';
    for (const [lun, lo] of [...options.luns].sort((a, b) => a[0] - b[0])) {
      if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) throw new RangeError(`LUN ${lun} is outside 0..${MAX_LUN}`);
      const unit = new LogicalUnit(lun, lo, ctx);
      this.#byLun[lun] = unit;
      this.#units.push(unit);
      vendor = lo.vendor ?? vendor;
    }
    this.#absentInquiry = standardInquiry({ vendor, product: 'NO LOGICAL UNIT', revision: '0001' }, false);
  }

  /** The configured LUNs, ascending. */
  get luns(): number[] {
    return this.#units.map((u) => u.lun);
  }

  hasLun(lun: number): boolean {
    return lun >= 0 && this.#byLun[lun] !== undefined;
  }

  /** The logical unit at `lun` (diagnostics and tests). */
  unit(lun: number): LogicalUnit | undefined {
    return lun >= 0 ? this.#byLun[lun] : undefined;
  }

  /** Runs one command. Never rejects: every failure is a SCSI status. */
  execute(task: ScsiTask): Promise<ScsiResult> {
    const lun = task.lun;
    const unit = lun >= 0 ? this.#byLun[lun] : undefined;
    const op = task.cdb[0];
    try {
      if (op === Op.REPORT_LUNS) return Promise.resolve(this.#reportLuns(task));
      if (unit === undefined || this.#closed) return Promise.resolve(this.#absent(task));
      return unit.execute(task);
    } catch (err) {
      return Promise.resolve(internalFailure(err));
    }
  }

  /**
   * The effect of LOGICAL UNIT RESET (`lun`) or TARGET WARM/COLD RESET on the logical units, once the
   * transport has aborted the tasks: SPC-2 reservations released, mode pages back to defaults, a
   * unit attention for every I_T nexus (29h/03h; 29h/01h POWER ON OCCURRED for a cold reset, which
   * also drops persistent reservations as a power cycle would).
   */
  reset(kind: ResetKind, lun: number | undefined, by: ItNexus): Promise<void> {
    this.#noteNexus(by);
    if (kind === 'lun') {
      const unit = lun !== undefined && lun >= 0 ? this.#byLun[lun] : undefined;
      unit?.reset(kind);
    } else {
      for (const u of this.#units) u.reset(kind);
    }
    return Promise.resolve();
  }

  /** ABORT TASK SET / CLEAR TASK SET: tasks of `nexus` waiting on this LU wake and end as aborted. */
  abortTaskSet(lun: number, nexus?: ItNexus): void {
    const unit = lun >= 0 ? this.#byLun[lun] : undefined;
    unit?.abortTaskSet(nexus?.key);
  }

  /** I_T nexus loss (session closed or dropped): its SPC-2 reservations go, its unit attentions too. */
  nexusLost(nexus: ItNexus): void {
    this.#nexuses.delete(nexus.key);
    for (const u of this.#units) u.nexusLost(nexus);
    this.#lost.set(nexus.key, true);
    if (this.#lost.size > MAX_LOST_NEXUSES) {
      const oldest = this.#lost.keys().next();
      if (oldest.done !== true) this.#lost.delete(oldest.value);
    }
  }

  /** Per-LUN counters (blkback ctl stats). */
  stats(): LogicalUnitStats[] {
    return this.#units.map((u) => u.stats());
  }

  /** Data-in buffers handed out and not yet released (diagnostics). */
  get leasedBuffers(): number {
    return this.#pool.leased;
  }

  /** Flushes and closes every logical unit's device; commands after this see no logical units. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let first: unknown;
    for (const u of this.#units) {
      try {
        await u.device.flush();
      } catch (err) {
        first ??= err;
      }
      try {
        await u.device.close();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }

  #noteNexus(nexus: ItNexus): void {
    if (this.#nexuses.has(nexus.key)) return;
    this.#nexuses.set(nexus.key, nexus);
    if (this.#lost.delete(nexus.key)) {
      // SAM-5 §6.3.4: the I_T nexus that was lost hears of it when it comes back.
      for (const u of this.#units) u.establishUaFor(nexus, Asc.I_T_NEXUS_LOSS_OCCURRED);
    }
  }

  #reportLuns(task: ScsiTask): ScsiResult {
    this.#noteNexus(task.nexus);
    const cdb = task.cdb;
    if (cdb.length < 12) return illegal(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 0, 7));
    if (((cdb[11] as number) & 0x04) !== 0) return illegal(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 11, 2));
    const select = cdb[2] as number;
    // SELECT REPORT 00h and 02h: every logical unit; 01h: well-known LUs (we have none).
    if (select !== 0x00 && select !== 0x01 && select !== 0x02) return illegal(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 2));
    const alloc = u32(cdb, 6);
    const list = select === 0x01 || this.#closed ? [] : this.#units;
    const out = new Uint8Array(8 + 8 * list.length);
    putU32(out, 0, 8 * list.length);
    list.forEach((u, i) => encodeLun(u.lun, out, 8 + 8 * i));
    const n = Math.min(alloc, out.byteLength);
    return n === 0 ? { status: ScsiStatus.GOOD, transferLength: 0 } : { status: ScsiStatus.GOOD, dataIn: out.subarray(0, n), transferLength: n };
  }

  #absent(task: ScsiTask): ScsiResult {
    this.#noteNexus(task.nexus);
    const cdb = task.cdb;
    switch (cdb[0]) {
      case Op.INQUIRY: {
        if (cdb.length < 6) return illegal(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 0, 7));
        if (((cdb[1] as number) & 0x01) !== 0) return illegal(Asc.LOGICAL_UNIT_NOT_SUPPORTED);
        if (((cdb[1] as number) & 0xfe) !== 0 || cdb[2] !== 0) return illegal(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, cdb[2] !== 0 ? 2 : 1));
        const n = Math.min(((cdb[3] as number) << 8) | (cdb[4] as number), this.#absentInquiry.byteLength);
        return n === 0
          ? { status: ScsiStatus.GOOD, transferLength: 0 }
          : { status: ScsiStatus.GOOD, dataIn: this.#absentInquiry.subarray(0, n), transferLength: n };
      }
      case Op.REQUEST_SENSE: {
        if (cdb.length < 6) return illegal(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 0, 7));
        const data = buildSense(((cdb[1] as number) & 0x01) !== 0, SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED);
        const n = Math.min(cdb[4] as number, data.byteLength);
        return n === 0 ? { status: ScsiStatus.GOOD, transferLength: 0 } : { status: ScsiStatus.GOOD, dataIn: data.subarray(0, n), transferLength: n };
      }
      default:
        return illegal(Asc.LOGICAL_UNIT_NOT_SUPPORTED);
    }
  }
}

function illegal(ascAscq: number, sks = 0): ScsiResult {
  return { status: ScsiStatus.CHECK_CONDITION, sense: buildSense(false, SenseKey.ILLEGAL_REQUEST, ascAscq, -1, sks), transferLength: 0 };
}

function internalFailure(_err: unknown): ScsiResult {
  return { status: ScsiStatus.CHECK_CONDITION, sense: buildSense(false, SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE), transferLength: 0 };
}

function bounded(name: string, v: number, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`${name} ${v} must be between ${min} and ${max}`);
  return v;
}
