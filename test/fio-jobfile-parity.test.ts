// Parser parity with the real fio 3.33 on this machine: for every job file of the corpus, our
// accept/reject equals fio's (--parse-only, then a real ioengine=null run, since fio checks some
// things - rate vs rate_iops, size < bs, wait_for, no jobs - only when it sets jobs up), and for
// accepted files every job's `job options`, name, group and the number of threads match fio's JSON,
// and bs ranges per direction, rw and iodepth match fio's job header line.
//
// A file naming a real engine (the seed's iometer.fio: libaio, direct=1, size=4g, a job named
// /dev/xvda that fio would lay out as files in devtmpfs) is compared as a copy with ioengine=null,
// ours and fio's both reading the copy; only a run that times out twice falls back to --showcmd.
// Which way each file was compared is counted and printed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { FioJob } from '../src/fio/job.ts';
import { expandClones, parseJobFiles, readIncludeFromFs } from '../src/fio/jobfile/index.ts';
import { fioMissing, stopIfMissing } from './helpers-tools.ts';

const here = dirname(fileURLToPath(import.meta.url));
// tsc output lives in <out>/test; the fixtures stay in the source tree
const candidates = [join(here, 'fixtures/fio-corpus'), join(here, '../../test/fixtures/fio-corpus')];
const CORPUS =
  candidates.find((p) => {
    try {
      return readdirSync(p).length > 0;
    } catch {
      return false;
    }
  }) ??
  candidates[0] ??
  '';
const ENV = { FIOTEST_SIZE: '128k', FIOTEST_BS: '8' };
// The corpus was checked against fio 3.33: another version skips (fails under CI=true).
const fioGate = fioMissing();
/**
 * A null-engine copy of a real job (iometer.fio: 2 x 4 GiB with per-I/O lat logs) would run 5 s and
 * write 160 MB of logs; a cap on I/Os, given on the command line, lands in fio's global options and
 * leaves every job's options (what is compared) as the file says.
 */
const COPY_IO_CAP = '--number_ios=64';

/** How fio's side of a file was obtained: rejected by --parse-only, run (as is or as a null-engine copy), or --showcmd. */
type Via = 'parse-only' | 'run' | 'null-copy' | 'showcmd';

interface FioRun {
  readonly via: Via;
  readonly why?: string;
  readonly ok: boolean;
  readonly json: { jobs: { jobname: string; groupid: number; 'job options': Record<string, string> }[]; 'global options'?: Record<string, string> } | null;
  readonly headers: string[];
}

/** fio's view of `file`; `original` is the corpus file when `file` is its null-engine copy. */
function runFio(file: string, cwd: string, original?: string): FioRun {
  const env = { ...process.env, ...ENV };
  const via: Via = original === undefined ? 'run' : 'null-copy';
  const p = spawnSync('fio', ['--parse-only', original ?? file], { cwd, env, encoding: 'utf8', timeout: 20_000 });
  if (p.status !== 0) return { via: 'parse-only', ok: false, json: null, headers: [] };
  // one run, both formats: the job header lines come with normal output, then the JSON document.
  // fio 3.33 itself sometimes hangs on a null-engine job with thinktime_spin (ok-ranges.fio): a run
  // killed by the timeout says nothing about parsing, so it is tried once more, then compared through
  // --showcmd (which cannot see the errors fio raises only when it runs: rate with rate_iops, ...).
  const args = [...(original === undefined ? [] : [COPY_IO_CAP]), '--output-format=normal,json', file];
  let j = spawnSync('fio', args, { cwd, env, encoding: 'utf8', timeout: 10_000 });
  if (j.status === null) j = spawnSync('fio', args, { cwd, env, encoding: 'utf8', timeout: 10_000 });
  if (j.status === null) return showcmd(file, cwd, env, 'fio ran past 10 s twice (fio 3.33 hangs now and then on thinktime_spin with ioengine=null)');
  if (j.status !== 0) return { via, ok: false, json: null, headers: [] };
  const start = j.stdout.indexOf('\n{');
  const headers = j.stdout
    .slice(0, start)
    .split('\n')
    .filter((l) => /: \(g=\d+\): rw=/.test(l));
  const end = j.stdout.indexOf('\n}\n', start);
  return { via, ok: true, json: JSON.parse(j.stdout.slice(start + 1, end + 2)), headers };
}

const IOENGINE_LINE = /^(\s*ioengine\s*=\s*)(\S.*)$/gm;

/** The file names an I/O engine other than null: running it would do real I/O. */
function realIo(text: string): boolean {
  return [...text.matchAll(IOENGINE_LINE)].some((m) => m[2]!.trim() !== 'null');
}

/**
 * `file` rewritten into `dir` with every ioengine= set to null and relative include paths made
 * absolute (the copy lives elsewhere); every other byte, and so every line number, is kept.
 */
function nullEngineCopy(file: string, dir: string): string {
  const text = readFileSync(file, 'utf8')
    .replace(IOENGINE_LINE, '$1null')
    .replace(/^(\s*include\s+)(\S.*)$/gm, (line, head: string, path: string) => (isAbsolute(path) ? line : `${head}${resolve(dirname(file), path)}`));
  const copy = join(dir, basename(file));
  writeFileSync(copy, text);
  return copy;
}

/** fio --showcmd prints `fio [global opts] --name=JOB opts... --name=JOB2 ...`: one report per clone. */
function showcmd(file: string, cwd: string, env: NodeJS.ProcessEnv, why: string): FioRun {
  const r = spawnSync('fio', ['--showcmd', file], { cwd, env, encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) return { via: 'showcmd', why, ok: false, json: null, headers: [] };
  const jobs: { jobname: string; groupid: number; 'job options': Record<string, string> }[] = [];
  const global: Record<string, string> = {};
  let current: { name: string; options: Record<string, string> } | null = null;
  const flush = (): void => {
    if (current === null) return;
    const clones = Number(current.options.numjobs ?? global.numjobs ?? '1');
    for (let i = 0; i < clones; i++) jobs.push({ jobname: current.name, groupid: 0, 'job options': { ...current.options } });
  };
  for (const m of r.stdout.matchAll(/--([\w-]+)=("([^"]*)"|\S+)/g)) {
    const key = m[1]!;
    const value = m[3] ?? m[2]!;
    if (key === 'name') {
      flush();
      current = { name: value, options: {} };
    } else (current === null ? global : current.options)[key] = value;
  }
  flush();
  // fio refuses to run a file with no job ("No job(s) defined"), though --parse-only accepts it.
  if (jobs.length === 0) return { via: 'showcmd', why, ok: false, json: null, headers: [] };
  return { via: 'showcmd', why, ok: true, json: { jobs, 'global options': global }, headers: [] };
}

function ours(file: string, cwd: string): FioJob[] | Error {
  try {
    const parsed = parseJobFiles([{ path: file, text: readFileSync(file, 'utf8') }], {
      strict: true,
      env: ENV,
      readInclude: (p) => readIncludeFromFs(resolve(cwd, p)),
    });
    return expandClones(parsed);
  } catch (e) {
    return e as Error;
  }
}

/** num2str as fio prints sizes in the header: 8192B, 32.0KiB, 1024KiB, ... */
function headerBytes(s: string): number {
  const m = /^([\d.]+)(B|KiB|MiB|GiB|kB|MB|GB)$/.exec(s);
  assert.ok(m, `header size ${s}`);
  const mult: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, kB: 1000, MB: 1e6, GB: 1e9 };
  return Math.round(Number(m[1]) * (mult[m[2] ?? 'B'] ?? 1));
}

function groupsOf(jobs: readonly FioJob[]): number[] {
  let gid = 0;
  let prev = 0;
  return jobs.map((j) => {
    if ((j.stonewall || j.newGroup) && prev > 0) {
      prev = 0;
      gid++;
    }
    prev++;
    return gid;
  });
}

/** Our jobs for a corpus file and for its null-engine copy agree but for the engine: the copy tests the file. */
function assertCopyFaithful(name: string, original: FioJob[] | Error, copy: FioJob[] | Error): void {
  assert.equal(
    copy instanceof Error,
    original instanceof Error,
    `${name}: we ${original instanceof Error ? 'reject' : 'accept'} the file but not its null-engine copy`,
  );
  if (original instanceof Error || copy instanceof Error) return;
  assert.deepEqual(
    copy.map((j) => j.name),
    original.map((j) => j.name),
    `${name}: copy's jobs`,
  );
  original.forEach((j, i) => {
    const want = 'ioengine' in j.options ? { ...j.options, ioengine: 'null' } : j.options;
    assert.deepEqual(copy[i]!.options, want, `${name}: job ${j.name}: the copy differs only in ioengine`);
  });
}

test('corpus: accept/reject and resolved options match fio 3.33', (t) => {
  if (stopIfMissing(t, fioGate)) return;
  const files = readdirSync(CORPUS)
    .filter((f) => f.endsWith('.fio'))
    .sort();
  assert.ok(files.length >= 17, `corpus has ${files.length} files`);
  const cwd = mkdtempSync(join(tmpdir(), 'fio-parity-'));
  const copies = join(cwd, 'null-engine-copies');
  mkdirSync(copies);
  const byWay: Record<Via, string[]> = { 'parse-only': [], run: [], 'null-copy': [], showcmd: [] };
  const fallbackWhy = new Set<string>();
  try {
    let compared = 0;
    for (const name of files) {
      const original = join(CORPUS, name);
      const real = realIo(readFileSync(original, 'utf8'));
      const file = real ? nullEngineCopy(original, copies) : original;
      const fio = runFio(file, cwd, real ? original : undefined);
      byWay[fio.via].push(name);
      if (fio.why !== undefined) fallbackWhy.add(fio.why);
      const mine = ours(file, cwd);
      if (real) assertCopyFaithful(name, ours(original, cwd), mine);
      assert.equal(
        !(mine instanceof Error),
        fio.ok,
        `${name}: fio ${fio.ok ? 'accepts' : 'rejects'}, we ${mine instanceof Error ? `reject (${mine.message})` : 'accept'}`,
      );
      if (mine instanceof Error || fio.json === null) continue;
      const fj = fio.json.jobs;
      const gids = groupsOf(mine);
      // with group_reporting fio reports a group once, under its first job
      const reported = mine.map((j, i) => ({ j, gid: gids[i] ?? 0 })).filter((x, i, all) => !x.j.groupReporting || all.findIndex((y) => y.gid === x.gid) === i);
      assert.equal(reported.length, fj.length, `${name}: number of reports (threads: ${mine.length})`);
      reported.forEach(({ j, gid }, i) => {
        const f = fj[i];
        assert.ok(f);
        assert.equal(j.name, f.jobname, `${name}: job ${i} name`);
        // a group's report carries its name from the first job and the options of the last (measured)
        const last = j.groupReporting ? ([...mine].reverse().find((_, k) => gids[mine.length - 1 - k] === gid) ?? j) : j;
        assert.deepEqual(last.options, f['job options'], `${name}: job ${j.name} options`);
        assert.equal(gid, f.groupid, `${name}: job ${j.name} group`);
      });
      // header: "NAME: (g=0): rw=randrw, bs=(R) 8192B-8192B, (W) 32.0KiB-32.0KiB, (T) 4096B-4096B, ioengine=null, iodepth=1"
      const firsts = mine.filter((j) => j.cloneIndex === 0);
      if (fio.via === 'showcmd') continue; // no header lines without a run
      assert.equal(fio.headers.length, firsts.length, `${name}: header lines`);
      firsts.forEach((j, i) => {
        const h = fio.headers[i] ?? '';
        const m = /rw=(\w+), bs=\(R\) (\S+)-(\S+), \(W\) (\S+)-(\S+), \(T\) (\S+)-(\S+), ioengine=\S+, iodepth=(\d+)/.exec(h);
        assert.ok(m, `${name}: header ${h}`);
        assert.equal(j.rw, m[1], `${name}: ${j.name} rw`);
        const got = [j.bsMin[0], j.bsMax[0], j.bsMin[1], j.bsMax[1], j.bsMin[2], j.bsMax[2]];
        assert.deepEqual(
          got,
          m.slice(2, 8).map((s) => headerBytes(s ?? '')),
          `${name}: ${j.name} bs ranges`,
        );
        assert.equal(j.iodepth, Number(m[8]), `${name}: ${j.name} iodepth`);
      });
      if (fio.json['global options'] !== undefined && fj.length > 0) {
        compared++;
      }
    }
    const list = (names: string[]): string => (names.length === 0 ? '' : ` (${names.join(', ')})`);
    t.diagnostic(
      `${byWay.run.length + byWay['null-copy'].length} files compared by running fio with ioengine=null, ` +
        `${byWay['null-copy'].length} of them as null-engine copies of a real-engine file${list(byWay['null-copy'])}; ` +
        `${byWay['parse-only'].length} rejected by fio --parse-only (not run); ` +
        `${byWay.showcmd.length} by --showcmd${list(byWay.showcmd)}${fallbackWhy.size === 0 ? '' : `: ${[...fallbackWhy].join('; ')}`}`,
    );
    assert.equal(
      Object.values(byWay).reduce((n, names) => n + names.length, 0),
      files.length,
    );
    assert.ok(compared >= 15, `compared ${compared} accepted files with fio`);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});

test('seed randw.fio: fio 3.33 rejects rw=randw; we match with strict and read it as randwrite otherwise', (t) => {
  if (stopIfMissing(t, fioGate)) return;
  const file = join(CORPUS, 'randw.fio');
  const p = spawnSync('fio', ['--parse-only', file], { encoding: 'utf8' });
  assert.equal(p.status, 1);
  assert.match(p.stderr + p.stdout, /failed parsing rw=randw/);
  const text = readFileSync(file, 'utf8');
  assert.throws(() => parseJobFiles([{ path: file, text }], { strict: true }), /randw\.fio:8: failed parsing 'rw=randw'/);
  const legacy = expandClones(parseJobFiles([{ path: file, text }], {}));
  assert.equal(legacy.length, 4);
  assert.ok(legacy.every((j) => j.rw === 'randwrite' && j.iodepth === 256 && j.bs[1] === 65536 && j.filename[0] === '/dev/xvda'));
});
