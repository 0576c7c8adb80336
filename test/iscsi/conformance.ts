// libiscsi's conformance suite (iscsi-test-cu 1.19.0) as a per-test verdict list.
//
// Run: iscsi-test-cu -d -S -v --test=ALL URL URL -i NAME1 -I NAME2 (-d: tests that lose data, -S:
// SANITIZE; the URL twice gives the multipath tests their second path, and the two initiator names
// serve the reservation and two-nexus tests). CUnit counts a skipped test as passed, so the verdicts
// come from the -v output (docs/iscsi-baselines.md §2.1): after "Test: NAME ...", the first
// "passed" or "FAILED" is the verdict; a "[SKIPPED]" printed before a "passed" makes it a skip; a
// "[FAILED] ..." message line is not a verdict. libiscsi's messages and CUnit's verdicts share one
// stdout, so a suite's set-up message may follow a verdict on the same line
// ("Test: Residuals ...passed    [FAILED] PRIN command: ..."); a test's region ends where the next
// "Test:" header begins, and a "Suite:" header may come anywhere in a line.
//
// A list file has one "Suite.Test VERDICT" line per test, sorted (test/fixtures/iscsi/conformance/).
//
// CLI (after `npx tsc -p .`):
//   node dist/test/iscsi/conformance.js --target tgt|blkback --lun thick|thin|readonly [--size 256M]
//        [--out FILE | --fixture] [--compare FILE] [--raw FILE]
//   node dist/test/iscsi/conformance.js --url URL [--url URL2] [--out FILE]
//   node dist/test/iscsi/conformance.js --parse SAVED-V-OUTPUT.txt [--out FILE]
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createLunFile, LUN_MODES, onPath, startBlkbackTarget } from '../../src/bench/iscsi-target.ts';
import type { LunMode, RunningTarget, StartTarget } from '../../src/bench/iscsi-target.ts';
import { startTgt } from '../../src/bench/iscsi-tgt.ts';
import { runIfScript } from './script.ts';

export type Verdict = 'pass' | 'fail' | 'skip';
export type VerdictList = Map<string, Verdict>;

export const INITIATOR_1 = 'iqn.2026-12.org.blkback:initiator-1';
export const INITIATOR_2 = 'iqn.2026-12.org.blkback:initiator-2';
/** The tests that make up --test=ALL in libiscsi 1.19.0 (SCSI 215 + iSCSI 15). */
export const ALL_TEST_COUNT = 230;
/** 256 MiB is enough: tgt's thick verdicts on it equal those on 1 GiB (docs/iscsi-baselines.md §2.1). */
export const DEFAULT_LUN_BYTES = 256 << 20;

const HEADER = /Suite: (\S+)|Test: (\S+) \.\.\./g;
const SUMMARY = /\n\s*Run Summary:/;

/** Every test's verdict from `iscsi-test-cu -v` output, keyed "Suite.Test" (libiscsi's names less "ALL."). */
export function parseVerdicts(output: string): VerdictList {
  const end = output.search(SUMMARY);
  const text = end < 0 ? output : output.slice(0, end);
  const heads: { name: string; from: number; at: number }[] = [];
  let suite = '';
  for (const m of text.matchAll(HEADER)) {
    if (m[1] !== undefined) {
      suite = m[1];
      continue;
    }
    heads.push({ name: suite === '' ? m[2]! : `${suite}.${m[2]!}`, at: m.index, from: m.index + m[0].length });
  }
  const out: VerdictList = new Map();
  for (let i = 0; i < heads.length; i++) {
    const h = heads[i]!;
    const region = text.slice(h.from, i + 1 < heads.length ? heads[i + 1]!.at : text.length);
    const v = verdictOf(region);
    // No verdict at all: the tool died in this test (or its output was cut); that is a failure.
    out.set(h.name, v ?? 'fail');
  }
  return out;
}

function verdictOf(region: string): Verdict | null {
  // libiscsi's own messages never hold "passed" and write FAILED only as "[FAILED]" (1.19.0's test-tool).
  const word = /(?<![[\w])(passed|FAILED)(?![\]\w])/.exec(region);
  if (word === null) return null;
  if (word[1] === 'FAILED') return 'fail';
  return region.slice(0, word.index).includes('[SKIPPED]') ? 'skip' : 'pass';
}

/** The list file: "Suite.Test VERDICT" lines, sorted by name (code-point order), newline-terminated. */
export function formatList(list: VerdictList): string {
  const names = [...list.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return names.map((n) => `${n} ${list.get(n)!}\n`).join('');
}

export function parseList(text: string): VerdictList {
  const out: VerdictList = new Map();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(pass|fail|skip)$/.exec(line);
    if (m === null) throw new Error(`verdict list line ${i + 1}: '${line}' is not 'Suite.Test pass|fail|skip'`);
    out.set(m[1]!, m[2] as Verdict);
  }
  return out;
}

export interface Comparison {
  /** Passed in the stored list, not now (failed, skipped, or not run). */
  regressions: { name: string; now: Verdict | 'missing' }[];
  /** Passes now, did not in the stored list (or was not in it). */
  improvements: { name: string; was: Verdict | 'missing' }[];
  /** Other changes that gate nothing (fail <-> skip, new or vanished non-passes). */
  other: { name: string; was: Verdict | 'missing'; now: Verdict | 'missing' }[];
}

export function compareLists(stored: VerdictList, now: VerdictList): Comparison {
  const names = [...new Set([...stored.keys(), ...now.keys()])].sort();
  const c: Comparison = { regressions: [], improvements: [], other: [] };
  for (const name of names) {
    const was = stored.get(name) ?? 'missing';
    const is = now.get(name) ?? 'missing';
    if (was === is) continue;
    if (was === 'pass') c.regressions.push({ name, now: is });
    else if (is === 'pass') c.improvements.push({ name, was });
    else c.other.push({ name, was, now: is });
  }
  return c;
}

export function formatComparison(c: Comparison): string {
  const lines: string[] = [];
  if (c.regressions.length > 0)
    lines.push(`regressions (passed in the stored list, not now): ${c.regressions.length}`, ...c.regressions.map((r) => `  ${r.name}: pass -> ${r.now}`));
  if (c.improvements.length > 0)
    lines.push(`improvements (pass now, not in the stored list): ${c.improvements.length}`, ...c.improvements.map((r) => `  ${r.name}: ${r.was} -> pass`));
  if (c.other.length > 0) lines.push(`other changes: ${c.other.length}`, ...c.other.map((r) => `  ${r.name}: ${r.was} -> ${r.now}`));
  return lines.length === 0 ? 'no changes against the stored list' : lines.join('\n');
}

export interface Counts {
  pass: number;
  fail: number;
  skip: number;
  total: number;
}

export function countVerdicts(list: VerdictList): Counts {
  const c: Counts = { pass: 0, fail: 0, skip: 0, total: list.size };
  for (const v of list.values()) c[v]++;
  return c;
}

/** Counts side by side, one row per configuration (a Markdown table). */
export function formatSummary(rows: readonly { label: string; now?: VerdictList | undefined; stored?: VerdictList | undefined; note?: string }[]): string {
  const cell = (l: VerdictList | undefined): string => {
    if (l === undefined) return '– | – | – | –';
    const c = countVerdicts(l);
    return `${c.pass} | ${c.fail} | ${c.skip} | ${c.total}`;
  };
  const out = [
    '| configuration | pass | fail | skip | total | stored: pass | fail | skip | total | regressions | improvements | note |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    const cmp = r.now !== undefined && r.stored !== undefined ? compareLists(r.stored, r.now) : undefined;
    out.push(`| ${r.label} | ${cell(r.now)} | ${cell(r.stored)} | ${cmp?.regressions.length ?? '–'} | ${cmp?.improvements.length ?? '–'} | ${r.note ?? ''} |`);
  }
  return out.join('\n');
}

export interface RunOptions {
  /** One URL, or two for the multipath tests (the same LUN through two sessions). */
  readonly urls: readonly string[];
  readonly tests?: string;
  readonly initiators?: readonly [string, string];
  /** Kill the run after this long (default 10 minutes). */
  readonly timeoutMs?: number;
  readonly cwd?: string;
}

export interface RunResult {
  verdicts: VerdictList;
  /** The whole -v output. */
  output: string;
  exitCode: number | null;
  wallSeconds: number;
  command: string;
}

export function conformanceArgs(o: RunOptions): string[] {
  const [i1, i2] = o.initiators ?? [INITIATOR_1, INITIATOR_2];
  return ['-d', '-S', '-v', `--test=${o.tests ?? 'ALL'}`, ...o.urls, '-i', i1, '-I', i2];
}

/** Runs iscsi-test-cu and parses its verdicts (a non-zero exit is normal: any failure makes one). */
export function runConformance(o: RunOptions): Promise<RunResult> {
  const args = conformanceArgs(o);
  const started = process.hrtime.bigint();
  return new Promise((resolvePromise, reject) => {
    // -x would write CUnit's XML into the cwd; -v writes nothing, but keep any stray files out of the tree.
    const child = spawn('iscsi-test-cu', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: o.cwd ?? '/tmp' });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 600_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const output = Buffer.concat(chunks).toString('utf8');
      resolvePromise({
        verdicts: parseVerdicts(output),
        output,
        exitCode: code,
        wallSeconds: Number(process.hrtime.bigint() - started) / 1e9,
        command: `iscsi-test-cu ${args.join(' ')}`,
      });
    });
  });
}

export const TARGET_KINDS = { tgt: startTgt as StartTarget, blkback: startBlkbackTarget } as const;
export type TargetKind = keyof typeof TARGET_KINDS;

/** Where the repository's sources are (this file runs from dist/test/iscsi/). */
export const REPO_ROOT = ((): string => {
  const fromDist = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
  return existsSync(join(fromDist, 'test', 'fixtures')) ? fromDist : process.cwd();
})();

export function fixturePath(kind: TargetKind, mode: LunMode): string {
  return join(REPO_ROOT, 'test', 'fixtures', 'iscsi', 'conformance', `${kind}-${mode}.txt`);
}

/** The command that regenerates a stored list. */
export function regenerateCommand(kind: TargetKind, mode: LunMode): string {
  return `npx tsc -p . && node dist/test/iscsi/conformance.js --target ${kind} --lun ${mode} --fixture`;
}

export interface TargetRun extends RunResult {
  target: { kind: string; url: string; pid: number; output: string };
}

/** Starts a target on a fresh tmpfs file, runs the suite through two sessions, stops the target. */
export async function runAgainst(
  start: StartTarget,
  mode: LunMode,
  options: { lunBytes?: number; fill?: boolean; tests?: string; timeoutMs?: number } = {},
): Promise<TargetRun> {
  const file = `/dev/shm/blkback-conformance-${process.pid}-${mode}-${Math.random().toString(36).slice(2, 8)}.img`;
  createLunFile(file, options.lunBytes ?? DEFAULT_LUN_BYTES, { fill: options.fill ?? false });
  let target: RunningTarget | null = null;
  try {
    target = await start({ backingFile: file, mode });
    const r = await runConformance({
      urls: [target.url, target.url],
      ...(options.tests === undefined ? {} : { tests: options.tests }),
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    });
    return { ...r, target: { kind: target.kind, url: target.url, pid: target.pid, output: target.output() } };
  } finally {
    await target?.stop();
    rmSync(file, { force: true });
  }
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: 'string' },
      lun: { type: 'string', default: 'thick' },
      url: { type: 'string', multiple: true },
      parse: { type: 'string' },
      size: { type: 'string' },
      fill: { type: 'boolean', default: false },
      tests: { type: 'string' },
      out: { type: 'string' },
      fixture: { type: 'boolean', default: false },
      compare: { type: 'string' },
      raw: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(
      [
        'usage: node dist/test/iscsi/conformance.js (--target tgt|blkback [--lun thick|thin|readonly] [--size MiB] [--fill] | --url URL [--url URL2] | --parse FILE)',
        '                                           [--tests ALL|LIST] [--out FILE | --fixture] [--compare LIST] [--raw FILE]',
        '  --target   start that target (tgtd, or node dist/src/cli/main.js iscsi-target) on a /dev/shm file and run the suite through two sessions',
        '  --size     LUN size in MiB (default 256); --fill: write the file with zeros first (default: sparse)',
        '  --url      run against a target already running (given once, the URL is used twice)',
        '  --parse    parse a saved iscsi-test-cu -v output instead of running',
        '  --out      write the verdict list there (default: stdout); --fixture: test/fixtures/iscsi/conformance/TARGET-LUN.txt',
        '  --compare  compare with a stored list; exit 1 on a regression',
        '  --raw      also keep the -v output there',
        '',
      ].join('\n'),
    );
    return 0;
  }
  const mode = values.lun as LunMode;
  if (!(LUN_MODES as readonly string[]).includes(mode)) throw new Error(`--lun: '${values.lun}' is not one of ${LUN_MODES.join(', ')}`);
  let result: { verdicts: VerdictList; output: string; wallSeconds: number | null; command: string };
  if (values.parse !== undefined) {
    const output = readFileSync(values.parse, 'utf8');
    result = { verdicts: parseVerdicts(output), output, wallSeconds: null, command: `parse ${values.parse}` };
  } else {
    if (!onPath('iscsi-test-cu')) throw new Error('iscsi-test-cu not found (Debian package libiscsi-bin)');
    if (values.target !== undefined) {
      if (!(values.target in TARGET_KINDS)) throw new Error(`--target: '${values.target}' is not one of ${Object.keys(TARGET_KINDS).join(', ')}`);
      const lunBytes = values.size === undefined ? DEFAULT_LUN_BYTES : Number(values.size) * 2 ** 20;
      if (!(lunBytes > 0)) throw new Error(`--size: '${values.size}' is not a size in MiB`);
      result = await runAgainst(TARGET_KINDS[values.target as TargetKind], mode, {
        lunBytes,
        fill: values.fill,
        ...(values.tests === undefined ? {} : { tests: values.tests }),
      });
    } else if (values.url !== undefined && values.url.length > 0) {
      const urls = values.url.length === 1 ? [values.url[0]!, values.url[0]!] : values.url;
      result = await runConformance({ urls, ...(values.tests === undefined ? {} : { tests: values.tests }) });
    } else {
      throw new Error('give --target, --url or --parse (--help for usage)');
    }
  }
  if (values.raw !== undefined) writeFileSync(values.raw, result.output);
  const list = formatList(result.verdicts);
  let out = values.out;
  if (values.fixture) {
    if (values.target === undefined) throw new Error('--fixture needs --target');
    out = fixturePath(values.target as TargetKind, mode);
  }
  if (out !== undefined) writeFileSync(out, list);
  else process.stdout.write(list);
  const c = countVerdicts(result.verdicts);
  process.stderr.write(
    `${result.command}\n${c.pass} pass, ${c.fail} fail, ${c.skip} skip of ${c.total}${result.wallSeconds === null ? '' : ` in ${result.wallSeconds.toFixed(1)} s`}${out === undefined ? '' : `; list in ${out}`}\n`,
  );
  if (c.total !== ALL_TEST_COUNT && (values.tests ?? 'ALL') === 'ALL') process.stderr.write(`warning: ${c.total} verdicts, expected ${ALL_TEST_COUNT}\n`);
  if (values.compare !== undefined) {
    const cmp = compareLists(parseList(readFileSync(values.compare, 'utf8')), result.verdicts);
    process.stderr.write(`${formatComparison(cmp)}\n`);
    if (cmp.regressions.length > 0) return 1;
  }
  return 0;
}

runIfScript(import.meta.url, 'conformance', main);
