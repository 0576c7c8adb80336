// blkback against a hostile guest (test/fixtures/hostile/hostile-guest.ts), which drives four disks
// with its own bare frontend: malformed requests must each get exactly one answer with the
// protocol's status, the request's id and operation echoed and zeroed padding, and be counted; a
// req_prod far beyond the ring halts that ring only; a full-depth flood and a guest scribbling over
// its ring slots and grant entries while requests are in flight must not crash the backend, make it
// write outside granted pages, or starve a well-behaved guest running at the same time, whose data
// must stay intact and which must get a fair share of the backend's service. Afterwards a new guest
// still gets verified I/O, and the error log stayed rate-limited. The whole attack runs on each data
// path (map; persistent, serve's default; copy), each on its own host; only map also measures the
// neighbour's solo IOPS, which are printed, not checked.
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { BLKIF_RSP, VDISK_READONLY } from '../src/blkif/constants.ts';
import { ERROR_KINDS } from '../src/blkback/stats.ts';
import type { ErrorKind } from '../src/blkback/stats.ts';
import type { Vbd } from '../src/blkback/vbd.ts';
import { MAX_INDIRECT_SEGMENTS } from '../src/blkback/ring-server.ts';
import type { DataPath } from '../src/blkback/ring-server.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { vdevToDeviceId } from '../src/config/xl-disk.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { testWorkersSharingOne } from './helpers-workers.ts';
import type { GuestDisk } from '../src/sim-host/host.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import { VERIFY } from './helpers-guest.ts';
import type { GoodGuestParams, GoodGuestResult } from './fixtures/hostile/good-guest.ts';
import { roWord } from './fixtures/hostile/hostile-guest.ts';
import type { CaseResult, HostileParams, HostileResult } from './fixtures/hostile/hostile-guest.ts';
import { attachRawDisk } from './fixtures/hostile/toolstack.ts';

const HOSTILE = new URL('./fixtures/hostile/hostile-guest.js', import.meta.url);
const GOOD = new URL('./fixtures/hostile/good-guest.js', import.meta.url);

/**
 * Per data path: how long the neighbour's random I/O runs beside the attack, and whether its solo
 * IOPS are measured too (map only: the other paths repeat the attack in about half the time).
 */
const RUNS: readonly { readonly dataPath: DataPath; readonly ioSeconds: number; readonly verifyOps: number; readonly solo: boolean }[] = [
  { dataPath: 'map', ioSeconds: 1.5, verifyOps: 1500, solo: true },
  { dataPath: 'persistent', ioSeconds: 0.75, verifyOps: 800, solo: false },
  { dataPath: 'copy', ioSeconds: 0.75, verifyOps: 800, solo: false },
];
/**
 * Share of the segments the backend answers while both guests have requests queued that the
 * neighbour must get (VbdStats.seg_contended; see the comment at the check).
 */
const FAIR_SHARE = 0.45;
const RO_SEED = 0x5eed0123;
const RO_SIZE = 4 << 20;
/** RateLimitedLog in blkback.ts: 20 lines per 5 s window, plus one "suppressed" summary line per window. */
const LOG_BURST = 20;
const LOG_WINDOW_MS = 5000;

function disk(target: string, vdev = 'xvda'): GuestDisk {
  return { target, vdev, readOnly: false, backendtype: 'phy' };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang?)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs the well-behaved guest on store `target`; returns its result and its vbd (captured while it
 * ran). `onReport` sees its reports ('started' as its random I/O begins, 'io-done' as it ends), with
 * a way to find its vbd.
 */
async function runGood(
  host: SimHost,
  name: string,
  target: string,
  params: GoodGuestParams,
  onReport?: (type: string, vbd: () => Vbd | undefined) => void,
): Promise<{ result: GoodGuestResult; vbd: Vbd }> {
  let started!: () => void;
  const isStarted = new Promise<void>((resolve) => (started = resolve));
  let domid = -1;
  const vbdNow = (): Vbd | undefined => host.blkback.vbds.get(`${domid}/${vdevToDeviceId('xvda')}`);
  const g = await host.createGuest(
    { name, memoryMiB: 32, disks: [disk(target)] },
    {
      workload: GOOD,
      params,
      onReport: (m) => {
        const type = (m as { type: string }).type;
        onReport?.(type, vbdNow);
        if (type === 'started') started();
      },
    },
  );
  domid = g.domid;
  await withTimeout(Promise.race([isStarted, g.result]), 10_000, `${name} start`);
  const vbd = host.blkback.vbds.get(`${g.domid}/${vdevToDeviceId('xvda')}`);
  assert.ok(vbd !== undefined, `${name}: blkback serves its xvda`);
  const result = (await withTimeout(g.result, 30_000, name)) as GoodGuestResult;
  return { result, vbd };
}

function expectedErrors(cases: readonly CaseResult[], device: string): Record<ErrorKind, number> {
  const counts = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as Record<ErrorKind, number>;
  for (const c of cases) if (c.device === device && c.kind !== null) counts[c.kind]++;
  return counts;
}

function isErrorLine(line: string): boolean {
  return /request id|failed:|similar messages suppressed|produced more requests/.test(line);
}

for (const run of RUNS) {
  test(
    `blkback survives a hostile guest on data path ${run.dataPath}: malformed requests, ring overflow, flood and shared-memory scribbling`,
    { timeout: 90_000 },
    (t) => hostileRun(t, run),
  );
}

async function hostileRun(t: TestContext, run: (typeof RUNS)[number]): Promise<void> {
  const lines: string[] = [];
  const started = Date.now();
  const host = await SimHost.start({ log: (line) => lines.push(line), dataPath: run.dataPath, ...testWorkersSharingOne() });
  try {
    host.registerStore('good', createRamDisk(32 << 20));
    const io = { rw: 'randread', bs: 4096, iodepth: 16, seconds: run.ioSeconds, span: 16 << 20, seed: 11 } as const;

    // The well-behaved guest alone first: its IOPS are the baseline.
    const solo = run.solo ? await runGood(host, 'good-solo', 'good', { io }) : null;
    if (solo !== null) assert.ok(solo.result.io.ios > 100, `solo run did I/O (${solo.result.io.ios})`);

    // The hostile guest's disks: a writable one, a read-only one holding a known pattern, one to
    // overflow and one to scribble on.
    const roDisk = createRamDisk(RO_SIZE);
    const pattern = new Uint32Array(RO_SIZE / 4);
    for (let i = 0; i < pattern.length; i++) pattern[i] = roWord(RO_SEED, i);
    await roDisk.writev(0, [new Uint8Array(pattern.buffer)]);
    const scribbleDisk = createRamDisk(8 << 20);
    host.registerStore('h-malformed', createRamDisk(8 << 20));
    host.registerStore('h-ro', roDisk);
    host.registerStore('h-overflow', createRamDisk(1 << 20));
    host.registerStore('h-scribble', scribbleDisk);
    const vdevs = { malformed: 'xvdb', readOnly: 'xvdc', overflow: 'xvdd', scribble: 'xvde' } as const;
    const params: HostileParams = {
      devices: {
        malformed: vdevToDeviceId(vdevs.malformed),
        readOnly: vdevToDeviceId(vdevs.readOnly),
        overflow: vdevToDeviceId(vdevs.overflow),
        scribble: vdevToDeviceId(vdevs.scribble),
      },
      stopKey: 'hostile-stop',
      maxSeconds: 30,
      seed: 4242,
      readOnlySeed: RO_SEED,
      otherDomid: 0x1234,
      persistent: run.dataPath === 'persistent',
    };
    let attacking!: () => void;
    const isAttacking = new Promise<void>((resolve) => (attacking = resolve));
    let vbds: Record<keyof typeof vdevs, Vbd> | undefined;
    let inflightAtDrain: Record<string, number> | undefined;
    const hostile = await host.createGuest(
      { name: 'hostile', memoryMiB: 64, disks: [] },
      {
        workload: HOSTILE,
        params,
        onReport: (m) => {
          const type = (m as { type: string }).type;
          if (type === 'attacking') attacking();
          // Requests in flight once the guest has seen every answer: must be none on every ring.
          if (type === 'drained' && vbds !== undefined) {
            inflightAtDrain = Object.fromEntries(Object.entries(vbds).map(([k, v]) => [k, v.inflight]));
          }
        },
      },
    );
    const domid = hostile.domid;
    await attachRawDisk(host, domid, { target: 'h-malformed', vdev: vdevs.malformed, readOnly: false });
    await attachRawDisk(host, domid, { target: 'h-ro', vdev: vdevs.readOnly, readOnly: true });
    await attachRawDisk(host, domid, { target: 'h-overflow', vdev: vdevs.overflow, readOnly: false });
    await attachRawDisk(host, domid, { target: 'h-scribble', vdev: vdevs.scribble, readOnly: false });
    await withTimeout(
      Promise.race([isAttacking, hostile.result.then(() => assert.fail('the hostile guest finished before attacking'))]),
      15_000,
      'hostile setup',
    );

    const vbdOf = (vdev: string): Vbd => {
      const v = host.blkback.vbds.get(`${domid}/${vdevToDeviceId(vdev)}`);
      assert.ok(v !== undefined, `blkback serves hostile ${vdev}`);
      return v;
    };
    vbds = { malformed: vbdOf(vdevs.malformed), readOnly: vbdOf(vdevs.readOnly), overflow: vbdOf(vdevs.overflow), scribble: vbdOf(vdevs.scribble) };
    for (const [key, v] of Object.entries(vbds)) assert.equal(v.dataPath, run.dataPath, `hostile ${key} is served on the data path under test`);
    // The overflowed ring is halted, once, and only that ring.
    assert.equal(vbds.overflow.halted, true, 'ring with req_prod far beyond its size is halted');
    assert.equal(vbds.overflow.stats.errors.ring_overflow, 1);

    // The well-behaved guest again, while the flood and the scribbling go on. The hostile guest's
    // segments answered while the neighbour had work queued are counted over the neighbour's random
    // I/O (which comes first, before its integrity pass).
    const hostileContended = (): number => Object.values(vbds!).reduce((n, v) => n + v.stats.seg_contended, 0);
    let hostileAtStart = 0;
    let hostileAtIoEnd: number | undefined;
    let goodAtIoEnd = 0;
    let goodPath: DataPath | null = null;
    const under = await runGood(
      host,
      'good-attacked',
      'good',
      {
        io,
        verify: { operations: run.verifyOps, iodepth: 16, maxBytes: 96 << 10, seed: 12, length: 16 << 20, offset: 16 << 20 },
      },
      (type, goodVbd) => {
        if (type === 'started') {
          hostileAtStart = hostileContended();
          // blkfront offers feature-persistent (as Linux's does): the neighbour is served on the path under test.
          goodPath = goodVbd()?.dataPath ?? null;
        }
        if (type === 'io-done') {
          hostileAtIoEnd = hostileContended();
          goodAtIoEnd = goodVbd()?.stats.seg_contended ?? 0;
        }
      },
    );
    assert.equal(goodPath, run.dataPath, "the neighbour's data path");
    assert.equal(vbds.scribble.halted, false);
    assert.equal(vbds.malformed.halted, false);
    await host.xs.write(`/local/domain/${domid}/data/${params.stopKey}`, '1');
    const h = (await withTimeout(hostile.result, 20_000, 'hostile guest')) as HostileResult;

    // ------------------------------------------------------------ 1. malformed requests
    for (const c of h.cases) {
      const label = `${c.device}: ${c.name}`;
      assert.equal(c.answered, 1, `${label}: answered exactly once`);
      assert.equal(c.status, c.expectStatus, `${label}: status`);
      assert.equal(c.echoedOp, c.expectOp, `${label}: operation echoed`);
      assert.deepEqual(c.dirtyPadding, [], `${label}: response padding is zero`);
    }
    assert.ok(h.cases.filter((c) => c.expectStatus === BLKIF_RSP.EOPNOTSUPP).length >= 6);
    assert.equal(h.strayResponses, 0, 'every response carries the id of a request');
    assert.equal(h.extraResponses, 0, 'no responses beyond the requests');
    assert.equal(h.advertised.malformed.maxIndirectSegments, String(MAX_INDIRECT_SEGMENTS), 'INDIRECT is advertised, as Linux does');
    assert.equal(h.advertised.malformed.featureDiscard, '1');
    assert.equal(h.advertised.malformed.discardSecure, '0');
    assert.ok((h.advertised.readOnly.info & VDISK_READONLY) !== 0, 'read-only disk advertised as such');
    assert.equal(h.advertised.readOnly.featureDiscard, undefined, 'no discard on a read-only disk');
    assert.ok(h.controlDataOk, 'well-formed write and read between malformed ones round-trip');
    assert.ok(h.readOnlyDataOk, 'read-only disk reads what the host wrote');
    if (run.dataPath === 'persistent') {
      assert.ok(h.leakedPins > 0, 'the persistent path keeps the grants of requests it served mapped');
    } else {
      assert.equal(h.leakedPins, 0, 'no grant stays mapped after its request was answered (all-or-nothing map)');
    }
    assert.equal(h.pinsAfterClose, 0, 'every grant comes back once the disks are closed');
    for (const key of ['malformed', 'readOnly'] as const) {
      assert.deepEqual({ ...vbds[key].stats.errors }, expectedErrors(h.cases, key), `${key}: error counters match the malformed requests`);
    }
    const roNow = new Uint8Array(RO_SIZE);
    await roDisk.readv(0, [roNow]);
    assert.ok(Buffer.from(roNow.buffer).equals(Buffer.from(pattern.buffer)), 'the read-only store is unchanged');

    // ------------------------------------------------------------ 2. overflow and flood
    assert.ok(h.overflow.beforeOk, 'the ring worked before the overflow');
    assert.equal(h.overflow.responsesAfter, 0, 'nothing consumed from a halted ring');
    assert.deepEqual(
      { ...vbds.overflow.stats.errors },
      { ...expectedErrors([], 'none'), ring_overflow: 1 },
      'overflow counted once, however often the guest notifies',
    );
    assert.equal(h.flood.stalled, false, 'the flooded ring never stalled');
    assert.equal(h.flood.errors, 0, `valid flood requests all succeed: ${h.flood.firstErrors.join('; ')}`);
    assert.equal(h.flood.strayIds, 0);
    assert.equal(h.flood.responses, h.flood.requests);
    assert.ok(h.flood.requests > 2 * 512, `flood kept the 512-slot ring full for a while (${h.flood.requests} requests)`);

    // ------------------------------------------------------------ 3. scribbling
    assert.equal(h.scribble.stalled, false, 'every scribbled request was answered');
    assert.equal(h.scribble.undrained, 0);
    assert.ok(h.scribble.slotWrites > 100 && h.scribble.grantWrites > 100, `scribbled (${h.scribble.slotWrites} slot, ${h.scribble.grantWrites} grant writes)`);
    assert.ok(h.scribble.requests > 100, `requests in flight while scribbling (${h.scribble.requests})`);
    assert.equal(h.memory.badFrames, 0, `backend wrote only granted pages: ${h.memory.details.join('; ')}`);
    assert.ok(h.memory.canaryFrames >= 17);
    const se = vbds.scribble.stats.errors;
    assert.ok(se.bad_segments + se.bad_op + se.bad_range + se.bad_grant > 0, 'scribbled requests were refused');
    assert.equal(se.io_error, 0);
    assert.equal(se.ring_overflow, 0);
    assert.deepEqual(inflightAtDrain, { malformed: 0, readOnly: 0, overflow: 0, scribble: 0 }, 'nothing left in flight');

    // ------------------------------------------------------------ the neighbour
    const verify = under.result.verify as VerifyResult;
    assert.equal(verify.mismatches, 0, verify.firstMismatches.join('\n'));
    assert.ok(verify.reads > 0 && verify.writes > 0);
    assert.deepEqual({ ...under.vbd.stats.errors }, expectedErrors([], 'none'), 'no errors on the good guest');

    // ------------------------------------------------------------ afterwards: the backend is healthy
    host.registerStore('fresh', createRamDisk(8 << 20));
    const fresh = await host.createGuest(
      { name: 'fresh', memoryMiB: 32, disks: [disk('fresh')] },
      { workload: VERIFY, params: { operations: 400, iodepth: 16, seed: 99 } },
    );
    const fr = (await withTimeout(fresh.result, 20_000, 'fresh guest')) as VerifyResult;
    assert.equal(fr.mismatches, 0, fr.firstMismatches.join('\n'));
    assert.ok(fr.reads > 0 && fr.writes > 0);
    assert.equal(host.blkback.budget.used, 0, 'no in-flight budget leaked');

    const elapsed = Date.now() - started;
    const errorLines = lines.filter(isErrorLine).length;
    const bound = (LOG_BURST + 1) * (Math.floor(elapsed / LOG_WINDOW_MS) + 1);
    const counted = Object.values(vbds).reduce((n, v) => n + Object.values(v.stats.errors).reduce((a, b) => a + b, 0), 0);
    assert.ok(errorLines <= bound, `error log rate-limited: ${errorLines} lines in ${elapsed} ms (bound ${bound})`);
    assert.ok(counted > bound, `the limiter was exercised: ${counted} errors counted`);

    // Last, so that every correctness check above has run whatever the share turns out to be.
    // What the backend owes the neighbour is a fair share of its own service: of the segments it
    // answered while both guests had requests queued, the neighbour's (VbdStats.seg_contended).
    // Its IOPS against a solo run are printed but not checked: guests are threads on the same cores,
    // so with a process burning a core beside the test they fell to 16-38% of solo (an idle machine:
    // 59-71%) whatever the backend did; test/blkback-fairness.test.ts compares them with a CPU-burning
    // neighbour's instead. (Before the share was counted in service, a cap on a flooding domain's
    // backend time per 4 ms window gave the neighbour more than half by leaving the backend idle.)
    assert.ok(hostileAtIoEnd !== undefined, 'the counters were read as the random I/O ended');
    const goodShare = goodAtIoEnd / Math.max(1, goodAtIoEnd + (hostileAtIoEnd - hostileAtStart));
    let iops = `${Math.round(under.result.io.iops)} IOPS beside the attack`;
    if (solo !== null) {
      const soloAfter = await runGood(host, 'good-solo-after', 'good', { io });
      const baseline = (solo.result.io.iops + soloAfter.result.io.iops) / 2;
      iops = `neighbour kept ${Math.round((under.result.io.iops / baseline) * 100)}% of its solo IOPS (${Math.round(under.result.io.iops)} vs ${Math.round(baseline)})`;
    }
    t.diagnostic(
      `${run.dataPath}: ${iops}; ` +
        `service share ${Math.round(goodShare * 100)}% (${goodAtIoEnd} of ${goodAtIoEnd + hostileAtIoEnd - hostileAtStart} segments answered while both had work queued)`,
    );
    assert.ok(goodAtIoEnd > 1000, `the neighbour was served beside the flood (${goodAtIoEnd} segments)`);
    assert.ok(
      goodShare >= FAIR_SHARE,
      `good guest got ${Math.round(goodShare * 100)}% of the segments answered while both had work queued (${goodAtIoEnd} vs the hostile guest's ${hostileAtIoEnd - hostileAtStart})`,
    );
  } finally {
    await withTimeout(host.stop(), 15_000, 'host.stop');
  }
}
