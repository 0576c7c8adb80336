// One NBD connection in the transmission phase: requests go out with a header and their data in
// one writev, many at once, each with its own cookie; replies (simple or structured, in any order)
// are matched back by cookie, and read data is copied from the socket's chunks straight into the
// caller's buffers (ReplyReader). A lost connection, or a server that breaks the protocol,
// fails every request in flight with NbdConnectionLost: the device decides whether to send them
// again on a new connection.
import type { Socket } from 'node:net';
import type { BlockExtent } from '../block/types.ts';
import {
  Command,
  CommandFlag,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_STATE_HOLE,
  REQUEST_HEADER_LENGTH,
  ReplyType,
  commandName,
} from '../nbd/constants.ts';
import { ReplyReader } from '../nbd/reply-reader.ts';
import type { ChunkHeader, DataTarget, ReplySink } from '../nbd/reply-reader.ts';
import { decodeBlockStatus, decodeErrorChunk, decodeOffsetHole, writeRequestHeader } from '../nbd/transmission.ts';
import type { RequestHeader } from '../nbd/transmission.ts';
import { NbdProtocolError } from '../nbd/errors.ts';
import { ByteQueue, readU32 } from '../nbd/wire.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { NbdCommandError, NbdConnectionLost } from './errors.ts';
import type { ExportInfo } from './handshake.ts';
import { onSocketBytes } from './transport.ts';

/** Non-data reply chunks (block status, errors) larger than this are not from a sane server. */
const MAX_CHUNK_PAYLOAD = 16 << 20;
/** Writes smaller than this wait for the end of the turn to leave with the others. */
const BATCH_BELOW = 16 * 1024;

export interface ConnectionCounters {
  requests: number;
  /** Replies that broke the protocol (bad magic, unknown cookie, chunks outside the request...). */
  protocolErrors: number;
}

interface Pending {
  readonly type: number;
  readonly offset: number;
  readonly length: number;
  /** A read's destination; undefined for other commands. */
  readonly target: DataTarget | undefined;
  readonly resolve: (extents: BlockExtent[] | undefined) => void;
  readonly reject: (err: Error) => void;
  /** Bytes of a read that data or hole chunks have filled. */
  covered: number;
  error: NbdCommandError | undefined;
  extents: BlockExtent[] | undefined;
}

export class NbdConnection implements ReplySink {
  readonly info: ExportInfo;
  readonly #socket: Socket;
  readonly #where: string;
  readonly #counters: ConnectionCounters;
  readonly #reader: ReplyReader;
  readonly #pending = new Map<number, Pending>();
  readonly #onLost: (() => void)[] = [];
  readonly #request: RequestHeader = { flags: 0, type: 0, cookieHi: 0, cookieLo: 0, offset: 0, length: 0 };
  #nextCookie = 1;
  #lost: string | undefined;
  #corked = false;
  readonly #uncork = (): void => {
    this.#corked = false;
    this.#socket.uncork();
  };

  constructor(socket: Socket, info: ExportInfo, where: string, counters: ConnectionCounters, early = new ByteQueue()) {
    this.#socket = socket;
    this.info = info;
    this.#where = where;
    this.#counters = counters;
    this.#reader = new ReplyReader(this, MAX_CHUNK_PAYLOAD, early);
    socket.setNoDelay?.(true);
    onSocketBytes(socket, (bytes) => this.#reader.push(bytes));
    socket.on('error', () => undefined); // 'close' follows and says it
    socket.on('close', () => this.shutdown('the connection was closed'));
    if (socket.destroyed) this.shutdown('the connection was closed');
    else this.#reader.drain();
  }

  get lost(): boolean {
    return this.#lost !== undefined;
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  onLost(fn: () => void): void {
    if (this.#lost !== undefined) fn();
    else this.#onLost.push(fn);
  }

  /** Reads [offset, offset+length) into `iov` from byte `at` of it. */
  read(offset: number, length: number, iov: readonly Uint8Array[], at: number): Promise<void> {
    // resolves with undefined (a read has no extents): no .then() to make it a Promise<void>
    return this.#send(Command.NBD_CMD_READ, 0, offset, length, { iov, at }, undefined) as Promise<unknown> as Promise<void>;
  }

  write(offset: number, iov: readonly Uint8Array[], fua: boolean): Promise<void> {
    let length = 0;
    for (const b of iov) length += b.byteLength;
    return this.#send(Command.NBD_CMD_WRITE, fua ? CommandFlag.NBD_CMD_FLAG_FUA : 0, offset, length, undefined, iov) as Promise<unknown> as Promise<void>;
  }

  /** A command without data either way: FLUSH, TRIM, WRITE_ZEROES, CACHE. */
  command(type: number, offset: number, length: number, flags = 0): Promise<void> {
    return this.#send(type, flags, offset, length, undefined, undefined).then(nothing);
  }

  /** base:allocation extents from `offset` (needs the context negotiated). */
  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return (await this.#send(Command.NBD_CMD_BLOCK_STATUS, 0, offset, length, undefined, undefined)) ?? [];
  }

  /** Ends the connection politely (NBD_CMD_DISC); requests still in flight fail as lost. */
  disconnect(): void {
    if (this.#lost !== undefined) return;
    const header = Buffer.allocUnsafe(REQUEST_HEADER_LENGTH);
    const r = this.#request;
    r.flags = 0;
    r.type = Command.NBD_CMD_DISC;
    r.cookieHi = 0;
    r.cookieLo = 0;
    r.offset = 0;
    r.length = 0;
    writeRequestHeader(header, 0, r);
    this.#socket.end(header);
    this.shutdown('disconnected');
  }

  /** Drops the connection; every request in flight fails with NbdConnectionLost. */
  shutdown(why: string): void {
    if (this.#lost !== undefined) return;
    this.#lost = why;
    this.#reader.stop();
    if (!this.#socket.destroyed && why !== 'disconnected') this.#socket.destroy();
    const err = new NbdConnectionLost(`${this.#where}: ${why}`);
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(err);
    for (const fn of this.#onLost.splice(0)) fn();
  }

  #send(
    type: number,
    flags: number,
    offset: number,
    length: number,
    target: DataTarget | undefined,
    data: readonly Uint8Array[] | undefined,
  ): Promise<BlockExtent[] | undefined> {
    if (this.#lost !== undefined) return Promise.reject(new NbdConnectionLost(`${this.#where}: ${this.#lost}`));
    let cookie = this.#nextCookie;
    // after 2^32 requests the counter wraps: never reuse one still in flight
    while (this.#pending.has(cookie)) cookie = cookie === 0xffffffff ? 1 : cookie + 1;
    this.#nextCookie = cookie === 0xffffffff ? 1 : cookie + 1;
    this.#counters.requests++;
    return new Promise((resolve, reject) => {
      this.#pending.set(cookie, { type, offset, length, target, resolve, reject, covered: 0, error: undefined, extents: undefined });
      // a header of its own: the socket may hold it queued after this returns
      const header = Buffer.allocUnsafe(REQUEST_HEADER_LENGTH);
      const r = this.#request;
      r.flags = flags;
      r.type = type;
      r.cookieHi = 0;
      r.cookieLo = cookie;
      r.offset = offset;
      r.length = length;
      writeRequestHeader(header, 0, r);
      const socket = this.#socket;
      // Requests issued in one turn of the event loop leave together: the socket stays corked
      // until the turn ends, then one writev carries every header and the data straight from the
      // callers' buffers (one system call for a whole queue's worth, not one per request).
      // Large writes go at once (their data dwarfs the header; batching them only delays them).
      if (length >= BATCH_BELOW && data !== undefined && !this.#corked) {
        socket.cork();
        socket.write(header);
        for (const b of data) socket.write(b);
        socket.uncork();
        return;
      }
      if (!this.#corked) {
        this.#corked = true;
        socket.cork();
        process.nextTick(this.#uncork);
      }
      socket.write(header);
      if (data !== undefined) for (const b of data) socket.write(b);
    });
  }

  #violation(message: string): void {
    this.#counters.protocolErrors++;
    this.shutdown(`the server broke the protocol: ${message}`);
  }

  // ---- ReplySink ----------------------------------------------------------------------

  simpleReplyTarget(cookieHi: number, cookieLo: number): { length: number; target: DataTarget } | undefined {
    const p = cookieHi === 0 ? this.#pending.get(cookieLo) : undefined;
    if (p === undefined) return undefined;
    if (p.target === undefined) return { length: 0, target: NO_TARGET };
    p.covered = p.length;
    return { length: p.length, target: p.target };
  }

  onSimpleReply(error: number, cookieHi: number, cookieLo: number): void {
    const p = cookieHi === 0 ? this.#pending.get(cookieLo) : undefined;
    if (p === undefined) return this.#violation(`a reply for cookie ${cookieHi}:${cookieLo}, which is not in flight`);
    this.#pending.delete(cookieLo);
    if (error !== 0) p.reject(new NbdCommandError(`${this.#where}: ${commandName(p.type)} at ${p.offset}+${p.length}`, error, ''));
    else if (p.type === Command.NBD_CMD_BLOCK_STATUS) p.reject(new BlockError('BLK_ERR_NBD_PROTOCOL', `${this.#where}: block status answered without extents`));
    else p.resolve(undefined);
  }

  offsetDataTarget(header: ChunkHeader, offset: number, length: number): DataTarget | null {
    const p = this.#chunkRequest(header);
    if (p === undefined) return null;
    if (p.target === undefined) {
      this.#violation(`data for ${commandName(p.type)}`);
      return null;
    }
    if (offset < p.offset || offset + length > p.offset + p.length) {
      this.#violation(`data for ${offset}+${length} in a read of ${p.offset}+${p.length}`);
      return null;
    }
    p.covered += length;
    return { iov: p.target.iov, at: p.target.at + (offset - p.offset) };
  }

  onOffsetData(header: ChunkHeader): void {
    if (this.#lost !== undefined) return;
    if ((header.flags & NBD_REPLY_FLAG_DONE) !== 0) this.#done(header);
  }

  onChunk(header: ChunkHeader, payload: Buffer): void {
    const p = this.#chunkRequest(header);
    if (p === undefined) return;
    try {
      if ((header.type & NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
        const known = header.type === ReplyType.NBD_REPLY_TYPE_ERROR || header.type === ReplyType.NBD_REPLY_TYPE_ERROR_OFFSET;
        const e = known ? decodeErrorChunk(header.type, payload) : { error: payload.length >= 4 ? readU32(payload, 0) : 5, message: '' };
        // an error chunk with error 0 is itself a protocol error; report it as EIO
        p.error ??= new NbdCommandError(`${this.#where}: ${commandName(p.type)} at ${p.offset}+${p.length}`, e.error === 0 ? 5 : e.error, e.message);
      } else if (header.type === ReplyType.NBD_REPLY_TYPE_OFFSET_HOLE) {
        const hole = decodeOffsetHole(payload);
        if (p.target === undefined || hole.offset < p.offset || hole.offset + hole.length > p.offset + p.length)
          return this.#violation(`a hole at ${hole.offset}+${hole.length} for ${commandName(p.type)} at ${p.offset}+${p.length}`);
        fill(p.target.iov, p.target.at + (hole.offset - p.offset), hole.length);
        p.covered += hole.length;
      } else if (header.type === ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS) {
        if (p.type !== Command.NBD_CMD_BLOCK_STATUS) return this.#violation(`block status for ${commandName(p.type)}`);
        const bs = decodeBlockStatus(payload);
        if (bs.contextId === this.info.baseAllocationId) p.extents = toExtents(p.offset, p.length, bs.descriptors);
      } else if (header.type === ReplyType.NBD_REPLY_TYPE_NONE) {
        if (payload.length !== 0 || (header.flags & NBD_REPLY_FLAG_DONE) === 0) return this.#violation('a NONE chunk with a payload or without DONE');
      }
      // other non-error chunk types: the document lets a client ignore what it did not ask for
    } catch (err) {
      if (err instanceof NbdProtocolError) return this.#violation(err.message);
      throw err;
    }
    if ((header.flags & NBD_REPLY_FLAG_DONE) !== 0) this.#done(header);
  }

  onFramingError(_kind: string, message: string): void {
    this.#violation(message);
  }

  #chunkRequest(header: ChunkHeader): Pending | undefined {
    const p = header.cookieHi === 0 ? this.#pending.get(header.cookieLo) : undefined;
    if (p === undefined) this.#violation(`a reply chunk for cookie ${header.cookieHi}:${header.cookieLo}, which is not in flight`);
    return p;
  }

  #done(header: ChunkHeader): void {
    const p = this.#pending.get(header.cookieLo)!;
    this.#pending.delete(header.cookieLo);
    const what = `${this.#where}: ${commandName(p.type)} at ${p.offset}+${p.length}`;
    if (p.error !== undefined) p.reject(p.error);
    else if (p.target !== undefined && p.covered !== p.length)
      p.reject(new BlockError('BLK_ERR_NBD_PROTOCOL', `${what}: the server's reply covered ${p.covered} of ${p.length} bytes`, { errno: Errno.EIO }));
    else if (p.type === Command.NBD_CMD_BLOCK_STATUS && (p.extents === undefined || p.extents.length === 0))
      p.reject(new BlockError('BLK_ERR_NBD_PROTOCOL', `${what}: no base:allocation extents in the reply`, { errno: Errno.EIO }));
    else p.resolve(p.extents);
  }
}

const NO_TARGET: DataTarget = { iov: [], at: 0 };

function nothing(): void {}

function fill(iov: readonly Uint8Array[], at: number, length: number): void {
  let skip = at;
  let left = length;
  for (const b of iov) {
    if (left === 0) return;
    if (skip >= b.byteLength) {
      skip -= b.byteLength;
      continue;
    }
    const n = Math.min(left, b.byteLength - skip);
    b.fill(0, skip, skip + n);
    left -= n;
    skip = 0;
  }
}

/** Descriptors from `offset`, clipped to the request (the last may run past it). */
function toExtents(offset: number, length: number, descriptors: readonly { length: number; flags: number }[]): BlockExtent[] {
  const out: BlockExtent[] = [];
  let at = offset;
  const end = offset + length;
  for (const d of descriptors) {
    if (at >= end || d.length === 0) break;
    const n = Math.min(d.length, end - at);
    const allocated = (d.flags & NBD_STATE_HOLE) === 0;
    const last = out[out.length - 1];
    if (last !== undefined && last.allocated === allocated) out[out.length - 1] = { offset: last.offset, length: last.length + n, allocated };
    else out.push({ offset: at, length: n, allocated });
    at += n;
  }
  return out;
}
