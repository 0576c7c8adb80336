// `blkback bench --suite scale`: one blkback (this process) serving G simulated guests,
// each with one disk, each keeping QD random reads of 4 KiB in flight through blkfront. For each
// configuration a fresh host boots G guests with no disk, weighs itself, hot-plugs a disk into each
// and lets every guest connect (the weight again: memory per ring), then runs all guests at once:
// a warm-up, a measured window bounded by the host (each guest's reads counted in shared memory),
// a stop. Per configuration: total IOPS, fairness (max/min per-guest IOPS), the backend threads' CPU
// per I/O, memory per connected ring and per guest. Reads land on one RAM disk shared by every disk,
// each 4 KiB block stamped with its number so the guests check what they read.
//
// queues: each guest's blkfront asks for that many rings and the backend offers as many
// (multi-queue-max-queues), so memory is counted per ring, not per guest. workers: blkback serves
// the rings on that many data-plane worker threads (0: on its main thread, with the control plane),
// and the backend's CPU is its main thread's plus its workers'. `hostOptionsFor` is where a
// configuration becomes backend options.
import { allocAlignedShared } from '../block/aligned-memory.ts';
import { createRamDisk } from '../block/ram.ts';
import type { RamDisk } from '../block/ram.ts';
import { vdevToDeviceId } from '../config/vdev.ts';
import type { ScaleReaderParams, ScaleReaderResult, ScaleReaderStep } from '../guest/workloads/scale-reader.ts';
import { SimHost } from '../sim-host/host.ts';
import type { GuestHandle, HostOptions } from '../sim-host/host.ts';
import { runRandomIo } from '../loadgen/random-io.ts';
import { ScaleControl, ScalePhase, stampBlock, STAMP_BLOCK } from '../loadgen/scale-control.ts';
import { memorySnapshot } from './isolate-memory.ts';
import type { MemorySnapshot } from './isolate-memory.ts';
import { machineInfo } from './machine.ts';
import type { MachineInfo } from './machine.ts';
import { MAIN_THREAD, threadsTime } from './thread-cpu.ts';
import { MAX_WORKERS, WorkerRingHost } from '../blkback/workers/worker-ring-host.ts';

export interface ScaleConfig {
  readonly guests: number;
  readonly queues: number;
  readonly workers: number;
}

export interface ScaleOptions {
  readonly guests: readonly number[];
  readonly queues: readonly number[];
  readonly workers: readonly number[];
  /** Warm-up before the measured window: at least this long... */
  readonly warmupSeconds: number;
  /**
   * ...and, when larger, then on until the total rate stops rising (see warmUp), at most this long.
   * Every guest is a V8 isolate of its own that compiles its own hot code: 64 of them sharing 2
   * cores get 1/32 of a core each, and took more than 30 s to reach the rate they keep.
   */
  readonly maxWarmupSeconds?: number;
  readonly seconds: number;
  /** The backend's max-ring-page-order (default blkback's, 4: 16 pages, 512 slots); blkfront asks for 4. */
  readonly maxRingPageOrder?: number;
  readonly progress: (line: string) => void;
}

export interface ScaleRow extends ScaleConfig {
  /** Reads completed by all guests in the window, per second. */
  iops: number;
  /** Max over min of the guests' own IOPS in the window (1 = equal shares); null when a guest did none. */
  fairness: number | null;
  minGuestIops: number;
  maxGuestIops: number;
  /** CPU µs of the backend's thread(s) per read in the window. */
  cpuUsPerIo: number;
  /** The backend's thread(s) CPU seconds per wall second in the window (1 = a core kept busy). */
  backendCpuShare: number;
  /**
   * Seconds per wall second the backend's thread(s) were ready to run but waited for a CPU (Linux
   * schedstat; NaN without it). With backendCpuShare near 1 in all, the backend was never idle: it
   * set the pace, even when other threads (the guests) took most of the CPU.
   */
  backendWaitShare: number;
  /** The whole process (backend and guests) CPU µs per read, for scale. */
  processCpuUsPerIo: number;
  /** The whole process's CPU seconds per wall second: near the core count, the host is CPU-bound; well under it, starved or waiting. */
  processCpuShare: number;
  /** Growth of the process's resident set from booted guests without disks to connected rings, per ring. */
  rssPerRing: number;
  /** Growth of the backend thread's isolate (heap + external) over the same step, per ring. */
  heapPerRing: number;
  /** The same after the run, every ring idle but still connected (what the rings kept from the I/O). */
  heapPerRingAfterIo: number;
  /** Growth of the resident set from no guests to G booted guests without disks, per guest. */
  rssPerGuest: number;
  ringPages: number;
  /** Requests a ring holds (blkif's __RING_SIZE for ringPages). */
  ringSlots: number;
  /** Responses a guest's blkfront took per event it was woken by (whole run, all guests): batching on the way back. */
  responsesPerGuestWakeup: number;
  /** Requests per notify the guests sent (whole run, all guests): batching on the way in. */
  requestsPerGuestNotify: number;
  reads: number;
  /** Reads (over the whole run, warm-up included) whose block did not carry the stamp asked for. */
  badReads: number;
  windowSeconds: number;
  /** The warm-up this configuration had before its window (seconds). */
  warmupSeconds: number;
}

export interface ScaleSkip {
  readonly what: 'queues' | 'workers';
  readonly value: number;
  readonly reason: string;
}

export interface ScaleReport {
  machine: MachineInfo;
  store: string;
  /** The store read alone (no guest, no ring) on this thread, same pattern: what the backend is measured against. */
  storeAloneIops: number;
  bs: number;
  iodepth: number;
  guestMemoryBytes: number;
  warmupSeconds: number;
  /** The longest warm-up allowed (equal to warmupSeconds: a fixed one). */
  maxWarmupSeconds: number;
  seconds: number;
  rows: ScaleRow[];
  skipped: ScaleSkip[];
}

export const SCALE_BS = 4096;
export const SCALE_IODEPTH = 32;
export const SCALE_GUESTS = [1, 2, 4, 8, 16, 32, 64] as const;
export const SCALE_QUICK_GUESTS = [1, 4, 16] as const;
const STORE_NAME = 'scale-ram';
const STORE_BYTES = 64 << 20;
const VDEV = 'xvda';
// A guest needs a 16-page ring and QD 4 KiB buffers (48 pages): 1 MiB, 16 WebAssembly pages, holds them.
const GUEST_MEMORY_MIB = 1;
const STEP_TIMEOUT_MS = 180_000;
const GUEST_WORKLOAD = new URL('../guest/workloads/scale-reader.js', import.meta.url);

/** Why this configuration cannot run with today's backend, or null. */
export function unsupported(config: Pick<ScaleConfig, 'queues' | 'workers'>): string | null {
  if (!Number.isInteger(config.workers) || config.workers < 0 || config.workers > MAX_WORKERS) return `blkback runs 0 to ${MAX_WORKERS} data-plane workers`;
  return null;
}

/** The backend options of a configuration: its queues and its data-plane workers (0: rings on the main thread). */
function hostOptionsFor(config: ScaleConfig, options: ScaleOptions): HostOptions {
  // The backend offers as many queues as the configuration asks of every guest, whatever this machine's core count.
  return {
    maxQueues: config.queues,
    workers: config.workers,
    ...(options.maxRingPageOrder === undefined ? {} : { maxRingPageOrder: options.maxRingPageOrder }),
  };
}

/**
 * The threads whose CPU is the backend's: the main thread (the control plane, and the data plane
 * without workers) and its data-plane workers.
 */
function backendThreads(host: SimHost): number[] {
  const rings = host.blkback.ringHost;
  return [MAIN_THREAD, ...(rings instanceof WorkerRingHost ? rings.threadIds.filter((tid) => tid > 0) : [])];
}

export async function runScaleBench(options: ScaleOptions): Promise<ScaleReport> {
  const skipped: ScaleSkip[] = [];
  for (const queues of options.queues) {
    const reason = unsupported({ queues, workers: 1 });
    if (reason !== null) skipped.push({ what: 'queues', value: queues, reason });
  }
  for (const workers of options.workers) {
    const reason = unsupported({ queues: 1, workers });
    if (reason !== null) skipped.push({ what: 'workers', value: workers, reason });
  }
  const configs: ScaleConfig[] = [];
  for (const workers of options.workers) {
    for (const queues of options.queues) {
      if (unsupported({ queues, workers }) !== null) continue;
      for (const guests of options.guests) configs.push({ guests, queues, workers });
    }
  }
  for (const s of skipped) options.progress(`${s.what}=${s.value}: not run, ${s.reason}`);

  const store = await stampedStore();
  try {
    const storeAloneIops = await measureStoreAlone(store, Math.min(options.seconds, 1));
    options.progress(
      `store alone (no guest, no ring, this thread): ${Math.round(storeAloneIops).toLocaleString('en-US')} IOPS of 4 KiB random reads at QD${SCALE_IODEPTH}`,
    );
    const rows: ScaleRow[] = [];
    for (const [i, config] of configs.entries()) {
      const label = `[${i + 1}/${configs.length}] ${config.guests} guest${config.guests === 1 ? '' : 's'}, ${config.queues} queue${config.queues === 1 ? '' : 's'}, ${config.workers} worker${config.workers === 1 ? '' : 's'}`;
      const row = await runConfig(store, config, options, (step) => options.progress(`${label}: ${step}`));
      options.progress(
        `${label}: ${Math.round(row.iops).toLocaleString('en-US')} IOPS, fairness ${row.fairness === null ? '∞' : row.fairness.toFixed(2)}, ${row.cpuUsPerIo.toFixed(1)} CPU µs/IO`,
      );
      rows.push(row);
    }
    return {
      machine: machineInfo(),
      store: `one ${STORE_BYTES >> 20} MiB RAM disk (ram.ts: a 4 KiB memcpy per read) shared read-only by every guest's disk, each 4 KiB block stamped with its number`,
      storeAloneIops,
      bs: SCALE_BS,
      iodepth: SCALE_IODEPTH,
      guestMemoryBytes: GUEST_MEMORY_MIB << 20,
      warmupSeconds: options.warmupSeconds,
      maxWarmupSeconds: Math.max(options.warmupSeconds, options.maxWarmupSeconds ?? 0),
      seconds: options.seconds,
      rows,
      skipped,
    };
  } finally {
    await store.close();
  }
}

/** The RAM disk every guest reads: each 4 KiB block starts with its stamp. */
async function stampedStore(): Promise<RamDisk> {
  const ram = createRamDisk(STORE_BYTES, { name: 'ram:scale' });
  const chunk = new Uint8Array(1 << 20);
  for (let at = 0; at < STORE_BYTES; at += chunk.length) {
    for (let b = 0; b < chunk.length; b += STAMP_BLOCK) stampBlock(chunk.subarray(b), (at + b) / STAMP_BLOCK);
    await ram.writev(at, [chunk]);
  }
  return ram;
}

async function measureStoreAlone(store: RamDisk, seconds: number): Promise<number> {
  const arena = allocAlignedShared(SCALE_IODEPTH * SCALE_BS);
  let next = 0;
  const allocate = (bytes: number): Uint8Array => {
    const view = arena.subarray(next, next + bytes);
    next += bytes;
    return view;
  };
  const r = await runRandomIo(store, allocate, { rw: 'randread', bs: SCALE_BS, iodepth: SCALE_IODEPTH, seconds });
  return r.iops;
}

/** Counts the guests' reports of each step and resolves when all G have made one. */
class GuestSteps {
  readonly #counts = new Map<ScaleReaderStep, number>();
  readonly #waiters = new Map<ScaleReaderStep, () => void>();
  readonly #guests: number;

  constructor(guests: number) {
    this.#guests = guests;
  }

  arrive(step: ScaleReaderStep): void {
    const n = (this.#counts.get(step) ?? 0) + 1;
    this.#counts.set(step, n);
    if (n === this.#guests) this.#waiters.get(step)?.();
  }

  all(step: ScaleReaderStep): Promise<void> {
    if (this.#counts.get(step) === this.#guests) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.set(step, resolve));
  }
}

async function runConfig(store: RamDisk, config: ScaleConfig, options: ScaleOptions, step: (line: string) => void): Promise<ScaleRow> {
  const { guests } = config;
  const host = await SimHost.start(hostOptionsFor(config, options));
  const handles: GuestHandle[] = [];
  let failed: (err: unknown) => void = () => undefined;
  const failure = new Promise<never>((_, reject) => (failed = reject));
  failure.catch(() => undefined);
  const steps = new GuestSteps(guests);
  /** Waits for every guest to report `s`, or fails with the first guest that failed, or times out. */
  const all = async (s: ScaleReaderStep): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`scale bench: not all ${guests} guests reached '${s}' within ${STEP_TIMEOUT_MS / 1000} s`)), STEP_TIMEOUT_MS);
    });
    try {
      await Promise.race([steps.all(s), failure, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    host.registerStore(STORE_NAME, store);
    const control = ScaleControl.create(guests);
    const devid = vdevToDeviceId(VDEV);
    const empty = await backendMemory(host);
    step('booting guests');
    for (let index = 0; index < guests; index++) {
      const params: ScaleReaderParams = {
        control: control.buffer,
        guests,
        index,
        devid,
        bs: SCALE_BS,
        iodepth: SCALE_IODEPTH,
        seed: 1 + index,
        queues: config.queues,
      };
      const handle = await host.createGuest(
        { name: `scale${index}`, memoryMiB: GUEST_MEMORY_MIB, disks: [] },
        { workload: GUEST_WORKLOAD, params, onReport: (m) => steps.arrive(m as ScaleReaderStep) },
      );
      handle.result.catch(failed);
      handles.push(handle);
    }
    await all('booted');
    const booted = await backendMemory(host);

    step('connecting rings');
    for (const h of handles) await host.attachDisk(h.domid, { target: STORE_NAME, vdev: VDEV, readOnly: true, backendtype: 'phy' });
    control.setPhase(ScalePhase.Connect);
    await all('connected');
    const connected = await backendMemory(host);

    const maxWarmup = Math.max(options.warmupSeconds, options.maxWarmupSeconds ?? 0);
    step(`${warmupLabel(options.warmupSeconds, maxWarmup, 'stops')}, then ${options.seconds} s measured`);
    const threads = backendThreads(host);
    control.setPhase(ScalePhase.Run);
    const warmupSeconds = await warmUp(control, options.warmupSeconds, maxWarmup);
    const start = window(control, threads);
    await sleep(options.seconds);
    const end = window(control, threads);
    control.setPhase(ScalePhase.Stop);
    await all('idle');
    const idle = await backendMemory(host);
    control.setPhase(ScalePhase.Done);
    const results = (await Promise.race([Promise.all(handles.map((h) => h.result)), failure])) as ScaleReaderResult[];

    const seconds = (end.at - start.at) / 1000;
    const perGuest = end.reads.map((r, g) => (r - start.reads[g]!) / seconds);
    const reads = end.reads.reduce((n, r, g) => n + r - start.reads[g]!, 0);
    const minGuestIops = Math.min(...perGuest);
    const maxGuestIops = Math.max(...perGuest);
    const per = (from: MemorySnapshot, to: MemorySnapshot, field: keyof MemorySnapshot, n: number): number => (to[field] - from[field]) / n;
    return {
      ...config,
      iops: reads / seconds,
      fairness: minGuestIops > 0 ? maxGuestIops / minGuestIops : null,
      minGuestIops,
      maxGuestIops,
      cpuUsPerIo: ((end.backendCpu - start.backendCpu) * 1e6) / reads,
      backendCpuShare: (end.backendCpu - start.backendCpu) / seconds,
      backendWaitShare: (end.backendWait - start.backendWait) / seconds,
      processCpuUsPerIo: ((end.processCpu - start.processCpu) * 1e6) / reads,
      processCpuShare: (end.processCpu - start.processCpu) / seconds,
      rssPerRing: per(booted, connected, 'rss', guests * config.queues),
      heapPerRing: per(booted, connected, 'isolate', guests * config.queues),
      heapPerRingAfterIo: per(booted, idle, 'isolate', guests * config.queues),
      rssPerGuest: per(empty, booted, 'rss', guests),
      ringPages: results[0]?.ringPages ?? 0,
      ringSlots: results[0]?.ringSlots ?? 0,
      responsesPerGuestWakeup: sum(results, 'responses') / sum(results, 'events'),
      requestsPerGuestNotify: sum(results, 'requests') / sum(results, 'notifies'),
      reads,
      badReads: results.reduce((n, r) => n + r.bad, 0),
      windowSeconds: seconds,
      warmupSeconds,
    };
  } finally {
    // After a failure, guests still waiting on the control block end with their workers here.
    await host.stop();
  }
}

interface WindowEdge {
  readonly at: number;
  readonly reads: number[];
  readonly backendCpu: number;
  readonly backendWait: number;
  readonly processCpu: number;
}

/** How a warm-up of `min` to `max` seconds is described (`tense`: 'stops' while it runs, 'stopped' after). */
export function warmupLabel(min: number, max: number, tense: 'stops' | 'stopped'): string {
  return max > min ? `warm-up until the rate ${tense} rising (${min}-${max} s)` : `warm-up ${min} s`;
}

/** The longest automatic warm-up (`bench --suite scale --warmup auto`, the default). */
export const SCALE_MAX_WARMUP_S = 90;
/**
 * Length of one warm-up window, how much a window must beat the best before to count as rising, and
 * how many windows in a row must not (64 guests on 2 cores still gained about 1 % a second after 10 s).
 */
const WARMUP_WINDOW_S = 2;
const WARMUP_RISE = 0.02;
const WARMUP_FLAT_WINDOWS = 3;

/**
 * At least `min` seconds; then, when `max` allows, windows of WARMUP_WINDOW_S until
 * WARMUP_FLAT_WINDOWS in a row do not beat the best rate before them by WARMUP_RISE (a plateau),
 * or `max` is reached. Returns the seconds it took.
 */
async function warmUp(control: ScaleControl, min: number, max: number): Promise<number> {
  const t0 = performance.now();
  const total = (): number => {
    let n = 0;
    for (let g = 0; g < control.guests; g++) n += control.reads(g);
    return n;
  };
  await sleep(min);
  let best = 0;
  let flat = 0;
  let edge = total();
  let at = performance.now();
  while (flat < WARMUP_FLAT_WINDOWS && (performance.now() - t0) / 1000 + WARMUP_WINDOW_S <= max) {
    await sleep(WARMUP_WINDOW_S);
    const reads = total();
    const now = performance.now();
    const rate = (reads - edge) / ((now - at) / 1000);
    if (rate > best * (1 + WARMUP_RISE)) {
      best = rate;
      flat = 0;
    } else flat++;
    edge = reads;
    at = now;
  }
  return (performance.now() - t0) / 1000;
}

function window(control: ScaleControl, threads: readonly number[]): WindowEdge {
  const reads: number[] = [];
  for (let g = 0; g < control.guests; g++) reads.push(control.reads(g));
  const cpu = process.cpuUsage();
  const backend = threadsTime(threads);
  return { at: performance.now(), reads, backendCpu: backend.cpu, backendWait: backend.runqueue, processCpu: (cpu.user + cpu.system) / 1e6 };
}

/**
 * The process's resident set and the backend's own memory: this thread's isolate plus, with
 * data-plane workers, theirs (each after a full collection), since the rings live there.
 */
async function backendMemory(host: SimHost): Promise<MemorySnapshot> {
  const main = memorySnapshot();
  const rings = host.blkback.ringHost;
  if (!(rings instanceof WorkerRingHost)) return main;
  const workers = await rings.memory();
  return { rss: main.rss, isolate: main.isolate + workers.reduce((a, b) => a + b, 0) };
}

function sum(results: readonly ScaleReaderResult[], key: 'responses' | 'events' | 'requests' | 'notifies'): number {
  return results.reduce((n, r) => n + r[key], 0);
}

function sleep(seconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}
