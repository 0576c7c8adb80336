// The harness's pure parts: derived job files (checked by fio 3.33 itself when installed), the
// console parser and the checks. Not part of `npm test`'s glob (dist/test/*.test.js); run with
// node --test dist/test/xen/harness.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deriveGuestJob, seedNumjobs } from './fio-jobs.ts';
import { ConsoleParser } from './console.ts';
import type { ConsoleEvent, HarnessResult } from './console.ts';
import { counterFromText, evaluateBoot, evaluatePaired, evaluateSameGuest, fioFigures, pairedGuests } from './checks.ts';
import type { FioFigures } from './checks.ts';
import { comparisonMarkdown, comparisonRows, median, pairedMarkdown, pairedRows } from './report.ts';
import type { BootPlan } from './checks.ts';
import { qemuArgs } from './qemu.ts';
import { cpuDuringJobs } from './cpu.ts';

// the repository: the working directory (npm runs there), else above this file (source or dist/)
const repo =
  [process.cwd(), fileURLToPath(new URL('../../..', import.meta.url)), fileURLToPath(new URL('../..', import.meta.url))].find((d) =>
    existsSync(join(d, 'jobs/randw.fio')),
  ) ?? process.cwd();
const seed = (name: string): string => readFileSync(join(repo, 'jobs', `${name}.fio`), 'utf8');
const hasFio = spawnSync('fio', ['--version']).status === 0;

test('derived seed jobs: randwrite, verify, own regions, scaled size, fio 3.33 accepts them', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xen-jobs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const name of ['randw', 'iometer']) {
    const text = deriveGuestJob(seed(name), { bytesPerJob: 32 * 1048576, runtimeSeconds: 60, ioengine: 'libaio', source: `jobs/${name}.fio` });
    assert.match(text, /^rw=randwrite$/m);
    assert.match(text, /^verify=crc32c$/m);
    assert.match(text, /^size=32m$/m);
    assert.match(text, /^offset_increment=32m$/m);
    assert.match(text, /^filename=\/dev\/xvda$/m);
    assert.doesNotMatch(text, /write_lat_log|rwmixread|size=4g|rw=randw$/m);
    assert.equal(seedNumjobs(text), seedNumjobs(seed(name)));
    if (hasFio) {
      const path = join(dir, `${name}.fio`);
      writeFileSync(path, text);
      const r = spawnSync('fio', ['--parse-only', path], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    }
  }
  if (!hasFio) t.diagnostic('fio not installed: --parse-only not checked');
});

test('console parser: phases, results and files per source, markers mid-line, split chunks, CPU samples in no file', () => {
  const p = new ConsoleParser();
  const events: ConsoleEvent[] = [];
  const text = [
    '(XEN) noise BLKBACK-PHASE dom0: toolstack up\r',
    'BLKBACK-RESULT {"src":"dom0","check":"backing","guest":"pv","ok":true,"md5":"abc"}',
    'G pv| BLKBACK-FILE-BEGIN fio-json-pv-randw',
    'SERVE| some log line',
    'G pv| {"jobs": []}',
    'BLKBACK-RESULT {"check":',
    'G pv| ',
    'G pv| BLKBACK-FILE-END fio-json-pv-randw',
    'G pv| BLKBACK-GUEST checks-done',
    'BLKBACK-FILE-BEGIN console-pv',
    'BLKBACK-FILE-BEGIN inner',
    'BLKBACK-CPU 154.35 busy=17453 idle=7995 steal=4571 serve=9675',
    'BLKBACK-FILE-END inner',
    'BLKBACK-FILE-END console-pv',
  ].join('\n');
  for (let i = 0; i < text.length; i += 7) events.push(...p.push(text.slice(i, i + 7)));
  events.push(...p.push('\n'), ...p.end());
  assert.deepEqual(events[0], { kind: 'phase', source: 'dom0', text: 'dom0: toolstack up' });
  assert.equal(events[1]?.kind, 'result');
  assert.equal(events[2]?.kind, 'bad-result');
  assert.deepEqual(events[3], { kind: 'file', source: 'guest:pv', name: 'fio-json-pv-randw', text: '{"jobs": []}' });
  assert.deepEqual(events[4], { kind: 'file', source: 'dom0', name: 'console-pv', text: 'BLKBACK-FILE-BEGIN inner\nBLKBACK-FILE-END inner' });
  assert.equal(events.length, 5);
});

test('fio figures: bytes over the longest job, verify reads, errors', () => {
  const json = JSON.stringify({
    jobs: [
      { error: 0, write: { io_bytes: 1e6, runtime: 1000, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 500 } },
      { error: 0, write: { io_bytes: 1e6, runtime: 2000, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 500 } },
    ],
  });
  const f = fioFigures('pv', 'randw', 1, `note: something\n${json.replace('"error":0', '"error":0,"stddev" : inf,"x" : -nan')}`);
  assert.equal(f.writeMBps, 1);
  assert.equal(f.writeIops, 16);
  assert.equal(f.verifyMBps, 4);
  assert.equal(counterFromText('{"vbd": {"f_req": 3}}', 'f_req'), 3);
  assert.equal(counterFromText('f_req=7', 'f_req'), 7);
});

test('checks: a missing result fails, a matching md5 passes, a different one fails', () => {
  const plan: BootPlan = { guests: ['pv'], jobs: [], runs: {}, bytesPerJob: new Map(), hotplugGuest: undefined, midIo: false };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const results = [
    r({ src: 'dom0', check: 'backend', ok: true }),
    r({ src: 'dom0', check: 'backing', guest: 'pv', ok: true, bytes: 100, md5: 'aa' }),
    r({ src: 'guest', check: 'size', guest: 'pv', ok: true, bytes: 100 }),
    r({ src: 'guest', check: 'read', guest: 'pv', ok: true, md5: 'bb' }),
  ];
  const { checks } = evaluateBoot({ mode: 'kernel', results, files: new Map(), finished: true }, plan);
  const by = (name: string): boolean | undefined => checks.find((c) => c.name === name)?.ok;
  assert.equal(by('pv: disk size equals backing file'), true);
  assert.equal(by('pv: full read md5 equals backing file'), false);
  assert.equal(by('pv: xl create'), false);
  assert.equal(by('dom0 ran to the end'), true);
});

test('Xen is booted with eager FPU switching (lazy switching corrupts user space under TCG) and the known TCG guards', () => {
  const args = qemuArgs({ xen: '/x/xen', vmlinuz: '/x/vmlinuz', initrd: '/x/dom0.cpio', cpu: 'max' });
  const xen = args[args.indexOf('-append') + 1]!.split(' ');
  for (const option of ['spec-ctrl=eager-fpu', 'smap=0', 'pcid=0', 'invpcid=0']) assert.ok(xen.includes(option), `${option} in ${xen.join(' ')}`);
});

test('dom0 CPU per fio job: samples between the job\'s phase lines, in CPUs; a repeated console copy is ignored', () => {
  const log = [
    'BLKBACK-CPU 10.00 busy=100 idle=100 steal=0 serve=0',
    'G pv| BLKBACK-PHASE pv guest: fio randw (24 lines, 4 jobs)\r\r',
    'BLKBACK-CPU 12.00 busy=200 idle=150 steal=10 serve=50 serve_user=30 serve_sys=20 main_user=20 main_sys=10',
    'G pv| some fio output',
    'BLKBACK-CPU 14.00 busy=400 idle=160 steal=30 serve=250 serve_user=150 serve_sys=100 main_user=120 main_sys=50',
    'BLKBACK-CPU 16.00 busy=600 idle=170 steal=50 serve=450 serve_user=270 serve_sys=180 main_user=220 main_sys=90',
    'G pv| BLKBACK-PHASE pv guest: fio randw done rc=0',
    'BLKBACK-CPU 18.00 busy=700 idle=300 steal=50 serve=450',
    'G pv| BLKBACK-PHASE pv guest: fio randw (24 lines, 4 jobs)',
    'G pv| BLKBACK-PHASE pv guest: fio randw done rc=0',
  ].join('\n');
  const [c, ...rest] = cpuDuringJobs(log);
  assert.equal(rest.length, 0);
  assert.equal(c?.guest, 'pv');
  assert.equal(c?.job, 'randw');
  assert.equal(c?.seconds, 4);
  assert.equal(c?.dom0Busy, 1); // (600 - 200) ticks / 100 per s / 4 s
  assert.equal(c?.steal, 0.1);
  assert.equal(c?.serve, 1);
  assert.equal(c?.serveUser, 0.6);
  assert.equal(c?.serveSys, 0.4);
  assert.equal(c?.mainThread, 0.7);
});

test('several runs of each job: every run is checked, and the comparison takes each backend\'s median', () => {
  const plan: BootPlan = { guests: ['pv', 'pvh'], jobs: ['randw'], runs: { pv: 3 }, bytesPerJob: new Map([['randw', 1e6]]), hotplugGuest: undefined, midIo: false };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const fioJson = (ms: number): string => JSON.stringify({ jobs: [{ error: 0, write: { io_bytes: 1e6, runtime: ms, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 100 } }] });
  const results = [
    r({ src: 'guest', check: 'fio', guest: 'pv', job: 'randw', run: 1, ok: true, rc: 0 }),
    r({ src: 'guest', check: 'fio', guest: 'pv', job: 'randw', run: 3, ok: true, rc: 0 }),
    r({ src: 'guest', check: 'fio', guest: 'pvh', job: 'randw', run: 1, ok: true, rc: 0 }),
  ];
  // run 2 never reported; pvh runs once
  const files = new Map([
    ['fio-json-pv-randw-1', fioJson(1000)],
    ['fio-json-pv-randw-3', fioJson(250)],
    ['fio-json-pvh-randw-1', fioJson(500)],
  ]);
  const { checks, fio } = evaluateBoot({ mode: 'kernel', results, files, finished: true }, plan);
  const by = (name: string): boolean | undefined => checks.find((c) => c.name === name)?.ok;
  assert.equal(by('pv: fio randw run 1'), true);
  assert.equal(by('pv: fio randw run 2'), false, 'a run that never reported fails');
  assert.equal(by('pv: fio randw run 3'), true);
  assert.equal(by('pvh: fio randw'), true, 'one run: no run number in the name');
  assert.deepEqual(fio.map((f) => [f.guest, f.run, f.writeMBps]), [['pv', 1, 1], ['pv', 3, 4], ['pvh', 1, 2]]);

  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  const fig = (guest: string, run: number, writeMBps: number): FioFigures =>
    ({ guest, job: 'randw', run, jobs: 4, writeMBps, writeIops: 0, verifyMBps: 0, writeBytes: 0, verifyBytes: 0, errors: 0 });
  const rows = comparisonRows([fig('pv', 1, 20), fig('pv', 2, 10), fig('pv', 3, 30)], [fig('pv', 2, 18), fig('pv', 1, 9), fig('pv', 3, 27)]);
  const pv = rows.find((x) => x.guest === 'pv')!;
  assert.deepEqual(pv.kernelRuns, [20, 10, 30]);
  assert.deepEqual(pv.oursRuns, [9, 18, 27], 'in run order');
  assert.equal(pv.kernelMBps, 20);
  assert.equal(pv.oursMBps, 18);
  assert.equal(pv.ratio, 0.9);
  const md = comparisonMarkdown(rows, 0.9);
  assert.match(md, /\| randw \| pv \| 20\.0 \(20\.0, 10\.0, 30\.0\) \| 18\.0 \(9\.0, 18\.0, 27\.0\) \| 0\.90 \|/);
  assert.match(md, /\| randw \| all \| 20\.0 \| 18\.0 \| 0\.90 \(>= goal\) \|/);
});

test('dom0 CPU per fio job tells the runs of a job apart', () => {
  const log = [
    'G pv| BLKBACK-PHASE pv guest: fio randw run 1/3 (24 lines, 4 jobs)',
    'BLKBACK-CPU 10.00 busy=100 serve=0',
    'BLKBACK-CPU 12.00 busy=200 serve=0',
    'G pv| BLKBACK-PHASE pv guest: fio randw run 1/3 done rc=0',
    'G pv| BLKBACK-PHASE pv guest: fio randw run 2/3 (24 lines, 4 jobs)',
    'BLKBACK-CPU 14.00 busy=200 serve=0',
    'BLKBACK-CPU 16.00 busy=400 serve=0',
    'G pv| BLKBACK-PHASE pv guest: fio randw run 2/3 done rc=0',
  ].join('\n');
  const cpu = cpuDuringJobs(log);
  assert.deepEqual(cpu.map((c) => [c.job, c.run, c.dom0Busy]), [['randw', 1, 0.5], ['randw', 2, 1]]);
});

test('paired mode: the backends alternate, every turn is checked, the ratio is the median of the pairs\' ratios', () => {
  assert.deepEqual(pairedGuests(3).map((g) => g.tag), ['kernel-1', 'ours-1', 'ours-2', 'kernel-2', 'kernel-3', 'ours-3']);
  const plan: BootPlan = { guests: [], jobs: ['randw'], runs: {}, bytesPerJob: new Map([['randw', 1e6]]), hotplugGuest: undefined, midIo: false, pairs: 2 };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const fioJson = (ms: number): string => JSON.stringify({ jobs: [{ error: 0, write: { io_bytes: 1e6, runtime: ms, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 100 } }] });
  const results: HarnessResult[] = [];
  const files = new Map<string, string>();
  const ms: Record<string, number> = { 'kernel-1': 100, 'ours-1': 125, 'ours-2': 100, 'kernel-2': 100 };
  for (const [tag, t] of Object.entries(ms)) {
    results.push(r({ src: 'dom0', check: 'create', guest: tag, ok: true }), r({ src: 'dom0', check: 'destroy', guest: tag, ok: true }));
    if (tag !== 'kernel-2') results.push(r({ src: 'guest', check: 'fio', guest: tag, job: 'randw', run: 1, ok: true, rc: 0 }));
    files.set(`fio-json-${tag}-randw-1`, fioJson(t));
  }
  const { checks, fio } = evaluatePaired({ mode: 'paired', results, files, finished: true }, plan);
  const by = (name: string): boolean | undefined => checks.find((c) => c.name === name)?.ok;
  assert.equal(by('kernel-1: fio randw'), true);
  assert.equal(by('kernel-2: fio randw'), false, 'a turn whose job never reported fails');
  assert.equal(by('ours-2: xl destroy, backend directory removed'), true);
  const rows = pairedRows(fio, 2);
  assert.deepEqual(rows.map((x) => [x.pair, x.ratio]), [[1, 0.8], [0, 0.8]], 'pair 2 is incomplete: left out');
  assert.match(pairedMarkdown(rows, 0.9, 'how'), /\| randw \| median \| 10\.0 \| 8\.0 \| \*\*0\.80\*\* \(< goal\) \|/);
});

test('same-guest mode: one guest reports under kernel-N and ours-N; its disks, attach, detach and destroy are checked', () => {
  const plan: BootPlan = { guests: [], jobs: ['randw'], runs: {}, bytesPerJob: new Map([['randw', 1e6]]), hotplugGuest: undefined, midIo: false, pairs: 2 };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const fioJson = (ms: number): string => JSON.stringify({ jobs: [{ error: 0, write: { io_bytes: 1e6, runtime: ms, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 100 } }] });
  const results: HarnessResult[] = [
    r({ src: 'dom0', check: 'create', guest: 'twin', ok: true }),
    r({ src: 'dom0', check: 'ctl-attach', guest: 'twin', ok: true }),
    r({ src: 'guest', check: 'xvdb', guest: 'twin', ok: true, write_cache: 'write back' }),
    r({ src: 'dom0', check: 'ctl-detach', guest: 'twin', ok: false, backend_dir_gone: false }),
    r({ src: 'dom0', check: 'destroy', guest: 'twin', ok: true }),
    r({ src: 'dom0', check: 'serve-alive', ok: true }),
  ];
  const files = new Map<string, string>();
  const ms: Record<string, number> = { 'warmup-kernel': 50, 'kernel-1': 100, 'ours-1': 110, 'ours-2': 100, 'kernel-2': 100 };
  for (const [tag, t] of Object.entries(ms)) {
    results.push(r({ src: 'guest', check: 'fio', guest: tag, job: 'randw', run: 1, ok: true, rc: 0 }));
    files.set(`fio-json-${tag}-randw-1`, fioJson(t));
  }
  const { checks, fio } = evaluateSameGuest({ mode: 'same-guest', results, files, finished: true }, plan);
  const by = (name: string): boolean | undefined => checks.find((c) => c.name === name)?.ok;
  assert.equal(by('twin: blkback ctl attach xvdb (backend/blkback)'), true);
  assert.equal(by('twin: xvdb advertises a write cache (feature-flush-cache)'), true);
  assert.equal(by('ours-2: fio randw'), true);
  assert.equal(by('twin: blkback ctl detach xvdb, its backend directory removed'), false, 'a failed detach fails');
  assert.equal(by('twin: xvdb gone from the guest'), false, 'a result that never came fails');
  assert.equal(checks.filter((c) => c.name.includes('warmup')).length, 0, 'warm-up runs are not counted');
  assert.deepEqual(fio.map((f) => f.guest), ['kernel-1', 'ours-1', 'ours-2', 'kernel-2']);
  const rows = pairedRows(fio, 2);
  assert.deepEqual(rows.map((x) => [x.pair, Number(x.ratio.toFixed(3))]), [[1, 0.909], [2, 1], [0, 0.955]]);
  assert.match(pairedMarkdown(rows, 0.9, 'one guest'), /\n\none guest\n$/);

  // the CPU sampler attributes samples to the phase's tag, not the console's
  const log = [
    'G twin| BLKBACK-PHASE ours-1 guest: fio randw (24 lines, 4 jobs, /dev/xvdb)',
    'BLKBACK-CPU 10.00 busy=100 serve=10',
    'BLKBACK-CPU 12.00 busy=300 serve=110',
    'G twin| BLKBACK-PHASE ours-1 guest: fio randw done rc=0',
  ].join('\n');
  assert.deepEqual(cpuDuringJobs(log).map((c) => [c.guest, c.job, c.dom0Busy, c.serve]), [['ours-1', 'randw', 1, 0.5]]);
});
