// `blkback bench --suite syscalls`: system calls per request the backend makes, on a `phy:` disk
// (a loop device with direct-io=on over a /dev/shm file), per data path, at queue depth 32.
//
// A simulated guest (a worker thread of this process) runs random I/O through blkfront; while it
// runs, `perf stat --per-thread -e raw_syscalls:sys_enter` counts every thread's system calls for a
// window. The guest's thread (it reports its id) is left out; the rest is the backend: the main
// thread, where blkback and its native AIO run, and Node's own threads. Grant and event-channel
// calls are not system calls in the simulation but are on real Xen, so they are counted too
// (xen-call-counter.ts) and added at the price our real-Xen binding pays. The goal (issue 16): at
// most 0.5 a request at QD 32 or more on the persistent and copy paths.
import type { DataPath } from '../blkback/ring-server.ts';
import { SimHost } from '../sim-host/host.ts';
import type { RandomIoParams } from '../loadgen/random-io.ts';
import { KernelPath } from './kernel-fio.ts';
import { machineInfo } from './machine.ts';
import type { MachineInfo } from './machine.ts';
import { median } from './median.ts';
import { Spawner } from './spawner.ts';
import { countXenCalls, diffXenCallCounts, emptyXenCallCounts, xenSyscalls } from './xen-call-counter.ts';
import type { XenCallCounts } from './xen-call-counter.ts';

export const SYSCALL_GOAL = 0.5;

export interface SyscallCase {
  readonly rw: 'randread' | 'randwrite';
  readonly bs: number;
  readonly iodepth: number;
}

export const SYSCALL_CASES: readonly SyscallCase[] = [
  { rw: 'randread', bs: 4096, iodepth: 32 },
  { rw: 'randwrite', bs: 4096, iodepth: 32 },
  { rw: 'randread', bs: 65536, iodepth: 32 },
  { rw: 'randwrite', bs: 65536, iodepth: 32 },
];

export const SYSCALL_PATHS: readonly DataPath[] = ['persistent', 'copy', 'map'];

export interface SyscallResult {
  dataPath: DataPath;
  /** The path the ring actually used (persistent falls back to copy when the frontend does not offer feature-persistent). */
  served: DataPath | null;
  round: number;
  rw: string;
  bs: number;
  iodepth: number;
  /** Requests the backend answered in perf's window (scaled from ours, see measureWindow). */
  requests: number;
  /** System calls of the backend's threads (all but the guest's) in the window. */
  osSyscalls: number;
  /** ...of which the main thread's. */
  mainThreadSyscalls: number;
  /** Grant and event-channel calls counted in the window, and what they cost on real Xen. */
  xenCalls: XenCallCounts;
  xenSyscalls: number;
  /** (osSyscalls + xenSyscalls) / requests: the figure the goal is about. */
  perRequest: number;
  /** osSyscalls / requests alone: what the simulation itself makes. */
  osPerRequest: number;
}

export interface SyscallReport {
  machine: MachineInfo;
  device: string;
  seconds: number;
  rounds: number;
  goal: number;
  command: string;
  results: SyscallResult[];
}

export interface SyscallOptions {
  readonly seconds: number;
  readonly rounds: number;
  readonly span: number;
  readonly cases: readonly SyscallCase[];
  readonly paths: readonly DataPath[];
  readonly command: string;
  readonly progress: (line: string) => void;
}

const WORKLOAD = new URL('../guest/workloads/syscall-probe.js', import.meta.url);
/** Time the load runs before the window opens (ring connected, AIO context warm). */
const WARM_UP_S = 0.8;

/** Why the suite cannot run here, or null. */
export function syscallBenchUnavailable(spawnCheck: (cmd: string) => boolean): string | null {
  const kernel = KernelPath.unavailable();
  if (kernel !== null) return kernel;
  if (!spawnCheck('perf')) return 'perf is not installed (Debian: apt-get install linux-perf)';
  return null;
}

/** Per-thread counts from `perf stat --per-thread -e raw_syscalls:sys_enter` (its stderr), and the window it measured. */
export function parsePerfPerThread(text: string): { byTid: Map<number, number>; elapsedSeconds: number } {
  const byTid = new Map<number, number>();
  for (const line of text.split('\n')) {
    // "            node-28234                  2744      raw_syscalls:sys_enter"
    const m = /^\s*.*?-(\d+)\s+([\d,.]+|<not counted>)\s+raw_syscalls:sys_enter/.exec(line);
    if (m === null) continue;
    const count = m[2] === '<not counted>' ? 0 : Number(m[2]!.replace(/[,.]/g, ''));
    byTid.set(Number(m[1]), (byTid.get(Number(m[1])) ?? 0) + count);
  }
  const elapsed = /([\d.]+) seconds time elapsed/.exec(text);
  if (elapsed === null) throw new Error(`perf stat printed no elapsed time:\n${text.slice(0, 500)}`);
  return { byTid, elapsedSeconds: Number(elapsed[1]) };
}

export async function runSyscallBench(options: SyscallOptions): Promise<SyscallReport> {
  const spawner = Spawner.start();
  const why = syscallBenchUnavailable(() => true) ?? ((await spawner.run('perf', ['--version'])).code === 0 ? null : 'perf does not run here');
  if (why !== null) {
    spawner.close();
    throw new Error(`bench --suite syscalls cannot run here: ${why}`);
  }
  const device = await KernelPath.create(options.span, spawner);
  const results: SyscallResult[] = [];
  const total = options.rounds * options.paths.length * options.cases.length;
  let n = 0;
  try {
    for (let round = 1; round <= options.rounds; round++) {
      for (const dataPath of options.paths) {
        for (const c of options.cases) {
          n++;
          options.progress(`[${n}/${total}] ${options.rounds > 1 ? `round ${round}: ` : ''}${dataPath} ${c.rw} ${c.bs / 1024}k QD${c.iodepth}`);
          results.push({ round, ...(await measureCase(spawner, device.device, dataPath, c, options)) });
        }
      }
    }
  } finally {
    await device.close();
    spawner.close();
  }
  return {
    machine: machineInfo(),
    device: `loop device (direct-io=on) over a ${options.span}-byte /dev/shm file, guest disk 'phy:'`,
    seconds: options.seconds,
    rounds: options.rounds,
    goal: SYSCALL_GOAL,
    command: options.command,
    results,
  };
}

async function measureCase(
  spawner: Spawner,
  device: string,
  dataPath: DataPath,
  c: SyscallCase,
  options: SyscallOptions,
): Promise<Omit<SyscallResult, 'round'>> {
  const counts = emptyXenCallCounts();
  const host = await SimHost.start({ dataPath, instrumentBackend: (hv) => countXenCalls(hv, counts) });
  try {
    let guestTid = -1;
    let reported!: () => void;
    const tidKnown = new Promise<void>((resolve) => (reported = resolve));
    const params: RandomIoParams = { ...c, seconds: WARM_UP_S + options.seconds + 1, span: options.span };
    const ended = host
      .createGuest(
        { name: 'syscalls', memoryMiB: 64, disks: [{ target: device, vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
        {
          workload: WORKLOAD,
          params,
          onReport: (m) => {
            guestTid = (m as { tid: number }).tid;
            reported();
          },
        },
      )
      .then((guest) => guest.result);
    await Promise.race([tidKnown, ended.then(() => Promise.reject(new Error('the guest ended before it reported its thread')))]);
    await sleep(WARM_UP_S * 1000);
    const vbd = [...host.blkback.vbds.values()][0];
    if (vbd === undefined) throw new Error('bench --suite syscalls: the guest has no disk served');
    const answered = (): number => vbd.stats.rd_req + vbd.stats.wr_req;
    const before = { at: performance.now(), requests: answered(), xen: { ...counts } };
    const perf = await spawner.run('perf', [
      'stat',
      '--per-thread',
      '-e',
      'raw_syscalls:sys_enter',
      '-p',
      String(process.pid),
      '--',
      'sleep',
      String(options.seconds),
    ]);
    const after = { at: performance.now(), requests: answered(), xen: { ...counts } };
    // Read while the ring is connected: once the guest ends, the disk has no data path.
    const served = vbd.dataPath;
    if (perf.code !== 0) throw new Error(`perf stat failed (${perf.code}): ${perf.stderr.trim() || perf.error}`);
    const { byTid, elapsedSeconds } = parsePerfPerThread(perf.stderr);
    if (!byTid.has(guestTid)) throw new Error(`perf stat did not list the guest's thread ${guestTid}: the counts cannot be split`);
    // Our snapshots bracket perf's window plus its start-up; at a steady rate, scale to perf's.
    const scale = Math.min(1, elapsedSeconds / ((after.at - before.at) / 1000));
    const requests = (after.requests - before.requests) * scale;
    const xen = diffXenCallCounts(after.xen, before.xen);
    for (const key of Object.keys(xen) as (keyof XenCallCounts)[]) xen[key] *= scale;
    let osSyscalls = 0;
    for (const [tid, count] of byTid) if (tid !== guestTid) osSyscalls += count;
    const mainThreadSyscalls = byTid.get(process.pid) ?? 0;
    const modelled = xenSyscalls(xen);
    await ended;
    if (requests <= 0) throw new Error(`bench --suite syscalls: no request answered in the window (${dataPath} ${c.rw})`);
    return {
      dataPath,
      served,
      rw: c.rw,
      bs: c.bs,
      iodepth: c.iodepth,
      requests: Math.round(requests),
      osSyscalls,
      mainThreadSyscalls,
      xenCalls: xen,
      xenSyscalls: Math.round(modelled),
      perRequest: (osSyscalls + modelled) / requests,
      osPerRequest: osSyscalls / requests,
    };
  } finally {
    await host.stop();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One row per data path and pattern: medians over rounds, and the goal. */
export function formatSyscallTable(report: SyscallReport): string {
  const lines = [
    `System calls per request, backend threads only (${report.device}; ${report.seconds} s windows, ${report.rounds} round(s))`,
    `  os: counted by perf stat (raw_syscalls:sys_enter) on every thread but the guest's`,
    `  xen: grant and event-channel calls, each at its cost on real Xen (src/bench/xen-call-counter.ts)`,
    '',
    'path        pattern           requests   os/req  xen/req  total/req  goal',
  ];
  const keys = new Map<string, SyscallResult[]>();
  for (const r of report.results) {
    const key = `${r.dataPath}|${r.rw}|${r.bs}|${r.iodepth}`;
    keys.set(key, [...(keys.get(key) ?? []), r]);
  }
  for (const rows of keys.values()) {
    const r = rows[0]!;
    const total = median(rows.map((x) => x.perRequest)) ?? Number.NaN;
    const os = median(rows.map((x) => x.osPerRequest)) ?? Number.NaN;
    const verdict = r.dataPath === 'map' ? '(no goal)' : total <= report.goal ? `<= ${report.goal} met` : `> ${report.goal} MISSED`;
    const path = r.served === r.dataPath || r.served === null ? r.dataPath : `${r.dataPath}>${r.served}`;
    lines.push(
      `${path.padEnd(11)} ${`${r.rw} ${r.bs / 1024}k QD${r.iodepth}`.padEnd(17)} ${String(Math.round(median(rows.map((x) => x.requests)) ?? 0)).padStart(8)}  ${os.toFixed(3).padStart(6)}  ${(total - os).toFixed(3).padStart(7)}  ${total.toFixed(3).padStart(9)}  ${verdict}`,
    );
  }
  if (report.results.some((r) => r.served !== null && r.served !== r.dataPath))
    lines.push('', 'a>b: asked for a, the ring used b (the frontend did not offer what a needs, e.g. feature-persistent)');
  lines.push('', `command: ${report.command}`);
  return lines.join('\n');
}
