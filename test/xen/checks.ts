// What one harness boot proved: the console's results and files in, named pass/fail checks and the
// fio figures out. Pure. A check whose result never arrived fails ("missing"), so a boot cut short
// cannot pass.
import type { HarnessResult } from './console.ts';

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
}

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
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
}

interface FioJobJson {
  readonly error?: number;
  readonly write?: { io_bytes?: number; runtime?: number; total_ios?: number };
  readonly read?: { io_bytes?: number; runtime?: number };
}

/** fio --output-format=json to figures; throws when the text is not fio's JSON. */
export function fioFigures(guest: string, job: string, run: number, json: string): FioFigures {
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
  for (const j of jobs) {
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
  };
}

/** A backend counter from `blkback ctl stats` output, whatever its layout ("f_req": 3, f_req=3 ...). */
export function counterFromText(text: string, name: string): number | undefined {
  const m = new RegExp(`"?${name}"?\\s*[:=]\\s*(\\d+)`).exec(text);
  return m === null ? undefined : Number(m[1]);
}

/** One run of one job in one guest: reported, exit 0, no job errors, everything written verified. */
function checkFio(boot: BootRecord, plan: BootPlan, guest: string, job: string, n: number, name: string, add: (name: string, ok: boolean, detail: string) => void, fio: FioFigures[]): void {
  const run = boot.results.find((x) => x.check === 'fio' && x.guest === guest && x.job === job && x.run === n);
  if (run === undefined) {
    add(name, false, 'missing: the guest never reported this job');
    return;
  }
  const json = boot.files.get(`fio-json-${guest}-${job}-${n}`);
  if (json === undefined) {
    add(name, false, `rc=${String(run.rc)}, no JSON output on the console`);
    return;
  }
  try {
    const f = fioFigures(guest, job, n, json);
    fio.push(f);
    const want = (plan.bytesPerJob.get(job) ?? 0) * f.jobs;
    const wroteAll = f.writeBytes === want;
    const verified = f.verifyBytes >= f.writeBytes && f.writeBytes > 0;
    add(
      name,
      run.rc === 0 && f.errors === 0 && verified,
      `rc=${String(run.rc)} errors=${f.errors} wrote ${f.writeBytes} B${wroteAll ? '' : ` (of ${want}: runtime cap)`} ` +
        `verified ${f.verifyBytes} B; write ${f.writeMBps.toFixed(1)} MB/s, ${f.writeIops.toFixed(0)} IOPS`,
    );
  } catch (e) {
    add(name, false, `fio JSON unreadable: ${(e as Error).message}`);
  }
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

/** --mode paired: every guest ran every job once, cleanly, and was destroyed. */
export function evaluatePaired(boot: BootRecord, plan: BootPlan): { checks: Check[]; fio: FioFigures[] } {
  const checks: Check[] = [];
  const fio: FioFigures[] = [];
  const add = (name: string, ok: boolean, detail: string): void => {
    checks.push({ name, ok, detail });
  };
  add('dom0 ran to the end', boot.finished, boot.finished ? 'ok' : 'dom0 never printed its last phase (crash or timeout)');
  for (const r of boot.results) if (r.check === 'fatal') add('dom0 fatal', false, String(r.message));
  for (const { tag } of pairedGuests(plan.pairs ?? 0)) {
    const created = boot.results.find((r) => r.check === 'create' && r.guest === tag);
    add(`${tag}: xl create`, created?.ok === true, created === undefined ? 'missing: no result on the console' : JSON.stringify(created));
    for (const job of plan.jobs) checkFio(boot, plan, tag, job, 1, `${tag}: fio ${job}`, add, fio);
    const destroyed = boot.results.find((r) => r.check === 'destroy' && r.guest === tag);
    add(`${tag}: xl destroy, backend directory removed`, destroyed?.ok === true, destroyed === undefined ? 'missing: no result on the console' : JSON.stringify(destroyed));
  }
  return { checks, fio };
}

/**
 * --mode same-guest: one guest, xvda from the kernel's backend and xvdb from serve (attached with
 * `blkback ctl attach`); every job ran on each disk once a pair, cleanly; xvdb detached; the guest
 * destroyed; serve still up.
 */
export function evaluateSameGuest(boot: BootRecord, plan: BootPlan): { checks: Check[]; fio: FioFigures[] } {
  const checks: Check[] = [];
  const fio: FioFigures[] = [];
  const add = (name: string, ok: boolean, detail: string): void => {
    checks.push({ name, ok, detail });
  };
  const okResult = (name: string, check: string, src?: string): HarnessResult | undefined => {
    const r = boot.results.find((x) => x.check === check && (src === undefined || x.src === src));
    add(name, r?.ok === true, r === undefined ? 'missing: no result on the console' : r.ok === true ? 'ok' : JSON.stringify(r));
    return r;
  };
  add('dom0 ran to the end', boot.finished, boot.finished ? 'ok' : 'dom0 never printed its last phase (crash or timeout)');
  for (const r of boot.results) if (r.check === 'fatal') add('dom0 fatal', false, String(r.message));
  okResult('twin: xl create (xvda from xen-blkback)', 'create', 'dom0');
  okResult('twin: blkback ctl attach xvdb (backend/blkback)', 'ctl-attach', 'dom0');
  const xvdb = okResult('twin: the guest sees xvdb', 'xvdb', 'guest');
  if (xvdb !== undefined) add('twin: xvdb advertises a write cache (feature-flush-cache)', xvdb.write_cache === 'write back', `write_cache=${String(xvdb.write_cache)}`);
  for (const { tag } of pairedGuests(plan.pairs ?? 0)) {
    for (const job of plan.jobs) checkFio(boot, plan, tag, job, 1, `${tag}: fio ${job}`, add, fio);
  }
  okResult('twin: blkback ctl detach xvdb, its backend directory removed', 'ctl-detach', 'dom0');
  okResult('twin: xvdb gone from the guest', 'xvdb-gone', 'guest');
  okResult('twin: xl destroy, backend directory removed', 'destroy', 'dom0');
  okResult('blkback serve alive at the end', 'serve-alive', 'dom0');
  return { checks, fio };
}

export function evaluateBoot(boot: BootRecord, plan: BootPlan): { checks: Check[]; fio: FioFigures[] } {
  const checks: Check[] = [];
  const fio: FioFigures[] = [];
  const find = (check: string, guest?: string, src?: string): HarnessResult | undefined =>
    boot.results.find((r) => r.check === check && (guest === undefined || r.guest === guest) && (src === undefined || r.src === src));
  const add = (name: string, ok: boolean, detail: string): void => {
    checks.push({ name, ok, detail });
  };
  const okResult = (name: string, check: string, guest?: string, src?: string): HarnessResult | undefined => {
    const r = find(check, guest, src);
    if (r === undefined) add(name, false, 'missing: no result on the console');
    else add(name, r.ok === true, r.ok === true ? 'ok' : JSON.stringify(r));
    return r;
  };

  add('dom0 ran to the end', boot.finished, boot.finished ? 'ok' : 'dom0 never printed its last phase (crash or timeout)');
  for (const r of boot.results) {
    if (r.check === 'fatal') add('dom0 fatal', false, String(r.message));
  }
  okResult('backend started', 'backend', undefined, 'dom0');

  const sameBacking = (name: string, guest: string, backingCheck: string, guestCheck: string, field: 'bytes' | 'md5'): void => {
    const backing = find(backingCheck, guest, 'dom0');
    const seen = find(guestCheck, guest, 'guest');
    if (backing === undefined || seen === undefined) {
      add(name, false, `missing: ${backing === undefined ? `dom0 ${backingCheck}` : `guest ${guestCheck}`}`);
      return;
    }
    const ok = seen.ok === true && backing[field] !== undefined && seen[field] === backing[field];
    add(name, ok, `guest ${String(seen[field])} vs dom0 ${String(backing[field])}`);
  };
  const basics = (guest: string): void => {
    okResult(`${guest}: xl create`, 'create', guest);
    sameBacking(`${guest}: disk size equals backing file`, guest, 'backing', 'size', 'bytes');
    sameBacking(`${guest}: full read md5 equals backing file`, guest, 'backing', 'read', 'md5');
    okResult(`${guest}: write + fsync in the guest`, 'fsync-write', guest, 'guest');
    okResult(`${guest}: written marker in the backing file`, 'marker', guest, 'dom0');
    const flush = okResult(`${guest}: flush (fsync of the idle disk)`, 'flush', guest, 'guest');
    if (flush !== undefined) {
      add(`${guest}: backend advertises a write cache (feature-flush-cache)`, flush.write_cache === 'write back', `write_cache=${String(flush.write_cache)}`);
    }
  };

  for (const guest of plan.guests) {
    basics(guest);
    // the backend's own count of the flushes it was sent
    let flushes: number | undefined;
    if (boot.mode === 'kernel') {
      const stats = find('stats', guest, 'dom0');
      flushes = typeof stats?.f_req === 'number' ? stats.f_req : undefined;
    } else {
      okResult(`${guest}: blkback ctl stats`, `ctl-stats-${guest}`, undefined, 'dom0');
      okResult(`${guest}: blkback ctl list`, `ctl-list-${guest}`, undefined, 'dom0');
      const text = boot.files.get(`ctl-stats-${guest}`);
      flushes = text === undefined ? undefined : counterFromText(text, 'f_req');
    }
    add(`${guest}: backend counted the flushes`, flushes !== undefined && flushes > 0, flushes === undefined ? 'no f_req counter found' : `f_req=${flushes}`);

    const runs = plan.runs[guest] ?? 1;
    for (let n = 1; n <= runs; n++) {
      for (const job of plan.jobs) checkFio(boot, plan, guest, job, n, `${guest}: fio ${job}${runs > 1 ? ` run ${n}` : ''}`, add, fio);
    }

    if (guest === plan.hotplugGuest) {
      okResult(`${guest}: xl block-attach xvdb`, 'block-attach', guest, 'dom0');
      sameBacking(`${guest}: hot-plugged xvdb size`, guest, 'backing2', 'hotplug-read', 'bytes');
      sameBacking(`${guest}: hot-plugged xvdb md5`, guest, 'backing2', 'hotplug-read', 'md5');
      okResult(`${guest}: xl block-detach xvdb`, 'block-detach', guest, 'dom0');
      okResult(`${guest}: xvdb gone from the guest`, 'hotplug-gone', guest, 'guest');
    }
    okResult(`${guest}: xl destroy, backend directory removed`, 'destroy', guest, 'dom0');
  }

  if (plan.midIo) {
    okResult('busy: xl create', 'create', 'busy');
    const d = okResult('busy: destroyed mid-I/O, backend directory removed', 'destroy', 'busy', 'dom0');
    if (d !== undefined) add('busy: backend survived the destroy', d.backend_alive === true, `backend_alive=${String(d.backend_alive)}`);
    basics('after');
    okResult('after: xl destroy', 'destroy', 'after', 'dom0');
    if (boot.mode === 'ours') okResult('after: blkback ctl list', 'ctl-list-after', undefined, 'dom0');
  }
  if (boot.mode === 'ours') okResult('blkback serve alive at the end', 'serve-alive', undefined, 'dom0');
  return { checks, fio };
}
