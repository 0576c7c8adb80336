// fio's "split" lists: bssplit (options.c bssplit_ddir) and zoned distributions (zone_split_ddir),
// per direction as R,W,T (str_split_parse), and how fio 3.33 turns a bssplit into shares at run
// time (io_u.c get_next_buflen): entries sorted by share, cumulative draw, rounded to the smallest bs.
import type { BsSplitEntry, PerDdir } from '../job.ts';
import { atoi, parseBytes, type KbBase } from './numbers.ts';
import type { RawSplit } from './state.ts';

const BLANK = -1;

/** str_split_parse: "R,W,T"; one value serves all three; "R,W" gives trim W's list. */
export function splitDirections(str: string): PerDdir<string | null> {
  const c1 = str.indexOf(',');
  if (c1 < 0) return [str, str, str];
  const c2 = str.indexOf(',', c1 + 1);
  const read = str.slice(0, c1);
  if (c2 < 0) {
    const rest = str.slice(c1 + 1);
    return [read, rest, rest];
  }
  return [read, str.slice(c1 + 1, c2), str.slice(c2 + 1)];
}

/** split_parse_ddir: "v1/v2:v1/v2..." (v2 a share, or bytes when `absolute`). Error text on failure. */
export function parseSplitList(str: string, absolute: boolean, maxSplits: number, kbBase: KbBase): RawSplit[] | string {
  const out: RawSplit[] = [];
  for (const item of str.split(':')) {
    if (item.length === 0) break;
    const slash = item.indexOf('/');
    const name = slash >= 0 ? item.slice(0, slash) : item;
    let v2: number;
    if (slash >= 0) {
      const percStr = item.slice(slash + 1);
      if (absolute) {
        const p = parseBytes(percStr, kbBase);
        if (p === null) return 'split conversion failed';
        v2 = Number(p.value);
      } else {
        const perc = atoi(percStr);
        v2 = perc >>> 0 > 100 ? 100 : perc === 0 ? BLANK : perc;
      }
    } else v2 = absolute ? 0 : BLANK;
    const v = parseBytes(name, kbBase);
    if (v === null || v.percent) return 'split conversion failed';
    out.push({ v1: Number(v.value), v2 });
    if (out.length === maxSplits) break;
  }
  return out;
}

/** bssplit_ddir: blanks share what is left (integer division); more than 100% with 2+ blanks is an error. */
export function fillBsSplit(entries: readonly RawSplit[]): RawSplit[] | string {
  let perc = 0;
  let missing = 0;
  for (const e of entries) {
    if (e.v2 === BLANK) missing++;
    else perc += e.v2;
  }
  if (perc > 100 && missing > 1) return 'bssplit percentages add to more than 100%';
  if (missing === 1 && entries.length === 1) perc = 100;
  const share = missing > 0 ? Math.max(0, Math.trunc((100 - perc) / missing)) : 0;
  const filled = entries.map((e) => (e.v2 === BLANK ? { v1: e.v1, v2: share } : e));
  // qsort by share ascending (glibc's merge sort keeps equal shares in written order)
  return filled
    .map((e, i) => ({ e, i }))
    .sort((a, b) => a.e.v2 - b.e.v2 || a.i - b.i)
    .map((x) => x.e);
}

/**
 * The shares fio actually draws: a cumulative walk over the sorted list (entries with share 0 are
 * skipped), clamped at 100, the last drawn entry taking what is left; sizes rounded down to a multiple
 * of the direction's smallest bs unless bs_unaligned, and capped at its largest.
 */
export function effectiveBsSplit(sorted: readonly RawSplit[], minBs: number, maxBs: number, unaligned: boolean): BsSplitEntry[] {
  const live = sorted.filter((e) => e.v2 !== 0);
  const out: BsSplitEntry[] = [];
  let cum = 0;
  for (let i = 0; i < live.length; i++) {
    const e = live[i];
    if (e === undefined) continue;
    const prev = Math.min(cum, 100);
    cum += e.v2;
    const share = i === live.length - 1 ? 100 - prev : Math.min(cum, 100) - prev;
    let bs = e.v1;
    if (!unaligned && minBs > 0) bs -= bs % minBs;
    if (bs > maxBs) bs = maxBs;
    if (share > 0) out.push({ bs, perc: share });
  }
  return out;
}

/** zone_split_ddir: access shares must sum to exactly 100; blank size shares split what is left. */
export function fillZones(entries: readonly RawSplit[], absolute: boolean): { accessPerc: number; size: number }[] | string {
  let perc = 0;
  let sperc = 0;
  let smissing = 0;
  const zones = entries.map((e) => ({ access: e.v1 & 0xff, size: absolute ? e.v2 : e.v2 === BLANK ? 255 : e.v2 & 0xff }));
  let missing = 0;
  for (const z of zones) {
    if (z.access === 255) missing++;
    else perc += z.access;
    if (!absolute) {
      if (z.size === 255) smissing++;
      else sperc += z.size;
    }
  }
  if (perc > 100 || sperc > 100) return 'zone_split percentages add to more than 100%';
  if (perc < 100) return `access percentage don't add up to 100 for zoned random distribution (got=${perc})`;
  if (smissing === 1 && zones.length === 1) sperc = 100;
  return zones.map((z) => ({
    accessPerc: z.access === 255 ? Math.trunc((100 - perc) / Math.max(missing, 1)) : z.access,
    size: !absolute && z.size === 255 ? Math.trunc((100 - sperc) / smissing) : z.size,
  }));
}
