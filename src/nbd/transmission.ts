// The NBD transmission phase as bytes (proto.md "Transmission", "Request message", "Simple reply
// message", "Structured reply chunk message"), both directions. Header writers fill a caller's
// buffer at an offset (the hot path reuses one), `encode*` return exact-size Buffers.
//
//   request (28)             magic 0x25609513 u32 | flags u16 | type u16 | cookie u64 | offset u64 | length u32
//   simple reply (16)        magic 0x67446698 u32 | error u32 | cookie u64          (+ data for a read)
//   structured chunk (20+n)  magic 0x668e33ef u32 | flags u16 | type u16 | cookie u64 | length u32 | payload[n]
//     OFFSET_DATA   offset u64 | data            OFFSET_HOLE  offset u64 | hole size u32
//     BLOCK_STATUS  context id u32 | (length u32 | status flags u32)*
//     ERROR         error u32 | message length u16 | message
//     ERROR_OFFSET  error u32 | message length u16 | message | offset u64
//     NONE          (empty; only with NBD_REPLY_FLAG_DONE)
//
// Cookies ("handles" in older versions) are opaque: two u32 halves, cookieHi and cookieLo.
import {
  NBD_MAX_STRING,
  NBD_REPLY_FLAG_DONE,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  REQUEST_HEADER_LENGTH,
  ReplyType,
  SIMPLE_REPLY_LENGTH,
  STRUCTURED_REPLY_HEADER_LENGTH,
} from './constants.ts';
import { NbdProtocolError } from './errors.ts';
import { readU16, readU32, readU64, writeU16, writeU32, writeU64 } from './wire.ts';

/** A decoded request header; the reader fills one object again and again (copy what you keep). */
export interface RequestHeader {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  /** Exact below 2^53; larger offsets come out above Number.MAX_SAFE_INTEGER (see wire.ts). */
  offset: number;
  length: number;
}

export function newRequestHeader(): RequestHeader {
  return { flags: 0, type: 0, cookieHi: 0, cookieLo: 0, offset: 0, length: 0 };
}

export function writeRequestHeader(target: Uint8Array, at: number, request: Readonly<RequestHeader>): void {
  writeU32(target, at, NBD_REQUEST_MAGIC);
  writeU16(target, at + 4, request.flags);
  writeU16(target, at + 6, request.type);
  writeU32(target, at + 8, request.cookieHi);
  writeU32(target, at + 12, request.cookieLo);
  writeU64(target, at + 16, request.offset);
  writeU32(target, at + 24, request.length);
}

export function encodeRequest(request: Readonly<RequestHeader>): Buffer {
  const out = Buffer.allocUnsafe(REQUEST_HEADER_LENGTH);
  writeRequestHeader(out, 0, request);
  return out;
}

/** Fills `out` from the 28 bytes at `at`; false when the magic is wrong (the stream is lost: drop it). */
export function decodeRequestHeader(src: Uint8Array, at: number, out: RequestHeader): boolean {
  if (readU32(src, at) !== NBD_REQUEST_MAGIC) return false;
  out.flags = readU16(src, at + 4);
  out.type = readU16(src, at + 6);
  out.cookieHi = readU32(src, at + 8);
  out.cookieLo = readU32(src, at + 12);
  out.offset = readU64(src, at + 16);
  out.length = readU32(src, at + 24);
  return true;
}

export function writeSimpleReply(target: Uint8Array, at: number, error: number, cookieHi: number, cookieLo: number): void {
  writeU32(target, at, NBD_SIMPLE_REPLY_MAGIC);
  writeU32(target, at + 4, error);
  writeU32(target, at + 8, cookieHi);
  writeU32(target, at + 12, cookieLo);
}

export function encodeSimpleReply(error: number, cookieHi: number, cookieLo: number): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
  writeSimpleReply(out, 0, error, cookieHi, cookieLo);
  return out;
}

export function writeChunkHeader(target: Uint8Array, at: number, flags: number, type: number, cookieHi: number, cookieLo: number, length: number): void {
  writeU32(target, at, NBD_STRUCTURED_REPLY_MAGIC);
  writeU16(target, at + 4, flags);
  writeU16(target, at + 6, type);
  writeU32(target, at + 8, cookieHi);
  writeU32(target, at + 12, cookieLo);
  writeU32(target, at + 16, length);
}

/** Bytes before the data of an OFFSET_DATA chunk: the chunk header and the offset. */
export const OFFSET_DATA_HEADER_LENGTH = STRUCTURED_REPLY_HEADER_LENGTH + 8;

/** The 28 bytes that go before `dataLength` bytes of read data in an OFFSET_DATA chunk. */
export function writeOffsetDataHeader(
  target: Uint8Array,
  at: number,
  flags: number,
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataLength: number,
): void {
  writeChunkHeader(target, at, flags, ReplyType.NBD_REPLY_TYPE_OFFSET_DATA, cookieHi, cookieLo, 8 + dataLength);
  writeU64(target, at + STRUCTURED_REPLY_HEADER_LENGTH, offset);
}

export function encodeOffsetHoleChunk(flags: number, cookieHi: number, cookieLo: number, offset: number, holeSize: number): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH + 12);
  writeChunkHeader(out, 0, flags, ReplyType.NBD_REPLY_TYPE_OFFSET_HOLE, cookieHi, cookieLo, 12);
  writeU64(out, STRUCTURED_REPLY_HEADER_LENGTH, offset);
  writeU32(out, STRUCTURED_REPLY_HEADER_LENGTH + 8, holeSize);
  return out;
}

export interface BlockStatusDescriptor {
  readonly length: number;
  /** NBD_STATE_HOLE | NBD_STATE_ZERO for base:allocation. */
  readonly flags: number;
}

export function encodeBlockStatusChunk(
  flags: number,
  cookieHi: number,
  cookieLo: number,
  contextId: number,
  descriptors: readonly BlockStatusDescriptor[],
): Buffer {
  const length = 4 + 8 * descriptors.length;
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH + length);
  writeChunkHeader(out, 0, flags, ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS, cookieHi, cookieLo, length);
  writeU32(out, STRUCTURED_REPLY_HEADER_LENGTH, contextId);
  let at = STRUCTURED_REPLY_HEADER_LENGTH + 4;
  for (const descriptor of descriptors) {
    writeU32(out, at, descriptor.length);
    writeU32(out, at + 4, descriptor.flags);
    at += 8;
  }
  return out;
}

/** NBD_REPLY_TYPE_ERROR, or NBD_REPLY_TYPE_ERROR_OFFSET when `offset` is given. */
export function encodeErrorChunk(flags: number, cookieHi: number, cookieLo: number, error: number, message: string, offset?: number): Buffer {
  let text = Buffer.from(message, 'utf8');
  if (text.length > NBD_MAX_STRING) text = text.subarray(0, NBD_MAX_STRING);
  const length = 6 + text.length + (offset === undefined ? 0 : 8);
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH + length);
  const type = offset === undefined ? ReplyType.NBD_REPLY_TYPE_ERROR : ReplyType.NBD_REPLY_TYPE_ERROR_OFFSET;
  writeChunkHeader(out, 0, flags, type, cookieHi, cookieLo, length);
  writeU32(out, STRUCTURED_REPLY_HEADER_LENGTH, error);
  writeU16(out, STRUCTURED_REPLY_HEADER_LENGTH + 4, text.length);
  out.set(text, STRUCTURED_REPLY_HEADER_LENGTH + 6);
  if (offset !== undefined) writeU64(out, STRUCTURED_REPLY_HEADER_LENGTH + 6 + text.length, offset);
  return out;
}

/** The empty final chunk (NBD_REPLY_TYPE_NONE with NBD_REPLY_FLAG_DONE). */
export function encodeNoneChunk(cookieHi: number, cookieLo: number): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LENGTH);
  writeChunkHeader(out, 0, NBD_REPLY_FLAG_DONE, ReplyType.NBD_REPLY_TYPE_NONE, cookieHi, cookieLo, 0);
  return out;
}

// ---- decoding chunk payloads (the client's side) ------------------------------------------

/** OFFSET_DATA: the data is a view of the payload. */
export function decodeOffsetData(payload: Uint8Array): { offset: number; data: Uint8Array } {
  if (payload.length < 8) throw badChunk('OFFSET_DATA shorter than 8 bytes');
  return { offset: readU64(payload, 0), data: payload.subarray(8) };
}

export function decodeOffsetHole(payload: Uint8Array): { offset: number; length: number } {
  if (payload.length !== 12) throw badChunk(`OFFSET_HOLE of ${payload.length} bytes (12 expected)`);
  return { offset: readU64(payload, 0), length: readU32(payload, 8) };
}

export function decodeBlockStatus(payload: Uint8Array): { contextId: number; descriptors: BlockStatusDescriptor[] } {
  if (payload.length < 12 || (payload.length - 4) % 8 !== 0) throw badChunk(`BLOCK_STATUS of ${payload.length} bytes`);
  const descriptors: BlockStatusDescriptor[] = [];
  for (let at = 4; at < payload.length; at += 8) descriptors.push({ length: readU32(payload, at), flags: readU32(payload, at + 4) });
  return { contextId: readU32(payload, 0), descriptors };
}

/** ERROR and ERROR_OFFSET (pass the chunk type); `offset` only for ERROR_OFFSET. */
export function decodeErrorChunk(type: number, payload: Uint8Array): { error: number; message: string; offset?: number } {
  if (payload.length < 6) throw badChunk('error chunk shorter than 6 bytes');
  const messageLength = readU16(payload, 4);
  const extra = type === ReplyType.NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
  if (payload.length !== 6 + messageLength + extra) throw badChunk('error chunk length disagrees with its message length');
  const message = Buffer.from(payload.buffer, payload.byteOffset + 6, messageLength).toString('utf8');
  const error = readU32(payload, 0);
  return extra === 0 ? { error, message } : { error, message, offset: readU64(payload, 6 + messageLength) };
}

function badChunk(message: string): NbdProtocolError {
  // A chunk's declared length framed it correctly, but its content is wrong: the reply is
  // untrustworthy, and the document says the client should then disconnect.
  return new NbdProtocolError('bad-payload', message, true);
}
