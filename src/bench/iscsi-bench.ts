// `blkback bench --suite iscsi`: two iSCSI targets (A, normally ours, and B, normally Debian's tgtd)
// serving the same LUN store (one /dev/shm file of zeros) to the same clients, in the same rounds:
//   qemu-img bench -f raw -t none -c N -d 32 -s 4096|65536 [-w --pattern=0xab] URL   (read and write)
//   iscsi-perf -m 32 -b 8|128 -t T URL                                              (read only)
//   node iscsi-initiator-load.js URL 4096|65536 32 T   (our initiator doing what iscsi-perf does)
// and, for qemu-img's cases, the same command on the file itself (no iSCSI: the baseline). Each run
// takes the target's CPU time from procfs (utime + stime of the whole process, all threads, before
// and after) and the client's from this process's reaped-children counters. The paths of a case take
// turns within a round, the first rotating with the round (iscsi-perf's cases: libiscsi and our
// initiator, each on A and on B, four runs); tables give medians over the rounds and A/B (and
// ours/libiscsi) as the median of each round's own ratio. Loopback iSCSI is CPU-bound on a small machine
// (docs/iscsi-baselines.md §3): compare A with B from the same run only.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createLunFile, onPath, processCpuSeconds } from './iscsi-target.ts';
import type { RunningTarget, StartTarget } from './iscsi-target.ts';
import { machineInfo } from './machine.ts';
import type { MachineInfo } from './machine.ts';
import { median } from './median.ts';
import { rotation } from '../reproduce/rotation.ts';
import { INITIATOR_LOAD_JS } from './iscsi-initiator-load.ts';
import type { InitiatorLoadResult } from './iscsi-initiator-load.ts';
import { reapedChildCpu } from './runner-bench.ts';

export interface IscsiBenchTarget {
  /** Names the target in tables ('blkback', 'tgt'; made unique when both sides are the same kind). */
  readonly label: string;
  readonly start: StartTarget;
}

export interface IscsiBenchCase {
  readonly tool: 'qemu-img' | 'iscsi-perf';
  readonly rw: 'read' | 'write';
  readonly bs: number;
}

/** The cases of docs/iscsi-baselines.md §3, in its order. */
export const ISCSI_CASES: readonly IscsiBenchCase[] = [
  { tool: 'iscsi-perf', rw: 'read', bs: 4096 },
  { tool: 'iscsi-perf', rw: 'read', bs: 65536 },
  { tool: 'qemu-img', rw: 'read', bs: 4096 },
  { tool: 'qemu-img', rw: 'write', bs: 4096 },
  { tool: 'qemu-img', rw: 'read', bs: 65536 },
  { tool: 'qemu-img', rw: 'write', bs: 65536 },
];

export interface IscsiBenchOptions {
  /** A and B, in that order: ratios are A/B. */
  readonly targets: readonly [IscsiBenchTarget, IscsiBenchTarget];
  readonly cases?: readonly IscsiBenchCase[];
  readonly rounds: number;
  /** iscsi-perf's run time (-t), seconds. */
  readonly seconds: number;
  /** qemu-img bench's request count (-c) for 4 KiB and for 64 KiB requests. */
  readonly count4k: number;
  readonly count64k: number;
  readonly queueDepth?: number;
  /** The LUN store's size; qemu-img bench wraps around at its end. */
  readonly lunBytes: number;
  /** Also run qemu-img's cases on the file (default true). */
  readonly baseline?: boolean;
  /** Also run iscsi-perf's cases with our initiator (default true). */
  readonly ourInitiator?: boolean;
  readonly progress: (line: string) => void;
}

export type IscsiPath = 'A' | 'B' | 'file';

/** The client of a run: a case's own tool, or our initiator standing in for iscsi-perf. */
export type IscsiClient = IscsiBenchCase['tool'] | 'blkback-initiator';

export interface IscsiBenchResult {
  path: IscsiPath;
  round: number;
  tool: IscsiClient;
  rw: IscsiBenchCase['rw'];
  bs: number;
  ios: number;
  seconds: number;
  iops: number;
  mbps: number;
  /** The target process's CPU-seconds during the run (null for the file baseline). */
  targetCpuSeconds: number | null;
  targetCpuUsPerIo: number | null;
  /** The client's CPU-seconds (user + system), from the reaped-children counters (null where unreadable). */
  clientCpuSeconds: number | null;
  command: string;
}

export interface IscsiBenchReport {
  suite: 'iscsi';
  machine: MachineInfo;
  targets: { A: string; B: string };
  rounds: number;
  seconds: number;
  count4k: number;
  count64k: number;
  queueDepth: number;
  lunBytes: number;
  store: string;
  results: IscsiBenchResult[];
}

/** Why the suite cannot run here, or null. */
export function iscsiBenchUnavailable(): string | null {
  const missing = ['qemu-img', 'iscsi-perf'].filter((t) => !onPath(t));
  return missing.length === 0 ? null : `${missing.join(' and ')} not found (Debian packages qemu-utils, qemu-block-extra, libiscsi-bin)`;
}

function exec(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30 * 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(`${stdout}\n${stderr}`);
    });
  });
}

interface ClientRun {
  ios: number;
  seconds: number;
  command: string;
}

async function qemuImgBench(target: string, c: IscsiBenchCase, count: number, depth: number): Promise<ClientRun> {
  const args = [
    'bench',
    '-f',
    'raw',
    '-t',
    'none',
    '-c',
    String(count),
    '-d',
    String(depth),
    '-s',
    String(c.bs),
    ...(c.rw === 'write' ? ['-w', '--pattern=0xab'] : []),
    target,
  ];
  const out = await exec('qemu-img', args);
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (m === null) throw new Error(`qemu-img bench: no "Run completed" line in:\n${out}`);
  return { ios: count, seconds: Number(m[1]), command: `qemu-img ${args.join(' ')}` };
}

async function iscsiPerf(url: string, c: IscsiBenchCase, seconds: number, depth: number): Promise<ClientRun> {
  const args = ['-m', String(depth), '-b', String(c.bs / 512), '-t', String(seconds), url];
  const out = await exec('iscsi-perf', args);
  // The last "iops average N" is the whole run's (earlier ones are progress lines, \r-separated).
  const all = [...out.matchAll(/iops average (\d+)/g)];
  const last = all[all.length - 1];
  if (last === undefined) throw new Error(`iscsi-perf: no "iops average" in:\n${out}`);
  const iops = Number(last[1]);
  return { ios: iops * seconds, seconds, command: `iscsi-perf ${args.join(' ')}` };
}

async function ourInitiatorLoad(url: string, c: IscsiBenchCase, seconds: number, depth: number): Promise<ClientRun> {
  const args = [INITIATOR_LOAD_JS, url, String(c.bs), String(depth), String(seconds)];
  const out = await exec(process.execPath, args);
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (line === undefined) throw new Error(`iscsi-initiator-load: no result line in:\n${out}`);
  const r = JSON.parse(line) as InitiatorLoadResult;
  return { ios: r.ios, seconds: r.seconds, command: `node ${args.join(' ')}` };
}

interface PlannedRun {
  readonly path: IscsiPath;
  readonly tool: IscsiClient;
}

/** The runs of one case in a round, before rotation. */
function plannedRuns(c: IscsiBenchCase, baseline: boolean, ourInitiator: boolean): PlannedRun[] {
  const runs: PlannedRun[] = [
    { path: 'A', tool: c.tool },
    { path: 'B', tool: c.tool },
  ];
  if (c.tool === 'qemu-img' && baseline) runs.push({ path: 'file', tool: c.tool });
  if (c.tool === 'iscsi-perf' && ourInitiator) runs.push({ path: 'A', tool: 'blkback-initiator' }, { path: 'B', tool: 'blkback-initiator' });
  return runs;
}

export async function runIscsiBench(options: IscsiBenchOptions): Promise<IscsiBenchReport> {
  const why = iscsiBenchUnavailable();
  if (why !== null) throw new Error(`bench --suite iscsi cannot run here: ${why}`);
  const cases = options.cases ?? ISCSI_CASES;
  const depth = options.queueDepth ?? 32;
  const baseline = options.baseline ?? true;
  const ourInitiator = options.ourInitiator ?? true;
  const file = `/dev/shm/blkback-iscsi-bench-${process.pid}.img`;
  options.progress(`writing ${options.lunBytes} bytes of zeros to ${file}`);
  createLunFile(file, options.lunBytes, { fill: true });
  const running: RunningTarget[] = [];
  const results: IscsiBenchResult[] = [];
  try {
    // Both targets serve the same file for the whole run; one is driven at a time.
    for (const t of options.targets) running.push(await t.start({ backingFile: file, mode: 'thick' }));
    const [a, b] = running as [RunningTarget, RunningTarget];
    const total = options.rounds * cases.length;
    let n = 0;
    for (let round = 1; round <= options.rounds; round++) {
      for (const c of cases) {
        n++;
        for (const { path, tool } of rotation(plannedRuns(c, baseline, ourInitiator), round)) {
          const target = path === 'A' ? a : path === 'B' ? b : null;
          const name = path === 'file' ? 'file (no iSCSI)' : options.targets[path === 'A' ? 0 : 1].label;
          options.progress(`[${n}/${total}] ${options.rounds > 1 ? `round ${round}: ` : ''}${tool} ${c.rw} ${c.bs / 1024}k QD${depth}: ${name}`);
          const cpu0 = target === null ? null : processCpuSeconds(target.pid);
          const client0 = reapedChildCpu();
          const r =
            tool === 'qemu-img'
              ? await qemuImgBench(target?.url ?? file, c, c.bs >= 65536 ? options.count64k : options.count4k, depth)
              : tool === 'iscsi-perf'
                ? await iscsiPerf(target!.url, c, options.seconds, depth)
                : await ourInitiatorLoad(target!.url, c, options.seconds, depth);
          const client1 = reapedChildCpu();
          const cpu1 = target === null ? null : processCpuSeconds(target.pid);
          const targetCpu = cpu0 === null || cpu1 === null ? null : cpu1 - cpu0;
          results.push({
            path,
            round,
            ...c,
            tool,
            ios: r.ios,
            seconds: r.seconds,
            iops: r.ios / r.seconds,
            mbps: (r.ios * c.bs) / r.seconds / 1e6,
            targetCpuSeconds: targetCpu,
            targetCpuUsPerIo: targetCpu === null || r.ios === 0 ? null : (targetCpu * 1e6) / r.ios,
            clientCpuSeconds: client0 === null || client1 === null ? null : client1 - client0,
            command: r.command,
          });
        }
      }
    }
  } finally {
    for (const t of running) await t.stop();
    rmSync(file, { force: true });
  }
  return {
    suite: 'iscsi',
    machine: machineInfo(),
    targets: { A: options.targets[0].label, B: options.targets[1].label },
    rounds: options.rounds,
    seconds: options.seconds,
    count4k: options.count4k,
    count64k: options.count64k,
    queueDepth: depth,
    lunBytes: options.lunBytes,
    store: `${options.lunBytes}-byte /dev/shm file of zeros, served by both targets (LUN 1, thick)`,
    results,
  };
}

/**
 * One row per case: median IOPS, MB/s and target CPU per I/O of A and B, client CPU, the file
 * baseline, and A/B (median of the per-round ratios, with their range when there are several rounds).
 */
export function formatIscsiTable(report: IscsiBenchReport): string {
  const { A, B } = report.targets;
  const fmt = (v: number | undefined | null, digits = 0): string =>
    v === undefined || v === null ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const several = report.rounds > 1;
  const rows = [
    `| case | ${A} IOPS | ${B} IOPS | A/B IOPS |${several ? ' A/B per round |' : ''} ${A} MB/s | ${B} MB/s | ${A} CPU µs/IO | ${B} CPU µs/IO | A/B CPU per IO | client CPU s (A / B) | file IOPS | A/file |`,
    `|---|---:|---:|---:|${several ? '---|' : ''}---:|---:|---:|---:|---:|---|---:|---:|`,
  ];
  const key = (r: IscsiBenchResult): string => `${r.tool} ${r.rw} ${r.bs / 1024}k QD${report.queueDepth}`;
  for (const k of [...new Set(report.results.map(key))]) {
    const runs = report.results.filter((r) => key(r) === k);
    const med = (path: IscsiPath, f: (r: IscsiBenchResult) => number | null): number | undefined =>
      median(
        runs
          .filter((r) => r.path === path)
          .map(f)
          .filter((v): v is number => v !== null),
      );
    const perRound = (f: (r: IscsiBenchResult) => number | null, other: IscsiPath): number[] => {
      const out: number[] = [];
      for (const round of new Set(runs.map((r) => r.round))) {
        const x = runs.find((r) => r.path === 'A' && r.round === round);
        const y = runs.find((r) => r.path === other && r.round === round);
        const fx = x === undefined ? null : f(x);
        const fy = y === undefined ? null : f(y);
        if (fx !== null && fy !== null && fy > 0) out.push(fx / fy);
      }
      return out;
    };
    const iopsRatios = perRound((r) => r.iops, 'B');
    const range = iopsRatios.length > 1 ? ` ${fmt(Math.min(...iopsRatios), 2)}–${fmt(Math.max(...iopsRatios), 2)} |` : ' – |';
    rows.push(
      `| ${k} | ${fmt(med('A', (r) => r.iops))} | ${fmt(med('B', (r) => r.iops))} | ${fmt(median(iopsRatios), 2)} |${several ? range : ''} ` +
        `${fmt(med('A', (r) => r.mbps))} | ${fmt(med('B', (r) => r.mbps))} | ${fmt(
          med('A', (r) => r.targetCpuUsPerIo),
          1,
        )} | ${fmt(
          med('B', (r) => r.targetCpuUsPerIo),
          1,
        )} | ` +
        `${fmt(median(perRound((r) => r.targetCpuUsPerIo, 'B')), 2)} | ${fmt(
          med('A', (r) => r.clientCpuSeconds),
          2,
        )} / ${fmt(
          med('B', (r) => r.clientCpuSeconds),
          2,
        )} | ` +
        `${fmt(med('file', (r) => r.iops))} | ${fmt(median(perRound((r) => r.iops, 'file')), 2)} |`,
    );
  }
  const initiators = formatInitiatorTable(report);
  return initiators === '' ? rows.join('\n') : `${rows.join('\n')}\n\n${initiators}`;
}

/**
 * Our initiator against libiscsi's iscsi-perf, one row per case and target: median IOPS, MB/s and
 * client CPU per I/O of each, and ours/libiscsi as the median of each round's own ratio (with the
 * range when there are several rounds). Empty when the report has no runs of our initiator.
 */
export function formatInitiatorTable(report: IscsiBenchReport): string {
  const ours = report.results.filter((r) => r.tool === 'blkback-initiator');
  if (ours.length === 0) return '';
  const fmt = (v: number | undefined | null, digits = 0): string =>
    v === undefined || v === null ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const clientUsPerIo = (r: IscsiBenchResult): number | null => (r.clientCpuSeconds === null || r.ios === 0 ? null : (r.clientCpuSeconds * 1e6) / r.ios);
  const several = report.rounds > 1;
  const rows = [
    `| initiator case (ours vs libiscsi iscsi-perf) | target | libiscsi IOPS | ours IOPS | ours/libiscsi IOPS |${several ? ' per round |' : ''} libiscsi MB/s | ours MB/s | client CPU µs/IO (libiscsi / ours) | ours/libiscsi client CPU per IO | target CPU µs/IO (libiscsi / ours) |`,
    `|---|---|---:|---:|---:|${several ? '---|' : ''}---:|---:|---|---:|---|`,
  ];
  for (const bs of [...new Set(ours.map((r) => r.bs))]) {
    for (const path of ['A', 'B'] as const) {
      const runs = report.results.filter(
        (r) => r.bs === bs && r.path === path && r.rw === 'read' && (r.tool === 'iscsi-perf' || r.tool === 'blkback-initiator'),
      );
      const side = (tool: IscsiClient): IscsiBenchResult[] => runs.filter((r) => r.tool === tool);
      const med = (tool: IscsiClient, f: (r: IscsiBenchResult) => number | null): number | undefined =>
        median(
          side(tool)
            .map(f)
            .filter((v): v is number => v !== null),
        );
      const perRound = (f: (r: IscsiBenchResult) => number | null): number[] => {
        const out: number[] = [];
        for (const x of side('blkback-initiator')) {
          const y = side('iscsi-perf').find((r) => r.round === x.round);
          const fx = f(x);
          const fy = y === undefined ? null : f(y);
          if (fx !== null && fy !== null && fy > 0) out.push(fx / fy);
        }
        return out;
      };
      const ratios = perRound((r) => r.iops);
      const range = ratios.length > 1 ? ` ${fmt(Math.min(...ratios), 2)}–${fmt(Math.max(...ratios), 2)} |` : ' – |';
      rows.push(
        `| read ${bs / 1024}k QD${report.queueDepth} | ${report.targets[path]} | ${fmt(med('iscsi-perf', (r) => r.iops))} | ${fmt(med('blkback-initiator', (r) => r.iops))} | ${fmt(median(ratios), 2)} |${several ? range : ''} ` +
          `${fmt(med('iscsi-perf', (r) => r.mbps))} | ${fmt(med('blkback-initiator', (r) => r.mbps))} | ${fmt(med('iscsi-perf', clientUsPerIo), 1)} / ${fmt(med('blkback-initiator', clientUsPerIo), 1)} | ` +
          `${fmt(median(perRound(clientUsPerIo)), 2)} | ${fmt(
            med('iscsi-perf', (r) => r.targetCpuUsPerIo),
            1,
          )} / ${fmt(
            med('blkback-initiator', (r) => r.targetCpuUsPerIo),
            1,
          )} |`,
      );
    }
  }
  return rows.join('\n');
}
