// `--link 1gbit|none|RATE`: what the storage link between the host and the target's namespace is
// shaped to. Pure parsing, no I/O; src/rig/link.ts builds the link.
import { UsageError } from '../internal/errors.ts';

export type LinkSpec = { readonly kind: 'none'; readonly text: 'none' } | { readonly kind: 'shaped'; readonly text: string; readonly bitsPerSecond: number };

/** The seed's rig: a 1 Gbit/s link between the host and its iSCSI storage server. */
export const SEED_LINK = '1gbit';

// tc's rate units (tc(8), "RATES"): decimal multiples of bits per second.
const BIT_UNITS: Readonly<Record<string, number>> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12 };

/** '1gbit', '100mbit', '2.5gbit', '500000kbit' or 'none'; anything else is a UsageError naming the forms. */
export function parseLinkSpec(text: string): LinkSpec {
  const t = text.trim().toLowerCase();
  if (t === 'none') return { kind: 'none', text: 'none' };
  const m = /^(\d+(?:\.\d+)?)([kmgt]?bit)$/.exec(t);
  const unit = m === null ? undefined : BIT_UNITS[m[2]!];
  if (m === null || unit === undefined) {
    throw new UsageError(`--link ${text}: expected none or a rate such as 1gbit, 100mbit, 2.5gbit (tc's bit units: bit, kbit, mbit, gbit, tbit)`);
  }
  const bitsPerSecond = Math.round(Number(m[1]) * unit);
  // Below 1 Mbit/s one 64 KiB request takes half a second: no storage link, a typo.
  if (bitsPerSecond < 1e6 || bitsPerSecond > 1e12) throw new UsageError(`--link ${text}: the rate must be between 1mbit and 1tbit`);
  return { kind: 'shaped', text: t, bitsPerSecond };
}

/** Bytes per second the link carries (frames and TCP/iSCSI headers included): the ceiling for payload. */
export function linkBytesPerSecond(spec: LinkSpec): number | undefined {
  return spec.kind === 'shaped' ? spec.bitsPerSecond / 8 : undefined;
}

/** For reports: '1gbit (125 MB/s)', 'none (unshaped)'. */
export function describeLink(spec: LinkSpec): string {
  if (spec.kind === 'none') return 'none (unshaped)';
  return `${spec.text} (${(spec.bitsPerSecond / 8e6).toFixed(spec.bitsPerSecond < 8e7 ? 2 : 1)} MB/s)`;
}
