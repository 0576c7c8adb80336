// The NBD handshake and option haggling as bytes (proto.md "Fixed newstyle negotiation", "Option
// haggling"), both directions. Encoders return exact-size Buffers; `read*` functions take whole
// messages from a ByteQueue and return undefined, consuming nothing, until all of one has arrived;
// `decode*` functions parse the data of one option request or reply, already whole.
//
//   server greeting (18)   NBDMAGIC u64 | IHAVEOPT u64 | handshake flags u16
//   client flags (4)       u32
//   option request (16+n)  IHAVEOPT u64 | option u32 | length u32 | data[n]
//   option reply (20+n)    0x3e889045565a9 u64 | option u32 | reply type u32 | length u32 | data[n]
//   EXPORT_NAME reply      size u64 | transmission flags u16 | 124 zero bytes unless NO_ZEROES
import {
  CLIENT_FLAGS_LENGTH,
  EXPORT_NAME_REPLY_ZEROES,
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  Info,
  NBD_MAX_STRING,
  NBD_REP_MAGIC_HI,
  NBD_REP_MAGIC_LO,
  NBDMAGIC_HI,
  NBDMAGIC_LO,
  OPTION_REPLY_HEADER_LENGTH,
  OPTION_REQUEST_HEADER_LENGTH,
  SERVER_GREETING_LENGTH,
} from './constants.ts';
import { NbdProtocolError } from './errors.ts';
import { type ByteQueue, readU16, readU32, readU64, writeU16, writeU32, writeU64 } from './wire.ts';

// ---- greeting and client flags -------------------------------------------------------------

export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const out = Buffer.allocUnsafe(SERVER_GREETING_LENGTH);
  writeU32(out, 0, NBDMAGIC_HI);
  writeU32(out, 4, NBDMAGIC_LO);
  writeU32(out, 8, IHAVEOPT_HI);
  writeU32(out, 12, IHAVEOPT_LO);
  writeU16(out, 16, handshakeFlags);
  return out;
}

/** The server's greeting; throws a fatal NbdProtocolError when it is not newstyle NBD. */
export function readServerGreeting(queue: ByteQueue): { handshakeFlags: number } | undefined {
  const bytes = queue.take(SERVER_GREETING_LENGTH);
  if (bytes === undefined) return undefined;
  if (readU32(bytes, 0) !== NBDMAGIC_HI || readU32(bytes, 4) !== NBDMAGIC_LO) {
    throw new NbdProtocolError('bad-magic', 'the server did not greet with NBDMAGIC: not an NBD server', true);
  }
  if (readU32(bytes, 8) !== IHAVEOPT_HI || readU32(bytes, 12) !== IHAVEOPT_LO) {
    throw new NbdProtocolError('bad-magic', 'the server speaks oldstyle NBD (no IHAVEOPT): only fixed newstyle is supported', true);
  }
  return { handshakeFlags: readU16(bytes, 16) };
}

export function encodeClientFlags(clientFlags: number): Buffer {
  const out = Buffer.allocUnsafe(CLIENT_FLAGS_LENGTH);
  writeU32(out, 0, clientFlags);
  return out;
}

export function readClientFlags(queue: ByteQueue): number | undefined {
  const bytes = queue.take(CLIENT_FLAGS_LENGTH);
  return bytes === undefined ? undefined : readU32(bytes, 0);
}

// ---- option requests and replies -----------------------------------------------------------

export function encodeOptionRequest(option: number, data: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(OPTION_REQUEST_HEADER_LENGTH + data.length);
  writeU32(out, 0, IHAVEOPT_HI);
  writeU32(out, 4, IHAVEOPT_LO);
  writeU32(out, 8, option);
  writeU32(out, 12, data.length);
  out.set(data, OPTION_REQUEST_HEADER_LENGTH);
  return out;
}

export interface OptionRequestHeader {
  readonly option: number;
  /** Bytes of data that follow; the caller checks its own limit before taking them. */
  readonly length: number;
}

/** The 16-byte header of an option request; throws a fatal NbdProtocolError without IHAVEOPT. */
export function readOptionRequestHeader(queue: ByteQueue): OptionRequestHeader | undefined {
  const bytes = queue.take(OPTION_REQUEST_HEADER_LENGTH);
  if (bytes === undefined) return undefined;
  if (readU32(bytes, 0) !== IHAVEOPT_HI || readU32(bytes, 4) !== IHAVEOPT_LO) {
    throw new NbdProtocolError('bad-magic', 'option request without IHAVEOPT', true);
  }
  return { option: readU32(bytes, 8), length: readU32(bytes, 12) };
}

export function encodeOptionReply(option: number, replyType: number, data: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(OPTION_REPLY_HEADER_LENGTH + data.length);
  writeU32(out, 0, NBD_REP_MAGIC_HI);
  writeU32(out, 4, NBD_REP_MAGIC_LO);
  writeU32(out, 8, option);
  writeU32(out, 12, replyType);
  writeU32(out, 16, data.length);
  out.set(data, OPTION_REPLY_HEADER_LENGTH);
  return out;
}

/** An error reply to an option: the data is a message for humans (may be empty). */
export function encodeOptionError(option: number, errorType: number, message: string): Buffer {
  return encodeOptionReply(option, errorType, boundedString(message));
}

export interface OptionReplyHeader {
  readonly option: number;
  readonly replyType: number;
  readonly length: number;
}

/** The 20-byte header of an option reply; throws a fatal NbdProtocolError on a bad magic. */
export function readOptionReplyHeader(queue: ByteQueue): OptionReplyHeader | undefined {
  const bytes = queue.take(OPTION_REPLY_HEADER_LENGTH);
  if (bytes === undefined) return undefined;
  if (readU32(bytes, 0) !== NBD_REP_MAGIC_HI || readU32(bytes, 4) !== NBD_REP_MAGIC_LO) {
    throw new NbdProtocolError('bad-magic', 'option reply with a bad magic', true);
  }
  return { option: readU32(bytes, 8), replyType: readU32(bytes, 12), length: readU32(bytes, 16) };
}

// ---- NBD_OPT_EXPORT_NAME ------------------------------------------------------------------

/** The server's answer to NBD_OPT_EXPORT_NAME (no option reply header: it ends the haggling). */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES));
  writeU64(out, 0, size);
  writeU16(out, 8, transmissionFlags);
  return out;
}

export function readExportNameReply(queue: ByteQueue, noZeroes: boolean): { size: number; transmissionFlags: number } | undefined {
  const length = 10 + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES);
  if (queue.length < length) return undefined;
  const bytes = queue.take(length)!;
  return { size: readU64(bytes, 0), transmissionFlags: readU16(bytes, 8) };
}

// ---- option request data ------------------------------------------------------------------

/** NBD_OPT_EXPORT_NAME's data is the bare name. */
export function encodeExportName(name: string): Buffer {
  return boundedString(name);
}

/** NBD_OPT_INFO and NBD_OPT_GO: u32 name length | name | u16 count | u16 info types[count]. */
export function encodeInfoRequest(exportName: string, infoTypes: readonly number[] = []): Buffer {
  const name = boundedString(exportName);
  const out = Buffer.allocUnsafe(4 + name.length + 2 + 2 * infoTypes.length);
  writeU32(out, 0, name.length);
  out.set(name, 4);
  writeU16(out, 4 + name.length, infoTypes.length);
  infoTypes.forEach((type, i) => writeU16(out, 6 + name.length + 2 * i, type));
  return out;
}

export interface InfoRequest {
  readonly exportName: string;
  readonly infoTypes: readonly number[];
}

/** Throws a non-fatal NbdProtocolError ('bad-payload'): answer NBD_REP_ERR_INVALID. */
export function decodeInfoRequest(data: Uint8Array): InfoRequest {
  const cursor = new Cursor(data);
  const exportName = cursor.string(cursor.u32());
  const count = cursor.u16();
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(cursor.u16());
  cursor.end();
  return { exportName, infoTypes };
}

/** NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: u32 name length | name | u32 count | (u32 length | query)[count]. */
export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Buffer {
  const parts = [lengthPrefixed(exportName), u32Buffer(queries.length), ...queries.map(lengthPrefixed)];
  return Buffer.concat(parts);
}

export interface MetaContextRequest {
  readonly exportName: string;
  readonly queries: readonly string[];
}

export function decodeMetaContextRequest(data: Uint8Array): MetaContextRequest {
  const cursor = new Cursor(data);
  const exportName = cursor.string(cursor.u32());
  const count = cursor.u32();
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(cursor.string(cursor.u32()));
  cursor.end();
  return { exportName, queries };
}

// ---- option reply data --------------------------------------------------------------------

/** NBD_REP_SERVER (an answer to NBD_OPT_LIST): u32 name length | name | details. */
export function encodeServerReply(exportName: string, details = ''): Buffer {
  return Buffer.concat([lengthPrefixed(exportName), boundedString(details)]);
}

export function decodeServerReply(data: Uint8Array): { exportName: string; details: string } {
  const cursor = new Cursor(data);
  const exportName = cursor.string(cursor.u32());
  const details = cursor.string(cursor.left());
  return { exportName, details };
}

/** NBD_REP_META_CONTEXT: u32 context id | name (the rest of the data). */
export function encodeMetaContextReply(contextId: number, name: string): Buffer {
  return Buffer.concat([u32Buffer(contextId), boundedString(name)]);
}

export function decodeMetaContextReply(data: Uint8Array): { contextId: number; name: string } {
  const cursor = new Cursor(data);
  const contextId = cursor.u32();
  return { contextId, name: cursor.string(cursor.left()) };
}

/** NBD_REP_INFO payloads: u16 info type, then the type's fields. */
export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const out = Buffer.allocUnsafe(12);
  writeU16(out, 0, Info.NBD_INFO_EXPORT);
  writeU64(out, 2, size);
  writeU16(out, 10, transmissionFlags);
  return out;
}

export function encodeInfoName(name: string): Buffer {
  return Buffer.concat([u16Buffer(Info.NBD_INFO_NAME), boundedString(name)]);
}

export function encodeInfoDescription(description: string): Buffer {
  return Buffer.concat([u16Buffer(Info.NBD_INFO_DESCRIPTION), boundedString(description)]);
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const out = Buffer.allocUnsafe(14);
  writeU16(out, 0, Info.NBD_INFO_BLOCK_SIZE);
  writeU32(out, 2, minimum);
  writeU32(out, 6, preferred);
  writeU32(out, 10, maximum);
  return out;
}

export type InfoReply =
  | { readonly type: 0; readonly size: number; readonly transmissionFlags: number }
  | { readonly type: 1; readonly name: string }
  | { readonly type: 2; readonly description: string }
  | { readonly type: 3; readonly minimum: number; readonly preferred: number; readonly maximum: number }
  /** A type this codec does not know: the document says clients ignore those. */
  | { readonly type: number; readonly unknown: Uint8Array };

export function decodeInfoReply(data: Uint8Array): InfoReply {
  const cursor = new Cursor(data);
  const type = cursor.u16();
  let reply: InfoReply;
  switch (type) {
    case Info.NBD_INFO_EXPORT:
      reply = { type, size: cursor.u64(), transmissionFlags: cursor.u16() };
      break;
    case Info.NBD_INFO_NAME:
      return { type, name: cursor.string(cursor.left()) };
    case Info.NBD_INFO_DESCRIPTION:
      return { type, description: cursor.string(cursor.left()) };
    case Info.NBD_INFO_BLOCK_SIZE:
      reply = { type, minimum: cursor.u32(), preferred: cursor.u32(), maximum: cursor.u32() };
      break;
    default:
      return { type, unknown: data.subarray(2) };
  }
  cursor.end();
  return reply;
}

// ---- helpers ------------------------------------------------------------------------------

const EMPTY = new Uint8Array(0);

/** UTF-8 bytes of a string the document limits to 4096 bytes; longer is a caller's bug. */
function boundedString(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > NBD_MAX_STRING) throw new RangeError(`NBD strings are at most ${NBD_MAX_STRING} bytes; this one has ${bytes.length}`);
  return bytes;
}

function lengthPrefixed(text: string): Buffer {
  const bytes = boundedString(text);
  return Buffer.concat([u32Buffer(bytes.length), bytes]);
}

function u32Buffer(value: number): Buffer {
  const out = Buffer.allocUnsafe(4);
  writeU32(out, 0, value);
  return out;
}

function u16Buffer(value: number): Buffer {
  const out = Buffer.allocUnsafe(2);
  writeU16(out, 0, value);
  return out;
}

/** Reads fields of one whole payload; any overrun or leftover is a non-fatal 'bad-payload'. */
class Cursor {
  #at = 0;
  readonly #data: Uint8Array;

  constructor(data: Uint8Array) {
    this.#data = data;
  }

  left(): number {
    return this.#data.length - this.#at;
  }

  u16(): number {
    this.#need(2);
    const value = readU16(this.#data, this.#at);
    this.#at += 2;
    return value;
  }

  u32(): number {
    this.#need(4);
    const value = readU32(this.#data, this.#at);
    this.#at += 4;
    return value;
  }

  u64(): number {
    this.#need(8);
    const value = readU64(this.#data, this.#at);
    this.#at += 8;
    return value;
  }

  string(length: number): string {
    if (length > NBD_MAX_STRING) throw new NbdProtocolError('bad-payload', `string of ${length} bytes (at most ${NBD_MAX_STRING})`, false);
    this.#need(length);
    const bytes = this.#data.subarray(this.#at, this.#at + length);
    this.#at += length;
    if (bytes.includes(0)) throw new NbdProtocolError('bad-payload', 'string contains NUL', false);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8');
  }

  end(): void {
    if (this.#at !== this.#data.length) throw new NbdProtocolError('bad-payload', `${this.#data.length - this.#at} bytes left over in the option data`, false);
  }

  #need(n: number): void {
    if (this.#at + n > this.#data.length) throw new NbdProtocolError('bad-payload', 'option data shorter than its fields', false);
  }
}
