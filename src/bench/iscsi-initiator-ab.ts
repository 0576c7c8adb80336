// A/B of initiator builds against libiscsi's iscsi-perf on one running target, in alternating rounds:
//   node iscsi-initiator-ab.js URL BS ROUNDS SECONDS [--target-pid PID] CLIENT...
// CLIENT is a directory holding a build (DIR/dist/src/bench/iscsi-initiator-load.js, for example a
// copy of dist made before a change) or `iscsi-perf`. Each round runs every client once for SECONDS
// at QD32 (sequential reads of BS bytes), the first rotating with the round. Per run: IOPS; the
// client's CPU per I/O (ours: its own process.cpuUsage from the first read to the last, so Node's
// start-up and the login are left out; iscsi-perf: its whole process, whose start-up is negligible);
// our user CPU alone; the target's CPU per I/O from procfs when --target-pid is given. Then medians
// per client and, against the first client and against iscsi-perf, the median of each round's own
// ratio with its range: on a shared machine single runs swing widely, neighbouring runs less.
// Prints one JSON line per run, then the summary.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { processCpuSeconds } from './iscsi-target.ts';
import type { InitiatorLoadResult } from './iscsi-initiator-load.ts';
import { median } from './median.ts';
import { rotation } from '../reproduce/rotation.ts';

/** User and system CPU seconds of this process's reaped children (cutime, cstime of /proc/self/stat). */
function reapedChildTimes(): { user: number; system: number } {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[13]) / 100, system: Number(f[14]) / 100 }; // USER_HZ is 100 on Linux
}

export interface AbRun {
  readonly client: string;
  readonly round: number;
  readonly iops: number;
  /** Client CPU (user + system) per I/O, µs. */
  readonly cpuUsPerIo: number;
  /** Client user CPU per I/O, µs. */
  readonly userUsPerIo: number;
  readonly targetUsPerIo: number | null;
}

function run(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 10 * 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(`${stdout}\n${stderr}`);
    });
  });
}

async function once(client: string, url: string, bs: number, seconds: number, round: number, targetPid: number | undefined): Promise<AbRun> {
  const t0 = targetPid === undefined ? null : processCpuSeconds(targetPid);
  const c0 = reapedChildTimes();
  let ios: number;
  let cpuUs: number;
  let userUs: number;
  let elapsed: number;
  if (client === 'iscsi-perf') {
    const out = await run('iscsi-perf', ['-m', '32', '-b', String(bs / 512), '-t', String(seconds), url]);
    const all = [...out.matchAll(/iops average (\d+)/g)];
    const last = all[all.length - 1];
    if (last === undefined) throw new Error(`iscsi-perf: no "iops average" in:\n${out}`);
    elapsed = seconds;
    ios = Number(last[1]) * seconds;
    const c1 = reapedChildTimes();
    userUs = (c1.user - c0.user) * 1e6;
    cpuUs = userUs + (c1.system - c0.system) * 1e6;
  } else {
    const out = await run(process.execPath, [join(client, 'dist/src/bench/iscsi-initiator-load.js'), url, String(bs), '32', String(seconds)]);
    const line = out.split('\n').find((l) => l.startsWith('{'));
    if (line === undefined) throw new Error(`${client}: no result line in:\n${out}`);
    const r = JSON.parse(line) as InitiatorLoadResult;
    ios = r.ios;
    elapsed = r.seconds;
    cpuUs = r.cpuUserUs + r.cpuSystemUs;
    userUs = r.cpuUserUs;
  }
  const t1 = targetPid === undefined ? null : processCpuSeconds(targetPid);
  return {
    client,
    round,
    iops: ios / elapsed,
    cpuUsPerIo: cpuUs / ios,
    userUsPerIo: userUs / ios,
    targetUsPerIo: t0 === null || t1 === null ? null : ((t1 - t0) * 1e6) / ios,
  };
}

export async function runInitiatorAb(
  url: string,
  bs: number,
  rounds: number,
  seconds: number,
  clients: readonly string[],
  targetPid: number | undefined,
  out: (line: string) => void,
): Promise<AbRun[]> {
  const runs: AbRun[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const client of rotation(clients, round)) {
      const r = await once(client, url, bs, seconds, round, targetPid);
      runs.push(r);
      out(JSON.stringify(r));
    }
  }
  return runs;
}

/** Medians per client; per-round ratios against the first client and against iscsi-perf. */
export function summarizeAb(runs: readonly AbRun[], clients: readonly string[]): string {
  const f = (v: number | undefined, d = 1): string => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));
  const lines: string[] = [];
  const of = (c: string): AbRun[] => runs.filter((r) => r.client === c);
  for (const c of clients) {
    const rs = of(c);
    const tgt = rs.map((r) => r.targetUsPerIo).filter((v): v is number => v !== null);
    lines.push(
      `${c}: IOPS ${f(median(rs.map((r) => r.iops)), 0)}, client CPU µs/IO ${f(median(rs.map((r) => r.cpuUsPerIo)))} (user ${f(median(rs.map((r) => r.userUsPerIo)))}), target CPU µs/IO ${f(median(tgt))}`,
    );
  }
  const ratio = (c: string, ref: string, k: 'iops' | 'cpuUsPerIo'): string => {
    const q: number[] = [];
    for (const r of of(c)) {
      const b = of(ref).find((x) => x.round === r.round);
      if (b !== undefined && b[k] > 0) q.push(r[k] / b[k]);
    }
    return q.length === 0 ? '–' : `${f(median(q), 2)} (${f(Math.min(...q), 2)}–${f(Math.max(...q), 2)})`;
  };
  const first = clients.find((c) => c !== 'iscsi-perf');
  for (const c of clients) {
    if (c === 'iscsi-perf') continue;
    const parts: string[] = [];
    if (c !== first && first !== undefined) parts.push(`vs ${first}: IOPS ${ratio(c, first, 'iops')}, CPU/IO ${ratio(c, first, 'cpuUsPerIo')}`);
    if (clients.includes('iscsi-perf')) parts.push(`vs iscsi-perf: IOPS ${ratio(c, 'iscsi-perf', 'iops')}, CPU/IO ${ratio(c, 'iscsi-perf', 'cpuUsPerIo')}`);
    if (parts.length > 0) lines.push(`${c}: ${parts.join('; ')}`);
  }
  return lines.join('\n');
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) {
  const args = process.argv.slice(2);
  let targetPid: number | undefined;
  const at = args.indexOf('--target-pid');
  if (at >= 0) {
    targetPid = Number(args[at + 1]);
    args.splice(at, 2);
  }
  const [url, bs, rounds, seconds, ...clients] = args;
  if (url === undefined || clients.length === 0) {
    process.stderr.write('usage: node iscsi-initiator-ab.js URL BS ROUNDS SECONDS [--target-pid PID] CLIENT... (CLIENT: a build directory or iscsi-perf)\n');
    process.exit(2);
  }
  runInitiatorAb(url, Number(bs), Number(rounds), Number(seconds), clients, targetPid, (l) => process.stdout.write(`${l}\n`)).then(
    (runs) => process.stdout.write(`${summarizeAb(runs, clients)}\n`),
    (err: unknown) => {
      process.stderr.write(`iscsi-initiator-ab: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
