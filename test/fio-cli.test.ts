// `blkback fio` end to end, as a user meets it: the compiled entry point run as a child process in a
// temp directory, on the seed's job files and small fixtures, in a simulated guest and bare.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dropLoop, makeLoop } from './helpers-guest.ts';
import { loopMissing, stopIfMissing } from './helpers-tools.ts';

// Compiled layout: <out>/test/fio-cli.test.js -> <out>/src/cli/main.js. Job files are not compiled: they
// stay in the source tree, two levels up from dist/test (or the cwd when built to another --outDir).
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = [join(HERE, '../..'), process.cwd()].find((dir) => existsSync(join(dir, 'jobs/randw.fio')) && existsSync(join(dir, 'test/fixtures/fio-cli')));
if (ROOT === undefined) throw new Error(`fio-cli.test: cannot find jobs/randw.fio and test/fixtures/fio-cli from ${HERE} or ${process.cwd()}`);
const RANDW = join(ROOT, 'jobs/randw.fio');
const IOMETER = join(ROOT, 'jobs/iometer.fio');
const GUEST_PHY = join(ROOT, 'examples/guest-phy.cfg');
const FIXTURE = (name: string): string => join(ROOT, 'test/fixtures/fio-cli', name);
const SEED_DESCRIPTION = 'Emulation of Intel IOmeter File Server Access Pattern';
const SHORT = ['--set', 'runtime=1', '--set', 'time_based=1'];

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

function blkbackFio(args: readonly string[], cwd: string, timeoutMs = 30_000): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'fio', ...args], { cwd, timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-fio-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The `line:N` where `text` (an option line) sits in a job file, 1-based. */
function lineOf(file: string, text: string): number {
  const i = readFileSync(file, 'utf8')
    .split('\n')
    .findIndex((l) => l.trim() === text);
  assert.ok(i >= 0, `${file} has a line '${text}'`);
  return i + 1;
}

/** One fio log row: time (ms), value, ddir, bs, [offset,] prio — fio 3.33's layout. */
interface LogRow {
  time: number;
  value: number;
  ddir: number;
  bs: number;
  offset: number | null;
  prio: number;
}

function readLog(path: string, withOffset = false): LogRow[] {
  const text = readFileSync(path, 'utf8');
  assert.ok(text.endsWith('\n'), `${path}: ends with a newline`);
  const shape = withOffset ? /^(\d+), (\d+), ([012]), (\d+), (\d+), (\d+)$/ : /^(\d+), (\d+), ([012]), (\d+), (\d+)$/;
  return text
    .slice(0, -1)
    .split('\n')
    .map((line, i) => {
      const m = shape.exec(line);
      assert.ok(m !== null, `${path}:${i + 1}: '${line}' is not a fio 3.33 log row`);
      const n = m.slice(1).map(Number);
      return withOffset
        ? { time: n[0]!, value: n[1]!, ddir: n[2]!, bs: n[3]!, offset: n[4]!, prio: n[5]! }
        : { time: n[0]!, value: n[1]!, ddir: n[2]!, bs: n[3]!, offset: null, prio: n[4]! };
    });
}

/** Per job report in fio's normal output: the write I/O count from its "issued rwts" line. */
function issuedWrites(stdout: string): number[] {
  return [...stdout.matchAll(/^\s+issued rwts: total=(\d+),(\d+),(\d+),(\d+) /gm)].map((m) => Number(m[2]));
}

function close(actual: number, expected: number, rel: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= rel * Math.max(Math.abs(expected), 1), `${what}: ${actual} is not within ${rel * 100}% of ${expected}`);
}

test('seed randw.fio in a guest: fio-shaped report, legacy rw=randw note, 4 jobs x bw/lat/clat/slat logs named as fio 3.33', async (t) => {
  const cwd = tempDir(t);
  const r = await blkbackFio(['--set', 'size=64m', ...SHORT, RANDW], cwd);
  assert.equal(r.code, 0, r.stderr);

  // The one documented difference from fio 3.33, said once, naming where.
  const notes = r.stderr.split('\n').filter((l) => /rw=randw\b/.test(l));
  assert.equal(notes.length, 1, `one note about rw=randw:\n${r.stderr}`);
  assert.ok(notes[0]!.includes(`${RANDW}:${lineOf(RANDW, 'rw=randw')}`), `the note names file:line: ${notes[0]}`);
  assert.match(notes[0]!, /randwrite/);
  assert.match(notes[0]!, /--strict/);
  assert.doesNotMatch(r.stderr, /internal error|Error:/);

  // fio's structure: the job line (clones as "..."), version, "Starting N processes", one report per clone, group line.
  const out = r.stdout;
  assert.match(
    out,
    /^\/dev\/xvda: \(g=0\): rw=randwrite, bs=\(R\) 64\.0KiB-64\.0KiB, \(W\) 64\.0KiB-64\.0KiB, \(T\) 64\.0KiB-64\.0KiB, ioengine=libaio, iodepth=256\n\.\.\.\nfio-3\.33\nStarting 4 processes\n/,
  );
  const reports = [...out.matchAll(/^\/dev\/xvda: \(groupid=0, jobs=1\): err= 0: pid=\d+: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/gm)];
  assert.equal(reports.length, 4, out);
  assert.equal([...out.matchAll(/^ {2}Description {2}: \[Emulation of Intel IOmeter File Server Access Pattern\]$/gm)].length, 4);
  assert.equal(
    [...out.matchAll(/^ {2}write: IOPS=[\d.]+k?, BW=[\d.]+[KMG]iB\/s \([\d.]+[kMG]B\/s\)\([\d.]+[KMG]iB\/\d+msec\); 0 zone resets$/gm)].length,
    4,
    out,
  );
  assert.doesNotMatch(out, /^ {2}read: IOPS/m, 'randwrite reads nothing');
  assert.equal([...out.matchAll(/^ {4}clat percentiles \((?:n|u|m)sec\):$/gm)].length, 4);
  assert.match(
    out,
    /\nRun status group 0 \(all jobs\):\n {2}WRITE: bw=[\d.]+[KMG]iB\/s \([\d.]+[kMG]B\/s\), [\d.]+[KMG]iB\/s-[\d.]+[KMG]iB\/s \([\d.]+[kMG]B\/s-[\d.]+[kMG]B\/s\), io=[\d.]+[KMG]iB \([\d.]+[kMG]B\), run=\d+-\d+msec\n$/,
  );
  assert.doesNotMatch(out, /^ {3}READ:/m);
  const issued = issuedWrites(out);
  assert.equal(issued.length, 4);
  for (const n of issued) assert.ok(n > 0, 'every clone wrote');

  // Logs: write_bw_log=randw and write_lat_log=randw, numbered by fio's thread number 1..4; no iops log.
  const expected = ['bw', 'clat', 'lat', 'slat'].flatMap((kind) => [1, 2, 3, 4].map((n) => `randw_${kind}.${n}.log`)).sort();
  assert.deepEqual(readdirSync(cwd).sort(), expected);
  for (let n = 1; n <= 4; n++) {
    for (const kind of ['bw', 'clat', 'lat', 'slat']) {
      const rows = readLog(join(cwd, `randw_${kind}.${n}.log`));
      // No log_avg_msec: one row per completed I/O, so as many rows as the job's report says it issued.
      assert.equal(rows.length, issued[n - 1], `randw_${kind}.${n}.log: one row per I/O`);
      let last = 0;
      for (const row of rows) {
        assert.equal(row.ddir, 1, 'write rows');
        assert.equal(row.bs, 65536, 'bs=64k');
        assert.ok(row.time >= last, `randw_${kind}.${n}.log: times do not go back`);
        last = row.time;
        if (kind !== 'slat' && kind !== 'bw') assert.ok(row.value > 0, `${kind}: a completion takes time`);
      }
      assert.ok(last < 15_000, `randw_${kind}.${n}.log: a 1 s job logs within seconds (${last} ms)`);
    }
    // A lat sample covers its clat sample: both logs hold the same I/Os, so the sums compare.
    const lat = readLog(join(cwd, `randw_lat.${n}.log`)).reduce((a, r) => a + r.value, 0);
    const clat = readLog(join(cwd, `randw_clat.${n}.log`)).reduce((a, r) => a + r.value, 0);
    assert.ok(lat >= clat, `job ${n}: total lat ${lat} >= total clat ${clat}`);
  }
});

test('--strict refuses the seed randw.fio, naming rw=randw and file:line; runs nothing', async (t) => {
  const cwd = tempDir(t);
  const r = await blkbackFio(['--strict', '--set', 'size=64m', ...SHORT, RANDW], cwd);
  assert.notEqual(r.code, 0);
  assert.ok(r.stderr.includes(`${RANDW}:${lineOf(RANDW, 'rw=randw')}`), r.stderr);
  assert.match(r.stderr, /rw=randw/);
  assert.doesNotMatch(r.stderr, /internal error/);
  assert.equal(r.stdout, '');
  assert.deepEqual(readdirSync(cwd), [], 'no log files');
});

test('--output-format json on the seed iometer.fio: fio schema, numbers consistent, --set beats the job section', async (t) => {
  const cwd = tempDir(t);
  // log_offset=1 puts each I/O's offset in the logs: they show the size that was used.
  const r = await blkbackFio(['--output-format', 'json', '--set', 'size=16m', '--set', 'log_offset=1', ...SHORT, IOMETER], cwd);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(doc['fio version'], 'fio-3.33');
  assert.equal(typeof doc.timestamp, 'number');
  const globals = doc['global options'] as Record<string, string>;
  assert.equal(globals.numjobs, '2');
  assert.equal(globals.description, SEED_DESCRIPTION);
  const jobs = doc.jobs as Record<string, unknown>[];
  assert.equal(jobs.length, 2, 'numjobs=2');
  const pctKeys = ['1.000000', '50.000000', '99.000000', '99.990000'];
  for (const job of jobs) {
    assert.equal(job.jobname, '/dev/xvda');
    assert.equal(job.groupid, 0);
    assert.equal(job.error, 0);
    const opts = job['job options'] as Record<string, string>;
    assert.equal(opts.rw, 'randrw');
    assert.equal(opts.bssplit, '512/10:1k/5:2k/5:4k/60:8k/2:16k/4:32k/4:64k/10');
    assert.equal(opts.size, '16m', '--set size overrides the section own size=4g');
    let ios = 0;
    let readIos = 0;
    for (const dir of ['read', 'write'] as const) {
      const d = job[dir] as Record<string, unknown>;
      for (const key of [
        'io_bytes',
        'io_kbytes',
        'bw_bytes',
        'bw',
        'iops',
        'runtime',
        'total_ios',
        'slat_ns',
        'clat_ns',
        'lat_ns',
        'bw_min',
        'bw_max',
        'bw_mean',
        'iops_mean',
      ]) {
        assert.ok(key in d, `${dir}.${key} present`);
      }
      const ioBytes = d.io_bytes as number;
      const runtime = d.runtime as number;
      const totalIos = d.total_ios as number;
      assert.ok(ioBytes > 0 && runtime > 0 && totalIos > 0, `${dir}: moved data (${ioBytes} B in ${runtime} ms)`);
      assert.equal(d.io_kbytes, Math.floor(ioBytes / 1024));
      close(d.bw_bytes as number, (ioBytes * 1000) / runtime, 0.01, `${dir}.bw_bytes vs io_bytes/runtime`);
      close(d.bw as number, (ioBytes * 1000) / runtime / 1024, 0.01, `${dir}.bw (KiB/s) vs io_bytes/runtime`);
      close(d.iops as number, (totalIos * 1000) / runtime, 0.01, `${dir}.iops vs total_ios/runtime`);
      const avgBs = ioBytes / totalIos;
      assert.ok(avgBs >= 512 && avgBs <= 65536, `${dir}: average I/O ${avgBs} B within the bssplit's sizes`);
      const clat = d.clat_ns as { min: number; max: number; mean: number; N: number; percentile: Record<string, number> };
      const lat = d.lat_ns as { mean: number; N: number };
      assert.equal(clat.N, totalIos);
      assert.equal(lat.N, totalIos);
      assert.ok(clat.min <= clat.mean && clat.mean <= clat.max);
      assert.ok(lat.mean >= clat.mean, `${dir}: lat includes clat`);
      let prev = 0;
      for (const k of pctKeys) {
        const v = clat.percentile[k];
        assert.equal(typeof v, 'number', `${dir}.clat_ns.percentile has ${k}`);
        assert.ok(v! >= prev, `${dir}: percentiles ascend`);
        prev = v!;
      }
      // Percentiles are histogram bucket values: within fio's bucket error (under 2% here) of the range.
      assert.ok(clat.percentile['1.000000']! >= clat.min * 0.97 && clat.percentile['99.990000']! <= clat.max * 1.03, `${dir}: percentiles within [min, max]`);
      ios += totalIos;
      if (dir === 'read') readIos = totalIos;
    }
    const mix = readIos / ios;
    assert.ok(mix > 0.7 && mix < 0.9, `rwmixread=80: ${(mix * 100).toFixed(1)}% of I/Os are reads`);
  }
  // Logs of both clones, named as fio 3.33 names them; with log_offset every I/O lies inside the 16 MiB.
  for (const n of [1, 2]) {
    for (const kind of ['bw', 'lat', 'clat', 'slat']) {
      const rows = readLog(join(cwd, `iometer_${kind}.${n}.log`), true);
      assert.ok(rows.length > 0, `iometer_${kind}.${n}.log has rows`);
      const dirs = new Set(rows.map((row) => row.ddir));
      assert.deepEqual([...dirs].sort(), [0, 1], `iometer_${kind}.${n}.log: reads and writes`);
      for (const row of rows) {
        // bssplit sizes, or less where the random map trims a block to the free run (sectors all the same).
        assert.ok(row.bs >= 512 && row.bs <= 65536 && row.bs % 512 === 0, `bs ${row.bs}`);
        assert.ok(row.offset! % 512 === 0 && row.offset! + row.bs <= 16 << 20, `I/O [${row.offset}, +${row.bs}) inside size=16m`);
      }
    }
  }
});

test('--output-format terse: one v3 line per job, 122 fields, numbers that agree', async (t) => {
  const cwd = tempDir(t);
  const r = await blkbackFio(['--output-format', 'terse', '--set', 'size=16m', RANDW], cwd);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 4, r.stdout);
  for (const line of lines) {
    const f = line.split(';');
    assert.equal(f.length, 122, 'terse v3: 121 fields and the description');
    assert.deepEqual(f.slice(0, 5), ['3', 'fio-3.33', '/dev/xvda', '0', '0']);
    assert.equal(f[5], '0', 'read: 0 KiB');
    // Write block at 46: io KiB, bw KiB/s, iops, runtime ms. Not time based: each clone writes its 16 MiB.
    const [kib, bw, iops, runtime] = [f[46], f[47], f[48], f[49]].map(Number) as [number, number, number, number];
    assert.equal(kib, 16 * 1024);
    assert.ok(runtime > 0);
    close(bw, (kib * 1000) / runtime, 0.02, 'terse write bw vs KiB/runtime');
    close(iops, (kib / 64) * (1000 / runtime), 0.02, 'terse write iops vs I/Os/runtime');
    assert.match(f[58]!, /^1\.000000%=\d+$/, 'write clat percentiles as P%=V');
    assert.equal(f[121], SEED_DESCRIPTION);
  }
  assert.equal(readdirSync(cwd).filter((n) => /^randw_(bw|lat|clat|slat)\.[1-4]\.log$/.test(n)).length, 16);
});

test('--bare runs the same seed jobs with no guest, same report and logs', async (t) => {
  const cwd = tempDir(t);
  const r = await blkbackFio(['--bare', '--set', 'size=64m', ...SHORT, RANDW], cwd);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /rw=randw/);
  assert.match(r.stdout, /^fio-3\.33\nStarting 4 processes$/m);
  assert.equal([...r.stdout.matchAll(/^\/dev\/xvda: \(groupid=0, jobs=1\): err= 0: /gm)].length, 4);
  assert.match(r.stdout, /Run status group 0 \(all jobs\):\n {2}WRITE: bw=/);
  const issued = issuedWrites(r.stdout);
  assert.equal(issued.length, 4);
  for (let n = 1; n <= 4; n++) assert.equal(readLog(join(cwd, `randw_lat.${n}.log`)).length, issued[n - 1]);
  assert.equal(readdirSync(cwd).length, 16);

  const both = await blkbackFio(['--bare', '--guest', GUEST_PHY, RANDW], cwd);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--bare and --guest/);
});

test("--disk 'phy:/dev/loopN,xvda,w': verify=crc32c randwrite runs clean in a guest and bare", async (t) => {
  if (stopIfMissing(t, loopMissing())) return;
  const cwd = tempDir(t);
  const image = join('/dev/shm', `blkback-fio-cli-${process.pid}.img`);
  writeFileSync(image, '');
  truncateSync(image, 32 << 20);
  let loop: string | null = null;
  try {
    loop = makeLoop(image);
    const job = FIXTURE('verify-crc32c.fio');
    for (const mode of [[], ['--bare']]) {
      const r = await blkbackFio([...mode, '--disk', `phy:${loop},xvda,w`, job], cwd);
      const what = mode.length === 0 ? 'guest' : 'bare';
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
      assert.match(r.stdout, /^verify-crc32c: \(groupid=0, jobs=1\): err= 0: /m, what);
      // The write phase wrote 8 MiB and the verify phase read all of it back.
      assert.match(r.stdout, /^ {2}WRITE: .*io=8192KiB /m, what);
      assert.match(r.stdout, /^ {3}READ: .*io=8192KiB /m, what);
      assert.doesNotMatch(r.stderr, /mismatch|bad|fail|error/i, `${what}: no verify complaint`);
    }
  } finally {
    if (loop !== null) dropLoop(loop);
    rmSync(image, { force: true });
  }
});

test('--guest examples/guest-phy.cfg --map /dev/sdb=ram:64M runs the seed iometer.fio (json to --output, logs to a new --log-dir)', async (t) => {
  const cwd = tempDir(t);
  const r = await blkbackFio(
    [
      '--guest',
      GUEST_PHY,
      '--map',
      '/dev/sdb=ram:64M',
      '--set',
      'size=16m',
      ...SHORT,
      '--output-format',
      'json',
      '--output',
      'result.json',
      '--log-dir',
      'logs/iometer',
      IOMETER,
    ],
    cwd,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '', 'the report went to --output');
  const ignored = r.stderr.split('\n').filter((l) => /ignor/i.test(l));
  assert.equal(ignored.length, 1, r.stderr);
  assert.ok(ignored[0]!.includes(GUEST_PHY));
  const doc = JSON.parse(readFileSync(join(cwd, 'result.json'), 'utf8')) as {
    jobs: { jobname: string; error: number; read: { io_bytes: number }; write: { io_bytes: number } }[];
  };
  assert.equal(doc.jobs.length, 2);
  for (const j of doc.jobs) {
    assert.equal(j.error, 0);
    assert.ok(j.read.io_bytes > 0 && j.write.io_bytes > 0);
  }
  assert.deepEqual(readdirSync(join(cwd, 'logs/iometer')).sort(), [
    'iometer_bw.1.log',
    'iometer_bw.2.log',
    'iometer_clat.1.log',
    'iometer_clat.2.log',
    'iometer_lat.1.log',
    'iometer_lat.2.log',
    'iometer_slat.1.log',
    'iometer_slat.2.log',
  ]);
  assert.deepEqual(readdirSync(cwd).sort(), ['logs', 'result.json'], 'no logs in the cwd');
});

test('errors name what is wrong: a disk the guest lacks, an unknown option, --set without =', async (t) => {
  const cwd = tempDir(t);
  const second = FIXTURE('second-disk.fio');
  const unknown = FIXTURE('unknown-option.fio');
  const [disk, option, set] = await Promise.all([blkbackFio([second], cwd), blkbackFio([unknown], cwd), blkbackFio(['--set', 'size', RANDW], cwd)]);

  assert.notEqual(disk.code, 0);
  assert.match(disk.stderr, /job 'on-xvdb'/);
  assert.match(disk.stderr, /\/dev\/xvdb is not a disk of guest/);
  assert.match(disk.stderr, /it has \/dev\/xvda/);
  assert.ok(disk.stderr.includes(second), `names the job file: ${disk.stderr}`);
  assert.doesNotMatch(disk.stderr, /internal error|\n\s+at /, 'no stack trace');
  assert.equal(disk.stdout, '');

  assert.equal(option.code, 2);
  assert.ok(option.stderr.includes(`${unknown}:${lineOf(unknown, 'bogus_option=7')}`), option.stderr);
  assert.match(option.stderr, /bogus_option/);
  assert.equal(option.stdout, '');

  assert.equal(set.code, 2);
  assert.match(set.stderr, /--set 'size'/);
  assert.match(set.stderr, /KEY=VALUE/);
  assert.equal(set.stdout, '');
  assert.deepEqual(readdirSync(cwd), [], 'nothing ran');
});

test("two job files: the second file's first job starts a new group (implicit stonewall), in a guest and bare", async (t) => {
  const cwd = tempDir(t);
  const files = [FIXTURE('group-first.fio'), FIXTURE('group-second.fio')];
  for (const mode of [[], ['--bare']]) {
    const r = await blkbackFio([...mode, '--output-format', 'json', ...files], cwd);
    assert.equal(r.code, 0, r.stderr);
    const jobs = (JSON.parse(r.stdout) as { jobs: { jobname: string; groupid: number; read: { io_bytes: number }; write: { io_bytes: number } }[] }).jobs;
    assert.deepEqual(
      jobs.map((j) => [j.jobname, j.groupid]),
      [
        ['first-a', 0],
        ['first-b', 0],
        ['second-a', 1],
        ['second-b', 1],
      ],
      mode.join(' '),
    );
    assert.deepEqual(
      jobs.map((j) => [j.read.io_bytes, j.write.io_bytes]),
      [
        [0, 2 << 20],
        [2 << 20, 0],
        [2 << 20, 0],
        [0, 2 << 20],
      ],
    );
  }
});

// fio 3.33 (backend.c thread_main) times a write+verify job's directions apart: the write runtime is
// the write phase, the read runtime the verify phase (real fio on this job: write run=93 ms, read run=13 ms).
test('write+verify: the verify reads are timed on their own, as fio does', async (t) => {
  const cwd = tempDir(t);
  const r = await blkbackFio(['--bare', '--output-format', 'json', FIXTURE('verify-crc32c.fio')], cwd);
  assert.equal(r.code, 0, r.stderr);
  const job = (JSON.parse(r.stdout) as { jobs: { read: { runtime: number; io_bytes: number }; write: { runtime: number; io_bytes: number } }[] }).jobs[0]!;
  assert.equal(job.read.io_bytes, 8 << 20);
  assert.equal(job.write.io_bytes, 8 << 20);
  assert.ok(job.read.runtime < job.write.runtime, `verify phase ${job.read.runtime} ms is timed apart from the write phase ${job.write.runtime} ms`);
});

test('bs = 8k (8 bytes to fio 3.33): a note at parse, then the failed I/O, the option, its value and line, and why; in every output format', async (t) => {
  const cwd = tempDir(t);
  const job = FIXTURE('blank-bs.fio');
  const line = lineOf(job, 'bs = 8k');
  const [normal, json] = await Promise.all([blkbackFio([job], cwd), blkbackFio(['--output-format', 'json', job], cwd)]);
  for (const r of [normal, json]) {
    assert.equal(r.code, 1, r.stderr);
    assert.ok(
      r.stderr.includes(
        `note: ${job}:${line}: 'bs = 8k': ' 8k' is 8 bytes, as fio 3.33 reads it (a blank before a number hides its unit); write bs=8k for 8192 bytes\n`,
      ),
      r.stderr,
    );
    // fio's own line for a failed I/O, then why.
    assert.match(r.stderr, /^fio: io_u error on file \/dev\/xvda: Invalid argument: read offset=\d+, buflen=8$/m);
    assert.ok(
      r.stderr.includes(
        `fio: blank-bs: /dev/xvda takes I/O in whole 512-byte blocks, and bs=8 ('bs = 8k' at ${job}:${line}: ' 8k' is 8 bytes, as fio 3.33 reads it (a blank before a number hides its unit)) is not a multiple of 512\n`,
      ),
      r.stderr,
    );
    assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
  }
  // The job is reported with its error, as fio reports a job whose first I/O failed.
  assert.match(normal.stdout, /^blank-bs: \(groupid=0, jobs=1\): err=22 \(blank-bs: read offset=\d+, buflen=8: .*\): pid=/m);
  assert.match(normal.stdout, /issued rwts: total=1,0,0,0/);
  const parsed = JSON.parse(json.stdout) as { jobs: { jobname: string; error: number; 'job options': Record<string, string> }[] };
  assert.equal(parsed.jobs[0]!.error, 22);
  assert.equal(parsed.jobs[0]!['job options'].bs, ' 8k', 'the value as written, as fio 3.33 dumps it');
});

test('--disk phy:/nonexistent: the cause, at once (no wait for a handshake that cannot happen)', async (t) => {
  const cwd = tempDir(t);
  const started = Date.now();
  const r = await blkbackFio(['--disk', 'phy:/nonexistent,xvda,w', RANDW], cwd);
  const elapsed = Date.now() - started;
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /^blkback: guest fio \(domain \d+\): disk xvda: disk target '\/nonexistent' does not exist on this machine; map it to a store, e\.g\. --map \/nonexistent=ram:1G$/m,
  );
  assert.doesNotMatch(r.stderr, /InitWait|internal error|\n\s+at /);
  assert.equal(r.stdout, '');
  assert.ok(elapsed < 5000, `ends at once, not after blkfront's 10 s timeout (${elapsed} ms)`);
});
