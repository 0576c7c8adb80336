// `blkback bench --suite net`: stores over the network, against their peers, same round, same machine.
//   server  our NBD server vs nbdkit (memory plugin) vs qemu-nbd (a /dev/shm raw file), each serving a
//           RAM export prefilled with the same random bytes, all driven by `fio --ioengine=nbd` over a
//           Unix socket on the seed's jobs (derived copies: net-fio-jobs.ts). Goal: ours >= 1.2x nbdkit.
//   client  our NBD client (our fio runner bare on an nbd+unix:// store) vs fio's nbd engine, both
//           against the same nbdkit. Goal: ours >= 0.9x fio.
//   rbd     our rbd: store (our runner bare on it) vs `fio --ioengine=rbd` on the same image, prefilled
//           first (librbd answers reads of unwritten objects without asking an OSD). Goal >= 0.9x.
// Paths of a part take turns within each round, the first rotating with the round (rotation.ts).
// The NBD parts' rounds come first; the rbd part's follow, with the NBD servers stopped and the
// cluster brought up only then, so that neither skews the other's figures.
// fio runs from a helper forked early (spawner.ts: no fork from this process once it has grown).
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFio } from '../fio/session.ts';
import type { JobResult } from '../fio/stats.ts';
import { openBlockDevice } from '../stores/open.ts';
import { rotation } from '../reproduce/rotation.ts';
import { fioRuntime } from '../reproduce/fio-runtime.ts';
import { onPath, processCpuSeconds } from './iscsi-target.ts';
import { machineInfo } from './machine.ts';
import { deriveNetFioJob, fioJobArgs, shellLine } from './net-fio-jobs.ts';
import type { NetFioEngine } from './net-fio-jobs.ts';
import type { NetBenchReport, NetBenchResult, NetGoal, NetPart } from './net-report.ts';
import { nbdServerUnavailable, startNbdServer } from './nbd-servers.ts';
import type { NbdServerKind, RunningNbdServer } from './nbd-servers.ts';
import { parseFioJson } from './runner-bench.ts';
import { defaultSeedJobText } from './seed-bench.ts';
import type { SeedJob } from './seed-bench.ts';
import { Spawner } from './spawner.ts';
import { openRbdRig, startThrowawayRbdRig, throwawayUnavailable } from '../rig/rbd-rig.ts';
import type { RbdRig } from '../rig/rbd-rig.ts';

export interface NetBenchRbd {
  readonly conf: string;
  /** POOL/IMAGE */
  readonly image: string;
  /** cephx user without 'client.' (default admin). */
  readonly id?: string;
}

export interface NetBenchOptions {
  readonly seconds: number;
  readonly rounds: number;
  /** size= of every job, bytes; also each export's size and the span of the rbd prefill. */
  readonly size: number;
  readonly jobs: readonly SeedJob[];
  /** The servers of the server part (default all three); empty: no server part. */
  readonly servers?: readonly NbdServerKind[];
  /** Run the client part (default true; needs nbdkit). */
  readonly client?: boolean;
  /**
   * The rbd part's cluster: an existing one, 'throwaway' (one memstore OSD brought up for the run,
   * skipped with the reason where Ceph is not installed), or 'none' (the default): no rbd part.
   */
  readonly rbd?: NetBenchRbd | 'throwaway' | 'none';
  readonly jobText?: (job: SeedJob) => string;
  readonly progress: (line: string) => void;
}

export const SERVER_LABEL: Record<NbdServerKind, string> = { blkback: 'blkback nbd-server', nbdkit: 'nbdkit memory', 'qemu-nbd': 'qemu-nbd' };
const OUR_CLIENT = 'blkback nbd client';
const FIO_NBD = 'fio nbd engine';
const OUR_RBD = 'blkback rbd: store';
const FIO_RBD = 'fio rbd engine';

export const NET_GOALS: readonly NetGoal[] = [
  { part: 'server', ours: SERVER_LABEL.blkback, theirs: SERVER_LABEL.nbdkit, atLeast: 1.2 },
  { part: 'client', ours: OUR_CLIENT, theirs: FIO_NBD, atLeast: 0.9 },
  { part: 'rbd', ours: OUR_RBD, theirs: FIO_RBD, atLeast: 0.9 },
];

/** One measured run before its place in the turn is known. */
type Measured = Omit<NetBenchResult, 'part' | 'job' | 'path' | 'round' | 'position'>;

interface PlannedPath {
  readonly label: string;
  /** Runs one job's text; returns what it measured. */
  run(job: SeedJob, text: string): Promise<Measured>;
}

export async function runNetBench(o: NetBenchOptions): Promise<NetBenchReport> {
  const readJob = o.jobText ?? defaultSeedJobText;
  const texts = new Map(o.jobs.map((j) => [j, readJob(j)] as const));
  const skipped: string[] = [];
  const setup: string[] = [];
  if (!onPath('fio')) throw new Error('bench --suite net: fio not found (Debian package fio, 3.33 with the nbd and rbd engines)');
  // Forked while this process is small; every fio run goes through it.
  const spawner = Spawner.start();
  const tmp = mkdtempSync(join(tmpdir(), 'blkback-net-bench-'));
  const servers = new Map<NbdServerKind, RunningNbdServer>();
  const results: NetBenchResult[] = [];
  let rbdRig: RbdRig | null = null;
  try {
    const image = join(tmp, 'prefill.raw');
    writeRandomFile(image, o.size);
    const wanted = new Set<NbdServerKind>(o.servers ?? ['blkback', 'nbdkit', 'qemu-nbd']);
    if (o.client ?? true) wanted.add('nbdkit');
    for (const kind of wanted) {
      const why = nbdServerUnavailable(kind);
      if (why !== null) {
        skipped.push(`${SERVER_LABEL[kind]}: ${why}`);
        continue;
      }
      o.progress(`[net] starting ${SERVER_LABEL[kind]} (${o.size} bytes) and filling it with ${image} (nbdcopy)`);
      try {
        const s = await startNbdServer(kind, o.size);
        servers.set(kind, s);
        setup.push(`${SERVER_LABEL[kind]}: ${s.command}`);
        await spawner.check('nbdcopy', [image, s.uri]);
      } catch (err) {
        skipped.push(`${SERVER_LABEL[kind]}: could not start or fill it: ${(err as Error).message.split('\n')[0]}`);
      }
    }

    const parts: { part: NetPart; paths: PlannedPath[] }[] = [];
    const serverPaths = (o.servers ?? ['blkback', 'nbdkit', 'qemu-nbd'])
      .map((k) => servers.get(k))
      .filter((s): s is RunningNbdServer => s !== undefined)
      .map((s) => fioPath(SERVER_LABEL[s.kind], { ioengine: 'nbd', uri: s.uri }, s.pid));
    if (serverPaths.length > 0) parts.push({ part: 'server', paths: serverPaths });
    const nbdkit = servers.get('nbdkit');
    if (o.client ?? true) {
      if (nbdkit === undefined) skipped.push('client part: needs nbdkit');
      else {
        setup.push("client: our runner opens the store once for all of a job's numjobs (one client); fio's nbd engine opens one connection per job");
        parts.push({
          part: 'client',
          paths: [ourRunnerPath(OUR_CLIENT, nbdkit.uri, nbdkit.pid), fioPath(FIO_NBD, { ioengine: 'nbd', uri: nbdkit.uri }, nbdkit.pid)],
        });
      }
    }
    // The rbd part runs after the NBD parts, its cluster brought up only then: Ceph's daemons keep
    // busy even when idle (a load of 5 here while it comes up) and would skew the NBD figures.
    const rbdPaths = (o.rbd ?? 'none') === 'none' ? 0 : 2;
    let total = o.rounds * o.jobs.length * (parts.reduce((n, p) => n + p.paths.length, 0) + rbdPaths);
    let n = 0;
    await runRounds(parts);
    for (const s of servers.values()) await s.stop();
    servers.clear();
    const rig = await openRig();
    if (rig !== null) {
      o.progress(`[net] prefilling ${o.size} bytes of ${rig.spec} with random data`);
      await prefillStore(rig.spec, image, o.size);
      setup.push(`rbd: ${rig.description}; first ${o.size} bytes prefilled with random data; our runner opens the image once, fio's rbd engine once per job`);
      const engine: NetFioEngine = { ioengine: 'rbd', pool: rig.pool, image: rig.image, clientname: rig.id };
      const conf = /:conf=([^:]+)/.exec(rig.spec)?.[1];
      await runRounds([
        {
          part: 'rbd',
          paths: [ourRunnerPath(OUR_RBD, rig.spec, null), fioPath(FIO_RBD, engine, null, conf === undefined ? {} : { CEPH_CONF: conf })],
        },
      ]);
    } else total -= o.rounds * o.jobs.length * rbdPaths;

    /** Every round of these parts; a part's paths take turns within each round. */
    async function runRounds(planned: readonly { part: NetPart; paths: PlannedPath[] }[]): Promise<void> {
      for (let round = 1; round <= o.rounds; round++) {
        for (const job of o.jobs) {
          for (const { part, paths } of planned) {
            for (const [i, p] of rotation(paths, round).entries()) {
              n++;
              o.progress(`[net ${n}/${total}] round ${round}: ${job} ${part}: ${p.label} (${o.seconds} s)`);
              // One path failing (a peer that crashed) leaves the others' figures standing; the report says so.
              try {
                const m = await p.run(job, texts.get(job)!);
                results.push({ part, job, path: p.label, round, position: i + 1, ...m });
              } catch (err) {
                const line = `${p.label}, ${job}, round ${round}: failed: ${(err as Error).message.split('\n')[0]}`;
                o.progress(`[net] ${line}`);
                skipped.push(line);
              }
            }
          }
        }
      }
    }
  } finally {
    // Set inside openRig(): TypeScript cannot see that, so it would narrow this to null.
    await (rbdRig as RbdRig | null)?.close();
    for (const s of servers.values()) await s.stop();
    spawner.close();
    rmSync(tmp, { recursive: true, force: true });
  }
  return { suite: 'net', machine: machineInfo(), seconds: o.seconds, rounds: o.rounds, sizeBytes: o.size, setup, skipped, goals: [...NET_GOALS], results };

  /** The rbd part's cluster and image, or null (the reason is in `skipped`). */
  async function openRig(): Promise<RbdRig | null> {
    const r = o.rbd ?? 'none';
    if (r === 'none') {
      skipped.push('rbd part: not asked for');
      return null;
    }
    if (r === 'throwaway') {
      const why = throwawayUnavailable(1);
      if (why !== null) {
        skipped.push(`rbd part: no cluster given (--rbd-conf, --rbd-image), and none can be brought up here: ${why}`);
        return null;
      }
      rbdRig = await startThrowawayRbdRig({ osds: 1, imageBytes: o.size, log: o.progress });
    } else {
      rbdRig = await openRbdRig({ conf: r.conf, image: r.image, minBytes: o.size, ...(r.id === undefined ? {} : { id: r.id }) });
    }
    return rbdRig;
  }

  /** Real fio with a network engine; `serverPid`: whose CPU to charge per I/O. */
  function fioPath(label: string, engine: NetFioEngine, serverPid: number | null, env: Record<string, string> = {}): PlannedPath {
    return {
      label,
      async run(job, text) {
        const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
        const args = ['--output-format=json', ...fioJobArgs(deriveNetFioJob(text, { engine, size: o.size, seconds: o.seconds }))];
        const cpu0 = serverPid === null ? null : processCpuSeconds(serverPid);
        const stdout = envArgs.length === 0 ? await spawner.check('fio', args) : await spawner.check('env', [...envArgs, 'fio', ...args]);
        const serverCpu = serverPid === null ? null : processCpuSeconds(serverPid) - cpu0!;
        let bytes = 0;
        let ios = 0;
        let ms = 0;
        let clientCpu = 0;
        for (const j of parseFioJson(stdout)) {
          if (j.error !== 0) throw new Error(`bench --suite net: ${label} run of ${job} failed: job ${j.jobname} error ${j.error}`);
          bytes += j.read.io_bytes + j.write.io_bytes;
          ios += j.read.total_ios + j.write.total_ios;
          ms = Math.max(ms, j.job_runtime);
          clientCpu += ((j.usr_cpu + j.sys_cpu) / 100) * (j.job_runtime / 1000);
        }
        return rates(bytes, ios, ms / 1000, serverCpu, clientCpu, shellLine([...(envArgs.length === 0 ? [] : ['env', ...envArgs]), 'fio', ...args]));
      },
    };
  }

  /** Our fio runner bare on a store spec, in this process (as `blkback fio --bare` runs it). */
  function ourRunnerPath(label: string, spec: string, serverPid: number | null): PlannedPath {
    const overrides = [`size=${o.size}`, `runtime=${fioRuntime(o.seconds)}`, 'time_based=1'];
    return {
      label,
      async run(job, text) {
        const cpu0 = serverPid === null ? null : processCpuSeconds(serverPid);
        const usage0 = process.cpuUsage();
        // logDir null: no logs (the seed's write_*_log would log every I/O).
        const outcome = await runFio({ files: [{ path: `jobs/${job}.fio`, text }], overrides, target: { kind: 'bare', spec }, logDir: null });
        const usage = process.cpuUsage(usage0);
        const serverCpu = serverPid === null ? null : processCpuSeconds(serverPid) - cpu0!;
        const { bytes, ios, seconds } = totals(outcome.results, label, job);
        const command = shellLine([
          'blkback',
          'fio',
          '--bare',
          '--disk',
          `vdev=xvda,access=rw,target=${spec}`,
          ...overrides.flatMap((s) => ['--set', s]),
          `jobs/${job}.fio`,
        ]);
        return rates(bytes, ios, seconds, serverCpu, (usage.user + usage.system) / 1e6, command);
      },
    };
  }
}

function totals(results: readonly JobResult[], label: string, job: SeedJob): { bytes: number; ios: number; seconds: number } {
  let bytes = 0;
  let ios = 0;
  let ms = 0;
  for (const r of results) {
    if (r.error !== 0) throw new Error(`bench --suite net: ${label} run of ${job} failed: ${r.errorMessage}`);
    for (const d of r.dirs) {
      bytes += d.ioBytes;
      ios += d.totalIos;
    }
    ms = Math.max(ms, r.runtimeMs);
  }
  return { bytes, ios, seconds: ms / 1000 };
}

function rates(bytes: number, ios: number, seconds: number, serverCpu: number | null, clientCpu: number | null, command: string): Measured {
  const s = seconds > 0 ? seconds : Number.NaN;
  const perIo = (cpu: number | null): number | null => (cpu === null || ios === 0 ? null : (cpu * 1e6) / ios);
  return { bytes, ios, seconds, mbps: bytes / s / 1e6, iops: ios / s, serverCpuUsPerIo: perIo(serverCpu), clientCpuUsPerIo: perIo(clientCpu), command };
}

function writeRandomFile(path: string, bytes: number): void {
  const chunk = Buffer.alloc(1 << 20);
  const fd = openSync(path, 'w');
  try {
    for (let at = 0; at < bytes; at += chunk.length) writeSync(fd, randomFillSync(chunk), 0, Math.min(chunk.length, bytes - at));
  } finally {
    closeSync(fd);
  }
}

/** Copies the first `bytes` of `file` onto the store (through our own driver for it). */
async function prefillStore(spec: string, file: string, bytes: number): Promise<void> {
  const device = await openBlockDevice(spec);
  try {
    const data = readFileSync(file);
    const step = 4 << 20;
    for (let at = 0; at < bytes; at += step) await device.writev(at, [data.subarray(at, Math.min(bytes, at + step))]);
    await device.flush();
  } finally {
    await device.close();
  }
}
