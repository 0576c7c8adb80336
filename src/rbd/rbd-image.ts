// A Ceph RBD image as a BlockDevice (src/block/types.ts), for `rbd:` store specs, through librbd.
//
// Completions reach the event loop without JavaScript ever running on librbd's threads: librbd
// writes a byte into a pipe for each finished request (rbd_set_image_notification, EVENT_TYPE_PIPE),
// the pipe's read end is a stream on libuv's epoll (fd-stream.ts), and when it is readable the
// finished completions are collected with rbd_poll_io_events. Measured here (docs/rbd.md): koffi
// callbacks from librbd's threads were slower and deadlocked a synchronous rbd_close with I/O in
// flight; an eventfd needs a read parked on libuv's pool.
//
//   JS thread                        librbd threads
//   rbd_aio_read(c) ─────────────►   ... OSD answers ... queue c, write(pipe, 1 byte)
//   pipe readable ◄──────────────────────────────────────────────┘
//   rbd_poll_io_events → [c...] → get_return_value, release, settle the promise
//
// Buffers are handed to librbd by address, in place (guest memory included): the interface keeps
// them stable until the promise settles, and the promise settles only after librbd's completion.
// Writes are copied by librbd anyway unless rbd_disable_zero_copy_writes is turned off.
//
// FUA: librbd has no per-write durability flag it honours in every cache mode, so a FUA write is a
// write followed by rbd_aio_flush (what QEMU's rbd driver does for its flush-after-write too).
//
// Size: another client may resize the image (`rbd resize`); librbd learns it from the header's
// watch, and a 1 s poll of rbd_get_size here passes it to listeners (blkback then tells the guest).
import type net from 'node:net';
import type { BlockDevice, BlockDeviceInfo } from '../block/types.ts';
import { WRITE_FUA } from '../block/types.ts';
import type { RbdStoreSpec } from '../config/rbd-spec.ts';
import { rbdImageName } from '../config/rbd-spec.ts';
import { fdStream } from '../internal/fd-stream.ts';
import { BlockError, Errno, UsageError } from '../internal/errors.ts';
import { EVENT_TYPE_PIPE, loadLibrbd, O_CLOEXEC, O_NONBLOCK, onPool, RBD_IMAGE_INFO_OBJ_SIZE, RBD_IMAGE_INFO_SIZE } from './librbd.ts';
import type { Librbd } from './librbd.ts';
import { ioError, openError } from './rbd-errors.ts';
import type { OpenContext } from './rbd-errors.ts';

/** Seconds to wait for the monitors while connecting, unless the spec or conf sets it. */
export const DEFAULT_CONNECT_TIMEOUT_S = 10;
/** librbd's default rbd_discard_granularity_bytes: smaller discards may be skipped, not zeroed. */
const DISCARD_GRANULARITY = 64 * 1024;
const SIZE_POLL_MS = 1000;
const EVENTS_PER_POLL = 256;
const IOVEC_SIZE = 16;
const TWO_32 = 2 ** 32;

export interface OpenRbdOptions {
  /** For messages: the spec as the user wrote it. */
  readonly name: string;
  readonly readOnly?: boolean;
  /** How often to look for a size set by another client (ms; 0: never). */
  readonly sizePollMs?: number;
}

interface Pending {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  readonly what: string;
  /** Memory librbd reads until the completion (a read's iovec array). */
  readonly keep: Uint8Array | undefined;
}

/** Opens `spec`'s image; the error for any failed step is one line naming the spec. */
export async function openRbdDevice(spec: RbdStoreSpec, opts: OpenRbdOptions): Promise<RbdImageDevice> {
  const lib = loadLibrbd();
  if (typeof lib === 'string') throw new UsageError(`${opts.name}: ${lib}`, { errno: Errno.EOPNOTSUPP });
  const ctx: OpenContext = { image: rbdImageName(spec), pool: spec.pool, user: spec.id ?? 'admin', conf: spec.conf };
  const fail = (step: Parameters<typeof openError>[0], code: number, extra: Partial<OpenContext> = {}): never => {
    const e = openError(step, code, { ...ctx, ...extra });
    throw new UsageError(`${opts.name}: ${e.message}`, { errno: e.errno });
  };
  const out = new BigUint64Array(1);
  let rc = lib.radosCreate(out, spec.id ?? null);
  if (rc < 0) fail('connect', rc);
  const cluster = Number(out[0]);
  let ioctx = 0;
  try {
    // With no conf named, a missing /etc/ceph/ceph.conf is no error yet (mon_host may come from the spec), as in QEMU.
    rc = lib.radosConfReadFile(cluster, spec.conf ?? null);
    if (rc < 0 && spec.conf !== undefined) fail('conf', rc);
    const given = new Set(spec.options.map(([k]) => k));
    for (const key of ['client_mount_timeout', 'rados_mon_op_timeout']) {
      if (!given.has(key)) lib.radosConfSet(cluster, key, String(DEFAULT_CONNECT_TIMEOUT_S));
    }
    for (const [key, value] of spec.options) {
      rc = lib.radosConfSet(cluster, key, value);
      if (rc < 0) fail('conf-set', rc, { detail: `${key}=${value}` });
    }
    const timeout = Number(spec.options.find(([k]) => k === 'client_mount_timeout')?.[1] ?? DEFAULT_CONNECT_TIMEOUT_S);
    rc = await onPool(lib.radosConnect, cluster);
    if (rc < 0) fail('connect', rc, { timeoutS: timeout });
    rc = await onPool(lib.radosIoctxCreate, cluster, spec.pool, out);
    if (rc < 0) fail('pool', rc);
    ioctx = Number(out[0]);
    if (spec.namespace !== '') lib.radosIoctxSetNamespace(ioctx, spec.namespace);
    const readOnly = opts.readOnly === true || spec.snapshot !== undefined;
    rc = await onPool(readOnly ? lib.rbdOpenReadOnly : lib.rbdOpen, ioctx, spec.image, out, spec.snapshot ?? null);
    if (rc === -2 && spec.snapshot !== undefined) {
      // ENOENT for the image or for its snapshot: tell which.
      const probe = new BigUint64Array(1);
      if ((await onPool(lib.rbdOpenReadOnly, ioctx, spec.image, probe, null)) === 0) {
        await onPool(lib.rbdClose, Number(probe[0]));
        fail('snapshot', rc, { detail: spec.snapshot });
      }
    }
    if (rc < 0) fail('image', rc);
    const image = Number(out[0]);
    try {
      const stat = new Uint8Array(RBD_IMAGE_INFO_SIZE);
      rc = await onPool(lib.rbdStat, image, stat, RBD_IMAGE_INFO_SIZE);
      if (rc < 0) fail('stat', rc);
      const view = new DataView(stat.buffer);
      const LE = true;
      const size = Number(view.getBigUint64(0, LE));
      const objectSize = Number(view.getBigUint64(RBD_IMAGE_INFO_OBJ_SIZE, LE));
      return new RbdImageDevice(lib, { cluster, ioctx, image }, { name: opts.name, readOnly, size, objectSize, sizePollMs: opts.sizePollMs ?? SIZE_POLL_MS });
    } catch (err) {
      await onPool(lib.rbdClose, image);
      throw err;
    }
  } catch (err) {
    if (ioctx !== 0) lib.radosIoctxDestroy(ioctx);
    await onPool(lib.radosShutdown, cluster);
    throw err;
  }
}

function describe(size: number, readOnly: boolean): BlockDeviceInfo {
  return {
    size: size - (size % 512),
    logicalBlockSize: 512,
    physicalBlockSize: 512,
    readOnly,
    volatileCache: true, // rbd_cache (on by default) may hold writes until a flush
    canFlush: true,
    canFua: true,
    canDiscard: !readOnly,
    canWriteZeroes: !readOnly,
    discardGranularity: readOnly ? 0 : DISCARD_GRANULARITY,
    bufferAlignment: 1,
    discardZeroes: false, // librbd skips the parts of a discard smaller than its granularity
  };
}

export class RbdImageDevice implements BlockDevice {
  readonly name: string;
  /** Object size of the image (bytes), for reports. */
  readonly objectSize: number;
  readonly #lib: Librbd;
  readonly #cluster: number;
  readonly #ioctx: number;
  readonly #image: number;
  #info: BlockDeviceInfo;
  readonly #pending = new Map<number, Pending>();
  readonly #events = new Uint8Array(EVENTS_PER_POLL * 8);
  readonly #eventWords = new Uint32Array(this.#events.buffer);
  readonly #completion = new BigUint64Array(1);
  #iovecs = new Uint8Array(16 * IOVEC_SIZE);
  #iovecWords = new Uint32Array(this.#iovecs.buffer);
  readonly #pipe: net.Socket;
  readonly #writeFd: number;
  #ref = false;
  #closed = false;
  /** close() waiting for the requests in flight. */
  readonly #idleWaiters: (() => void)[] = [];
  readonly #sizeListeners = new Set<(size: number) => void>();
  #sizeTimer: NodeJS.Timeout | undefined;
  #sizePolling = false;
  /** Base addresses of the ArrayBuffers requests point into (koffi.address of an empty view). */
  readonly #bases = new WeakMap<ArrayBufferLike, number>();

  constructor(
    lib: Librbd,
    handles: { cluster: number; ioctx: number; image: number },
    o: { name: string; readOnly: boolean; size: number; objectSize: number; sizePollMs: number },
  ) {
    this.#lib = lib;
    this.#cluster = handles.cluster;
    this.#ioctx = handles.ioctx;
    this.#image = handles.image;
    this.name = o.name;
    this.objectSize = o.objectSize;
    this.#info = describe(o.size, o.readOnly);
    const fds = new Int32Array(2);
    if (lib.pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) throw new BlockError('BLK_ERR_IO', `${o.name}: pipe2 failed: errno ${lib.koffi.errno()}`);
    this.#writeFd = fds[1]!;
    const rc = lib.rbdSetImageNotification(this.#image, this.#writeFd, EVENT_TYPE_PIPE);
    if (rc < 0) {
      lib.close(fds[0]!);
      lib.close(fds[1]!);
      throw ioError('rbd_set_image_notification', rc, o.name);
    }
    this.#pipe = fdStream(fds[0]!, new Uint8Array(4096), () => this.#reap());
    this.#pipe.on('error', () => undefined); // reads of a pipe do not fail; close() tears it down
    this.#pipe.unref();
    if (o.sizePollMs > 0) {
      this.#sizeTimer = setInterval(() => this.#pollSize(), o.sizePollMs);
      this.#sizeTimer.unref();
    }
  }

  get info(): BlockDeviceInfo {
    return this.#info;
  }

  /** Calls `listener` with the new size whenever the image's size changes (resize() or another client). */
  onSizeChange(listener: (size: number) => void): () => void {
    this.#sizeListeners.add(listener);
    return () => this.#sizeListeners.delete(listener);
  }

  #address(view: Uint8Array): number {
    let base = this.#bases.get(view.buffer);
    if (base === undefined) {
      base = Number(this.#lib.koffi.address(new Uint8Array(view.buffer, 0, 0)));
      this.#bases.set(view.buffer, base);
    }
    return base + view.byteOffset;
  }

  /** A completion whose settling resolves or rejects the returned promise; `submit` starts the request with it. */
  #start(what: string, submit: (c: number) => number, keep?: Uint8Array): Promise<void> {
    if (this.#closed) return Promise.reject(new BlockError('BLK_ERR_STATE', `${this.name}: closed`));
    const lib = this.#lib;
    if (lib.rbdAioCreateCompletion(0, 0, this.#completion) < 0) return Promise.reject(ioError(what, -Errno.ENOMEM, this.name));
    const c = Number(this.#completion[0]);
    return new Promise<void>((resolve, reject) => {
      this.#pending.set(c, { resolve, reject, what, keep });
      if (!this.#ref) {
        this.#ref = true;
        this.#pipe.ref();
      }
      const rc = submit(c);
      if (rc < 0) {
        this.#pending.delete(c);
        lib.rbdAioRelease(c);
        this.#unrefIfIdle();
        reject(ioError(what, rc, this.name));
      }
    });
  }

  #unrefIfIdle(): void {
    if (this.#pending.size !== 0) return;
    if (this.#ref) {
      this.#ref = false;
      this.#pipe.unref();
    }
    for (const w of this.#idleWaiters.splice(0)) w();
  }

  #reap(): void {
    const lib = this.#lib;
    for (;;) {
      const n = lib.rbdPollIoEvents(this.#image, this.#events, EVENTS_PER_POLL);
      for (let i = 0; i < n; i++) {
        const c = this.#eventWords[2 * i]! + this.#eventWords[2 * i + 1]! * TWO_32;
        const rc = lib.rbdAioGetReturnValue(c);
        lib.rbdAioRelease(c);
        const p = this.#pending.get(c);
        if (p === undefined) continue;
        this.#pending.delete(c);
        if (rc < 0) p.reject(ioError(p.what, rc, this.name));
        else p.resolve();
      }
      if (n < EVENTS_PER_POLL) break;
    }
    this.#unrefIfIdle();
  }

  /** struct iovec[] for `iov` in a scratch buffer (writes: librbd reads it during the submitting call only). */
  #iovecFor(iov: readonly Uint8Array[]): Uint8Array {
    if (iov.length * IOVEC_SIZE > this.#iovecs.length) {
      this.#iovecs = new Uint8Array(iov.length * 2 * IOVEC_SIZE);
      this.#iovecWords = new Uint32Array(this.#iovecs.buffer);
    }
    const w = this.#iovecWords;
    for (let i = 0; i < iov.length; i++) {
      const a = this.#address(iov[i]!);
      const len = iov[i]!.byteLength;
      w[4 * i] = a % TWO_32;
      w[4 * i + 1] = Math.floor(a / TWO_32);
      w[4 * i + 2] = len;
      w[4 * i + 3] = 0;
    }
    return this.#iovecs;
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const lib = this.#lib;
    if (iov.length === 0) return Promise.resolve();
    if (iov.length === 1) {
      const b = iov[0]!;
      return this.#start('read', (c) => lib.rbdAioRead(this.#image, offset, b.byteLength, this.#address(b), c));
    }
    // librbd keeps the iovec array's address and reads it again when the data arrives
    // (ReadResult::Vector): each read has its own, kept until its completion.
    const iovecs = this.#iovecFor(iov).slice(0, iov.length * IOVEC_SIZE);
    return this.#start('read', (c) => lib.rbdAioReadv(this.#image, iovecs, iov.length, offset, c), iovecs);
  }

  writev(offset: number, iov: readonly Uint8Array[], flags = 0): Promise<void> {
    if (this.#info.readOnly) return Promise.reject(this.#readOnlyError());
    const lib = this.#lib;
    if (iov.length === 0) return Promise.resolve();
    const write =
      iov.length === 1
        ? this.#start('write', (c) => lib.rbdAioWrite(this.#image, offset, iov[0]!.byteLength, this.#address(iov[0]!), c))
        : this.#start('write', (c) => lib.rbdAioWritev(this.#image, this.#iovecFor(iov), iov.length, offset, c));
    return (flags & WRITE_FUA) === 0 ? write : write.then(() => this.flush());
  }

  flush(): Promise<void> {
    return this.#start('flush', (c) => this.#lib.rbdAioFlush(this.#image, c));
  }

  discard(offset: number, length: number): Promise<void> {
    if (this.#info.readOnly) return Promise.reject(this.#readOnlyError());
    return this.#start('discard', (c) => this.#lib.rbdAioDiscard(this.#image, offset, length, c));
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    if (this.#info.readOnly) return Promise.reject(this.#readOnlyError());
    return this.#start('write-zeroes', (c) => this.#lib.rbdAioWriteZeroes(this.#image, offset, length, c, 0, 0));
  }

  async resize(newSize: number): Promise<void> {
    if (this.#info.readOnly) throw this.#readOnlyError();
    const rc = await onPool(this.#lib.rbdResize, this.#image, newSize);
    if (rc < 0) throw ioError(`resize to ${newSize} bytes`, rc, this.name);
    this.#sizeIs(newSize);
  }

  #readOnlyError(): BlockError {
    return new BlockError('BLK_ERR_READ_ONLY', `${this.name}: read-only`, { errno: Errno.EROFS });
  }

  #sizeIs(size: number): void {
    if (this.#closed || size === this.#info.size) return;
    this.#info = { ...this.#info, size: size - (size % 512) };
    for (const l of this.#sizeListeners) l(this.#info.size);
  }

  #pollSize(): void {
    if (this.#sizePolling || this.#closed) return;
    this.#sizePolling = true;
    const out = new BigUint64Array(1);
    onPool(this.#lib.rbdGetSize, this.#image, out)
      .then((rc) => {
        if (rc === 0) this.#sizeIs(Number(out[0]));
      })
      .catch(() => undefined)
      .finally(() => {
        this.#sizePolling = false;
      });
  }

  /** Waits for requests in flight, closes the image (before its notification pipe), then the cluster handle. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#sizeTimer !== undefined) clearInterval(this.#sizeTimer);
    if (this.#pending.size > 0) await new Promise<void>((r) => this.#idleWaiters.push(r));
    while (this.#sizePolling) await new Promise((r) => setTimeout(r, 5));
    await onPool(this.#lib.rbdClose, this.#image);
    this.#pipe.destroy();
    this.#lib.close(this.#writeFd);
    this.#lib.radosIoctxDestroy(this.#ioctx);
    await onPool(this.#lib.radosShutdown, this.#cluster);
  }
}
