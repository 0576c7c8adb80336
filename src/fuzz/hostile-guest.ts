// The fuzz campaign's hostile guest (a guest workload: it runs in its own worker thread). It drives
// four disks with bare frontends: three checked disks (rw: writable, 512-byte sectors, its ring now
// and then overflowed and replaced; ro: read-only, 32-bit ABI; 4k: 4 KiB sectors) whose every
// answer is checked, and the chaos disk, whose requests it rewrites in flight. Requests come from
// the seeded generator, one stream per disk, until the guest's share of the campaign's requests is
// sent. Findings go to the campaign as they happen, with what is needed to reproduce them.
import { workerData } from 'node:worker_threads';
import type { GuestContext, GuestWorkerData } from '../guest/context.ts';
import type { GuestDomainHandles } from '../hypervisor/sim/guest.ts';
import { BareFront } from './bare-front.ts';
import { ChaosDisk } from './chaos-disk.ts';
import { CheckedDisk } from './checked-disk.ts';
import { CONTROL_ACK, CONTROL_STOP, emptyCounts, HOSTILE_DISKS } from './findings.ts';
import type { DiskTally, GuestFinding, HostileDiskName, HostileEpoch, HostileMessage, HostileParams, HostileProgress, HostileResult } from './findings.ts';
import { FAMILIES } from './generator.ts';
import { GuestPools } from './guest-pools.ts';
import { PageLedger } from './page-ledger.ts';
import type { StreamContext } from './stream-context.ts';

/** Findings of one kind sent with their details; past this only counted. */
const DETAILED_FINDINGS = 20;
const PROGRESS_MS = 500;
const SCAN_MS = 250;

export default async function hostileGuest(ctx: GuestContext, params: unknown): Promise<HostileResult> {
  const p = params as HostileParams;
  const hv = ctx.hv;
  const handles = (workerData as GuestWorkerData).handles as GuestDomainHandles;
  const backendDomid = handles.backendDomid;
  const post = (m: HostileMessage): void => ctx.report(m);
  const ledger = new PageLedger(hv.memory);
  const controlFrame = ledger.allocWritable(1);
  const control = new Int32Array(hv.memory.buffer, controlFrame * 4096, 1024);
  const pools = new GuestPools(hv, ledger, handles.grantTable, p.otherDomid, backendDomid);
  const counts = emptyCounts();
  const families = new Array<number>(FAMILIES.length).fill(0);
  let remaining = p.requests;
  let lastScan = 0;
  let scans = 0;

  const finding = (f: GuestFinding): void => {
    counts[f.kind]++;
    if (counts[f.kind] <= DETAILED_FINDINGS) post({ type: 'finding', finding: f });
  };
  const waitAck = async (disk: number, epoch: number): Promise<boolean> => {
    const at = CONTROL_ACK + disk;
    const until = performance.now() + p.deadlineMs;
    for (;;) {
      const seen = Atomics.load(control, at);
      if (seen >= epoch) return true;
      const left = until - performance.now();
      if (left <= 0) return false;
      const w = Atomics.waitAsync(control, at, seen, left);
      if (w.async) await w.value;
    }
  };
  const scan = (force = false): void => {
    const now = performance.now();
    if (!force && now - lastScan < SCAN_MS) return;
    lastScan = now;
    scans++;
    const { damaged, first } = ledger.scan();
    if (damaged === 0) return;
    for (const d of first) {
      finding({
        kind: 'out_of_grant',
        message: `frame ${d.frame} (${d.label}) changed: word ${d.word} is 0x${d.found.toString(16)}, was 0x${d.expected.toString(16)}`,
        guest: p.guest,
      });
    }
  };
  const stream: StreamContext = {
    params: p,
    pools,
    backendDomid,
    families,
    take() {
      if (remaining <= 0 || Atomics.load(control, CONTROL_STOP) !== 0) return false;
      remaining--;
      return true;
    },
    get stopping() {
      return Atomics.load(control, CONTROL_STOP) !== 0;
    },
    finding,
    async epoch(message: HostileEpoch) {
      post(message);
      return waitAck(HOSTILE_DISKS.indexOf(message.disk), message.epoch);
    },
    scan,
    scribbles: 0,
    storms: 0,
  };

  const front = (name: HostileDiskName): BareFront => new BareFront(hv, p.devids[name], p.deadlineMs, (n) => ledger.allocWritable(n));
  const rw = new CheckedDisk(stream, 'rw', 0, front('rw'), ['x86_64', 'x86_32']);
  const ro = new CheckedDisk(stream, 'ro', 1, front('ro'), ['x86_32']);
  const k4 = new CheckedDisk(stream, '4k', 2, front('4k'), ['x86_64']);
  const chaos = new ChaosDisk(stream, 3, front('chaos'));
  const disks = [rw, ro, k4, chaos] as const;

  const progress = (): HostileProgress => {
    const tallies = Object.fromEntries(disks.map((d) => [d.name, { ...d.tally }])) as Record<HostileDiskName, DiskTally>;
    let requests = 0;
    let answered = 0;
    for (const d of disks) {
      requests += d.tally.requests;
      answered += d.tally.answered;
    }
    return {
      type: 'progress',
      requests,
      answered,
      families: [...families],
      disks: tallies,
      scribbles: stream.scribbles,
      storms: stream.storms,
      scans,
      canaries: ledger.canaries,
      findings: { ...counts },
    };
  };

  try {
    await Promise.all(disks.map((d) => d.connect()));
  } catch (err) {
    finding({ kind: 'hang', message: `connecting the hostile guest's disks: ${err instanceof Error ? err.message : String(err)}`, guest: p.guest });
    return { ...progress(), heldGrants: 0 };
  }
  post({ type: 'ready', control: controlFrame });
  const timer = setInterval(() => post(progress()), PROGRESS_MS);
  try {
    await Promise.all(disks.map((d) => d.run()));
  } finally {
    clearInterval(timer);
  }

  // Close every disk that still answers (the backend must then let go of every grant), and look
  // at memory one last time.
  let heldGrants = 0;
  const closable = disks.filter((d) => !d.abandoned);
  for (const d of closable) {
    try {
      const held = await d.front.shutdown();
      heldGrants += held;
      if (held > 0) {
        const refs = d.front.heldRefs.map((ref) => `${ref} (entry 0x${Atomics.load(pools.table, 2 * ref).toString(16)})`);
        finding({
          kind: 'protocol',
          message: `the backend still mapped ${held} pages of the ring after Closed: refs ${refs.join(', ')}; connection ${d.front.connections}, ${d.front.abi}, ${d.front.ringPages} pages`,
          guest: p.guest,
          disk: d.name,
        });
      }
    } catch (err) {
      finding({ kind: 'hang', message: `closing disk ${d.name}: ${err instanceof Error ? err.message : String(err)}`, guest: p.guest, disk: d.name });
    }
  }
  if (closable.length === disks.length) {
    const held = pools.revokeAll();
    heldGrants += held.length;
    if (held.length > 0)
      finding({
        kind: 'protocol',
        message: `${held.length} grants were still held by the backend after every disk was closed: ${held.slice(0, 4).join(', ')}`,
        guest: p.guest,
      });
  }
  scan(true);
  return { ...progress(), heldGrants };
}
