// One logical unit over one BlockDevice: the SBC-4 direct-access command set plus the SPC-4
// commands a logical unit answers itself. REPORT LUNS and the LUNs that do not exist belong to the
// device server around it (device-server.ts).
//
// Order of checks for a command (SAM-5 §5.14, SPC-4 §5.11 and §5.14.3):
//   1. INQUIRY and REQUEST SENSE answer at once (no unit attention, no reservation conflict).
//   2. A pending unit attention is reported instead of running the command.
//   3. Reservation conflicts (reservations.ts).
//   4. Task attribute ordering (task-gate.ts).
//   5. Per command: CDB fields (INVALID FIELD IN CDB) → write protection → not ready → LBA range →
//      transfer limits → data-out → I/O.
//
// READ/WRITE are the hot path: fields are decoded into one reusable object, data-in comes from the
// buffer pool, data-out goes to the device as the transport's views.
import type { BlockDevice } from '../block/types.ts';
import { WRITE_FUA } from '../block/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import type { ItNexus, ResetKind, ScsiResult, ScsiTask } from './types.ts';
import { Asc, MaintenanceIn, Op, PrIn, ScsiStatus, SenseKey, ServiceActionIn16, VpdPage } from './constants.ts';
import { buildSense, fieldPointer } from './sense.ts';
import { cdbLengthFor, decodeBlockFields, putU32, putU64, u16, u32, u64 } from './cdb.ts';
import type { BlockFields } from './cdb.ts';
import type { DataBufferPool } from '../block/data-buffers.ts';
import { ModePages, type ModeError } from './mode-pages.ts';
import { ConflictClass, Reservations } from './reservations.ts';
import { CONFLICT_BY_OPCODE, supportedOperationCodes } from './opcodes.ts';
import { NexusState } from './unit-attention.ts';
import { RangeLocks } from './range-locks.ts';
import { TaskGate } from './task-gate.ts';
import {
  blockDeviceCharacteristics,
  blockLimits,
  deviceIdentification,
  logicalBlockProvisioning,
  standardInquiry,
  supportedVpdPages,
  unitSerialNumber,
} from './inquiry.ts';
import type { BlockLimits, Identity, TargetIdentity } from './inquiry.ts';
import { concatIov, firstDifference, isAllZero, orInto, sliceIov } from './iov.ts';
import { collectLbaStatus, encodeLbaStatus } from './lba-status.ts';

export interface LogicalUnitOptions {
  readonly device: BlockDevice;
  /** Write-protected (also when the device itself is read-only). */
  readonly readOnly?: boolean;
  /** Thin provisioned: UNMAP and WRITE SAME with UNMAP (needs device.info.canDiscard). */
  readonly thin?: boolean;
  /** Unit serial number (VPD 80h): printable ASCII, at most 64 characters. */
  readonly serial: string;
  /** NAA designator (VPD 83h), 8 or 16 bytes, stable for this logical unit. */
  readonly deviceId: Uint8Array;
  readonly vendor?: string;
  readonly product?: string;
  readonly revision?: string;
}

/** Limits the device server advertises (Block Limits VPD) and enforces, in bytes or counts. */
export interface Limits {
  readonly maxTransferBytes: number;
  readonly optimalTransferBytes: number;
  readonly maxWriteSameBlocks: number;
  readonly maxUnmapBlocks: number;
  readonly maxUnmapDescriptors: number;
  readonly maxCompareAndWriteBlocks: number;
  readonly maxRegistrations: number;
}

/** What a logical unit needs from the device server around it. */
export interface LogicalUnitContext {
  readonly pool: DataBufferPool;
  readonly target: TargetIdentity;
  readonly limits: Limits;
  /** Every I_T nexus the device server knows. */
  nexuses(): Iterable<ItNexus>;
  /** A nexus seen for the first time by this logical unit. */
  noteNexus(nexus: ItNexus): void;
  /** PREEMPT AND ABORT: the transport should abort these nexuses' tasks on this LU. */
  abortTasksOf(lun: number, nexuses: readonly ItNexus[]): void;
}

export interface LogicalUnitStats {
  readonly lun: number;
  readonly device: string;
  readonly readCommands: number;
  readonly readBytes: number;
  readonly writeCommands: number;
  readonly writeBytes: number;
  readonly flushes: number;
  readonly unmapCommands: number;
  readonly unmappedBytes: number;
  readonly compareAndWrites: number;
  readonly miscompares: number;
  readonly reservationConflicts: number;
  readonly unitAttentions: number;
  /** CHECK CONDITIONs by sense key name (only keys that occurred). */
  readonly errors: Readonly<Record<string, number>>;
}

const SENSE_KEY_NAMES = [
  'NO_SENSE',
  'RECOVERED_ERROR',
  'NOT_READY',
  'MEDIUM_ERROR',
  'HARDWARE_ERROR',
  'ILLEGAL_REQUEST',
  'UNIT_ATTENTION',
  'DATA_PROTECT',
  'BLANK_CHECK',
  'VENDOR_SPECIFIC',
  'COPY_ABORTED',
  'ABORTED_COMMAND',
  'RESERVED_C',
  'VOLUME_OVERFLOW',
  'MISCOMPARE',
  'COMPLETED',
];

const GOOD: ScsiResult = Object.freeze({ status: ScsiStatus.GOOD, transferLength: 0 });
const ABORTED: ScsiResult = Object.freeze({ status: ScsiStatus.TASK_ABORTED, transferLength: 0 });
const CONFLICT: ScsiResult = Object.freeze({ status: ScsiStatus.RESERVATION_CONFLICT, transferLength: 0 });

/** GOOD for a command whose CDB asked to move `transferLength` bytes. */
function good(transferLength: number): ScsiResult {
  return transferLength === 0 ? GOOD : { status: ScsiStatus.GOOD, transferLength };
}

/** NACA in the CONTROL byte: we offer no ACA (SAM-5 §5.9.3), so it is refused. */
const NACA = 0x04;
/** Protection fields (RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT): we offer no protection information. */
const PROTECT_MASK = 0xe0;
const FUA = 0x08;
/** Largest chunk a WRITE SAME pattern or a long verify moves per device call. */
const CHUNK_BYTES = 1 << 20;
/** Most descriptors one GET LBA STATUS returns. */
const MAX_LBA_STATUS_DESCRIPTORS = 256;

class Counters {
  readCommands = 0;
  readBytes = 0;
  writeCommands = 0;
  writeBytes = 0;
  flushes = 0;
  unmapCommands = 0;
  unmappedBytes = 0;
  compareAndWrites = 0;
  miscompares = 0;
  reservationConflicts = 0;
  unitAttentions = 0;
  readonly errors: number[] = new Array<number>(16).fill(0);
}

export class LogicalUnit {
  readonly lun: number;
  readonly device: BlockDevice;
  readonly #ctx: LogicalUnitContext;
  readonly #identity: Identity;
  readonly #readOnly: boolean;
  readonly #thin: boolean;
  /** Deallocated blocks read back as zeroes (LBPRZ): a thin LU over a store that promises it. */
  readonly #lbprz: boolean;
  readonly #bs: number;
  readonly #bsShift: number;
  #sizeBytes: number;
  #numBlocks: number;
  readonly #maxTransferBlocks: number;
  readonly #blockLimits: BlockLimits;
  readonly #lbppbe: number;
  readonly #mode: ModePages;
  readonly #res: Reservations;
  readonly #states = new Map<string, NexusState>();
  readonly #locks = new RangeLocks();
  readonly #gate = new TaskGate();
  readonly #stats = new Counters();
  readonly #f: BlockFields = { lba: 0, count: 0, flags: 0, countByte: 0 };
  #stopped = false;
  #writeThrough = false;
  readonly #canFua: boolean;
  #standardInquiry: Uint8Array | undefined;

  constructor(lun: number, options: LogicalUnitOptions, ctx: LogicalUnitContext) {
    const info = options.device.info;
    const bs = info.logicalBlockSize;
    if (!Number.isInteger(Math.log2(bs)) || bs < 512) throw new RangeError(`LUN ${lun}: logical block size ${bs} is not a power of two of at least 512`);
    if (options.deviceId.byteLength !== 8 && options.deviceId.byteLength !== 16)
      throw new RangeError(`LUN ${lun}: deviceId must be an 8- or 16-byte NAA designator`);
    if (!/^[\x20-\x7e]{1,64}$/.test(options.serial)) throw new RangeError(`LUN ${lun}: serial must be 1 to 64 printable ASCII characters`);
    this.lun = lun;
    this.device = options.device;
    this.#ctx = ctx;
    this.#identity = {
      vendor: options.vendor ?? 'BLKBACK',
      product: options.product ?? 'VIRTUAL-DISK',
      revision: options.revision ?? '0001',
      serial: options.serial,
      deviceId: options.deviceId,
    };
    this.#readOnly = (options.readOnly ?? false) || info.readOnly;
    this.#thin = (options.thin ?? false) && info.canDiscard;
    this.#lbprz = this.#thin && info.discardZeroes === true;
    this.#canFua = info.canFua;
    this.#bs = bs;
    this.#bsShift = Math.log2(bs);
    this.#sizeBytes = info.size;
    this.#numBlocks = Math.floor(info.size / bs);
    const l = ctx.limits;
    this.#maxTransferBlocks = Math.max(1, Math.floor(l.maxTransferBytes / bs));
    const lbppb = Math.max(1, Math.floor(info.physicalBlockSize / bs));
    this.#lbppbe = Math.min(15, Math.floor(Math.log2(lbppb)));
    const discardBlocks = Math.max(1, Math.floor(info.discardGranularity / bs));
    this.#blockLimits = {
      maxCompareAndWriteBlocks: Math.min(255, l.maxCompareAndWriteBlocks, this.#maxTransferBlocks),
      optimalTransferGranularity: Math.min(0xffff, 1 << this.#lbppbe),
      maxTransferBlocks: this.#maxTransferBlocks,
      optimalTransferBlocks: Math.max(1, Math.min(this.#maxTransferBlocks, Math.floor(l.optimalTransferBytes / bs))),
      maxUnmapBlocks: this.#thin ? Math.max(l.maxUnmapBlocks, 1 << this.#lbppbe) : 0,
      maxUnmapDescriptors: this.#thin ? l.maxUnmapDescriptors : 0,
      optimalUnmapGranularity: this.#thin ? discardBlocks : 0,
      maxWriteSameBlocks: l.maxWriteSameBlocks,
    };
    this.#mode = new ModePages({ volatileCache: info.volatileCache });
    this.#res = new Reservations({
      maxRegistrations: l.maxRegistrations,
      protocolIdentifier: ctx.target.protocolIdentifier,
      establishUa: (key, code) => this.#establishUaFor(key, code),
      abortTasksOf: (nexuses) => ctx.abortTasksOf(lun, nexuses),
    });
  }

  get thin(): boolean {
    return this.#thin;
  }
  get readOnly(): boolean {
    return this.#readOnly;
  }
  get blockSize(): number {
    return this.#bs;
  }
  /** Reservation state (tests and diagnostics). */
  get reservations(): Reservations {
    return this.#res;
  }

  // ------------------------------------------------------------------ entry point

  /** Runs one command. Never rejects: a failure anywhere becomes a SCSI status. */
  async execute(task: ScsiTask): Promise<ScsiResult> {
    let entered = -1;
    try {
      const cdb = task.cdb;
      if (cdb.length === 0) return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
      const op = cdb[0] as number;
      if (this.device.info.size !== this.#sizeBytes) this.#capacityChanged();
      const ns = this.#stateFor(task.nexus);
      if (op === Op.INQUIRY) return this.#inquiry(task);
      if (op === Op.REQUEST_SENSE) return this.#requestSense(task, ns);
      if (ns.ua !== null) {
        this.#stats.unitAttentions++;
        return this.#check(SenseKey.UNIT_ATTENTION, ns.take());
      }
      if (this.#res.active) {
        const cls =
          op === Op.SERVICE_ACTION_IN_16
            ? ((cdb[1] as number) & 0x1f) === ServiceActionIn16.READ_CAPACITY_16
              ? ConflictClass.PR_ALLOWED
              : ConflictClass.READ
            : (CONFLICT_BY_OPCODE[op] as ConflictClass);
        if (this.#res.conflicts(task.nexus.key, cls)) {
          this.#stats.reservationConflicts++;
          return CONFLICT;
        }
      }
      const attribute = task.attribute;
      if (this.#gate.tryEnter(attribute)) {
        entered = attribute;
      } else {
        await this.#gate.admit(attribute);
        entered = attribute;
        if (task.aborted) return ABORTED;
      }
      return await this.#dispatch(task, op, ns);
    } catch (err) {
      return this.#fromError(err, false);
    } finally {
      if (entered >= 0) this.#gate.leave(entered);
    }
  }

  #dispatch(task: ScsiTask, op: number, ns: NexusState): ScsiResult | Promise<ScsiResult> {
    const cdb = task.cdb;
    const length = cdbLengthFor(op);
    if (length !== 0) {
      if (cdb.length < length) return this.#invalidField(0, 7);
      if (((cdb[length - 1] as number) & NACA) !== 0) return this.#invalidField(length - 1, 2);
    }
    switch (op) {
      case Op.READ_10:
      case Op.READ_16:
      case Op.READ_12:
      case Op.READ_6:
        return this.#read(task);
      case Op.WRITE_10:
      case Op.WRITE_16:
      case Op.WRITE_12:
      case Op.WRITE_6:
        return this.#write(task);
      case Op.TEST_UNIT_READY:
        return this.#stopped ? this.#notReady() : GOOD;
      case Op.READ_CAPACITY_10:
        return this.#readCapacity10(cdb);
      case Op.SERVICE_ACTION_IN_16:
        switch ((cdb[1] as number) & 0x1f) {
          case ServiceActionIn16.READ_CAPACITY_16:
            return this.#readCapacity16(cdb);
          case ServiceActionIn16.GET_LBA_STATUS:
            return this.#getLbaStatus(cdb);
          default:
            return this.#invalidField(1, 4);
        }
      case Op.SYNCHRONIZE_CACHE_10:
      case Op.SYNCHRONIZE_CACHE_16:
        return this.#synchronizeCache(cdb);
      case Op.VERIFY_10:
      case Op.VERIFY_12:
      case Op.VERIFY_16:
        return this.#verify(task);
      case Op.WRITE_AND_VERIFY_10:
      case Op.WRITE_AND_VERIFY_12:
      case Op.WRITE_AND_VERIFY_16:
        return this.#writeAndVerify(task);
      case Op.COMPARE_AND_WRITE:
        return this.#compareAndWrite(task);
      case Op.ORWRITE_16:
        return this.#orWrite(task);
      case Op.PRE_FETCH_10:
      case Op.PRE_FETCH_16:
        return this.#preFetch(cdb);
      case Op.WRITE_SAME_10:
      case Op.WRITE_SAME_16:
        return this.#writeSame(task);
      case Op.UNMAP:
        // A fully provisioned LU does not offer UNMAP, but write protection answers first: every
        // write-type command on a write-protected LU is DATA PROTECT (libiscsi's ReadOnly.ReadOnlySBC).
        if (this.#thin) return this.#unmap(task);
        return this.#writeProtect ? this.#writeProtected() : this.#check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
      case Op.MODE_SENSE_6:
      case Op.MODE_SENSE_10:
        return this.#modeSense(cdb);
      case Op.MODE_SELECT_6:
      case Op.MODE_SELECT_10:
        return this.#modeSelect(task, ns);
      case Op.START_STOP_UNIT:
        return this.#startStopUnit(cdb);
      case Op.SEND_DIAGNOSTIC:
        // The default self-test (SELFTEST 1, SPC-4 §6.42): nothing to test on a virtual disk, so it
        // passes. Other self-test codes and diagnostic pages are not offered.
        if (((cdb[1] as number) & 0xfc) !== 0x04) return this.#invalidField(1, ((cdb[1] as number) & 0x04) === 0 ? 2 : 7);
        if (u16(cdb, 3) !== 0) return this.#invalidField(3);
        return this.#stopped ? this.#notReady() : GOOD;
      case Op.RESERVE_6:
      case Op.RESERVE_10:
      case Op.RELEASE_6:
      case Op.RELEASE_10:
        return this.#reserveRelease(task);
      case Op.PERSISTENT_RESERVE_IN:
        return this.#persistentReserveIn(cdb);
      case Op.PERSISTENT_RESERVE_OUT:
        return this.#persistentReserveOut(task);
      case Op.MAINTENANCE_IN:
        if (((cdb[1] as number) & 0x1f) !== MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES) return this.#invalidField(1, 4);
        return this.#reportSupportedOpcodes(cdb);
      default:
        return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
    }
  }

  // ------------------------------------------------------------------ results

  #check(key: number, ascAscq: number, sks = 0, information = -1, transferLength = 0): ScsiResult {
    this.#stats.errors[key] = (this.#stats.errors[key] as number) + 1;
    return { status: ScsiStatus.CHECK_CONDITION, sense: buildSense(this.#mode.descriptorSense, key, ascAscq, information, sks), transferLength };
  }

  #invalidField(byte: number, bit?: number): ScsiResult {
    return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, byte, bit));
  }

  /** INVALID FIELD IN CDB pointing at the highest of the (reserved or unsupported) `bits` set in `byte`. */
  #invalidBits(byte: number, bits: number): ScsiResult {
    return this.#invalidField(byte, 31 - Math.clz32(bits));
  }

  #lbaOutOfRange(): ScsiResult {
    return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
  }

  #notReady(): ScsiResult {
    return this.#check(SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED);
  }

  #writeProtected(): ScsiResult {
    return this.#check(SenseKey.DATA_PROTECT, this.#readOnly ? Asc.WRITE_PROTECTED : Asc.SOFTWARE_WRITE_PROTECTED);
  }

  get #writeProtect(): boolean {
    return this.#readOnly || this.#mode.softwareWriteProtect;
  }

  #modeError(e: ModeError): ScsiResult {
    return this.#check(SenseKey.ILLEGAL_REQUEST, e.ascAscq, e.sks);
  }

  /** Maps a device failure (or an abort) to a status. */
  #fromError(err: unknown, write: boolean): ScsiResult {
    if (err instanceof BlockError) {
      if (err.code === 'BLK_ERR_ABORTED') return ABORTED;
      if (err.errno === Errno.ENOSPC) return this.#check(SenseKey.DATA_PROTECT, Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
      if (err.errno === Errno.EROFS) return this.#check(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
      return this.#check(SenseKey.MEDIUM_ERROR, write ? Asc.WRITE_ERROR : Asc.UNRECOVERED_READ_ERROR);
    }
    return this.#check(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE);
  }

  #dataIn(data: Uint8Array, allocationLength: number): ScsiResult {
    const n = Math.min(allocationLength, data.byteLength);
    if (n === 0) return GOOD;
    return { status: ScsiStatus.GOOD, dataIn: n === data.byteLength ? data : data.subarray(0, n), transferLength: n };
  }

  /** The block fields of `cdb`, decoded into the one reusable object (valid until the next decode). */
  #blockFields(cdb: Uint8Array): BlockFields {
    decodeBlockFields(cdb, this.#f);
    return this.#f;
  }

  /** The range check every block command makes: LBA past the last one, or the range past the end. */
  #outOfRange(lba: number, count: number): boolean {
    return lba >= this.#numBlocks || lba + count > this.#numBlocks;
  }

  // ------------------------------------------------------------------ data-out, range locks

  /** Bytes of data-out the initiator offers for `wanted` (0 without the W bit). */
  #available(task: ScsiTask, wanted: number): number {
    return task.writeBit ? Math.min(task.expectedDataTransferLength, wanted) : 0;
  }

  /**
   * Whole blocks of data-out the initiator offers for a transfer of `bytes`. Residuals are the
   * transport's: with a shorter expected length we take the whole blocks we are given (SAM-5
   * §5.4.3), and the transport reports the overflow.
   */
  #offeredBlocks(task: ScsiTask, bytes: number): number {
    // The expected data transfer length is a 32-bit field, so the shift is exact.
    return this.#available(task, bytes) >>> this.#bsShift;
  }

  /**
   * The first `length` bytes of the task's data-out, or the status to answer with when they cannot
   * be had (the task was aborted or its connection lost); `write` picks the medium error's ASC.
   */
  async #dataOut(task: ScsiTask, length: number, write: boolean): Promise<readonly Uint8Array[] | ScsiResult> {
    try {
      return await task.dataOut(length);
    } catch (err) {
      return this.#fromError(err, write);
    }
  }

  /** Shared checks of WRITE, WRITE AND VERIFY, ORWRITE and COMPARE AND WRITE after the CDB's own fields. */
  #writeChecks(lba: number, count: number, countByte: number): ScsiResult | undefined {
    if (this.#writeProtect) return this.#writeProtected();
    if (this.#stopped) return this.#notReady();
    if (this.#outOfRange(lba, count)) return this.#lbaOutOfRange();
    if (count > this.#maxTransferBlocks) return this.#invalidField(countByte);
    return undefined;
  }

  /**
   * Runs `io` holding [lba, lba+count) in the range locks (range-locks.ts), once every earlier
   * conflicting command is done: `exclusive` for the read-modify-write commands, shared for plain
   * writes. Answers ABORTED instead when the task was aborted by then, and maps a device error
   * to a write-type status.
   */
  async #underLock(task: ScsiTask, lba: number, count: number, exclusive: boolean, io: () => Promise<ScsiResult>): Promise<ScsiResult> {
    const lock = this.#locks.acquire(lba, count, exclusive, task);
    try {
      // A shared entry with nothing ahead of it (the WRITE hot path) goes straight on. An exclusive
      // one checks for an abort even then: a task management request read in the same chunk as the
      // last Data-Out marks the task aborted before this runs.
      if (exclusive || lock.pending !== 0) {
        await this.#locks.wait(lock);
        if (task.aborted) return ABORTED;
      }
      return await io();
    } catch (err) {
      return this.#fromError(err, true);
    } finally {
      this.#locks.release(lock);
    }
  }

  /**
   * The frame of WRITE, WRITE AND VERIFY and ORWRITE once the CDB's own fields are checked: the
   * shared checks, then the whole blocks of data-out the initiator offers, then `io` with them
   * (`length` bytes, fewer than the CDB asked for with a short expected length) under the range
   * lock of those blocks.
   */
  async #writeBlocks(
    task: ScsiTask,
    lba: number,
    count: number,
    countByte: number,
    exclusive: boolean,
    io: (iov: readonly Uint8Array[], length: number) => Promise<ScsiResult>,
  ): Promise<ScsiResult> {
    const refused = this.#writeChecks(lba, count, countByte);
    if (refused !== undefined) return refused;
    const bytes = count << this.#bsShift;
    const blocks = this.#offeredBlocks(task, bytes);
    if (blocks === 0) return good(bytes);
    const length = blocks << this.#bsShift;
    const iov = await this.#dataOut(task, length, true);
    if ('status' in iov) return iov;
    return this.#underLock(task, lba, blocks, exclusive, () => io(iov, length));
  }

  /**
   * WRITE_FUA for a write with the FUA bit, or for every write once an initiator cleared WCE on a
   * device that has a volatile cache (without one, writes are durable anyway).
   */
  #fua(flags: number): number {
    return (flags & FUA) !== 0 || this.#writeThrough ? WRITE_FUA : 0;
  }

  #updateWriteThrough(): void {
    this.#writeThrough = this.device.info.volatileCache && !this.#mode.writeCacheEnabled;
  }

  /** writev, with FUA emulated by a flush when the device cannot do it. */
  #writeDevice(offset: number, iov: readonly Uint8Array[], fua: number): Promise<void> {
    if (fua !== 0 && !this.#canFua) return this.#writeThenFlush(offset, iov);
    return this.device.writev(offset, iov, fua);
  }

  async #writeThenFlush(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    await this.device.writev(offset, iov);
    await this.device.flush();
  }

  #countWrite(bytes: number): void {
    this.#stats.writeCommands++;
    this.#stats.writeBytes += bytes;
  }

  // ------------------------------------------------------------------ READ / WRITE (hot path)

  async #read(task: ScsiTask): Promise<ScsiResult> {
    const f = this.#blockFields(task.cdb);
    const lba = f.lba;
    const count = f.count;
    if ((f.flags & PROTECT_MASK) !== 0) return this.#invalidField(1, 7);
    if (this.#stopped) return this.#notReady();
    if (this.#outOfRange(lba, count)) return this.#lbaOutOfRange();
    if (count > this.#maxTransferBlocks) return this.#invalidField(f.countByte);
    if (count === 0) return GOOD;
    const barrier = this.#locks.readBarrier(lba, count, task);
    if (barrier !== undefined) {
      await barrier;
      if (task.aborted) return ABORTED;
    }
    const bytes = count << this.#bsShift;
    const buf = this.#ctx.pool.take(bytes);
    try {
      await this.device.readv(lba * this.#bs, buf.iov);
    } catch (err) {
      buf.release();
      return this.#fromError(err, false);
    }
    const s = this.#stats;
    s.readCommands++;
    s.readBytes += bytes;
    return { status: ScsiStatus.GOOD, dataIn: buf.view, transferLength: bytes, release: buf.release };
  }

  async #write(task: ScsiTask): Promise<ScsiResult> {
    const { lba, count, flags, countByte } = this.#blockFields(task.cdb);
    if ((flags & PROTECT_MASK) !== 0) return this.#invalidField(1, 7);
    return this.#writeBlocks(task, lba, count, countByte, false, async (iov, length) => {
      await this.#writeDevice(lba * this.#bs, iov, this.#fua(flags));
      this.#countWrite(length);
      return good(count << this.#bsShift);
    });
  }

  // ------------------------------------------------------------------ capacity, status

  #readCapacity10(cdb: Uint8Array): ScsiResult {
    // PMI is obsolete; without it the LOGICAL BLOCK ADDRESS field must be zero (SBC-3 §5.15).
    if (((cdb[8] as number) & 0x01) === 0 && u32(cdb, 2) !== 0) return this.#invalidField(2);
    if (this.#stopped) return this.#notReady();
    const out = new Uint8Array(8);
    putU32(out, 0, Math.min(this.#numBlocks - 1, 0xffffffff));
    putU32(out, 4, this.#bs);
    return { status: ScsiStatus.GOOD, dataIn: out, transferLength: 8 };
  }

  #readCapacity16(cdb: Uint8Array): ScsiResult {
    const alloc = u32(cdb, 10);
    if (this.#stopped) return this.#notReady();
    const out = new Uint8Array(32);
    putU64(out, 0, this.#numBlocks - 1);
    putU32(out, 8, this.#bs);
    out[13] = this.#lbppbe;
    if (this.#thin) out[14] = 0x80 | (this.#lbprz ? 0x40 : 0); // LBPME, LBPRZ
    return this.#dataIn(out, alloc);
  }

  async #getLbaStatus(cdb: Uint8Array): Promise<ScsiResult> {
    const lba = u64(cdb, 2);
    const alloc = u32(cdb, 10);
    if (this.#stopped) return this.#notReady();
    if (lba >= this.#numBlocks) return this.#lbaOutOfRange();
    if (alloc === 0) return GOOD;
    const max = Math.max(1, Math.min(MAX_LBA_STATUS_DESCRIPTORS, Math.floor((alloc - 8) / 16)));
    // A fully provisioned LU has every block mapped (SBC-4 §4.7.2), whatever the store keeps.
    const status = this.#thin ? this.device.blockStatus?.bind(this.device) : undefined;
    try {
      const list = await collectLbaStatus(status, lba, this.#numBlocks, this.#bs, max);
      return this.#dataIn(encodeLbaStatus(list), alloc);
    } catch (err) {
      return this.#fromError(err, false);
    }
  }

  // ------------------------------------------------------------------ cache, prefetch, verify

  async #synchronizeCache(cdb: Uint8Array): Promise<ScsiResult> {
    const f = this.#blockFields(cdb);
    // SYNC_NV (bit 2) is obsolete and IMMED (bit 1) may be ignored: we always finish before answering.
    if ((f.flags & 0xf9) !== 0) return this.#invalidBits(1, f.flags & 0xf9);
    if (this.#stopped) return this.#notReady();
    const count = f.count === 0 ? Math.max(0, this.#numBlocks - f.lba) : f.count;
    if (this.#outOfRange(f.lba, count)) return this.#lbaOutOfRange();
    try {
      await this.device.flush();
    } catch (err) {
      return this.#fromError(err, true);
    }
    this.#stats.flushes++;
    return GOOD;
  }

  #preFetch(cdb: Uint8Array): ScsiResult {
    const f = this.#blockFields(cdb);
    if ((f.flags & 0xfd) !== 0) return this.#invalidBits(1, f.flags & 0xfd);
    if (this.#stopped) return this.#notReady();
    if (this.#outOfRange(f.lba, f.count)) return this.#lbaOutOfRange();
    // No cache to fill: GOOD (rather than CONDITION MET) says the blocks were not all cached (SBC-4 §5.9).
    return GOOD;
  }

  async #verify(task: ScsiTask): Promise<ScsiResult> {
    const { lba, count, flags, countByte } = this.#blockFields(task.cdb);
    if ((flags & PROTECT_MASK) !== 0) return this.#invalidField(1, 7);
    if ((flags & 0x09) !== 0) return this.#invalidBits(1, flags & 0x09);
    const bytchk = (flags >>> 1) & 0x3;
    if (bytchk === 2) return this.#invalidField(1, 2);
    if (this.#stopped) return this.#notReady();
    if (this.#outOfRange(lba, count)) return this.#lbaOutOfRange();
    if (count === 0 || bytchk === 0) return GOOD;
    if (count > this.#maxTransferBlocks) return this.#invalidField(countByte);
    const bs = this.#bs;
    // BYTCHK 01b: the data-out holds every block; 11b: one block, compared with each.
    const wanted = bytchk === 1 ? count * bs : bs;
    const blocks = this.#offeredBlocks(task, wanted);
    if (blocks === 0) return good(wanted);
    const iov = await this.#dataOut(task, blocks * bs, false);
    if ('status' in iov) return iov;
    const compareBlocks = bytchk === 1 ? blocks : count;
    const barrier = this.#locks.readBarrier(lba, compareBlocks, task);
    if (barrier !== undefined) await barrier;
    const chunkBlocks = Math.max(1, Math.floor(CHUNK_BYTES / bs));
    const buf = this.#ctx.pool.take(Math.min(compareBlocks, chunkBlocks) * bs);
    try {
      for (let done = 0; done < compareBlocks; ) {
        const n = Math.min(chunkBlocks, compareBlocks - done);
        buf.resize(n * bs);
        await this.device.readv((lba + done) * bs, buf.iov);
        if (bytchk === 1) {
          const d = firstDifference(buf.view, iov, done * bs);
          if (d >= 0) return this.#miscompare(done * bs + d, wanted);
        } else {
          for (let b = 0; b < n; b++) {
            const d = firstDifference(buf.view.subarray(b * bs, (b + 1) * bs), iov, 0);
            if (d >= 0) return this.#miscompare((done + b) * bs + d, wanted);
          }
        }
        done += n;
      }
    } catch (err) {
      return this.#fromError(err, false);
    } finally {
      buf.release();
    }
    return good(wanted);
  }

  #miscompare(offset: number, transferLength: number): ScsiResult {
    this.#stats.miscompares++;
    return this.#check(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY_OPERATION, 0, offset, transferLength);
  }

  // ------------------------------------------------------------------ read-modify-write commands

  async #writeAndVerify(task: ScsiTask): Promise<ScsiResult> {
    const { lba, count, flags, countByte } = this.#blockFields(task.cdb);
    if ((flags & PROTECT_MASK) !== 0) return this.#invalidField(1, 7);
    if ((flags & 0x09) !== 0) return this.#invalidBits(1, flags & 0x09);
    const bytchk = (flags >>> 1) & 0x3;
    if (bytchk > 1) return this.#invalidField(1, 2);
    return this.#writeBlocks(task, lba, count, countByte, true, async (iov, length) => {
      // The verify is of the medium: the write is made durable first.
      await this.#writeDevice(lba * this.#bs, iov, WRITE_FUA);
      this.#countWrite(length);
      const transferLength = count * this.#bs;
      if (bytchk === 1) {
        const d = await this.#mediumDifference(lba, length, iov);
        if (d >= 0) return this.#miscompare(d, transferLength);
      }
      return good(transferLength);
    });
  }

  async #orWrite(task: ScsiTask): Promise<ScsiResult> {
    const { lba, count, flags, countByte } = this.#blockFields(task.cdb);
    if ((flags & PROTECT_MASK) !== 0) return this.#invalidField(1, 7);
    if ((flags & 0x05) !== 0) return this.#invalidBits(1, flags & 0x05);
    return this.#writeBlocks(task, lba, count, countByte, true, async (iov, length) => {
      const buf = this.#ctx.pool.take(length);
      try {
        await this.device.readv(lba * this.#bs, buf.iov);
        orInto(buf.view, iov);
        await this.#writeDevice(lba * this.#bs, buf.iov, this.#fua(flags));
      } finally {
        buf.release();
      }
      this.#countWrite(length);
      return good(count * this.#bs);
    });
  }

  async #compareAndWrite(task: ScsiTask): Promise<ScsiResult> {
    const cdb = task.cdb;
    const flags = cdb[1] as number;
    const lba = u64(cdb, 2);
    const count = cdb[13] as number;
    if ((flags & PROTECT_MASK) !== 0) return this.#invalidField(1, 7);
    if ((flags & 0x05) !== 0) return this.#invalidBits(1, flags & 0x05);
    if (count > this.#blockLimits.maxCompareAndWriteBlocks) return this.#invalidField(13);
    const refused = this.#writeChecks(lba, count, 13);
    if (refused !== undefined) return refused;
    const bs = this.#bs;
    const bytes = 2 * count * bs;
    // The data-out buffer is the compare data then the write data; anything but exactly that size
    // is refused (a shorter one cannot be compared, a longer one says the CDB is not what was meant).
    if ((task.writeBit ? task.expectedDataTransferLength : 0) !== bytes) return this.#invalidField(13);
    if (count === 0) return GOOD;
    const iov = await this.#dataOut(task, bytes, true);
    if ('status' in iov) return iov;
    const half = count * bs;
    this.#stats.compareAndWrites++;
    return this.#underLock(task, lba, count, true, async () => {
      const d = await this.#mediumDifference(lba, half, iov);
      if (d >= 0) return this.#miscompare(d, bytes);
      await this.#writeDevice(lba * bs, sliceIov(iov, half, half), this.#fua(flags));
      this.#countWrite(half);
      return good(bytes);
    });
  }

  /** Reads `bytes` from `lba` and compares them with the start of `iov`: the offset of the first difference, or -1. */
  async #mediumDifference(lba: number, bytes: number, iov: readonly Uint8Array[]): Promise<number> {
    const buf = this.#ctx.pool.take(bytes);
    try {
      await this.device.readv(lba * this.#bs, buf.iov);
      return firstDifference(buf.view, iov, 0);
    } finally {
      buf.release();
    }
  }

  // ------------------------------------------------------------------ WRITE SAME, UNMAP

  async #writeSame(task: ScsiTask): Promise<ScsiResult> {
    const cdb = task.cdb;
    const sixteen = cdb[0] === Op.WRITE_SAME_16;
    const f = this.#blockFields(cdb);
    const { lba, flags, countByte } = f;
    const anchor = (flags & 0x10) !== 0;
    const unmap = (flags & 0x08) !== 0;
    const ndob = sixteen && (flags & 0x01) !== 0;
    if ((flags & PROTECT_MASK) !== 0) return this.#invalidField(1, 7);
    // PBDATA and LBDATA (obsolete), and bit 0 of WRITE SAME(10), are not offered.
    if ((flags & 0x06) !== 0) return this.#invalidBits(1, flags & 0x06);
    if (!sixteen && (flags & 0x01) !== 0) return this.#invalidField(1, 0);
    // ANCHOR needs UNMAP, and we do not offer anchored blocks (ANC_SUP 0).
    if (anchor) return this.#invalidField(1, 4);
    if (this.#writeProtect) return this.#writeProtected();
    if (unmap && !this.#thin) return this.#invalidField(1, 3);
    if (this.#stopped) return this.#notReady();
    if (lba >= this.#numBlocks) return this.#lbaOutOfRange();
    // NUMBER OF LOGICAL BLOCKS 0: to the end of the medium (WSNZ 0 in the Block Limits page).
    const count = f.count === 0 ? this.#numBlocks - lba : f.count;
    if (count > this.#blockLimits.maxWriteSameBlocks) return this.#invalidField(countByte);
    if (this.#outOfRange(lba, count)) return this.#lbaOutOfRange();
    const bs = this.#bs;
    let block: Uint8Array;
    if (ndob) {
      block = new Uint8Array(bs);
    } else {
      // Exactly one logical block of data-out.
      if ((task.writeBit ? task.expectedDataTransferLength : 0) !== bs) return this.#invalidField(countByte);
      const iov = await this.#dataOut(task, bs, true);
      if ('status' in iov) return iov;
      block = concatIov(iov);
    }
    return this.#underLock(task, lba, count, false, async () => {
      // UNMAP deallocates whatever the data block holds, as LIO and tgt do and libiscsi's
      // WriteSame10.UnmapUntilEnd expects (it sends 0xFF blocks with UNMAP and reads zeroes back).
      const zero = ndob || isAllZero(block);
      if (unmap) {
        await this.#deallocate(lba, count);
        this.#stats.unmappedBytes += count * bs;
      } else if (zero && this.device.info.canWriteZeroes) {
        await this.device.writeZeroes(lba * bs, count * bs);
      } else {
        await this.#writePattern(lba, count, block);
      }
      this.#countWrite(count * bs);
      return good(ndob ? 0 : bs);
    });
  }

  /** Writes `block` to each of [lba, lba+count), a megabyte at a time. */
  async #writePattern(lba: number, count: number, block: Uint8Array): Promise<void> {
    const bs = this.#bs;
    const chunkBlocks = Math.max(1, Math.min(count, Math.floor(CHUNK_BYTES / bs)));
    const buf = this.#ctx.pool.take(chunkBlocks * bs);
    try {
      for (let i = 0; i < chunkBlocks; i++) buf.view.set(block, i * bs);
      for (let done = 0; done < count; ) {
        const n = Math.min(chunkBlocks, count - done);
        buf.resize(n * bs);
        await this.#writeDevice((lba + done) * bs, buf.iov, this.#fua(0));
        done += n;
      }
    } finally {
      buf.release();
    }
  }

  /**
   * Deallocates [lba, lba+count): discard for the part aligned to the discard granularity. With
   * LBPRZ the ragged edges, which a coarse discard may leave as they were, are written with zeroes
   * (every block of the range must read back as zeroes); without it they may simply stay mapped.
   */
  async #deallocate(lba: number, count: number): Promise<void> {
    const bs = this.#bs;
    const g = this.#blockLimits.optimalUnmapGranularity || 1;
    const start = Math.ceil(lba / g) * g;
    const end = Math.floor((lba + count) / g) * g;
    const zeroes = this.#lbprz;
    if (end <= start) {
      if (zeroes) await this.#zero(lba, count);
      return;
    }
    if (zeroes && start > lba) await this.#zero(lba, start - lba);
    await this.device.discard(start * bs, (end - start) * bs);
    if (zeroes && lba + count > end) await this.#zero(end, lba + count - end);
  }

  async #zero(lba: number, count: number): Promise<void> {
    if (this.device.info.canWriteZeroes) await this.device.writeZeroes(lba * this.#bs, count * this.#bs);
    else await this.#writePattern(lba, count, new Uint8Array(this.#bs));
  }

  async #unmap(task: ScsiTask): Promise<ScsiResult> {
    const cdb = task.cdb;
    const b1 = cdb[1] as number;
    // ANCHOR: no anchored blocks here (ANC_SUP 0); the rest of byte 1 is reserved.
    if (b1 !== 0) return this.#invalidBits(1, b1);
    if (this.#writeProtect) return this.#writeProtected();
    if (this.#stopped) return this.#notReady();
    const paramLength = u16(cdb, 7);
    if (paramLength === 0) return GOOD;
    const got = this.#available(task, paramLength);
    if (paramLength < 8 || got < 8) return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR, 0, -1, paramLength);
    const iov = await this.#dataOut(task, got, true);
    if ('status' in iov) return iov;
    const p = concatIov(iov);
    // UNMAP BLOCK DESCRIPTOR DATA LENGTH, trimmed to what arrived; a partial descriptor is ignored.
    const n = Math.floor(Math.min(u16(p, 2), got - 8) / 16);
    if (n > this.#blockLimits.maxUnmapDescriptors) {
      return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, fieldPointer(false, 2), -1, paramLength);
    }
    // Validate every descriptor before unmapping any.
    let total = 0;
    for (let i = 0; i < n; i++) {
      const d = 8 + 16 * i;
      const lba = u64(p, d);
      const count = u32(p, d + 8);
      if (count === 0) continue;
      if (this.#outOfRange(lba, count)) return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE, 0, -1, paramLength);
      total += count;
      if (total > this.#blockLimits.maxUnmapBlocks) {
        return this.#check(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, fieldPointer(false, d + 8), -1, paramLength);
      }
    }
    for (let i = 0; i < n; i++) {
      const d = 8 + 16 * i;
      const lba = u64(p, d);
      const count = u32(p, d + 8);
      if (count === 0) continue;
      const r = await this.#underLock(task, lba, count, false, async () => {
        await this.#deallocate(lba, count);
        return GOOD;
      });
      // An abort or a device error ends the command; descriptors already done stay unmapped.
      if (r.status !== ScsiStatus.GOOD) return r;
    }
    this.#stats.unmapCommands++;
    this.#stats.unmappedBytes += total * this.#bs;
    return good(paramLength);
  }

  // ------------------------------------------------------------------ SPC commands

  #inquiry(task: ScsiTask): ScsiResult {
    const cdb = task.cdb;
    if (cdb.length < 6) return this.#invalidField(0, 7);
    const b1 = cdb[1] as number;
    // CMDDT (bit 1) is obsolete and refused like the reserved bits.
    if ((b1 & 0xfe) !== 0) return this.#invalidBits(1, b1 & 0xfe);
    if (((cdb[5] as number) & NACA) !== 0) return this.#invalidField(5, 2);
    const evpd = (b1 & 0x01) !== 0;
    const page = cdb[2] as number;
    const alloc = u16(cdb, 3);
    if (!evpd) {
      if (page !== 0) return this.#invalidField(2);
      this.#standardInquiry ??= standardInquiry(this.#identity, true);
      return this.#dataIn(this.#standardInquiry, alloc);
    }
    let data: Uint8Array;
    switch (page) {
      case VpdPage.SUPPORTED_VPD_PAGES:
        data = supportedVpdPages();
        break;
      case VpdPage.UNIT_SERIAL_NUMBER:
        data = unitSerialNumber(this.#identity.serial);
        break;
      case VpdPage.DEVICE_IDENTIFICATION:
        data = deviceIdentification(this.#identity, this.#ctx.target, task.nexus.relativeTargetPort);
        break;
      case VpdPage.BLOCK_LIMITS:
        data = blockLimits(this.#blockLimits);
        break;
      case VpdPage.BLOCK_DEVICE_CHARACTERISTICS:
        data = blockDeviceCharacteristics();
        break;
      case VpdPage.LOGICAL_BLOCK_PROVISIONING:
        data = logicalBlockProvisioning(this.#thin, this.#lbprz);
        break;
      default:
        return this.#invalidField(2);
    }
    return this.#dataIn(data, alloc);
  }

  #requestSense(task: ScsiTask, ns: NexusState): ScsiResult {
    const cdb = task.cdb;
    if (cdb.length < 6) return this.#invalidField(0, 7);
    const b1 = cdb[1] as number;
    if ((b1 & 0xfe) !== 0) return this.#invalidBits(1, b1 & 0xfe);
    const descriptor = (b1 & 0x01) !== 0;
    const alloc = cdb[4] as number;
    // REQUEST SENSE returns a pending unit attention as its parameter data and clears it (SPC-4 §6.39).
    let data: Uint8Array;
    if (ns.ua !== null) data = buildSense(descriptor, SenseKey.UNIT_ATTENTION, ns.take());
    else if (this.#stopped) data = buildSense(descriptor, SenseKey.NOT_READY, Asc.LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED);
    else data = buildSense(descriptor, SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE_INFORMATION);
    return this.#dataIn(data, alloc);
  }

  #modeSense(cdb: Uint8Array): ScsiResult {
    const ten = cdb[0] === Op.MODE_SENSE_10;
    const b1 = cdb[1] as number;
    const reserved = b1 & (ten ? 0xe7 : 0xf7);
    if (reserved !== 0) return this.#invalidBits(1, reserved);
    const r = this.#mode.sense({
      ten,
      dbd: (b1 & 0x08) !== 0,
      llbaa: ten && (b1 & 0x10) !== 0,
      pc: (cdb[2] as number) >>> 6,
      page: (cdb[2] as number) & 0x3f,
      subpage: cdb[3] as number,
      numBlocks: this.#numBlocks,
      blockSize: this.#bs,
      writeProtected: this.#writeProtect,
    });
    if (!(r instanceof Uint8Array)) return this.#modeError(r);
    return this.#dataIn(r, ten ? u16(cdb, 7) : (cdb[4] as number));
  }

  async #modeSelect(task: ScsiTask, ns: NexusState): Promise<ScsiResult> {
    const cdb = task.cdb;
    const ten = cdb[0] === Op.MODE_SELECT_10;
    const b1 = cdb[1] as number;
    // SP: we keep no saved pages; PF may be either (the page format is the same).
    if ((b1 & 0x01) !== 0) return this.#invalidField(1, 0);
    if ((b1 & 0xee) !== 0) return this.#invalidBits(1, b1 & 0xee);
    const length = ten ? u16(cdb, 7) : (cdb[4] as number);
    if (length === 0) return GOOD;
    const got = this.#available(task, length);
    let data: Uint8Array = new Uint8Array(0);
    if (got > 0) {
      const iov = await this.#dataOut(task, got, false);
      if ('status' in iov) return iov;
      data = concatIov(iov);
    }
    const r = this.#mode.select(data, ten, this.#numBlocks, this.#bs);
    if ('ascAscq' in r) {
      const e = this.#modeError(r);
      return { ...e, transferLength: length };
    }
    // Pages are shared by every I_T nexus: the others hear about a change (SPC-4 §5.11).
    if (r.changed) {
      this.#updateWriteThrough();
      this.establishUa(Asc.MODE_PARAMETERS_CHANGED, ns.nexus.key);
    }
    return good(length);
  }

  async #startStopUnit(cdb: Uint8Array): Promise<ScsiResult> {
    if (((cdb[1] as number) & 0xfe) !== 0) return this.#invalidBits(1, (cdb[1] as number) & 0xfe);
    if (((cdb[3] as number) & 0xf0) !== 0) return this.#invalidBits(3, (cdb[3] as number) & 0xf0);
    const b4 = cdb[4] as number;
    if ((b4 & 0x08) !== 0) return this.#invalidField(4, 3);
    const powerCondition = b4 >>> 4;
    if (powerCondition !== 0) {
      // ACTIVE, IDLE, STANDBY, LU_CONTROL, FORCE_IDLE_0, FORCE_STANDBY_0: accepted, nothing to do.
      return [0x1, 0x2, 0x3, 0x7, 0xa, 0xb].includes(powerCondition) ? GOOD : this.#invalidField(4, 7);
    }
    // LOEJ is meaningless for a medium that cannot be removed; START stops or starts the unit.
    if ((b4 & 0x01) !== 0) {
      this.#stopped = false;
      return GOOD;
    }
    if ((b4 & 0x04) === 0) {
      try {
        await this.device.flush();
      } catch (err) {
        return this.#fromError(err, true);
      }
    }
    this.#stopped = true;
    return GOOD;
  }

  #reserveRelease(task: ScsiTask): ScsiResult {
    const cdb = task.cdb;
    const op = cdb[0] as number;
    const b1 = cdb[1] as number;
    // Third-party and extent reservations (obsolete) are not offered.
    if (op === Op.RESERVE_6 || op === Op.RELEASE_6) {
      if (b1 !== 0) return this.#invalidBits(1, b1);
    } else if ((b1 & 0x10) !== 0) {
      return this.#invalidField(1, 4);
    }
    const key = task.nexus.key;
    if (op === Op.RESERVE_6 || op === Op.RESERVE_10) {
      if (!this.#res.reserve(key)) {
        this.#stats.reservationConflicts++;
        return CONFLICT;
      }
      return GOOD;
    }
    this.#res.release(key);
    return GOOD;
  }

  #persistentReserveIn(cdb: Uint8Array): ScsiResult {
    const sa = (cdb[1] as number) & 0x1f;
    if (((cdb[1] as number) & 0xe0) !== 0) return this.#invalidField(1, 7);
    const data = sa <= PrIn.READ_FULL_STATUS ? this.#res.persistentReserveIn(sa) : undefined;
    if (data === undefined) return this.#invalidField(1, 4);
    return this.#dataIn(data, u16(cdb, 7));
  }

  async #persistentReserveOut(task: ScsiTask): Promise<ScsiResult> {
    const cdb = task.cdb;
    if (((cdb[1] as number) & 0xe0) !== 0) return this.#invalidField(1, 7);
    const sa = (cdb[1] as number) & 0x1f;
    const paramLength = u32(cdb, 5);
    // We read at most the basic 24-byte parameter list; longer lists are refused (no SPEC_I_PT).
    const got = this.#available(task, Math.min(paramLength, 24));
    let params: Uint8Array = new Uint8Array(0);
    if (got > 0) {
      const iov = await this.#dataOut(task, got, false);
      if ('status' in iov) return iov;
      params = concatIov(iov);
    }
    const outcome = this.#res.persistentReserveOut(task.nexus, sa, (cdb[2] as number) >>> 4, (cdb[2] as number) & 0x0f, params, paramLength);
    switch (outcome.kind) {
      case 'good':
        return good(paramLength);
      case 'conflict':
        this.#stats.reservationConflicts++;
        return CONFLICT;
      default:
        return this.#check(SenseKey.ILLEGAL_REQUEST, outcome.ascAscq, outcome.sks, -1, paramLength);
    }
  }

  #reportSupportedOpcodes(cdb: Uint8Array): ScsiResult {
    const r = supportedOperationCodes(cdb, this.#thin);
    if (!(r instanceof Uint8Array)) return this.#invalidField(r.byte, r.bit);
    return this.#dataIn(r, u32(cdb, 6));
  }

  // ------------------------------------------------------------------ unit attentions, events

  #stateFor(nexus: ItNexus): NexusState {
    let s = this.#states.get(nexus.key);
    if (s === undefined) {
      s = new NexusState(nexus);
      this.#states.set(nexus.key, s);
      this.#ctx.noteNexus(nexus);
    }
    return s;
  }

  /** A unit attention for every I_T nexus the device server knows, except `exceptKey`. */
  establishUa(code: number, exceptKey?: string): void {
    for (const n of this.#ctx.nexuses()) {
      if (n.key === exceptKey) continue;
      let s = this.#states.get(n.key);
      if (s === undefined) {
        s = new NexusState(n);
        this.#states.set(n.key, s);
      }
      s.establish(code);
    }
  }

  /** A unit attention for one I_T nexus (known to this LU or to the device server). */
  establishUaFor(nexus: ItNexus, code: number): void {
    let s = this.#states.get(nexus.key);
    if (s === undefined) {
      s = new NexusState(nexus);
      this.#states.set(nexus.key, s);
    }
    s.establish(code);
  }

  #establishUaFor(key: string, code: number): void {
    const s = this.#states.get(key);
    if (s !== undefined) {
      s.establish(code);
      return;
    }
    for (const n of this.#ctx.nexuses()) if (n.key === key) return this.establishUaFor(n, code);
  }

  #capacityChanged(): void {
    const size = this.device.info.size;
    this.#sizeBytes = size;
    this.#numBlocks = Math.floor(size / this.#bs);
    this.establishUa(Asc.CAPACITY_DATA_HAS_CHANGED);
  }

  /** LOGICAL UNIT RESET and the target resets' effect on this LU (after the transport aborted its tasks). */
  reset(kind: ResetKind): void {
    const powerOn = kind === 'target-cold';
    this.#res.reset(powerOn);
    this.#mode.resetToDefaults();
    this.#updateWriteThrough();
    this.#stopped = false;
    this.establishUa(powerOn ? Asc.POWER_ON_OCCURRED : Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
  }

  /** Wakes tasks of `nexusKey` (or all) that were aborted while waiting on an LBA range. */
  abortTaskSet(nexusKey?: string): void {
    this.#locks.wakeAborted(nexusKey);
  }

  nexusLost(nexus: ItNexus): void {
    this.#res.nexusLost(nexus.key);
    this.#states.delete(nexus.key);
  }

  stats(): LogicalUnitStats {
    const s = this.#stats;
    const errors: Record<string, number> = {};
    s.errors.forEach((n, key) => {
      if (n > 0) errors[SENSE_KEY_NAMES[key] as string] = n;
    });
    return {
      lun: this.lun,
      device: this.device.name,
      readCommands: s.readCommands,
      readBytes: s.readBytes,
      writeCommands: s.writeCommands,
      writeBytes: s.writeBytes,
      flushes: s.flushes,
      unmapCommands: s.unmapCommands,
      unmappedBytes: s.unmappedBytes,
      compareAndWrites: s.compareAndWrites,
      miscompares: s.miscompares,
      reservationConflicts: s.reservationConflicts,
      unitAttentions: s.unitAttentions,
      errors,
    };
  }

  /** LBA range entries held right now (tests). */
  get lockedRanges(): number {
    return this.#locks.size;
  }

  /** Number of logical blocks (as of the last command). */
  get numBlocks(): number {
    return this.#numBlocks;
  }
}
