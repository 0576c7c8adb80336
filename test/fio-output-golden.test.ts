// Golden tests against real fio 3.33: run a small job with terse, json+ and normal output at once,
// rebuild the same statistics as a JobResult (json+ bins give the exact histogram), and check our
// writers print the same lines, keys and fields. Log files: fio's names and column formats.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatJson, formatNormal, formatTerse, logFileNames, openJobLogs, parseFioLog, stringifyFioJson } from '../src/fio/output/index.ts';
import { makeJob, resultFromFioJson, rwOf } from './fixtures/fio-output/helpers.ts';
import { fioMissing, stopIfMissing } from './helpers-tools.ts';

/** fio-3.33 exactly: another version prints other bytes (a skip outside CI, a failure under CI=true). */
const fio = fioMissing();
const shm = '/dev/shm';

function runFio(dir: string, jobText: string, args: string[]): string {
  writeFileSync(join(dir, 'job.fio'), jobText);
  execFileSync('fio', [...args, '--output=out.txt', 'job.fio'], { cwd: dir, stdio: 'ignore', timeout: 30_000 });
  return readFileSync(join(dir, 'out.txt'), 'utf8');
}

type Json = Record<string, unknown>;

function keyShape(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return typeof v;
  if (Array.isArray(v)) return v.map(keyShape);
  return Object.fromEntries(
    Object.entries(v as Json)
      .filter(([k]) => k !== 'bins')
      .map(([k, x]) => [k, keyShape(x)]),
  );
}

test('normal, JSON and terse output match real fio 3.33 for the same statistics', (t) => {
  if (stopIfMissing(t, fio)) return;
  const dir = mkdtempSync(join(tmpdir(), 'fio-golden-'));
  const data = join(shm, `fio-output-golden-${process.pid}.dat`);
  try {
    const jobText = `[global]\nioengine=psync\nfilename=${data}\nsize=8m\nbs=4k\n[rr]\nrw=randrw\nrwmixread=75\n`;
    const out = runFio(dir, jobText, ['--output-format=terse,json+,normal']);
    const lines = out.split('\n');
    const terseLine = lines.find((l) => l.startsWith('3;fio-3.33;'))!;
    const jsonStart = lines.indexOf('{');
    const jsonEnd = lines.indexOf('}', jsonStart);
    const fioJson = JSON.parse(lines.slice(jsonStart, jsonEnd + 1).join('\n')) as Json;
    const fioNormal = lines.slice(jsonEnd + 1);
    const fioHeader = lines.slice(0, lines.indexOf(terseLine)).filter((l) => !l.includes('Laying out'));
    const fj = (fioJson['jobs'] as Json[])[0]!;

    const job = makeJob({ name: 'rr', rw: rwOf('randrw'), rwmixread: 75, ioengine: 'psync', options: fj['job options'] as Record<string, string> });
    const result = resultFromFioJson(fj, job);

    // --- normal: every line equal, except time/pid and the latency distribution (structure only:
    // we bucket by histogram midpoints, fio by exact latency)
    const ours = formatNormal([result], { pid: 1 }).split('\n');
    const oursHeader = ours.slice(0, ours.indexOf(''));
    assert.deepEqual(oursHeader, fioHeader);
    const oursBody = ours.slice(ours.indexOf('') + 1);
    const fioBody = fioNormal.slice(fioNormal.indexOf('') + 1);
    const norm = (l: string) => l.replace(/pid=\d+: .*$/, 'pid=X');
    const latRe = /^ {2}lat \((nsec|usec|msec)\) {3}: (>?=?\d+=\d+\.\d\d%)(, >?=?\d+=\d+\.\d\d%){0,4}$/;
    const fioNoLat = fioBody.filter((l) => !l.startsWith('  lat (')).map(norm);
    const oursNoLat = oursBody.filter((l) => !l.startsWith('  lat (')).map(norm);
    assert.ok(fioNoLat.length > 20 && fioNoLat.some((l) => l.includes('clat percentiles')));
    assert.deepEqual(oursNoLat, fioNoLat);
    for (const l of oursBody.filter((x) => x.startsWith('  lat ('))) assert.match(l, latRe);
    for (const l of fioBody.filter((x) => x.startsWith('  lat ('))) assert.match(l, latRe);

    // --- JSON: same keys in the same order at every level, same types; exact values where fio's are exact
    const ourJson = formatJson([result], { globalOptions: fioJson['global options'] as Record<string, string> });
    assert.deepEqual(keyShape(ourJson), keyShape(fioJson));
    const oj = (ourJson['jobs'] as Json[])[0]!;
    for (const k of ['read', 'write']) {
      const a = oj[k] as Json;
      const b = fj[k] as Json;
      for (const f of ['io_bytes', 'io_kbytes', 'bw_bytes', 'bw', 'runtime', 'total_ios']) assert.equal(a[f], b[f], `${k}.${f}`);
      assert.ok(Math.abs((a['iops'] as number) - (b['iops'] as number)) < 1e-5);
      assert.deepEqual((a['clat_ns'] as Json)['percentile'], (b['clat_ns'] as Json)['percentile']);
    }
    assert.deepEqual(oj['iodepth_level'], fj['iodepth_level']);

    // --- terse v3: same field count, identical fields except the latency distribution (fields 99..120)
    const ourTerse = formatTerse([result]).trimEnd().split(';');
    const fioTerse = terseLine.split(';');
    assert.equal(ourTerse.length, fioTerse.length);
    assert.equal(ourTerse.length, 121); // no disk stats for a /dev/shm file
    assert.deepEqual(ourTerse.slice(0, 99), fioTerse.slice(0, 99));
    for (let i = 99; i < 121; i++) assert.match(ourTerse[i]!, /^\d+\.\d\d%$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(data, { force: true });
  }
});

test('JSON text layout matches fio line by line (keys, indentation, number style)', (t) => {
  if (stopIfMissing(t, fio)) return;
  const dir = mkdtempSync(join(tmpdir(), 'fio-golden-'));
  const data = join(shm, `fio-output-json-${process.pid}.dat`);
  try {
    const jobText = `[global]\nioengine=psync\nfilename=${data}\nsize=4m\nbs=4k\n[w]\nrw=write\n`;
    const text = runFio(dir, jobText, ['--output-format=json']);
    const fioText = text.slice(text.indexOf('{\n'));
    const fj = (JSON.parse(fioText) as Json)['jobs'] as Json[];
    const result = resultFromFioJson(fj[0]!, makeJob({ name: 'w', rw: rwOf('write'), options: fj[0]!['job options'] as Record<string, string> }));
    const ours = stringifyFioJson(formatJson([result], { globalOptions: (JSON.parse(fioText) as Json)['global options'] as Record<string, string> }));
    // a value's style: int, float with 6 decimals, string, or structure
    const shape = (l: string) =>
      l
        .replace(/ : "[^"]*"/, ' : S')
        .replace(/ : -?\d+\.\d{6}/, ' : F')
        .replace(/ : -?\d+(,?)$/, ' : I$1');
    assert.deepEqual(ours.trimEnd().split('\n').map(shape), fioText.trimEnd().split('\n').map(shape));
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(data, { force: true });
  }
});

test('log files: names and row formats as fio 3.33 writes them', async (t) => {
  if (stopIfMissing(t, fio)) return;
  const dir = mkdtempSync(join(tmpdir(), 'fio-logs-'));
  const ours = mkdtempSync(join(tmpdir(), 'fio-logs-ours-'));
  const data = join(shm, `fio-output-logs-${process.pid}.dat`);
  try {
    const jobText =
      `[global]\nioengine=psync\nfilename=${data}\nsize=4m\nbs=4k\ntime_based\nruntime=700ms\nrate_iops=100\n` +
      `[randw]\nrw=randwrite\nwrite_bw_log\nlog_avg_msec=500\n` +
      `[perio]\nrw=randread\nwrite_bw_log\nwrite_lat_log=plat\nwrite_iops_log=pio\nlog_offset=1\n` +
      `[mixed]\nrw=read\nnumjobs=2\nwrite_bw_log=shared\nper_job_logs=0\nlog_avg_msec=500\n`;
    runFio(dir, jobText, []);
    const fioFiles = readdirSync(dir)
      .filter((f) => f.endsWith('.log'))
      .sort();

    const jobs = [
      makeJob({ name: 'randw', threadNumber: 1, rw: rwOf('randwrite'), writeBwLog: '', logAvgMsec: 500 }),
      makeJob({ name: 'perio', threadNumber: 2, rw: rwOf('randread'), writeBwLog: '', writeLatLog: 'plat', writeIopsLog: 'pio', logOffset: true }),
      makeJob({ name: 'mixed', threadNumber: 3, writeBwLog: 'shared', perJobLogs: false, logAvgMsec: 500 }),
      makeJob({ name: 'mixed', threadNumber: 4, cloneIndex: 1, writeBwLog: 'shared', perJobLogs: false, logAvgMsec: 500 }),
    ];
    const names = new Set(jobs.flatMap((j) => Object.values(logFileNames(j))));
    assert.deepEqual([...names].sort(), fioFiles);

    // Write the same kinds of rows through our sinks and compare each file's row shape with fio's.
    for (const j of jobs) {
      const sink = openJobLogs(j, ours)!;
      const windowed = j.logAvgMsec > 0;
      for (const kind of ['bw', 'iops', 'lat', 'slat', 'clat'] as const) {
        if (kind === 'slat') continue; // psync records no submission latency: fio's file is empty
        sink.row(kind, 500, windowed ? 808 : 50988, j.rw === 'randwrite' ? 1 : 0, windowed ? 0 : 4096, windowed ? 0 : 2134016);
      }
      await sink.close();
    }
    const rowShape = (line: string) =>
      line
        .split(', ')
        .map((c) => (/^\d+$/.test(c) ? 'n' : c))
        .join(',') + `/${line.split(', ').length}`;
    for (const f of fioFiles) {
      const fioLines = readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean);
      const ourLines = readFileSync(join(ours, f), 'utf8').split('\n').filter(Boolean);
      assert.equal(ourLines.length > 0, fioLines.length > 0, `${f}: empty in one only`);
      if (fioLines.length === 0) continue;
      assert.equal(rowShape(ourLines[0]!), rowShape(fioLines[0]!), f);
      // fio's windowed rows carry bs 0 and offset 0; ours too
      const fr = parseFioLog(fioLines.join('\n'), { logOffset: f.startsWith('p') });
      const or = parseFioLog(ourLines.join('\n'), { logOffset: f.startsWith('p') });
      assert.equal(or[0]!.ddir, fr[0]!.ddir, f);
      if (f.startsWith('randw') || f.startsWith('shared')) assert.equal(or[0]!.bs, fr[0]!.bs, f);
    }
    // per_job_logs=0: both clones appended to one file
    assert.equal(readFileSync(join(ours, 'shared_bw.log'), 'utf8').split('\n').filter(Boolean).length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(ours, { recursive: true, force: true });
    rmSync(data, { force: true });
  }
});
