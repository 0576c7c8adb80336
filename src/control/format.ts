// Human output of `blkback ctl`: the disk table and the statistics as Linux names them, with a
// compact latency histogram per operation. Pure string building; --json prints the data instead.
import type { DiskStatistics, DiskSummary, IscsiTargetStatus, OpLatency } from './target.ts';

const OPS = ['read', 'write', 'flush', 'discard'] as const;
/** Linux xen-blkback's statistics/ files, in the order `ls` shows them there. */
const COUNTERS = ['oo_req', 'rd_req', 'wr_req', 'f_req', 'ds_req', 'rd_sect', 'wr_sect'] as const;

/** 1073741824 -> "1 GiB", 1610612736 -> "1.5 GiB", 1000 -> "1000 B". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n;
  let u = 0;
  while (value >= 1024 && u < units.length - 1) {
    value /= 1024;
    u++;
  }
  const digits = Number.isInteger(value) || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits).replace(/\.0$/, '')} ${units[u]}`;
}

/** Nanoseconds as a person reads them, up to three significant digits: "850ns", "12.3us", "1.2ms", "10us". */
export function formatNs(ns: number): string {
  const [unit, scale] = ns < 1e3 ? ['ns', 1] : ns < 1e6 ? ['us', 1e3] : ns < 1e9 ? ['ms', 1e6] : ['s', 1e9];
  const v = ns / scale;
  return `${v >= 100 || scale === 1 ? String(Math.round(v)) : String(Number(v.toPrecision(3)))}${unit}`;
}

function table(rows: readonly (readonly string[])[], rightAligned: ReadonlySet<number> = new Set()): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 && !rightAligned.has(i) ? cell : rightAligned.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function formatDiskList(disks: readonly DiskSummary[]): string {
  if (disks.length === 0)
    return 'no disks are served (blkback serves what the toolstack writes under /local/domain/0/backend/vbd, or under the directory serve was given with --backend-kind)\n';
  const rows = [['DISK', 'VDEV', 'STATE', 'SIZE', 'MODE', 'RING', 'ABI', 'DATA', 'INFLIGHT', 'STORE']];
  for (const d of disks) {
    rows.push([
      d.key,
      d.vdev,
      d.state,
      d.size === 0 ? '-' : formatBytes(d.size),
      d.readOnly ? 'ro' : 'rw',
      d.ringPages === 0 ? '-' : `${d.ringPages}p`,
      d.abi ?? '-',
      d.dataPath === null ? '-' : d.dataPath === 'persistent' ? `persistent:${d.grantsKept}` : d.dataPath,
      String(d.inflight),
      d.store,
    ]);
  }
  return `${table(rows, new Set([8]))}\n`;
}

function edgeLabel(le: number | null, previous: number | undefined): string {
  return le === null ? `>${formatNs(previous ?? 0)}` : `<=${formatNs(le)}`;
}

function latencyLines(s: DiskStatistics): string[] {
  const used = OPS.filter((op) => s.latency_ns[op].count > 0);
  if (used.length === 0) return ['  latency     no requests yet'];
  const lines: string[] = [];
  const pct: string[][] = [['  latency', 'count', 'min', 'p50', 'p90', 'p99', 'p99.9', 'max']];
  for (const op of used) {
    const l: OpLatency = s.latency_ns[op];
    pct.push([`    ${op}`, String(l.count), formatNs(l.min), formatNs(l.p50), formatNs(l.p90), formatNs(l.p99), formatNs(l.p999), formatNs(l.max)]);
  }
  lines.push(...table(pct, new Set([1, 2, 3, 4, 5, 6, 7])).split('\n'));
  // The histogram's columns: from the first to the last range any operation has a count in.
  const buckets = s.latency_ns[used[0]!].buckets;
  let first = buckets.length;
  let last = -1;
  for (const op of used) {
    s.latency_ns[op].buckets.forEach((b, i) => {
      if (b.count > 0) {
        first = Math.min(first, i);
        last = Math.max(last, i);
      }
    });
  }
  const hist: string[][] = [['  histogram', ...buckets.slice(first, last + 1).map((b, i) => edgeLabel(b.le_ns, buckets[first + i - 1]?.le_ns ?? undefined))]];
  for (const op of used) hist.push([`    ${op}`, ...s.latency_ns[op].buckets.slice(first, last + 1).map((b) => String(b.count))]);
  const right = new Set(hist[0]!.map((_, i) => i).filter((i) => i > 0));
  lines.push(...table(hist, right).split('\n'));
  return lines;
}

export function formatStatistics(stats: readonly DiskStatistics[]): string {
  if (stats.length === 0) return 'no disks are served\n';
  const blocks = stats.map((s) => {
    const [domid, devid] = s.key.split('/');
    const errors = Object.entries(s.errors).filter(([, n]) => n > 0);
    const rows = COUNTERS.map((name) => [`  ${name}`, String(s[name])]);
    rows.push(['  errors', errors.length === 0 ? 'none' : errors.map(([k, n]) => `${k}=${n}`).join(' ')]);
    if (s.rings !== undefined && s.rings.length > 0) {
      const who = s.rings.map((r) => (r.worker === null ? 'main thread' : `worker ${r.worker}${r.viaMainThread ? ' (store via main thread)' : ''}`));
      rows.push([s.rings.length === 1 ? '  served by' : '  queues', s.rings.length === 1 ? who[0]! : who.map((w, q) => `${q}: ${w}`).join(', ')]);
    }
    return [`vbd-${domid}-${devid} (${s.key}, ${s.vdev})`, table(rows), ...latencyLines(s)].join('\n');
  });
  return `${blocks.join('\n\n')}\n`;
}

/** `ctl list` of an iSCSI target: who it is, its LUNs and its sessions. */
export function formatIscsiStatus(st: IscsiTargetStatus): string {
  const allow = st.allow === 'ALL' ? 'ALL' : st.allow.length === 0 ? 'nobody' : st.allow.join(', ');
  const head = `iSCSI target ${st.targetName} on ${st.portal}${st.advertise === st.portal ? '' : ` (advertised as ${st.advertise})`}; allowed: ${allow}; CHAP: ${st.chap}; ${st.connections} connection(s)\n`;
  const luns = [['LUN', 'SIZE', 'BLOCK', 'MODE', 'PROVISIONING', 'STORE']];
  for (const l of st.luns) luns.push([String(l.lun), formatBytes(l.size), String(l.blockSize), l.readOnly ? 'ro' : 'rw', l.thin ? 'thin' : 'thick', l.store]);
  let out = `${head}\n${table(luns, new Set([0]))}\n`;
  if (st.sessions.length === 0) return `${out}\nno sessions\n`;
  const sessions = [['TSIH', 'TYPE', 'INITIATOR', 'ISID', 'SINCE', 'COMMANDS', 'IN FLIGHT', 'READ', 'WRITTEN', 'PDU OUT/IN', 'BURST']];
  for (const s of st.sessions) {
    const p = s.parameters;
    sessions.push([
      String(s.tsih),
      s.type,
      s.initiatorName,
      s.isid,
      s.since.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      String(s.commands),
      String(s.tasksInFlight),
      formatBytes(s.bytesRead),
      formatBytes(s.bytesWritten),
      `${formatBytes(Number(p.MaxXmitDataSegmentLength))}/${formatBytes(Number(p.MaxRecvDataSegmentLength))}`,
      `first ${formatBytes(Number(p.FirstBurstLength))} max ${formatBytes(Number(p.MaxBurstLength))}${p.ImmediateData === 'Yes' ? ' immediate' : ''}${p.InitialR2T === 'No' ? ' unsolicited' : ''}`,
    ]);
  }
  out += `\n${table(sessions, new Set([0, 5, 6]))}\n`;
  return out;
}

/** `ctl stats` of an iSCSI target: its counters, then each LUN's (or the one asked for). */
export function formatIscsiCounters(st: IscsiTargetStatus, lun?: string): string {
  const lines: string[] = [];
  if (lun === undefined) {
    lines.push(`target ${st.targetName}`);
    for (const [k, v] of Object.entries(st.counters)) lines.push(`  ${k.padEnd(24)} ${v}`);
  }
  for (const l of st.luns) {
    if (lun !== undefined && String(l.lun) !== lun) continue;
    lines.push(`LUN ${l.lun} (${l.store})`);
    for (const [k, v] of Object.entries(l.counters)) lines.push(`  ${k.padEnd(24)} ${v}`);
  }
  if (lines.length === 0) return `no LUN ${lun ?? ''} here (LUNs: ${st.luns.map((l) => l.lun).join(', ')})\n`;
  return `${lines.join('\n')}\n`;
}
