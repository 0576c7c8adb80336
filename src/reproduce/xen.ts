// `blkback reproduce --xen`: the seed's chain on real Xen 4.17 (under QEMU's emulation, src/xen-tcg):
// our iSCSI target in dom0, dom0's Linux initiator logged in to it, and one guest with a disk from
// each backend on those SCSI disks (xvda from the kernel's xen-blkback, xvdb from blkback serve),
// the seed's jobs run on both, pair by pair. This module runs that harness boot and turns its
// results into the same report as the simulated rig (report.html, <job>-bw.png, results.json).
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runXenHarness } from '../xen-tcg/run.ts';
import type { FioFigures } from '../xen-tcg/checks.ts';
import type { JobCpu } from '../xen-tcg/cpu.ts';
import { cpuPerIoRows } from '../xen-tcg/report.ts';
import type { CpuPerIoRow, PairedRow } from '../xen-tcg/report.ts';
import type { SyscallFigures } from '../xen-tcg/syscalls.ts';

export interface XenReproduceOptions {
  /** The report directory; the harness's own files go to <out>/xen-harness. */
  readonly out: string;
  /** Runs of each job on each backend (the mail: 3). */
  readonly pairs: number;
  /** Size of each LUN's RAM disk and the bytes randw writes (iometer a third), MiB. */
  readonly diskMiB: number;
  readonly fioMiB: number;
  /** Seconds before QEMU is killed. */
  readonly timeoutSeconds: number;
  /** Image cache (default: the harness's). */
  readonly cache?: string;
  readonly log: (line: string) => void;
}

export interface XenReproduceOutcome {
  /** The harness's exit status: 0 every check passed, 1 a check failed, 2 it could not run. */
  readonly status: number;
  readonly harnessDir: string;
  /** Per job, each pair's write MB/s on both backends, and a median row (pair 0). */
  readonly rows: readonly PairedRow[];
  readonly fio: readonly FioFigures[];
  readonly cpu: readonly JobCpu[];
  /** dom0's CPU per I/O, per job, pair and backend (with a median row per job, pair 0). */
  readonly cpuPerIo: readonly CpuPerIoRow[];
  /** serve's system calls per request in dom0, per counted data path. */
  readonly syscalls: readonly SyscallFigures[];
  readonly failedChecks: readonly string[];
  readonly images: Readonly<Record<string, unknown>>;
  /** Plots the harness drew, by job: the SVG text and where this module copied the PNG. */
  readonly plots: ReadonlyMap<string, { readonly svg: string; readonly png: string }>;
}

interface HarnessSummary {
  readonly sameGuest?: PairedRow[];
  readonly images?: Record<string, unknown>;
  readonly runs?: { fio?: FioFigures[]; cpu?: JobCpu[]; syscalls?: SyscallFigures[]; checks?: { name: string; ok: boolean; detail: string }[] }[];
}

export async function reproduceOnXen(o: XenReproduceOptions): Promise<XenReproduceOutcome> {
  const harnessDir = join(o.out, 'xen-harness');
  const argv = [
    '--mode',
    'same-guest',
    '--chain',
    'iscsi',
    '--pairs',
    String(o.pairs),
    '--out',
    harnessDir,
    '--disk-mib',
    String(o.diskMiB),
    '--fio-mib',
    String(o.fioMiB),
    '--timeout',
    String(o.timeoutSeconds),
    ...(o.cache !== undefined ? ['--cache', o.cache] : []),
  ];
  o.log(`reproduce --xen: node dist/src/xen-tcg/run.js ${argv.join(' ')}`);
  const status = await runXenHarness(argv, o.log);
  const resultsPath = join(harnessDir, 'results.json');
  if (!existsSync(resultsPath)) {
    return {
      status: status === 0 ? 2 : status,
      harnessDir,
      rows: [],
      fio: [],
      cpu: [],
      cpuPerIo: [],
      syscalls: [],
      failedChecks: [`no ${resultsPath}`],
      images: {},
      plots: new Map(),
    };
  }
  const summary = JSON.parse(readFileSync(resultsPath, 'utf8')) as HarnessSummary;
  const run = summary.runs?.[0];
  const plots = new Map<string, { svg: string; png: string }>();
  for (const job of ['randw', 'iometer']) {
    const svg = join(harnessDir, `same-guest-${job}-bw.svg`);
    const png = join(harnessDir, `same-guest-${job}-bw.png`);
    if (!existsSync(svg) || !existsSync(png)) continue;
    copyFileSync(png, join(o.out, `${job}-bw.png`));
    copyFileSync(svg, join(o.out, `${job}-bw.svg`));
    plots.set(job, { svg: readFileSync(svg, 'utf8'), png: join(o.out, `${job}-bw.png`) });
  }
  return {
    status,
    harnessDir,
    rows: summary.sameGuest ?? [],
    fio: run?.fio ?? [],
    cpu: run?.cpu ?? [],
    cpuPerIo: cpuPerIoRows(run?.fio ?? [], run?.cpu ?? []),
    syscalls: run?.syscalls ?? [],
    failedChecks: (run?.checks ?? []).filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`),
    images: summary.images ?? {},
    plots,
  };
}

/** dom0's CPUs busy, serve's and the target's, averaged over a backend's counted runs of a job. */
export function cpuOfBackend(cpu: readonly JobCpu[], job: string, backend: 'kernel' | 'ours'): { dom0: number; serve: number; target: number } | undefined {
  const of = cpu.filter((c) => c.job === job && c.guest.startsWith(`${backend}-`));
  if (of.length === 0) return undefined;
  const mean = (f: (c: JobCpu) => number): number => of.reduce((s, c) => s + f(c), 0) / of.length;
  return { dom0: mean((c) => c.dom0Busy), serve: mean((c) => c.serve), target: mean((c) => c.target) };
}
