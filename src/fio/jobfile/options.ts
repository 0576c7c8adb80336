// The option table: every fio 3.33 option the runner implements, with fio's parser type (parse.h
// FIO_OPT_*), range, aliases and priority (options.c fio_options[]), and how a value lands in the
// state. Options that cannot change the I/O pattern are listed in NOTE_ONLY; any other option fio
// knows is refused as not implemented (resolve.ts).
import { RW_MODES, type RwMode } from '../job.ts';
import { atoi, parseBytes, parseCFloat, type KbBase } from './numbers.ts';
import { fillBsSplit, fillZones, parseSplitList, splitDirections } from './split.ts';
import type { OptState } from './state.ts';

export type OptType = 'STR' | 'STR_STORE' | 'INT' | 'ULL' | 'STR_VAL' | 'STR_VAL_TIME' | 'RANGE' | 'BOOL' | 'STR_SET' | 'FLOAT_LIST';

/** What a string callback needs besides the state. */
export interface StrContext {
  /** The job's section name (for bare write_*_log keys). */
  readonly jobName: string;
}

export interface OptDef {
  readonly name: string;
  readonly aliases?: readonly string[];
  readonly type: OptType;
  /** fio sorts a section's options by prio, highest first (kb_base 1, filename -1). */
  readonly prio?: number;
  readonly min?: number;
  readonly max?: number;
  readonly isSeconds?: boolean;
  readonly isTime?: boolean;
  /** STR / STR_STORE: the enumerated values (fio's posval ivals, in table order). */
  readonly posval?: readonly string[];
  /** Numeric types: the option has off2/off3 (one value per direction, or a low/high pair). */
  readonly slots?: 2 | 3;
  /** Numeric/boolean store into slot 0..2 (fio's off1..off3); returns an error text or null. */
  readonly set?: (st: OptState, slot: number, v: number, percent: boolean) => string | null;
  readonly setRange?: (st: OptState, slot: number, lo: number, hi: number) => void;
  /** STR/STR_STORE/FLOAT_LIST callback: matched posval (or null) and the raw value (null for a bare key). */
  readonly str?: (st: OptState, matched: string | null, value: string | null, ctx: StrContext) => string | null;
}

const dir3 =
  (key: 'bs' | 'rate' | 'rateIops' | 'ba') =>
  (st: OptState, slot: number, v: number): string | null => {
    st[key][slot as 0 | 1 | 2] = v;
    return null;
  };

const scalar =
  <K extends keyof OptState>(key: K, conv: (v: number) => OptState[K]) =>
  (st: OptState, slot: number, v: number): string | null => {
    if (slot === 0) st[key] = conv(v);
    return null;
  };
const num = (v: number): number => v;
const bool = (v: number): boolean => v !== 0;

const percentable =
  (abs: 'size' | 'offset' | 'offsetIncrement' | 'ioSize', pct: 'sizePercent' | 'offsetPercent' | 'offsetIncrementPercent' | 'ioSizePercent', cap: boolean) =>
  (st: OptState, _slot: number, v: number, percent: boolean): string | null => {
    if (percent) {
      // parse_is_percent caps at 100; io_size says so explicitly
      if (v > 100) return cap ? `${abs === 'ioSize' ? 'io_size' : abs} values greater than 100% aren't supported` : null;
      st[abs] = 0;
      st[pct] = v;
    } else {
      st[abs] = v;
      st[pct] = 0;
    }
    return null;
  };

const logCb =
  (key: 'bwLog' | 'latLog' | 'iopsLog' | 'histLog') =>
  (st: OptState, _m: string | null, value: string | null, ctx: StrContext): string | null => {
    st[key] = value === null || value === '' ? ctx.jobName : value;
    return null;
  };

const RANDOM_RW: ReadonlySet<RwMode> = new Set(['randread', 'randwrite', 'randtrim', 'randrw', 'randtrimwrite']);

function rwCb(st: OptState, matched: string | null, value: string | null): string | null {
  if (matched === null || value === null) return 'no value';
  const mode: RwMode = matched === 'readwrite' ? 'rw' : (matched as RwMode);
  if (!(RW_MODES as readonly string[]).includes(mode)) return `unknown rw mode ${matched}`;
  st.rw = mode;
  st.rwRandom = RANDOM_RW.has(mode);
  st.ddirSeqNr = 1;
  st.ddirSeqAdd = 0;
  const colon = value.indexOf(':');
  if (colon < 0) return null;
  const postfix = value.slice(colon + 1).trim();
  if (st.rwRandom) st.ddirSeqNr = atoi(postfix);
  else {
    const v = parseBytes(postfix, st.kbBase);
    if (v === null) return 'rw postfix parsing failed';
    st.ddirSeqAdd = Number(v.value);
  }
  return null;
}

function bssplitCb(st: OptState, _m: string | null, value: string | null): string | null {
  if (value === null) return 'requires an argument';
  const dirs = splitDirections(value.trim());
  // str_split_parse order: trim, write, read; each sets that direction's min/max bs
  for (const ddir of [2, 1, 0] as const) {
    const text = dirs[ddir];
    if (text === null) continue;
    const list = parseSplitList(text, false, 64, st.kbBase);
    if (typeof list === 'string') return list;
    if (list.length === 0) continue;
    const filled = fillBsSplit(list);
    if (typeof filled === 'string') return filled;
    st.bssplit[ddir] = filled;
    st.minBs[ddir] = Math.min(...filled.map((e) => e.v1));
    st.maxBs[ddir] = Math.max(...filled.map((e) => e.v1));
  }
  return null;
}

function distributionCb(st: OptState, matched: string | null, value: string | null): string | null {
  if (matched === null || value === null) return 'no value';
  st.randomDistribution = matched as OptState['randomDistribution'];
  if (matched === 'random') return null;
  if (matched === 'zoned' || matched === 'zoned_abs') {
    const pre = `${matched}:`;
    const str = value.trim();
    if (!str.startsWith(pre)) return `mismatch in zoned input <${str}>`;
    const dirs = splitDirections(str.slice(pre.length));
    const zones: OptState['zones'] = [[], [], []];
    for (const ddir of [2, 1, 0] as const) {
      const list = parseSplitList(dirs[ddir] ?? '', matched === 'zoned_abs', 256, st.kbBase);
      if (typeof list === 'string') return list;
      if (list.length === 0) continue;
      const filled = fillZones(list, matched === 'zoned_abs');
      if (typeof filled === 'string') return filled;
      zones[ddir] = filled.map((z) => ({ v1: z.accessPerc, v2: z.size }));
    }
    st.zones = zones;
    return null;
  }
  let val = matched === 'zipf' ? 1.1 : matched === 'pareto' ? 0.2 : 0.0;
  let center = -1;
  const colon = value.indexOf(':');
  if (colon >= 0) {
    const post = value.slice(colon + 1).trim();
    const c2 = post.indexOf(':');
    const v = parseCFloat(c2 >= 0 ? post.slice(0, c2) : post);
    const c = c2 >= 0 ? parseCFloat(post.slice(c2 + 1)) : center;
    if (v === null || c === null) return 'random postfix parsing failed';
    val = v;
    center = c;
  }
  if (center !== -1 && (center < 0 || center > 1)) return 'distribution center out of range (0 <= center <= 1.0)';
  if (matched === 'zipf' && val === 1) return 'zipf theta must different than 1.0';
  if (matched === 'pareto' && (val <= 0 || val >= 1)) return 'pareto input out of range (0 < input < 1.0)';
  if (matched === 'normal' && (val < 0 || val >= 100)) return 'normal deviation out of range (0 <= input < 100.0)';
  st.distValue = val;
  st.distCenter = center;
  return null;
}

/** verify_pattern: hex (0x...) and quoted strings, concatenated (lib/pattern.c, subset). */
export function parsePattern(input: string): Uint8Array | string {
  const bytes: number[] = [];
  let s = input.trim();
  while (s.length > 0) {
    let m: RegExpExecArray | null;
    if ((m = /^0[xX]([0-9a-fA-F]+)/.exec(s))) {
      let hex = m[1] ?? '';
      if (hex.length % 2 === 1) hex = `0${hex}`;
      for (let i = 0; i < hex.length; i += 2) bytes.push(Number.parseInt(hex.slice(i, i + 2), 16));
    } else if ((m = /^"([^"]*)"/.exec(s)) ?? (m = /^'([^']*)'/.exec(s))) {
      for (const b of Buffer.from(m[1] ?? '', 'latin1')) bytes.push(b);
    } else {
      return `verify_pattern '${input}': only 0x hex and quoted strings are implemented here`;
    }
    s = s.slice(m[0].length).trimStart();
  }
  if (bytes.length === 0) return 'empty verify_pattern';
  if (bytes.length > 512) return 'verify_pattern longer than 512 bytes';
  return Uint8Array.from(bytes);
}

const VERIFY_POSVAL = [
  '0',
  'md5',
  'crc64',
  'crc32',
  'crc32c-intel',
  'crc32c',
  'crc16',
  'crc7',
  'sha1',
  'sha256',
  'sha512',
  'sha3-224',
  'sha3-256',
  'sha3-384',
  'sha3-512',
  'xxhash',
  'meta',
  'pattern',
  'null',
] as const;
/** verify kinds the runner implements (others are refused as unimplemented). */
export const VERIFY_IMPLEMENTED: ReadonlySet<string> = new Set(['0', 'md5', 'crc32', 'crc32c-intel', 'crc32c', 'meta', 'pattern', 'null']);

export const OPTIONS: readonly OptDef[] = [
  {
    name: 'description',
    type: 'STR_STORE',
    str: (st, _m, v) => {
      st.description = v ?? '';
      return null;
    },
  },
  {
    name: 'name',
    type: 'STR_STORE',
    str: (st, _m, v) => {
      st.name = v;
      return null;
    },
  },
  {
    name: 'wait_for',
    type: 'STR_STORE',
    str: (st, _m, v) => {
      st.waitFor = v ?? '';
      return null;
    },
  },
  {
    name: 'filename',
    type: 'STR_STORE',
    prio: -1,
    str: (st, _m, v) => {
      // get_next_str: ':' separates files, "\:" is a literal colon; an empty name ends the list
      const parts = (v ?? '')
        .trim()
        .split(/(?<!\\):/)
        .map((p) => p.replace(/\\:/g, ':'));
      for (const p of parts) {
        if (p.length === 0) break;
        st.filenames.push(p);
      }
      return null;
    },
  },
  {
    name: 'rw',
    aliases: ['readwrite'],
    type: 'STR',
    posval: ['read', 'write', 'trim', 'randread', 'randwrite', 'randtrim', 'rw', 'readwrite', 'randrw', 'trimwrite', 'randtrimwrite'],
    str: rwCb,
  },
  { name: 'rw_sequencer', type: 'STR', posval: ['sequential', 'identical'], str: (_st, m) => (m === 'identical' ? 'UNIMPLEMENTED' : null) },
  {
    name: 'ioengine',
    type: 'STR_STORE',
    str: (st, _m, v) => {
      st.ioengine = (v ?? '').split(':')[0] ?? '';
      return null;
    },
  },
  { name: 'iodepth', type: 'INT', min: 1, set: scalar('iodepth', num) },
  { name: 'iodepth_batch', aliases: ['iodepth_batch_submit'], type: 'INT', set: scalar('iodepthBatch', num) },
  { name: 'iodepth_batch_complete_min', aliases: ['iodepth_batch_complete'], type: 'INT', set: scalar('iodepthBatchCompleteMin', num) },
  { name: 'iodepth_batch_complete_max', type: 'INT', set: scalar('iodepthBatchCompleteMax', num) },
  { name: 'iodepth_low', type: 'INT', set: scalar('iodepthLow', num) },
  { name: 'size', type: 'STR_VAL', set: percentable('size', 'sizePercent', false) },
  { name: 'io_size', aliases: ['io_limit'], type: 'STR_VAL', set: percentable('ioSize', 'ioSizePercent', true) },
  { name: 'offset', aliases: ['fileoffset'], type: 'STR_VAL', set: percentable('offset', 'offsetPercent', false) },
  { name: 'offset_increment', type: 'STR_VAL', set: percentable('offsetIncrement', 'offsetIncrementPercent', false) },
  { name: 'number_ios', type: 'STR_VAL', set: scalar('numberIos', num) },
  { name: 'bs', aliases: ['blocksize'], type: 'ULL', min: 1, slots: 3, set: dir3('bs') },
  {
    name: 'bsrange',
    aliases: ['blocksize_range'],
    type: 'RANGE',
    min: 1,
    slots: 3,
    setRange: (st, slot, lo, hi) => {
      st.minBs[slot as 0 | 1 | 2] = lo;
      st.maxBs[slot as 0 | 1 | 2] = hi;
    },
  },
  { name: 'bssplit', type: 'STR', str: bssplitCb },
  { name: 'ba', aliases: ['blockalign'], type: 'INT', min: 1, slots: 3, set: dir3('ba') },
  { name: 'bs_unaligned', aliases: ['blocksize_unaligned'], type: 'STR_SET', set: scalar('bsUnaligned', bool) },
  { name: 'randrepeat', type: 'BOOL', set: scalar('randrepeat', bool) },
  {
    name: 'randseed',
    type: 'STR_VAL',
    set: (st, slot, v) => {
      if (slot === 0) {
        st.randseed = v;
        st.randseedSet = true;
      }
      return null;
    },
  },
  { name: 'norandommap', type: 'STR_SET', set: scalar('norandommap', bool) },
  {
    name: 'random_generator',
    type: 'STR',
    posval: ['tausworthe', 'lfsr', 'tausworthe64'],
    str: (st, m) => {
      st.randomGenerator = m as OptState['randomGenerator'];
      return null;
    },
  },
  { name: 'random_distribution', type: 'STR', posval: ['random', 'zipf', 'pareto', 'normal', 'zoned', 'zoned_abs'], str: distributionCb },
  { name: 'fsync', type: 'INT', set: scalar('fsync', num) },
  { name: 'fdatasync', type: 'INT', set: scalar('fdatasync', num) },
  { name: 'end_fsync', type: 'BOOL', set: scalar('endFsync', bool) },
  { name: 'direct', type: 'BOOL', set: scalar('direct', bool) },
  {
    name: 'buffered',
    type: 'BOOL',
    set: (st, slot, v) => {
      if (slot === 0) st.direct = v === 0;
      return null;
    },
  },
  { name: 'loops', type: 'INT', set: scalar('loops', num) },
  { name: 'numjobs', type: 'INT', set: scalar('numjobs', num) },
  {
    name: 'startdelay',
    type: 'STR_VAL_TIME',
    isSeconds: true,
    isTime: true,
    slots: 2,
    set: (st, slot, v) => {
      if (slot === 0) st.startDelayUs = v;
      else st.startDelayHighUs = v;
      return null;
    },
  },
  { name: 'runtime', aliases: ['timeout'], type: 'STR_VAL_TIME', isSeconds: true, isTime: true, set: scalar('timeoutUs', num) },
  { name: 'time_based', type: 'STR_SET', set: scalar('timeBased', bool) },
  { name: 'ramp_time', type: 'STR_VAL_TIME', isSeconds: true, isTime: true, set: scalar('rampTimeUs', num) },
  {
    name: 'verify',
    type: 'STR',
    posval: VERIFY_POSVAL,
    str: (st, m) => {
      if (m === null) return 'no value';
      if (!VERIFY_IMPLEMENTED.has(m)) return 'UNIMPLEMENTED';
      st.verify = m;
      st.verifySet = true;
      return null;
    },
  },
  { name: 'do_verify', type: 'BOOL', set: scalar('doVerify', bool) },
  { name: 'verify_interval', type: 'INT', min: 2 * 40, set: scalar('verifyInterval', num) },
  {
    name: 'verify_pattern',
    type: 'STR',
    str: (st, _m, v) => {
      if (v === null) return 'requires an argument';
      const p = parsePattern(v);
      if (typeof p === 'string') return p;
      st.verifyPattern = p;
      if (!st.verifySet) st.verify = 'pattern';
      return null;
    },
  },
  { name: 'verify_backlog', type: 'STR_VAL', set: scalar('verifyBacklog', num) },
  {
    name: 'rwmixread',
    type: 'INT',
    max: 100,
    set: (st, slot, v) => {
      if (slot === 0) st.rwmixRead = v;
      return null;
    },
  },
  {
    name: 'rwmixwrite',
    type: 'INT',
    max: 100,
    set: (st, slot, v) => {
      if (slot === 0) st.rwmixRead = 100 - v;
      return null;
    },
  },
  { name: 'thinktime', type: 'INT', isTime: true, set: scalar('thinktimeUs', num) },
  { name: 'thinktime_spin', type: 'INT', isTime: true, set: scalar('thinktimeSpinUs', num) },
  { name: 'thinktime_blocks', type: 'INT', set: scalar('thinktimeBlocks', num) },
  { name: 'rate', type: 'ULL', slots: 3, set: dir3('rate') },
  { name: 'rate_iops', type: 'INT', slots: 3, set: dir3('rateIops') },
  {
    name: 'rate_process',
    type: 'STR',
    posval: ['linear', 'poisson'],
    str: (st, m) => {
      st.rateProcess = m as 'linear' | 'poisson';
      return null;
    },
  },
  { name: 'stonewall', aliases: ['wait_for_previous'], type: 'STR_SET', set: scalar('stonewall', bool) },
  { name: 'new_group', type: 'STR_SET', set: scalar('newGroup', bool) },
  { name: 'group_reporting', type: 'STR_SET', set: scalar('groupReporting', bool) },
  { name: 'per_job_logs', type: 'BOOL', set: scalar('perJobLogs', bool) },
  { name: 'write_bw_log', type: 'STR', str: logCb('bwLog') },
  { name: 'write_lat_log', type: 'STR', str: logCb('latLog') },
  { name: 'write_iops_log', type: 'STR', str: logCb('iopsLog') },
  { name: 'write_hist_log', type: 'STR', str: logCb('histLog') },
  { name: 'log_avg_msec', type: 'INT', set: scalar('logAvgMsec', num) },
  { name: 'log_hist_msec', type: 'INT', set: scalar('logHistMsec', num) },
  { name: 'log_offset', type: 'BOOL', set: scalar('logOffset', bool) },
  { name: 'log_prio', type: 'BOOL', set: scalar('logPrio', bool) },
  { name: 'bwavgtime', type: 'INT', set: scalar('bwAvgTimeMs', num) },
  { name: 'iopsavgtime', type: 'INT', set: scalar('iopsAvgTimeMs', num) },
  {
    name: 'percentile_list',
    type: 'FLOAT_LIST',
    str: (st, _m, v) => {
      // FIO_IO_U_LIST_MAX_LEN is 20; values must lie in [0, 100]
      const list: number[] = [];
      for (const part of (v ?? '').split(':')) {
        if (list.length >= 20) return 'the list exceeding max length 20';
        const f = parseCFloat(part);
        if (f === null) return `not a floating point value: ${part}`;
        if (f > 100 || f < 0) return `value out of range: ${f}`;
        list.push(f);
      }
      st.percentileList = list;
      return null;
    },
  },
  {
    name: 'kb_base',
    type: 'STR',
    prio: 1,
    posval: ['1024', '1000'],
    str: (st, m) => {
      st.kbBase = (m === '1000' ? 1000 : 1024) as KbBase;
      return null;
    },
  },
];

/**
 * Options accepted with a one-line note: they choose how fio talks to the kernel, what it prints or
 * what the buffers hold, never which blocks are read or written or when. Value: the note.
 */
export const NOTE_ONLY: Readonly<Record<string, string>> = {
  thread: 'jobs run in the runner as one process',
  gtod_reduce: 'timing is always measured',
  clocksource: 'the runner uses the monotonic clock',
  cpus_allowed: 'CPU placement is not modelled',
  cpumask: 'CPU placement is not modelled',
  cpus_allowed_policy: 'CPU placement is not modelled',
  nice: 'process priority is not modelled',
  prio: 'I/O priority is not modelled',
  prioclass: 'I/O priority is not modelled',
  invalidate: "cache invalidation is the backend's business",
  disable_lat: 'all latencies are recorded',
  disable_clat: 'all latencies are recorded',
  disable_slat: 'all latencies are recorded',
  disable_bw_measurement: 'bandwidth is always measured',
  slat_percentiles: 'percentile output follows the defaults',
  clat_percentiles: 'percentile output follows the defaults',
  lat_percentiles: 'percentile output follows the defaults',
  significant_figures: 'output precision follows the defaults',
  unit_base: 'output units follow the defaults',
  refill_buffers: 'buffer contents do not change the I/O pattern',
  zero_buffers: 'buffer contents do not change the I/O pattern',
  scramble_buffers: 'buffer contents do not change the I/O pattern',
  buffer_pattern: 'buffer contents do not change the I/O pattern',
  buffer_compress_percentage: 'buffer contents do not change the I/O pattern',
  buffer_compress_chunk: 'buffer contents do not change the I/O pattern',
  lockmem: 'memory locking is not modelled',
  mem: 'buffer memory type is not modelled',
  iomem: 'buffer memory type is not modelled',
  iomem_align: 'buffer alignment is handled by the runner',
  hugepage_size: 'buffer memory type is not modelled',
  log_max_value: 'averaged logs keep the mean',
  log_unix_epoch: 'log timestamps are relative to the job start',
  log_compression: 'logs are not compressed',
  stats: 'statistics are always collected',
  create_serialize: "file creation is the backend's business",
  create_on_open: "file creation is the backend's business",
  allow_file_create: "file creation is the backend's business",
  fallocate: "file creation is the backend's business",
  fadvise_hint: 'page-cache hints are not modelled',
  unlink: 'the runner does not delete target files',
  unlink_each_loop: 'the runner does not delete target files',
  serialize_overlap: 'the runner never has overlapping writes in flight from one job',
  io_submit_mode: 'submission is inline',
  ioscheduler: 'the I/O scheduler is not modelled',
  uid: 'credentials are not changed',
  gid: 'credentials are not changed',
  verify_fatal: 'a verify mismatch always ends the job',
  verify_dump: 'mismatching blocks are not dumped',
  verify_async: 'verification is done inline',
  write_iolog: 'I/O logs are not written',
  exitall_on_error: 'errors end the run',
  lockfile: 'file locking is not modelled',
  rate_cycle: 'rate is enforced continuously',
  percentile_precision: 'output precision follows the defaults',
};

const BY_NAME = new Map<string, OptDef>();
for (const o of OPTIONS) {
  BY_NAME.set(o.name, o);
  for (const a of o.aliases ?? []) BY_NAME.set(a, o);
}

export function findOption(key: string): OptDef | undefined {
  return BY_NAME.get(key);
}
