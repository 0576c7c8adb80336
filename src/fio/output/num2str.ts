// fio's number formatting (lib/num2str.c in fio 3.33): shorten a number to at most `maxlen` digits by
// dividing by 1000 or 1024 and appending a unit prefix, keeping as many decimals as still fit. fio's
// quirks are kept on purpose (carry only when no decimals fit, unit suffixes), because users compare
// our summaries with fio's character for character.

/** Unit suffixes, as fio's enum n2s_unit. */
export const N2S = { NONE: 0, PERSEC: 1, BYTE: 2, BIT: 3, BYTEPERSEC: 4, BITPERSEC: 5 } as const;
export type N2sUnit = (typeof N2S)[keyof typeof N2S];

const SI = ['', 'k', 'M', 'G', 'T', 'P', 'E'] as const;
const IEC = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'] as const;
const UNIT_STR = ['', '/s', 'B', 'bit', 'B/s', 'bit/s'] as const;

/**
 * @param num quantity (non-negative integer; fractions are dropped as fio's uint64_t would)
 * @param maxlen most digits in the output, counting the '.'
 * @param base multiplier already applied to num (1, or 1024 when num is in KiB)
 * @param pow2 true: Ki/Mi prefixes and 1024 steps; false: k/M and 1000 steps
 */
export function num2str(num: number, maxlen: number, base: number, pow2: boolean, unit: N2sUnit): string {
  const thousand = pow2 ? 1024 : 1000;
  const prefixes = pow2 ? IEC : SI;
  let n = Math.max(0, Math.floor(num));
  let post = 0;
  for (let b = base; b > 1; post++) b = Math.floor(b / thousand);
  if (unit === N2S.BIT || unit === N2S.BITPERSEC) n *= 8;

  let modulo = -1;
  let carry = false;
  while (post < prefixes.length) {
    if (String(n).length <= maxlen) break;
    modulo = n % thousand;
    n = Math.floor(n / thousand);
    carry = modulo >= thousand / 2;
    post++;
  }
  if (post >= prefixes.length) post = 0;
  const tail = `${prefixes[post]}${UNIT_STR[unit]}`;
  if (modulo === -1) return `${n}${tail}`;

  const room = maxlen - String(n).length;
  if (room <= 1) return `${carry ? n + 1 : n}${tail}`;
  const frac = cFixed(modulo / thousand, room - 1);
  if (frac.startsWith('1')) n++;
  return `${n}.${frac.slice(2)}${tail}`;
}

/**
 * printf("%.<digits>f"): like toFixed, but an exact binary tie rounds to even as glibc does
 * (toFixed rounds ties up: 0.125 -> "0.13" where printf gives "0.12").
 */
export function cFixed(x: number, digits: number): string {
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : x < 0 ? '-inf' : 'nan';
  const s = x.toFixed(digits);
  const scaled = Math.abs(x) * 10 ** digits;
  // Only values whose scaled form is exactly k + 0.5 are ties. The product can round to k + 0.5 when
  // x is not one (0.05 * 10 gives 0.5, but the double 0.05 lies above 1/20, and glibc rounds it up):
  // the tie (2k + 1) / (2 * 10^digits) is a double only when 5^digits divides 2k + 1 (0.125: 25/200).
  const k = Math.floor(scaled);
  if (scaled < 2 ** 52 && scaled - k === 0.5 && k % 2 === 0 && (2 * k + 1) % 5 ** digits === 0) {
    const down = (Math.sign(x) * Math.floor(scaled)) / 10 ** digits;
    return (x < 0 && down === 0 ? '-' : '') + down.toFixed(digits);
  }
  return s;
}

/** printf("%<width>.<digits>f"). */
export function cFloat(x: number, width: number, digits: number): string {
  return cFixed(x, digits).padStart(width, ' ');
}

/** printf("%<width>d") / "%<width>llu". */
export function cInt(x: number, width: number): string {
  return String(Math.trunc(x)).padStart(width, ' ');
}
