// Linux native AIO (io_setup/io_submit/io_getevents) for O_DIRECT descriptors: what QEMU calls
// aio=native and tapdisk uses. libuv's pool costs every request a thread hand-off (a mutex, a futex
// wake, an eventfd write back); io_submit takes all the requests of a turn in one system call and
// the kernel runs them asynchronously. That matters most where system calls are dear, as in a Xen PV
// dom0, where each one goes through the hypervisor (docs/xen-tcg.md).
//
// One context per process, shared by every disk: requests queued during a turn go out together in a
// microtask. Completions signal an eventfd (IOCB_FLAG_RESFD), read as a stream on libuv's epoll
// (fd-stream.ts; where Node does not allow that, a read of it waits on libuv's pool while anything
// is in flight); when it fires, every finished event is reaped. The kernel keeps the events in a
// ring mapped into our memory at the context's address, so they are read from there, as fio's
// libaio engine does with userspace_reap, with no system call; io_getevents is the fallback for a
// ring whose header we do not recognise. Only O_DIRECT I/O is asynchronous in Linux AIO: buffered
// I/O would block the caller in io_submit, so the page-cache driver (file.ts) keeps the pool.
//
// Layouts and numbers: struct iocb and struct io_event from <linux/aio_abi.h>; system call numbers
// from the kernel's syscall tables (x86_64: arch/x86/entry/syscalls/syscall_64.tbl; arm64 uses
// include/uapi/asm-generic/unistd.h). Both are little-endian, which the typed-array packing assumes.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { fdStream, fdStreamProblem } from './fd-stream.ts';

// Loaded on first use, not at import: every command imports the block drivers, and only commands
// that open a phy: disk need it.
//
// "Unavailable" (the pool serves instead, and says why) means a platform without Linux AIO (not
// Linux, an ABI we have no syscall numbers for, no glibc) or io_setup's own refusal (ENOSYS, EAGAIN
// for aio-max-nr, EPERM, ENOMEM). Anything else while setting up - koffi failing to load a glibc
// that is there, an eventfd refused, an EINVAL - is a bug or a broken install, and is thrown: a
// silent fall back to the pool would cost three to seven times the IOPS with no word said.
type Koffi = typeof import('koffi');
let koffi: Koffi;

/** Outstanding requests per context (io_setup's nr_events); more wait in a queue here. */
export const AIO_DEPTH = 512;

const IOCB_SIZE = 64;
const IOCB_DATA = 0; // u64 aio_data: the slot, returned in the event
const IOCB_OPCODE = 16; // u16 aio_lio_opcode
const IOCB_FILDES = 20; // u32 aio_fildes
const IOCB_BUF = 24; // u64 aio_buf
const IOCB_NBYTES = 32; // u64 aio_nbytes
const IOCB_OFFSET = 40; // s64 aio_offset
const IOCB_FLAGS = 56; // u32 aio_flags
const IOCB_RESFD = 60; // u32 aio_resfd
const IOCB_CMD_PREAD = 0;
const IOCB_CMD_PWRITE = 1;
const IOCB_CMD_PREADV = 7;
const IOCB_CMD_PWRITEV = 8;
const IOCB_FLAG_RESFD = 1;
const IO_EVENT_SIZE = 32; // u64 data, u64 obj, s64 res, s64 res2
const IO_EVENT_RES = 16;
const IOVEC_SIZE = 16; // void *iov_base, size_t iov_len
const EVENTS_PER_REAP = 256;
// struct aio_ring, the header of the completion ring at the address io_setup returns (Linux
// fs/aio.c, where the kernel also honours a head that user space advances:
// user_refill_reqs_available): eight u32 fields, then the io_events.
const RING_NR = 1; // u32 index: events the ring holds
const RING_HEAD = 2;
const RING_TAIL = 3;
const RING_MAGIC = 4;
const RING_INCOMPAT_FEATURES = 6;
const RING_HEADER_LENGTH = 7;
const RING_HEADER_SIZE = 32;
const AIO_RING_MAGIC = 0xa10a10a1;
const EFD_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const TWO_32 = 2 ** 32;

/** The layout packed here by hand, for the test that compiles <linux/aio_abi.h> and compares. */
export const AIO_ABI_LAYOUT: Readonly<Record<string, number>> = Object.freeze({
  iocb_size: IOCB_SIZE,
  aio_data: IOCB_DATA,
  aio_lio_opcode: IOCB_OPCODE,
  aio_fildes: IOCB_FILDES,
  aio_buf: IOCB_BUF,
  aio_nbytes: IOCB_NBYTES,
  aio_offset: IOCB_OFFSET,
  aio_flags: IOCB_FLAGS,
  aio_resfd: IOCB_RESFD,
  io_event_size: IO_EVENT_SIZE,
  io_event_res: IO_EVENT_RES,
  IOCB_CMD_PREAD,
  IOCB_CMD_PWRITE,
  IOCB_CMD_PREADV,
  IOCB_CMD_PWRITEV,
  IOCB_FLAG_RESFD,
});

export const SYSCALLS: Readonly<Record<string, { setup: number; destroy: number; getevents: number; submit: number }>> = {
  x64: { setup: 206, destroy: 207, getevents: 208, submit: 209 },
  arm64: { setup: 0, destroy: 1, getevents: 4, submit: 2 },
};

type Fn = (...args: unknown[]) => number;

/** The system calls a context is built on (tests hand LinuxAio stand-ins to see how failures are taken). */
export interface AioSyscalls {
  readonly nr: { setup: number; destroy: number; getevents: number; submit: number };
  readonly ioSetup: Fn;
  readonly ioDestroy: Fn;
  readonly ioSubmit: Fn;
  readonly ioGetevents: Fn;
  readonly eventfd: Fn;
  /** errno of the last call that failed. */
  readonly errno: () => number;
}

let native: AioSyscalls | undefined;
let nativeProblem: string | undefined;

/**
 * libc's system calls through koffi, or why this platform has no Linux AIO. A glibc that is there
 * but cannot be loaded, or a koffi that cannot, throws (see the top of this file). glibc's
 * syscall() is variadic, but on these ABIs integer arguments travel in the same registers either
 * way and its assembly reads nothing else, so fixed prototypes (cheaper for koffi) are safe.
 */
export function loadAioSyscalls(library = 'libc.so.6'): AioSyscalls | string {
  const nr = SYSCALLS[process.arch];
  if (process.platform !== 'linux' || nr === undefined) return `Linux AIO is not supported on ${process.platform}/${process.arch}`;
  const glibc = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime;
  if (glibc === undefined) return `not a glibc system (Linux AIO is reached through glibc's ${library})`;
  try {
    koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const libc = koffi.load(library);
    return {
      nr,
      ioSetup: libc.func('long syscall(long nr, unsigned long nr_events, uint64_t *ctxp)') as Fn,
      ioDestroy: libc.func('long syscall(long nr, uint64_t ctx)') as Fn,
      ioSubmit: libc.func('long syscall(long nr, uint64_t ctx, long n, uint8_t *iocbpp)') as Fn,
      ioGetevents: libc.func('long syscall(long nr, uint64_t ctx, long min_nr, long n, uint8_t *events, uint8_t *timeout)') as Fn,
      eventfd: libc.func('int eventfd(unsigned int initval, int flags)') as Fn,
      errno: () => koffi.errno(),
    };
  } catch (error) {
    throw new Error(`Linux AIO: glibc ${glibc} is here but koffi cannot reach ${library}: ${(error as Error).message.split('\n')[0]}`, { cause: error });
  }
}

function loadNative(): AioSyscalls | undefined {
  if (native !== undefined || nativeProblem !== undefined) return native;
  const loaded = loadAioSyscalls();
  if (typeof loaded === 'string') nativeProblem = loaded;
  else native = loaded;
  return native;
}

/** io_setup's refusals that mean "no Linux AIO here", by errno, with what each means. */
const IO_SETUP_REFUSALS: Readonly<Record<number, string>> = {
  1: 'EPERM: io_setup is not permitted here (a seccomp filter, say)',
  11: 'EAGAIN: the context would exceed /proc/sys/fs/aio-max-nr',
  12: 'ENOMEM: the kernel has no memory for another context',
  38: 'ENOSYS: this kernel has no Linux AIO',
};

/** Why Linux AIO is unavailable, when `error` is io_setup's own refusal; undefined for any other error. */
export function ioSetupRefusal(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const e = error as NodeJS.ErrnoException;
  if (e.syscall !== 'io_setup' || typeof e.errno !== 'number') return undefined;
  return IO_SETUP_REFUSALS[-e.errno];
}

/** An I/O error as Node reports them (negative errno, code), so callers treat both engines alike. */
export function aioError(errno: number, syscall: string): NodeJS.ErrnoException {
  let code = `errno ${errno}`;
  try {
    code = getSystemErrorName(-errno);
  } catch {
    // not a known errno: keep the number
  }
  const error: NodeJS.ErrnoException = new Error(`${code}: ${syscall} failed`);
  error.errno = -errno;
  error.code = code;
  error.syscall = syscall;
  return error;
}

/**
 * How completions are waited for: 'epoll', the eventfd read as a stream on libuv's epoll (the
 * default where Node allows it); 'pool', a read of it outstanding on libuv's pool.
 */
export type CompletionWait = 'epoll' | 'pool';

interface Slot {
  resolve: (bytes: number) => void;
  reject: (error: Error) => void;
  /** Kept until completion: the kernel writes into (or reads from) these buffers meanwhile. */
  iov: readonly Uint8Array[] | undefined;
}

/** Base addresses of the ArrayBuffers (or SharedArrayBuffers) requests point into. */
const baseAddresses = new WeakMap<ArrayBufferLike, number>();

function addressOf(view: Uint8Array): number {
  let base = baseAddresses.get(view.buffer);
  if (base === undefined) {
    base = Number(koffi.address(new Uint8Array(view.buffer, 0, 0)));
    baseAddresses.set(view.buffer, base);
  }
  return base + view.byteOffset;
}

function putU64(words: Uint32Array, byte: number, value: number): void {
  const i = byte >>> 2;
  words[i] = value % TWO_32;
  words[i + 1] = Math.floor(value / TWO_32);
}

export class LinuxAio {
  readonly #native: AioSyscalls;
  readonly #ctx: bigint;
  readonly #eventFd: number;
  readonly #iocbs = new Uint8Array(AIO_DEPTH * IOCB_SIZE);
  readonly #iocbWords = new Uint32Array(this.#iocbs.buffer);
  readonly #iocbHalves = new Uint16Array(this.#iocbs.buffer);
  /** io_submit's array of iocb pointers, filled for each submission from #queue. */
  readonly #pointers = new Uint8Array(AIO_DEPTH * 8);
  readonly #pointerWords = new Uint32Array(this.#pointers.buffer);
  readonly #iocbBase: number;
  /** struct iovec arrays of the requests being submitted; read by the kernel inside io_submit only. */
  #iovecs = new Uint8Array(64 * IOVEC_SIZE);
  #iovecWords = new Uint32Array(this.#iovecs.buffer);
  readonly #events = new Uint8Array(EVENTS_PER_REAP * IO_EVENT_SIZE);
  readonly #eventWords = new Uint32Array(this.#events.buffer);
  readonly #eventSigned = new Int32Array(this.#events.buffer);
  readonly #zeroTimeout = new Uint8Array(16);
  readonly #counter = new Uint8Array(8);
  readonly #slots: (Slot | undefined)[] = new Array<Slot | undefined>(AIO_DEPTH).fill(undefined);
  readonly #freeSlots: number[] = [];
  /** Slots with an iocb filled in, not yet accepted by io_submit. */
  readonly #queue: number[] = [];
  /** Requests waiting for a free slot (more than AIO_DEPTH outstanding). */
  readonly #backlog: (() => void)[] = [];
  #submitCalls = 0;
  #submitted = 0;
  #geteventsCalls = 0;
  /** The kernel's completion ring (header words, and the same memory as signed words), or undefined: io_getevents. */
  readonly #ring: Uint32Array | undefined;
  readonly #ringSigned: Int32Array | undefined;
  #flushScheduled = false;
  #waiting = false;
  /** The eventfd as a stream on libuv's epoll (fd-stream.ts), or undefined: a read waits on the pool. */
  readonly #signal: net.Socket | undefined;
  /** Whether #signal keeps the event loop alive (only while requests are in flight). */
  #signalRef = false;
  #inflight = 0;
  #closed = false;

  constructor(nat: AioSyscalls, completions: CompletionWait) {
    this.#native = nat;
    const ctx = new BigUint64Array(1);
    if (nat.ioSetup(nat.nr.setup, AIO_DEPTH, ctx) !== 0) throw aioError(nat.errno(), 'io_setup');
    this.#ctx = ctx[0]!;
    this.#eventFd = -1;
    try {
      this.#eventFd = nat.eventfd(0, EFD_CLOEXEC);
      if (this.#eventFd < 0) throw aioError(nat.errno(), 'eventfd');
      this.#iocbBase = addressOf(this.#iocbs);
      const ring = mapCompletionRing(this.#ctx);
      this.#ring = ring;
      this.#ringSigned = ring === undefined ? undefined : new Int32Array(ring.buffer, ring.byteOffset, ring.length);
      if (completions === 'epoll') {
        // 16 bytes: an eventfd read gives 8, and a read shorter than the buffer ends the wake-up
        this.#signal = fdStream(this.#eventFd, new Uint8Array(16), this.#onSignalData);
        this.#signal.unref();
        this.#signal.on('error', (error: NodeJS.ErrnoException) => {
          throw aioError(-(error.errno ?? -5), 'read of the AIO eventfd');
        });
      }
    } catch (error) {
      // Nothing half-made is left behind: the context and the eventfd go with the error.
      if (this.#eventFd >= 0) fs.closeSync(this.#eventFd);
      nat.ioDestroy(nat.nr.destroy, this.#ctx);
      throw error;
    }
    for (let slot = AIO_DEPTH - 1; slot >= 0; slot--) this.#freeSlots.push(slot);
  }

  /** io_submit calls made, and requests they took: their ratio is the batching achieved. */
  get submitCalls(): number {
    return this.#submitCalls;
  }

  get submitted(): number {
    return this.#submitted;
  }

  /** io_getevents calls made: none while completions are read from the ring in our memory. */
  get geteventsCalls(): number {
    return this.#geteventsCalls;
  }

  /** Whether completions are read from the kernel's ring directly (else through io_getevents). */
  get reapsFromRing(): boolean {
    return this.#ring !== undefined;
  }

  /** Requests handed to the kernel (or queued for it) and not yet complete. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Reads into the buffers, in order, from `offset`; resolves with the bytes read (short at end of file). */
  readv(fd: number, offset: number, iov: readonly Uint8Array[]): Promise<number> {
    return this.#start(false, fd, offset, iov);
  }

  /** Writes the buffers' bytes, in order, at `offset`; resolves with the bytes written. */
  writev(fd: number, offset: number, iov: readonly Uint8Array[]): Promise<number> {
    return this.#start(true, fd, offset, iov);
  }

  /** Frees the context; only once nothing is in flight (the owner drains first). */
  close(): void {
    if (this.#closed) return;
    if (this.#inflight !== 0) throw new Error(`LinuxAio.close with ${this.#inflight} requests in flight`);
    this.#closed = true;
    this.#native.ioDestroy(this.#native.nr.destroy, this.#ctx);
    if (this.#signal !== undefined) this.#signal.destroy();
    else fs.closeSync(this.#eventFd);
  }

  #start(write: boolean, fd: number, offset: number, iov: readonly Uint8Array[]): Promise<number> {
    if (this.#closed) return Promise.reject(new Error('LinuxAio is closed'));
    return new Promise<number>((resolve, reject) => {
      const go = (): void => {
        const slot = this.#freeSlots.pop()!;
        this.#slots[slot] = { resolve, reject, iov };
        this.#inflight++;
        this.#fill(slot, write, fd, offset, iov);
        this.#queue.push(slot);
        if (!this.#flushScheduled) {
          this.#flushScheduled = true;
          queueMicrotask(this.#flush);
        }
      };
      if (this.#freeSlots.length > 0) go();
      else this.#backlog.push(go);
    });
  }

  /** Writes the iocb of `slot`; vectored requests get their iovec array at submission (#flush). */
  #fill(slot: number, write: boolean, fd: number, offset: number, iov: readonly Uint8Array[]): void {
    const at = slot * IOCB_SIZE;
    this.#iocbs.fill(0, at, at + IOCB_SIZE);
    const w = this.#iocbWords;
    putU64(w, at + IOCB_DATA, slot);
    this.#iocbHalves[(at + IOCB_OPCODE) >>> 1] = iov.length === 1 ? (write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD) : write ? IOCB_CMD_PWRITEV : IOCB_CMD_PREADV;
    w[(at + IOCB_FILDES) >>> 2] = fd;
    if (iov.length === 1) {
      const b = iov[0]!;
      putU64(w, at + IOCB_BUF, addressOf(b));
      putU64(w, at + IOCB_NBYTES, b.byteLength);
    } else {
      putU64(w, at + IOCB_NBYTES, iov.length); // aio_buf is set when the iovecs are laid out
    }
    putU64(w, at + IOCB_OFFSET, offset);
    w[(at + IOCB_FLAGS) >>> 2] = IOCB_FLAG_RESFD;
    w[(at + IOCB_RESFD) >>> 2] = this.#eventFd;
  }

  /** Lays out the iovec arrays of the queued vectored requests and points their iocbs at them. */
  #layOutIovecs(): void {
    let entries = 0;
    for (const slot of this.#queue) {
      const iov = this.#slots[slot]!.iov!;
      if (iov.length > 1) entries += iov.length;
    }
    if (entries === 0) return;
    if (entries * IOVEC_SIZE > this.#iovecs.byteLength) {
      this.#iovecs = new Uint8Array(Math.max(entries, (this.#iovecs.byteLength / IOVEC_SIZE) * 2) * IOVEC_SIZE);
      this.#iovecWords = new Uint32Array(this.#iovecs.buffer);
    }
    const base = addressOf(this.#iovecs);
    const vw = this.#iovecWords;
    let at = 0;
    for (const slot of this.#queue) {
      const iov = this.#slots[slot]!.iov!;
      if (iov.length <= 1) continue;
      putU64(this.#iocbWords, slot * IOCB_SIZE + IOCB_BUF, base + at);
      for (let i = 0; i < iov.length; i++, at += IOVEC_SIZE) {
        putU64(vw, at, addressOf(iov[i]!));
        putU64(vw, at + 8, iov[i]!.byteLength);
      }
    }
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    const nat = this.#native;
    while (this.#queue.length > 0) {
      this.#layOutIovecs();
      const n = this.#queue.length;
      for (let i = 0; i < n; i++) putU64(this.#pointerWords, i * 8, this.#iocbBase + this.#queue[i]! * IOCB_SIZE);
      const submitted = nat.ioSubmit(nat.nr.submit, this.#ctx, n, this.#pointers);
      this.#submitCalls++;
      if (submitted > 0) {
        this.#submitted += submitted;
        this.#queue.splice(0, submitted);
        continue;
      }
      const errno = submitted === 0 ? EAGAIN : nat.errno();
      // The kernel is out of room: what is queued goes out when completions make some.
      if (errno === EAGAIN && this.#inflight > this.#queue.length) break;
      // The first queued request is refused (a bad descriptor, say): it fails alone.
      const slot = this.#queue.shift()!;
      this.#finish(slot, -errno, 'io_submit');
    }
    this.#wait();
  };

  /**
   * Makes sure completions will be seen while requests are in flight: the eventfd's stream keeps the
   * event loop alive, or one read of it is outstanding on the pool.
   */
  #wait(): void {
    const signal = this.#signal;
    if (signal !== undefined) {
      const busy = this.#inflight > this.#queue.length;
      if (busy === this.#signalRef) return;
      this.#signalRef = busy;
      if (busy) signal.ref();
      else signal.unref();
      return;
    }
    if (this.#waiting || this.#inflight === this.#queue.length) return;
    this.#waiting = true;
    fs.read(this.#eventFd, this.#counter, 0, 8, -1, this.#onSignal);
  }

  readonly #onSignal = (error: NodeJS.ErrnoException | null): void => {
    this.#waiting = false;
    if (error !== null && error.code !== 'EINTR' && error.code !== 'EAGAIN') {
      // The eventfd is ours alone; if reading it fails, no completion can ever be seen again.
      throw aioError(-(error.errno ?? -5), 'read of the AIO eventfd');
    }
    this.#reap();
    if (this.#queue.length > 0) this.#flush();
    else this.#wait();
  };

  readonly #onSignalData = (): void => {
    this.#reap();
    if (this.#queue.length > 0) this.#flush();
    else this.#wait();
  };

  /** Finishes every completed request the kernel has for us. */
  #reap(): void {
    if (this.#ring !== undefined) {
      this.#reapRing(this.#ring, this.#ringSigned!);
      return;
    }
    const nat = this.#native;
    for (;;) {
      this.#geteventsCalls++;
      const got = nat.ioGetevents(nat.nr.getevents, this.#ctx, 0, EVENTS_PER_REAP, this.#events, this.#zeroTimeout);
      if (got < 0) {
        const errno = nat.errno();
        if (errno === 4 /* EINTR */) continue;
        throw aioError(errno, 'io_getevents');
      }
      for (let i = 0; i < got; i++) {
        const at = i * IO_EVENT_SIZE;
        const slot = this.#eventWords[at >>> 2]!;
        // s64 res: a byte count or -errno, both far inside 2^53
        const res = this.#eventSigned[(at + IO_EVENT_RES + 4) >>> 2]! * TWO_32 + this.#eventWords[(at + IO_EVENT_RES) >>> 2]!;
        this.#finish(slot, res, 'aio');
      }
      if (got < EVENTS_PER_REAP) return;
    }
  }

  /**
   * Reads the events between head and tail of the kernel's ring, then moves head past them. The
   * kernel writes an event before it publishes the new tail; the atomic load of tail keeps our reads
   * of the events after it, and the atomic store of head keeps them before the slots are handed back.
   */
  #reapRing(ring: Uint32Array, signed: Int32Array): void {
    const nr = ring[RING_NR]!;
    let head = Atomics.load(ring, RING_HEAD);
    const tail = Atomics.load(ring, RING_TAIL);
    if (head >= nr || tail >= nr) throw new Error(`Linux AIO completion ring out of range (head ${head}, tail ${tail}, size ${nr})`);
    while (head !== tail) {
      const at = (RING_HEADER_SIZE + head * IO_EVENT_SIZE) >>> 2;
      const slot = ring[at]!;
      const res = signed[at + (IO_EVENT_RES >>> 2) + 1]! * TWO_32 + ring[at + (IO_EVENT_RES >>> 2)]!;
      head = head + 1 === nr ? 0 : head + 1;
      Atomics.store(ring, RING_HEAD, head); // before #finish: a resolved request may submit more
      this.#finish(slot, res, 'aio');
    }
  }

  #finish(slot: number, res: number, syscall: string): void {
    const state = this.#slots[slot];
    if (state === undefined) return; // not ours: never expected, and never worth a crash
    this.#slots[slot] = undefined;
    this.#inflight--;
    this.#freeSlots.push(slot);
    if (res >= 0) state.resolve(res);
    else state.reject(aioError(-res, syscall));
    const next = this.#backlog.shift();
    if (next !== undefined) next();
  }
}

/**
 * A view of the completion ring at `ctx`, or undefined when its header is not the one we know (then
 * io_getevents reaps). The address is the kernel's own mapping: a view that fails is a bug, thrown.
 */
function mapCompletionRing(ctx: bigint): Uint32Array | undefined {
  const header = new Uint32Array(koffi.view(ctx, RING_HEADER_SIZE));
  if (header[RING_MAGIC] !== AIO_RING_MAGIC || header[RING_INCOMPAT_FEATURES] !== 0 || header[RING_HEADER_LENGTH] !== RING_HEADER_SIZE) return undefined;
  const nr = header[RING_NR]!;
  return new Uint32Array(koffi.view(ctx, RING_HEADER_SIZE + nr * IO_EVENT_SIZE));
}

let shared: LinuxAio | undefined;
let sharedProblem: string | undefined;

/** Why Linux AIO cannot be used here, or undefined when it can (sets up the shared context). */
export function linuxAioProblem(): string | undefined {
  sharedLinuxAio();
  return sharedProblem;
}

/**
 * A context on `syscalls`, or why Linux AIO is unavailable: only io_setup's own refusal counts as
 * that. Every other error (eventfd refused, the ring unreadable, a koffi failure) is thrown.
 */
export function setUpLinuxAio(syscalls: AioSyscalls, completions: CompletionWait): LinuxAio | string {
  try {
    return new LinuxAio(syscalls, completions);
  } catch (error) {
    const refusal = ioSetupRefusal(error);
    if (refusal === undefined) throw error;
    return `Linux AIO is unavailable: io_setup: ${refusal}`;
  }
}

/**
 * The process's AIO context, set up on first use; undefined where Linux AIO is unavailable (the
 * reason from linuxAioProblem). Throws on any other failure, and tries again on the next call.
 */
export function sharedLinuxAio(): LinuxAio | undefined {
  if (shared !== undefined || sharedProblem !== undefined) return shared;
  const nat = loadNative();
  if (nat === undefined) {
    sharedProblem = nativeProblem;
    return undefined;
  }
  const made = setUpLinuxAio(nat, fdStreamProblem() === undefined ? 'epoll' : 'pool');
  if (typeof made === 'string') sharedProblem = made;
  else shared = made;
  return shared;
}

/** A context of its own (tests use it for the 'pool' wait); the caller closes it. Throws where Linux AIO is unavailable. */
export function openLinuxAio(completions: CompletionWait): LinuxAio {
  const nat = loadNative();
  if (nat === undefined) throw new Error(nativeProblem);
  return new LinuxAio(nat, completions);
}
