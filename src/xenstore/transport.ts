// Byte transports a xenstore connection runs over. The daemon and the client only see this
// interface, so the same code serves in-process pairs, worker MessagePorts and Unix sockets.

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
}

/** Common receive-side plumbing: queues data until a receiver exists, runs close handlers once. */
class Endpoint {
  #receiver: ((bytes: Uint8Array) => void) | undefined;
  #pending: Uint8Array[] = [];
  #closeHandlers: (() => void)[] = [];
  closed = false;

  deliver(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.#receiver === undefined) this.#pending.push(bytes);
    else this.#receiver(bytes);
  }

  setReceiver(cb: (bytes: Uint8Array) => void): void {
    this.#receiver = cb;
    const queued = this.#pending;
    this.#pending = [];
    for (const b of queued) cb(b);
  }

  addCloseHandler(cb: () => void): void {
    if (this.closed) queueMicrotask(cb);
    else this.#closeHandlers.push(cb);
  }

  markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.#pending = [];
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
    return {
      send(bytes) {
        if (!open || self.closed) return;
        queueMicrotask(() => peer.deliver(bytes));
      },
      onData: (cb) => self.setReceiver(cb),
      onClose: (cb) => self.addCloseHandler(cb),
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

/** A MessagePort end (e.g. one half of a MessageChannel given to a worker); wire bytes travel as transferred ArrayBuffers. */
export function messagePortTransport(port: MessagePort): XsTransport {
  const ep = new Endpoint();
  port.on('message', (data: unknown) => {
    if (data instanceof ArrayBuffer) ep.deliver(new Uint8Array(data));
    else if (data instanceof Uint8Array) ep.deliver(data);
  });
  port.on('close', () => ep.markClosed());
  return {
    send(bytes) {
      if (ep.closed) return;
      const ab = ownArrayBuffer(bytes);
      port.postMessage(ab, [ab]);
    },
    onData: (cb) => ep.setReceiver(cb),
    onClose: (cb) => ep.addCloseHandler(cb),
    close() {
      if (ep.closed) return;
      port.close();
      ep.markClosed();
    },
  };
}

/** A connected stream socket (the Unix socket of xenstored). */
export function socketTransport(socket: Socket): XsTransport {
  const ep = new Endpoint();
  socket.on('data', (chunk: Buffer) => ep.deliver(chunk));
  socket.on('close', () => ep.markClosed());
  socket.on('error', () => socket.destroy());
  return {
    send(bytes) {
      if (!ep.closed && !socket.destroyed) socket.write(bytes);
    },
    onData: (cb) => ep.setReceiver(cb),
    onClose: (cb) => ep.addCloseHandler(cb),
    close() {
      if (ep.closed) return;
      socket.end();
      socket.destroy();
      ep.markClosed();
    },
  };
}
