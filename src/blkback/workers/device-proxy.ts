// A store a data-plane worker cannot open for itself (no BlockDevice.share(): an iscsi:// client, a
// store some code of the main thread wraps) is reached through the main thread: the worker's
// ProxyDevice posts each call, the main thread's DeviceProxies runs it on the real store and
// answers. The ring itself (its grants, its event channel, validation, the data path) stays on the
// worker; only the store call crosses, one message each way per merged read or write.
//
// No bytes are copied when the buffers are shared memory, as on the simulator (guest pages and
// bounce pages are views of shared WebAssembly memories): the main thread views the same memory.
// Buffers that are not (mapped grant pages on real Xen) go through a shared copy made here.
import type { BlockDevice, BlockDeviceInfo } from '../../block/types.ts';
import { BlockError } from '../../internal/errors.ts';
import type { FromWorker, IoOp, WireBuffer, WireError } from './protocol.ts';

interface Pending {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
  /** A read's copies, to deliver into the caller's buffers once answered. */
  readonly copies: readonly { readonly from: Uint8Array; readonly to: Uint8Array }[] | null;
}

export function wireError(err: unknown): WireError {
  if (err instanceof BlockError) return { message: err.message, code: err.code, errno: err.errno };
  return { message: err instanceof Error ? err.message : String(err) };
}

export function fromWireError(e: WireError): Error {
  return e.code === undefined ? new Error(e.message) : new BlockError(e.code, e.message, e.errno === undefined ? {} : { errno: e.errno });
}

/** The worker's side: every request is posted to the main thread. */
export class ProxyRequests {
  readonly #post: (message: FromWorker) => void;
  readonly #pending = new Map<number, Pending>();
  #next = 1;

  constructor(post: (message: FromWorker) => void) {
    this.#post = post;
  }

  /** The main thread answered request `req`. */
  done(req: number, error: WireError | undefined): void {
    const p = this.#pending.get(req);
    if (p === undefined) return;
    this.#pending.delete(req);
    if (error !== undefined) {
      p.reject(fromWireError(error));
      return;
    }
    if (p.copies !== null) for (const c of p.copies) c.to.set(c.from);
    p.resolve();
  }

  /** Every request still waiting fails (the main thread is going away). */
  failAll(why: string): void {
    for (const p of this.#pending.values()) p.reject(new BlockError('BLK_ERR_IO', why));
    this.#pending.clear();
  }

  device(dev: number, name: string, info: BlockDeviceInfo): ProxyDevice {
    return new ProxyDevice(this, dev, name, info);
  }

  call(dev: number, op: IoOp, offset: number, length: number, iov: readonly Uint8Array[] | null, flags: number): Promise<void> {
    const req = this.#next++;
    const wire: WireBuffer[] = [];
    let copies: { from: Uint8Array; to: Uint8Array }[] | null = null;
    if (iov !== null) {
      for (const b of iov) {
        if (b.buffer instanceof SharedArrayBuffer) {
          wire.push({ buffer: b.buffer, offset: b.byteOffset, length: b.byteLength });
          continue;
        }
        const copy = new Uint8Array(new SharedArrayBuffer(b.byteLength));
        if (op === 'writev') copy.set(b);
        else (copies ??= []).push({ from: copy, to: b });
        wire.push({ buffer: copy.buffer as SharedArrayBuffer, offset: 0, length: b.byteLength });
      }
    }
    return new Promise<void>((resolve, reject) => {
      this.#pending.set(req, { resolve, reject, copies });
      this.#post({ t: 'io', req, dev, op, offset, length, iov: wire, flags });
    });
  }
}

export class ProxyDevice implements BlockDevice {
  readonly name: string;
  #info: BlockDeviceInfo;
  readonly #requests: ProxyRequests;
  readonly #dev: number;

  constructor(requests: ProxyRequests, dev: number, name: string, info: BlockDeviceInfo) {
    this.#requests = requests;
    this.#dev = dev;
    this.name = name;
    this.#info = info;
  }

  get info(): BlockDeviceInfo {
    return this.#info;
  }

  /** The main thread's store changed (resize). */
  update(info: BlockDeviceInfo): void {
    this.#info = info;
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return this.#requests.call(this.#dev, 'readv', offset, 0, iov, 0);
  }

  writev(offset: number, iov: readonly Uint8Array[], flags = 0): Promise<void> {
    return this.#requests.call(this.#dev, 'writev', offset, 0, iov, flags);
  }

  flush(): Promise<void> {
    return this.#requests.call(this.#dev, 'flush', 0, 0, null, 0);
  }

  discard(offset: number, length: number): Promise<void> {
    return this.#requests.call(this.#dev, 'discard', offset, length, null, 0);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#requests.call(this.#dev, 'writeZeroes', offset, length, null, 0);
  }

  async close(): Promise<void> {
    // The store is the main thread's to close.
  }
}

/** The main thread's side: the stores its workers reach through it. */
export class DeviceProxies {
  readonly #devices = new Map<number, BlockDevice>();
  #next = 1;

  /** Serves `device` to workers; returns its number. */
  add(device: BlockDevice): number {
    const dev = this.#next++;
    this.#devices.set(dev, device);
    return dev;
  }

  remove(dev: number): void {
    this.#devices.delete(dev);
  }

  /** Runs a worker's request; `answer` gets undefined or the error. */
  run(m: Extract<FromWorker, { t: 'io' }>, answer: (error: WireError | undefined) => void): void {
    const device = this.#devices.get(m.dev);
    if (device === undefined) {
      answer({ message: `store ${m.dev} is no longer served`, code: 'BLK_ERR_IO' });
      return;
    }
    let io: Promise<void>;
    try {
      const iov = m.iov.map((b) => new Uint8Array(b.buffer, b.offset, b.length));
      switch (m.op) {
        case 'readv':
          io = device.readv(m.offset, iov);
          break;
        case 'writev':
          io = device.writev(m.offset, iov, m.flags);
          break;
        case 'flush':
          io = device.flush();
          break;
        case 'discard':
          io = device.discard(m.offset, m.length);
          break;
        case 'writeZeroes':
          io = device.writeZeroes(m.offset, m.length);
          break;
      }
    } catch (err) {
      io = Promise.reject(err);
    }
    io.then(
      () => answer(undefined),
      (err: unknown) => answer(wireError(err)),
    );
  }
}
