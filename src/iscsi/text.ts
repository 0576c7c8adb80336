// The key=value text carried in Login and Text PDU data segments (RFC 7143 §6.1 and §6.2), sans IO.
//
//   data segment:  K e y = v a l u e \0 K e y 2 = v 2 \0 ...
//                  └── key ──┘ └ value ┘  one NUL ends every pair, the last one included
//
// A text may span several PDUs: a PDU with the C bit set continues in the next one, and a pair may be
// cut anywhere, even inside a key (§11.10.2, §11.12.2). TextAccumulator joins the segments; the text
// is split into pairs, at NULs only, once the final segment (C = 0) is in.
//
// Decoding never throws: it returns the pairs or a TextError naming the offset, the key when known,
// and why. Encoding is for our own pairs and throws a BlockError on a pair we should never build.
import { BlockError, Errno } from '../internal/errors.ts';

/** One key=value pair, as [key, value]. */
export type TextPair = readonly [key: string, value: string];

export const TextLimit = {
  /** Key names are at most 63 bytes (§6.1). */
  KEY_MAX: 63,
  /** A simple value (one element of a list) is at most 255 bytes unless a key says otherwise (§6.1). */
  SIMPLE_VALUE_MAX: 255,
  /** Our bound on a whole value of an ordinary key (a list of simple values). */
  VALUE_MAX: 8192,
  /** Every implementation must accept at least 8192 bytes of key=value text in a negotiation... */
  TEXT_MIN_SUPPORTED: 8192,
  /** ...and 64 KiB when an authentication method needs long items (§6.1): our default bound. */
  TEXT_MAX_DEFAULT: 65536,
} as const;

/**
 * Keys whose values are large binary values (CHAP challenge and response, SRP and Kerberos items):
 * exempt from the 255-byte simple-value bound; the whole text's bound still applies. The CHAP
 * stepper enforces CHAP's own 1024-byte limit on the decoded value.
 */
export const LARGE_VALUE_KEYS: ReadonlySet<string> = new Set([
  'CHAP_C',
  'CHAP_R',
  'SRP_N',
  'SRP_g',
  'SRP_s',
  'SRP_A',
  'SRP_B',
  'SRP_M',
  'SRP_HM',
  'KRB_AP_REQ',
  'KRB_AP_REP',
]);

/** The reserved constants that may only appear as answers (§6.2); "None" is an ordinary value. */
export const ReservedValue = {
  NOT_UNDERSTOOD: 'NotUnderstood',
  IRRELEVANT: 'Irrelevant',
  REJECT: 'Reject',
} as const;
export type ReservedValue = (typeof ReservedValue)[keyof typeof ReservedValue];

export function isReservedValue(value: string): value is ReservedValue {
  return value === 'NotUnderstood' || value === 'Irrelevant' || value === 'Reject';
}

export type TextErrorCode = 'MISSING_EQUALS' | 'EMPTY_KEY' | 'KEY_TOO_LONG' | 'BAD_KEY' | 'VALUE_TOO_LONG' | 'NOT_UTF8' | 'NO_NUL_TERMINATOR' | 'TEXT_TOO_LONG';

export interface TextError {
  readonly code: TextErrorCode;
  /** Byte offset in the (joined) text where the offending pair starts. */
  readonly offset: number;
  /** The key, when it could be read. */
  readonly key?: string;
  readonly message: string;
}

export type TextDecodeResult = { readonly ok: true; readonly pairs: TextPair[] } | { readonly ok: false; readonly error: TextError };

const EQUALS = 0x3d;
const NUL = 0x00;
const utf8 = new TextDecoder('utf-8', { fatal: true });

// standard-label characters (§6.1): letters, digits, '.', '-', '+', '@', '_'.
function isLabelByte(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2e || b === 0x2d || b === 0x2b || b === 0x40 || b === 0x5f;
}

/**
 * Key syntax: label characters, starting with a letter. §6.1 says a standard-label starts with a
 * capital letter, but §13.24's own iSCSIProtocolLevel does not, so we only ask for a letter.
 * "X-vendor.name" is plain label syntax; "X#name" (IANA-registered public extensions, like §13.26's
 * X#NodeArchitecture) has '#' as the second byte, which we allow after any capital letter.
 */
export function isValidKey(key: string): boolean {
  if (key.length === 0 || key.length > TextLimit.KEY_MAX) return false;
  const c0 = key.charCodeAt(0);
  if (!((c0 >= 0x41 && c0 <= 0x5a) || (c0 >= 0x61 && c0 <= 0x7a))) return false;
  for (let i = 1; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (i === 1 && c === 0x23 && c0 <= 0x5a) continue;
    if (!isLabelByte(c)) return false;
  }
  return true;
}

function err(code: TextErrorCode, offset: number, message: string, key?: string): TextDecodeResult {
  return { ok: false, error: key === undefined ? { code, offset, message } : { code, offset, key, message } };
}

function valueTooLong(key: string, value: string): string | null {
  if (LARGE_VALUE_KEYS.has(key)) return null;
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > TextLimit.VALUE_MAX) return `value of ${key} is ${bytes} bytes (at most ${TextLimit.VALUE_MAX})`;
  let start = 0;
  for (;;) {
    const comma = value.indexOf(',', start);
    const end = comma === -1 ? value.length : comma;
    const n = Buffer.byteLength(value.slice(start, end), 'utf8');
    if (n > TextLimit.SIMPLE_VALUE_MAX) {
      return `a value of ${key} is ${n} bytes (a simple value is at most ${TextLimit.SIMPLE_VALUE_MAX})`;
    }
    if (comma === -1) return null;
    start = comma + 1;
  }
}

/**
 * Split a complete text (the joined data segments of a Login or Text sequence) into pairs.
 * Every pair must end with a NUL, the last one included. Empty entries (two NULs in a row, or
 * NULs padding the end) are skipped, as open-iscsi and LIO do.
 */
export function decodeText(data: Uint8Array): TextDecodeResult {
  const pairs: TextPair[] = [];
  let pos = 0;
  const n = data.length;
  while (pos < n) {
    if (data[pos] === NUL) {
      pos++;
      continue;
    }
    const end = data.indexOf(NUL, pos);
    const stop = end === -1 ? n : end;
    const eq = data.subarray(pos, stop).indexOf(EQUALS);
    if (eq === -1) {
      if (end === -1) return err('NO_NUL_TERMINATOR', pos, `text ends without a NUL after offset ${pos}`);
      return err('MISSING_EQUALS', pos, `no '=' in the entry at offset ${pos}`);
    }
    if (eq === 0) return err('EMPTY_KEY', pos, `empty key at offset ${pos}`);
    let key: string;
    try {
      key = utf8.decode(data.subarray(pos, pos + eq));
    } catch {
      return err('NOT_UTF8', pos, `key at offset ${pos} is not UTF-8`);
    }
    if (eq > TextLimit.KEY_MAX) return err('KEY_TOO_LONG', pos, `key at offset ${pos} is ${eq} bytes (at most ${TextLimit.KEY_MAX})`, key);
    if (!isValidKey(key)) return err('BAD_KEY', pos, `key ${JSON.stringify(key)} at offset ${pos} is not a valid key name`, key);
    if (end === -1) return err('NO_NUL_TERMINATOR', pos, `${key}: text ends without a NUL`, key);
    let value: string;
    try {
      value = utf8.decode(data.subarray(pos + eq + 1, stop));
    } catch {
      return err('NOT_UTF8', pos, `value of ${key} at offset ${pos} is not UTF-8`, key);
    }
    const tooLong = valueTooLong(key, value);
    if (tooLong !== null) return err('VALUE_TOO_LONG', pos, tooLong, key);
    pairs.push([key, value]);
    pos = end + 1;
  }
  return { ok: true, pairs };
}

/**
 * Encode pairs as key=value\0... A pair we would never legitimately send (bad key, NUL in the
 * value, an over-long value) is a bug on our side: BlockError, not a wire error.
 */
export function encodeText(pairs: Iterable<TextPair>): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (const [key, value] of pairs) {
    if (!isValidKey(key)) throw new BlockError('BLK_ERR_ISCSI_TEXT', `encodeText: invalid key ${JSON.stringify(key)}`, { errno: Errno.EINVAL });
    if (value.includes('\0')) throw new BlockError('BLK_ERR_ISCSI_TEXT', `encodeText: NUL in the value of ${key}`, { errno: Errno.EINVAL });
    const tooLong = valueTooLong(key, value);
    if (tooLong !== null) throw new BlockError('BLK_ERR_ISCSI_TEXT', `encodeText: ${tooLong}`, { errno: Errno.EINVAL });
    const b = Buffer.from(`${key}=${value}\0`, 'utf8');
    parts.push(b);
    total += b.length;
  }
  return Buffer.concat(parts, total);
}

/**
 * Cut an encoded text into data segments of at most `max` bytes (the receiver's
 * MaxRecvDataSegmentLength), every segment but the last to be sent with the C bit. Cuts fall after a
 * NUL where a whole pair fits, so receivers that parse each PDU on its own (open-iscsi's login code
 * does) still see whole pairs; a single pair longer than `max` is cut inside, as §6.1 allows.
 */
export function segmentText(data: Uint8Array, max: number): Uint8Array[] {
  if (!Number.isInteger(max) || max < 1) throw new BlockError('BLK_ERR_ISCSI_TEXT', `segmentText: bad segment size ${max}`, { errno: Errno.EINVAL });
  if (data.length <= max) return [data];
  const out: Uint8Array[] = [];
  let start = 0;
  while (data.length - start > max) {
    const limit = start + max;
    // Last NUL inside [start, limit): cut right after it.
    const nul = data.subarray(start, limit).lastIndexOf(NUL);
    const cut = nul === -1 ? limit : start + nul + 1;
    out.push(data.subarray(start, cut));
    start = cut;
  }
  out.push(data.subarray(start));
  return out;
}

export type AccumulateResult =
  | { readonly status: 'partial' }
  | { readonly status: 'complete'; readonly pairs: TextPair[]; readonly bytes: number }
  | { readonly status: 'error'; readonly error: TextError };

export interface TextAccumulatorOptions {
  /** Bound on the joined text, checked before buffering a segment (default 64 KiB). */
  readonly maxBytes?: number;
}

/**
 * Joins the data segments of a Login or Text sequence (C bit set on all but the last). Two ways to
 * use it: feed(segment, cBit) does everything and decodes once the last segment arrives; or
 * push() each segment, then take() the joined bytes for decodeText().
 */
export class TextAccumulator {
  readonly maxBytes: number;
  #chunks: Uint8Array[] = [];
  #length = 0;

  constructor(options: number | TextAccumulatorOptions = {}) {
    this.maxBytes = typeof options === 'number' ? options : (options.maxBytes ?? TextLimit.TEXT_MAX_DEFAULT);
  }

  /** Bytes held so far. */
  get length(): number {
    return this.#length;
  }

  /**
   * Append a copy of `chunk` (the caller's receive buffer is reused for the next PDU). Returns false,
   * appending nothing, when the text would exceed maxBytes.
   */
  push(chunk: Uint8Array): boolean {
    if (this.#length + chunk.length > this.maxBytes) return false;
    if (chunk.length > 0) this.#chunks.push(Uint8Array.from(chunk));
    this.#length += chunk.length;
    return true;
  }

  /** The joined bytes so far; the accumulator is empty afterwards. */
  take(): Uint8Array {
    let joined: Uint8Array;
    if (this.#chunks.length === 1) {
      joined = this.#chunks[0]!;
    } else {
      joined = new Uint8Array(this.#length);
      let off = 0;
      for (const c of this.#chunks) {
        joined.set(c, off);
        off += c.length;
      }
    }
    this.reset();
    return joined;
  }

  /** Add one PDU's data segment; `continued` is that PDU's C bit. Decodes after the last one. */
  feed(segment: Uint8Array, continued: boolean): AccumulateResult {
    const total = this.#length + segment.length;
    if (!this.push(segment)) {
      this.reset();
      return {
        status: 'error',
        error: { code: 'TEXT_TOO_LONG', offset: this.maxBytes, message: `text of ${total}+ bytes exceeds the bound of ${this.maxBytes}` },
      };
    }
    if (continued) return { status: 'partial' };
    const r = decodeText(this.take());
    return r.ok ? { status: 'complete', pairs: r.pairs, bytes: total } : { status: 'error', error: r.error };
  }

  reset(): void {
    this.#chunks = [];
    this.#length = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Value encodings (§6.1).

/** boolean-value: "Yes" or "No", case as written. */
export function parseBoolean(value: string): boolean | null {
  if (value === 'Yes') return true;
  if (value === 'No') return false;
  return null;
}

export function formatBoolean(b: boolean): 'Yes' | 'No' {
  return b ? 'Yes' : 'No';
}

const TWO_64 = 1n << 64n;

/**
 * numerical-value: an unsigned integer below 2^64 as a decimal-constant or a hex-constant ("0x" or
 * "0X"). Returns a number, exact up to 2^53 and approximate above (every key's range is far below
 * that, so range checks stay right); null for anything else, including base64.
 */
export function parseNumber(value: string): number | null {
  let big: bigint;
  if (/^0[xX][0-9a-fA-F]+$/.test(value)) big = BigInt(`0x${value.slice(2)}`);
  else if (/^[0-9]+$/.test(value)) big = BigInt(value);
  else return null;
  return big < TWO_64 ? Number(big) : null;
}

/** numeric-range: "a~b" with a <= b. */
export function parseNumericRange(value: string): readonly [number, number] | null {
  const tilde = value.indexOf('~');
  if (tilde === -1) return null;
  const lo = parseNumber(value.slice(0, tilde));
  const hi = parseNumber(value.slice(tilde + 1));
  if (lo === null || hi === null || lo > hi) return null;
  return [lo, hi];
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = new Int8Array(128).fill(-1);
for (let i = 0; i < B64.length; i++) B64_INDEX[B64.charCodeAt(i)] = i;

function decodeHexDigits(digits: string): Uint8Array | null {
  if (digits.length === 0 || !/^[0-9a-fA-F]+$/.test(digits)) return null;
  // An odd count has an implied leading zero nibble: n digits are (n + 1) / 2 bytes (§6.1).
  const even = digits.length % 2 === 1 ? `0${digits}` : digits;
  return Uint8Array.from(Buffer.from(even, 'hex'));
}

function decodeBase64Digits(s: string): Uint8Array | null {
  // RFC 4648 base64; padding is optional, but any '=' must be trailing padding.
  let body = s;
  const pad = /=+$/.exec(s);
  if (pad !== null) {
    if (pad[0].length > 2 || s.length % 4 !== 0) return null;
    body = s.slice(0, s.length - pad[0].length);
  }
  if (body.length === 0 || body.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((body.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c]! : -1;
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >>> bits) & 0xff;
    }
  }
  // Leftover bits must be zero (canonical encoding).
  if ((acc & ((1 << bits) - 1)) !== 0) return null;
  return out;
}

/**
 * binary-value: a hex-constant ("0x"/"0X") or a base64-constant ("0b"/"0B"), decoded to bytes.
 * `maxBytes` bounds the decoded length (CHAP's is 1024). Null if malformed or too long.
 */
export function parseBinary(value: string, maxBytes = Number.MAX_SAFE_INTEGER): Uint8Array | null {
  if (value.length < 3 || value[0] !== '0') return null;
  const kind = value[1];
  let bytes: Uint8Array | null;
  if (kind === 'x' || kind === 'X') {
    if (Math.ceil((value.length - 2) / 2) > maxBytes) return null;
    bytes = decodeHexDigits(value.slice(2));
  } else if (kind === 'b' || kind === 'B') {
    if (Math.floor(((value.length - 2) * 3) / 4) > maxBytes + 2) return null;
    bytes = decodeBase64Digits(value.slice(2));
  } else {
    return null;
  }
  return bytes !== null && bytes.length <= maxBytes ? bytes : null;
}

/** Bytes as a hex-constant, the way we send binary values ("0x" and lowercase digits). */
export function formatHex(bytes: Uint8Array): string {
  return `0x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')}`;
}

/** Bytes as a base64-constant ("0b" and padded RFC 4648 base64). */
export function formatBase64(bytes: Uint8Array): string {
  return `0b${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')}`;
}

/** list-of-values: comma-separated simple values; null if any element is empty. */
export function splitList(value: string): string[] | null {
  const parts = value.split(',');
  for (const p of parts) if (p.length === 0) return null;
  return parts;
}
