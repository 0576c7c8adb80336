// The harness's pure parts: derived job files (checked by the host's fio, the one the guests run),
// the console parser and the checks. Part of `npm test` (package.json lists it beside the main
// batch); alone: node --test dist/test/xen/harness.test.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deriveGuestJob, seedNumjobs } from '../../src/xen-tcg/fio-jobs.ts';
import { ConsoleParser } from '../../src/xen-tcg/console.ts';
import type { ConsoleEvent, HarnessResult } from '../../src/xen-tcg/console.ts';
import { counterFromText, evaluateBoot, evaluatePaired, evaluateSameGuest, failures, fioFigures, pairedGuests } from '../../src/xen-tcg/checks.ts';
import type { BootRecord, Check, FioFigures, Mode } from '../../src/xen-tcg/checks.ts';
import { missingTools, stopIfMissing } from '../helpers-tools.ts';
import { comparisonMarkdown, comparisonRows, cpuPerIoMarkdown, cpuPerIoRows, median, pairedMarkdown, pairedRows } from '../../src/xen-tcg/report.ts';
import type { BootPlan } from '../../src/xen-tcg/checks.ts';
import { qemuArgs } from '../../src/xen-tcg/qemu.ts';
import { cpuDuringJobs } from '../../src/xen-tcg/cpu.ts';
import { configScript, runtimePackages } from '../../src/xen-tcg/payload.ts';
import { expectedQueues, queueFigures } from '../../src/xen-tcg/queues.ts';
import { parseStraceSummary, syscallFigures, syscallMarkdown } from '../../src/xen-tcg/syscalls.ts';
import type { JobCpu } from '../../src/xen-tcg/cpu.ts';

// the repository: the working directory (npm runs there), else above this file (source or dist/)
const repo =
  [process.cwd(), fileURLToPath(new URL('../../..', import.meta.url)), fileURLToPath(new URL('../..', import.meta.url))].find((d) =>
    existsSync(join(d, 'jobs/randw.fio')),
  ) ?? process.cwd();
const seed = (name: string): string => readFileSync(join(repo, 'jobs', `${name}.fio`), 'utf8');
const derived = (name: string): string =>
  deriveGuestJob(seed(name), { bytesPerJob: 32 * 1048576, runtimeSeconds: 60, ioengine: 'libaio', source: `jobs/${name}.fio` });

test('derived seed jobs: randwrite, verify, own regions, scaled size', () => {
  for (const name of ['randw', 'iometer']) {
    const text = derived(name);
    assert.match(text, /^rw=randwrite$/m);
    assert.match(text, /^verify=crc32c$/m);
    assert.match(text, /^size=32m$/m);
    assert.match(text, /^offset_increment=32m$/m);
    assert.match(text, /^filename=\/dev\/xvda$/m);
    assert.doesNotMatch(text, /write_lat_log|rwmixread|size=4g|rw=randw$/m);
    assert.equal(seedNumjobs(text), seedNumjobs(seed(name)));
  }
});

test("derived seed jobs: the host's fio (the one the guests get) accepts them", (t) => {
  if (stopIfMissing(t, missingTools(['fio'], 'fio'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'xen-jobs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const name of ['randw', 'iometer']) {
    const path = join(dir, `${name}.fio`);
    writeFileSync(path, derived(name));
    const r = spawnSync('fio', ['--parse-only', path], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  }
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

test("dom0 CPU per fio job: samples between the job's phase lines, in CPUs; a repeated console copy is ignored", () => {
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

test("several runs of each job: every run is checked, and the comparison takes each backend's median", () => {
  const plan: BootPlan = {
    guests: ['pv', 'pvh'],
    jobs: ['randw'],
    runs: { pv: 3 },
    bytesPerJob: new Map([['randw', 1e6]]),
    hotplugGuest: undefined,
    midIo: false,
  };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const fioJson = (ms: number): string =>
    JSON.stringify({ jobs: [{ error: 0, write: { io_bytes: 1e6, runtime: ms, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 100 } }] });
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
  assert.deepEqual(
    fio.map((f) => [f.guest, f.run, f.writeMBps]),
    [
      ['pv', 1, 1],
      ['pv', 3, 4],
      ['pvh', 1, 2],
    ],
  );

  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  const fig = (guest: string, run: number, writeMBps: number): FioFigures => ({
    guest,
    job: 'randw',
    run,
    jobs: 4,
    writeMBps,
    writeIops: 0,
    verifyMBps: 0,
    writeBytes: 0,
    verifyBytes: 0,
    errors: 0,
  });
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
  assert.deepEqual(
    cpu.map((c) => [c.job, c.run, c.dom0Busy]),
    [
      ['randw', 1, 0.5],
      ['randw', 2, 1],
    ],
  );
});

test("paired mode: the backends alternate, every turn is checked, the ratio is the median of the pairs' ratios", () => {
  assert.deepEqual(
    pairedGuests(3).map((g) => g.tag),
    ['kernel-1', 'ours-1', 'ours-2', 'kernel-2', 'kernel-3', 'ours-3'],
  );
  const plan: BootPlan = { guests: [], jobs: ['randw'], runs: {}, bytesPerJob: new Map([['randw', 1e6]]), hotplugGuest: undefined, midIo: false, pairs: 2 };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const fioJson = (ms: number): string =>
    JSON.stringify({ jobs: [{ error: 0, write: { io_bytes: 1e6, runtime: ms, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 100 } }] });
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
  assert.deepEqual(
    rows.map((x) => [x.pair, x.ratio]),
    [
      [1, 0.8],
      [0, 0.8],
    ],
    'pair 2 is incomplete: left out',
  );
  assert.match(pairedMarkdown(rows, 0.9, 'how'), /\| randw \| median \| 10\.0 \| 8\.0 \| \*\*0\.80\*\* \(< goal\) \|/);
});

test('same-guest mode: one guest reports under kernel-N and ours-N; its disks, attach, detach and destroy are checked', () => {
  const plan: BootPlan = { guests: [], jobs: ['randw'], runs: {}, bytesPerJob: new Map([['randw', 1e6]]), hotplugGuest: undefined, midIo: false, pairs: 2 };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const fioJson = (ms: number): string =>
    JSON.stringify({ jobs: [{ error: 0, write: { io_bytes: 1e6, runtime: ms, total_ios: 16 }, read: { io_bytes: 1e6, runtime: 100 } }] });
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
  assert.equal(by('warmup-kernel: fio randw'), true, 'the warm-up runs are checked');
  assert.equal(by('warmup-ours: fio randw'), false, 'a warm-up that never reported fails');
  assert.deepEqual(
    fio.map((f) => f.guest),
    ['kernel-1', 'ours-1', 'ours-2', 'kernel-2'],
    'warm-ups give no figures',
  );
  const rows = pairedRows(fio, 2);
  assert.deepEqual(
    rows.map((x) => [x.pair, Number(x.ratio.toFixed(3))]),
    [
      [1, 0.909],
      [2, 1],
      [0, 0.955],
    ],
  );
  assert.match(pairedMarkdown(rows, 0.9, 'one guest'), /\n\none guest\n$/);

  // the CPU sampler attributes samples to the phase's tag, not the console's
  const log = [
    'G twin| BLKBACK-PHASE ours-1 guest: fio randw (24 lines, 4 jobs, /dev/xvdb)',
    'BLKBACK-CPU 10.00 busy=100 serve=10',
    'BLKBACK-CPU 12.00 busy=300 serve=110',
    'G twin| BLKBACK-PHASE ours-1 guest: fio randw done rc=0',
  ].join('\n');
  assert.deepEqual(
    cpuDuringJobs(log).map((c) => [c.guest, c.job, c.dom0Busy, c.serve]),
    [['ours-1', 'randw', 1, 0.5]],
  );
});

test("same-guest --chain iscsi: Linux's initiator and serve's own are checked byte for byte", () => {
  const plan: BootPlan = { guests: [], jobs: [], runs: {}, bytesPerJob: new Map(), hotplugGuest: undefined, midIo: false, pairs: 0, chain: 'iscsi' };
  const r = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
  const boot = (lun1Md5: string, guestXvdcMd5: string): BootRecord => ({
    mode: 'same-guest',
    finished: true,
    files: new Map(),
    results: [
      r({ src: 'dom0', check: 'iscsi-login', ok: true, rc: 0, lun0: '/dev/sda', lun1: '/dev/sdb', lun2: '/dev/sdc' }),
      r({ src: 'dom0', check: 'iscsi-read-lun0', ok: true, device: '/dev/sda', md5: 'aa', backing_md5: 'aa', bytes: 1 }),
      // dom0's script also says ok: false on a mismatch; the verdict compares the sums itself
      r({ src: 'dom0', check: 'iscsi-read-lun1', ok: true, device: '/dev/sdb', md5: lun1Md5, backing_md5: 'bb', bytes: 1 }),
      r({ src: 'dom0', check: 'ctl-attach-xvdc', guest: 'twin', ok: true, rc: 0, backing_md5: 'cc' }),
      r({ src: 'guest', check: 'xvdc-read', guest: 'twin', ok: true, md5: guestXvdcMd5, bytes: 1 }),
      r({ src: 'guest', check: 'xvdc-fsync-write', guest: 'twin', ok: true, rc: 0 }),
      r({ src: 'dom0', check: 'xvdc-marker', guest: 'twin', ok: true }),
      r({ src: 'dom0', check: 'iscsi-logout', ok: true }),
    ],
  });
  const by = (checks: readonly Check[], start: string): boolean | undefined => checks.find((c) => c.name.startsWith(start))?.ok;
  const good = evaluateSameGuest(boot('bb', 'cc'), plan).checks;
  assert.equal(by(good, "dom0's Linux initiator"), true);
  assert.equal(by(good, 'the SCSI disks are distinct'), true);
  assert.equal(by(good, "Linux's initiator reads LUN 1 whole"), true);
  assert.equal(by(good, 'twin: the guest reads xvdc whole'), true);
  assert.equal(by(good, "twin: xvdc's guest-written marker"), true);
  assert.equal(by(good, 'blkback iscsi-target exits on SIGTERM'), false, 'a result that never came fails');
  const bad = evaluateSameGuest(boot('b0', 'c0'), plan).checks;
  assert.equal(by(bad, "Linux's initiator reads LUN 1 whole"), false, 'other bytes through the initiator fail');
  assert.equal(by(bad, 'twin: the guest reads xvdc whole'), false, "other bytes through serve's initiator fail");
  assert.equal(
    evaluateSameGuest(boot('bb', 'cc'), {
      guests: [],
      jobs: [],
      runs: {},
      bytesPerJob: new Map(),
      hotplugGuest: undefined,
      midIo: false,
      pairs: 0,
    }).checks.some((c) => c.name.includes('initiator')),
    false,
    'no chain, no chain checks',
  );
});

// ---- a whole boot, as dom0-init.sh and domu-init.sh report it, to break one piece at a time ----

const res = (x: Record<string, unknown>): HarnessResult => x as unknown as HarnessResult;
const MiB = 1048576;
/** fio's JSON for one run of a one-job file: what it wrote, in how long, what it read back. */
const fioRunJson = (o: { writeBytes?: number; ms?: number; verifyBytes?: number; errors?: number } = {}): string => {
  const writeBytes = o.writeBytes ?? MiB;
  return JSON.stringify({
    jobs: [
      {
        error: o.errors ?? 0,
        write: { io_bytes: writeBytes, runtime: o.ms ?? 100, total_ios: 16 },
        read: { io_bytes: o.verifyBytes ?? writeBytes, runtime: 50 },
      },
    ],
  });
};
const fullPlan = (): BootPlan => ({
  guests: ['pv', 'pvh'],
  jobs: ['randw', 'iometer'],
  runs: { pv: 3, pvh: 1 },
  bytesPerJob: new Map([
    ['randw', MiB],
    ['iometer', MiB],
  ]),
  hotplugGuest: 'pv',
  midIo: true,
});

/** Every result and file a boot that went right prints, in console order. */
function healthyBoot(mode: 'kernel' | 'ours', plan: BootPlan): { results: HarnessResult[]; files: Map<string, string> } {
  const results: HarnessResult[] = [res({ src: 'dom0', check: 'backend', mode, ok: true })];
  const files = new Map<string, string>();
  const basics = (g: string): void => {
    results.push(
      res({ src: 'dom0', check: 'backing', guest: g, ok: true, bytes: 128 * MiB, md5: `md5-${g}` }),
      res({ src: 'dom0', check: 'create', guest: g, ok: true, rc: 0 }),
      res({ src: 'guest', check: 'size', guest: g, ok: true, bytes: 128 * MiB }),
      res({ src: 'guest', check: 'read', guest: g, ok: true, md5: `md5-${g}` }),
      res({ src: 'guest', check: 'fsync-write', guest: g, ok: true, rc: 0 }),
      res({ src: 'dom0', check: 'marker', guest: g, ok: true }),
      res({ src: 'guest', check: 'flush', guest: g, ok: true, rc: 0, write_cache: 'write back' }),
    );
  };
  for (const g of plan.guests) {
    basics(g);
    for (let n = 1; n <= (plan.runs[g] ?? 1); n++) {
      for (const job of plan.jobs) {
        results.push(res({ src: 'guest', check: 'fio', guest: g, job, run: n, ok: true, rc: 0 }));
        files.set(`fio-json-${g}-${job}-${n}`, fioRunJson({ ms: 100 * n }));
      }
    }
    if (mode === 'kernel') results.push(res({ src: 'dom0', check: 'stats', guest: g, ok: true, f_req: 3 }));
    else {
      results.push(res({ src: 'dom0', check: `ctl-stats-${g}`, ok: true, rc: 0 }), res({ src: 'dom0', check: `ctl-list-${g}`, ok: true, rc: 0 }));
      files.set(`ctl-stats-${g}`, '{"vbds":[{"f_req": 3}]}');
    }
    if (g === plan.hotplugGuest) {
      results.push(
        res({ src: 'dom0', check: 'backing2', guest: g, ok: true, bytes: 16 * MiB, md5: 'md5-xvdb' }),
        res({ src: 'dom0', check: 'block-attach', guest: g, ok: true }),
        res({ src: 'guest', check: 'hotplug-read', guest: g, ok: true, bytes: 16 * MiB, md5: 'md5-xvdb' }),
        res({ src: 'dom0', check: 'block-detach', guest: g, ok: true }),
        res({ src: 'guest', check: 'hotplug-gone', guest: g, ok: true }),
      );
    }
    results.push(res({ src: 'dom0', check: 'destroy', guest: g, ok: true, backend_dir_gone: true, backend_alive: true }));
  }
  if (plan.midIo) {
    results.push(
      res({ src: 'dom0', check: 'create', guest: 'busy', ok: true }),
      res({ src: 'dom0', check: 'destroy', guest: 'busy', ok: true, backend_alive: true }),
    );
    basics('after');
    if (mode === 'ours') results.push(res({ src: 'dom0', check: 'ctl-list-after', ok: true, rc: 0 }));
    results.push(res({ src: 'dom0', check: 'destroy', guest: 'after', ok: true }));
  }
  if (mode === 'ours') results.push(res({ src: 'dom0', check: 'serve-alive', ok: true }));
  return { results, files };
}
const bootOf = (mode: Mode, x: { results: HarnessResult[]; files: Map<string, string> }, extra: Partial<BootRecord> = {}): BootRecord => ({
  mode,
  results: x.results,
  files: x.files,
  finished: true,
  ...extra,
});
const failedNames = (checks: readonly Check[]): string[] => checks.filter((c) => !c.ok).map((c) => c.name);
const figureKeys = (fio: readonly FioFigures[]): string[] => fio.map((f) => `${f.guest}/${f.job}/${f.run}`);
/** The results and files minus those that match, plus extra ones. */
const without = (
  x: { results: HarnessResult[]; files: Map<string, string> },
  drop: (r: HarnessResult) => boolean,
): { results: HarnessResult[]; files: Map<string, string> } => ({
  results: x.results.filter((r) => !drop(r)),
  files: new Map(x.files),
});

test('a boot that went right passes every check, in both modes, and every planned run gives figures', () => {
  for (const mode of ['kernel', 'ours'] as const) {
    const { checks, fio } = evaluateBoot(bootOf(mode, healthyBoot(mode, fullPlan())), fullPlan());
    assert.deepEqual(failedNames(checks), [], mode);
    // pv: 3 runs of 2 jobs; pvh: 1 run of 2 jobs
    assert.equal(fio.length, 8, mode);
    assert.ok(
      checks.some((c) => c.name === 'pvh: fio randw' && c.guest === 'pvh'),
      'checks name the guest they are about',
    );
  }
});

test('figures come only from runs that passed: a failed run is reported and left out of the medians', () => {
  const plan = fullPlan();
  const x = healthyBoot('kernel', plan);
  // run 1: job errors; run 2: every byte verified but fio exited 1; run 3 clean and slowest
  x.files.set('fio-json-pv-randw-1', fioRunJson({ ms: 25, errors: 5 }));
  const run2 = x.results.findIndex((r) => r.check === 'fio' && r.guest === 'pv' && r.job === 'randw' && r.run === 2);
  x.results[run2] = res({ ...x.results[run2], ok: false, rc: 1 });
  // pvh: wrote everything, read back only half
  x.files.set('fio-json-pvh-iometer-1', fioRunJson({ verifyBytes: MiB / 2 }));
  const { checks, fio } = evaluateBoot(bootOf('kernel', x), plan);
  assert.deepEqual(failedNames(checks), ['pv: fio randw run 1', 'pv: fio randw run 2', 'pvh: fio iometer']);
  assert.deepEqual(
    figureKeys(fio).filter((k) => k.includes('randw')),
    ['pv/randw/3', 'pvh/randw/1'],
  );
  assert.ok(!figureKeys(fio).includes('pvh/iometer/1'));
  // so the comparison's median for pv randw is run 3's alone, not the failed runs' faster figures
  const ours = evaluateBoot(bootOf('ours', healthyBoot('ours', plan)), plan).fio;
  const row = comparisonRows(fio, ours).find((r) => r.job === 'randw' && r.guest === 'pv');
  assert.deepEqual(
    row?.kernelRuns.map((m) => Number(m.toFixed(3))),
    [Number((MiB / 300 / 1000).toFixed(3))],
  );
});

test('warm-up runs are checked like counted ones, and give no figures', () => {
  // --mode same-guest: a warm-up that wrote but could not verify, one that reported rc=0 with errors
  const plan: BootPlan = { guests: [], jobs: ['randw'], runs: {}, bytesPerJob: new Map([['randw', MiB]]), hotplugGuest: undefined, midIo: false, pairs: 1 };
  const results = [
    res({ src: 'dom0', check: 'create', guest: 'twin', ok: true }),
    res({ src: 'dom0', check: 'ctl-attach', guest: 'twin', ok: true }),
    res({ src: 'guest', check: 'xvdb', guest: 'twin', ok: true, write_cache: 'write back' }),
  ];
  const files = new Map<string, string>();
  for (const tag of ['warmup-kernel', 'warmup-ours', 'kernel-1', 'ours-1']) {
    results.push(res({ src: 'guest', check: 'fio', guest: tag, job: 'randw', run: 1, ok: true, rc: 0 }));
    files.set(`fio-json-${tag}-randw-1`, fioRunJson());
  }
  files.set('fio-json-warmup-kernel-randw-1', fioRunJson({ verifyBytes: 0 }));
  files.set('fio-json-warmup-ours-randw-1', fioRunJson({ errors: 84 }));
  results.push(
    res({ src: 'dom0', check: 'ctl-detach', guest: 'twin', ok: true }),
    res({ src: 'guest', check: 'xvdb-gone', guest: 'twin', ok: true }),
    res({ src: 'dom0', check: 'destroy', guest: 'twin', ok: true }),
    res({ src: 'dom0', check: 'serve-alive', ok: true }),
  );
  const same = evaluateSameGuest({ mode: 'same-guest', results, files, finished: true }, plan);
  assert.deepEqual(failedNames(same.checks), ['warmup-kernel: fio randw', 'warmup-ours: fio randw']);
  assert.deepEqual(figureKeys(same.fio), ['kernel-1/randw/1', 'ours-1/randw/1']);

  // --mode paired: the warm-up guest's create, job and destroy
  const paired: HarnessResult[] = [];
  const pairedFiles = new Map<string, string>();
  for (const tag of ['warmup', 'kernel-1', 'ours-1']) {
    paired.push(
      res({ src: 'dom0', check: 'create', guest: tag, ok: true }),
      res({ src: 'guest', check: 'fio', guest: tag, job: 'randw', run: 1, ok: true, rc: 0 }),
    );
    paired.push(res({ src: 'dom0', check: 'destroy', guest: tag, ok: true }));
    pairedFiles.set(`fio-json-${tag}-randw-1`, fioRunJson());
  }
  pairedFiles.set('fio-json-warmup-randw-1', fioRunJson({ errors: 1 }));
  const p = evaluatePaired({ mode: 'paired', results: paired, files: pairedFiles, finished: true }, plan);
  assert.deepEqual(failedNames(p.checks), ['warmup: fio randw']);
  assert.deepEqual(figureKeys(p.fio), ['kernel-1/randw/1', 'ours-1/randw/1']);
});

test('every failed result fails the boot, whether or not a named check asks for it', () => {
  const plan = fullPlan();
  const base = healthyBoot('ours', plan);
  const cases: { name: string; add: HarnessResult[]; unreadable?: { source: string; text: string }[]; fails: string; guest: string | undefined }[] = [
    // dom0 gave up waiting on the guest: no named check looks for wait-* results
    {
      name: 'a wait that timed out',
      add: [res({ src: 'dom0', check: 'wait-hotplug-gone', guest: 'pv', ok: false, message: "no 'hotplug-gone' within 120 s" })],
      fails: 'pv: wait-hotplug-gone reported not ok',
      guest: 'pv',
    },
    // a second report of a named check (a restarted guest destroyed again): the named check saw the first
    {
      name: 'a second destroy',
      add: [res({ src: 'dom0', check: 'destroy', guest: 'pvh', ok: false, rc: 1 })],
      fails: 'pvh: destroy reported not ok',
      guest: 'pvh',
    },
    {
      name: 'ctl output nobody checks',
      add: [res({ src: 'dom0', check: 'ctl-list-pv-attached', ok: false, rc: 1 })],
      fails: 'dom0: ctl-list-pv-attached reported not ok',
      guest: undefined,
    },
    // a fio run beyond the plan is checked too (no figures)
    {
      name: 'an unplanned fio run',
      add: [res({ src: 'guest', check: 'fio', guest: 'pv', job: 'randw', run: 4, ok: false, rc: 1 })],
      fails: 'pv: fio randw run 4 (not in the plan)',
      guest: 'pv',
    },
    {
      name: 'no job files',
      add: [res({ src: 'guest', check: 'fio', guest: 'pv', job: 'none', ok: false, message: 'no job files in /jobs' })],
      fails: 'pv: fio none run undefined (not in the plan)',
      guest: 'pv',
    },
    // a result line that did not parse but says it failed
    {
      name: 'an unreadable failure',
      add: [],
      unreadable: [{ source: 'dom0', text: '{"src":"dom0","check":"fatal","ok":false,"mess' }],
      fails: 'dom0: a failed result, unreadable',
      guest: undefined,
    },
    {
      name: "an unreadable guest's failure",
      add: [],
      unreadable: [{ source: 'dom0', text: '{"src":"dom0","check":"wait-x","guest":"pvh","ok":false,"mess' }],
      fails: 'pvh: a failed result, unreadable',
      guest: 'pvh',
    },
  ];
  for (const c of cases) {
    const x = { results: [...base.results, ...c.add], files: base.files };
    const { checks, fio } = evaluateBoot(bootOf('ours', x, c.unreadable === undefined ? {} : { unreadable: c.unreadable }), plan);
    assert.deepEqual(failedNames(checks), [c.fails], c.name);
    assert.equal(checks.find((k) => !k.ok)?.guest, c.guest, c.name);
    assert.equal(fio.length, 8, `${c.name}: figures of the planned runs only`);
  }
  // an unreadable line that does not say ok:false is noise (a relayed line cut by another)
  const noise = evaluateBoot(bootOf('ours', base, { unreadable: [{ source: 'guest:pv', text: '{"check":' }] }), plan);
  assert.deepEqual(failedNames(noise.checks), []);
  // an ok:true result nobody asks for is fine
  const extra = evaluateBoot(
    bootOf('ours', { results: [...base.results, res({ src: 'dom0', check: 'ctl-list-pv-attached', ok: true })], files: base.files }),
    plan,
  );
  assert.deepEqual(failedNames(extra.checks), []);
});

test("the verdict: a --report-only guest's failures are reported, every other failure gates", () => {
  const plan = fullPlan();
  // the PVH guest triple-faulted after its marker: dom0 saw it go, its jobs never reported
  const pvhDied = without(healthyBoot('ours', plan), (r) => r.guest === 'pvh' && (r.check === 'fio' || r.check === 'flush' || r.check === 'destroy'));
  pvhDied.results.push(res({ src: 'dom0', check: 'wait-checks-done', guest: 'pvh', ok: false, message: 'guest restarted as domain 3 (was 2)' }));
  pvhDied.results.push(res({ src: 'dom0', check: 'destroy', guest: 'pvh', ok: true }));
  const ctlStats = pvhDied.results.findIndex((r) => r.check === 'ctl-stats-pvh');
  pvhDied.results[ctlStats] = res({ src: 'dom0', check: 'ctl-stats-pvh', ok: false, rc: 1 });
  const { checks } = evaluateBoot(bootOf('ours', pvhDied), plan);
  const pvhOnly = failures(checks, new Set(['pvh']));
  assert.deepEqual(pvhOnly.gating, []);
  assert.ok(pvhOnly.reportingOnly.length >= 5, pvhOnly.reportingOnly.map((c) => c.name).join('; '));
  assert.ok(pvhOnly.reportingOnly.every((c) => c.guest === 'pvh'));
  assert.deepEqual(failures(checks, new Set()).gating, pvhOnly.reportingOnly, 'without --report-only every failure gates');

  // a PV guest's checksum, a PV guest's verify, the after-guest, and the boot itself gate whatever is reporting-only
  const pvBad = healthyBoot('ours', plan);
  const read = pvBad.results.findIndex((r) => r.check === 'read' && r.guest === 'pv');
  pvBad.results[read] = res({ ...pvBad.results[read], md5: 'something else' });
  pvBad.files.set('fio-json-pv-iometer-2', fioRunJson({ verifyBytes: MiB - 4096 }));
  const marker = pvBad.results.findIndex((r) => r.check === 'marker' && r.guest === 'after');
  pvBad.results[marker] = res({ ...pvBad.results[marker], ok: false });
  const cut = evaluateBoot(bootOf('ours', pvBad, { finished: false }), plan);
  assert.deepEqual(
    failures(cut.checks, new Set(['pvh'])).gating.map((c) => c.name),
    ['dom0 ran to the end', 'pv: full read md5 equals backing file', 'pv: fio iometer run 2', 'after: written marker in the backing file'],
  );
});

test("the payload's runtime packages are found where npm put them: the package's own node_modules or a hoisted one above", () => {
  const root = mkdtempSync(join(tmpdir(), 'xen-hoist-'));
  try {
    const write = (rel: string, json: unknown): void => {
      mkdirSync(join(root, rel), { recursive: true });
      writeFileSync(join(root, rel, 'package.json'), JSON.stringify(json));
    };
    // an installed blkback: its dependency hoisted to the app's node_modules, one of its own nested
    write('app/node_modules/blkback', { name: 'blkback', dependencies: { koffi: '1', nested: '1', absent: '1' } });
    write('app/node_modules/koffi', { name: 'koffi', optionalDependencies: { '@koromix/koffi-linux-x64': '1', '@koromix/koffi-win32': '1' } });
    write('app/node_modules/@koromix/koffi-linux-x64', { name: '@koromix/koffi-linux-x64' });
    write('app/node_modules/blkback/node_modules/nested', { name: 'nested' });
    const found = runtimePackages(join(root, 'app/node_modules/blkback'));
    assert.deepEqual(
      [...found],
      [
        ['@koromix/koffi-linux-x64', join(root, 'app/node_modules/@koromix/koffi-linux-x64')],
        ['koffi', join(root, 'app/node_modules/koffi')],
        ['nested', join(root, 'app/node_modules/blkback/node_modules/nested')],
      ],
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

// ---- --mode same-guest: queues, system calls per request, CPU per I/O --------------------------

// strace 6.1's `-c -f` summary as it printed it for a node process (Debian bookworm, the dom0's
// version): the errors column is blank where nothing failed
const STRACE_SAMPLE = [
  '% time     seconds  usecs/call     calls    errors syscall',
  '------ ----------- ----------- --------- --------- ----------------',
  ' 89.26    0.071070        4738        15         1 futex',
  '  8.23    0.006556          11       563           epoll_pwait',
  '  2.31    0.001843           6       282           statx',
  '  0.05    0.000041           8         5           mmap',
  '  0.01    0.000004           4         1           write',
  '------ ----------- ----------- --------- --------- ----------------',
  '100.00    0.079625          90       866         1 total',
].join('\n');

test('strace -c summaries: calls per system call and the total, blank error columns read as none', (t) => {
  const s = parseStraceSummary(STRACE_SAMPLE);
  assert.equal(s?.total, 866);
  assert.equal(s?.errors, 1);
  assert.deepEqual([...(s?.calls ?? [])].slice(0, 3), [
    ['epoll_pwait', 563],
    ['statx', 282],
    ['futex', 15],
  ]);
  assert.equal(s?.calls.get('write'), 1);
  assert.equal(parseStraceSummary('strace: attach: ptrace(PTRACE_SEIZE, 12): Operation not permitted\n'), undefined);
  assert.equal(parseStraceSummary(STRACE_SAMPLE.split('\n').slice(0, 5).join('\n')), undefined, 'no total row: cut short');
  // wider numbers than the columns were made for still read
  assert.equal(parseStraceSummary(STRACE_SAMPLE.replace(/ {7}866 /, ' 1234567890 '))?.total, 1234567890);

  // the host's strace, when it has one, prints the layout parsed here
  if (stopIfMissing(t, missingTools(['strace'], 'strace'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'xen-strace-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync('strace', ['-c', '-f', '-o', join(dir, 'out'), 'sh', '-c', 'cat /dev/null; cat /dev/null'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const host = parseStraceSummary(readFileSync(join(dir, 'out'), 'utf8'));
  assert.ok(host !== undefined && host.total > 10, readFileSync(join(dir, 'out'), 'utf8'));
  assert.equal(
    [...host.calls.values()].reduce((a, b) => a + b, 0),
    host.total,
  );
  assert.ok((host.calls.get('execve') ?? 0) >= 3);
});

const ctlStats = (xvdb: { rd: number; wr: number; f?: number }, xvdd?: { rd: number; wr: number }): string =>
  JSON.stringify(
    [
      { key: '1/51712', vdev: 'xvda', rd_req: 0, wr_req: 0, f_req: 0, ds_req: 0 },
      { key: '1/51728', vdev: 'xvdb', rd_req: xvdb.rd, wr_req: xvdb.wr, f_req: xvdb.f ?? 0, ds_req: 0, latency_ns: { read: {} } },
      ...(xvdd === undefined ? [] : [{ key: '1/51760', vdev: 'xvdd', rd_req: xvdd.rd, wr_req: xvdd.wr, f_req: 0, ds_req: 0 }]),
    ],
    null,
    2,
  );
const ctlList = (xvdb: string, xvdd?: string): string =>
  JSON.stringify([{ key: '1/51728', vdev: 'xvdb', dataPath: xvdb }, ...(xvdd === undefined ? [] : [{ key: '1/51760', vdev: 'xvdd', dataPath: xvdd }])]);

test('system calls per request: strace total over the requests serve counted in the window', () => {
  const f = syscallFigures(
    'persistent',
    {
      strace: STRACE_SAMPLE,
      before: ctlStats({ rd: 100, wr: 50, f: 3 }),
      after: ctlStats({ rd: 1100, wr: 782, f: 4 }),
      list: ctlList('persistent'),
      fio: JSON.stringify({
        jobs: [
          { read: { total_ios: 1000 }, write: { total_ios: 0 } },
          { read: { total_ios: 0 }, write: { total_ios: 732 } },
        ],
      }),
    },
    23.5,
  );
  assert.ok(typeof f !== 'string', String(f));
  assert.equal(f.requests, 1733); // 1000 reads + 732 writes + 1 flush
  assert.equal(f.reads, 1000);
  assert.equal(f.writes, 732);
  assert.equal(f.diskRequests, 1733);
  assert.equal(f.perRequest, 866 / 1733);
  assert.equal(f.dataPath, 'persistent');
  assert.equal(f.fioIos, 1732);
  assert.deepEqual(f.top[0], { name: 'epoll_pwait', calls: 563, perRequest: 563 / 1733 });
  assert.match(syscallMarkdown([f], 10), /\| xvdb \| persistent \| 1733 \(1000 \/ 732\) \| 1732 \| 866 \| \*\*0\.50\*\* \| PASS \|/);
  // a figure that cannot be made says why
  assert.match(String(syscallFigures('persistent', { before: ctlStats({ rd: 0, wr: 0 }), after: ctlStats({ rd: 1, wr: 1 }) })), /no strace summary/);
  assert.match(String(syscallFigures('persistent', { strace: STRACE_SAMPLE, before: ctlStats({ rd: 5, wr: 5 }) })), /no serve counters after/);
  assert.match(
    String(
      syscallFigures('copy', {
        strace: STRACE_SAMPLE,
        before: ctlStats({ rd: 5, wr: 5 }, { rd: 0, wr: 0 }),
        after: ctlStats({ rd: 5, wr: 5 }, { rd: 0, wr: 0 }),
      }),
    ),
    /no requests/,
  );
});

// xenstore-ls -f of a Linux 6.1 blkfront's directory with two queues, and the backend's
const xenstoreListing = (o: { queues: number; max: number; dropQueue1?: boolean; devid?: number; kind?: string }): { text: string; fe: string; be: string } => {
  const devid = o.devid ?? 51728;
  const fe = `/local/domain/1/device/vbd/${devid}`;
  const be = `/local/domain/0/backend/${o.kind ?? 'blkback'}/1/${devid}`;
  const lines = [
    `${fe}/backend = "${be}"`,
    `${fe}/backend-id = "0"`,
    `${fe}/state = "4"`,
    `${fe}/virtual-device = "${devid}"`,
    `${fe}/protocol = "x86_64-abi"`,
    `${fe}/feature-persistent = "1"`,
  ];
  if (o.queues > 1) {
    lines.push(`${fe}/multi-queue-num-queues = "${o.queues}"`);
    for (let q = 0; q < o.queues; q++) {
      if (q === 1 && o.dropQueue1 === true) continue;
      lines.push(`${fe}/queue-${q}/ring-ref = "${8 + q}"`, `${fe}/queue-${q}/event-channel = "${10 + q}"`);
    }
  } else {
    lines.push(`${fe}/ring-ref = "8"`, `${fe}/event-channel = "10"`);
  }
  lines.push(`${be}/frontend = "${fe}"`, `${be}/state = "4"`, `${be}/multi-queue-max-queues = "${o.max}"`, `${be}/max-ring-page-order = "4"`);
  return { text: lines.join('\n'), fe, be };
};

test('queues from xenstore: multi-queue-num-queues and a ring in each queue-N, or one ring at the top', () => {
  const two = xenstoreListing({ queues: 2, max: 2 });
  assert.deepEqual(queueFigures(two.text, two.fe, two.be), {
    advertised: 2,
    numQueues: 2,
    numQueuesKey: true,
    complete: 2,
    queueDirs: 2,
    frontendState: '4',
    backendState: '4',
  });
  const one = xenstoreListing({ queues: 1, max: 1 });
  assert.deepEqual(queueFigures(one.text, one.fe, one.be), {
    advertised: 1,
    numQueues: 1,
    numQueuesKey: false,
    complete: 1,
    queueDirs: 0,
    frontendState: '4',
    backendState: '4',
  });
  const broken = xenstoreListing({ queues: 2, max: 2, dropQueue1: true });
  assert.equal(queueFigures(broken.text, broken.fe, broken.be).complete, 1);
  assert.equal(expectedQueues(2, 2), 2);
  assert.equal(expectedQueues(8, 8), 4, "Linux's blkfront asks for 4 at most by default");
  assert.equal(expectedQueues(2, undefined), 1, 'a backend without multi-queue: one ring');
  assert.equal(expectedQueues(1, 4), 1);
});

/** A same-guest boot with its queues listed and both system-call windows counted. */
function sameGuestBoot(o: { xvdbPath?: string; serveMax?: number; strace?: boolean; calls?: number } = {}): BootRecord {
  const results: HarnessResult[] = [
    res({ src: 'dom0', check: 'create', guest: 'twin', ok: true }),
    res({ src: 'dom0', check: 'ctl-attach', guest: 'twin', ok: true }),
    res({ src: 'guest', check: 'xvdb', guest: 'twin', ok: true, write_cache: 'write back' }),
  ];
  const files = new Map<string, string>();
  for (const [disk, devid, kind, backend, max] of [
    ['xvda', 51712, 'vbd', 'kernel', 2],
    ['xvdb', 51728, 'blkback', 'ours', o.serveMax ?? 2],
  ] as const) {
    const l = xenstoreListing({ queues: 2, max, devid, kind });
    results.push(res({ src: 'dom0', check: 'queues', guest: 'twin', disk, backend, ok: true, frontend: l.fe, backend_path: l.be, dom0_cpus: 2 }));
    files.set(`xenstore-${disk}`, l.text);
  }
  const calls = o.calls ?? 866;
  for (const [disk, path] of [
    ['xvdb', o.xvdbPath ?? 'persistent'],
    ['xvdd', 'copy'],
  ] as const) {
    if (disk === 'xvdd')
      results.push(res({ src: 'dom0', check: 'ctl-attach-xvdd', guest: 'twin', ok: true }), res({ src: 'guest', check: 'xvdd', guest: 'twin', ok: true }));
    results.push(
      res({ src: 'guest', check: 'syscalls-fio', guest: 'twin', disk, ok: true, rc: 0 }),
      res({ src: 'dom0', check: 'syscalls', guest: 'twin', disk, ok: true, seconds: 25 }),
    );
    files.set(`syscalls-list-${disk}`, ctlList(path, 'copy'));
    files.set(`syscalls-before-${disk}`, ctlStats({ rd: 0, wr: 0 }, { rd: 0, wr: 0 }));
    files.set(
      `syscalls-after-${disk}`,
      disk === 'xvdb' ? ctlStats({ rd: 1000, wr: 732 }, { rd: 0, wr: 0 }) : ctlStats({ rd: 0, wr: 0 }, { rd: 1000, wr: 732 }),
    );
    if (o.strace !== false) files.set(`strace-${disk}`, STRACE_SAMPLE.replace(/ {7}866 /, ` ${String(calls).padStart(9)} `));
  }
  results.push(
    res({ src: 'dom0', check: 'ctl-detach-xvdd', guest: 'twin', ok: true }),
    res({ src: 'dom0', check: 'ctl-detach', guest: 'twin', ok: true }),
    res({ src: 'guest', check: 'xvdb-gone', guest: 'twin', ok: true }),
    res({ src: 'dom0', check: 'destroy', guest: 'twin', ok: true }),
    res({ src: 'dom0', check: 'serve-alive', ok: true }),
  );
  return { mode: 'same-guest', results, files, finished: true };
}
/** serveHasMaxQueues false: a serve built before multi-queue, started without --max-queues. */
const samePlan = (serveHasMaxQueues = true): BootPlan => ({
  guests: [],
  jobs: [],
  runs: {},
  bytesPerJob: new Map(),
  hotplugGuest: undefined,
  midIo: false,
  pairs: 0,
  multiQueue: { vcpus: 2, ...(serveHasMaxQueues ? { serveMaxQueues: 2 } : {}) },
  syscalls: ['persistent', 'copy'],
});

test("same-guest: each backend negotiated 2 queues, and serve's system calls per request are counted per data path", () => {
  const good = evaluateSameGuest(sameGuestBoot(), samePlan());
  assert.deepEqual(failedNames(good.checks), []);
  const names = good.checks.map((c) => c.name);
  assert.ok(names.includes("twin: xvda (xen-blkback's) negotiated 2 queues with a 2-vCPU guest"), names.join('\n'));
  assert.ok(names.includes("twin: xvdb (blkback serve's) negotiated 2 queues with a 2-vCPU guest"));
  assert.deepEqual(
    good.syscalls.map((f) => [f.disk, f.dataPath, f.requests, Number(f.perRequest.toFixed(3))]),
    [
      ['xvdb', 'persistent', 1732, 0.5],
      ['xvdd', 'copy', 1732, 0.5],
    ],
  );
  assert.deepEqual(
    good.queues.map((q) => [q.disk, q.numQueues, q.expected]),
    [
      ['xvda', 2, 2],
      ['xvdb', 2, 2],
    ],
  );

  // above the goal: reported as a miss, not a failed check (the goal is not enforced)
  const many = evaluateSameGuest(sameGuestBoot({ calls: 5196 }), samePlan());
  assert.deepEqual(failedNames(many.checks), []);
  assert.match(
    many.checks.find((c) => c.name.includes('system calls per request counted on xvdb'))?.detail ?? '',
    /^3\.00 system calls per request .*goal <= 0\.5: MISS/,
  );

  // the count missing fails; so does a disk on another path than the one it stands for
  assert.deepEqual(failedNames(evaluateSameGuest(sameGuestBoot({ strace: false }), samePlan()).checks), [
    "blkback serve's system calls per request counted on xvdb (persistent path)",
    "blkback serve's system calls per request counted on xvdd (copy path)",
  ]);
  assert.deepEqual(failedNames(evaluateSameGuest(sameGuestBoot({ xvdbPath: 'copy' }), samePlan()).checks), [
    'xvdb used the persistent data path (blkback ctl list)',
  ]);
  const noWindow = sameGuestBoot();
  const cut = { ...noWindow, results: noWindow.results.filter((r) => !(r.check === 'syscalls' && r.disk === 'xvdd')) };
  assert.deepEqual(failedNames(evaluateSameGuest(cut, samePlan()).checks), ["blkback serve's system calls per request counted on xvdd (copy path)"]);

  // serve that ignored --max-queues (advertises 1: one ring) fails its check; the kernel's stands
  assert.deepEqual(failedNames(evaluateSameGuest(sameGuestBoot({ serveMax: 1 }), samePlan()).checks), [
    "twin: xvdb (blkback serve's) negotiated 1 queue with a 2-vCPU guest",
  ]);
  // a serve without --max-queues: its disk's queues are not checked, the kernel's are
  const old = evaluateSameGuest(sameGuestBoot({ serveMax: 1 }), samePlan(false));
  assert.deepEqual(failedNames(old.checks), []);
  assert.deepEqual(
    old.queues.map((q) => q.disk),
    ['xvda'],
  );
  // no listing at all: missing fails
  const boot = sameGuestBoot();
  const gone = { ...boot, files: new Map([...boot.files].filter(([name]) => name !== 'xenstore-xvda')) };
  assert.deepEqual(failedNames(evaluateSameGuest(gone, samePlan()).checks), ["twin: xvda (xen-blkback's) negotiated its queues"]);
});

test("CPU per I/O per backend: dom0 busy CPUs times the run's seconds over its I/Os, pairs and their median", () => {
  const fig = (guest: string, ios: number, seconds: number): FioFigures => ({
    guest,
    job: 'randw',
    run: 1,
    jobs: 4,
    writeMBps: 1,
    writeIops: 0,
    verifyMBps: 0,
    writeBytes: 0,
    verifyBytes: 0,
    errors: 0,
    ios,
    seconds,
  });
  const cpu = (guest: string, dom0Busy: number, serve: number): JobCpu => ({
    guest,
    job: 'randw',
    run: 1,
    seconds: 8,
    dom0Busy,
    steal: 0,
    serve,
    serveUser: 0,
    serveSys: 0,
    mainThread: 0,
    target: 0,
  });
  const fio = [fig('kernel-1', 1000, 10), fig('ours-1', 1000, 8), fig('ours-2', 2000, 10), fig('kernel-2', 2000, 10), fig('kernel-3', 500, 10)];
  const rows = cpuPerIoRows(fio, [cpu('kernel-1', 0.5, 0), cpu('ours-1', 1, 0.75), cpu('ours-2', 1, 0.5), cpu('kernel-2', 0.4, 0), cpu('kernel-3', 1, 0)]);
  // kernel-1: 0.5 CPUs x 10 s / 1000 I/Os = 5 ms; ours-1: 1 x 8 / 1000 = 8 ms (serve 6); pair 3 has no ours run
  assert.deepEqual(
    rows.map((r) => [r.pair, r.kernelMs, r.oursMs, r.serveMs, r.ratio]),
    [
      [1, 5, 8, 6, 1.6],
      [2, 2, 5, 2.5, 2.5],
      [0, 3.5, 6.5, 4.25, 2.05],
    ],
  );
  assert.match(cpuPerIoMarkdown(rows), /\| randw \| median \| 3\.50 \| 6\.50 \| 4\.25 \| \*\*2\.05\*\* \|/);
  assert.deepEqual(
    cpuPerIoRows([fig('kernel-1', 1000, 10), { ...fig('ours-1', 1000, 10), ios: 0 }], [cpu('kernel-1', 1, 0), cpu('ours-1', 1, 1)]),
    [],
    'no I/O count: no row',
  );
  assert.equal(fioFigures('kernel-1', 'randw', 1, fioRunJson(), 12.5).seconds, 12.5);
  assert.equal(fioFigures('kernel-1', 'randw', 1, JSON.stringify({ jobs: [{ write: { total_ios: 16 }, read: { total_ios: 16 } }] })).ios, 32);
});

test("same-guest's configuration reaches dom0, and the scripts parse", (t) => {
  const config = configScript({
    mode: 'same-guest',
    pairs: 1,
    diskMiB: 64,
    disk2MiB: 16,
    guestMemMiB: 512,
    guests: [],
    runs: {},
    midIo: false,
    controlSocket: '/run/blkback/control.sock',
    chain: 'none',
    twinVcpus: 2,
    twinCap: 100,
    serveMaxQueues: 2,
    syscalls: ['persistent', 'copy'],
    syscallSeconds: 10,
  });
  for (const line of ['TWIN_VCPUS=2', 'TWIN_CAP=100', 'SERVE_MAX_QUEUES=2', "SYSCALLS='persistent copy'", 'SYSCALL_SECONDS=10'])
    assert.ok(config.split('\n').includes(line), line);
  assert.ok(
    configScript({
      mode: 'kernel',
      pairs: 0,
      diskMiB: 64,
      disk2MiB: 16,
      guestMemMiB: 512,
      guests: ['pv'],
      runs: {},
      midIo: false,
      controlSocket: '/x',
      chain: 'none',
    }).includes('TWIN_VCPUS=1'),
  );
  if (stopIfMissing(t, missingTools(['bash', 'busybox'], 'bash busybox'))) return;
  const scripts = join(repo, 'src/xen-tcg/scripts');
  assert.equal(spawnSync('bash', ['-n', join(scripts, 'dom0-init.sh')], { encoding: 'utf8' }).stderr, '');
  assert.equal(spawnSync('busybox', ['sh', '-n', join(scripts, 'domu-init.sh')], { encoding: 'utf8' }).stderr, '');
});
