// `blkback bench --suite seed`: the number that matters. The seed's two job files (jobs/randw.fio,
// jobs/iometer.fio) run three ways over one store:
//   guest  `blkback fio`: a simulated guest -> blkfront -> ring -> blkback -> the store
//   bare   the same runner straight on the store, no guest
//   fio    real fio 3.33 (libaio, direct=1) on the store, on derived copies of the job files (deriveFioJob)
// As root the store is a loop device (direct-io=on) over a /dev/shm file of random bytes: the guest
// opens it as a `phy:` disk, bare opens it with O_DIRECT, fio gets derived job copies naming it.
// Otherwise the store is an in-process RAM disk and the fio path is skipped (and said so).
// The paths take turns within each round, the first rotating with the round (rotation.ts), so drift
// in a shared machine's load hits them alike. Accounting is equal, and full, on every path: our
// runner times slat, clat and lat of every I/O (it has no gtod_reduce), and fio runs the seed's jobs,
// which leave its latency accounting on.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { createRamDisk } from '../block/ram.ts';
import { openBlockDevice } from '../stores/open.ts';
import type { BlockDevice } from '../block/types.ts';
import { runFio } from '../fio/session.ts';
import type { FioTarget } from '../fio/session.ts';
import type { JobResult } from '../fio/stats.ts';
import { SimHost } from '../sim-host/host.ts';
import type { GuestConfig } from '../sim-host/host.ts';
import { KernelPath } from './kernel-fio.ts';
import { Spawner } from './spawner.ts';
import { machineInfo } from './machine.ts';
import type { MachineInfo } from './machine.ts';
import { fioRuntime } from '../reproduce/fio-runtime.ts';
import { orderLine, rotation } from '../reproduce/rotation.ts';
import { parseFioJson } from './runner-bench.ts';

export const SEED_ACCOUNTING = "full on every path: slat, clat and lat of every I/O (our runner always; fio by the jobs' defaults)";

export const SEED_JOBS = ['randw', 'iometer'] as const;
export type SeedJob = (typeof SEED_JOBS)[number];
export type SeedPath = 'guest' | 'bare' | 'fio';

export interface SeedBenchOptions {
  /** time_based runtime of each run, seconds. */
  readonly seconds: number;
  readonly rounds: number;
  /** size= for every job, bytes (also the store's size). */
  readonly size: number;
  readonly jobs: readonly SeedJob[];
  /** The seed job files' text by name; default: read from the project's jobs/ directory. */
  readonly jobText?: (job: SeedJob) => string;
  readonly progress: (line: string) => void;
}

export interface SeedBenchResult {
  job: SeedJob;
  path: SeedPath;
  round: number;
  /** 1-based place in its job's turn (the order rotates with the round). */
  position: number;
  /** Bytes read + written over the run (all jobs), and I/Os. */
  bytes: number;
  ios: number;
  /** The longest job's measured runtime, seconds: rates are totals over it, as fio's group figures. */
  seconds: number;
  mbps: number;
  iops: number;
  /** bytes / ios: the seed's iometer bssplit averages about 4.8 KB under fio's random map. */
  avgIoBytes: number;
  /**
   * CPU time (user + system) per I/O in the measured period, microseconds: the figure a shared
   * machine's load moves least. Ours: the whole process (guest worker and backend included) over the
   * longest job's measured period; fio's: the sum over its jobs (one process each) of their
   * usr_cpu + sys_cpu. Neither counts the kernel's loop-device workers.
   */
  cpuUsPerIo: number;
}

/** A run's figures, before its place in the round's turn is added. */
type SeedMeasured = Omit<SeedBenchResult, 'position'>;

export interface SeedRatio {
  job: SeedJob;
  /** Means over rounds. */
  guest: { mbps: number; iops: number } | null;
  bare: { mbps: number; iops: number } | null;
  fio: { mbps: number; iops: number } | null;
  /** Ratios of the means, of MB/s and of IOPS (they differ when the request-size mix differs). */
  guestOverFio: Ratio | null;
  bareOverFio: Ratio | null;
  guestOverBare: Ratio | null;
}

export interface Ratio {
  mbps: number;
  iops: number;
}

export interface SeedBenchReport {
  suite: 'seed';
  machine: MachineInfo;
  /** What the store was, and how fio ran (or why not). */
  store: string;
  fio: string;
  /** What each path accounts for per I/O (equal on all of them). */
  accounting: string;
  seconds: number;
  rounds: number;
  sizeBytes: number;
  /** The --set overrides given to our runner. */
  overrides: string[];
  results: SeedBenchResult[];
  ratios: SeedRatio[];
}

export function defaultSeedJobText(job: SeedJob): string {
  for (const candidate of [new URL(`../../../jobs/${job}.fio`, import.meta.url), join(process.cwd(), 'jobs', `${job}.fio`)]) {
    if (existsSync(candidate)) return readFileSync(candidate, 'utf8');
  }
  throw new Error(`bench: cannot find the seed job file jobs/${job}.fio (run from the project directory)`);
}

/**
 * fio 3.33 cannot run the seed's files as written: the derived copy reads rw=randw as randwrite, drops the bw/lat logs (per-I/O logging would distort the
 * numbers) and appends filename/size/runtime/time_based to the job section, where they win over the
 * section's own size=4g (options on fio's command line would land in [global] and lose).
 */
export function deriveFioJob(text: string, device: string, size: number, seconds: number): string {
  const lines = text
    .split('\n')
    .filter((l) => !/^\s*write_(bw|lat|iops)_log\s*=/.test(l))
    .map((l) => (/^\s*rw\s*=\s*randw\s*$/.test(l) ? 'rw=randwrite' : l));
  while (lines.length > 0 && lines[lines.length - 1]!.trim() === '') lines.pop();
  lines.push(`filename=${device}`, `size=${size}`, `runtime=${fioRuntime(seconds)}`, 'time_based=1', '');
  return lines.join('\n');
}

export async function runSeedBench(options: SeedBenchOptions): Promise<SeedBenchReport> {
  const { seconds, rounds, size } = options;
  const readJob = options.jobText ?? defaultSeedJobText;
  const texts = new Map(options.jobs.map((j) => [j, readJob(j)] as const));
  const overrides = [`size=${size}`, `runtime=${fioRuntime(seconds)}`, 'time_based=1'];

  let kernel: KernelPath | null = null;
  let fioNote = KernelPath.unavailable() ?? '';
  // losetup and fio run from a helper forked now: see src/bench/spawner.ts for why not from here.
  const spawner = fioNote === '' ? Spawner.start() : null;
  if (spawner !== null) {
    try {
      kernel = await KernelPath.create(size, spawner);
      fioNote = `fio (libaio, direct=1, derived job copies: deriveFioJob in src/bench/seed-bench.ts) on ${kernel.device}`;
    } catch (err) {
      fioNote = `could not set up a loop device: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  const host = await SimHost.start();
  let bareDevice: BlockDevice;
  let guestDisk: string;
  let store: string;
  if (kernel !== null) {
    bareDevice = await openBlockDevice(`phy:${kernel.device}`);
    guestDisk = kernel.device;
    store = `loop device ${kernel.device} (direct-io=on) over a ${size}-byte /dev/shm file of random bytes; guest disk 'phy:${kernel.device}', bare opens it with O_DIRECT`;
  } else {
    const ram = createRamDisk(size, { name: 'ram:seed-bench' });
    await prefillRandom(ram, size);
    host.registerStore('seed-bench-ram', ram);
    bareDevice = ram;
    guestDisk = 'seed-bench-ram';
    store = `in-process RAM disk of ${size} bytes of random data (no loop device: ${fioNote})`;
  }
  const guest: GuestConfig = { name: 'seed-bench', memoryMiB: 256, disks: [{ target: guestDisk, vdev: 'xvda', readOnly: false, backendtype: 'phy' }] };
  const tmp = mkdtempSync(join(tmpdir(), 'blkback-seed-bench-'));
  const results: SeedBenchResult[] = [];
  try {
    const paths: SeedPath[] = kernel === null ? ['guest', 'bare'] : ['guest', 'bare', 'fio'];
    for (let round = 1; round <= rounds; round++) {
      // Rotate the order each round so no path always runs first (right after the previous job).
      const order = rotation(paths, round);
      options.progress(`[seed] path order, ${orderLine(round, order)}`);
      for (const job of options.jobs) {
        const text = texts.get(job)!;
        const path = `jobs/${job}.fio`;
        for (const [i, p] of order.entries()) {
          options.progress(`[seed ${round}/${rounds}] ${job}: ${p}`);
          let r: SeedMeasured;
          if (p === 'fio') {
            const file = join(tmp, `${job}.fio`);
            writeFileSync(file, deriveFioJob(text, kernel!.device, size, seconds));
            r = await measureFio(spawner!, file, job, round);
          } else {
            const target: FioTarget = p === 'guest' ? { kind: 'guest', guest, host } : { kind: 'bare', device: bareDevice };
            // logDir null: no log files and no per-I/O log sampling (the jobs' write_bw_log/write_lat_log
            // cannot be switched off by an override: an empty value means "log under the job name").
            const outcome = await runFio({ files: [{ path, text }], overrides, target, logDir: null });
            r = summarize(outcome.results, job, p, round);
          }
          results.push({ ...r, position: i + 1 });
        }
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    await host.stop();
    await bareDevice.close();
    await kernel?.close();
    spawner?.close();
  }
  return {
    suite: 'seed',
    machine: machineInfo(),
    store,
    fio: `${fioNote}; accounting: ${SEED_ACCOUNTING}`,
    accounting: SEED_ACCOUNTING,
    seconds,
    rounds,
    sizeBytes: size,
    overrides,
    results,
    ratios: options.jobs.map((job) => ratiosFor(results, job)),
  };
}

function summarize(results: readonly JobResult[], job: SeedJob, path: SeedPath, round: number): SeedMeasured {
  let bytes = 0;
  let ios = 0;
  let ms = 0;
  let cpuSeconds = 0;
  for (const r of results) {
    if (r.error !== 0) throw new Error(`bench: ${path} run of ${job} failed: ${r.errorMessage}`);
    for (const d of r.dirs) {
      bytes += d.ioBytes;
      ios += d.totalIos;
    }
    // usrCpu/sysCpu are the whole process's, in percent of this job's measured period: the jobs run
    // together in one process, so the longest one's period covers the run.
    if (r.runtimeMs > ms) cpuSeconds = ((r.usrCpu + r.sysCpu) / 100) * (r.runtimeMs / 1000);
    ms = Math.max(ms, r.runtimeMs);
  }
  return rates(job, path, round, bytes, ios, ms / 1000, cpuSeconds);
}

async function measureFio(spawner: Spawner, file: string, job: SeedJob, round: number): Promise<SeedMeasured> {
  const stdout = await spawner.check('fio', ['--output-format=json', file]);
  let bytes = 0;
  let ios = 0;
  let ms = 0;
  let cpuSeconds = 0;
  for (const j of parseFioJson(stdout)) {
    if (j.error !== 0) throw new Error(`bench: fio run of ${job} failed: job ${j.jobname} error ${j.error}`);
    bytes += j.read.io_bytes + j.write.io_bytes;
    ios += j.read.total_ios + j.write.total_ios;
    ms = Math.max(ms, j.job_runtime);
    // One process per job: its usr_cpu + sys_cpu are its own, in percent of its job_runtime.
    cpuSeconds += ((j.usr_cpu + j.sys_cpu) / 100) * (j.job_runtime / 1000);
  }
  return rates(job, 'fio', round, bytes, ios, ms / 1000, cpuSeconds);
}

function rates(job: SeedJob, path: SeedPath, round: number, bytes: number, ios: number, seconds: number, cpuSeconds: number): SeedMeasured {
  const s = seconds > 0 ? seconds : Number.NaN;
  return {
    job,
    path,
    round,
    bytes,
    ios,
    seconds,
    mbps: bytes / s / 1e6,
    iops: ios / s,
    avgIoBytes: ios > 0 ? bytes / ios : 0,
    cpuUsPerIo: ios > 0 ? (cpuSeconds * 1e6) / ios : Number.NaN,
  };
}

function ratiosFor(results: readonly SeedBenchResult[], job: SeedJob): SeedRatio {
  const mean = (path: SeedPath): { mbps: number; iops: number } | null => {
    const list = results.filter((r) => r.job === job && r.path === path);
    if (list.length === 0) return null;
    return { mbps: list.reduce((a, r) => a + r.mbps, 0) / list.length, iops: list.reduce((a, r) => a + r.iops, 0) / list.length };
  };
  const guest = mean('guest');
  const bare = mean('bare');
  const fio = mean('fio');
  const over = (a: Ratio | null, b: Ratio | null): Ratio | null =>
    a === null || b === null || b.mbps === 0 || b.iops === 0 ? null : { mbps: a.mbps / b.mbps, iops: a.iops / b.iops };
  return { job, guest, bare, fio, guestOverFio: over(guest, fio), bareOverFio: over(bare, fio), guestOverBare: over(guest, bare) };
}

async function prefillRandom(device: BlockDevice, bytes: number): Promise<void> {
  const chunk = new Uint8Array(1 << 20);
  for (let at = 0; at < bytes; at += chunk.length) {
    randomFillSync(chunk);
    await device.writev(at, [chunk.subarray(0, Math.min(chunk.length, bytes - at))]);
  }
}

/** The tables for docs/benchmarks.md: every run, then the means and ratios. */
export function formatSeedTables(report: SeedBenchReport): string {
  const fmt = (n: number | null | undefined, digits = 0): string =>
    n === null || n === undefined || !Number.isFinite(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const rows = ['| job | round | order | path | MB/s | IOPS | avg I/O bytes | CPU µs/IO |', '|---|---:|---:|---|---:|---:|---:|---:|'];
  for (const r of report.results)
    rows.push(`| ${r.job} | ${r.round} | ${r.position} | ${r.path} | ${fmt(r.mbps)} | ${fmt(r.iops)} | ${fmt(r.avgIoBytes)} | ${fmt(r.cpuUsPerIo, 1)} |`);
  rows.push('');
  rows.push('| job | guest MB/s | bare MB/s | fio MB/s | guest IOPS | bare IOPS | fio IOPS | guest/fio | bare/fio | guest/bare |');
  rows.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  // A ratio cell: of MB/s, with the IOPS ratio in brackets when the two differ visibly.
  const ratio = (q: Ratio | null): string => {
    if (q === null) return '–';
    const a = fmt(q.mbps, 2);
    const b = fmt(q.iops, 2);
    return a === b ? a : `${a} (IOPS ${b})`;
  };
  for (const q of report.ratios) {
    rows.push(
      `| ${q.job} | ${fmt(q.guest?.mbps)} | ${fmt(q.bare?.mbps)} | ${fmt(q.fio?.mbps)} | ${fmt(q.guest?.iops)} | ${fmt(q.bare?.iops)} | ${fmt(q.fio?.iops)} | ${ratio(q.guestOverFio)} | ${ratio(q.bareOverFio)} | ${ratio(q.guestOverBare)} |`,
    );
  }
  return rows.join('\n');
}
