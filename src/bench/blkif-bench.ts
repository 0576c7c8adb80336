// `blkback bench`: the guest path (guest -> blkfront -> ring -> blkback -> RAM disk) against the same
// load straight on the RAM disk (bare) and the kernel block path under real fio, one pattern at a
// time, each path in turn so that drift in the machine's load hits all three alike.
import { allocAlignedShared } from '../block/aligned-memory.ts';
import { createRamDisk } from '../block/ram.ts';
import type { BlockDevice } from '../block/types.ts';
import { SimHost } from '../toolstack/host.ts';
import { runRandomIo } from '../workload/random-io.ts';
import type { RandomIoParams } from '../workload/random-io.ts';
import { KernelPath } from './kernel-fio.ts';
import { Spawner } from './spawner.ts';
import { machineInfo } from './machine.ts';
import type { MachineInfo } from './machine.ts';

export interface BenchCase {
  readonly rw: 'randread' | 'randwrite';
  readonly bs: number;
  readonly iodepth: number;
}

export interface BenchResult {
  path: 'guest' | 'bare' | 'kernel';
  rw: string;
  bs: number;
  iodepth: number;
  iops: number;
  mbps: number;
}

export interface BenchReport {
  machine: MachineInfo;
  seconds: number;
  spanBytes: number;
  kernel: string;
  results: BenchResult[];
}

export interface BenchOptions {
  readonly seconds: number;
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
  let kernelNote = unavailable ?? 'fio libaio direct=1 on a loop device (direct-io=on) over /dev/shm';
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
  try {
    let n = 0;
    for (const c of options.cases) {
      n++;
      const label = `${c.rw} ${c.bs / 1024}k QD${c.iodepth}`;
      const params: RandomIoParams = { ...c, seconds, span };

      options.progress(`[${n}/${options.cases.length}] ${label}: guest`);
      const guest = await host.createGuest(
        { name: `bench${n}`, memoryMiB: 64, disks: [{ target: 'bench-ram', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
        { workload: GUEST_WORKLOAD, params },
      );
      const g = (await guest.result) as { iops: number; mbps: number };
      results.push({ path: 'guest', ...c, iops: g.iops, mbps: g.mbps });

      options.progress(`[${n}/${options.cases.length}] ${label}: bare`);
      let next = 0; // buffers are carved afresh for each pattern
      const bare = await runRandomIo(ram, (bytes) => {
        if (next + bytes > arena.length) throw new Error(`bench: ${bytes}-byte buffers at QD${c.iodepth} do not fit the ${arena.length}-byte arena`);
        const view = arena.subarray(next, next + bytes);
        next += Math.ceil(bytes / 4096) * 4096;
        return view;
      }, params);
      results.push({ path: 'bare', ...c, iops: bare.iops, mbps: bare.mbps });

      if (kernel !== null) {
        options.progress(`[${n}/${options.cases.length}] ${label}: kernel (fio)`);
        const k = await kernel.measure(c.rw, c.bs, c.iodepth, seconds);
        results.push({ path: 'kernel', ...c, iops: k.iops, mbps: k.mbps });
      }
    }
  } finally {
    await host.stop();
    await kernel?.close();
    spawner?.close();
    await ram.close();
  }
  return { machine: machineInfo(), seconds, spanBytes: span, kernel: kernelNote, results };
}

async function prefill(device: BlockDevice, bytes: number): Promise<void> {
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  for (let at = 0; at < bytes; at += chunk.length) await device.writev(at, [chunk.subarray(0, Math.min(chunk.length, bytes - at))]);
}

/** The README table: one row per pattern, IOPS per path and the ratios that matter. */
export function formatBenchTable(report: BenchReport): string {
  const rows: string[] = [];
  rows.push('| pattern | guest IOPS | bare IOPS | kernel IOPS | guest MB/s | kernel MB/s | guest/bare | guest/kernel |');
  rows.push('|---|---:|---:|---:|---:|---:|---:|---:|');
  const key = (r: BenchResult): string => `${r.rw} ${r.bs / 1024}k QD${r.iodepth}`;
  const keys = [...new Set(report.results.map(key))];
  const fmt = (n: number | undefined, digits = 0): string => (n === undefined ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
  for (const k of keys) {
    const of = (path: BenchResult['path']): BenchResult | undefined => report.results.find((r) => key(r) === k && r.path === path);
    const g = of('guest');
    const b = of('bare');
    const kr = of('kernel');
    rows.push(
      `| ${k} | ${fmt(g?.iops)} | ${fmt(b?.iops)} | ${fmt(kr?.iops)} | ${fmt(g?.mbps)} | ${fmt(kr?.mbps)} | ${g && b ? fmt(g.iops / b.iops, 2) : '–'} | ${g && kr ? fmt(g.iops / kr.iops, 2) : '–'} |`,
    );
  }
  return rows.join('\n');
}
