// What the hostile guest does to memory the backend reads while requests are in flight: rewrite
// ring slots after publishing them, rewrite indirect pages, rewrite grant entries (flags, domid,
// frame), and storms of event notifications. Pure and seeded like the request generator: action
// `index` of a stream is always the same action (what the backend then sees depends on timing).
//
// Words are written whole (a 32-bit store is atomic, so a backend copying the slot sees each word
// old or new, never a mix), and a word that some operation reads as a grant ref only ever gets a
// ref from a safe set (see ChaosRefs in hostile-guest.ts): garbage must not name the guest's ring
// pages, which are granted writable and which a backend may legitimately write when asked to.
import { mulberry32 } from '../internal/prng.ts';
import { requestSeed } from './generator.ts';

export const CHAOS = {
  /** Random words over part of a published slot. */
  slotWords: 0,
  /** A plausible header (operation 0-7, nr_segments 0-12) and one segment over a published slot. */
  slotHeader: 1,
  /** Words of an indirect page in use. */
  indirectWords: 2,
  /** The flags|domid word of a grant entry in use. */
  grantFlags: 3,
  /** The frame word of a grant entry in use. */
  grantFrame: 4,
  /** Notifications, hundreds at once. */
  storm: 5,
} as const;
export type ChaosKind = (typeof CHAOS)[keyof typeof CHAOS];

export const CHAOS_NAMES = ['slot words', 'slot header', 'indirect page words', 'grant flags', 'grant frame', 'event storm'] as const;

/** Words written by one action at most. */
export const MAX_CHAOS_WORDS = 28;

export class ChaosAction {
  kind: ChaosKind = CHAOS.slotWords;
  /** Which slot (mod ring size), page (mod pool size) or grant (mod pool size). */
  target = 0;
  /** slotWords / indirectWords: word positions (mod the slot's or page's words) and values. */
  count = 0;
  readonly positions = new Uint32Array(MAX_CHAOS_WORDS);
  readonly values = new Uint32Array(MAX_CHAOS_WORDS);
  /** grantFlags / grantFrame: which rewrite; storm: how many notifications. */
  variant = 0;
  value = 0;
}

/** Stream numbers of actions are apart from those of requests. */
const ACTION_STREAM = 0x40000000;

const WEIGHTS: readonly number[] = [30, 20, 15, 15, 15, 5];
const TOTAL = WEIGHTS.reduce((a, b) => a + b, 0);

export function generateChaos(seed: number, stream: number, index: number, out: ChaosAction): ChaosAction {
  const next = mulberry32(requestSeed(seed, (stream | ACTION_STREAM) >>> 0, index));
  const below = (n: number): number => Math.floor((next() / 0x100000000) * n);
  let x = below(TOTAL);
  let kind = 0;
  while (x >= WEIGHTS[kind]!) x -= WEIGHTS[kind++]!;
  out.kind = kind as ChaosKind;
  out.target = next();
  out.variant = next();
  out.value = next();
  out.count = 0;
  out.positions.fill(0);
  out.values.fill(0);
  switch (out.kind) {
    case CHAOS.slotWords:
    case CHAOS.indirectWords: {
      const n = 1 + below(below(4) === 0 ? MAX_CHAOS_WORDS : 4);
      for (let i = 0; i < n; i++) {
        out.positions[i] = next();
        out.values[i] = next();
      }
      out.count = n;
      break;
    }
    case CHAOS.slotHeader:
      out.values[0] = below(8) | (below(13) << 8) | (below(0x10000) << 16); // operation, nr_segments, handle
      out.values[1] = below(10) | (below(10) << 8); // first_sect, last_sect of the segment
      out.positions[0] = below(11); // which segment
      out.count = 2;
      break;
    case CHAOS.storm:
      out.variant = 100 + below(1900);
      break;
    default:
      break;
  }
  return out;
}
