// Where a connection's socket reads land: slabs of our own memory, filled front to back and reused
// once nothing points into them any more.
//
// A plain 'data' listener gets a fresh 64 KiB buffer per read; at 64 KiB writes that churn of
// external memory sets off a major garbage collection every few dozen megabytes (a quarter of the
// server's CPU when measured). A single reused read buffer would force a copy of every write's
// data out of it before the store sees it. Slabs do neither: each read goes into the free tail of
// the current slab, write payloads reach the store as views of it (zero copy), and a slab is
// recycled only when no request still in flight holds a view of it and the request reader holds
// none of its bytes.
//
//   slab:  [ read 1 | read 2 | read 3 |........ free tail: the next read ........]
//                ^ a write's payload view (held until the write completes)
import net from 'node:net';

/**
 * Free slabs a connection keeps for reuse. Writes in flight hold theirs (256 writes of 64 KiB: 16
 * slabs), so fewer would mean a fresh mmap (and its page faults) for most slabs.
 */
const MAX_FREE_SLABS = 16;

interface Slab {
  readonly memory: Buffer;
  /** Views handed to requests still in flight. */
  refs: number;
}

export class ReadSlabs {
  readonly #slabSize: number;
  readonly #minRead: number;
  /** Whether the request reader still holds unconsumed bytes in this memory. */
  readonly #queued: (memory: ArrayBufferLike) => boolean;
  readonly #byMemory = new Map<ArrayBufferLike, Slab>();
  #retired: Slab[] = [];
  readonly #free: Slab[] = [];
  #current: Slab;
  #used = 0;

  constructor(queued: (memory: ArrayBufferLike) => boolean, slabSize = 1024 * 1024, minRead = 64 * 1024) {
    this.#queued = queued;
    this.#slabSize = slabSize;
    this.#minRead = minRead;
    this.#current = this.#newSlab();
  }

  /** Slabs allocated so far (for tests: reuse keeps this small). */
  get allocated(): number {
    return this.#byMemory.size;
  }

  /** The memory the next read goes into. */
  nextBuffer(): Buffer {
    if (this.#slabSize - this.#used < this.#minRead) {
      this.#retired.push(this.#current);
      this.#recycle();
      this.#current = this.#free.pop() ?? this.#newSlab();
      this.#used = 0;
    }
    return this.#current.memory.subarray(this.#used);
  }

  /** A read put `n` bytes at the start of the buffer nextBuffer() gave: they are now in use. */
  received(n: number): void {
    this.#used += n;
  }

  /** Keeps the slabs under these views from reuse until release(). */
  hold(views: readonly Uint8Array[]): void {
    for (const view of views) {
      const slab = this.#byMemory.get(view.buffer);
      if (slab !== undefined) slab.refs++;
    }
  }

  release(views: readonly Uint8Array[]): void {
    for (const view of views) {
      const slab = this.#byMemory.get(view.buffer);
      if (slab !== undefined) slab.refs--;
    }
  }

  #recycle(): void {
    const still: Slab[] = [];
    for (const slab of this.#retired) {
      if (slab.refs > 0 || this.#queued(slab.memory.buffer)) still.push(slab);
      else if (this.#free.length < MAX_FREE_SLABS) this.#free.push(slab);
      else this.#byMemory.delete(slab.memory.buffer);
    }
    this.#retired = still;
  }

  #newSlab(): Slab {
    const slab = { memory: Buffer.allocUnsafeSlow(this.#slabSize), refs: 0 };
    this.#byMemory.set(slab.memory.buffer, slab);
    return slab;
  }
}

/**
 * The accepted socket again, reading into `slabs` and handing each read to `deliver`. Node offers
 * onread only when a socket is made, so the accepted socket's libuv handle (not read from yet: this
 * runs in the same turn as the accept) moves into a new net.Socket that has it. Where the handle is
 * not reachable the socket is returned as it is, for the caller to read the usual way (undefined).
 */
export function readIntoSlabs(accepted: net.Socket, slabs: ReadSlabs, deliver: (chunk: Buffer) => void): net.Socket | undefined {
  const holder = accepted as unknown as { _handle: unknown };
  const handle = holder._handle;
  if (handle === null || handle === undefined) return undefined;
  accepted.pause();
  holder._handle = null;
  accepted.destroy();
  return new net.Socket({ handle, readable: true, writable: true, onread: slabReader(slabs, deliver) } as unknown as net.SocketConstructorOpts);
}

/** A connected socket's descriptor (handed over by another thread) as a socket reading into `slabs`; closing it closes `fd`. */
export function socketFromFd(fd: number, slabs: ReadSlabs, deliver: (chunk: Buffer) => void): net.Socket {
  return new net.Socket({ fd, readable: true, writable: true, onread: slabReader(slabs, deliver) } as unknown as net.SocketConstructorOpts);
}

function slabReader(slabs: ReadSlabs, deliver: (chunk: Buffer) => void): object {
  return {
    buffer: () => slabs.nextBuffer(),
    callback: (n: number, buf: Uint8Array): boolean => {
      slabs.received(n);
      deliver(Buffer.from(buf.buffer, buf.byteOffset, n));
      return true;
    },
  };
}
