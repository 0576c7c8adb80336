// The transmission phase of one connection, server side (proto.md "Transmission"). Requests come
// from the RequestReader; each is validated once (validate.ts), then handed to the export's block
// device at once, so many are in flight per connection and each is answered when it completes, in
// whatever order that is (the document allows any order; cookies match answers to requests).
//
// The hot paths allocate little: a write's data goes to the store as the views of the socket
// chunks it arrived in; a read is answered with one header and the data buffer, which the host
// sends together (corked: one writev). With structured replies, reads of holes are answered with
// OFFSET_HOLE chunks instead of zeroes (the store's blockStatus tells where they are).
import { WRITE_FUA, type BlockDevice, type BlockExtent } from '../block/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { Command, CommandFlag, NBD_REPLY_FLAG_DONE, NBD_STATE_HOLE, NBD_STATE_ZERO, NbdErrno, SIMPLE_REPLY_LENGTH, commandName } from '../nbd/constants.ts';
import { RequestReader, type RequestFramingError } from '../nbd/request-reader.ts';
import {
  OFFSET_DATA_HEADER_LENGTH,
  type BlockStatusDescriptor,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetHoleChunk,
  type RequestHeader,
  writeOffsetDataHeader,
  writeSimpleReply,
} from '../nbd/transmission.ts';
import type { ByteQueue } from '../nbd/wire.ts';
import type { NbdServerCounters } from './counters.ts';
import { gatherAligned, isAligned, returnPayloadBuffer, takePayloadBuffer } from './payload-pool.ts';
import { blockSizesOf, MAX_PAYLOAD, transmissionFlagsOf } from './export.ts';
import { BASE_ALLOCATION_ID, type Negotiated } from './option-haggling.ts';
import { type NegotiatedState, validateRequest } from './validate.ts';

/** Requests in flight per connection before we stop reading more (the client waits; nothing is lost). */
export const MAX_IN_FLIGHT = 256;
/** Read data in flight per connection before we stop reading more requests. */
const MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;
/** Zeroes for NBD_CMD_WRITE_ZEROES with NO_HOLE, which must not leave a hole. */
const ZEROES = new Uint8Array(1024 * 1024);

export interface TransmissionHost {
  readonly counters: NbdServerCounters;
  /**
   * Sends these buffers, in order, together (one writev where the transport can); `sent` runs once
   * the transport is done with them (so a pooled buffer may be reused).
   */
  send(buffers: readonly Uint8Array[], sent?: () => void): void;
  /** Stop and resume reading from the client (flow control: too much in flight). */
  pause(): void;
  resume(): void;
  /** Close after what was sent: after NBD_CMD_DISC once every request is answered. */
  end(): void;
  /** Drop the connection at once (the stream cannot be followed). */
  drop(kind: string, message: string): void;
  /** A refused request or failed store operation, for the log. */
  problem(kind: string, message: string): void;
  /** Keeps the memory under a write's payload views from reuse until release() (read-slabs.ts). */
  hold(payload: readonly Uint8Array[]): void;
  release(payload: readonly Uint8Array[]): void;
}

export class TransmissionSession {
  readonly #host: TransmissionHost;
  readonly #device: BlockDevice;
  readonly #state: NegotiatedState;
  readonly #reader: RequestReader;
  #inFlight = 0;
  #inFlightBytes = 0;
  #paused = false;
  #disconnecting = false;
  #closed = false;

  constructor(host: TransmissionHost, negotiated: Negotiated, queue: ByteQueue) {
    this.#host = host;
    this.#device = negotiated.export.device;
    this.#state = {
      size: this.#device.info.size,
      minimumBlockSize: blockSizesOf(negotiated.export).minimum,
      transmissionFlags: transmissionFlagsOf(negotiated.export),
      readOnly: negotiated.export.readOnly,
      structuredReplies: negotiated.structuredReplies,
      metaContext: negotiated.metaContext,
    };
    this.#reader = new RequestReader(
      {
        onRequest: (header, payload) => this.#onRequest(header, payload),
        onFramingError: (kind, message) => this.#onFramingError(kind, message),
      },
      MAX_PAYLOAD,
      queue,
    );
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  push(chunk: Buffer): void {
    this.#reader.push(chunk);
  }

  /** Decodes requests already queued (those that came with the end of the handshake). */
  drain(): void {
    this.#reader.drain();
  }

  /** The connection is gone: answers still owed are dropped when their operations finish. */
  closed(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reader.stop();
    if (this.#inFlight > 0) this.#host.counters.disconnectsWithRequestsInFlight++;
  }

  #onFramingError(kind: RequestFramingError, message: string): void {
    this.#host.counters.framingErrors++;
    this.#host.drop(kind, message);
  }

  #onRequest(h: RequestHeader, payload: Buffer[] | null): void {
    const counters = this.#host.counters;
    counters.requests++;
    if (h.type === Command.NBD_CMD_DISC) {
      this.#disconnecting = true;
      this.#reader.stop();
      if (this.#inFlight === 0) this.#host.end();
      return;
    }
    const { type, flags, cookieHi, cookieLo, offset, length } = h;
    const refusal = validateRequest(h, this.#state);
    if (refusal !== undefined) {
      counters[refusal.counter]++;
      this.#host.problem(refusal.counter, `${commandName(type)}: ${refusal.why}`);
      this.#replyError(type, cookieHi, cookieLo, refusal.errno, refusal.why);
      return;
    }
    this.#begin(type === Command.NBD_CMD_READ ? length : 0);
    // Each handler ends the request itself (#end) when it is done: no promise chained on for that.
    switch (type) {
      case Command.NBD_CMD_READ:
        void this.#read(flags, cookieHi, cookieLo, offset, length);
        break;
      case Command.NBD_CMD_WRITE:
        counters.bytesWritten += length;
        void this.#write(flags, cookieHi, cookieLo, offset, length, payload!);
        break;
      case Command.NBD_CMD_FLUSH:
        void this.#simple(cookieHi, cookieLo, this.#device.flush(), type);
        break;
      case Command.NBD_CMD_TRIM:
        void this.#simple(cookieHi, cookieLo, length === 0 ? undefined : this.#withFua(flags, this.#device.discard(offset, length)), type);
        break;
      case Command.NBD_CMD_WRITE_ZEROES:
        void this.#simple(cookieHi, cookieLo, length === 0 ? undefined : this.#withFua(flags, this.#zero(flags, offset, length)), type);
        break;
      case Command.NBD_CMD_CACHE:
        // A hint; every store here either has no cache to fill or fills it on the next read anyway.
        void this.#simple(cookieHi, cookieLo, undefined, type);
        break;
      default:
        void this.#blockStatus(flags, cookieHi, cookieLo, offset, length);
        break;
    }
  }

  #begin(readBytes: number): void {
    this.#inFlight++;
    this.#inFlightBytes += readBytes;
    if (!this.#paused && (this.#inFlight >= MAX_IN_FLIGHT || this.#inFlightBytes >= MAX_IN_FLIGHT_BYTES)) {
      this.#paused = true;
      this.#host.pause();
    }
  }

  #end(readBytes: number): void {
    this.#inFlight--;
    this.#inFlightBytes -= readBytes;
    if (this.#closed) return;
    if (this.#paused && this.#inFlight < MAX_IN_FLIGHT / 2 && this.#inFlightBytes < MAX_IN_FLIGHT_BYTES / 2) {
      this.#paused = false;
      this.#host.resume();
    }
    if (this.#disconnecting && this.#inFlight === 0) this.#host.end();
  }

  /** The payload goes to the store as it arrived when aligned, else copied once into an aligned buffer (payload-pool.ts). */
  #write(flags: number, cookieHi: number, cookieLo: number, offset: number, length: number, payload: Buffer[]): Promise<void> {
    const fua = (flags & CommandFlag.NBD_CMD_FLAG_FUA) !== 0 ? WRITE_FUA : 0;
    if (length === 0) return this.#simple(cookieHi, cookieLo, undefined, Command.NBD_CMD_WRITE);
    if (isAligned(payload)) {
      this.#host.hold(payload);
      return this.#simple(cookieHi, cookieLo, this.#device.writev(offset, payload, fua), Command.NBD_CMD_WRITE, () => this.#host.release(payload));
    }
    const { buffer, data } = gatherAligned(payload, length);
    return this.#simple(cookieHi, cookieLo, this.#device.writev(offset, [data], fua), Command.NBD_CMD_WRITE, () => returnPayloadBuffer(buffer));
  }

  async #withFua(flags: number, op: Promise<void>): Promise<void> {
    await op;
    if ((flags & CommandFlag.NBD_CMD_FLAG_FUA) !== 0) await this.#device.flush();
  }

  #zero(flags: number, offset: number, length: number): Promise<void> {
    if ((flags & CommandFlag.NBD_CMD_FLAG_NO_HOLE) === 0) return this.#device.writeZeroes(offset, length);
    const iov: Uint8Array[] = [];
    for (let left = length; left > 0; left -= ZEROES.length) iov.push(left >= ZEROES.length ? ZEROES : ZEROES.subarray(0, left));
    return this.#device.writev(offset, iov);
  }

  /**
   * Answers with a simple reply once `op` settles (at once when undefined: a no-op), after
   * `settled` (a write's payload let go); then ends the request.
   */
  async #simple(cookieHi: number, cookieLo: number, op: Promise<void> | undefined, type: number, settled?: () => void): Promise<void> {
    let error = 0;
    if (op !== undefined) {
      try {
        await op;
      } catch (err) {
        error = this.#storeError(type, err);
      }
    }
    settled?.();
    if (!this.#closed) {
      const reply = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
      writeSimpleReply(reply, 0, error, cookieHi, cookieLo);
      this.#host.send([reply]);
    }
    this.#end(0);
  }

  async #read(flags: number, cookieHi: number, cookieLo: number, offset: number, length: number): Promise<void> {
    try {
      const device = this.#device;
      const structured = this.#state.structuredReplies;
      if (length === 0) {
        if (structured) this.#host.send([encodeNoneChunk(cookieHi, cookieLo)]);
        else this.#sendSimpleRead(cookieHi, cookieLo, undefined);
        return;
      }
      try {
        // Holes are worth looking for only when they can be answered as holes.
        const sparse = structured && (flags & CommandFlag.NBD_CMD_FLAG_DF) === 0 && device.blockStatus !== undefined;
        const extents = sparse ? await this.#extents(offset, length) : undefined;
        if (extents === undefined || extents.every((e) => e.allocated)) {
          // Pooled: a fresh buffer per read would be external memory for the GC to chase.
          const buffer = takePayloadBuffer(length);
          const data = buffer.subarray(0, length);
          try {
            await device.readv(offset, [data]);
          } catch (err) {
            returnPayloadBuffer(buffer);
            throw err;
          }
          this.#host.counters.bytesRead += length;
          if (this.#closed) return returnPayloadBuffer(buffer);
          const header = Buffer.allocUnsafe(structured ? OFFSET_DATA_HEADER_LENGTH : SIMPLE_REPLY_LENGTH);
          if (structured) writeOffsetDataHeader(header, 0, NBD_REPLY_FLAG_DONE, cookieHi, cookieLo, offset, length);
          else writeSimpleReply(header, 0, 0, cookieHi, cookieLo);
          this.#host.send([header, data], () => returnPayloadBuffer(buffer));
          return;
        }
        const parts: Uint8Array[] = [];
        for (let i = 0; i < extents.length; i++) {
          const e = extents[i]!;
          const last = i === extents.length - 1 ? NBD_REPLY_FLAG_DONE : 0;
          if (!e.allocated) {
            parts.push(encodeOffsetHoleChunk(last, cookieHi, cookieLo, e.offset, e.length));
            continue;
          }
          const data = Buffer.allocUnsafe(e.length);
          await device.readv(e.offset, [data]);
          const header = Buffer.allocUnsafe(OFFSET_DATA_HEADER_LENGTH);
          writeOffsetDataHeader(header, 0, last, cookieHi, cookieLo, e.offset, e.length);
          parts.push(header, data);
        }
        this.#host.counters.bytesRead += length;
        if (!this.#closed) this.#host.send(parts);
      } catch (err) {
        const errno = this.#storeError(Command.NBD_CMD_READ, err);
        if (this.#closed) return;
        if (structured) this.#host.send([encodeErrorChunk(NBD_REPLY_FLAG_DONE, cookieHi, cookieLo, errno, 'read failed')]);
        else this.#sendSimpleRead(cookieHi, cookieLo, undefined, errno);
      }
    } finally {
      this.#end(length);
    }
  }

  #sendSimpleRead(cookieHi: number, cookieLo: number, data: Uint8Array | undefined, error = 0): void {
    const reply = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
    writeSimpleReply(reply, 0, error, cookieHi, cookieLo);
    this.#host.send(data === undefined ? [reply] : [reply, data]);
  }

  /** Extents covering exactly [offset, offset+length), merged, as the store reports them. */
  async #extents(offset: number, length: number, maxExtents = Number.POSITIVE_INFINITY): Promise<BlockExtent[]> {
    const out: BlockExtent[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end && out.length < maxExtents) {
      const before = pos;
      const got = await this.#device.blockStatus!(pos, end - pos);
      if (got.length === 0) break;
      for (const e of got) {
        const from = Math.max(e.offset, pos);
        const to = Math.min(e.offset + e.length, end);
        if (to <= from) continue;
        const last = out[out.length - 1];
        if (last !== undefined && last.allocated === e.allocated && last.offset + last.length === from)
          out[out.length - 1] = { offset: last.offset, length: to - last.offset, allocated: e.allocated };
        else out.push({ offset: from, length: to - from, allocated: e.allocated });
        pos = to;
      }
      if (pos === before) break;
    }
    // A store that stops short (or says nothing) leaves the rest counted as data.
    if (pos < end) out.push({ offset: pos, length: end - pos, allocated: true });
    return out;
  }

  async #blockStatus(flags: number, cookieHi: number, cookieLo: number, offset: number, length: number): Promise<void> {
    try {
      let descriptors: BlockStatusDescriptor[];
      try {
        const one = (flags & CommandFlag.NBD_CMD_FLAG_REQ_ONE) !== 0;
        const extents = this.#device.blockStatus === undefined ? [{ offset, length, allocated: true }] : await this.#extents(offset, length, one ? 1 : 1024);
        descriptors = (one ? extents.slice(0, 1) : extents).map((e) => ({ length: e.length, flags: e.allocated ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO }));
      } catch (err) {
        const errno = this.#storeError(Command.NBD_CMD_BLOCK_STATUS, err);
        if (!this.#closed) this.#host.send([encodeErrorChunk(NBD_REPLY_FLAG_DONE, cookieHi, cookieLo, errno, 'block status failed')]);
        return;
      }
      if (!this.#closed) this.#host.send([encodeBlockStatusChunk(NBD_REPLY_FLAG_DONE, cookieHi, cookieLo, BASE_ALLOCATION_ID, descriptors)]);
    } finally {
      this.#end(0);
    }
  }

  #replyError(type: number, cookieHi: number, cookieLo: number, errno: number, message: string): void {
    if (this.#state.structuredReplies && (type === Command.NBD_CMD_READ || type === Command.NBD_CMD_BLOCK_STATUS)) {
      this.#host.send([encodeErrorChunk(NBD_REPLY_FLAG_DONE, cookieHi, cookieLo, errno, message)]);
      return;
    }
    const reply = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
    writeSimpleReply(reply, 0, errno, cookieHi, cookieLo);
    this.#host.send([reply]);
  }

  #storeError(type: number, err: unknown): number {
    this.#host.counters.ioErrors++;
    this.#host.problem('io-error', `${commandName(type)} on ${this.#device.name}: ${(err as Error).message}`);
    return nbdErrno(err);
  }
}

/** The NBD error for a store's failure: its errno where the document has one, else EIO. */
export function nbdErrno(err: unknown): number {
  const errno = err instanceof BlockError ? err.errno : Errno.EIO;
  switch (errno) {
    case Errno.EPERM:
    case Errno.EROFS:
    case Errno.EACCES:
      return NbdErrno.NBD_EPERM;
    case Errno.ENOMEM:
      return NbdErrno.NBD_ENOMEM;
    case Errno.EINVAL:
      return NbdErrno.NBD_EINVAL;
    case Errno.ENOSPC:
    case Errno.EQUOTA:
      return NbdErrno.NBD_ENOSPC;
    case Errno.EOPNOTSUPP:
      return NbdErrno.NBD_ENOTSUP;
    default:
      return NbdErrno.NBD_EIO;
  }
}
