// The control socket's wire format: one JSON object per line ("\n"-terminated, UTF-8) each way.
//
//   request   {"v":1,"id":7,"op":"stats","disk":"3/xvda"}
//   answer    {"v":1,"id":7,"ok":true,"result":[...]}
//   error     {"v":1,"id":7,"ok":false,"error":{"code":"CTL_ERR_UNKNOWN_DISK","message":"...","known":["3/51712"]}}
//
// `id` is the client's (a non-negative integer) and comes back unchanged, so answers can be matched
// even if a client pipelines. An answer to a line that could not be read at all carries id null.
// Requests are validated strictly (no unknown keys, no control characters, bounded strings and
// numbers): a bad request is answered with an error and the connection stays usable.
// A pure codec: no sockets, no clocks.
import { BlockError, Errno } from '../internal/errors.ts';
import { DOMID_FIRST_RESERVED } from '../abi/xen.ts';

export const CONTROL_VERSION = 1;
/** Longest request line the server reads; anything longer is answered CTL_ERR_TOO_LONG and skipped. */
export const MAX_REQUEST_LINE = 64 * 1024;
/** Longest answer line a client accepts (stats of many disks with histograms stay far below it). */
export const MAX_RESPONSE_LINE = 64 * 1024 * 1024;
const MAX_DISK_TEXT = 64;
const MAX_VDEV_TEXT = 32;
const MAX_SPEC_TEXT = 4096;
/** Requests are flat objects; deeper nesting is refused before JSON.parse builds it. */
const MAX_REQUEST_DEPTH = 2;

export const CONTROL_OPS = ['list', 'stats', 'attach', 'detach', 'resize', 'info', 'iscsi-status'] as const;
export type ControlOp = (typeof CONTROL_OPS)[number];

export const CONTROL_ERROR_CODES = [
  'CTL_ERR_BAD_JSON', // the line is not a JSON object
  'CTL_ERR_TOO_LONG', // the line is longer than MAX_REQUEST_LINE
  'CTL_ERR_VERSION', // "v" is not a version this server speaks
  'CTL_ERR_BAD_REQUEST', // missing or mistyped field, unknown key
  'CTL_ERR_UNKNOWN_OP', // "op" is not one of CONTROL_OPS
  'CTL_ERR_BAD_ARGUMENT', // well-formed, but the value is wrong (a vdev that is not a disk name, a bad disk spec)
  'CTL_ERR_UNKNOWN_DISK', // no such disk is served; "known" lists the disks that are
  'CTL_ERR_UNSUPPORTED', // the store or the toolstack cannot do it (resize of a fixed-size store)
  'CTL_ERR_FAILED', // the operation was tried and failed (the toolstack refused, a timeout)
  'CTL_ERR_INTERNAL', // a bug: the server logs the details
] as const;
export type ControlErrorCode = (typeof CONTROL_ERROR_CODES)[number];

export type ControlRequest =
  | { readonly v: number; readonly id: number; readonly op: 'list' }
  | { readonly v: number; readonly id: number; readonly op: 'stats'; readonly disk?: string }
  | { readonly v: number; readonly id: number; readonly op: 'attach'; readonly domid: number; readonly spec: string }
  | { readonly v: number; readonly id: number; readonly op: 'detach'; readonly domid: number; readonly vdev: string }
  | { readonly v: number; readonly id: number; readonly op: 'resize'; readonly disk: string; readonly size: number }
  | { readonly v: number; readonly id: number; readonly op: 'info' }
  | { readonly v: number; readonly id: number; readonly op: 'iscsi-status' };

/** A request without its envelope, as a client builds it. */
export type ControlCall = DistributiveOmit<ControlRequest, 'v' | 'id'>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export interface ControlErrorBody {
  readonly code: ControlErrorCode;
  readonly message: string;
  /** The underlying BlockError's code, when the failure came from below (BLK_ERR_UNSUPPORTED ...). */
  readonly cause?: string;
  /** With CTL_ERR_UNKNOWN_DISK: the disks that are served, as "<domid>/<devid>". */
  readonly known?: readonly string[];
}

export type ControlResponse =
  | { readonly v: number; readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly v: number; readonly id: number | null; readonly ok: false; readonly error: ControlErrorBody };

/** An error with a wire code: thrown by targets and clients, turned into an error answer by the server. */
export class ControlError extends BlockError {
  declare readonly code: ControlErrorCode;
  readonly known: readonly string[] | undefined;
  readonly causeCode: string | undefined;

  constructor(code: ControlErrorCode, message: string, options: { known?: readonly string[]; cause?: unknown; causeCode?: string } = {}) {
    super(code, message, { errno: code === 'CTL_ERR_UNKNOWN_DISK' ? Errno.ENOENT : Errno.EINVAL, cause: options.cause });
    this.name = 'ControlError';
    this.known = options.known;
    this.causeCode = options.causeCode;
  }

  toBody(): ControlErrorBody {
    return {
      code: this.code,
      message: this.message,
      ...(this.causeCode === undefined ? {} : { cause: this.causeCode }),
      ...(this.known === undefined ? {} : { known: this.known }),
    };
  }
}

// ---------------------------------------------------------------- encoding

export function encodeRequest(id: number, call: ControlCall): string {
  return `${JSON.stringify({ v: CONTROL_VERSION, id, ...call })}\n`;
}

export function encodeResult(id: number, result: unknown): string {
  return `${JSON.stringify({ v: CONTROL_VERSION, id, ok: true, result })}\n`;
}

export function encodeError(id: number | null, error: ControlErrorBody): string {
  return `${JSON.stringify({ v: CONTROL_VERSION, id, ok: false, error })}\n`;
}

// ---------------------------------------------------------------- decoding

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly id: number | null; readonly error: ControlErrorBody };

const ENVELOPE_KEYS = ['v', 'id', 'op'];
const OP_KEYS: Readonly<Record<ControlOp, readonly string[]>> = {
  list: [],
  stats: ['disk'],
  attach: ['domid', 'spec'],
  detach: ['domid', 'vdev'],
  resize: ['disk', 'size'],
  info: [],
  'iscsi-status': [],
};

/** Reads one request line (without its "\n"). Never throws: anything wrong becomes an error to answer. */
export function decodeRequest(line: string): Decoded<ControlRequest> {
  if (line.length > MAX_REQUEST_LINE) return fail(null, 'CTL_ERR_TOO_LONG', `request longer than ${MAX_REQUEST_LINE} bytes`);
  // 64 KiB of "[[[[..." would make JSON.parse build 32k nested arrays (a megabyte of garbage a line).
  if (nestingDepth(line) > MAX_REQUEST_DEPTH)
    return fail(null, 'CTL_ERR_BAD_JSON', `request nests deeper than ${MAX_REQUEST_DEPTH} levels (requests are flat objects)`);
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (err) {
    return fail(null, 'CTL_ERR_BAD_JSON', `request is not JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(raw)) return fail(null, 'CTL_ERR_BAD_JSON', 'request is not a JSON object');
  const id = raw.id;
  if (!isUint(id)) return fail(null, 'CTL_ERR_BAD_REQUEST', `"id" must be a non-negative integer, got ${describe(id)}`);
  if (raw.v !== CONTROL_VERSION) {
    return fail(id, 'CTL_ERR_VERSION', `protocol version ${describe(raw.v)} is not spoken here (this server speaks version ${CONTROL_VERSION})`);
  }
  const op = raw.op;
  if (typeof op !== 'string') return fail(id, 'CTL_ERR_BAD_REQUEST', `"op" must be a string, got ${describe(op)}`);
  if (!(CONTROL_OPS as readonly string[]).includes(op)) {
    return fail(id, 'CTL_ERR_UNKNOWN_OP', `unknown op ${describe(op)} (expected one of ${CONTROL_OPS.join(', ')})`);
  }
  const allowed = OP_KEYS[op as ControlOp];
  for (const key of Object.keys(raw)) {
    if (!ENVELOPE_KEYS.includes(key) && !allowed.includes(key)) {
      return fail(id, 'CTL_ERR_BAD_REQUEST', `unknown key ${describe(key)} in a ${op} request (allowed: ${allowed.join(', ') || 'none'})`);
    }
  }
  const bad = (why: string): Decoded<ControlRequest> => fail(id, 'CTL_ERR_BAD_REQUEST', `${op}: ${why}`);
  const v = CONTROL_VERSION;
  switch (op as ControlOp) {
    case 'list':
      return { ok: true, value: { v, id, op: 'list' } };
    case 'info':
      return { ok: true, value: { v, id, op: 'info' } };
    case 'iscsi-status':
      return { ok: true, value: { v, id, op: 'iscsi-status' } };
    case 'stats': {
      if (raw.disk === undefined) return { ok: true, value: { v, id, op: 'stats' } };
      const disk = text(raw.disk, MAX_DISK_TEXT);
      if (disk === undefined) return bad(`"disk" must be a disk name of 1..${MAX_DISK_TEXT} printable characters`);
      return { ok: true, value: { v, id, op: 'stats', disk } };
    }
    case 'attach': {
      if (!isDomid(raw.domid)) return bad(`"domid" must be a domain id 0..${DOMID_FIRST_RESERVED - 1}, got ${describe(raw.domid)}`);
      const spec = text(raw.spec, MAX_SPEC_TEXT);
      if (spec === undefined) return bad(`"spec" must be an xl disk spec of 1..${MAX_SPEC_TEXT} printable characters`);
      return { ok: true, value: { v, id, op: 'attach', domid: raw.domid, spec } };
    }
    case 'detach': {
      if (!isDomid(raw.domid)) return bad(`"domid" must be a domain id 0..${DOMID_FIRST_RESERVED - 1}, got ${describe(raw.domid)}`);
      const vdev = text(raw.vdev, MAX_VDEV_TEXT);
      if (vdev === undefined) return bad(`"vdev" must be a disk name of 1..${MAX_VDEV_TEXT} printable characters`);
      return { ok: true, value: { v, id, op: 'detach', domid: raw.domid, vdev } };
    }
    case 'resize': {
      const disk = text(raw.disk, MAX_DISK_TEXT);
      if (disk === undefined) return bad(`"disk" must be a disk name of 1..${MAX_DISK_TEXT} printable characters`);
      if (!isUint(raw.size) || raw.size === 0) return bad(`"size" must be a positive whole number of bytes below 2^53, got ${describe(raw.size)}`);
      return { ok: true, value: { v, id, op: 'resize', disk, size: raw.size } };
    }
  }
}

/** Reads one answer line (client side). Never throws. */
export function decodeResponse(line: string): Decoded<ControlResponse> {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (err) {
    return fail(null, 'CTL_ERR_BAD_JSON', `answer is not JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(raw)) return fail(null, 'CTL_ERR_BAD_JSON', 'answer is not a JSON object');
  if (raw.v !== CONTROL_VERSION) return fail(null, 'CTL_ERR_VERSION', `the server speaks protocol version ${describe(raw.v)}, this client ${CONTROL_VERSION}`);
  const id = raw.id;
  if (raw.ok === true) {
    if (!isUint(id)) return fail(null, 'CTL_ERR_BAD_REQUEST', 'answer without a valid id');
    return { ok: true, value: { v: CONTROL_VERSION, id, ok: true, result: raw.result } };
  }
  if (raw.ok !== false || (id !== null && !isUint(id))) return fail(null, 'CTL_ERR_BAD_REQUEST', 'answer is neither a result nor an error');
  const e = raw.error;
  if (!isPlainObject(e) || typeof e.message !== 'string' || typeof e.code !== 'string') {
    return fail(null, 'CTL_ERR_BAD_REQUEST', 'error answer without a code and message');
  }
  // A newer server may send codes this client does not know: keep the message, file it as FAILED.
  const code = (CONTROL_ERROR_CODES as readonly string[]).includes(e.code) ? (e.code as ControlErrorCode) : 'CTL_ERR_FAILED';
  const known = Array.isArray(e.known) ? e.known.filter((k): k is string => typeof k === 'string') : undefined;
  const error: ControlErrorBody = {
    code,
    message: e.message,
    ...(typeof e.cause === 'string' ? { cause: e.cause } : {}),
    ...(known === undefined ? {} : { known }),
  };
  return { ok: true, value: { v: CONTROL_VERSION, id, ok: false, error } };
}

// ---------------------------------------------------------------- framing

export type LineEvent = { readonly line: string } | { readonly tooLong: number };

/**
 * Splits a byte stream into lines. A line longer than `maxLine` bytes is not buffered: it is
 * reported once as { tooLong } and its bytes are dropped up to the next "\n", so a peer cannot make
 * us hold more than `maxLine` bytes. A trailing "\r" is dropped; empty lines are skipped.
 */
export class LineDecoder {
  readonly #maxLine: number;
  #parts: Buffer[] = [];
  #length = 0;
  #skipping = false;

  constructor(maxLine: number) {
    this.#maxLine = maxLine;
  }

  push(chunk: Uint8Array): LineEvent[] {
    const out: LineEvent[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      const piece = chunk.subarray(start, end);
      if (!this.#skipping) {
        if (this.#length + piece.length > this.#maxLine) {
          out.push({ tooLong: this.#length + piece.length });
          this.#parts = [];
          this.#length = 0;
          this.#skipping = true;
        } else if (piece.length > 0) {
          this.#parts.push(Buffer.from(piece));
          this.#length += piece.length;
        }
      }
      if (nl < 0) break;
      if (this.#skipping) {
        this.#skipping = false;
      } else {
        let line = Buffer.concat(this.#parts, this.#length).toString('utf8');
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line.trim() !== '') out.push({ line });
      }
      this.#parts = [];
      this.#length = 0;
      start = nl + 1;
    }
    return out;
  }

  /** Bytes of an unfinished line held now (tests). */
  get buffered(): number {
    return this.#length;
  }
}

// ---------------------------------------------------------------- helpers

/** The deepest nesting of [ and { outside strings (not a validator: JSON.parse comes after). */
function nestingDepth(line: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > deepest) deepest = depth;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return deepest;
}

function fail(id: number | null, code: ControlErrorCode, message: string): { ok: false; id: number | null; error: ControlErrorBody } {
  return { ok: false, id, error: { code, message } };
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isUint(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isDomid(x: unknown): x is number {
  return isUint(x) && x < DOMID_FIRST_RESERVED;
}

/** A bounded, non-empty string without control characters (they would end up in logs and terminals). */
function text(x: unknown, max: number): string | undefined {
  if (typeof x !== 'string' || x.length === 0 || x.length > max) return undefined;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(x)) return undefined;
  return x;
}

/** A value for an error message: short, and safe to print. */
function describe(x: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(x) ?? String(x);
  } catch {
    s = typeof x;
  }
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}
