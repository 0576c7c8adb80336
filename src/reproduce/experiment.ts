// The 2011 mail's experiment as one run: both seed job files, on the seed's two guest configurations
// — phy (direct I/O, zero-copy into granted pages: the kernel blkback analog) and file (page cache:
// QEMU's qdisk analog) — over one RAM store standing in for the seed's iSCSI RAM disk, N runs each,
// backends interleaved run by run, the first rotating with the run (src/reproduce/rotation.ts), so
// drift in the machine's load, and whatever one backend leaves behind for the next (a warm page
// cache), hit both alike.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';
import { parseXlConfig } from '../config/xl-cfg.ts';
import { runFio } from '../fio/session.ts';
import type { JobFileText } from '../fio/session.ts';
import type { FioJob } from '../fio/job.ts';
import type { JobResult } from '../fio/stats.ts';
import { LatencyHistogram } from '../stats/latency-histogram.ts';
import type { GuestConfig } from '../sim-host/host.ts';
import { guestConfigFromXl } from '../sim-host/from-xl.ts';
import { fioRuntime } from './fio-runtime.ts';
import { orderLine, rotation } from './rotation.ts';
import { openBlockDevice } from '../stores/open.ts';
import { SimHost } from '../sim-host/host.ts';
import { SEED_LINK, parseLinkSpec } from '../rig/link-spec.ts';
import type { LinkSpec } from '../rig/link-spec.ts';
import { openIscsiRig } from '../rig/iscsi-rig.ts';
import type { IscsiRig } from '../rig/iscsi-rig.ts';

export const BACKENDS = ['phy', 'file'] as const;
export type Backend = (typeof BACKENDS)[number];

export interface ExperimentOptions {
  readonly jobFiles: readonly JobFileText[];
  readonly guestConfigs: Readonly<Record<Backend, { path: string; text: string }>>;
  readonly runs: number;
  readonly runtimeSeconds: number;
  /** Bytes of the RAM store (and the jobs' size=). */
  readonly storeBytes: number;
  /** Store spec overriding the /dev/shm file + loop device (both backends use it). */
  readonly storage?: string;
  /** What the report says of `storage` (default: that --storage gave it). */
  readonly storageNote?: string;
  /**
   * 'local' (default): the store above on this host. 'iscsi': the seed's rig, a RAM LUN on our
   * target in a network namespace behind `link` (default 1gbit), reached by our initiator.
   */
  readonly rig?: 'local' | 'iscsi';
  readonly link?: LinkSpec;
  readonly outDir: string;
  readonly progress: (line: string) => void;
  readonly onStatus?: (line: string) => void;
}

export interface RunRecord {
  readonly job: string;
  readonly backend: Backend;
  readonly run: number;
  /** 1-based place in its run's turn (the order rotates with the run). */
  readonly position: number;
  readonly logDir: string;
  readonly results: JobResult[];
  readonly jobs: readonly FioJob[];
}

export interface ExperimentOutcome {
  readonly records: RunRecord[];
  /** What stood in for the seed's iSCSI RAM disk, per backend. */
  readonly storage: Record<Backend, string>;
  readonly notes: string[];
  readonly overrides: string[];
  /** With --rig iscsi: the link, and the CPU the two ends of it spent over the runs. */
  readonly rig?: RigReport;
}

export interface RigReport {
  readonly link: string;
  /** True when the link is what the user asked for (false: the loopback fallback). */
  readonly asked: boolean;
  readonly targetCpuSeconds: number;
  /** This process: our initiator, blkback and the guests. */
  readonly hostCpuSeconds: number;
  /** Of which its main thread: blkback and our initiator (the guests are worker threads). */
  readonly mainThreadCpuSeconds: number;
  readonly wallSeconds: number;
}

const SEED_TARGET = '/dev/sdb';

export async function runExperiment(o: ExperimentOptions): Promise<ExperimentOutcome> {
  const notes: string[] = [];
  const rig = o.rig === 'iscsi' ? await openIscsiRig(o.link ?? parseLinkSpec(SEED_LINK), o.storeBytes) : undefined;
  const store = rig === undefined ? await prepareStore(o, notes) : iscsiStore(rig, notes);
  const started = { wall: Date.now(), host: process.cpuUsage(), target: rig?.targetCpuSeconds() ?? 0, main: rig?.mainThreadCpuSeconds() ?? 0 };
  try {
    const configs: Record<Backend, GuestConfig> = {
      phy: guestConfigFromXl(parseXlConfig(o.guestConfigs.phy.text, o.guestConfigs.phy.path)),
      file: guestConfigFromXl(parseXlConfig(o.guestConfigs.file.text, o.guestConfigs.file.path)),
    };
    const records: RunRecord[] = [];
    const overrides = [`size=${o.storeBytes}`, `runtime=${fioRuntime(o.runtimeSeconds)}`, 'time_based=1'];
    const total = o.jobFiles.length * o.runs * BACKENDS.length;
    let step = 0;
    for (const file of o.jobFiles) {
      const jobName = file.path.replace(/^.*\//, '').replace(/\.fio$/, '');
      // The 2011 fio logged bandwidth every 500 ms; one row per I/O would distort the run.
      const extra = /^\s*log_avg_msec\s*=/m.test(file.text) ? [] : ['log_avg_msec=500'];
      for (let run = 1; run <= o.runs; run++) {
        const order = rotation(BACKENDS, run);
        o.progress(`${jobName}: backend order, ${orderLine(run, order).replace(/^round/, 'run')}`);
        for (const [i, backend] of order.entries()) {
          step++;
          o.progress(`[${step}/${total}] ${jobName}: ${backend} run ${run} (${o.runtimeSeconds} s)`);
          const logDir = join(o.outDir, 'logs', jobName, `${backend}-run${run}`);
          mkdirSync(logDir, { recursive: true });
          const runOnce = (target: Parameters<typeof runFio>[0]['target']): ReturnType<typeof runFio> =>
            runFio({
              files: [file],
              overrides: [...overrides, ...extra],
              target,
              logDir,
              ...(o.onStatus === undefined ? {} : { onProgress: () => undefined }),
            });
          const outcome =
            rig === undefined
              ? await runOnce({ kind: 'guest', guest: configs[backend], maps: new Map([[SEED_TARGET, store.spec[backend]]]) })
              : await runOverLun(rig, (host) => runOnce({ kind: 'guest', guest: configs[backend], host }));
          records.push({ job: jobName, backend, run, position: i + 1, logDir, results: outcome.results, jobs: outcome.jobs });
        }
      }
    }
    notes.push(
      `the backends take turns in each run, the first rotating with the run (run 1: ${BACKENDS.join(', ')}; run 2: ${rotation(BACKENDS, 2).join(', ')}; ...)`,
    );
    const base = { records, storage: store.describe, notes, overrides: [...overrides, 'log_avg_msec=500 (unless the job sets it)'] };
    if (rig === undefined) return base;
    const host = process.cpuUsage(started.host);
    return {
      ...base,
      rig: {
        link: rig.linkDescription,
        asked: rig.link.fallback === undefined,
        targetCpuSeconds: rig.targetCpuSeconds() - started.target,
        hostCpuSeconds: (host.user + host.system) / 1e6,
        mainThreadCpuSeconds: rig.mainThreadCpuSeconds() - started.main,
        wallSeconds: (Date.now() - started.wall) / 1000,
      },
    };
  } finally {
    store.cleanup();
    await rig?.close();
  }
}

/**
 * One run over the rig's LUN: a fresh host whose /dev/sdb is a new initiator session (the guest
 * config's target, as the mail's dom0 saw the LUN), closed with the run.
 */
async function runOverLun<T>(rig: IscsiRig, body: (host: SimHost) => Promise<T>): Promise<T> {
  const device = await openBlockDevice(rig.lunSpec);
  try {
    const host = await SimHost.start();
    try {
      host.registerStore(SEED_TARGET, device);
      return await body(host);
    } finally {
      await host.stop();
    }
  } finally {
    await device.close();
  }
}

/**
 * What file: means over a remote LUN. In the mail, qdisk opened dom0's /dev/sdb (the kernel's
 * initiator) through the page cache. Our initiator's LUN is not a kernel block device, so there is
 * no host page cache to put under it: both guests reach the LUN through the same initiator, and
 * what tells them apart is blkback's own path for each disk type. The report says so.
 */
function iscsiStore(rig: IscsiRig, notes: string[]): PreparedStore {
  const lun = `${rig.lunSpec} (RAM LUN on our target, through our initiator)`;
  notes.push(`the seed's rig: ${rig.linkDescription}`);
  notes.push(
    "file over the remote LUN: our initiator's LUN is no kernel block device, so there is no host page cache under the file guest; both guests reach the LUN through our initiator",
  );
  return { spec: { phy: rig.lunSpec, file: rig.lunSpec }, describe: { phy: lun, file: lun }, cleanup: () => undefined };
}

interface PreparedStore {
  spec: Record<Backend, string>;
  describe: Record<Backend, string>;
  cleanup: () => void;
}

/** One file in /dev/shm: phy through a direct-I/O loop device, file through the page cache. */
async function prepareStore(o: ExperimentOptions, notes: string[]): Promise<PreparedStore> {
  if (o.storage !== undefined) {
    notes.push(o.storageNote ?? `both backends use the store given with --storage: ${o.storage}`);
    return { spec: { phy: o.storage, file: o.storage }, describe: { phy: o.storage, file: o.storage }, cleanup: () => undefined };
  }
  const image = `/dev/shm/blkback-reproduce-${process.pid}.img`;
  const fd = openSync(image, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let at = 0; at < o.storeBytes; at += chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(chunk.length, o.storeBytes - at));
    }
  } finally {
    closeSync(fd);
  }
  let loop: string | null = null;
  let why = '';
  if (process.getuid?.() === 0) {
    try {
      loop = execFileSync('losetup', ['--direct-io=on', '-f', '--show', image], { encoding: 'utf8' }).trim();
    } catch (err) {
      why = `losetup failed: ${(err as Error).message.split('\n')[0]}`;
    }
  } else {
    why = 'not root, so no loop device';
  }
  const size = `${Math.round(o.storeBytes / 2 ** 20)} MiB`;
  if (loop === null) {
    rmSync(image, { force: true });
    notes.push(`${why}: both backends use one in-process RAM disk (${size}) instead of a /dev/shm file`);
    const spec = `ram:${o.storeBytes}`;
    return {
      spec: { phy: spec, file: spec },
      describe: { phy: `in-process RAM disk (${size})`, file: `in-process RAM disk (${size})` },
      cleanup: () => undefined,
    };
  }
  notes.push(`the seed's iSCSI RAM disk is a ${size} file in /dev/shm, prefilled with random data`);
  return {
    spec: { phy: loop, file: image },
    describe: {
      phy: `${loop} (loop device, direct I/O) over ${image}: O_DIRECT straight into granted guest pages`,
      file: `${image} through the page cache (buffered)`,
    },
    cleanup: () => {
      try {
        execFileSync('losetup', ['-d', loop]);
      } catch {
        // already detached
      }
      rmSync(image, { force: true });
    },
  };
}

// ---------------------------------------------------------------- summaries

export interface BackendSummary {
  readonly job: string;
  readonly backend: Backend;
  readonly runs: number;
  /** Mean over runs of the run's total bandwidth (all jobs, both directions), MiB/s. */
  readonly mibps: number;
  readonly iops: number;
  /** Completion latency percentiles over every I/O of every run, microseconds. */
  readonly p50us: number;
  readonly p99us: number;
}

export function summarize(records: readonly RunRecord[]): BackendSummary[] {
  const out: BackendSummary[] = [];
  const jobs = [...new Set(records.map((r) => r.job))];
  for (const job of jobs) {
    for (const backend of BACKENDS) {
      const runs = records.filter((r) => r.job === job && r.backend === backend);
      if (runs.length === 0) continue;
      const hist = new LatencyHistogram();
      let mib = 0;
      let iops = 0;
      for (const r of runs) {
        let bytes = 0;
        let ios = 0;
        let ms = 0;
        for (const res of r.results) {
          for (const d of res.dirs) {
            bytes += d.ioBytes;
            ios += d.totalIos;
            hist.merge(d.clat);
          }
          ms = Math.max(ms, res.runtimeMs);
        }
        mib += ms > 0 ? bytes / 2 ** 20 / (ms / 1000) : 0;
        iops += ms > 0 ? ios / (ms / 1000) : 0;
      }
      const [p50, p99] = hist.percentiles([50, 99]);
      out.push({ job, backend, runs: runs.length, mibps: mib / runs.length, iops: iops / runs.length, p50us: p50! / 1000, p99us: p99! / 1000 });
    }
  }
  return out;
}

/** Every bw log of one run directory, by job thread. */
export function bwLogsOf(logDir: string): string[] {
  return readdirSync(logDir)
    .filter((f) => /_bw(\.\d+)?\.log$/.test(f))
    .sort()
    .map((f) => readFileSync(join(logDir, f), 'utf8'));
}
