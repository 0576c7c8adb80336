// Test helpers for the SCSI device server's tests: a fake transport task whose
// data-out buffer is given up front, I_T nexuses, and a block device wrapper that records and delays.
import type { BlockDevice, BlockDeviceInfo, BlockExtent } from '../../src/block/types.ts';
import { BlockError, Errno } from '../../src/internal/errors.ts';
import type { ItNexus, ScsiResult, ScsiTask } from '../../src/scsi/types.ts';
import { TaskAttribute } from '../../src/scsi/types.ts';

/** An I_T nexus the way the iSCSI target would build it. */
export function makeNexus(name = 'iqn.2026-01.test:init1', isid = 0x800000000001, relativeTargetPort = 1): ItNexus {
  const isidHex = isid.toString(16).padStart(12, '0');
  return { key: `${name},i,0x${isidHex}`, initiatorName: name, initiatorPortName: `${name},i,0x${isidHex}`, relativeTargetPort };
}

export interface FakeTaskInit {
  readonly nexus: ItNexus;
  readonly lun?: number;
  readonly cdb: Uint8Array | readonly number[];
  /** Data-out the initiator sends; its length is the expected data transfer length unless `edtl` says otherwise. */
  readonly data?: Uint8Array;
  /** Data-out delivered in pieces of this size (checks the device server takes iovs, not one buffer). */
  readonly pieceSize?: number;
  readonly edtl?: number;
  readonly readBit?: boolean;
  readonly writeBit?: boolean;
  readonly attribute?: TaskAttribute;
}

/** A ScsiTask whose data-out is given up front; a test may abort it or hold its data-out back. */
export interface FakeTask extends ScsiTask {
  aborted: boolean;
  /** Lengths asked for with dataOut(). */
  readonly dataOutCalls: number[];
  /** When set, dataOut waits for this before answering. */
  gate: Promise<void> | undefined;
}

export function fakeTask(init: FakeTaskInit): FakeTask {
  const data = init.data ?? new Uint8Array(0);
  const pieceSize = init.pieceSize ?? 0;
  const writeBit = init.writeBit ?? data.byteLength > 0;
  const task: FakeTask = {
    nexus: init.nexus,
    lun: init.lun ?? 0,
    cdb: Uint8Array.from(init.cdb),
    expectedDataTransferLength: init.edtl ?? data.byteLength,
    writeBit,
    readBit: init.readBit ?? !writeBit,
    attribute: init.attribute ?? TaskAttribute.SIMPLE,
    aborted: false,
    dataOutCalls: [],
    gate: undefined,
    async dataOut(length: number): Promise<readonly Uint8Array[]> {
      task.dataOutCalls.push(length);
      if (task.dataOutCalls.length > 1) throw new BlockError('BLK_ERR_INTERNAL', 'dataOut called twice');
      if (length <= 0 || length > task.expectedDataTransferLength || length > data.byteLength) {
        throw new BlockError('BLK_ERR_INTERNAL', `dataOut(${length}) beyond the ${task.expectedDataTransferLength}-byte buffer`);
      }
      if (task.gate !== undefined) await task.gate;
      if (task.aborted) throw new BlockError('BLK_ERR_ABORTED', 'task aborted', { errno: Errno.EIO });
      const out: Uint8Array[] = [];
      const piece = pieceSize > 0 ? pieceSize : length;
      for (let off = 0; off < length; off += piece) out.push(data.subarray(off, Math.min(length, off + piece)));
      return out;
    },
  };
  return task;
}

/** What a test wants from a result: its fields, with dataIn copied out and the buffer released. */
export interface Outcome {
  readonly status: number;
  readonly sense: Uint8Array | undefined;
  readonly data: Uint8Array;
  readonly transferLength: number;
}

export async function settle(result: Promise<ScsiResult>): Promise<Outcome> {
  const r = await result;
  const data = r.dataIn === undefined ? new Uint8Array(0) : Uint8Array.from(r.dataIn);
  r.release?.();
  return { status: r.status, sense: r.sense, data, transferLength: r.transferLength };
}

export interface RecordedCall {
  readonly op: 'readv' | 'writev' | 'flush' | 'discard' | 'writeZeroes';
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
}

/**
 * Wraps a device: records every call, and can hold calls until released (to interleave commands
 * deterministically). `hold(op)` makes the next calls of that kind wait for `releaseHeld()`.
 */
export class RecordingDevice implements BlockDevice {
  readonly inner: BlockDevice;
  readonly calls: RecordedCall[] = [];
  readonly #holding = new Set<RecordedCall['op']>();
  #held: (() => void)[] = [];
  infoOverride: Partial<BlockDeviceInfo> = {};

  constructor(inner: BlockDevice) {
    this.inner = inner;
    const status = inner.blockStatus?.bind(inner);
    if (status !== undefined) this.blockStatus = status;
  }

  get name(): string {
    return this.inner.name;
  }
  get info(): BlockDeviceInfo {
    return { ...this.inner.info, ...this.infoOverride };
  }

  hold(op: RecordedCall['op']): void {
    this.#holding.add(op);
  }
  unhold(op: RecordedCall['op']): void {
    this.#holding.delete(op);
  }
  /** Number of calls waiting. */
  get heldCount(): number {
    return this.#held.length;
  }
  releaseHeld(): void {
    const h = this.#held;
    this.#held = [];
    for (const r of h) r();
  }

  async #gate(call: RecordedCall): Promise<void> {
    this.calls.push(call);
    if (this.#holding.has(call.op)) await new Promise<void>((r) => this.#held.push(r));
  }

  async readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    await this.#gate({ op: 'readv', offset, length: total(iov), flags: 0 });
    await this.inner.readv(offset, iov);
  }
  async writev(offset: number, iov: readonly Uint8Array[], flags = 0): Promise<void> {
    await this.#gate({ op: 'writev', offset, length: total(iov), flags });
    await this.inner.writev(offset, iov, flags);
  }
  async flush(): Promise<void> {
    await this.#gate({ op: 'flush', offset: 0, length: 0, flags: 0 });
    await this.inner.flush();
  }
  async discard(offset: number, length: number): Promise<void> {
    await this.#gate({ op: 'discard', offset, length, flags: 0 });
    await this.inner.discard(offset, length);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.#gate({ op: 'writeZeroes', offset, length, flags: 0 });
    await this.inner.writeZeroes(offset, length);
  }
  blockStatus?: (offset: number, length: number) => Promise<readonly BlockExtent[]>;
  resize(newSize: number): Promise<void> {
    return this.inner.resize?.(newSize) ?? Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', 'no resize'));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

function total(iov: readonly Uint8Array[]): number {
  let n = 0;
  for (const v of iov) n += v.byteLength;
  return n;
}
