// One fio run, end to end: parse job files, expand clones, run them inside a simulated guest (through
// blkfront, the ring and blkback) or bare on a block device, and hand back fio's per-job results.
// Shared by `blkback fio` and `blkback reproduce`.
import { allocAlignedShared } from '../block/aligned-memory.ts';
import { openBlockDevice } from '../stores/open.ts';
import type { BlockDevice } from '../block/types.ts';
import { reviveHistogram } from '../stats/latency-histogram.ts';
import { SimHost } from '../sim-host/host.ts';
import type { GuestConfig } from '../sim-host/host.ts';
import { runJobs } from './engine/index.ts';
import type { FioGuestParams } from './guest-workload.ts';
import { ProgressTracker } from './progress.ts';
import type { FioProgress } from './progress.ts';
import type { FioJob, ParsedJobs } from './job.ts';
import { expandClones, parseJobFiles } from './jobfile/index.ts';
import { openJobLogs } from './output/index.ts';
import type { JobResult } from './stats.ts';
import { bytesNeeded } from './targets.ts';

export interface JobFileText {
  readonly path: string;
  readonly text: string;
}

export type FioTarget =
  /** In a simulated guest; `guest` omitted: one guest with a RAM disk as xvda sized for the jobs. */
  | {
      readonly kind: 'guest';
      readonly guest?: GuestConfig;
      readonly host?: SimHost;
      readonly maps?: ReadonlyMap<string, string>;
      readonly xenstoreSocket?: string;
    }
  /** Straight on a block device (a store spec, or an open device); omitted: a RAM disk sized for the jobs. */
  | { readonly kind: 'bare'; readonly spec?: string; readonly device?: BlockDevice };

export interface FioRunOptions {
  readonly files: readonly JobFileText[];
  readonly strict?: boolean;
  readonly overrides?: readonly string[];
  readonly readInclude?: (path: string, fromFile: string) => string | undefined;
  readonly target: FioTarget;
  /** Directory log files go to (null: no logs even if jobs ask). */
  readonly logDir: string | null;
  readonly onWarning?: (line: string) => void;
  readonly onProgress?: (progress: FioProgress, jobs: readonly FioJob[]) => void;
  readonly onLog?: (line: string) => void;
}

export interface FioRunOutcome {
  readonly parsed: ParsedJobs;
  readonly jobs: readonly FioJob[];
  readonly results: JobResult[];
}

const GUEST_WORKLOAD = new URL('./guest-workload.js', import.meta.url);
const DEFAULT_RAM = 1 << 30;

export function parseFioFiles(options: Pick<FioRunOptions, 'files' | 'strict' | 'overrides' | 'readInclude'>): ParsedJobs {
  return parseJobFiles(options.files, {
    strict: options.strict ?? false,
    env: process.env,
    overrides: options.overrides ?? [],
    ...(options.readInclude === undefined ? {} : { readInclude: options.readInclude }),
  });
}

export async function runFio(options: FioRunOptions): Promise<FioRunOutcome> {
  const parsed = parseFioFiles(options);
  for (const w of parsed.warnings) options.onWarning?.(w);
  const jobs = expandClones(parsed);
  const ramSize = roundUp(bytesNeeded(jobs) || DEFAULT_RAM, 1 << 20);
  const target = options.target;
  let results: JobResult[];
  if (target.kind === 'bare') {
    const device = target.device ?? (await openBlockDevice(target.spec ?? `ram:${ramSize}`));
    try {
      results = await runBare(jobs, device, options);
    } finally {
      if (target.device === undefined) await device.close();
    }
  } else {
    results = await runInGuest(jobs, ramSize, target, options);
  }
  return { parsed, jobs, results };
}

async function runBare(jobs: readonly FioJob[], device: BlockDevice, options: FioRunOptions): Promise<JobResult[]> {
  // Buffers come from page-aligned shared memory, so O_DIRECT devices take them as they are.
  const arena = allocAlignedShared(Math.max(1 << 20, arenaBytes(jobs)));
  let next = 0;
  const allocBuffer = (bytes: number): Uint8Array => {
    const size = roundUp(bytes, 4096);
    if (next + size > arena.length) throw new Error(`fio: buffer arena exhausted (${arena.length} bytes)`);
    const view = arena.subarray(next, next + bytes);
    next += size;
    return view;
  };
  const logDir = options.logDir;
  const tracker = new ProgressTracker(jobs);
  tracker.start(1000, (p) => options.onProgress?.(p, jobs));
  try {
    return await runJobs(jobs, { device, allocBuffer, logs: logDir === null ? () => null : (job: FioJob) => openJobLogs(job, logDir) }, tracker.hooks);
  } finally {
    tracker.stop();
  }
}

async function runInGuest(
  jobs: readonly FioJob[],
  ramSize: number,
  target: Extract<FioTarget, { kind: 'guest' }>,
  options: FioRunOptions,
): Promise<JobResult[]> {
  const host =
    target.host ??
    (await SimHost.start({
      ...(target.maps === undefined ? {} : { maps: target.maps }),
      ...(target.xenstoreSocket === undefined ? {} : { xenstoreSocket: target.xenstoreSocket }),
      ...(options.onLog === undefined ? {} : { log: options.onLog }),
    }));
  try {
    // Guest memory is the I/O arena: it must hold every job's iodepth x max bs buffers.
    const arena = arenaBytes(jobs);
    const config: GuestConfig = target.guest ?? {
      name: 'fio',
      memoryMiB: Math.max(256, Math.ceil((arena * 1.5) / 2 ** 20)),
      disks: [{ target: `ram:${ramSize}`, vdev: 'xvda', readOnly: false, backendtype: 'phy' }],
    };
    const params: FioGuestParams = { jobs, logDir: options.logDir, progressMs: 1000 };
    const guest = await host.createGuest(config, {
      workload: GUEST_WORKLOAD,
      params,
      onReport: (m) => {
        const p = m as FioProgress;
        if (p.kind === 'fio-progress') options.onProgress?.(p, jobs);
      },
    });
    const raw = (await guest.result) as JobResult[];
    return raw.map(reviveResult);
  } finally {
    if (target.host === undefined) await host.stop();
  }
}

/** Results crossed a thread boundary: give the histograms back their methods. */
function reviveResult(r: JobResult): JobResult {
  for (const d of r.dirs) {
    d.slat = reviveHistogram(d.slat);
    d.clat = reviveHistogram(d.clat);
    d.lat = reviveHistogram(d.lat);
  }
  r.sync.lat = reviveHistogram(r.sync.lat);
  return r;
}

function arenaBytes(jobs: readonly FioJob[]): number {
  let total = 0;
  for (const j of jobs) total += j.iodepth * roundUp(Math.max(...j.bsMax, ...j.bs, ...j.bssplit.flatMap((l) => l.map((e) => e.bs))), 4096);
  return total;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
