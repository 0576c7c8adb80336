// Waits for whole messages on a socket during the handshake: the socket's chunks go into a
// ByteQueue, and `next(read)` resolves once the codec's `read*` function finds a whole message
// there. The transmission phase does not use it (connection.ts parses straight into the caller's
// buffers); detach() hands over anything already received.
import type { Socket } from 'node:net';
import { ByteQueue } from '../nbd/wire.ts';
import { onSocketBytes } from './transport.ts';

export class SocketReader {
  readonly queue = new ByteQueue();
  readonly #socket: Socket;
  #wake: (() => void) | undefined;
  #ended: string | undefined;
  #stopBytes: () => void;
  readonly #onData = (chunk: Buffer): void => {
    this.queue.push(Buffer.from(chunk)); // a view of a reused read buffer, maybe (onSocketBytes)
    this.#wake?.();
  };
  readonly #onEnd = (): void => {
    this.#ended ??= 'the server closed the connection';
    this.#wake?.();
  };
  readonly #onError = (err: NodeJS.ErrnoException): void => {
    this.#ended ??= `connection error: ${err.code ?? err.message}`;
    this.#wake?.();
  };

  constructor(socket: Socket) {
    this.#socket = socket;
    this.#stopBytes = onSocketBytes(socket, this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('error', this.#onError);
  }

  /** Why the socket ended, or undefined while it is open. */
  get ended(): string | undefined {
    return this.#ended;
  }

  /** The next whole message `read` finds; rejects with `onEnd(why)` if the socket ends first. */
  async next<T>(read: (queue: ByteQueue) => T | undefined, onEnd: (why: string) => Error): Promise<T> {
    for (;;) {
      const got = read(this.queue);
      if (got !== undefined) return got;
      if (this.#ended !== undefined) throw onEnd(this.#ended);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }

  /** Stops listening; the socket's later bytes go to whoever listens next. */
  detach(): void {
    this.#stopBytes();
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onEnd);
    this.#socket.off('error', this.#onError);
  }
}
