// serve's system calls per request, as dom0 counts them in --mode same-guest (dom0-init.sh
// syscall_window): `strace -c -f -p <serve>` attached for a short QD 32 job on one of serve's disks,
// and serve's own request counters (`blkback ctl --json stats`) read just before and just after.
// Pure: the files dom0 printed in, figures out.
//
// In this dom0 a system call is the cost (docs/xen-tcg.md, "System calls are the cost"): every one
// goes through Xen, about 100-280 µs under TCG, so the goal is stated in calls, which the emulator's
// speed does not move: at most 0.5 per request at queue depth 32 or more (issue 16, item 11).

export const SYSCALL_GOAL = 0.5;

/** The data paths a window measures: xvdb (the frontend offers persistent grants), xvdd (it declines). */
export type SyscallPath = 'persistent' | 'copy';

export const SYSCALL_DISK: Readonly<Record<SyscallPath, string>> = { persistent: 'xvdb', copy: 'xvdd' };

export interface StraceSummary {
  /** Calls of every system call together (strace's "total" row). */
  readonly total: number;
  readonly errors: number;
  /** Calls per system call, most first. */
  readonly calls: ReadonlyMap<string, number>;
}

/**
 * `strace -c` output (strace 6.1, Debian bookworm's):
 *
 *     % time     seconds  usecs/call     calls    errors syscall
 *     ------ ----------- ----------- --------- --------- ----------------
 *      89.26    0.071070        4738        15         1 futex
 *      8.23    0.006556          11       563           epoll_pwait
 *     ------ ----------- ----------- --------- --------- ----------------
 *     100.00    0.079625          90       883         1 total
 *
 * The errors field is blank where a call never failed, so a row has five or six fields, and the
 * calls are the fourth (the total row's too).
 * Undefined when there is no header or no total row (strace cut short).
 */
export function parseStraceSummary(text: string): StraceSummary | undefined {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  const head = lines.findIndex((l) => /^\s*% time\s+seconds\s+usecs\/call\s+calls\s+errors\s+syscall\s*$/.test(l));
  if (head < 0) return undefined;
  const calls = new Map<string, number>();
  let total: number | undefined;
  let errors = 0;
  for (const line of lines.slice(head + 1)) {
    const f = line.trim().split(/\s+/);
    const name = f[f.length - 1] as string;
    if ((f.length !== 5 && f.length !== 6) || !/^\w+$/.test(name) || !f.slice(0, -1).every((x) => /^\d+(\.\d+)?$/.test(x))) continue;
    const n = Number(f[3]);
    if (name === 'total') {
      total = n;
      errors = f.length === 6 ? Number(f[4]) : 0;
    } else {
      calls.set(name, (calls.get(name) ?? 0) + n);
    }
  }
  if (total === undefined) return undefined;
  return { total, errors, calls: new Map([...calls].sort((a, b) => b[1] - a[1])) };
}

interface DiskCounters {
  readonly key: string;
  readonly vdev: string;
  readonly rd: number;
  readonly wr: number;
  /** Flushes and discards. */
  readonly other: number;
}

/** `blkback ctl --json stats`: one object per disk with Linux's counter names. */
export function parseCtlStats(text: string): DiskCounters[] | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed)) return undefined;
  const n = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
  return parsed.map((d: Record<string, unknown>) => ({
    key: String(d.key),
    vdev: String(d.vdev),
    rd: n(d.rd_req),
    wr: n(d.wr_req),
    other: n(d.f_req) + n(d.ds_req),
  }));
}

/** `blkback ctl --json list`: the data path a disk's rings use (persistent, copy, map), by vdev. */
export function dataPathOf(listJson: string, vdev: string): string | undefined {
  try {
    const disks = JSON.parse(listJson) as { vdev?: unknown; dataPath?: unknown }[];
    const d = Array.isArray(disks) ? disks.find((x) => x.vdev === vdev) : undefined;
    return typeof d?.dataPath === 'string' ? d.dataPath : undefined;
  } catch {
    return undefined;
  }
}

export interface SyscallFigures {
  readonly path: SyscallPath;
  readonly disk: string;
  /** What `blkback ctl list` said the disk's rings use. */
  readonly dataPath: string | undefined;
  /** Requests serve answered in the window, all disks (the job's disk is the only busy one). */
  readonly requests: number;
  readonly reads: number;
  readonly writes: number;
  /** Of them, on the job's disk. */
  readonly diskRequests: number;
  readonly syscalls: number;
  readonly perRequest: number;
  /** The most frequent calls, per request. */
  readonly top: readonly { readonly name: string; readonly calls: number; readonly perRequest: number }[];
  /** The guest's fio: I/Os it completed (reads + writes), for comparison with serve's count. */
  readonly fioIos: number | undefined;
  /** Seconds strace was attached (dom0's clock). */
  readonly seconds: number | undefined;
}

/** The window's figures, or why there are none. */
export function syscallFigures(
  path: SyscallPath,
  files: { strace?: string; before?: string; after?: string; list?: string; fio?: string },
  seconds?: number,
): SyscallFigures | string {
  const disk = SYSCALL_DISK[path];
  if (files.strace === undefined) return 'no strace summary on the console';
  const strace = parseStraceSummary(files.strace);
  if (strace === undefined) return `strace summary unreadable: ${JSON.stringify(files.strace.slice(0, 200))}`;
  const before = files.before === undefined ? undefined : parseCtlStats(files.before);
  const after = files.after === undefined ? undefined : parseCtlStats(files.after);
  if (before === undefined || after === undefined) return `no serve counters ${before === undefined ? 'before' : 'after'} the window`;
  let reads = 0;
  let writes = 0;
  let requests = 0;
  let diskRequests = 0;
  for (const a of after) {
    const b = before.find((x) => x.key === a.key) ?? { rd: 0, wr: 0, other: 0 };
    const n = a.rd + a.wr + a.other - (b.rd + b.wr + b.other);
    reads += a.rd - b.rd;
    writes += a.wr - b.wr;
    requests += n;
    if (a.vdev === disk) diskRequests += n;
  }
  if (!(requests > 0)) return `serve answered no requests in the window (${strace.total} system calls)`;
  return {
    path,
    disk,
    dataPath: files.list === undefined ? undefined : dataPathOf(files.list, disk),
    requests,
    reads,
    writes,
    diskRequests,
    syscalls: strace.total,
    perRequest: strace.total / requests,
    top: [...strace.calls].slice(0, 6).map(([name, calls]) => ({ name, calls, perRequest: calls / requests })),
    fioIos: files.fio === undefined ? undefined : fioTotalIos(files.fio),
    seconds,
  };
}

function fioTotalIos(json: string): number | undefined {
  try {
    const start = json.indexOf('{');
    const parsed = JSON.parse((start > 0 ? json.slice(start) : json).replace(/:\s*-?(inf|nan)\b/gi, ': null')) as {
      jobs?: { read?: { total_ios?: number }; write?: { total_ios?: number } }[];
    };
    return (parsed.jobs ?? []).reduce((s, j) => s + (j.read?.total_ios ?? 0) + (j.write?.total_ios ?? 0), 0);
  } catch {
    return undefined;
  }
}

/** One line per window, for the console and the check's detail. */
export function syscallLine(f: SyscallFigures): string {
  const verdict = f.perRequest <= SYSCALL_GOAL ? 'PASS' : 'MISS';
  const top = f.top.map((t) => `${t.name} ${t.perRequest.toFixed(2)}`).join(', ');
  return (
    `${f.perRequest.toFixed(2)} system calls per request (${f.syscalls} calls / ${f.requests} requests: ${f.reads} reads, ${f.writes} writes; ` +
    `data path ${f.dataPath ?? 'unknown'}); goal <= ${SYSCALL_GOAL}: ${verdict}; top: ${top}`
  );
}

export function syscallMarkdown(figures: readonly SyscallFigures[], seconds: number): string {
  const rows = [
    '| disk | data path (ctl list) | requests (reads / writes) | guest fio I/Os | system calls | per request | goal <= 0.5 | most frequent, per request |',
    '|---|---|---:|---:|---:|---:|---|---|',
    ...figures.map(
      (f) =>
        `| ${f.disk} | ${f.dataPath ?? 'unknown'} | ${f.requests} (${f.reads} / ${f.writes}) | ${f.fioIos ?? '–'} | ${f.syscalls} | ` +
        `**${f.perRequest.toFixed(2)}** | ${f.perRequest <= SYSCALL_GOAL ? 'PASS' : 'MISS'} | ${f.top.map((t) => `${t.name} ${t.perRequest.toFixed(2)}`).join(', ')} |`,
    ),
  ];
  return (
    `${rows.join('\n')}\n\n` +
    `Counted by \`strace -c -f -p <serve>\` in dom0 (all of serve's threads) while the guest ran 4 KiB random reads, then writes, ` +
    `at iodepth 32 for ${seconds} s each on the disk, after the counted pairs; requests are serve's own counters ` +
    '(`blkback ctl --json stats`) read just before and after. strace stops serve at each call, so serve runs several times ' +
    'slower meanwhile: the count, not the speed, is the figure.\n'
  );
}
