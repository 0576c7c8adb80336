// parseJobFiles: job files -> ParsedJobs, following fio 3.33's order of work (init.c
// __parse_jobs_ini, options.c fio_options_parse, init.c fixup_options/add_job).
import { cpus, totalmem } from 'node:os';
import type { FioJob, ParsedJobs, PerDdir, RandomDistribution, VerifyKind } from '../job.ts';
import { FioParseError } from './errors.ts';
import { handleOption, hiddenUnit } from './handle.ts';
import { FIO_OPTION_NAMES } from './known-names.ts';
import { splitSections, type IncludeReader, type OptionLine } from './lines.ts';
import { findOption, NOTE_ONLY, OPTIONS, type OptDef } from './options.ts';
import { effectiveBsSplit } from './split.ts';
import { cloneState, defaultState, type OptState } from './state.ts';
import { substituteEnv, substituteKeywords, type Keywords } from './substitute.ts';

export interface ParseOptions {
  /** Refuse the fio 1.41-2.0.11 prefix reading of enumerated values (`rw=randw`), as fio 3.33 does. */
  readonly strict?: boolean;
  /** For ${VAR}; defaults to process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Reads an included file; undefined when it does not exist. Tried with the path as written, then
   * relative to the including file's directory. */
  readonly readInclude?: IncludeReader;
  /** "key=value" lines (--set) applied to every job after its own options, so they win. */
  readonly overrides?: readonly string[];
  /** Values for $pagesize, $mb_memory, $ncpus; default: this machine. */
  readonly keywords?: Keywords;
}

interface Item {
  readonly key: string;
  readonly value: string | null;
  readonly raw: string;
  readonly where: string;
  readonly def: OptDef | undefined;
}

function machineKeywords(): Keywords {
  return { pagesize: 4096, mb_memory: Math.floor(totalmem() / (1024 * 1024)), ncpus: cpus().length };
}

/** string_distance (Levenshtein) and string_distance_ok from parse.c. */
function distance(a: string, b: string): number {
  let p = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const q = [i];
    for (let j = 1; j <= b.length; j++) {
      const sub = (p[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      q[j] = Math.min((p[j] ?? 0) + 1, (q[j - 1] ?? 0) + 1, sub);
    }
    p = q;
  }
  return p[b.length] ?? 0;
}

function suggestion(key: string): string {
  const lower = key.toLowerCase();
  if (lower !== key && FIO_OPTION_NAMES.has(lower)) return ` (options are case-sensitive; did you mean '${lower}'?)`;
  let best = '';
  let bestD = Number.POSITIVE_INFINITY;
  for (const n of FIO_OPTION_NAMES) {
    const d = distance(key, n);
    if (d < bestD) {
      bestD = d;
      best = n;
    }
  }
  return best !== '' && bestD <= Math.floor((key.length + 1) / 2) ? ` (did you mean '${best}'?)` : '';
}

function toItem(line: OptionLine, env: Readonly<Record<string, string | undefined>>, kw: Keywords): Item {
  const substituted = substituteKeywords(substituteEnv(line.text, env), kw);
  if (substituted === null) throw new FioParseError(line.where, `failed parsing '${line.text}': the arithmetic fio hands to bc is not valid`);
  const eq = substituted.indexOf('=');
  const key = eq >= 0 ? substituted.slice(0, eq).replace(/\s+$/, '') : substituted;
  const value = eq >= 0 ? substituted.slice(eq + 1) : null;
  return { key, value, raw: line.text, where: line.where, def: findOption(key) };
}

/** sort_options: by prio, highest first, stable. */
function sortItems(items: Item[]): Item[] {
  return items
    .map((it, i) => ({ it, i }))
    .sort((a, b) => (b.it.def?.prio ?? 0) - (a.it.def?.prio ?? 0) || a.i - b.i)
    .map((x) => x.it);
}

interface Applied {
  readonly dump: [string, string][];
  readonly warnings: string[];
}

function applyItems(items: readonly Item[], st: OptState, jobName: string, strict: boolean): Applied {
  const dump: [string, string][] = [];
  const warnings: string[] = [];
  for (const it of items) {
    const shown = it.value === null ? it.key : `${it.key}=${it.value}`;
    if (it.def === undefined) {
      if (!FIO_OPTION_NAMES.has(it.key)) throw new FioParseError(it.where, `bad option '${shown}'${suggestion(it.key)}`);
      const note = NOTE_ONLY[it.key];
      if (note === undefined) throw new FioParseError(it.where, `'${shown}': ${it.key} is a fio option this runner does not implement`);
      warnings.push(`${it.where}: ${shown} ignored (${note})`);
      if (it.value !== null) dump.push([it.key, it.value]);
      continue;
    }
    const r = handleOption(it.def, it.value, st, { jobName }, !strict);
    if (r.unimplemented === true) throw new FioParseError(it.where, `'${shown}': this ${it.def.name} value is a fio feature this runner does not implement`);
    if (r.error !== null) {
      const legacy = r.legacy !== undefined ? ` (fio 1.41-2.0.11 read it as ${r.legacy}; --strict, like fio >= 2.0.12, refuses it)` : '';
      // `rw = randwrite`: fio keeps the blank after '=' in the value, and ' randwrite' is no mode.
      const blank =
        it.value !== null && /^\s/.test(it.value) && it.def.posval !== undefined && !legacy
          ? ` (fio 3.33 keeps the blank after '=': '${it.value}' is not '${it.value.trimStart()}'; write ${it.key}=${it.value.trimStart()})`
          : '';
      throw new FioParseError(it.where, `failed parsing '${shown}': ${r.error}${legacy}${blank}`);
    }
    const hidden = hiddenUnit(it.def, it.value, st.kbBase);
    let note: string | undefined;
    if (hidden !== null) {
      note = `${hidden.read.join(', ')}, as fio 3.33 reads it (a blank before a number hides its unit)`;
      warnings.push(`${it.where}: '${it.raw}': ${note}; write ${it.key}=${hidden.tidy} for ${hidden.meant.join(', ')}`);
    }
    st.origins[it.def.name] = { where: it.where, text: it.raw, ...(note === undefined ? {} : { note }) };
    if (r.legacy !== undefined) {
      warnings.push(`${it.where}: ${shown} read as ${r.legacy} (fio 1.41-2.0.11 prefix rule); fio >= 2.0.12 rejects it; --strict refuses`);
    }
    if (it.def.name === 'ioengine' && it.value !== null && it.value !== 'null') {
      warnings.push(`${it.where}: ioengine=${it.value} noted: the runner submits I/O its own way (iodepth and batching are kept)`);
    }
    if (it.value !== null) dump.push([it.def.name, it.value]);
  }
  return { dump, warnings };
}

const VERIFY_KIND: Readonly<Record<string, VerifyKind>> = {
  '0': 'none',
  md5: 'md5',
  crc32: 'crc32',
  'crc32c-intel': 'crc32c',
  crc32c: 'crc32c',
  meta: 'meta',
  pattern: 'pattern',
  null: 'null',
};

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

function distributionOf(st: OptState): RandomDistribution {
  const center = st.distCenter === -1 ? 0 : st.distCenter;
  switch (st.randomDistribution) {
    case 'random':
      return { kind: 'random' };
    case 'zipf':
      return { kind: 'zipf', theta: st.distValue, center };
    case 'pareto':
      return { kind: 'pareto', h: st.distValue, center };
    case 'normal':
      return { kind: 'normal', dev: st.distValue, center };
    default: {
      const z = st.zones.map((list) => list.map((e) => ({ accessPerc: e.v1, size: e.v2 })));
      return { kind: st.randomDistribution, zones: [z[0] ?? [], z[1] ?? [], z[2] ?? []] };
    }
  }
}

const hasRead = (rw: string): boolean => rw.includes('read') || rw === 'rw' || rw === 'randrw';

/** "size = 64k at jobs/x.fio:6: ' 64k' is 64 bytes ..." for an option set in a file; '' when it is a default. */
function origin(st: OptState, option: string): string {
  const o = st.origins[option];
  if (o === undefined) return '';
  return `${option}: '${o.text}' at ${o.where}${o.note === undefined ? '' : `: ${o.note}`}`;
}

/** fixup_options and add_job checks, then the FioJob. */
function buildJob(
  section: { name: string; where: string; fileIndex: number },
  st: OptState,
  options: Record<string, string>,
  stonewallFlag: boolean,
  earlier: readonly FioJob[],
  warnings: string[],
): FioJob {
  const where = section.where;
  const name = st.name ?? section.name;
  const ddirs = [0, 1, 2] as const;
  const bsMin = ddirs.map((d) => st.minBs[d] || st.bs[d]) as PerDdir<number>;
  const bsMax = ddirs.map((d) => st.maxBs[d] || st.bs[d]) as PerDdir<number>;
  const random = st.rwRandom;
  const blockalign = ddirs.map((d) => (st.ba[d] !== 0 && random ? st.ba[d] : bsMin[d])) as PerDdir<number>;
  let norandommap = st.norandommap;
  if (ddirs.some((d) => blockalign[d] !== bsMin[d]) && !norandommap) {
    warnings.push(`${where}: fio: Any use of blockalign= turns off randommap`);
    norandommap = true;
  }
  if (st.randomDistribution !== 'random') norandommap = true;

  const usesRate = st.rate.some((r) => r !== 0);
  const usesIops = st.rateIops.some((r) => r !== 0);
  if (usesRate && usesIops) throw new FioParseError(where, `job ${name}: rate and rate_iops are mutually exclusive`);
  const minBs = Math.min(bsMin[0], bsMin[1], bsMin[2]);
  if (st.size !== 0 && st.size < minBs) {
    const from = ['size', 'bs', 'bsrange']
      .map((o) => origin(st, o))
      .filter((o) => o !== '')
      .join('; ');
    throw new FioParseError(
      where,
      `job ${name}: size too small, must not be less than minimum block size: ${st.size} < ${minBs}${from === '' ? '' : ` (${from})`}`,
    );
  }
  let timeBased = st.timeBased;
  if (st.timeoutUs === 0 && timeBased) {
    warnings.push(`${where}: fio: time_based requires a runtime/timeout setting (time_based ignored)`);
    timeBased = false;
  }
  if (st.waitFor !== '') {
    if (st.waitFor === name) throw new FioParseError(where, `${name}: a job cannot wait for itself (wait_for=${st.waitFor})`);
    const n = earlier.filter((j) => j.name === st.waitFor).length;
    if (n === 0) throw new FioParseError(where, `${name}: waitee job ${st.waitFor} unknown (it must come earlier)`);
    if (n > 1) throw new FioParseError(where, `${name}: multiple waitees ${st.waitFor} found`);
  }

  const iodepth = st.iodepth;
  const iodepthLow = st.iodepthLow > iodepth || st.iodepthLow === 0 ? iodepth : st.iodepthLow;
  const iodepthBatch = st.iodepthBatch > iodepth || st.iodepthBatch === 0 ? iodepth : st.iodepthBatch;
  const completeMax = Math.max(st.iodepthBatchCompleteMax, st.iodepthBatchCompleteMin);

  const verify = VERIFY_KIND[st.verify] ?? 'none';
  let verifyInterval = st.verifyInterval;
  if (verify !== 'none') {
    const [rMin, wMin] = [bsMin[0], bsMin[1]];
    const wMax = bsMax[1];
    if (wMax !== wMin && verifyInterval === 0) verifyInterval = wMin;
    if (verifyInterval > wMin) verifyInterval = wMin;
    else if (hasRead(st.rw) && verifyInterval > rMin) verifyInterval = rMin;
    if (verifyInterval === 0 || wMin % verifyInterval !== 0 || wMax % verifyInterval !== 0) verifyInterval = gcd(wMin, wMax);
  }

  const filename = st.filenames.length > 0 ? [...st.filenames] : section.name.startsWith('/dev/') ? [section.name] : [`${section.name}.0.0`];
  const split = (d: 0 | 1 | 2) => effectiveBsSplit(st.bssplit[d], bsMin[d], bsMax[d], st.bsUnaligned);
  const bssplit: FioJob['bssplit'] = [split(0), split(1), split(2)];

  return {
    name,
    where,
    threadNumber: 0,
    cloneIndex: 0,
    fileIndex: section.fileIndex,
    filename,
    rw: st.rw,
    rwSuffix: random ? (st.ddirSeqNr !== 1 ? st.ddirSeqNr : 0) : st.ddirSeqAdd,
    rwmixread: st.rwmixRead,
    bs: [...st.bs],
    bsMin,
    bsMax,
    bssplit,
    blockalign,
    bsUnaligned: st.bsUnaligned,
    size: st.size,
    sizePercent: st.sizePercent,
    offset: st.offset,
    offsetPercent: st.offsetPercent,
    offsetIncrement: st.offsetIncrement,
    ioSize: st.ioSize,
    numberIos: st.numberIos,
    numjobs: st.numjobs,
    loops: st.loops === 0 ? 1 : st.loops,
    ioengine: st.ioengine,
    direct: st.direct,
    iodepth,
    iodepthBatchSubmit: iodepthBatch,
    iodepthBatchCompleteMin: st.iodepthBatchCompleteMin,
    iodepthBatchCompleteMax: completeMax,
    iodepthLow,
    runtimeUs: st.timeoutUs,
    timeBased,
    rampTimeUs: st.rampTimeUs,
    startDelayUs: [st.startDelayUs, st.startDelayHighUs || st.startDelayUs],
    randrepeat: st.randrepeat,
    randseed: st.randseed,
    norandommap,
    randomGenerator: st.randomGenerator,
    randomDistribution: distributionOf(st),
    verify,
    verifyPattern: st.verifyPattern,
    doVerify: st.doVerify,
    verifyBacklog: st.verifyBacklog,
    verifyInterval,
    fsync: st.fsync,
    fdatasync: st.fdatasync,
    endFsync: st.endFsync,
    rate: [...st.rate],
    rateIops: [...st.rateIops],
    rateProcess: st.rateProcess,
    thinktimeUs: st.thinktimeUs,
    thinktimeBlocks: st.thinktimeBlocks,
    thinktimeSpin: Math.min(st.thinktimeSpinUs, st.thinktimeUs),
    stonewall: st.stonewall || stonewallFlag,
    newGroup: st.newGroup,
    waitFor: st.waitFor,
    groupReporting: st.groupReporting,
    writeBwLog: st.bwLog,
    writeLatLog: st.latLog,
    writeIopsLog: st.iopsLog,
    writeHistLog: st.histLog,
    logAvgMsec: st.logAvgMsec,
    logHistMsec: st.logHistMsec,
    logOffset: st.logOffset,
    logPrio: st.logPrio,
    perJobLogs: st.perJobLogs,
    bwAvgTimeMs: st.bwAvgTimeMs,
    iopsAvgTimeMs: st.iopsAvgTimeMs,
    percentileList: [...st.percentileList],
    description: st.description,
    kbBase: st.kbBase,
    options,
    origins: { ...st.origins },
    offsetIncrementPercent: st.offsetIncrementPercent,
    ioSizePercent: st.ioSizePercent,
  };
}

function parseOverrides(overrides: readonly string[], env: Readonly<Record<string, string | undefined>>, kw: Keywords): Item[] {
  return overrides.map((o, i) => toItem({ text: o.trim(), where: `--set #${i + 1} (${o})` }, env, kw));
}

/** Parses fio job files (in command-line order) into jobs, before numjobs expansion. */
export function parseJobFiles(files: readonly { path: string; text: string }[], opts: ParseOptions = {}): ParsedJobs {
  const strict = opts.strict === true;
  const env = opts.env ?? process.env;
  const kw = opts.keywords ?? machineKeywords();
  const overrides = parseOverrides(opts.overrides ?? [], env, kw);
  for (const o of overrides) {
    if (o.def === undefined && !FIO_OPTION_NAMES.has(o.key)) throw new FioParseError(o.where, `bad option '${o.raw}'${suggestion(o.key)}`);
  }
  const warnings: string[] = [];
  const jobs: FioJob[] = [];
  const globalDump: [string, string][] = [];
  let global = defaultState();

  files.forEach((file, fileIndex) => {
    const split = splitSections(file.path, file.text, fileIndex, opts.readInclude);
    warnings.push(...split.warnings);
    let stonewallNext = fileIndex > 0;
    for (const section of split.sections) {
      const items = sortItems(section.lines.map((l) => toItem(l, env, kw)));
      if (section.global) {
        // name= in a global section renames nothing (measured)
        const st = global;
        const savedName = st.name;
        const r = applyItems(items, st, section.name, strict);
        st.name = savedName;
        global = st;
        globalDump.push(...r.dump);
        warnings.push(...r.warnings);
        continue;
      }
      const st = cloneState(global);
      st.name = null;
      const r = applyItems(items, st, section.name, strict);
      warnings.push(...r.warnings);
      const dump = [...r.dump];
      if (overrides.length > 0) {
        const filenameOverride = overrides.some((o) => o.def?.name === 'filename');
        if (filenameOverride) st.filenames = [];
        const ro = applyItems(sortItems(overrides), st, section.name, strict);
        warnings.push(...ro.warnings.filter((w) => !warnings.includes(w)));
        dump.push(...ro.dump);
      }
      const options: Record<string, string> = {};
      for (const [k, v] of dump) options[k] = v;
      jobs.push(buildJob(section, st, options, stonewallNext, jobs, warnings));
      stonewallNext = false;
    }
  });
  if (jobs.length === 0) {
    throw new FioParseError(files.map((f) => f.path).join(', ') || '(no job files)', 'No job(s) defined');
  }
  const globalOptions: Record<string, string> = {};
  for (const [k, v] of globalDump) globalOptions[k] = v;
  return { jobs, globalOptions, warnings };
}

/** The implemented option names (canonical and aliases), for help texts. */
export function implementedOptionNames(): string[] {
  return OPTIONS.flatMap((o) => [o.name, ...(o.aliases ?? [])]);
}
