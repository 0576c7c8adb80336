// fio 3.33's number readers (parse.c str_to_decimal, get_mult_bytes, get_mult_time, check_int), kept
// faithful to their quirks: "1.5m" is 1, an unknown suffix multiplies by 1, a space after '=' stops
// the suffix scan (" 8k" is 8), and only the three-letter kib..pib forms swap with kb_base.

export type KbBase = 1024 | 1000;

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
const isAlpha = (c: string | undefined): boolean => c !== undefined && /^[A-Za-z]$/.test(c);
const isSpace = (c: string | undefined): boolean => c !== undefined && /^[ \t\n\v\f\r]$/.test(c);

/** C strtoll: skips blanks, takes a sign, then digits of the base (0x prefix allowed in base 16). */
function strtoll(s: string, base: 10 | 16): { value: bigint; consumed: boolean } {
  let i = 0;
  while (isSpace(s[i])) i++;
  let neg = false;
  if (s[i] === '+' || s[i] === '-') {
    neg = s[i] === '-';
    i++;
  }
  if (base === 16 && s[i] === '0' && (s[i + 1] === 'x' || s[i + 1] === 'X') && /[0-9a-fA-F]/.test(s[i + 2] ?? '')) i += 2;
  const digits = base === 16 ? /[0-9a-fA-F]/ : /[0-9]/;
  const start = i;
  while (i < s.length && digits.test(s[i] ?? '')) i++;
  if (i === start) return { value: 0n, consumed: false };
  let v = BigInt((base === 16 ? '0x' : '') + s.slice(start, i));
  const max = (1n << 63n) - 1n;
  if (v > max) v = max; // ERANGE clamps; fio then accepts it (only LONG_MAX with errno is refused)
  return { value: neg ? -v : v, consumed: true };
}

const SWAPPED: Record<string, number> = { kib: 1, mib: 2, gib: 3, tib: 4, pib: 5 };
const PLAIN: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5 };

/** __get_mult_bytes: the suffix (lower-cased up to the first ':' '-' ',' '/') to a multiplier. */
function multBytes(suffix: string | null, kbBase: KbBase): { mult: bigint; percent: boolean } {
  if (suffix === null) return { mult: 1n, percent: false };
  let c = '';
  for (const ch of suffix.toLowerCase()) {
    if (ch === ':' || ch === '-' || ch === ',' || ch === '/') break;
    c += ch;
  }
  let pow = 0;
  let mult = BigInt(kbBase);
  const three = SWAPPED[c.slice(0, 3)];
  if (c.length >= 3 && three !== undefined) {
    pow = three;
    mult = kbBase === 1000 ? 1024n : 1000n;
  } else if (c[0] !== undefined && PLAIN[c[0]] !== undefined) {
    pow = PLAIN[c[0]] ?? 0;
  } else if (c[0] === '%') {
    return { mult: 1n, percent: true };
  }
  let r = 1n;
  while (pow-- > 0) r *= mult;
  return { mult: r, percent: false };
}

export interface ByteValue {
  readonly value: bigint;
  /** The value was written as N% (value holds N). */
  readonly percent: boolean;
}

/** check_str_bytes: a byte count with k/m/g/t/p suffixes under kb_base; null when it does not parse. */
export function parseBytes(str: string, kbBase: KbBase): ByteValue | null {
  if (str.length === 0) return null;
  const base = str.includes('0x') || str.includes('0X') ? 16 : 10;
  const { value, consumed } = strtoll(str, base);
  if (!consumed) return null;
  let suffix: string | null;
  if (str.length < 2) suffix = str;
  else {
    let i = 0;
    let digitSeen = false;
    while (i <= str.length) {
      const c = str[i];
      if (!isDigit(c) && ((c !== '+' && c !== '-') || digitSeen)) break;
      digitSeen ||= isDigit(c);
      i++;
    }
    const c = str[i];
    suffix = isAlpha(c) || c === '%' ? str.slice(i) : null;
  }
  const m = multBytes(suffix, kbBase);
  if (m.percent) return { value, percent: true };
  return { value: BigInt.asIntN(64, value * m.mult), percent: false };
}

/** check_str_time: microseconds. Without a unit, seconds when `isSeconds`, else microseconds. */
export function parseTimeUs(str: string, isSeconds: boolean): bigint | null {
  if (str.length === 0) return null;
  const base = str.includes('0x') || str.includes('0X') ? 16 : 10;
  const { value, consumed } = strtoll(str, base);
  if (!consumed) return null;
  let i = 0;
  while (i <= str.length) {
    const c = str[i];
    if (!isDigit(c) && c !== '+' && c !== '-') break;
    i++;
  }
  let mult = 1n;
  if (!isAlpha(str[i])) mult = isSeconds ? 1_000_000n : 1n;
  else {
    const c = str.slice(i).toLowerCase();
    if (c.startsWith('us')) mult = 1n;
    else if (c.startsWith('ms')) mult = 1000n;
    else if (c === 's') mult = 1_000_000n;
    else if (c === 'm') mult = 60_000_000n;
    else if (c === 'h') mult = 3_600_000_000n;
    else if (c === 'd') mult = 86_400_000_000n;
  }
  return BigInt.asIntN(64, value * mult);
}

/** check_int: sscanf("%u") or "%x" when the text contains 0x; the result as a C int. */
export function parseCInt(str: string): number | null {
  if (str.length === 0) return null;
  const hex = str.includes('0x') || str.includes('0X');
  const m = hex ? /^\s*([+-]?)(?:0[xX])?([0-9a-fA-F]+)/.exec(str) : /^\s*([+-]?)([0-9]+)/.exec(str);
  if (!m) return null;
  let v = BigInt(hex ? `0x${m[2]}` : (m[2] ?? '0'));
  if (m[1] === '-') v = -v;
  return Number(BigInt.asIntN(32, v));
}

/** sscanf("%lf"): a leading floating-point number. */
export function parseCFloat(str: string): number | null {
  const m = /^\s*[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+|inf(?:inity)?|nan)/i.exec(str);
  if (!m) return null;
  const t = m[0].trim();
  if (/^[+-]?0x/i.test(t)) return Number.parseInt(t, 16);
  const v = Number(t.replace(/^([+-]?)inf(inity)?$/i, '$1Infinity'));
  return Number.isNaN(v) && !/nan/i.test(t) ? null : v;
}

/** C atoi. */
export function atoi(str: string): number {
  const m = /^\s*([+-]?\d+)/.exec(str);
  return m ? Number(BigInt.asIntN(32, BigInt(m[1] ?? '0'))) : 0;
}
