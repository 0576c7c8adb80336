// Cuts the client-to-server byte stream of the transmission phase into requests (the server's
// side). Sans-IO: `push` takes whatever the socket read; whole requests go to the sink in order.
//
// Write payloads are handed over as views of the chunks they arrived in (an iov for
// BlockDevice.writev): never concatenated, never copied. The header is decoded in place when one
// chunk holds it (nearly always), else from a 28-byte copy.
//
// The only lengths that frame the stream are a write's: one above `maxWritePayload` stops the
// reader before anything of it is buffered for the sink (proto.md lets the server drop a client
// that sends more than the maximum payload size it advertised), as does a bad magic (the stream
// cannot be followed). Every other field is the server's to validate and answer.
import { Command, REQUEST_HEADER_LENGTH } from './constants.ts';
import { decodeRequestHeader, newRequestHeader, type RequestHeader } from './transmission.ts';
import { ByteQueue } from './wire.ts';

export type RequestFramingError = 'bad-magic' | 'write-too-long';

export interface RequestSink {
  /**
   * One request. `header` is the reader's own object, refilled for the next request: copy the
   * fields you keep. `payload` is a write's data (views of received chunks, `header.length` bytes
   * in all), or null for every other command.
   */
  onRequest(header: RequestHeader, payload: Buffer[] | null): void;
  /** The stream cannot be followed any more; the reader has stopped and dropped what it held. */
  onFramingError(kind: RequestFramingError, message: string): void;
}

export class RequestReader {
  readonly #sink: RequestSink;
  readonly #queue: ByteQueue;
  readonly #header = newRequestHeader();
  #maxWritePayload: number;
  /** The header is decoded and its write payload is awaited. */
  #awaitingPayload = false;
  #stopped = false;
  #requests = 0;

  /** `queue` may already hold bytes (those that followed NBD_OPT_GO in the same read). */
  constructor(sink: RequestSink, maxWritePayload: number, queue = new ByteQueue()) {
    this.#sink = sink;
    this.#maxWritePayload = maxWritePayload;
    this.#queue = queue;
  }

  get requests(): number {
    return this.#requests;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Whatever was received and not yet handed out. */
  get buffered(): number {
    return this.#queue.length;
  }

  push(chunk: Buffer): void {
    if (this.#stopped) return;
    this.#queue.push(chunk);
    this.drain();
  }

  /** Decodes whatever whole requests the queue holds (call after constructing over a non-empty queue). */
  drain(): void {
    const queue = this.#queue;
    const header = this.#header;
    while (!this.#stopped) {
      if (!this.#awaitingPayload) {
        const bytes = queue.take(REQUEST_HEADER_LENGTH);
        if (bytes === undefined) return;
        if (!decodeRequestHeader(bytes, 0, header)) {
          this.#fail('bad-magic', 'request without NBD_REQUEST_MAGIC: the stream is out of step');
          return;
        }
        if (header.type !== Command.NBD_CMD_WRITE) {
          this.#requests++;
          this.#sink.onRequest(header, null);
          continue;
        }
        if (header.length > this.#maxWritePayload) {
          this.#fail('write-too-long', `write of ${header.length} bytes, above the ${this.#maxWritePayload} advertised`);
          return;
        }
        this.#awaitingPayload = true;
      }
      const payload = this.#queue.takeIov(header.length);
      if (payload === undefined) return;
      this.#awaitingPayload = false;
      this.#requests++;
      this.#sink.onRequest(header, payload);
    }
  }

  /** No more requests are decoded (after NBD_CMD_DISC, or when the connection closes). */
  stop(): void {
    this.#stopped = true;
    this.#queue.clear();
  }

  #fail(kind: RequestFramingError, message: string): void {
    this.stop();
    this.#sink.onFramingError(kind, message);
  }
}
