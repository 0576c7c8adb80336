// `blkback bench --suite aio`: how an O_DIRECT ('phy:') disk's requests reach the kernel. The same
// random I/O (runRandomIo) on one loop device (direct-io=on, over a /dev/shm file) three ways, in
// turn within each pattern: our direct driver with Linux native AIO (one io_submit a turn), the same
// driver on libuv's thread pool (one thread hand-off a request), and real fio with libaio as the
// yardstick. Reports IOPS and our process's CPU time per I/O; ratios are medians of each round's own.
// The paths rotate each round (rotation.ts); fio runs with --gtod_reduce=1, counting completions as
// runRandomIo does (kernel-fio.ts).
import { allocAlignedShared } from '../block/aligned-memory.ts';
import { openDirectDisk } from '../block/direct.ts';
import type { IoEngine } from '../block/direct.ts';
import { linuxAioProblem } from '../internal/linux-aio.ts';
import { runRandomIo } from '../loadgen/random-io.ts';
import type { BenchCase, BenchResult } from './blkif-bench.ts';
import { KERNEL_FIO_ACCOUNTING, KernelPath } from './kernel-fio.ts';
import { orderLine, rotation } from '../reproduce/rotation.ts';
import { machineInfo } from './machine.ts';
import { median } from './median.ts';
import type { MachineInfo } from './machine.ts';
import { Spawner } from './spawner.ts';

/** The same patterns as the blkif suite's. */
export type AioCase = BenchCase;

/** A blkif-suite row with another set of paths, and our CPU time per I/O. */
export interface AioResult extends Omit<BenchResult, 'path'> {
  path: IoEngine | 'fio';
  /** CPU time of this process (user + system) per I/O, in µs; null for fio (another process). */
  cpuUsPerIo: number | null;
}

export interface AioReport {
  machine: MachineInfo;
  seconds: number;
  rounds: number;
  device: string;
  /** What each path accounts for per I/O (equal on all of them). */
  accounting: string;
  results: AioResult[];
}

const AIO_ACCOUNTING = `native and threads count completions (runRandomIo); fio: ${KERNEL_FIO_ACCOUNTING}`;

export interface AioOptions {
  readonly seconds: number;
  readonly rounds: number;
  readonly span: number;
  readonly cases: readonly AioCase[];
  readonly progress: (line: string) => void;
}

export const AIO_CASES: readonly AioCase[] = [
  { rw: 'randwrite', bs: 4096, iodepth: 32 },
  { rw: 'randread', bs: 4096, iodepth: 32 },
  { rw: 'randwrite', bs: 65536, iodepth: 32 },
  { rw: 'randread', bs: 65536, iodepth: 32 },
];

/** Why the suite cannot run here (it needs a loop device, fio and Linux AIO), or null. */
export function aioBenchUnavailable(): string | null {
  return KernelPath.unavailable() ?? linuxAioProblem() ?? null;
}

export async function runAioBench(options: AioOptions): Promise<AioReport> {
  const why = aioBenchUnavailable();
  if (why !== null) throw new Error(`bench --suite aio cannot run here: ${why}`);
  const spawner = Spawner.start();
  const device = await KernelPath.create(options.span, spawner);
  const arena = allocAlignedShared(Math.max(...options.cases.map((c) => c.iodepth * c.bs)));
  const results: AioResult[] = [];
  const total = options.rounds * options.cases.length;
  try {
    let n = 0;
    const paths: AioResult['path'][] = ['native', 'threads', 'fio'];
    for (let round = 1; round <= options.rounds; round++) {
      const order = rotation(paths, round);
      options.progress(`path order, ${orderLine(round, order)}`);
      for (const c of options.cases) {
        n++;
        const label = `${options.rounds > 1 ? `round ${round}: ` : ''}${c.rw} ${c.bs / 1024}k QD${c.iodepth}`;
        for (const [i, path] of order.entries()) {
          const position = i + 1;
          options.progress(`[${n}/${total}] ${label}: ${path === 'fio' ? 'fio (libaio)' : `direct driver, --aio ${path}`}`);
          if (path === 'fio') {
            const k = await device.measure(c.rw, c.bs, c.iodepth, options.seconds);
            results.push({ path, round, position, ...c, iops: k.iops, mbps: k.mbps, cpuUsPerIo: null });
            continue;
          }
          const disk = await openDirectDisk(device.device, { ioEngine: path });
          try {
            let next = 0;
            const cpu = process.cpuUsage();
            const r = await runRandomIo(
              disk,
              (bytes) => {
                const view = arena.subarray(next, next + bytes);
                next += bytes;
                return view;
              },
              { ...c, seconds: options.seconds, span: options.span },
            );
            const used = process.cpuUsage(cpu);
            results.push({ path, round, position, ...c, iops: r.iops, mbps: r.mbps, cpuUsPerIo: r.ios > 0 ? (used.user + used.system) / r.ios : null });
          } finally {
            await disk.close();
          }
        }
      }
    }
  } finally {
    await device.close();
    spawner.close();
  }
  return {
    machine: machineInfo(),
    seconds: options.seconds,
    rounds: options.rounds,
    device: `${device.device} (direct-io=on) over a ${options.span}-byte /dev/shm file`,
    accounting: AIO_ACCOUNTING,
    results,
  };
}

/** One row per pattern: median IOPS and CPU per I/O of each path, and the per-round ratios' medians. */
export function formatAioTable(report: AioReport): string {
  const fmt = (n: number | undefined, digits = 0): string =>
    n === undefined ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const rows = [
    '| pattern | native IOPS | threads IOPS | fio IOPS | native µs CPU/IO | threads µs CPU/IO | native/threads | native/fio |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const key = (r: AioResult): string => `${r.rw} ${r.bs / 1024}k QD${r.iodepth}`;
  for (const k of [...new Set(report.results.map(key))]) {
    const runs = report.results.filter((r) => key(r) === k);
    const med = (path: AioResult['path'], f: (r: AioResult) => number | null): number | undefined =>
      median(
        runs
          .filter((r) => r.path === path)
          .map(f)
          .filter((v): v is number => v !== null),
      );
    const ratio = (other: AioResult['path']): number | undefined => {
      const out: number[] = [];
      for (const round of new Set(runs.map((r) => r.round))) {
        const a = runs.find((r) => r.path === 'native' && r.round === round);
        const b = runs.find((r) => r.path === other && r.round === round);
        if (a !== undefined && b !== undefined && b.iops > 0) out.push(a.iops / b.iops);
      }
      return median(out);
    };
    rows.push(
      `| ${k} | ${fmt(med('native', (r) => r.iops))} | ${fmt(med('threads', (r) => r.iops))} | ${fmt(med('fio', (r) => r.iops))} | ` +
        `${fmt(
          med('native', (r) => r.cpuUsPerIo),
          1,
        )} | ${fmt(
          med('threads', (r) => r.cpuUsPerIo),
          1,
        )} | ${fmt(ratio('threads'), 2)} | ${fmt(ratio('fio'), 2)} |`,
    );
  }
  rows.push('', `accounting: ${report.accounting}; path order rotated each round`);
  return rows.join('\n');
}
