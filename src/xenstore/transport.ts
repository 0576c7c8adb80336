// Byte transports a xenstore connection runs over. The daemon and the client only see this
// interface, so the same code serves in-process pairs, worker MessagePorts and Unix sockets.
//
// Flow control, both ways, so that neither side holds more than a bounded amount for the other:
// - backlog: bytes given to send() that the peer has not taken yet (a socket's unsent bytes, a
//   port's unacknowledged ones); the daemon stops answering a connection whose backlog is full,
//   as C xenstored stops reading a domain whose replies are outstanding.
// - pause()/resume(): stop taking the peer's bytes. A paused socket is not read, so the kernel
//   pushes back on the peer; a paused port stops acknowledging, so a port peer stops at its window.
//
// A port stands in for the shared ring of a real guest (1 KiB each way): the sender posts at most
// PORT_WINDOW bytes the receiver has not acknowledged and queues the rest on its own side, and the
// receiver acknowledges what it has taken every PORT_ACK_EVERY bytes.
//
// Ports and sockets send what one synchronous run produced (a daemon turn's replies, a guest's
// burst of requests) together, at the next microtask: one postMessage or one writev instead of
// one per message, which is most of a small request's cost on either side.

import type { Socket } from 'node:net';
import type { MessagePort } from 'node:worker_threads';

export interface XsTransport {
  /** Sends bytes to the peer; the transport takes ownership of `bytes`. */
  send(bytes: Uint8Array): void;
  /** Registers the receiver (one per transport); bytes that arrived earlier are delivered to it. */
  onData(cb: (bytes: Uint8Array) => void): void;
  /** Called once when either side closes. */
  onClose(cb: () => void): void;
  close(): void;
  /** Bytes sent that the peer has not taken yet. */
  readonly backlog: number;
  /** Called when the backlog has shrunk (the peer took some bytes). */
  onDrain(cb: () => void): void;
  /** Stops delivering received bytes to the receiver; the peer is pushed back. */
  pause(): void;
  /** Delivers what arrived while paused, then delivers as bytes arrive again. */
  resume(): void;
}

/** Unacknowledged bytes a port sender may have in flight (the analogue of the ring). */
export const PORT_WINDOW = 64 * 1024;
const PORT_ACK_EVERY = PORT_WINDOW / 4;
/** A port peer that sends this much past our last acknowledgement ignores the window: drop it. */
const PORT_HELD_MAX = 4 * PORT_WINDOW;

/** Receive-side plumbing: holds data until a receiver exists and while paused, runs close handlers once. */
class Endpoint {
  #receiver: ((bytes: Uint8Array) => void) | undefined;
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  #paused = false;
  #flushing = false;
  #closeHandlers: (() => void)[] = [];
  #drainHandlers: (() => void)[] = [];
  /** Told how many bytes the receiver took (port acknowledgements, pair backlogs). */
  onConsumed: ((n: number) => void) | undefined;
  closed = false;

  get heldBytes(): number {
    return this.#heldBytes;
  }

  deliver(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.#receiver === undefined || this.#paused || this.#held.length > 0) {
      this.#held.push(bytes);
      this.#heldBytes += bytes.length;
      this.#flush();
      return;
    }
    this.#receiver(bytes);
    this.onConsumed?.(bytes.length);
  }

  setReceiver(cb: (bytes: Uint8Array) => void): void {
    this.#receiver = cb;
    this.#flush();
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#flush();
  }

  #flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (!this.#paused && !this.closed && this.#receiver !== undefined && this.#held.length > 0) {
        const b = this.#held.shift() as Uint8Array;
        this.#heldBytes -= b.length;
        this.#receiver(b);
        this.onConsumed?.(b.length);
      }
    } finally {
      this.#flushing = false;
    }
  }

  addCloseHandler(cb: () => void): void {
    if (this.closed) queueMicrotask(cb);
    else this.#closeHandlers.push(cb);
  }

  addDrainHandler(cb: () => void): void {
    this.#drainHandlers.push(cb);
  }

  drained(): void {
    for (const h of this.#drainHandlers) h();
  }

  markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.#held = [];
    this.#heldBytes = 0;
    this.#drainHandlers = [];
    const handlers = this.#closeHandlers;
    this.#closeHandlers = [];
    for (const h of handlers) h();
  }
}

/**
 * Two connected in-process ends. Delivery is deferred to a microtask so a receiver never runs
 * inside its peer's send() (a watch callback that writes must not re-enter the daemon).
 */
export function transportPair(): [XsTransport, XsTransport] {
  const a = new Endpoint();
  const b = new Endpoint();
  const make = (self: Endpoint, peer: Endpoint): XsTransport => {
    let open = true;
    let backlog = 0;
    // What the peer takes of ours shrinks our backlog.
    peer.onConsumed = (n) => {
      backlog -= n;
      self.drained();
    };
    return {
      send(bytes) {
        if (!open || self.closed) return;
        backlog += bytes.length;
        queueMicrotask(() => peer.deliver(bytes));
      },
      onData: (cb) => self.setReceiver(cb),
      onClose: (cb) => self.addCloseHandler(cb),
      get backlog() {
        return backlog;
      },
      onDrain: (cb) => self.addDrainHandler(cb),
      pause: () => self.pause(),
      resume: () => self.resume(),
      close() {
        if (!open) return;
        open = false;
        // After any bytes already in flight, like a socket's FIN.
        queueMicrotask(() => {
          self.markClosed();
          peer.markClosed();
        });
      },
    };
  };
  const ta = make(a, b);
  const tb = make(b, a);
  return [ta, tb];
}

function ownArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const buf = bytes.buffer;
  if (buf instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === buf.byteLength) return buf;
  return bytes.slice().buffer as ArrayBuffer;
}

/**
 * A MessagePort end (e.g. one half of a MessageChannel given to a worker). Wire bytes travel as
 * transferred ArrayBuffers; a number is an acknowledgement of that many bytes.
 */
export function messagePortTransport(port: MessagePort): XsTransport {
  const ep = new Endpoint();
  let unacked = 0;
  let queued: ArrayBuffer[] = [];
  let queuedBytes = 0;
  let toAck = 0;
  let batch: Uint8Array[] = [];
  let batchBytes = 0;
  const flush = (): void => {
    const parts = batch;
    const bytes = batchBytes;
    batch = [];
    batchBytes = 0;
    if (ep.closed || parts.length === 0) return;
    let ab: ArrayBuffer;
    if (parts.length === 1) ab = ownArrayBuffer(parts[0] as Uint8Array);
    else {
      const all = new Uint8Array(bytes);
      let at = 0;
      for (const p of parts) {
        all.set(p, at);
        at += p.length;
      }
      ab = all.buffer;
    }
    if (unacked >= PORT_WINDOW || queued.length > 0) {
      queued.push(ab);
      queuedBytes += ab.byteLength;
    } else {
      post(ab);
    }
  };
  const post = (ab: ArrayBuffer): void => {
    unacked += ab.byteLength;
    port.postMessage(ab, [ab]);
  };
  const close = (): void => {
    if (ep.closed) return;
    port.close();
    queued = [];
    queuedBytes = 0;
    batch = [];
    batchBytes = 0;
    ep.markClosed();
  };
  ep.onConsumed = (n) => {
    toAck += n;
    if (toAck >= PORT_ACK_EVERY) {
      port.postMessage(toAck);
      toAck = 0;
    }
  };
  port.on('message', (data: unknown) => {
    if (typeof data === 'number') {
      unacked -= data;
      while (queued.length > 0 && unacked < PORT_WINDOW) {
        const ab = queued.shift() as ArrayBuffer;
        queuedBytes -= ab.byteLength;
        post(ab);
      }
      ep.drained();
      return;
    }
    if (data instanceof ArrayBuffer) ep.deliver(new Uint8Array(data));
    else if (data instanceof Uint8Array) ep.deliver(data);
    if (ep.heldBytes > PORT_HELD_MAX) close();
  });
  port.on('close', () => ep.markClosed());
  return {
    send(bytes) {
      if (ep.closed) return;
      if (batch.length === 0) queueMicrotask(flush);
      batch.push(bytes);
      batchBytes += bytes.length;
    },
    onData: (cb) => ep.setReceiver(cb),
    onClose: (cb) => ep.addCloseHandler(cb),
    get backlog() {
      return unacked + queuedBytes + batchBytes;
    },
    onDrain: (cb) => ep.addDrainHandler(cb),
    pause: () => ep.pause(),
    resume: () => ep.resume(),
    close,
  };
}

/** A connected stream socket (the Unix socket of xenstored). */
export function socketTransport(socket: Socket): XsTransport {
  const ep = new Endpoint();
  socket.on('data', (chunk: Buffer) => ep.deliver(chunk));
  socket.on('close', () => ep.markClosed());
  socket.on('error', () => socket.destroy());
  socket.on('drain', () => ep.drained());
  let corked = false;
  const uncork = (): void => {
    corked = false;
    if (!socket.destroyed) socket.uncork();
  };
  return {
    send(bytes) {
      if (ep.closed || socket.destroyed) return;
      if (!corked) {
        corked = true;
        socket.cork();
        queueMicrotask(uncork);
      }
      socket.write(bytes);
    },
    onData: (cb) => ep.setReceiver(cb),
    onClose: (cb) => ep.addCloseHandler(cb),
    get backlog() {
      return socket.destroyed ? 0 : socket.writableLength;
    },
    onDrain: (cb) => ep.addDrainHandler(cb),
    pause() {
      ep.pause();
      socket.pause();
    },
    resume() {
      ep.resume();
      if (!ep.closed && !socket.destroyed) socket.resume();
    },
    close() {
      if (ep.closed) return;
      // Hand what was already answered to the kernel before the socket goes.
      if (corked) uncork();
      socket.end();
      socket.destroy();
      ep.markClosed();
    },
  };
}
