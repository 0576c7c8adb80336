// Cuts the server-to-client byte stream of the transmission phase into replies (the client's
// side): simple replies (with a read's data when they carry no error) and structured reply chunks.
// Sans-IO: `push` takes whatever the socket read.
//
// A simple reply does not say how much data follows: only the client knows, from the request its
// cookie names, so the sink is asked. A chunk's length above `maxChunkLength` stops the reader
// before anything of it is buffered; so does a bad magic or a cookie the sink does not know.
import { NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC, SIMPLE_REPLY_LENGTH, STRUCTURED_REPLY_HEADER_LENGTH } from './constants.ts';
import { ByteQueue, readU16, readU32 } from './wire.ts';

export type ReplyFramingError = 'bad-magic' | 'chunk-too-long' | 'unknown-cookie';

export interface ChunkHeader {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  length: number;
}

export interface ReplySink {
  /**
   * How many bytes of data follow an error-free simple reply to the request with this cookie: the
   * read's length, 0 for other commands, or -1 when no such request is in flight (the stream is
   * then lost).
   */
  simpleReplyDataLength(cookieHi: number, cookieLo: number): number;
  /** `data` is a view or copy of the read data, or null (an error, or a command without data). */
  onSimpleReply(error: number, cookieHi: number, cookieLo: number, data: Buffer | null): void;
  /** One structured chunk; `header` is refilled for the next chunk, `payload` is whole. */
  onChunk(header: ChunkHeader, payload: Buffer): void;
  onFramingError(kind: ReplyFramingError, message: string): void;
}

const State = { MAGIC: 0, SIMPLE_DATA: 1, CHUNK_PAYLOAD: 2, STOPPED: 3 } as const;

export class ReplyReader {
  readonly #sink: ReplySink;
  readonly #queue: ByteQueue;
  readonly #maxChunkLength: number;
  readonly #chunk: ChunkHeader = { flags: 0, type: 0, cookieHi: 0, cookieLo: 0, length: 0 };
  #state: number = State.MAGIC;
  #dataLength = 0;

  /** `queue` may already hold bytes (those that followed the end of the handshake). */
  constructor(sink: ReplySink, maxChunkLength: number, queue = new ByteQueue()) {
    this.#sink = sink;
    this.#maxChunkLength = maxChunkLength;
    this.#queue = queue;
  }

  get stopped(): boolean {
    return this.#state === State.STOPPED;
  }

  push(chunk: Buffer): void {
    if (this.#state === State.STOPPED) return;
    this.#queue.push(chunk);
    this.drain();
  }

  drain(): void {
    const queue = this.#queue;
    const chunk = this.#chunk;
    for (;;) {
      switch (this.#state) {
        case State.MAGIC: {
          const magic = queue.peekU32(0);
          if (magic === undefined) return;
          if (magic === NBD_SIMPLE_REPLY_MAGIC) {
            const bytes = queue.take(SIMPLE_REPLY_LENGTH);
            if (bytes === undefined) return;
            chunk.cookieHi = readU32(bytes, 8);
            chunk.cookieLo = readU32(bytes, 12);
            const error = readU32(bytes, 4);
            if (error !== 0) {
              this.#sink.onSimpleReply(error, chunk.cookieHi, chunk.cookieLo, null);
              break;
            }
            const length = this.#sink.simpleReplyDataLength(chunk.cookieHi, chunk.cookieLo);
            if (length < 0) return this.#fail('unknown-cookie', 'simple reply for a request not in flight');
            if (length === 0) {
              this.#sink.onSimpleReply(0, chunk.cookieHi, chunk.cookieLo, null);
              break;
            }
            this.#dataLength = length;
            this.#state = State.SIMPLE_DATA;
          } else if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
            const bytes = queue.take(STRUCTURED_REPLY_HEADER_LENGTH);
            if (bytes === undefined) return;
            chunk.flags = readU16(bytes, 4);
            chunk.type = readU16(bytes, 6);
            chunk.cookieHi = readU32(bytes, 8);
            chunk.cookieLo = readU32(bytes, 12);
            chunk.length = readU32(bytes, 16);
            if (chunk.length > this.#maxChunkLength)
              return this.#fail('chunk-too-long', `reply chunk of ${chunk.length} bytes (at most ${this.#maxChunkLength})`);
            this.#state = State.CHUNK_PAYLOAD;
          } else {
            return this.#fail('bad-magic', `reply with magic 0x${magic.toString(16)}: the stream is out of step`);
          }
          break;
        }
        case State.SIMPLE_DATA: {
          const data = queue.take(this.#dataLength);
          if (data === undefined) return;
          this.#state = State.MAGIC;
          this.#sink.onSimpleReply(0, chunk.cookieHi, chunk.cookieLo, data);
          break;
        }
        case State.CHUNK_PAYLOAD: {
          const payload = queue.take(chunk.length);
          if (payload === undefined) return;
          this.#state = State.MAGIC;
          this.#sink.onChunk(chunk, payload);
          break;
        }
        default:
          return;
      }
    }
  }

  stop(): void {
    this.#state = State.STOPPED;
    this.#queue.clear();
  }

  #fail(kind: ReplyFramingError, message: string): void {
    this.stop();
    this.#sink.onFramingError(kind, message);
  }
}
