// parse.c handle_option/__handle_option for one option: the comma (and for plain numbers also ':'
// and '-') splitting into per-direction values, the range checks, and fio's rule that the option
// fails only when every piece fails. Also the posval matcher, with the fio 1.41-2.0.11 prefix rule.
import { parseBytes, parseCInt, parseTimeUs } from './numbers.ts';
import type { KbBase } from './numbers.ts';
import type { OptDef, StrContext } from './options.ts';
import type { OptState } from './state.ts';

export interface HandleResult {
  /** null on success, else fio's complaint. */
  readonly error: string | null;
  /** Set when the value only matched under the legacy prefix rule: the value it was read as. */
  readonly legacy?: string;
  /** The value names a fio feature the runner does not implement. */
  readonly unimplemented?: boolean;
}

/** opt_len: the value's length up to the first ',' or else the first ':'. */
function optLen(s: string): number {
  const comma = s.indexOf(',');
  if (comma >= 0) return comma;
  const colon = s.indexOf(':');
  return colon >= 0 ? colon : s.length;
}

/** C strncmp(a, b, n) == 0. */
const strnEq = (a: string, b: string, n: number): boolean => a.slice(0, n) === b.slice(0, n);

/** posval_sort: longest first; equal lengths keep table order. */
function sortedPosval(posval: readonly string[]): string[] {
  return posval
    .map((v, i) => ({ v, i }))
    .sort((a, b) => b.v.length - a.v.length || a.i - b.i)
    .map((x) => x.v);
}

/** fio 3.33 (commit 119cd939): the whole word before ',' or ':' must match. Last match wins. */
export function matchPosval(posval: readonly string[], value: string): string | null {
  let hit: string | null = null;
  for (const v of sortedPosval(posval)) if (strnEq(v, value, Math.max(v.length, optLen(value)))) hit = v;
  return hit;
}

/** fio 1.41-2.0.11: the value is a prefix; longest-first order, last (shortest) match wins. */
export function matchPosvalLegacy(posval: readonly string[], value: string): string | null {
  const n = optLen(value);
  if (n === 0) return null;
  let hit: string | null = null;
  for (const v of sortedPosval(posval)) if (strnEq(v, value, n)) hit = v;
  return hit;
}

const isUintType = (d: OptDef): boolean => d.type === 'INT';

function tooLarge(d: OptDef, v: bigint): boolean {
  if (d.max === undefined || d.max === 0) return false;
  if (isUintType(d)) {
    const asInt = Number(BigInt.asIntN(32, v));
    if (asInt < 0) return asInt > d.max;
    return Number(BigInt.asUintN(32, v)) > d.max;
  }
  return BigInt.asUintN(64, v) > BigInt(d.max);
}

function tooSmall(d: OptDef, v: bigint): boolean {
  if (d.min === undefined || d.min === 0) return false;
  if (isUintType(d)) return Number(BigInt.asIntN(32, v)) < d.min;
  return v < BigInt(d.min);
}

/** One piece of a numeric option; `curr` is the piece index, `more` whether another follows. */
function handleNumberPiece(d: OptDef, ptr: string, st: OptState, first: boolean, more: boolean, curr: number): string | null {
  if (ptr.endsWith('z')) {
    if (['size', 'io_size', 'offset', 'offset_increment'].includes(d.name)) return 'UNIMPLEMENTED';
    return `${d.name}: 'z' suffix isn't applicable`;
  }
  const comma = ptr.indexOf(',');
  const tmp = comma >= 0 ? ptr.slice(0, comma) : ptr;
  let v: bigint;
  let percent = false;
  if (d.isTime === true) {
    const t = parseTimeUs(tmp, d.isSeconds === true);
    if (t === null) return `failed to parse '${tmp}' as a time`;
    v = t;
  } else {
    const b = parseBytes(tmp, st.kbBase);
    if (b === null) return `failed to parse '${tmp}' as a number`;
    v = b.value;
    percent = b.percent;
    if (percent && !['size', 'io_size', 'offset', 'offset_increment'].includes(d.name)) return `'${tmp}': a percentage is not valid for ${d.name}`;
  }
  if (!percent && tooLarge(d, v)) return `${d.name}: max value out of range: ${BigInt.asUintN(64, v)} (${d.max} max)`;
  if (!percent && tooSmall(d, v)) return `${d.name}: min value out of range: ${v} (${d.min} min)`;
  const n = d.type === 'INT' ? Number(BigInt.asIntN(32, v)) : Number(v);
  const set = d.set;
  if (set === undefined) return null;
  const slots: number[] = [];
  if (d.type === 'INT' || d.type === 'ULL') {
    if (first) slots.push(0);
    if (d.slots === 3) {
      if (curr === 1) slots.push(1);
      if (curr === 2) slots.push(2);
      if (!more) {
        if (curr < 1) slots.push(1);
        if (curr < 2) slots.push(2);
      }
    }
  } else {
    if (first) slots.push(0);
    if (!more && d.slots !== undefined) slots.push(1);
  }
  // A callback option (size, offset, rwmix*) is called once per piece regardless of slot.
  if (d.slots === undefined && !first && ['size', 'io_size', 'offset', 'offset_increment', 'rwmixread', 'rwmixwrite'].includes(d.name)) slots.push(0);
  for (const s of slots) {
    const e = set(st, s, n, percent);
    if (e !== null) return e;
  }
  return null;
}

function handleRangePiece(d: OptDef, ptr: string, st: OptState, first: boolean, more: boolean, curr: number): string | null {
  const comma = ptr.indexOf(',');
  const tmp = comma >= 0 ? ptr.slice(0, comma) : ptr;
  let sep = tmp.indexOf('-');
  if (sep < 0) sep = tmp.indexOf(':');
  if (sep < 0) return `'${tmp}' is not a range (lo-hi or lo:hi)`;
  const a = parseBytes(tmp.slice(0, sep), st.kbBase);
  const b = parseBytes(tmp.slice(sep + 1), st.kbBase);
  if (a === null || b === null) return `failed to parse range '${tmp}'`;
  let lo = Number(a.value);
  let hi = Number(b.value);
  if (lo > hi) [lo, hi] = [hi, lo];
  const set = d.setRange;
  if (set === undefined) return null;
  if (first) set(st, 0, lo, hi);
  if (curr === 1) set(st, 1, lo, hi);
  if (curr === 2) set(st, 2, lo, hi);
  if (!more) {
    if (curr < 1) set(st, 1, lo, hi);
    if (curr < 2) set(st, 2, lo, hi);
  }
  return null;
}

function handleBoolPiece(d: OptDef, ptr: string | null, st: OptState, first: boolean): string | null {
  let il: number;
  if (ptr !== null) {
    const v = parseCInt(ptr);
    if (v === null) return `'${ptr}' is not an integer (fio booleans are 0 or 1)`;
    il = v;
  } else if (d.type === 'BOOL') return `Option ${d.name} requires an argument`;
  else il = 1;
  if (d.type === 'BOOL' && il > 1) return `max value out of range: ${il} (1 max)`;
  if (first && d.set !== undefined) return d.set(st, 0, il, false);
  return null;
}

/** Applies one option (value null for a bare key) to the state, as fio 3.33 would. */
export function handleOption(d: OptDef, value: string | null, st: OptState, ctx: StrContext, legacyOk: boolean): HandleResult {
  if (value === null && d.type !== 'STR_SET' && d.type !== 'STR') {
    return { error: `Option ${d.name} requires an argument` };
  }
  if (d.type === 'STR' || d.type === 'STR_STORE') {
    if (d.type === 'STR_STORE' && value !== null && value.length === 0) return { error: `${d.name} needs a non-empty value` };
    let matched: string | null = null;
    let legacy: string | undefined;
    if (d.posval !== undefined && d.type === 'STR') {
      if (value === null) return { error: `${d.name} needs one of: ${d.posval.join(', ')}` };
      matched = matchPosval(d.posval, value);
      if (matched === null) {
        const old = matchPosvalLegacy(d.posval, value);
        if (old === null || !legacyOk) {
          return { error: `valid values for ${d.name}: ${d.posval.join(', ')}`, ...(old !== null ? { legacy: old } : {}) };
        }
        matched = old;
        legacy = old;
      }
    }
    const e = d.str?.(st, matched, value, ctx) ?? null;
    if (e === 'UNIMPLEMENTED') return { error: e, unimplemented: true };
    return { error: e, ...(legacy !== undefined ? { legacy } : {}) };
  }
  if (d.type === 'FLOAT_LIST') return { error: d.str?.(st, null, value, ctx) ?? null };

  // handle_option: split into pieces; succeed when any piece succeeds.
  let ptr: string | null = value;
  let done = 0;
  let ok = false;
  let firstError: string | null = null;
  for (;;) {
    let next: number = -1;
    let cut = ptr;
    if (ptr !== null) {
      next = ptr.indexOf(',');
      if (next >= 0 && next === ptr.length - 1) cut = ptr.slice(0, next);
      if (d.type !== 'RANGE') {
        if (next < 0) next = ptr.indexOf(':');
        if (next < 0) next = ptr.indexOf('-');
      }
    }
    const more = next >= 0;
    let e: string | null;
    if (d.type === 'BOOL' || d.type === 'STR_SET') e = handleBoolPiece(d, cut, st, done === 0);
    else if (d.type === 'RANGE') e = handleRangePiece(d, cut ?? '', st, done === 0, more, done);
    else e = handleNumberPiece(d, cut ?? '', st, done === 0, more, done);
    if (e === 'UNIMPLEMENTED') return { error: e, unimplemented: true };
    if (e === null) ok = true;
    else firstError ??= e;
    if (!more || ptr === null) break;
    ptr = ptr.slice(next + 1);
    done++;
  }
  return { error: ok ? null : firstError };
}

const NUMERIC: ReadonlySet<string> = new Set(['INT', 'ULL', 'STR_VAL', 'STR_VAL_TIME', 'RANGE']);

/** A value as fio read it and as it would read it without the blanks. */
export interface HiddenUnit {
  /** "' 8k' is 8 bytes" (one entry per piece a blank changed). */
  readonly read: readonly string[];
  /** "8192 bytes" for each of those pieces without its blank. */
  readonly meant: readonly string[];
  /** The value without the blanks: "8k". */
  readonly tidy: string;
}

function describeBytes(v: bigint, percent: boolean): string {
  if (percent) return `${v}%`;
  return v === 1n ? '1 byte' : `${v} bytes`;
}

function describeUs(us: bigint): string {
  if (us !== 0n && us % 1_000_000n === 0n) return `${us / 1_000_000n} s`;
  if (us !== 0n && us % 1000n === 0n) return `${us / 1000n} ms`;
  return `${us} us`;
}

/**
 * fio 3.33 finds a number's unit only when the number starts its piece: `bs = 8k` gives the value
 * " 8k", strtoll skips the blank but get_mult_bytes stops at it, so the 'k' is lost and bs is 8
 * bytes (likewise after ',' ':' '-'). fio accepts that silently, and so do we: it is what the line
 * means to fio. This says what was read when a blank changed the number, for a note.
 */
export function hiddenUnit(d: OptDef, value: string | null, kbBase: KbBase): HiddenUnit | null {
  if (value === null || !NUMERIC.has(d.type) || !/(^|[,:-])\s/.test(value)) return null;
  const read: string[] = [];
  const meant: string[] = [];
  for (const piece of value.split(/[,:-]/)) {
    if (!/^\s/.test(piece)) continue;
    const tidy = piece.trimStart();
    let as: string | null;
    let without: string | null;
    if (d.isTime === true) {
      const a = parseTimeUs(piece, d.isSeconds === true);
      const b = parseTimeUs(tidy, d.isSeconds === true);
      as = a === null ? null : describeUs(a);
      without = b === null ? null : describeUs(b);
    } else {
      const a = parseBytes(piece, kbBase);
      const b = parseBytes(tidy, kbBase);
      as = a === null ? null : describeBytes(a.value, a.percent);
      without = b === null ? null : describeBytes(b.value, b.percent);
    }
    if (as === null || without === null || as === without) continue;
    read.push(`'${piece}' is ${as}`);
    meant.push(without);
  }
  return read.length === 0 ? null : { read, meant, tidy: value.replace(/(^|[,:-])\s+/g, '$1') };
}
