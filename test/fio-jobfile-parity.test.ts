// Parser parity with the real fio 3.33 on this machine: for every job file of the corpus, our
// accept/reject equals fio's (--parse-only, then a real ioengine=null run, since fio checks some
// things - rate vs rate_iops, size < bs, wait_for, no jobs - only when it sets jobs up), and for
// accepted files every job's `job options`, name, group and the number of threads match fio's JSON,
// and bs ranges per direction, rw and iodepth match fio's job header line.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { FioJob } from '../src/fio/job.ts';
import { expandClones, parseJobFiles, readIncludeFromFs } from '../src/fio/jobfile/index.ts';

const here = dirname(fileURLToPath(import.meta.url));
// tsc output lives in <out>/test; the fixtures stay in the source tree
const candidates = [join(here, 'fixtures/fio-corpus'), join(here, '../../test/fixtures/fio-corpus')];
const CORPUS = candidates.find((p) => { try { return readdirSync(p).length > 0; } catch { return false; } }) ?? candidates[0] ?? '';
const ENV = { FIOTEST_SIZE: '128k', FIOTEST_BS: '8' };
const fioVersion = spawnSync('fio', ['--version'], { encoding: 'utf8' });
const haveFio = fioVersion.status === 0;

interface FioRun { readonly viaShowcmd?: boolean; readonly ok: boolean; readonly json: { jobs: { jobname: string; groupid: number; 'job options': Record<string, string> }[]; 'global options'?: Record<string, string> } | null; readonly headers: string[] }

function runFio(file: string, cwd: string): FioRun {
  const env = { ...process.env, ...ENV };
  const p = spawnSync('fio', ['--parse-only', file], { cwd, env, encoding: 'utf8', timeout: 20_000 });
  if (p.status !== 0) return { ok: false, json: null, headers: [] };
  // A job that would do real I/O (the seed's iometer.fio: size=4g, libaio, direct, and a job named
  // /dev/xvda that fio lays out as /dev/xvda.N.0 files in RAM-backed devtmpfs) is not run: its
  // resolved options come from --showcmd instead, and the header check is left to null-engine files.
  if (realIo(file)) return showcmd(file, cwd, env);
  // one run, both formats: the job header lines come with normal output, then the JSON document
  // fio 3.33 itself sometimes hangs on a null-engine job with thinktime_spin (ok-ranges.fio): a run
  // killed by the timeout says nothing about parsing, so it is tried once more, then compared through
  // --showcmd (which cannot see the errors fio raises only when it runs: rate with rate_iops, ...).
  let j = spawnSync('fio', ['--output-format=normal,json', file], { cwd, env, encoding: 'utf8', timeout: 10_000 });
  if (j.status === null) j = spawnSync('fio', ['--output-format=normal,json', file], { cwd, env, encoding: 'utf8', timeout: 10_000 });
  if (j.status === null) return showcmd(file, cwd, env);
  if (j.status !== 0) return { ok: false, json: null, headers: [] };
  const start = j.stdout.indexOf('\n{');
  const headers = j.stdout.slice(0, start).split('\n').filter((l) => /: \(g=\d+\): rw=/.test(l));
  const end = j.stdout.indexOf('\n}\n', start);
  return { ok: true, json: JSON.parse(j.stdout.slice(start + 1, end + 2)), headers };
}

/** The file names an I/O engine other than null: running it would do real I/O. */
function realIo(file: string): boolean {
  return /^\s*ioengine\s*=\s*(?!null\s*$)\S/m.test(readFileSync(file, 'utf8'));
}

/** fio --showcmd prints `fio [global opts] --name=JOB opts... --name=JOB2 ...`: one report per clone. */
function showcmd(file: string, cwd: string, env: NodeJS.ProcessEnv): FioRun {
  const r = spawnSync('fio', ['--showcmd', file], { cwd, env, encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) return { ok: false, json: null, headers: [] };
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
  if (jobs.length === 0) return { viaShowcmd: true, ok: false, json: null, headers: [] };
  return { viaShowcmd: true, ok: true, json: { jobs, 'global options': global }, headers: [] };
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
    if ((j.stonewall || j.newGroup) && prev > 0) { prev = 0; gid++; }
    prev++;
    return gid;
  });
}

test('corpus: accept/reject and resolved options match fio 3.33', (t) => {
  if (!haveFio) { t.skip('fio is not installed (apt-get install fio)'); return; }
  if (!fioVersion.stdout.startsWith('fio-3.33')) t.diagnostic(`reference is fio-3.33, found ${fioVersion.stdout.trim()}`);
  const files = readdirSync(CORPUS).filter((f) => f.endsWith('.fio')).sort();
  assert.ok(files.length >= 17, `corpus has ${files.length} files`);
  const cwd = mkdtempSync(join(tmpdir(), 'fio-parity-'));
  try {
    let compared = 0;
    for (const name of files) {
      const file = join(CORPUS, name);
      const fio = runFio(file, cwd);
      const mine = ours(file, cwd);
      assert.equal(!(mine instanceof Error), fio.ok, `${name}: fio ${fio.ok ? 'accepts' : 'rejects'}, we ${mine instanceof Error ? `reject (${mine.message})` : 'accept'}`);
      if (mine instanceof Error || fio.json === null) continue;
      const fj = fio.json.jobs;
      const gids = groupsOf(mine);
      // with group_reporting fio reports a group once, under its first job
      const reported = mine.map((j, i) => ({ j, gid: gids[i] ?? 0 }))
        .filter((x, i, all) => !x.j.groupReporting || all.findIndex((y) => y.gid === x.gid) === i);
      assert.equal(reported.length, fj.length, `${name}: number of reports (threads: ${mine.length})`);
      reported.forEach(({ j, gid }, i) => {
        const f = fj[i];
        assert.ok(f);
        assert.equal(j.name, f.jobname, `${name}: job ${i} name`);
        // a group's report carries its name from the first job and the options of the last (measured)
        const last = j.groupReporting ? [...mine].reverse().find((_, k) => gids[mine.length - 1 - k] === gid) ?? j : j;
        assert.deepEqual(last.options, f['job options'], `${name}: job ${j.name} options`);
        assert.equal(gid, f.groupid, `${name}: job ${j.name} group`);
      });
      // header: "NAME: (g=0): rw=randrw, bs=(R) 8192B-8192B, (W) 32.0KiB-32.0KiB, (T) 4096B-4096B, ioengine=null, iodepth=1"
      const firsts = mine.filter((j) => j.cloneIndex === 0);
      if (fio.viaShowcmd === true) continue; // no header lines without a run
      assert.equal(fio.headers.length, firsts.length, `${name}: header lines`);
      firsts.forEach((j, i) => {
        const h = fio.headers[i] ?? '';
        const m = /rw=(\w+), bs=\(R\) (\S+)-(\S+), \(W\) (\S+)-(\S+), \(T\) (\S+)-(\S+), ioengine=\S+, iodepth=(\d+)/.exec(h);
        assert.ok(m, `${name}: header ${h}`);
        assert.equal(j.rw, m[1], `${name}: ${j.name} rw`);
        const got = [j.bsMin[0], j.bsMax[0], j.bsMin[1], j.bsMax[1], j.bsMin[2], j.bsMax[2]];
        assert.deepEqual(got, m.slice(2, 8).map((s) => headerBytes(s ?? '')), `${name}: ${j.name} bs ranges`);
        assert.equal(j.iodepth, Number(m[8]), `${name}: ${j.name} iodepth`);
      });
      if (fio.json['global options'] !== undefined && fj.length > 0) {
        compared++;
      }
    }
    assert.ok(compared >= 15, `compared ${compared} accepted files with fio`);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});

test('seed randw.fio: fio 3.33 rejects rw=randw; we match with strict and read it as randwrite otherwise', (t) => {
  if (!haveFio) { t.skip('fio is not installed (apt-get install fio)'); return; }
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
