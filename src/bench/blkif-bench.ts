// `blkback bench`: the guest path (guest -> blkfront -> ring -> blkback -> RAM disk) against the same
// load straight on the RAM disk (bare) and the kernel block path under real fio, one pattern at a
// time, each path in turn so that drift in the machine's load hits all three alike; then the whole
// set again for each further round, the order of the paths rotated (rotation.ts). The table gives
// medians over the rounds, and the guest/kernel ratio as the median of each round's own ratio with
// its range. Accounting is equal: guest and bare count completions (runRandomIo), and fio runs with
// --gtod_reduce=1 (kernel-fio.ts).
import { allocAlignedShared } from '../block/aligned-memory.ts';
import { createRamDisk } from '../block/ram.ts';
import type { BlockDevice } from '../block/types.ts';
import { SimHost } from '../sim-host/host.ts';
import { runRandomIo } from '../loadgen/random-io.ts';
import type { RandomIoParams } from '../loadgen/random-io.ts';
import { KERNEL_FIO_ACCOUNTING, KernelPath } from './kernel-fio.ts';
import { orderLine, rotation } from '../reproduce/rotation.ts';
import { Spawner } from './spawner.ts';
import { machineInfo } from './machine.ts';
import { median } from './median.ts';
import type { MachineInfo } from './machine.ts';

export interface BenchCase {
  readonly rw: 'randread' | 'randwrite';
  readonly bs: number;
  readonly iodepth: number;
}

export type BlkifPath = 'guest' | 'bare' | 'kernel';

export interface BenchResult {
  path: BlkifPath;
  /** 1-based. */
  round: number;
  /** 1-based place in its pattern's turn (the order rotates with the round). */
  position: number;
  rw: string;
  bs: number;
  iodepth: number;
  iops: number;
  mbps: number;
}

export interface BenchReport {
  machine: MachineInfo;
  seconds: number;
  rounds: number;
  spanBytes: number;
  kernel: string;
  /** What each path accounts for per I/O (equal on all of them). */
  accounting: string;
  results: BenchResult[];
}

export const BLKIF_ACCOUNTING = `guest and bare count completions (runRandomIo); kernel: ${KERNEL_FIO_ACCOUNTING}`;

export interface BenchOptions {
  readonly seconds: number;
  /** Times the whole set of patterns is run (default 1). */
  readonly rounds?: number;
  readonly span: number;
  readonly cases: readonly BenchCase[];
  readonly kernel: boolean;
  readonly progress: (line: string) => void;
  readonly xenstoreSocket?: string;
}

export function defaultCases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const bs of [4096, 65536]) for (const rw of ['randread', 'randwrite'] as const) for (const iodepth of [1, 32, 256]) out.push({ rw, bs, iodepth });
  return out;
}

const GUEST_WORKLOAD = new URL('../guest/workloads/random-io.js', import.meta.url);

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const { seconds, span } = options;
  // Everything that forks (losetup, fio) goes through a helper forked now, while this process is
  // small: a fork from here after the RAM disk is filled would make each later write to it fault.
  const unavailable = options.kernel ? KernelPath.unavailable() : 'not requested';
  let kernelNote = unavailable ?? 'fio libaio direct=1 --gtod_reduce=1 on a loop device (direct-io=on) over /dev/shm';
  const spawner = unavailable === null ? Spawner.start() : null;
  let kernel: KernelPath | null = null;
  if (spawner !== null) {
    try {
      kernel = await KernelPath.create(span, spawner);
    } catch (err) {
      kernelNote = `could not set up a loop device: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  const ram = createRamDisk(span, { name: 'ram:bench' });
  await prefill(ram, span);
  const host = await SimHost.start(options.xenstoreSocket === undefined ? {} : { xenstoreSocket: options.xenstoreSocket });
  host.registerStore('bench-ram', ram);
  const arena = allocAlignedShared(Math.max(...options.cases.map((c) => c.iodepth * Math.ceil(c.bs / 4096) * 4096), 65536));
  const results: BenchResult[] = [];
  const rounds = options.rounds ?? 1;
  const total = rounds * options.cases.length;
  const paths: BlkifPath[] = kernel === null ? ['guest', 'bare'] : ['guest', 'bare', 'kernel'];
  /** One run of one path: IOPS and MB/s. */
  const measure = async (path: BlkifPath, c: BenchCase, n: number): Promise<{ iops: number; mbps: number }> => {
    const params: RandomIoParams = { ...c, seconds, span };
    if (path === 'guest') {
      const guest = await host.createGuest(
        { name: `bench${n}`, memoryMiB: 64, disks: [{ target: 'bench-ram', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
        { workload: GUEST_WORKLOAD, params },
      );
      return (await guest.result) as { iops: number; mbps: number };
    }
    if (path === 'bare') {
      let next = 0; // buffers are carved afresh for each pattern
      return runRandomIo(
        ram,
        (bytes) => {
          if (next + bytes > arena.length) throw new Error(`bench: ${bytes}-byte buffers at QD${c.iodepth} do not fit the ${arena.length}-byte arena`);
          const view = arena.subarray(next, next + bytes);
          next += Math.ceil(bytes / 4096) * 4096;
          return view;
        },
        params,
      );
    }
    return kernel!.measure(c.rw, c.bs, c.iodepth, seconds);
  };
  try {
    let n = 0;
    for (let round = 1; round <= rounds; round++) {
      const order = rotation(paths, round);
      options.progress(`path order, ${orderLine(round, order)}`);
      for (const c of options.cases) {
        n++;
        const label = `${rounds > 1 ? `round ${round}: ` : ''}${c.rw} ${c.bs / 1024}k QD${c.iodepth}`;
        for (const [i, path] of order.entries()) {
          options.progress(`[${n}/${total}] ${label}: ${path === 'kernel' ? 'kernel (fio)' : path}`);
          const r = await measure(path, c, n);
          results.push({ path, round, position: i + 1, ...c, iops: r.iops, mbps: r.mbps });
        }
      }
    }
  } finally {
    await host.stop();
    await kernel?.close();
    spawner?.close();
    await ram.close();
  }
  return { machine: machineInfo(), seconds, rounds, spanBytes: span, kernel: kernelNote, accounting: BLKIF_ACCOUNTING, results };
}

async function prefill(device: BlockDevice, bytes: number): Promise<void> {
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  for (let at = 0; at < bytes; at += chunk.length) await device.writev(at, [chunk.subarray(0, Math.min(chunk.length, bytes - at))]);
}

/**
 * The README table: one row per pattern, the median IOPS and MB/s of each path over the rounds, and
 * the ratios that matter as the median of each round's own ratio (with its range over the rounds,
 * when there are several: a ratio is only meaningful between paths measured side by side).
 */
export function formatBenchTable(report: BenchReport): string {
  const rows: string[] = [];
  const several = report.rounds > 1;
  rows.push(
    `| pattern | guest IOPS | bare IOPS | kernel IOPS | guest MB/s | kernel MB/s | guest/bare | guest/kernel |${several ? ' guest/kernel per round |' : ''}`,
  );
  rows.push(`|---|---:|---:|---:|---:|---:|---:|---:|${several ? '---|' : ''}`);
  const key = (r: BenchResult): string => `${r.rw} ${r.bs / 1024}k QD${r.iodepth}`;
  const keys = [...new Set(report.results.map(key))];
  const fmt = (n: number | undefined, digits = 0): string =>
    n === undefined ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  for (const k of keys) {
    const runs = report.results.filter((r) => key(r) === k);
    const of = (path: BenchResult['path'], round: number): BenchResult | undefined => runs.find((r) => r.path === path && r.round === round);
    const med = (path: BenchResult['path'], field: 'iops' | 'mbps'): number | undefined => median(runs.filter((r) => r.path === path).map((r) => r[field]));
    const ratios = (path: BenchResult['path']): number[] => {
      const out: number[] = [];
      for (const round of new Set(runs.map((r) => r.round))) {
        const g = of('guest', round);
        const other = of(path, round);
        if (g !== undefined && other !== undefined && other.iops > 0) out.push(g.iops / other.iops);
      }
      return out;
    };
    const vsKernel = ratios('kernel');
    const range = vsKernel.length > 1 ? ` ${fmt(Math.min(...vsKernel), 2)}–${fmt(Math.max(...vsKernel), 2)} |` : ' – |';
    rows.push(
      `| ${k} | ${fmt(med('guest', 'iops'))} | ${fmt(med('bare', 'iops'))} | ${fmt(med('kernel', 'iops'))} | ${fmt(med('guest', 'mbps'))} | ${fmt(med('kernel', 'mbps'))} | ${fmt(median(ratios('bare')), 2)} | ${fmt(median(vsKernel), 2)} |${several ? range : ''}`,
    );
  }
  rows.push('', `accounting: ${report.accounting}; path order rotated each round`);
  return rows.join('\n');
}
