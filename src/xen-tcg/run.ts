// `npm run test:xen` and `blkback reproduce --xen`: real Xen under QEMU's software emulation, Linux
// PV and PVH guests with their unmodified xen-blkfront, served by the kernel's xen-blkback and by
// `blkback serve`. See docs/xen-tcg.md. Usage:
//   node dist/src/xen-tcg/run.js [--mode kernel|ours|both|paired|same-guest] [--chain iscsi] [--out DIR] ...
// Exit 0: every check passed, or failed only in a --report-only guest; 1: a check failed; 2: could not run.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { evaluateBoot, evaluatePaired, evaluateSameGuest, failures, pairedGuests } from './checks.ts';
import type { BootPlan, Check, FioFigures, Mode, SameGuestFigures } from './checks.ts';
import { ConsoleParser } from './console.ts';
import type { HarnessResult } from './console.ts';
import { deriveGuestJob, seedNumjobs } from './fio-jobs.ts';
import { DEFAULT_CACHE, ensureImages } from './images.ts';
import type { Images } from './images.ts';
import { buildPayload } from './payload.ts';
import type { PayloadConfig } from './payload.ts';
import { bootXen, waitForQuiet } from './qemu.ts';
import { comparisonMarkdown, comparisonRows, cpuPerIoMarkdown, cpuPerIoRows, pairedMarkdown, pairedRows, writePlots } from './report.ts';
import { queueLine } from './queues.ts';
import { SYSCALL_GOAL, syscallLine, syscallMarkdown } from './syscalls.ts';
import type { SyscallPath } from './syscalls.ts';
import { cpuDuringJobs, cpuMarkdown } from './cpu.ts';
import type { JobCpu } from './cpu.ts';
import type { BwLogs } from './report.ts';

const QUIET_FLAG = '/tmp/blkback-quiet';
const GOAL = 0.9;
// QEMU 7.2's TCG emulation of AVX/AVX2 (new in 7.2) corrupted user space in dom0 and guests here:
// bash printing a mangled command name, xl's inflate failing, init segfaulting. glibc picks its
// AVX2 string functions when the CPU has them, so the emulated CPU does not offer them.
const DEFAULT_CPU = 'max,avx=off,avx2=off';
const SEED_JOBS = ['randw', 'iometer'] as const;
/** --mode same-guest: the twin guest's vCPUs (Linux's blkfront then asks each backend for 2 queues). */
const DEFAULT_VCPUS = 2;
const DEFAULT_CAP = 100;
const SYSCALL_PATHS: readonly SyscallPath[] = ['persistent', 'copy'];

const help = `test:xen — blkback against real Xen 4.17 under QEMU (TCG), PV and PVH guests

usage: node dist/src/xen-tcg/run.js [--mode kernel|ours|both|paired|same-guest] [--chain none|iscsi] [--report-only TAGS] [--dist DIR] [--out DIR] [--cache DIR] [--keep]

  --mode      kernel: Linux's xen-blkback serves the guests; ours: blkback serve does (xen-blkback
              not loaded); both (default): one boot each, then the comparison table and plots;
              paired: one boot in which the two backends take turns serving a PV guest that runs
              the jobs (xen-blkback loaded and unloaded, serve started and stopped): the
              comparison without the emulator's boot-to-boot speed in it; same-guest: one
              boot, one PV guest with xvda from xen-blkback and xvdb from blkback serve
              (--backend-kind blkback, attached with blkback ctl), each job run on one disk then
              the other: the comparison without the guest-to-guest spread either
  --pairs     turns of each backend in --mode paired and same-guest (default 3)
  --vcpus     --mode same-guest: the guest's vCPUs (default ${DEFAULT_VCPUS}; 1 to 4): Linux's blkfront asks
              for a queue per vCPU; serve gets --max-queues max(2, N), and each disk's queues are
              checked in xenstore. --guest-cap: with several vCPUs, the most of one emulated CPU
              the guest may use in all, in percent (Xen credit2's cap; default ${DEFAULT_CAP}, as
              much as a 1-vCPU guest can take; 0 for none, which lets the guest starve dom0)
  --syscalls  --mode same-guest: the data paths whose system calls per request are counted in dom0
              (strace -c -f on serve during a short 4 KiB QD 32 job, after the pairs): persistent
              (xvdb), copy (xvdd, the frontend without persistent grants); default persistent,copy;
              none to skip. --syscall-seconds: each of the job's two phases (default 10)
  --chain     none (default): the disks are loop devices on files in dom0's RAM; iscsi (with
              --mode same-guest): the seed's chain, the disks are LUNs of 'blkback iscsi-target'
              in dom0 (files in RAM) that dom0's Linux initiator (open-iscsi) logs in to over
              loopback: xvda is the SCSI disk of LUN 0 served by xen-blkback, xvdb LUN 1's served
              by blkback serve (phy:), and xvdc LUN 2 served by serve's own initiator (iscsi://)
  --dist      the compiled blkback to put in dom0 (default: <repo>/dist)
  --repo      the package: seed jobs, package.json, node_modules (default: the one this file is in)
  --out       report directory (default ./xen-report): console logs, results.json, comparison
  --cache     image cache (default $BLKBACK_XEN_CACHE or ${DEFAULT_CACHE})
  --disk-mib  backing disk size in MiB (default 128); --fio-mib: MiB randw writes (96; iometer a third)
  --runs      runs of each fio job in the PV guest (default 3, as the seed's mail; the PVH guest: 1);
              the comparison takes each backend's median
  --timeout   seconds per boot before QEMU is killed (default 1800)
  --cpu       QEMU's -cpu (default ${DEFAULT_CPU})
  --report-only  guests (tags, comma-separated, e.g. pvh) whose failed checks are printed and kept
              in results.json but do not fail the run (default: none; every failure fails it)
  --keep      keep the work directory (payload, initramfs)
  --replay    no boot: check again the <mode>-console.log files already in --out

exit status: 0 every check passed (or failed only in a --report-only guest), 1 a check failed,
2 it could not run (no dist, no serve, images failed to build, bad options)
`;

/** The package this file belongs to (dist/src/xen-tcg/run.js is three levels below it). */
function packageDir(given: string | undefined): string {
  const dir = given !== undefined ? resolve(given) : resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
  if (!existsSync(join(dir, 'jobs/randw.fio'))) throw new Error(`${dir} has no jobs/randw.fio: give the blkback package with --repo`);
  return dir;
}

interface ModeRun {
  readonly mode: Mode;
  readonly checks: Check[];
  readonly fio: FioFigures[];
  readonly bwLogs: BwLogs[];
  readonly seconds: number;
  readonly phases: { at: number; text: string }[];
  readonly results: HarnessResult[];
  /** dom0's CPU during each fio job (cpu.ts). */
  readonly cpu: JobCpu[];
  /** --mode same-guest: queues negotiated and serve's system calls per request. */
  readonly sameGuest?: SameGuestFigures;
}

/** The harness, with its command-line options (see help); resolves to the exit status. */
export async function runXenHarness(argv: readonly string[], log: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      mode: { type: 'string', default: 'both' },
      dist: { type: 'string' },
      repo: { type: 'string' },
      out: { type: 'string', default: 'xen-report' },
      cache: { type: 'string', default: process.env.BLKBACK_XEN_CACHE ?? DEFAULT_CACHE },
      'disk-mib': { type: 'string', default: '128' },
      'fio-mib': { type: 'string', default: '96' },
      runs: { type: 'string', default: '3' },
      pairs: { type: 'string', default: '3' },
      chain: { type: 'string', default: 'none' },
      vcpus: { type: 'string', default: String(DEFAULT_VCPUS) },
      'guest-cap': { type: 'string', default: String(DEFAULT_CAP) },
      syscalls: { type: 'string', default: SYSCALL_PATHS.join(',') },
      'syscall-seconds': { type: 'string', default: '10' },
      timeout: { type: 'string', default: '1800' },
      'report-only': { type: 'string', default: '' },
      cpu: { type: 'string', default: DEFAULT_CPU },
      keep: { type: 'boolean', default: false },
      replay: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    log(help);
    return 0;
  }
  const modes: Mode[] =
    values.mode === 'both'
      ? ['kernel', 'ours']
      : values.mode === 'kernel' || values.mode === 'ours' || values.mode === 'paired' || values.mode === 'same-guest'
        ? [values.mode]
        : [];
  if (modes.length === 0) throw new Error(`--mode ${values.mode}: expected kernel, ours, both, paired or same-guest`);
  const pairs = Number(values.pairs);
  if (!Number.isInteger(pairs) || pairs < 1 || pairs > 9) throw new Error(`--pairs ${values.pairs}: expected a whole number from 1 to 9`);
  if (values.chain !== 'none' && values.chain !== 'iscsi') throw new Error(`--chain ${values.chain}: expected none or iscsi`);
  if (values.chain === 'iscsi' && values.mode !== 'same-guest')
    throw new Error('--chain iscsi goes with --mode same-guest (both backends serve the LUNs to one guest)');
  const chain = values.chain;
  const vcpus = Number(values.vcpus);
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 4) throw new Error(`--vcpus ${values.vcpus}: expected a whole number from 1 to 4`);
  const guestCap = Number(values['guest-cap']);
  if (!Number.isInteger(guestCap) || guestCap < 0 || guestCap > 400)
    throw new Error(`--guest-cap ${values['guest-cap']}: expected a whole number from 0 to 400 (percent of one CPU)`);
  const syscallPaths = values.syscalls === 'none' ? [] : values.syscalls.split(',').filter((p) => p !== '');
  for (const p of syscallPaths)
    if (!SYSCALL_PATHS.includes(p as SyscallPath)) throw new Error(`--syscalls ${values.syscalls}: expected persistent, copy (comma-separated) or none`);
  const syscallSeconds = Number(values['syscall-seconds']);
  if (!Number.isInteger(syscallSeconds) || syscallSeconds < 2 || syscallSeconds > 120)
    throw new Error(`--syscall-seconds ${values['syscall-seconds']}: expected a whole number from 2 to 120`);
  const repo = packageDir(values.repo);
  const scripts = join(repo, 'src/xen-tcg/scripts');
  const dist = resolve(values.dist ?? join(repo, 'dist'));
  const out = resolve(values.out);
  const diskMiB = Number(values['disk-mib']);
  const fioMiB = Number(values['fio-mib']);
  if (!(fioMiB <= diskMiB - 1)) throw new Error(`--fio-mib ${fioMiB} must leave the backing disk's last MiB (the marker) alone`);
  const pvRuns = Number(values.runs);
  if (!Number.isInteger(pvRuns) || pvRuns < 1 || pvRuns > 9) throw new Error(`--runs ${values.runs}: expected a whole number from 1 to 9`);
  const reportOnly = new Set(values['report-only'].split(',').filter((t) => t !== ''));
  for (const tag of reportOnly)
    if (!/^[\w-]+$/.test(tag)) throw new Error(`--report-only ${values['report-only']}: expected guest tags such as pvh, comma-separated`);
  mkdirSync(out, { recursive: true });
  const t0 = Date.now();
  const say = (line: string): void => {
    log(
      `[${Math.round((Date.now() - t0) / 1000)
        .toString()
        .padStart(5)}s] ${line}`,
    );
  };

  // host tools (qemu, debootstrap, cpio, fio): installed from Debian when missing
  execFileSync('bash', [join(scripts, 'images.sh'), 'tools'], { stdio: 'inherit' });
  if (!existsSync(join(dist, 'src/cli/main.js'))) throw new Error(`${dist}/src/cli/main.js is missing: build first (npx tsc -p . --outDir DIR)`);
  let serveHasMaxQueues = false;
  if (modes.some((m) => m !== 'kernel')) {
    const probe = spawnSync(process.execPath, [join(dist, 'src/cli/main.js'), 'serve', '--help'], { encoding: 'utf8', timeout: 30_000 });
    if (probe.status !== 0) {
      throw new Error(`mode=${modes.join(',')} needs 'blkback serve', and ${dist} has none: ${(probe.stderr || probe.stdout).split('\n')[0]}`);
    }
    if (modes.includes('same-guest') && !probe.stdout.includes('--backend-kind')) {
      throw new Error(`mode=same-guest needs 'blkback serve --backend-kind', and ${dist}'s serve has none: rebuild`);
    }
    serveHasMaxQueues = probe.stdout.includes('--max-queues');
  }
  // serve's queues are checked only where it has the option (a build from before multi-queue has not)
  const serveMaxQueues = serveHasMaxQueues ? Math.max(2, vcpus) : undefined;
  if (modes.includes('same-guest') && serveMaxQueues === undefined) say(`${dist}'s serve has no --max-queues: its disk's queues are not checked`);

  // the seed's jobs, derived for the guest (the seed files stay as they are)
  const engines = spawnSync('fio', ['--enghelp'], { encoding: 'utf8' }).stdout ?? '';
  const ioengine = /^\s*libaio\s*$/m.test(engines) ? 'libaio' : 'psync';
  const jobs = new Map<string, string>();
  const bytesPerJob = new Map<string, number>();
  const work = mkdtempSync(join(tmpdir(), 'blkback-xen-'));
  // also on SIGINT/SIGTERM (qemu.ts exits the process after killing QEMU's group)
  const cleanWork = (): void => {
    if (!values.keep) rmSync(work, { recursive: true, force: true });
  };
  process.on('exit', cleanWork);
  // a signal while no QEMU runs (image build, waiting for quiet) must clean up too
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));
  for (const name of SEED_JOBS) {
    const seed = readFileSync(join(repo, 'jobs', `${name}.fio`), 'utf8');
    // iometer's small blocks (about 11 KiB on average) cost several times more per byte than
    // randw's 64 KiB under emulation: it gets a third of the bytes, so the two take similar time
    const mib = name === 'iometer' ? Math.max(2, Math.floor(fioMiB / 3)) : fioMiB;
    const perJob = Math.floor(mib / seedNumjobs(seed)) * 1048576;
    // runtime is only a cap; it must leave the verify phase time to read everything back
    const text = deriveGuestJob(seed, { bytesPerJob: perJob, runtimeSeconds: 600, ioengine, source: `jobs/${name}.fio` });
    const path = join(work, `${name}.fio`);
    writeFileSync(path, text);
    const parse = spawnSync('fio', ['--parse-only', path], { encoding: 'utf8' });
    if (parse.status !== 0) throw new Error(`fio --parse-only rejects the derived ${name}.fio: ${parse.stderr}`);
    writeFileSync(join(out, `${name}.guest.fio`), text);
    jobs.set(name, text);
    bytesPerJob.set(name, perJob);
  }
  say(`derived job files (ioengine=${ioengine}, fio --parse-only ok): ${[...jobs.keys()].map((j) => `${out}/${j}.guest.fio`).join(', ')}`);
  // the same probe dom0 runs at boot ("dom0: clocksource ..."), for comparison
  const probe = spawnSync(process.execPath, [join(dist, 'src/xen-tcg/cost-probe.js')], { encoding: 'utf8' });
  if (probe.status === 0) say(`this host: ${probe.stdout.trim()}`);

  const sameGuest = modes.includes('same-guest')
    ? {
        multiQueue: { vcpus, ...(serveMaxQueues === undefined ? {} : { serveMaxQueues }) },
        syscalls: syscallPaths as SyscallPath[],
      }
    : {};
  const plan: BootPlan = {
    guests: ['pv', 'pvh'],
    jobs: [...jobs.keys()],
    runs: { pv: pvRuns, pvh: 1 },
    bytesPerJob,
    hotplugGuest: 'pv',
    midIo: true,
    pairs,
    ...(chain === 'iscsi' ? { chain } : {}),
    ...sameGuest,
  };
  if (values.replay) {
    cleanWork();
    const runs = modes.map((mode) => ({
      ...evaluateConsoleLog(mode, readFileSync(join(out, `${mode}-console.log`), 'latin1'), plan, out),
      seconds: 0,
      phases: [],
    }));
    return report(runs, out, say, reportOnly, {}, syscallSeconds);
  }

  let images: Images;
  try {
    images = await ensureImages(join(scripts, 'images.sh'), values.cache, say);
  } catch (e) {
    cleanWork();
    throw e;
  }
  say(images.buildSeconds > 0 ? `images built in ${images.buildSeconds.toFixed(0)} s: ${images.dir}` : `images from cache: ${images.dir}`);

  const runs: ModeRun[] = [];
  try {
    for (const mode of modes) {
      runs.push(
        await runMode(mode, {
          images,
          plan,
          scripts,
          repo,
          dist,
          out,
          work,
          diskMiB,
          jobs,
          timeout: Number(values.timeout),
          cpu: values.cpu,
          say,
          syscallSeconds,
          guestCap,
        }),
      );
    }
  } finally {
    if (values.keep) say(`work directory kept: ${work}`);
    cleanWork();
  }

  return report(
    runs,
    out,
    say,
    reportOnly,
    { images: { dir: images.dir, key: images.key, buildSeconds: images.buildSeconds, manifest: images.manifest } },
    syscallSeconds,
  );
}

/**
 * Failures, fio figures, results.json; with both modes the comparison table and plots. The exit
 * code: 1 when a check failed outside the reportOnly guests (by tag), else 0.
 */
function report(
  runs: readonly ModeRun[],
  out: string,
  say: (line: string) => void,
  reportOnly: ReadonlySet<string>,
  extra: Record<string, unknown>,
  syscallSeconds: number,
): number {
  let failed = 0;
  let reported = 0;
  for (const run of runs) {
    const { gating, reportingOnly } = failures(run.checks, reportOnly);
    failed += gating.length;
    reported += reportingOnly.length;
    const bad = gating.length + reportingOnly.length;
    say(`mode=${run.mode}: ${run.checks.length - bad}/${run.checks.length} checks passed in ${run.seconds.toFixed(0)} s`);
    for (const c of gating) say(`  FAIL ${c.name}: ${c.detail}`);
    for (const c of reportingOnly) say(`  FAIL (reporting only: --report-only ${String(c.guest)}) ${c.name}: ${c.detail}`);
    for (const f of run.fio)
      say(
        `  fio ${f.job} in ${f.guest}${run.fio.some((x) => x.guest === f.guest && x.run > 1) ? ` run ${f.run}` : ''}: write ${f.writeMBps.toFixed(1)} MB/s (${f.writeIops.toFixed(0)} IOPS), verify ${f.verifyMBps.toFixed(1)} MB/s`,
      );
    for (const c of run.cpu) {
      const serve =
        run.mode === 'ours' || c.guest.startsWith('ours-')
          ? `, serve ${c.serve.toFixed(2)} (user ${c.serveUser.toFixed(2)}, sys ${c.serveSys.toFixed(2)}; main thread ${c.mainThread.toFixed(2)})`
          : '';
      say(
        `  cpu during fio ${c.job} in ${c.guest}${run.cpu.some((x) => x.guest === c.guest && x.run > 1) ? ` run ${c.run}` : ''}: dom0 busy ${c.dom0Busy.toFixed(2)} CPUs${serve}`,
      );
    }
    for (const q of run.sameGuest?.queues ?? [])
      say(`  queues of ${q.disk} (${q.backend === 'kernel' ? 'xen-blkback' : 'blkback serve'}): expected ${q.expected}; ${queueLine(q)}`);
    for (const f of run.sameGuest?.syscalls ?? []) say(`  system calls on ${f.disk}: ${syscallLine(f)}`);
  }
  const summary: Record<string, unknown> = {
    ...extra,
    goal: GOAL,
    reportOnly: [...reportOnly],
    failed: { gating: failed, reportingOnly: reported },
    runs: runs.map((r) => ({
      mode: r.mode,
      seconds: r.seconds,
      phases: r.phases,
      checks: r.checks,
      fio: r.fio,
      cpu: r.cpu,
      ...(r.sameGuest === undefined ? {} : r.sameGuest),
      results: r.results,
    })),
  };
  const kernel = runs.find((r) => r.mode === 'kernel');
  const ours = runs.find((r) => r.mode === 'ours');
  if (kernel !== undefined && ours !== undefined) {
    const rows = comparisonRows(kernel.fio, ours.fio);
    summary.comparison = rows;
    const cpu = cpuMarkdown(new Map(runs.map((r) => [r.mode, r.cpu])));
    const md = `${comparisonMarkdown(rows, GOAL)}\n\ndom0's CPU during each job (2-second samples; 2 vCPUs):\n\n${cpu}\n`;
    writeFileSync(join(out, 'comparison.md'), md);
    const plots = writePlots([...kernel.bwLogs, ...ours.bwLogs], out, '', { kind: 'boots', kernel: kernel.fio, ours: ours.fio });
    process.stdout.write(`\n${md}\n`);
    say(`wrote ${out}/comparison.md and ${plots.join(', ')}`);
  }
  for (const paired of runs.filter((r) => r.mode === 'paired' || r.mode === 'same-guest')) {
    const rows = pairedRows(paired.fio, Math.max(0, ...paired.fio.map((f) => Number(/^(?:kernel|ours)-(\d+)$/.exec(f.guest)?.[1] ?? 0))));
    summary[paired.mode === 'paired' ? 'paired' : 'sameGuest'] = rows;
    const cpu = cpuMarkdown(new Map([[paired.mode, paired.cpu]]));
    const how =
      paired.mode === 'paired'
        ? "One boot, one PV guest per turn, the backends taking turns (kernel, ours, then ours, kernel, ...); the median ratio is the median of the pairs' ratios."
        : "One boot, one PV guest: xvda from the kernel's xen-blkback, xvdb from blkback serve; each job on one disk then the other (kernel first, then ours first, ...) after an uncounted warm-up run on each; the median ratio is the median of the pairs' ratios.";
    const perIo = cpuPerIoRows(paired.fio, paired.cpu);
    const sections = [pairedMarkdown(rows, GOAL, how), `dom0's CPU per I/O, per backend:\n\n${cpuPerIoMarkdown(perIo)}`];
    if (paired.sameGuest !== undefined) {
      summary.cpuPerIo = perIo;
      const sys = paired.sameGuest.syscalls;
      sections.push(
        `blkback serve's system calls per request in dom0 (goal: at most ${SYSCALL_GOAL} at queue depth 32):\n\n` +
          (sys.length > 0 ? syscallMarkdown(sys, syscallSeconds) : 'Not counted in this run (--syscalls none, or the count is missing: see the checks).\n'),
      );
      summary.syscalls = sys;
      summary.queues = paired.sameGuest.queues;
    }
    sections.push(`dom0's CPU during each job (2-second samples; 2 vCPUs; serve's columns mean nothing in the kernel's turns):\n\n${cpu}\n`);
    const md = sections.join('\n\n');
    writeFileSync(join(out, `${paired.mode}.md`), md);
    const plots = writePlots(paired.bwLogs, out, `${paired.mode}-`, { kind: 'pairs', fio: paired.fio });
    process.stdout.write(`\n${md}\n`);
    say(`wrote ${out}/${paired.mode}.md and ${plots.join(', ')}`);
  }
  writeFileSync(join(out, 'results.json'), `${JSON.stringify(summary, null, 2)}\n`);
  const verdict = failed === 0 ? 'PASS' : `FAIL (${failed} checks)`;
  const aside = reported === 0 ? '' : ` (and ${reported} failed checks of --report-only guests, not counted)`;
  say(`${verdict}${aside}: results in ${out}/results.json, console logs in ${out}/<mode>-console.log`);
  return failed === 0 ? 0 : 1;
}

interface ModeContext {
  readonly images: Images;
  readonly plan: BootPlan;
  readonly scripts: string;
  readonly repo: string;
  readonly dist: string;
  readonly out: string;
  readonly work: string;
  readonly diskMiB: number;
  readonly jobs: ReadonlyMap<string, string>;
  readonly timeout: number;
  readonly cpu: string;
  readonly say: (line: string) => void;
  readonly syscallSeconds: number;
  readonly guestCap: number;
}

async function runMode(mode: Mode, c: ModeContext): Promise<ModeRun> {
  const config: PayloadConfig = {
    mode,
    diskMiB: c.diskMiB,
    disk2MiB: 16,
    guestMemMiB: 512,
    guests: c.plan.guests,
    runs: c.plan.runs,
    pairs: c.plan.pairs ?? 0,
    midIo: c.plan.midIo,
    controlSocket: '/run/blkback/control.sock',
    chain: c.plan.chain ?? 'none',
    ...(mode === 'same-guest'
      ? {
          twinVcpus: c.plan.multiQueue?.vcpus ?? 1,
          twinCap: c.guestCap,
          ...(c.plan.multiQueue?.serveMaxQueues === undefined ? {} : { serveMaxQueues: c.plan.multiQueue.serveMaxQueues }),
          syscalls: c.plan.syscalls ?? [],
          syscallSeconds: c.syscallSeconds,
        }
      : {}),
  };
  const modeWork = join(c.work, mode);
  mkdirSync(modeWork, { recursive: true });
  const payload = buildPayload({ scriptsDir: c.scripts, repoDir: c.repo, distDir: c.dist, config, jobs: c.jobs }, modeWork);
  const initrd = join(modeWork, 'dom0-run.cpio');
  copyFileSync(c.images.dom0Cpio, initrd);
  await pipeline(createReadStream(payload), createWriteStream(initrd, { flags: 'a' }));

  await waitForQuiet(QUIET_FLAG, c.say);
  const logPath = join(c.out, `${mode}-console.log`);
  writeFileSync(logPath, '');
  const parser = new ConsoleParser();
  const phases: { at: number; text: string }[] = [];
  let finished = false;
  const bootStart = Date.now();
  const at = (): number => (Date.now() - bootStart) / 1000;
  c.say(`mode=${mode}: booting Xen under QEMU (TCG), console in ${logPath}`);
  const handle = (events: ReturnType<ConsoleParser['push']>): void => {
    for (const e of events) {
      if (e.kind === 'phase') {
        phases.push({ at: at(), text: e.text });
        if (e.text === 'dom0: done') finished = true;
        process.stdout.write(`[${at().toFixed(0).padStart(5)}s] ${mode}: ${e.text}\n`);
      } else if (e.kind === 'result') {
        if (e.result.ok === false) process.stdout.write(`[${at().toFixed(0).padStart(5)}s] ${mode}: not ok: ${JSON.stringify(e.result)}\n`);
      } else if (e.kind === 'bad-result') {
        process.stdout.write(`[${at().toFixed(0).padStart(5)}s] ${mode}: unreadable result (${e.error}): ${e.text}\n`);
      }
    }
  };
  const outcome = await bootXen({
    xen: c.images.xen,
    vmlinuz: c.images.vmlinuz,
    initrd,
    timeoutSeconds: c.timeout,
    cpu: c.cpu,
    onOutput: (chunk) => {
      appendFileSync(logPath, chunk, 'latin1');
      handle(parser.push(chunk));
      // with noreboot Xen halts when dom0 dies, and QEMU would sit there until the timeout
      return /Hardware Dom0 crashed|Hardware Dom0 halted/.test(chunk) && !finished;
    },
  });
  handle(parser.end());
  const how = outcome.timedOut
    ? `killed after the ${c.timeout} s timeout`
    : outcome.stopped
      ? 'stopped: dom0 crashed'
      : `exited (${outcome.exitCode ?? outcome.signal})`;
  c.say(`mode=${mode}: QEMU ${how} after ${outcome.seconds.toFixed(0)} s`);
  rmSync(initrd, { force: true });

  return { ...evaluateConsoleLog(mode, readFileSync(logPath, 'latin1'), c.plan, c.out), seconds: outcome.seconds, phases };
}

/** The checks of one boot from its saved console log (after a boot, and for --replay). */
function evaluateConsoleLog(mode: Mode, text: string, plan: BootPlan, out: string): Omit<ModeRun, 'seconds' | 'phases'> {
  const parser = new ConsoleParser();
  const results: HarnessResult[] = [];
  const files = new Map<string, string>();
  const unreadable: Unreadable[] = [];
  let finished = false;
  for (const e of [...parser.push(text), ...parser.end()]) {
    if (e.kind === 'result') results.push(e.result);
    else if (e.kind === 'bad-result') unreadable.push({ source: e.source, text: e.text });
    else if (e.kind === 'file') files.set(e.name, e.text);
    else if (e.kind === 'phase' && e.text === 'dom0: done') finished = true;
  }
  replayGuestConsoles(results, files, unreadable);

  // fio's JSON and logs, ctl output, guests' consoles: files beside the console log
  const filesDir = join(out, `${mode}-files`);
  mkdirSync(filesDir, { recursive: true });
  for (const [name, body] of files) writeFileSync(join(filesDir, name.replace(/[^\w.-]/g, '_')), `${body}\n`);

  const boot = { mode, results, files, finished, unreadable };
  const same = mode === 'same-guest' ? evaluateSameGuest(boot, plan) : undefined;
  const { checks, fio } = same ?? (mode === 'paired' ? evaluatePaired(boot, plan) : evaluateBoot(boot, plan));
  const bwLogs: BwLogs[] = [];
  if (mode === 'paired' || mode === 'same-guest') {
    for (const { tag, backend, pair } of pairedGuests(plan.pairs ?? 0)) {
      for (const job of plan.jobs) {
        const prefix = `bwlog-${tag}-${job}-1-`;
        bwLogs.push({
          mode: backend,
          guest: mode === 'paired' ? 'pv' : backend === 'kernel' ? 'xvda' : 'xvdb',
          job,
          run: pair,
          files: [...files].filter(([n]) => n.startsWith(prefix)).map(([, t]) => t),
        });
      }
    }
    return {
      mode,
      checks,
      fio,
      bwLogs,
      results,
      cpu: cpuDuringJobs(text),
      ...(same === undefined ? {} : { sameGuest: { queues: same.queues, syscalls: same.syscalls } }),
    };
  }
  for (const guest of plan.guests) {
    for (let run = 1; run <= (plan.runs[guest] ?? 1); run++) {
      for (const job of plan.jobs) {
        const prefix = `bwlog-${guest}-${job}-${run}-`;
        bwLogs.push({ mode, guest, job, run, files: [...files].filter(([n]) => n.startsWith(prefix)).map(([, t]) => t) });
      }
    }
  }
  return { mode, checks, fio, bwLogs, results, cpu: cpuDuringJobs(text) };
}

type Unreadable = { readonly source: string; readonly text: string };

/**
 * dom0 prints each guest's whole console log before destroying it (file console-<tag>). Where the
 * live relay lost lines, that copy is the record: its results, unreadable result lines and files
 * replace the live ones.
 */
function replayGuestConsoles(results: HarnessResult[], files: Map<string, string>, unreadable: Unreadable[]): void {
  for (const [name, text] of [...files]) {
    const m = /^console-(\S+)$/.exec(name);
    if (m === null) continue;
    const tag = m[1] as string;
    const parser = new ConsoleParser();
    const events = [
      ...parser.push(
        `${text
          .split('\n')
          .map((l) => `G ${tag}| ${l}`)
          .join('\n')}\n`,
      ),
      ...parser.end(),
    ];
    const replayed = events.flatMap((e) => (e.kind === 'result' ? [e.result] : []));
    if (replayed.length === 0) continue;
    for (let i = unreadable.length - 1; i >= 0; i--) if ((unreadable[i] as Unreadable).source === `guest:${tag}`) unreadable.splice(i, 1);
    for (const e of events) if (e.kind === 'bad-result') unreadable.push({ source: e.source, text: e.text });
    // one guest may report under several tags (--mode same-guest: kernel-1, ours-1, ...)
    const tags = new Set([tag, ...replayed.map((r) => r.guest)]);
    for (let i = results.length - 1; i >= 0; i--) {
      const r = results[i] as HarnessResult;
      if (r.src === 'guest' && tags.has(r.guest)) results.splice(i, 1);
    }
    results.push(...replayed);
    for (const e of events) if (e.kind === 'file') files.set(e.name, e.text);
  }
}

// run as a program (npm run test:xen, CI); `blkback reproduce --xen` imports runXenHarness
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runXenHarness(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`test:xen: ${(e as Error).message}\n`);
      process.exit(2);
    },
  );
}
