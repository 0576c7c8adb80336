// Cuts the server-to-client byte stream of the transmission phase into replies (the client's
// side), and copies read data straight from the socket's chunks into the buffers the caller gave
// (guest memory) as it arrives, instead of gathering a whole reply first. Sans-IO: `push` takes
// whatever the socket read; the sink says where data goes.
//
//   simple reply (16)       magic | error u32 | cookie u64   then, for a read without error, its data
//   OFFSET_DATA chunk (20)  magic | flags u16 | type u16 | cookie u64 | length u32
//                           then offset u64 | data[length - 8]          (data copied as it arrives)
//   any other chunk         its payload is gathered whole (at most maxChunkLength bytes)
//
// A simple reply does not say how much data follows: only the client knows, from the request its
// cookie names, so the sink is asked. A chunk's length above `maxChunkLength` stops the reader
// before anything of it is buffered; so does a bad magic or a cookie the sink does not know.
import { NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC, ReplyType, SIMPLE_REPLY_LENGTH, STRUCTURED_REPLY_HEADER_LENGTH } from './constants.ts';
import { ByteQueue, readU16, readU32, readU64 } from './wire.ts';

export type ReplyFramingError = 'bad-magic' | 'chunk-too-long' | 'unknown-cookie' | 'bad-chunk';

export interface ChunkHeader {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  length: number;
}

/** Where `length` bytes of read data go: `iov` from byte `at` onwards; null to drop them. */
export interface DataTarget {
  readonly iov: readonly Uint8Array[];
  readonly at: number;
}

export interface ReplySink {
  /**
   * The buffers an error-free simple reply's data goes into, and how long it is: the read's
   * buffers and length; length 0 for commands without data; undefined for a cookie not in flight.
   */
  simpleReplyTarget(cookieHi: number, cookieLo: number): { readonly length: number; readonly target: DataTarget } | undefined;
  /** The simple reply is complete (its data, if any, is in the target). */
  onSimpleReply(error: number, cookieHi: number, cookieLo: number): void;
  /**
   * Where the `length` data bytes of an OFFSET_DATA chunk for `offset` go; null drops them (the
   * sink has then failed the request, e.g. an offset outside it).
   */
  offsetDataTarget(header: ChunkHeader, offset: number, length: number): DataTarget | null;
  /** An OFFSET_DATA chunk's data has all arrived. */
  onOffsetData(header: ChunkHeader, offset: number, length: number): void;
  /** Any other chunk, whole; `header` is refilled for the next one. */
  onChunk(header: ChunkHeader, payload: Buffer): void;
  onFramingError(kind: ReplyFramingError, message: string): void;
}

const State = { MAGIC: 0, DATA: 1, OFFSET: 2, CHUNK_PAYLOAD: 3, STOPPED: 4 } as const;

export class ReplyReader {
  readonly #sink: ReplySink;
  readonly #queue: ByteQueue;
  readonly #maxChunkLength: number;
  readonly #chunk: ChunkHeader = { flags: 0, type: 0, cookieHi: 0, cookieLo: 0, length: 0 };
  #state: number = State.MAGIC;
  /** The data being copied: where to, how much is left, and whether a chunk or a simple reply. */
  #target: DataTarget | null = null;
  #targetAt = 0;
  #left = 0;
  #inChunk = false;
  #offset = 0;
  #error = 0;

  constructor(sink: ReplySink, maxChunkLength: number, queue = new ByteQueue()) {
    this.#sink = sink;
    this.#maxChunkLength = maxChunkLength;
    this.#queue = queue;
  }

  get stopped(): boolean {
    return this.#state === State.STOPPED;
  }

  /**
   * `chunk` may be a view of a buffer the socket reuses for its next read: what is left queued
   * after draining (a partial header or chunk payload: read data has gone to its target) is copied.
   */
  push(chunk: Buffer): void {
    if (this.#state === State.STOPPED) return;
    this.#queue.push(chunk);
    this.drain();
    if (this.#queue.length !== 0) this.#queue.own();
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
            this.#error = readU32(bytes, 4);
            if (this.#error !== 0) {
              this.#sink.onSimpleReply(this.#error, chunk.cookieHi, chunk.cookieLo);
              break;
            }
            const where = this.#sink.simpleReplyTarget(chunk.cookieHi, chunk.cookieLo);
            if (where === undefined) return this.#fail('unknown-cookie', 'simple reply for a request not in flight');
            if (where.length === 0) {
              this.#sink.onSimpleReply(0, chunk.cookieHi, chunk.cookieLo);
              break;
            }
            this.#startData(where.target, where.length, false);
          } else if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
            const bytes = queue.take(STRUCTURED_REPLY_HEADER_LENGTH);
            if (bytes === undefined) return;
            chunk.flags = readU16(bytes, 4);
            chunk.type = readU16(bytes, 6);
            chunk.cookieHi = readU32(bytes, 8);
            chunk.cookieLo = readU32(bytes, 12);
            chunk.length = readU32(bytes, 16);
            if (chunk.type === ReplyType.NBD_REPLY_TYPE_OFFSET_DATA) {
              if (chunk.length < 8) return this.#fail('bad-chunk', `OFFSET_DATA chunk of ${chunk.length} bytes (at least 8)`);
              this.#state = State.OFFSET;
            } else {
              if (chunk.length > this.#maxChunkLength)
                return this.#fail('chunk-too-long', `reply chunk of ${chunk.length} bytes (at most ${this.#maxChunkLength})`);
              this.#state = State.CHUNK_PAYLOAD;
            }
          } else {
            return this.#fail('bad-magic', `reply with magic 0x${magic.toString(16)}: the stream is out of step`);
          }
          break;
        }
        case State.OFFSET: {
          const bytes = queue.take(8);
          if (bytes === undefined) return;
          this.#offset = readU64(bytes, 0);
          const length = chunk.length - 8;
          this.#startData(this.#sink.offsetDataTarget(chunk, this.#offset, length), length, true);
          break;
        }
        case State.DATA: {
          const n = Math.min(this.#left, queue.length);
          if (n === 0) return;
          if (this.#target === null) queue.skip(n);
          else copyInto(queue, n, this.#target.iov, this.#targetAt);
          this.#targetAt += n;
          this.#left -= n;
          if (this.#left > 0) return;
          this.#state = State.MAGIC;
          if (this.#inChunk) this.#sink.onOffsetData(chunk, this.#offset, chunk.length - 8);
          else this.#sink.onSimpleReply(0, chunk.cookieHi, chunk.cookieLo);
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

  #startData(target: DataTarget | null, length: number, inChunk: boolean): void {
    this.#target = target;
    this.#targetAt = target?.at ?? 0;
    this.#left = length;
    this.#inChunk = inChunk;
    this.#state = State.DATA;
  }

  #fail(kind: ReplyFramingError, message: string): void {
    this.stop();
    this.#sink.onFramingError(kind, message);
  }
}

/** Moves `n` queued bytes into the buffers of `iov`, starting `at` bytes into them. */
function copyInto(queue: ByteQueue, n: number, iov: readonly Uint8Array[], at: number): void {
  let i = 0;
  let skip = at;
  while (i < iov.length && skip >= iov[i]!.byteLength) skip -= iov[i++]!.byteLength;
  let left = n;
  while (left > 0 && i < iov.length) {
    const buf = iov[i]!;
    const count = Math.min(left, buf.byteLength - skip);
    queue.takeInto(count, buf, skip);
    left -= count;
    skip = 0;
    i++;
  }
  if (left > 0) queue.skip(left); // past the buffers: the sink checked bounds, so never in practice
}
