// The tables of `bench --suite net`: pure, report in, Markdown out. Every ratio is the median of the
// rounds' own ratios (ours over theirs, same job, same round), never a ratio of medians: a shared
// machine's load moves whole rounds, and a per-round ratio cancels that.
import type { MachineInfo } from './machine.ts';
import { median } from './median.ts';
import type { SeedJob } from './seed-bench.ts';

/** Which comparison a run belongs to. */
export type NetPart = 'server' | 'client' | 'rbd';

export interface NetBenchResult {
  part: NetPart;
  job: SeedJob;
  /** Who did the work being measured: 'blkback nbd-server', 'nbdkit memory', 'fio nbd engine', ... */
  path: string;
  round: number;
  /** 1-based place in its part's turn (the order rotates with the round). */
  position: number;
  bytes: number;
  ios: number;
  /** The longest job's runtime, seconds: rates are totals over it, as fio's group figures. */
  seconds: number;
  mbps: number;
  iops: number;
  /** The server process's CPU (user + system, all threads) per I/O, µs; null when not ours to read. */
  serverCpuUsPerIo: number | null;
  /** The client's CPU per I/O, µs: fio's usr+sys over its jobs, or this process for our runner. */
  clientCpuUsPerIo: number | null;
  /** The command that made the figure (the job file it ran is named in it). */
  command: string;
}

export interface NetGoal {
  readonly part: NetPart;
  /** The path whose figure is over the other's. */
  readonly ours: string;
  readonly theirs: string;
  /** ours/theirs (MB/s) at least this. */
  readonly atLeast: number;
}

export interface NetBenchReport {
  suite: 'net';
  machine: MachineInfo;
  seconds: number;
  rounds: number;
  sizeBytes: number;
  /** What each path is and how it was started, one line each. */
  setup: string[];
  /** Parts (or paths) that did not run, each with its reason. */
  skipped: string[];
  goals: NetGoal[];
  results: NetBenchResult[];
}

export interface NetRatio {
  readonly goal: NetGoal;
  readonly job: SeedJob;
  /** Median over rounds of each round's ours/theirs MB/s; null when no round has both. */
  readonly ratio: number | null;
  readonly perRound: number[];
  readonly met: boolean | null;
}

/** ours/theirs per goal and job, from rounds in which both ran. */
export function netRatios(report: NetBenchReport): NetRatio[] {
  const out: NetRatio[] = [];
  const jobs = [...new Set(report.results.map((r) => r.job))];
  for (const goal of report.goals) {
    for (const job of jobs) {
      const runs = report.results.filter((r) => r.part === goal.part && r.job === job);
      const perRound: number[] = [];
      for (const round of [...new Set(runs.map((r) => r.round))]) {
        const a = runs.find((r) => r.round === round && r.path === goal.ours);
        const b = runs.find((r) => r.round === round && r.path === goal.theirs);
        if (a !== undefined && b !== undefined && b.mbps > 0) perRound.push(a.mbps / b.mbps);
      }
      const ratio = median(perRound) ?? null;
      out.push({ goal, job, ratio, perRound, met: ratio === null ? null : ratio >= goal.atLeast });
    }
  }
  return out;
}

const fmt = (v: number | null | undefined, digits = 0): string =>
  v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

const PART_TITLE: Record<NetPart, string> = {
  server: 'NBD servers, driven by fio --ioengine=nbd over a Unix socket',
  client: 'NBD clients against nbdkit (memory plugin)',
  rbd: 'Ceph RBD: our rbd: store vs fio --ioengine=rbd, same image',
};

/** Per part: medians of each path per job (MB/s, IOPS, CPU per I/O), then the goals with their ratios. */
export function formatNetTables(report: NetBenchReport): string {
  const sections: string[] = [];
  const several = report.rounds > 1;
  for (const part of ['server', 'client', 'rbd'] as const) {
    const runs = report.results.filter((r) => r.part === part);
    if (runs.length === 0) continue;
    const rows = [
      `### ${PART_TITLE[part]}`,
      '',
      '| job | path | MB/s | IOPS | server CPU µs/IO | client CPU µs/IO | runs |',
      '|---|---|---:|---:|---:|---:|---:|',
    ];
    for (const job of [...new Set(runs.map((r) => r.job))]) {
      for (const path of [...new Set(runs.map((r) => r.path))]) {
        const of = runs.filter((r) => r.job === job && r.path === path);
        if (of.length === 0) continue;
        const med = (f: (r: NetBenchResult) => number | null): number | undefined =>
          median(of.map(f).filter((v): v is number => v !== null && Number.isFinite(v)));
        rows.push(
          `| ${job} | ${path} | ${fmt(med((r) => r.mbps))} | ${fmt(med((r) => r.iops))} | ${fmt(
            med((r) => r.serverCpuUsPerIo),
            1,
          )} | ${fmt(
            med((r) => r.clientCpuUsPerIo),
            1,
          )} | ${of.length} |`,
        );
      }
    }
    const goals = netRatios(report).filter((q) => q.goal.part === part);
    if (goals.length > 0) {
      rows.push('', `| job | ratio (MB/s) | ${several ? 'per round | ' : ''}goal | met |`, `|---|---|${several ? '---|' : ''}---|---|`);
      for (const q of goals) {
        const range = q.perRound.map((x) => fmt(x, 2)).join(', ');
        rows.push(
          `| ${q.job} | ${q.goal.ours} / ${q.goal.theirs}: ${q.ratio === null ? '–' : `${fmt(q.ratio, 2)}x`} | ${several ? `${range || '–'} | ` : ''}≥ ${q.goal.atLeast}x | ${q.met === null ? '–' : q.met ? 'yes' : 'no'} |`,
        );
      }
    }
    sections.push(rows.join('\n'));
  }
  const commands = [...new Set(report.results.map((r) => `- ${r.path} (${r.job}): \`${r.command}\``))];
  if (commands.length > 0) sections.push(`commands:\n${commands.join('\n')}`);
  if (report.skipped.length > 0) sections.push(report.skipped.map((s) => `not run: ${s}`).join('\n'));
  return sections.join('\n\n');
}
