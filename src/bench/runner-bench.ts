// `blkback bench --suite runner`: the fio runner's own cost. One job (4 KiB random reads, QD 256,
// time based) run by our bare runner on a null disk that leaves read buffers untouched, and by real
// fio with its null engine, taking turns, the first rotating with the round (rotation.ts). The
// figure is I/Os per CPU-second (IOPS per core) of each process, and their ratio: with no storage
// behind either, all that is measured is the I/O loop, the random offsets and the latency
// accounting - full on both sides: our runner times slat, clat and lat of every I/O into fio's
// histograms (it has no gtod_reduce), and the job leaves fio's own defaults, which do the same.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createNullDisk } from '../block/null.ts';
import { runFio } from '../fio/session.ts';
import { machineInfo } from './machine.ts';
import type { MachineInfo } from './machine.ts';
import { fioRuntime } from '../reproduce/fio-runtime.ts';
import { orderLine, rotation } from '../reproduce/rotation.ts';

const run = promisify(execFile);

export const RUNNER_ACCOUNTING = 'full on both: slat, clat and lat of every I/O into latency histograms (our runner always; fio by its defaults)';

export interface RunnerBenchOptions {
  /** time_based runtime of each run, seconds. */
  readonly seconds: number;
  /** Rounds; in each, our runner and fio take turns, the first rotating with the round. */
  readonly rounds: number;
  readonly progress: (line: string) => void;
}

export type RunnerPath = 'runner' | 'fio-null';

export interface RunnerBenchResult {
  path: RunnerPath;
  round: number;
  /** 1-based place in its round's turn. */
  position: number;
  /** Reads completed in the measured period. */
  ios: number;
  /** Wall time of the measured period (the job's runtime), seconds. */
  wallSeconds: number;
  iops: number;
  /** CPU-seconds (user + system) of the whole process: ours from process.cpuUsage(), fio's from its rusage once reaped. */
  cpuSeconds: number;
  /** ios / cpuSeconds: IOPS per fully used core. */
  iopsPerCore: number;
}

export interface RunnerBenchReport {
  suite: 'runner';
  machine: MachineInfo;
  /** The job file both ran (ours parsed by the project's job-file parser, fio's by fio). */
  job: string;
  seconds: number;
  rounds: number;
  /** How fio was measured, or why it was not. */
  fio: string;
  /** What each path accounts for per I/O (equal on both). */
  accounting: string;
  results: RunnerBenchResult[];
  /** Mean over rounds of IOPS per core, and runner/fio (the goal is at least 0.9, as fio). */
  summary: { runnerIopsPerCore: number; fioIopsPerCore: number | null; ratio: number | null };
}

/** The job, as a job file's text: the same bytes go to our parser and to fio. */
export function runnerJobText(seconds: number): string {
  return [
    "; blkback bench --suite runner: the runner's own cost, no storage behind it",
    '[runner-null]',
    'ioengine=null',
    'rw=randread',
    'bs=4k',
    'iodepth=256',
    'size=1g',
    'time_based=1',
    `runtime=${fioRuntime(seconds)}`,
    '',
  ].join('\n');
}

export function fioUnavailable(): string | null {
  try {
    execFileSync('fio', ['--version'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'fio is not installed';
  }
}

export async function runRunnerBench(options: RunnerBenchOptions): Promise<RunnerBenchReport> {
  const { seconds, rounds } = options;
  const text = runnerJobText(seconds);
  const fioMissing = fioUnavailable();
  const dir = mkdtempSync(join(tmpdir(), 'blkback-runner-bench-'));
  const jobPath = join(dir, 'runner-null.fio');
  writeFileSync(jobPath, text);
  const results: RunnerBenchResult[] = [];
  try {
    const paths: RunnerPath[] = fioMissing === null ? ['runner', 'fio-null'] : ['runner'];
    for (let round = 1; round <= rounds; round++) {
      const order = rotation(paths, round);
      options.progress(`[runner] path order, ${orderLine(round, order)}`);
      for (const [i, path] of order.entries()) {
        options.progress(`[runner ${round}/${rounds}] ${path === 'runner' ? 'blkback runner, null disk' : 'fio --ioengine=null'}`);
        const r = path === 'runner' ? await measureRunner(jobPath, text) : await measureFio(jobPath);
        results.push({ path, round, position: i + 1, ...r });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const per = (path: RunnerBenchResult['path']): number | null => {
    const list = results.filter((r) => r.path === path);
    return list.length === 0 ? null : list.reduce((a, r) => a + r.iopsPerCore, 0) / list.length;
  };
  const ours = per('runner') ?? 0;
  const theirs = per('fio-null');
  return {
    suite: 'runner',
    machine: machineInfo(),
    job: text,
    seconds,
    rounds,
    fio: fioMissing ?? "fio --output-format=json on the same job file (ioengine=null); CPU from the reaped child's rusage",
    accounting: RUNNER_ACCOUNTING,
    results,
    summary: { runnerIopsPerCore: ours, fioIopsPerCore: theirs, ratio: theirs === null || theirs === 0 ? null : ours / theirs },
  };
}

/** A run's figures, before its place in the round is known. */
type Measured = Omit<RunnerBenchResult, 'path' | 'round' | 'position'>;

async function measureRunner(path: string, text: string): Promise<Measured> {
  const device = createNullDisk(1 << 30, { name: 'null:1G (buffers untouched)', touchBuffers: false });
  const cpu0 = process.cpuUsage();
  const outcome = await runFio({ files: [{ path, text }], target: { kind: 'bare', device }, logDir: null });
  const cpu = process.cpuUsage(cpu0);
  const r = outcome.results[0];
  if (r === undefined) throw new Error('bench: the runner produced no result');
  if (r.error !== 0) throw new Error(`bench: the runner failed: ${r.errorMessage}`);
  const ios = r.dirs[0].totalIos;
  const wallSeconds = r.runtimeMs / 1000;
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  return { ios, wallSeconds, iops: ios / wallSeconds, cpuSeconds, iopsPerCore: ios / cpuSeconds };
}

async function measureFio(path: string): Promise<Measured> {
  const before = reapedChildCpu();
  const { stdout } = await run('fio', ['--output-format=json', path], { maxBuffer: 16 << 20 });
  const after = reapedChildCpu();
  const job = parseFioJson(stdout)[0];
  if (job === undefined) throw new Error('bench: fio printed no job');
  const ios = job.read.total_ios;
  const wallSeconds = job.job_runtime / 1000;
  // The reaped-children counters tick at 100 Hz; where /proc is missing, fio's own per-job CPU.
  const cpuSeconds = before !== null && after !== null && after > before ? after - before : ((job.usr_cpu + job.sys_cpu) / 100) * wallSeconds;
  return { ios, wallSeconds, iops: ios / wallSeconds, cpuSeconds, iopsPerCore: ios / cpuSeconds };
}

/** CPU-seconds (user + system) of this process's children that have been waited for (/proc/self/stat cutime + cstime). */
export function reapedChildCpu(): number | null {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    // Fields after "(comm) ": state is [0]; cutime and cstime are fields 16 and 17 of stat(5), [13] and [14] here.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[13]) + Number(f[14]);
    return Number.isFinite(ticks) ? ticks / 100 : null; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

export interface FioJsonDir {
  io_bytes: number;
  total_ios: number;
  bw_bytes: number;
  iops: number;
}

export interface FioJsonJob {
  jobname: string;
  error: number;
  job_runtime: number;
  usr_cpu: number;
  sys_cpu: number;
  read: FioJsonDir;
  write: FioJsonDir;
}

/** fio's --output-format=json (it may print notes before the document). */
export function parseFioJson(stdout: string): FioJsonJob[] {
  const at = stdout.indexOf('{');
  if (at < 0) throw new Error(`bench: fio printed no JSON: ${stdout.slice(0, 200)}`);
  return (JSON.parse(stdout.slice(at)) as { jobs: FioJsonJob[] }).jobs;
}

/** The table for docs/benchmarks.md. */
export function formatRunnerTable(report: RunnerBenchReport): string {
  const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const rows = ['| round | order | path | IOPS | CPU s | wall s | IOPS per core |', '|---:|---:|---|---:|---:|---:|---:|'];
  for (const r of report.results)
    rows.push(
      `| ${r.round} | ${r.position} | ${r.path === 'runner' ? 'blkback runner (null disk)' : 'fio --ioengine=null'} | ${fmt(r.iops)} | ${fmt(r.cpuSeconds, 2)} | ${fmt(r.wallSeconds, 2)} | ${fmt(r.iopsPerCore)} |`,
    );
  const s = report.summary;
  rows.push('');
  rows.push(`accounting: ${report.accounting}; path order rotated each round`);
  rows.push(
    `runner ${fmt(s.runnerIopsPerCore)} IOPS/core, fio ${s.fioIopsPerCore === null ? '–' : fmt(s.fioIopsPerCore)} IOPS/core: ratio ${s.ratio === null ? '– (' + report.fio + ')' : `${fmt(s.ratio, 2)}x`} (goal >= 0.9x, issue 16)`,
  );
  return rows.join('\n');
}
