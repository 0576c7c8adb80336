// The xenstore wire message: a 16-byte header followed by `len` payload bytes. Pure, no I/O.
//
//   offset  size  field
//        0     4  type     (XS_*)
//        4     4  req_id   echoed in the reply
//        8     4  tx_id    0 outside a transaction
//       12     4  len      payload bytes that follow, <= XENSTORE_PAYLOAD_MAX
//   all little-endian (struct xsd_sockmsg in xen/io/xs_wire.h, native order on x86 and ARM)

import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE } from './constants.ts';

const LE = true;

export interface XsHeader {
  readonly type: number;
  readonly reqId: number;
  readonly txId: number;
  readonly len: number;
}

export interface XsMessage {
  readonly type: number;
  readonly reqId: number;
  readonly txId: number;
  readonly payload: Uint8Array;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Encodes one message into a fresh buffer (the caller may hand it to a transport that keeps it). */
export function encodeMessage(type: number, reqId: number, txId: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(XS_HEADER_SIZE + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, type >>> 0, LE);
  dv.setUint32(4, reqId >>> 0, LE);
  dv.setUint32(8, txId >>> 0, LE);
  dv.setUint32(12, payload.length, LE);
  out.set(payload, XS_HEADER_SIZE);
  return out;
}

export function decodeHeader(bytes: Uint8Array, offset = 0): XsHeader {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, XS_HEADER_SIZE);
  return {
    type: dv.getUint32(0, LE),
    reqId: dv.getUint32(4, LE),
    txId: dv.getUint32(8, LE),
    len: dv.getUint32(12, LE),
  };
}

/** Each string followed by a nul: the `<foo>|*` notation of docs/misc/xenstore.txt. */
export function nulStrings(...parts: readonly string[]): Uint8Array {
  const encoded = parts.map((p) => utf8.encode(p));
  const out = new Uint8Array(encoded.reduce((n, e) => n + e.length + 1, 0));
  let at = 0;
  for (const e of encoded) {
    out.set(e, at);
    at += e.length + 1;
  }
  return out;
}

/** `<path>|<value|>`: the WRITE payload; the value carries no trailing nul. */
export function pathAndValue(path: string, value: Uint8Array): Uint8Array {
  const p = utf8.encode(path);
  const out = new Uint8Array(p.length + 1 + value.length);
  out.set(p, 0);
  out.set(value, p.length + 1);
  return out;
}

/** Splits a payload at nuls. A trailing nul ends the last string rather than starting an empty one. */
export function splitNul(payload: Uint8Array): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === 0) {
      out.push(utf8Decoder.decode(payload.subarray(start, i)));
      start = i + 1;
    }
  }
  if (start < payload.length) out.push(utf8Decoder.decode(payload.subarray(start)));
  return out;
}

/** The first nul-terminated string and the bytes after its nul (WRITE's path and value). */
export function splitFirst(payload: Uint8Array): { first: string; rest: Uint8Array } | undefined {
  const nul = payload.indexOf(0);
  if (nul < 0) return undefined;
  return { first: utf8Decoder.decode(payload.subarray(0, nul)), rest: payload.subarray(nul + 1) };
}

export function textBytes(s: string): Uint8Array {
  return utf8.encode(s);
}

export function bytesText(b: Uint8Array): string {
  return utf8Decoder.decode(b);
}

export interface XsDecoderHandlers {
  onMessage(msg: XsMessage): void;
  /** A header announced more than XENSTORE_PAYLOAD_MAX bytes; the payload is skipped, never buffered. */
  onOversize(header: XsHeader): void;
}

const State = { header: 0, payload: 1, skip: 2 } as const;
type StateValue = (typeof State)[keyof typeof State];

/**
 * Stream decoder: an explicit state machine over a list of received chunks. A message may arrive
 * split at any byte; consume(n) returns a zero-copy view when one chunk covers n bytes and copies
 * only across chunk boundaries.
 */
export class XsDecoder {
  readonly #handlers: XsDecoderHandlers;
  readonly #maxPayload: number;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #state: StateValue = State.header;
  #header: XsHeader | undefined;
  #skipLeft = 0;

  constructor(handlers: XsDecoderHandlers, maxPayload: number = XENSTORE_PAYLOAD_MAX) {
    this.#handlers = handlers;
    this.#maxPayload = maxPayload;
  }

  /** Bytes held waiting for the rest of a message (at most one header plus one capped payload). */
  get buffered(): number {
    return this.#buffered;
  }

  /** True when next() would hand over a message or an oversize header (a whole one is buffered). */
  get ready(): boolean {
    if (this.#state === State.payload) return this.#buffered >= (this.#header as XsHeader).len;
    const skip = this.#state === State.skip ? this.#skipLeft : 0;
    if (this.#buffered < skip + XS_HEADER_SIZE) return false;
    const len = this.#peekU32(skip + 12);
    return len > this.#maxPayload || this.#buffered >= skip + XS_HEADER_SIZE + len;
  }

  /** The little-endian u32 at `offset` into the buffered bytes (which hold it), not consumed. */
  #peekU32(offset: number): number {
    let v = 0;
    let at = offset;
    let i = 0;
    for (const c of this.#chunks) {
      while (at < c.length && i < 4) {
        v += (c[at] as number) * 2 ** (8 * i);
        at++;
        i++;
      }
      if (i === 4) break;
      at -= c.length;
    }
    return v;
  }

  /** Decodes everything `chunk` completes, at once. */
  push(chunk: Uint8Array): void {
    this.append(chunk);
    while (this.next());
  }

  /** Keeps `chunk` for next(): the pull side of the decoder, for a reader that takes turns. */
  append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /**
   * Decodes at most one message (or one oversize header) from what was appended and hands it to the
   * handlers. Returns false when more bytes are needed first.
   */
  next(): boolean {
    for (;;) {
      if (this.#state === State.skip) {
        const n = Math.min(this.#skipLeft, this.#buffered);
        this.#discard(n);
        this.#skipLeft -= n;
        if (this.#skipLeft > 0) return false;
        this.#state = State.header;
      }
      if (this.#state === State.header) {
        if (this.#buffered < XS_HEADER_SIZE) return false;
        const header = decodeHeader(this.#consume(XS_HEADER_SIZE));
        if (header.len > this.#maxPayload) {
          this.#skipLeft = header.len;
          this.#state = State.skip;
          this.#handlers.onOversize(header);
          return true;
        }
        this.#header = header;
        this.#state = State.payload;
      }
      const header = this.#header;
      if (header === undefined) throw new Error('UB: payload state without header');
      if (this.#buffered < header.len) return false;
      const payload = header.len === 0 ? new Uint8Array(0) : this.#consume(header.len);
      this.#header = undefined;
      this.#state = State.header;
      this.#handlers.onMessage({ type: header.type, reqId: header.reqId, txId: header.txId, payload });
      return true;
    }
  }

  /** Forgets everything buffered (the connection is gone). */
  clear(): void {
    this.#chunks = [];
    this.#buffered = 0;
    this.#state = State.header;
    this.#header = undefined;
    this.#skipLeft = 0;
  }

  #consume(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first === undefined) throw new Error('UB: consume with no chunks');
    if (first.length >= n) {
      const view = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return view;
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const c = this.#chunks[0];
      if (c === undefined) throw new Error('UB: consume past buffered data');
      const take = Math.min(c.length, n - at);
      out.set(c.subarray(0, take), at);
      at += take;
      if (take === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(take);
    }
    this.#buffered -= n;
    return out;
  }

  #discard(n: number): void {
    let left = n;
    while (left > 0) {
      const c = this.#chunks[0];
      if (c === undefined) break;
      if (c.length <= left) {
        this.#chunks.shift();
        left -= c.length;
      } else {
        this.#chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    this.#buffered -= n;
  }
}
