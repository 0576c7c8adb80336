// A fuzz campaign: blkback in the simulated host, hostile guests (hostile-guest.ts) sending it
// generated requests, valid and malformed, and rewriting what it reads while requests are in
// flight, beside a neighbour guest (neighbour-guest.ts) that checks every byte it reads back. One
// leg per data path, each on a fresh host. What the guests find comes here as it happens; here we
// add what only the host can see: the backend's error counters after each drained epoch, a halted
// ring after an overflow, exceptions in this thread (the backend's), devices it gave up on, the
// neighbour's share of the backend's service, the read-only disks' bytes, and a thread that stops.
import { cpus } from 'node:os';
import { MAX_INDIRECT_SEGMENTS } from '../blkback/ring-server.ts';
import type { DataPath } from '../blkback/ring-server.ts';
import type { Vbd } from '../blkback/vbd.ts';
import { createRamDisk } from '../block/ram.ts';
import type { BlockDevice } from '../block/types.ts';
import { vdevToDeviceId } from '../config/xl-disk.ts';
import { ERROR_KINDS } from '../blkback/stats.ts';
import type { ErrorKind } from '../blkback/stats.ts';
import { SimHost } from '../sim-host/host.ts';
import type { GuestHandle } from '../sim-host/host.ts';
import { domainErrorDir, errorRoot, VbdKey } from '../xenbus/device-paths.ts';
import { CONTROL_ACK, CONTROL_STOP, emptyCounts, FINDING_KINDS, HOSTILE_DISKS, totalFindings } from './findings.ts';
import type {
  DiskTally,
  Finding,
  FindingCounts,
  GuestFinding,
  HostileDiskName,
  HostileEpoch,
  HostileMessage,
  HostileParams,
  HostileProgress,
  HostileResult,
  NeighbourMessage,
  NeighbourParams,
  NeighbourResult,
} from './findings.ts';
import { FAMILIES } from './generator.ts';
import type { FuzzDisk } from './generator.ts';
import { CHAOS_NAMES } from './chaos.ts';
import { Watchdog } from './watchdog.ts';
import { windowOf } from './window-store.ts';

export const DATA_PATHS: readonly DataPath[] = ['map', 'persistent', 'copy'];

/** Which store a hook is asked to wrap. */
export type StoreRole = { readonly kind: 'neighbour' } | { readonly kind: 'hostile'; readonly guest: number; readonly disk: HostileDiskName };

export interface CampaignOptions {
  /** Requests in all, shared equally by the data paths and, within one, by the hostile guests. */
  readonly requests: number;
  readonly seed: number;
  readonly dataPaths: readonly DataPath[];
  /** Hostile guests (the neighbour comes on top). */
  readonly guests: number;
  /** A request (or handshake step) unanswered this long is a hang. Default 10 s. */
  readonly deadlineMs?: number;
  /** The backend's thread standing still this long ends the process (the watchdog). Default 30 s; 0: no watchdog. */
  readonly watchdogMs?: number;
  /** Below this fraction of an equal share of the backend's service the neighbour's share is a finding. Default 0.5. */
  readonly minShare?: number;
  /** How long the neighbour runs alone first (its solo rate). Default 1 s. */
  readonly soloMs?: number;
  readonly progressMs?: number;
  readonly onProgress?: (line: string) => void;
  readonly onFinding?: (finding: Finding) => void;
  /** Aborting asks the hostile guests to stop sending; the campaign then drains and reports as usual. */
  readonly signal?: AbortSignal;
  /**
   * Test hook: wrap a store before blkback opens it. A store that corrupts, never answers or throws
   * proves that the detectors see what they are there to see.
   */
  readonly wrapStore?: (role: StoreRole, device: BlockDevice) => BlockDevice;
}

export interface NeighbourReport extends NeighbourResult {
  /** Operations per second alone, and beside the hostile guests. */
  readonly soloRate: number;
  readonly attackedRate: number;
  /** Its share of the segments the backend answered while other domains had requests queued. */
  readonly share: number;
  readonly equalShare: number;
  /** False when the attack was too short for the share to say anything (it is then not a finding). */
  readonly shareJudged: boolean;
}

export interface LegReport {
  readonly dataPath: DataPath;
  readonly requests: number;
  readonly answered: number;
  readonly durationMs: number;
  /** Requests sent per generator family. */
  readonly tried: Record<string, number>;
  readonly disks: Record<HostileDiskName, DiskTally>;
  readonly chaos: { readonly scribbles: number; readonly storms: number; readonly kinds: readonly string[] };
  readonly canaries: number;
  readonly scans: number;
  /** The backend's error counters over the hostile disks. */
  readonly backendErrors: Record<ErrorKind, number>;
  readonly neighbour: NeighbourReport | null;
  readonly findings: FindingCounts;
  /** The host could not be stopped in time (a store that never answers keeps a device from closing). */
  readonly teardownTimedOut: boolean;
}

export interface CampaignReport {
  readonly seed: number;
  readonly requests: number;
  readonly sent: number;
  readonly guests: number;
  readonly durationMs: number;
  readonly legs: LegReport[];
  readonly findings: FindingCounts;
  /** The first findings of each kind in full. */
  readonly details: Finding[];
  readonly machine: { readonly cpus: number; readonly model: string; readonly node: string; readonly platform: string };
}

const HOSTILE_URL = new URL('./hostile-guest.js', import.meta.url);
const NEIGHBOUR_URL = new URL('./neighbour-guest.js', import.meta.url);
const MiB = 1 << 20;
const WINDOW_BYTES: Readonly<Record<HostileDiskName, number>> = { rw: 8 * MiB, ro: 4 * MiB, '4k': 4 * MiB, chaos: 4 * MiB };
const NEIGHBOUR_BYTES = 16 * MiB;
const VDEV: Readonly<Record<HostileDiskName, string>> = { rw: 'xvdb', ro: 'xvdc', '4k': 'xvdd', chaos: 'xvde' };
const HOSTILE_MEMORY_MIB = 4;
/** The neighbour's share is judged only over at least this many contended segments (all domains'). */
const SHARE_MIN_SEGMENTS = 2000;

/**
 * The disk a hostile stream sees, as the backend advertises it in every campaign (blkback's defaults:
 * 256 indirect segments; discard on writable disks): with the seed, all that `--show` needs to
 * regenerate a request.
 */
export function hostileDisk(disk: HostileDiskName): FuzzDisk {
  return {
    sectors: WINDOW_BYTES[disk] / 512,
    sectorSize: disk === '4k' ? 4096 : 512,
    readOnly: disk === 'ro',
    discard: disk !== 'ro',
    maxIndirect: MAX_INDIRECT_SEGMENTS,
  };
}

/** The stream number of a hostile guest's disk (the generator's second coordinate). */
export function hostileStream(guest: number, disk: HostileDiskName): number {
  return guest * 16 + HOSTILE_DISKS.indexOf(disk);
}
const DETAILS_PER_KIND = 10;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<{ value: T } | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  return Promise.race([p.then((value) => ({ value })), timeout]).finally(() => clearTimeout(timer));
}

function roWord(seed: number, guest: number, i: number): number {
  return (Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(guest + 1, 0x85ebca6b) ^ seed) >>> 0;
}

/** Collects findings: counts for every one, details for the first few of each kind. */
class FindingSink {
  readonly counts = emptyCounts();
  /** The current leg's findings counted here. */
  leg = emptyCounts();
  readonly details: Finding[] = [];
  readonly #onFinding: ((f: Finding) => void) | undefined;

  constructor(onFinding: ((f: Finding) => void) | undefined) {
    this.#onFinding = onFinding;
  }

  /** A finding counted here (found by the host, or a guest's detailed one already counted by it). */
  add(f: Finding, count = true): void {
    if (count) {
      this.counts[f.kind]++;
      this.leg[f.kind]++;
    }
    if (this.details.filter((d) => d.kind === f.kind).length < DETAILS_PER_KIND) this.details.push(f);
    this.#onFinding?.(f);
  }
}

export async function runCampaign(options: CampaignOptions): Promise<CampaignReport> {
  if (!Number.isSafeInteger(options.requests) || options.requests < 1) throw new RangeError(`requests ${options.requests} must be a positive integer`);
  if (!Number.isInteger(options.guests) || options.guests < 1) throw new RangeError(`guests ${options.guests} must be a positive integer`);
  if (options.dataPaths.length === 0) throw new RangeError('no data path to run');
  const started = performance.now();
  const sink = new FindingSink(options.onFinding);
  const legs: LegReport[] = [];
  const watchdogMs = options.watchdogMs ?? 30_000;
  const watchdog = watchdogMs > 0 ? new Watchdog(watchdogMs) : null;
  // The backend runs on this thread: whatever it throws and nobody catches is a crash.
  let leg: DataPath | undefined;
  const onCrash = (err: unknown): void => {
    const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
    sink.add({
      kind: 'crash',
      message: `uncaught in the backend's thread: ${text.split('\n').slice(0, 6).join('\n      ')}`,
      seed: options.seed,
      ...(leg === undefined ? {} : { dataPath: leg }),
    });
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  try {
    const perLeg = Math.floor(options.requests / options.dataPaths.length);
    for (let i = 0; i < options.dataPaths.length; i++) {
      if (options.signal?.aborted === true) break;
      leg = options.dataPaths[i]!;
      const requests = i === options.dataPaths.length - 1 ? options.requests - perLeg * i : perLeg;
      if (watchdog !== null) watchdog.context = `seed ${options.seed}, data path ${leg}`;
      legs.push(await runLeg(options, leg, requests, sink, `${i + 1}/${options.dataPaths.length}`));
    }
  } finally {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    await watchdog?.stop();
  }
  const cpu = cpus();
  return {
    seed: options.seed,
    requests: options.requests,
    sent: legs.reduce((n, l) => n + l.requests, 0),
    guests: options.guests,
    durationMs: performance.now() - started,
    legs,
    findings: sink.counts,
    details: sink.details,
    machine: { cpus: cpu.length, model: cpu[0]?.model ?? 'unknown', node: process.version, platform: `${process.platform} ${process.arch}` },
  };
}

interface HostileState {
  readonly guest: number;
  handle: GuestHandle | null;
  control: Int32Array | null;
  progress: HostileProgress | null;
  result: HostileResult | null;
  lastHeard: number;
  ended: boolean;
  /** Findings counted by the guest itself (from its last progress or result). */
  counted: FindingCounts;
}

async function runLeg(o: CampaignOptions, dataPath: DataPath, requests: number, sink: FindingSink, legName: string): Promise<LegReport> {
  const deadlineMs = o.deadlineMs ?? 10_000;
  const started = performance.now();
  const at = (f: GuestFinding): Finding => ({ ...f, seed: o.seed, dataPath });
  sink.leg = emptyCounts();
  const legCounts = sink.leg;
  const hostFinding = (f: GuestFinding): void => sink.add(at(f));
  const logTail: string[] = [];
  const host = await SimHost.start({
    dataPath,
    log: (line) => {
      logTail.push(line);
      if (logTail.length > 50) logTail.shift();
    },
  });

  // ------------------------------------------------------------ stores: windows of one RAM disk
  // g0.rw | neighbour | g0.4k | g0.chaos | g0.ro | g1.rw | g1.4k | ...
  const order: { name: string; bytes: number; role: StoreRole; lbs?: number }[] = [];
  for (let g = 0; g < o.guests; g++) {
    for (const disk of ['rw', '4k', 'chaos', 'ro'] as const) {
      order.push({ name: `fuzz-g${g}-${disk}`, bytes: WINDOW_BYTES[disk], role: { kind: 'hostile', guest: g, disk }, ...(disk === '4k' ? { lbs: 4096 } : {}) });
      if (g === 0 && disk === 'rw') order.push({ name: 'fuzz-neighbour', bytes: NEIGHBOUR_BYTES, role: { kind: 'neighbour' } });
    }
  }
  const backing = createRamDisk(
    order.reduce((n, w) => n + w.bytes, 0),
    { name: 'fuzz-backing' },
  );
  const roWindows: { guest: number; offset: number; bytes: number }[] = [];
  let offset = 0;
  for (const w of order) {
    const window = windowOf(backing, { name: w.name, offset, size: w.bytes, ...(w.lbs === undefined ? {} : { logicalBlockSize: w.lbs }) });
    host.registerStore(w.name, o.wrapStore?.(w.role, window) ?? window);
    if (w.role.kind === 'hostile' && w.role.disk === 'ro') roWindows.push({ guest: w.role.guest, offset, bytes: w.bytes });
    offset += w.bytes;
  }
  for (const ro of roWindows) {
    const words = new Uint32Array(ro.bytes / 4);
    for (let i = 0; i < words.length; i++) words[i] = roWord(o.seed, ro.guest, i);
    await backing.writev(ro.offset, [new Uint8Array(words.buffer)]);
  }

  // ------------------------------------------------------------ devices the backend gave up on
  const gaveUp = new Set<string>();
  const gaveUpRoot = errorRoot(host.backendKind);
  const scanErrors = async (): Promise<void> => {
    const domids = await host.xs.directory(gaveUpRoot).catch(() => [] as string[]);
    for (const d of domids) {
      for (const devid of await host.xs.directory(`${gaveUpRoot}/${d}`).catch(() => [] as string[])) {
        const key = `${d}/${devid}`;
        const message = await host.xs.tryRead(`${gaveUpRoot}/${key}/${VbdKey.error}`).catch(() => undefined);
        if (message === undefined || gaveUp.has(key)) continue;
        gaveUp.add(key);
        hostFinding({ kind: 'crash', message: `the backend gave up on vbd ${key}: ${message}` });
      }
    }
  };
  await host.xs.watch(domainErrorDir(), 'fuzz-errors', () => void scanErrors());

  // ------------------------------------------------------------ the neighbour, alone first
  let nbProgress = { ops: 0, at: performance.now() };
  let nbReady: (control: number) => void = () => undefined;
  const nbIsReady = new Promise<number>((resolve) => (nbReady = resolve));
  let nbDone: (r: NeighbourResult) => void = () => undefined;
  const nbResult = new Promise<NeighbourResult>((resolve) => (nbDone = resolve));
  const neighbourParams: NeighbourParams = { seed: o.seed ^ 0x6e656967, maxBytes: 16 << 10, iodepth: 16, deadlineMs, writeFraction: 0.5 };
  let neighbour: GuestHandle | null = null;
  let neighbourReport: NeighbourReport | null = null;
  let nbCrashed = false;
  // Once it has reported its result, the neighbour's worker is ended by the teardown: not a crash.
  let nbFinished = false;
  try {
    neighbour = await host.createGuest(
      { name: 'fuzz-neighbour', memoryMiB: 32, disks: [{ target: 'fuzz-neighbour', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      {
        workload: NEIGHBOUR_URL,
        params: neighbourParams,
        onReport: (m) => {
          const msg = m as NeighbourMessage;
          if (msg.type === 'ready') nbReady(msg.control);
          else if (msg.type === 'progress') nbProgress = { ops: msg.ops, at: performance.now() };
          // Its mismatches are counted from its tally at the end (it details only the first few).
          else if (msg.type === 'finding') sink.add(at({ ...msg.finding, disk: 'neighbour' }), msg.finding.kind !== 'corruption');
          else if (msg.type === 'done') {
            nbFinished = true;
            nbDone(msg.result);
          }
        },
      },
    );
  } catch (err) {
    hostFinding({ kind: 'crash', message: `the neighbour could not start: ${(err as Error).message}` });
  }
  const nbExit = neighbour?.result.then(
    () => undefined,
    (err: unknown) => {
      if (nbFinished) return;
      nbCrashed = true;
      hostFinding({ kind: 'crash', message: `the neighbour's worker died: ${(err as Error).message}` });
    },
  );
  const nbControlFrame = neighbour === null ? null : await withTimeout(nbIsReady, deadlineMs * 2);
  if (neighbour !== null && nbControlFrame === null && !nbCrashed)
    hostFinding({ kind: 'hang', message: `the neighbour did not start within ${deadlineMs * 2} ms` });
  // Rates from the neighbour's own progress reports (each stamped when it arrived).
  const soloStart = nbProgress;
  await sleep(o.soloMs ?? 1000);
  const rate = (from: { ops: number; at: number }, to: { ops: number; at: number }): number =>
    to.at > from.at ? ((to.ops - from.ops) * 1000) / (to.at - from.at) : 0;
  const soloRate = rate(soloStart, nbProgress);

  // ------------------------------------------------------------ the hostile guests
  const states: HostileState[] = [];
  const perGuest = Math.floor(requests / o.guests);
  const epochRequests = Math.max(256, Math.min(4096, Math.floor(perGuest / 32)));
  const overflowEvery = Math.max(epochRequests, Math.min(50_000, Math.floor(perGuest / 8)));
  const vbdsOf = (domid: number): Vbd[] =>
    HOSTILE_DISKS.map((d) => host.blkback.vbds.get(`${domid}/${vdevToDeviceId(VDEV[d])}`)).filter((v): v is Vbd => v !== undefined);
  const hostileVbds = new Map<string, Vbd>();

  const checkEpoch = async (s: HostileState, m: HostileEpoch): Promise<void> => {
    const domid = s.handle!.domid;
    const key = `${domid}/${m.devid}`;
    const vbd = host.blkback.vbds.get(key);
    const problems: string[] = [];
    if (vbd === undefined) problems.push(`vbd ${key} is gone`);
    else {
      hostileVbds.set(key, vbd);
      if (m.halted) {
        // The overflow's notifications and this message race through the event loop: give the ring a moment.
        const until = performance.now() + deadlineMs;
        while (!vbd.halted && performance.now() < until) await sleep(5);
        if (!vbd.halted) problems.push('the ring is not halted after req_prod ran past it');
      } else if (vbd.halted) problems.push('the ring is halted, but nothing overflowed it');
      if (vbd.inflight !== 0) problems.push(`${vbd.inflight} requests in flight after the guest saw every answer`);
      const errors = vbd.stats.errors;
      if (m.expected !== null) {
        const wrong = ERROR_KINDS.filter((k) => errors[k] !== m.expected![k]).map((k) => `${k} ${errors[k]} (owed ${m.expected![k]})`);
        if (wrong.length > 0) problems.push(`error counters disagree with the faults sent: ${wrong.join(', ')}`);
      } else {
        if (errors.io_error !== 0) problems.push(`${errors.io_error} I/O errors on the scribbled disk`);
        if (errors.ring_overflow !== 0) problems.push('the scribbled ring was halted');
      }
    }
    if (problems.length > 0) {
      hostFinding({ kind: 'protocol', message: `epoch ${m.epoch}: ${problems.join('; ')}`, guest: s.guest, disk: m.disk, index: m.index });
    }
    const control = s.control;
    if (control !== null) {
      Atomics.store(control, CONTROL_ACK + HOSTILE_DISKS.indexOf(m.disk), m.epoch);
      Atomics.notify(control, CONTROL_ACK + HOSTILE_DISKS.indexOf(m.disk));
    }
  };

  const controlOf = (domid: number, frame: number): Int32Array | null => {
    const domain = host.hypervisor.domain(domid);
    return domain === undefined ? null : new Int32Array(domain.handles.memory.buffer, frame * 4096, 1024);
  };

  const attackStart = nbProgress;
  for (let g = 0; g < o.guests; g++) {
    const s: HostileState = {
      guest: g,
      handle: null,
      control: null,
      progress: null,
      result: null,
      lastHeard: performance.now(),
      ended: false,
      counted: emptyCounts(),
    };
    states.push(s);
    const params: HostileParams = {
      guest: g,
      seed: o.seed,
      devids: Object.fromEntries(HOSTILE_DISKS.map((d) => [d, vdevToDeviceId(VDEV[d])])) as Record<HostileDiskName, number>,
      requests: g === o.guests - 1 ? requests - perGuest * (o.guests - 1) : perGuest,
      deadlineMs,
      otherDomid: 0x7000 + g,
      epochRequests,
      overflowEvery,
    };
    s.handle = await host.createGuest(
      { name: `fuzz-hostile-${g}`, memoryMiB: HOSTILE_MEMORY_MIB, disks: [] },
      {
        workload: HOSTILE_URL,
        params,
        onReport: (m) => {
          const msg = m as HostileMessage;
          s.lastHeard = performance.now();
          switch (msg.type) {
            case 'ready':
              s.control = controlOf(s.handle!.domid, msg.control);
              for (const v of vbdsOf(s.handle!.domid)) hostileVbds.set(`${v.frontendDomid}/${v.devid}`, v);
              return;
            case 'progress':
              s.progress = msg;
              s.counted = msg.findings;
              return;
            case 'epoch':
              void checkEpoch(s, msg);
              return;
            case 'finding':
              sink.add(at(msg.finding), false);
          }
        },
      },
    );
    for (const disk of HOSTILE_DISKS) {
      await host.attachDisk(s.handle.domid, { target: `fuzz-g${g}-${disk}`, vdev: VDEV[disk], readOnly: disk === 'ro', backendtype: 'phy' });
    }
  }

  // ------------------------------------------------------------ progress, and waiting for the guests
  const silentMs = 3 * deadlineMs + 5000;
  const sentNow = (): number => states.reduce((n, s) => n + (s.result?.requests ?? s.progress?.requests ?? 0), 0);
  const findingsNow = (): number => totalFindings(legCounts) + states.reduce((n, s) => n + totalFindings(s.counted), 0);
  let lastLine = { at: performance.now(), sent: 0 };
  const progressTimer = setInterval(() => {
    const now = performance.now();
    for (const s of states) {
      if (!s.ended && now - s.lastHeard > silentMs && s.handle !== null) {
        s.ended = true;
        hostFinding({
          kind: 'hang',
          message: `hostile guest ${s.guest} sent nothing for ${Math.round((now - s.lastHeard) / 1000)} s; ended it`,
          guest: s.guest,
        });
        void host.destroyGuest(s.handle.domid);
      }
    }
    if (o.onProgress !== undefined) {
      const sent = sentNow();
      const rate = ((sent - lastLine.sent) * 1000) / Math.max(1, now - lastLine.at);
      lastLine = { at: now, sent };
      const found = findingsNow();
      o.onProgress(
        `fuzz [${legName} ${dataPath}] ${sent.toLocaleString('en-US')}/${requests.toLocaleString('en-US')} requests ` +
          `(${Math.floor((100 * sent) / requests)}%), ${formatRate(rate)}/s, ${formatDuration(now - started)}; ` +
          `neighbour ${nbProgress.ops.toLocaleString('en-US')} ops; findings: ${found === 0 ? 'none' : found}`,
      );
    }
  }, o.progressMs ?? 2000);

  const stopGuests = (): void => {
    for (const s of states) if (s.control !== null) Atomics.store(s.control, CONTROL_STOP, 1);
  };
  o.signal?.addEventListener('abort', stopGuests);
  if (o.signal?.aborted === true) stopGuests();
  await Promise.all(
    states.map(async (s) => {
      try {
        s.result = (await s.handle!.result) as HostileResult;
        s.counted = s.result.findings;
      } catch (err) {
        if (!s.ended) hostFinding({ kind: 'crash', message: `hostile guest ${s.guest}'s worker died: ${(err as Error).message}`, guest: s.guest });
      } finally {
        s.ended = true;
      }
    }),
  );
  const attackEnd = nbProgress;
  clearInterval(progressTimer);
  o.signal?.removeEventListener('abort', stopGuests);

  // ------------------------------------------------------------ the neighbour: stop, final read-back
  let nb: NeighbourResult | null = null;
  if (neighbour !== null && nbControlFrame !== null) {
    const control = controlOf(neighbour.domid, nbControlFrame.value);
    if (control !== null) Atomics.store(control, 0, 1);
    const done = await withTimeout(nbResult, deadlineMs * 2 + 10_000);
    if (done === null) {
      if (!nbCrashed) hostFinding({ kind: 'hang', message: 'the neighbour did not finish its final read-back in time', disk: 'neighbour' });
    } else {
      nb = done.value;
      // Its worker closes its disk and ends; give it the time to, before the host goes.
      if (!nb.hung && nbExit !== undefined) await withTimeout(nbExit, deadlineMs);
    }
  }
  if (nb !== null) {
    legCounts.corruption += nb.mismatches;
    sink.counts.corruption += nb.mismatches;
  }
  if (nb !== null && neighbour !== null) {
    const nbVbd = host.blkback.vbds.get(`${neighbour.domid}/${vdevToDeviceId('xvda')}`);
    const mine = nbVbd?.stats.seg_contended ?? 0;
    let total = mine;
    for (const v of hostileVbds.values()) total += v.stats.seg_contended;
    const equalShare = 1 / (o.guests + 1);
    const share = total === 0 ? 1 : mine / total;
    const attackedRate = rate(attackStart, attackEnd);
    const floor = (o.minShare ?? 0.5) * equalShare;
    // Judged only on a sample worth the name: a campaign over in a moment says nothing either way.
    const judged = total >= SHARE_MIN_SEGMENTS;
    neighbourReport = { ...nb, soloRate, attackedRate, share, equalShare, shareJudged: judged };
    if (!nb.hung && judged && (attackEnd.ops === attackStart.ops || share < floor)) {
      hostFinding({
        kind: 'share',
        message:
          `the neighbour got ${(share * 100).toFixed(1)}% of the segments answered while others had requests queued ` +
          `(${mine} of ${total}); an equal share is ${(equalShare * 100).toFixed(1)}%, the floor ${(floor * 100).toFixed(1)}%; ` +
          `${Math.round(attackedRate)} ops/s beside the attack, ${Math.round(soloRate)} alone`,
        disk: 'neighbour',
      });
    }
  }

  // ------------------------------------------------------------ what the host can check at the end
  for (const ro of roWindows) {
    const now = new Uint8Array(ro.bytes);
    await backing.readv(ro.offset, [now]);
    const words = new Uint32Array(now.buffer);
    let bad = 0;
    for (let i = 0; i < words.length; i++) if (words[i] !== roWord(o.seed, ro.guest, i)) bad++;
    if (bad > 0)
      hostFinding({ kind: 'corruption', message: `${bad} words of hostile guest ${ro.guest}'s read-only disk changed`, guest: ro.guest, disk: 'ro' });
  }
  await scanErrors();
  // (After a hang, requests of the hung device are still in flight: nothing more to learn here.)
  const allEnded = states.every((s) => s.result !== null && s.result.findings.hang === 0) && nb !== null && !nb.hung && legCounts.hang === 0;
  if (allEnded && host.blkback.budget.used !== 0) {
    hostFinding({
      kind: 'protocol',
      message: `${host.blkback.budget.used} requests still counted in flight (the in-flight budget) after every guest finished`,
    });
  }
  await host.xs.unwatch(domainErrorDir(), 'fuzz-errors').catch(() => undefined);
  // A device whose store never answers cannot be torn down: give up on it after a while.
  const stopped = await withTimeout(host.stop(), 2 * deadlineMs);

  // ------------------------------------------------------------ the leg's report
  const tried: Record<string, number> = {};
  const disks = Object.fromEntries(
    HOSTILE_DISKS.map((d) => [d, { requests: 0, answered: 0, malformed: 0, malformedRight: 0, counterChecks: 0, overflows: 0, reconnects: 0 }]),
  ) as Record<HostileDiskName, DiskTally>;
  let scribbles = 0;
  let storms = 0;
  let scans = 0;
  let canaries = 0;
  let answered = 0;
  let sent = 0;
  const counts = { ...legCounts };
  for (const s of states) {
    const r = s.result ?? s.progress;
    if (r === null) continue;
    sent += r.requests;
    answered += r.answered;
    r.families.forEach((n, i) => (tried[FAMILIES[i]!.name] = (tried[FAMILIES[i]!.name] ?? 0) + n));
    for (const d of HOSTILE_DISKS) for (const k of Object.keys(disks[d]) as (keyof DiskTally)[]) disks[d][k] += r.disks[d][k];
    scribbles += r.scribbles;
    storms += r.storms;
    scans += r.scans;
    canaries += r.canaries;
    for (const k of FINDING_KINDS) {
      counts[k] += s.counted[k];
      sink.counts[k] += s.counted[k];
    }
  }
  const backendErrors = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as Record<ErrorKind, number>;
  for (const v of hostileVbds.values()) for (const k of ERROR_KINDS) backendErrors[k] += v.stats.errors[k];
  return {
    dataPath,
    requests: sent,
    answered,
    durationMs: performance.now() - started,
    tried,
    disks,
    chaos: { scribbles, storms, kinds: CHAOS_NAMES },
    canaries,
    scans,
    backendErrors,
    neighbour: neighbourReport,
    findings: counts,
    teardownTimedOut: stopped === null,
  };
}

export function formatRate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)}M`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)}k`;
  return perSecond.toFixed(0);
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)} s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
}
