// What one harness boot proved: the console's results and files in, named pass/fail checks and the
// fio figures out. Pure. A check whose result never arrived fails ("missing"), so a boot cut short
// cannot pass; a failed result no named check asks about fails on its own (ResultLedger); every fio
// run is checked, warm-ups too; and only runs that passed give figures.
import type { HarnessResult } from './console.ts';
import { expectedQueues, queueFigures, queueLine } from './queues.ts';
import type { QueueFigures } from './queues.ts';
import { ResultLedger } from './result-ledger.ts';
import { SYSCALL_DISK, syscallFigures, syscallLine } from './syscalls.ts';
import type { SyscallFigures, SyscallPath } from './syscalls.ts';

/**
 * kernel or ours: one backend for the whole boot; paired: both, taking turns (evaluatePaired);
 * same-guest: both at once, one guest with a disk from each (evaluateSameGuest).
 */
export type Mode = 'kernel' | 'ours' | 'paired' | 'same-guest';

export interface BootRecord {
  readonly mode: Mode;
  readonly results: readonly HarnessResult[];
  /** Files printed on the console, by name (fio JSON, bw logs, ctl output). */
  readonly files: ReadonlyMap<string, string>;
  /** dom0 printed its last phase (it did not crash or time out). */
  readonly finished: boolean;
  /** BLKBACK-RESULT lines that did not parse, and who printed them ('dom0', 'guest:<tag>'). */
  readonly unreadable?: readonly { readonly source: string; readonly text: string }[];
}

export interface BootPlan {
  /** Guests that run every check and both fio jobs, by tag (and xl type). */
  readonly guests: readonly ('pv' | 'pvh')[];
  /** The fio jobs each of them runs (names of the derived job files). */
  readonly jobs: readonly string[];
  /** How many times each guest runs every job (the seed's mail: three); 1 when absent. */
  readonly runs: Readonly<Partial<Record<string, number>>>;
  /** Bytes each job of a job file writes (its region), by job name. */
  readonly bytesPerJob: ReadonlyMap<string, number>;
  /** The guest that gets xvdb attached and detached. */
  readonly hotplugGuest: string | undefined;
  /** The destroyed-mid-I/O guest and the one after it. */
  readonly midIo: boolean;
  /** --mode paired and same-guest: turns of each backend (kernel-1, ours-1, ours-2, kernel-2, ...). */
  readonly pairs?: number;
  /**
   * --mode same-guest --chain iscsi: the disks are LUNs of `blkback iscsi-target` in dom0, made SCSI
   * disks by dom0's Linux initiator (open-iscsi); xvdc is served by blkback serve's own initiator.
   */
  readonly chain?: 'iscsi';
  /**
   * --mode same-guest: the twin guest's vCPUs, and serve's --max-queues (absent: serve was started
   * without it, a build without multi-queue, and its disk's queues are not checked).
   */
  readonly multiQueue?: { readonly vcpus: number; readonly serveMaxQueues?: number };
  /** --mode same-guest: the data paths whose system calls per request dom0 counts. */
  readonly syscalls?: readonly SyscallPath[];
}

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  /** The guest (tag) the check is about; absent for the boot as a whole (dom0, the backend). */
  readonly guest?: string;
}

export interface FioFigures {
  readonly guest: string;
  readonly job: string;
  /** 1, 2, 3 ...: the job's run in its guest. */
  readonly run: number;
  readonly jobs: number;
  /** Write phase: bytes of all jobs over the longest job's write time. */
  readonly writeMBps: number;
  readonly writeIops: number;
  /** Verify phase (fio reads back and checks every block). */
  readonly verifyMBps: number;
  readonly writeBytes: number;
  readonly verifyBytes: number;
  readonly errors: number;
  /** I/Os of the whole run: writes and verify reads, all jobs (optional: results.json of older runs lack it). */
  readonly ios?: number;
  /** The run's wall time in the guest (fio started to fio done); 0 when the guest did not say. */
  readonly seconds?: number;
}

interface FioJobJson {
  readonly error?: number;
  readonly write?: { io_bytes?: number; runtime?: number; total_ios?: number };
  readonly read?: { io_bytes?: number; runtime?: number; total_ios?: number };
}

/** fio --output-format=json to figures; throws when the text is not fio's JSON. `seconds`: the run's wall time. */
export function fioFigures(guest: string, job: string, run: number, json: string, seconds = 0): FioFigures {
  // fio may print notes before the JSON object (e.g. "note: both iodepth >= 1 and synchronous ...")
  const start = json.indexOf('{');
  // fio 3.33 prints non-finite numbers bare ("stddev" : inf, -nan), which JSON has no words for
  const text = (start > 0 ? json.slice(start) : json).replace(/:\s*-?(inf|nan)\b/gi, ': null');
  const parsed = JSON.parse(text) as { jobs?: FioJobJson[] };
  const jobs = parsed.jobs;
  if (!Array.isArray(jobs) || jobs.length === 0) throw new Error('fio JSON has no jobs');
  let writeBytes = 0;
  let writeMs = 0;
  let ios = 0;
  let verifyBytes = 0;
  let verifyMs = 0;
  let errors = 0;
  let readIos = 0;
  for (const j of jobs) {
    readIos += j.read?.total_ios ?? 0;
    writeBytes += j.write?.io_bytes ?? 0;
    writeMs = Math.max(writeMs, j.write?.runtime ?? 0);
    ios += j.write?.total_ios ?? 0;
    verifyBytes += j.read?.io_bytes ?? 0;
    verifyMs = Math.max(verifyMs, j.read?.runtime ?? 0);
    errors += j.error ?? 0;
  }
  const perSecond = (n: number, ms: number): number => (ms > 0 ? (n * 1000) / ms : 0);
  return {
    guest,
    job,
    run,
    jobs: jobs.length,
    writeMBps: perSecond(writeBytes, writeMs) / 1e6,
    writeIops: perSecond(ios, writeMs),
    verifyMBps: perSecond(verifyBytes, verifyMs) / 1e6,
    writeBytes,
    verifyBytes,
    errors,
    ios: ios + readIos,
    seconds: Number.isFinite(seconds) && seconds > 0 ? seconds : 0,
  };
}

/** A backend counter from `blkback ctl stats` output, whatever its layout ("f_req": 3, f_req=3 ...). */
export function counterFromText(text: string, name: string): number | undefined {
  const m = new RegExp(`"?${name}"?\\s*[:=]\\s*(\\d+)`).exec(text);
  return m === null ? undefined : Number(m[1]);
}

/** The checks of one boot as they are made, the results they claim, the figures of passed runs. */
class BootChecks {
  readonly checks: Check[] = [];
  readonly fio: FioFigures[] = [];
  readonly #boot: BootRecord;
  readonly #plan: BootPlan;
  readonly #ledger: ResultLedger;

  constructor(boot: BootRecord, plan: BootPlan) {
    this.#boot = boot;
    this.#plan = plan;
    this.#ledger = new ResultLedger(boot.results);
    this.add('dom0 ran to the end', boot.finished, boot.finished ? 'ok' : 'dom0 never printed its last phase (crash or timeout)');
    for (const r of this.#ledger.claimAll((x) => x.check === 'fatal')) this.add('dom0 fatal', false, String(r.message));
  }

  add(name: string, ok: boolean, detail: string, guest?: string): void {
    this.checks.push(guest === undefined ? { name, ok, detail } : { name, ok, detail, guest });
  }

  /** The first result that matches, claimed. */
  claim(match: (r: HarnessResult) => boolean): HarnessResult | undefined {
    return this.#ledger.claim(match);
  }

  file(name: string): string | undefined {
    return this.#boot.files.get(name);
  }

  /** The first result of that check (from that guest and source, when given), claimed. */
  find(check: string, guest?: string, src?: string): HarnessResult | undefined {
    return this.#ledger.claim((r) => r.check === check && (guest === undefined || r.guest === guest) && (src === undefined || r.src === src));
  }

  /** A check that passes when its result says ok; `about` is the guest it concerns. */
  okResult(name: string, about: string | undefined, check: string, guest?: string, src?: string): HarnessResult | undefined {
    const r = this.find(check, guest, src);
    if (r === undefined) this.add(name, false, 'missing: no result on the console', about);
    else this.add(name, r.ok === true, r.ok === true ? 'ok' : JSON.stringify(r), about);
    return r;
  }

  /**
   * One run of one job in one guest: reported ok, exit 0, no job errors, everything written
   * verified. `counted`: its figures go into the comparison (false for warm-ups, which are checked
   * all the same: a verify error there is a data error like any other).
   */
  fioRun(guest: string, job: string, n: number, name: string, counted: boolean): void {
    const run = this.#ledger.claim((x) => x.check === 'fio' && x.guest === guest && x.job === job && x.run === n);
    if (run === undefined) this.add(name, false, 'missing: the guest never reported this job', guest);
    else this.#fioResult(run, name, counted);
  }

  #fioResult(run: HarnessResult, name: string, counted: boolean): void {
    const guest = typeof run.guest === 'string' ? run.guest : undefined;
    const job = String(run.job);
    const n = Number(run.run);
    const json = guest === undefined ? undefined : this.#boot.files.get(`fio-json-${guest}-${job}-${n}`);
    if (guest === undefined || json === undefined) {
      this.add(name, false, `rc=${String(run.rc)}, no JSON output on the console`, guest);
      return;
    }
    let f: FioFigures;
    try {
      f = fioFigures(guest, job, n, json, Number(run.seconds));
    } catch (e) {
      this.add(name, false, `fio JSON unreadable: ${(e as Error).message}`, guest);
      return;
    }
    const want = (this.#plan.bytesPerJob.get(job) ?? 0) * f.jobs;
    const wroteAll = f.writeBytes === want;
    const verified = f.verifyBytes >= f.writeBytes && f.writeBytes > 0;
    const ok = run.ok === true && run.rc === 0 && f.errors === 0 && verified;
    this.add(
      name,
      ok,
      `rc=${String(run.rc)} errors=${f.errors} wrote ${f.writeBytes} B${wroteAll ? '' : ` (of ${want}: runtime cap)`} ` +
        `verified ${f.verifyBytes} B; write ${f.writeMBps.toFixed(1)} MB/s, ${f.writeIops.toFixed(0)} IOPS`,
      guest,
    );
    // a run that failed (cut short, job errors, unverified bytes) must not move a median
    if (ok && counted) this.fio.push(f);
  }

  /**
   * The results no named check claimed: a fio run the plan did not name (a restarted guest's second
   * report) is checked like any other, without figures; any other failed result fails on its own;
   * so does an unreadable result line that says ok:false.
   */
  finish(): { checks: Check[]; fio: FioFigures[] } {
    for (const r of this.#ledger.unclaimed()) {
      const guest = typeof r.guest === 'string' ? r.guest : undefined;
      if (r.check === 'fio') this.#fioResult(r, `${guest ?? r.src}: fio ${String(r.job)} run ${String(r.run)} (not in the plan)`, false);
      else if (r.ok !== true && r.ok !== undefined) this.add(`${guest ?? r.src}: ${r.check} reported not ok`, false, JSON.stringify(r), guest);
    }
    for (const u of this.#boot.unreadable ?? []) {
      if (!/"ok"\s*:\s*false/.test(u.text)) continue;
      // whose it was: its own "guest" field if that much survived, else the console it came from
      const guest = /"guest"\s*:\s*"([^"]+)"/.exec(u.text)?.[1] ?? /^guest:(.+)$/.exec(u.source)?.[1];
      this.add(`${guest ?? u.source}: a failed result, unreadable`, false, u.text, guest);
    }
    return { checks: this.checks, fio: this.fio };
  }
}

/**
 * The failed checks, split: those about a guest in `reportOnly` (by tag) are reported but do not
 * decide the verdict; every other failure does, including the boot-wide ones.
 */
export function failures(checks: readonly Check[], reportOnly: ReadonlySet<string>): { gating: Check[]; reportingOnly: Check[] } {
  const failed = checks.filter((c) => !c.ok);
  const reporting = (c: Check): boolean => c.guest !== undefined && reportOnly.has(c.guest);
  return { gating: failed.filter((c) => !reporting(c)), reportingOnly: failed.filter(reporting) };
}

/** --mode paired: the guests' tags in the order dom0 runs them (the order alternates each pair). */
export function pairedGuests(pairs: number): { tag: string; backend: 'kernel' | 'ours'; pair: number }[] {
  const out: { tag: string; backend: 'kernel' | 'ours'; pair: number }[] = [];
  for (let pair = 1; pair <= pairs; pair++) {
    const order = pair % 2 === 1 ? (['kernel', 'ours'] as const) : (['ours', 'kernel'] as const);
    for (const backend of order) out.push({ tag: `${backend}-${pair}`, backend, pair });
  }
  return out;
}

/** --mode paired: the warm-up guest and every turn's guest ran every job once, cleanly, and were destroyed. */
export function evaluatePaired(boot: BootRecord, plan: BootPlan): { checks: Check[]; fio: FioFigures[] } {
  const c = new BootChecks(boot, plan);
  // the uncounted warm-up guest first (dom0-init.sh): its runs are checked, its figures not taken
  const guests = [{ tag: 'warmup', counted: false }, ...pairedGuests(plan.pairs ?? 0).map(({ tag }) => ({ tag, counted: true }))];
  for (const { tag, counted } of guests) {
    c.okResult(`${tag}: xl create`, tag, 'create', tag);
    for (const job of plan.jobs) c.fioRun(tag, job, 1, `${tag}: fio ${job}`, counted);
    c.okResult(`${tag}: xl destroy, backend directory removed`, tag, 'destroy', tag);
  }
  return c.finish();
}

/**
 * --mode same-guest: one guest, xvda from the kernel's backend and xvdb from serve (attached with
 * `blkback ctl attach`); every job ran on each disk once for the warm-up (checked, not counted)
 * and once a pair, cleanly; xvdb detached; the guest destroyed; serve still up.
 */
export interface SameGuestFigures {
  /** What each disk negotiated (xvda: the kernel's backend, xvdb: serve's), when dom0 listed it. */
  readonly queues: readonly (QueueFigures & { readonly disk: string; readonly backend: 'kernel' | 'ours'; readonly expected: number })[];
  /** serve's system calls per request, per counted data path. */
  readonly syscalls: readonly SyscallFigures[];
}

export function evaluateSameGuest(boot: BootRecord, plan: BootPlan): { checks: Check[]; fio: FioFigures[] } & SameGuestFigures {
  const c = new BootChecks(boot, plan);
  if (plan.chain === 'iscsi') iscsiChainChecks(c);
  c.okResult('twin: xl create (xvda from xen-blkback)', 'twin', 'create', undefined, 'dom0');
  c.okResult('twin: blkback ctl attach xvdb (backend/blkback)', 'twin', 'ctl-attach', undefined, 'dom0');
  const xvdb = c.okResult('twin: the guest sees xvdb', 'twin', 'xvdb', undefined, 'guest');
  if (xvdb !== undefined)
    c.add('twin: xvdb advertises a write cache (feature-flush-cache)', xvdb.write_cache === 'write back', `write_cache=${String(xvdb.write_cache)}`, 'twin');
  for (const tag of ['warmup-kernel', 'warmup-ours']) {
    for (const job of plan.jobs) c.fioRun(tag, job, 1, `${tag}: fio ${job}`, false);
  }
  for (const { tag } of pairedGuests(plan.pairs ?? 0)) {
    for (const job of plan.jobs) c.fioRun(tag, job, 1, `${tag}: fio ${job}`, true);
  }
  if (plan.chain === 'iscsi') {
    c.okResult("twin: xvdc's guest-written marker in LUN 2's backing file (fsync through serve's initiator)", 'twin', 'xvdc-marker', undefined, 'dom0');
    c.okResult('twin: blkback ctl detach xvdc', 'twin', 'ctl-detach-xvdc', undefined, 'dom0');
  }
  const queues = plan.multiQueue === undefined ? [] : queueChecks(c, plan.multiQueue);
  const syscalls = syscallChecks(c, plan.syscalls ?? []);
  c.okResult('twin: blkback ctl detach xvdb, its backend directory removed', 'twin', 'ctl-detach', undefined, 'dom0');
  c.okResult('twin: xvdb gone from the guest', 'twin', 'xvdb-gone', undefined, 'guest');
  c.okResult('twin: xl destroy, backend directory removed', 'twin', 'destroy', undefined, 'dom0');
  c.okResult('blkback serve alive at the end', undefined, 'serve-alive', undefined, 'dom0');
  if (plan.chain === 'iscsi') {
    c.okResult("Linux's initiator logs out", undefined, 'iscsi-logout', undefined, 'dom0');
    c.okResult('blkback iscsi-target exits on SIGTERM', undefined, 'iscsi-target-exit', undefined, 'dom0');
  }
  return { ...c.finish(), queues, syscalls };
}

/**
 * Each disk of the twin guest (a vCPU count above one) negotiated as many queues as Linux's blkfront
 * asks of that backend: xvda the kernel's (xen-blkback advertises dom0's vCPUs), xvdb serve's (its
 * --max-queues, which it must advertise as given).
 */
function queueChecks(c: BootChecks, mq: NonNullable<BootPlan['multiQueue']>): SameGuestFigures['queues'] {
  const out: SameGuestFigures['queues'][number][] = [];
  const disks = [
    { disk: 'xvda', backend: 'kernel' as const, who: "xen-blkback's" },
    ...(mq.serveMaxQueues === undefined ? [] : [{ disk: 'xvdb', backend: 'ours' as const, who: "blkback serve's" }]),
  ];
  for (const { disk, backend, who } of disks) {
    const r = c.claim((x) => x.check === 'queues' && x.disk === disk && x.src === 'dom0');
    const listing = c.file(`xenstore-${disk}`);
    if (r === undefined || listing === undefined || typeof r.frontend !== 'string' || typeof r.backend_path !== 'string') {
      c.add(`twin: ${disk} (${who}) negotiated its queues`, false, `missing: ${r === undefined ? "dom0's queues result" : 'the xenstore listing'}`, 'twin');
      continue;
    }
    const q = queueFigures(listing, r.frontend, r.backend_path);
    const expected = expectedQueues(mq.vcpus, q.advertised);
    const advertisedOk = backend === 'kernel' || q.advertised === mq.serveMaxQueues;
    const ok = r.ok === true && advertisedOk && q.numQueues === expected && q.complete === expected && q.queueDirs === (expected > 1 ? expected : 0);
    const want = backend === 'ours' ? `--max-queues ${mq.serveMaxQueues} advertised, ` : '';
    c.add(
      `twin: ${disk} (${who}) negotiated ${expected} queue${expected > 1 ? 's' : ''} with a ${mq.vcpus}-vCPU guest`,
      ok,
      `${want}${queueLine(q)}; dom0 has ${String(r.dom0_cpus)} CPUs`,
      'twin',
    );
    out.push({ ...q, disk, backend, expected });
  }
  return out;
}

/**
 * serve's system calls per request, counted for each data path: the figure must be there (strace's
 * summary, serve's counters before and after, requests in between); the goal (at most 0.5) is
 * reported beside it, PASS or MISS, not enforced. The disk must have used the path it stands for.
 */
function syscallChecks(c: BootChecks, paths: readonly SyscallPath[]): SyscallFigures[] {
  const out: SyscallFigures[] = [];
  for (const path of paths) {
    const disk = SYSCALL_DISK[path];
    if (path === 'copy') {
      c.okResult('twin: blkback ctl attach xvdd (the frontend without persistent grants)', 'twin', 'ctl-attach-xvdd', undefined, 'dom0');
      c.okResult('twin: the guest sees xvdd', 'twin', 'xvdd', undefined, 'guest');
    }
    const job = c.claim((r) => r.check === 'syscalls-fio' && r.disk === disk && r.src === 'guest');
    c.add(
      `twin: the system-call job on ${disk} ran (fio, 4 KiB QD 32)`,
      job?.ok === true,
      job === undefined ? 'missing: the guest never reported it' : JSON.stringify(job),
      'twin',
    );
    const window = c.claim((r) => r.check === 'syscalls' && r.disk === disk && r.src === 'dom0');
    const f =
      window === undefined
        ? "missing: dom0's window result"
        : window.ok !== true
          ? `dom0: ${JSON.stringify(window)}`
          : syscallFigures(
              path,
              {
                ...fileIf('strace', c.file(`strace-${disk}`)),
                ...fileIf('before', c.file(`syscalls-before-${disk}`)),
                ...fileIf('after', c.file(`syscalls-after-${disk}`)),
                ...fileIf('list', c.file(`syscalls-list-${disk}`)),
                ...fileIf('fio', c.file(`fio-json-syscalls-${disk}`)),
              },
              typeof window.seconds === 'number' ? window.seconds : undefined,
            );
    const name = `blkback serve's system calls per request counted on ${disk} (${path} path)`;
    if (typeof f === 'string') {
      c.add(name, false, f);
      continue;
    }
    c.add(name, true, syscallLine(f));
    c.add(`${disk} used the ${path} data path (blkback ctl list)`, f.dataPath === path, `dataPath=${f.dataPath ?? 'unknown'}`, 'twin');
    out.push(f);
  }
  if (paths.includes('copy')) c.okResult('twin: blkback ctl detach xvdd', 'twin', 'ctl-detach-xvdd', undefined, 'dom0');
  return out;
}

function fileIf<K extends string>(key: K, text: string | undefined): Partial<Record<K, string>> {
  return text === undefined ? {} : ({ [key]: text } as Record<K, string>);
}

/** The seed's chain: Linux's initiator in dom0 against our target, and serve's initiator (xvdc). */
function iscsiChainChecks(c: BootChecks): void {
  const login = c.okResult(
    "dom0's Linux initiator (open-iscsi) discovers our target and logs in; LUNs 0 and 1 are SCSI disks",
    undefined,
    'iscsi-login',
    undefined,
    'dom0',
  );
  if (login !== undefined) c.add('the SCSI disks are distinct', login.lun0 !== login.lun1, `lun0=${String(login.lun0)} lun1=${String(login.lun1)}`);
  for (const lun of [0, 1]) {
    const r = c.find(`iscsi-read-lun${lun}`, undefined, 'dom0');
    c.add(
      `Linux's initiator reads LUN ${lun} whole: the backing file's bytes`,
      r !== undefined && r.ok === true && r.md5 === r.backing_md5,
      r === undefined ? 'missing' : `${String(r.device)}: md5 ${String(r.md5)}, backing ${String(r.backing_md5)}, ${String(r.bytes)} bytes`,
    );
  }
  const attach = c.okResult("twin: blkback ctl attach xvdc (iscsi://, serve's own initiator)", 'twin', 'ctl-attach-xvdc', undefined, 'dom0');
  const read = c.find('xvdc-read', 'twin', 'guest');
  c.add(
    'twin: the guest reads xvdc whole: the backing file of LUN 2',
    read !== undefined && read.ok === true && attach !== undefined && read.md5 === attach.backing_md5,
    read === undefined ? 'missing: guest xvdc-read' : `guest md5 ${String(read.md5)}, backing ${String(attach?.backing_md5)}`,
    'twin',
  );
  c.okResult('twin: a write to xvdc, fsync returns', 'twin', 'xvdc-fsync-write', undefined, 'guest');
}

export function evaluateBoot(boot: BootRecord, plan: BootPlan): { checks: Check[]; fio: FioFigures[] } {
  const c = new BootChecks(boot, plan);
  c.okResult('backend started', undefined, 'backend', undefined, 'dom0');

  const sameBacking = (name: string, guest: string, backingCheck: string, guestCheck: string, field: 'bytes' | 'md5'): void => {
    const backing = c.find(backingCheck, guest, 'dom0');
    const seen = c.find(guestCheck, guest, 'guest');
    if (backing === undefined || seen === undefined) {
      c.add(name, false, `missing: ${backing === undefined ? `dom0 ${backingCheck}` : `guest ${guestCheck}`}`, guest);
      return;
    }
    const ok = seen.ok === true && backing[field] !== undefined && seen[field] === backing[field];
    c.add(name, ok, `guest ${String(seen[field])} vs dom0 ${String(backing[field])}`, guest);
  };
  const basics = (guest: string): void => {
    c.okResult(`${guest}: xl create`, guest, 'create', guest);
    sameBacking(`${guest}: disk size equals backing file`, guest, 'backing', 'size', 'bytes');
    sameBacking(`${guest}: full read md5 equals backing file`, guest, 'backing', 'read', 'md5');
    c.okResult(`${guest}: write + fsync in the guest`, guest, 'fsync-write', guest, 'guest');
    c.okResult(`${guest}: written marker in the backing file`, guest, 'marker', guest, 'dom0');
    const flush = c.okResult(`${guest}: flush (fsync of the idle disk)`, guest, 'flush', guest, 'guest');
    if (flush !== undefined) {
      c.add(
        `${guest}: backend advertises a write cache (feature-flush-cache)`,
        flush.write_cache === 'write back',
        `write_cache=${String(flush.write_cache)}`,
        guest,
      );
    }
  };

  for (const guest of plan.guests) {
    basics(guest);
    // the backend's own count of the flushes it was sent
    let flushes: number | undefined;
    if (boot.mode === 'kernel') {
      const stats = c.find('stats', guest, 'dom0');
      flushes = typeof stats?.f_req === 'number' ? stats.f_req : undefined;
    } else {
      c.okResult(`${guest}: blkback ctl stats`, guest, `ctl-stats-${guest}`, undefined, 'dom0');
      c.okResult(`${guest}: blkback ctl list`, guest, `ctl-list-${guest}`, undefined, 'dom0');
      const text = boot.files.get(`ctl-stats-${guest}`);
      flushes = text === undefined ? undefined : counterFromText(text, 'f_req');
    }
    c.add(
      `${guest}: backend counted the flushes`,
      flushes !== undefined && flushes > 0,
      flushes === undefined ? 'no f_req counter found' : `f_req=${flushes}`,
      guest,
    );

    const runs = plan.runs[guest] ?? 1;
    for (let n = 1; n <= runs; n++) {
      for (const job of plan.jobs) c.fioRun(guest, job, n, `${guest}: fio ${job}${runs > 1 ? ` run ${n}` : ''}`, true);
    }

    if (guest === plan.hotplugGuest) {
      c.okResult(`${guest}: xl block-attach xvdb`, guest, 'block-attach', guest, 'dom0');
      sameBacking(`${guest}: hot-plugged xvdb size`, guest, 'backing2', 'hotplug-read', 'bytes');
      sameBacking(`${guest}: hot-plugged xvdb md5`, guest, 'backing2', 'hotplug-read', 'md5');
      c.okResult(`${guest}: xl block-detach xvdb`, guest, 'block-detach', guest, 'dom0');
      c.okResult(`${guest}: xvdb gone from the guest`, guest, 'hotplug-gone', guest, 'guest');
    }
    c.okResult(`${guest}: xl destroy, backend directory removed`, guest, 'destroy', guest, 'dom0');
  }

  if (plan.midIo) {
    c.okResult('busy: xl create', 'busy', 'create', 'busy');
    const d = c.okResult('busy: destroyed mid-I/O, backend directory removed', 'busy', 'destroy', 'busy', 'dom0');
    if (d !== undefined) c.add('busy: backend survived the destroy', d.backend_alive === true, `backend_alive=${String(d.backend_alive)}`, 'busy');
    basics('after');
    c.okResult('after: xl destroy', 'after', 'destroy', 'after', 'dom0');
    if (boot.mode === 'ours') c.okResult('after: blkback ctl list', 'after', 'ctl-list-after', undefined, 'dom0');
  }
  if (boot.mode === 'ours') c.okResult('blkback serve alive at the end', undefined, 'serve-alive', undefined, 'dom0');
  return c.finish();
}
