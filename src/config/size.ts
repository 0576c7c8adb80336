// Sizes as users type them: "512", "4k", "1G", "10GiB", "1.5M". Units are binary (k = 1024), as in
// fio and qemu-img; a trailing "B" or "iB" is accepted and changes nothing.
import { UsageError } from '../internal/errors.ts';

const UNIT_SHIFT: Readonly<Record<string, number>> = { '': 0, k: 10, m: 20, g: 30, t: 40, p: 50 };

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i;

/** Parses a byte count; `what` names the thing being sized in the error ("ram disk size", "--size"). */
export function parseSize(text: string, what: string): number {
  const m = SIZE_RE.exec(text.trim());
  if (m === null) {
    throw new UsageError(`${what}: invalid size '${text}' (expected a byte count such as 512, 4k, 1G or 10GiB)`);
  }
  const [, digits = '', unit = '', suffix] = m;
  // "iB" without a unit letter ("512iB") is not a unit.
  if (suffix !== undefined && suffix.length === 2 && unit === '') {
    throw new UsageError(`${what}: invalid size '${text}' ('iB' needs a unit letter, e.g. 4KiB)`);
  }
  const shift = UNIT_SHIFT[unit.toLowerCase()] ?? 0;
  const bytes = Number(digits) * 2 ** shift;
  if (!Number.isSafeInteger(bytes)) {
    throw new UsageError(`${what}: size '${text}' is not a whole number of bytes below 2^53`);
  }
  return bytes;
}

/** "1073741824" -> "1GiB", "1536" -> "1536B": for messages only. */
export function formatSize(bytes: number): string {
  for (const [unit, shift] of [
    ['TiB', 40],
    ['GiB', 30],
    ['MiB', 20],
    ['KiB', 10],
  ] as const) {
    const scale = 2 ** shift;
    if (bytes >= scale && bytes % scale === 0) return `${bytes / scale}${unit}`;
  }
  return `${bytes}B`;
}
