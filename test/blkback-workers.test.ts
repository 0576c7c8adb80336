// blkback's rings sharded over data-plane worker threads (BlkbackOptions.workers). Each ring is
// mapped, bound and served on one worker; the main thread keeps xenstore and reads the counters.
//   - four guests through two workers: the rings spread two and two (which worker served each is
//     read from the statistics), each guest's data reaches its store and reads back as written, on
//     stores the worker opens itself (a RAM disk, a file through /proc/self/fd) and one it reaches
//     through the main thread (a store wrapped in JavaScript there); the worker's counters agree with
//     what the guest saw answered;
//   - one guest's two queues land on different workers and both carry its I/O;
//   - a guest destroyed while its requests are in flight on a worker: the ring is torn down once they
//     are answered, every grant pin of the dead domain is dropped, the budget is whole, and the
//     workers go on serving a new guest;
//   - a disk resized online is served to its new end by the worker;
//   - the fair-share accounts and the in-flight budget as two workers share them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFileDisk } from '../src/block/file.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { vdevToDeviceId } from '../src/config/xl-disk.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { WorkerRingHost } from '../src/blkback/workers/worker-ring-host.ts';
import { FairShare, FairShareTable } from '../src/blkback/fair-share.ts';
import type { FairRing } from '../src/blkback/fair-share.ts';
import { TURN_COST } from '../src/blkback/ring-server.ts';
import { SharedInflightBudget } from '../src/blkback/workers/shared-budget.ts';
import type { GuestHandle } from '../src/sim-host/host.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import type { MultiQueueReport } from './fixtures/multi-queue-guest.ts';
import type { ResizeResult } from './fixtures/guest2/resize.ts';
import { releasePath } from './fixtures/guest2/release.ts';
import { countBadSectors, VERIFY } from './helpers-guest.ts';

const MQ_GUEST = new URL('./fixtures/multi-queue-guest.js', import.meta.url);
const RANDOM_IO = new URL('../src/guest/workloads/random-io.js', import.meta.url);
const RESIZE = new URL('./fixtures/guest2/resize.js', import.meta.url);
const MiB = 1 << 20;
const XVDA = vdevToDeviceId('xvda');
const GENERATION = 5;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) assert.fail(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A store in JavaScript of this thread (nothing a worker can open itself): reached through the main thread. */
function wrapped(inner: BlockDevice): BlockDevice {
  return {
    name: `wrapped(${inner.name})`,
    get info() {
      return inner.info;
    },
    readv: (offset, iov) => inner.readv(offset, iov),
    writev: (offset, iov, flags) => inner.writev(offset, iov, flags),
    flush: () => inner.flush(),
    discard: (offset, length) => inner.discard(offset, length),
    writeZeroes: (offset, length) => inner.writeZeroes(offset, length),
    close: () => inner.close(),
  };
}

/** Runs the multi-queue guest on `target` until it reports; the caller releases it. */
async function startMqGuest(
  host: SimHost,
  name: string,
  target: string,
  backendtype: 'phy' | 'qdisk',
  seed: number,
  vcpus = 1,
): Promise<{ guest: GuestHandle; report: MultiQueueReport }> {
  let got!: (r: MultiQueueReport) => void;
  const ready = new Promise<MultiQueueReport>((resolve) => (got = resolve));
  const guest = await host.createGuest(
    { name, memoryMiB: 32, vcpus, disks: [{ target, vdev: 'xvda', readOnly: false, backendtype }] },
    { workload: MQ_GUEST, params: { seed, generation: GENERATION, chunk: 64 << 10, ops: 16 }, onReport: (m) => got(m as MultiQueueReport) },
  );
  const report = await withTimeout(
    Promise.race([ready, guest.result.then((r) => Promise.reject(new Error(`${name} ended before reporting: ${JSON.stringify(r)}`)))]),
    30_000,
    `${name} report`,
  );
  return { guest, report };
}

test('four guests through two data-plane workers: rings spread over both, each guest reads back what it wrote, on shared and proxied stores', {
  timeout: 120_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-workers-'));
  const image = join(dir, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, 8 * MiB);
  const host = await SimHost.start({ workers: 2 });
  try {
    const stores: Record<string, BlockDevice> = { ram0: createRamDisk(8 * MiB), ram1: createRamDisk(8 * MiB), wrapped: createRamDisk(8 * MiB) };
    host.registerStore('ram0', stores.ram0!);
    host.registerStore('ram1', stores.ram1!);
    host.registerStore('wrapped', wrapped(stores.wrapped!));
    const guests = [
      { name: 'w-ram0', target: 'ram0', type: 'phy', seed: 101 },
      { name: 'w-ram1', target: 'ram1', type: 'phy', seed: 102 },
      { name: 'w-file', target: image, type: 'qdisk', seed: 103 },
      { name: 'w-wrapped', target: 'wrapped', type: 'phy', seed: 104 },
    ] as const;
    const running: { guest: GuestHandle; report: MultiQueueReport; seed: number; target: string }[] = [];
    // One at a time, so the order rings reach the workers is known: least loaded first.
    for (const g of guests) running.push({ ...(await startMqGuest(host, g.name, g.target, g.type, g.seed)), seed: g.seed, target: g.target });

    const stats = host.blkback.stats() as Record<string, { rings: { worker: number; proxied: boolean }[] }>;
    const workers: number[] = [];
    for (const [i, r] of running.entries()) {
      const key = `${r.guest.domid}/${XVDA}`;
      const vbd = host.blkback.vbds.get(key);
      assert.ok(vbd !== undefined, `${guests[i]!.name} is served`);
      assert.equal(vbd.servedRings.length, 1);
      const ring = vbd.servedRings[0]!;
      assert.ok(ring.worker === 0 || ring.worker === 1, `${guests[i]!.name}'s ring is on a worker (${ring.worker})`);
      assert.equal(ring.stats.worker, ring.worker, "the ring's statistics block names the worker that served it");
      assert.deepEqual(
        stats[key]?.rings,
        [{ worker: ring.worker, proxied: guests[i]!.target === 'wrapped' }],
        'blkback.stats() says which worker serves it, and whether through the main thread',
      );
      workers.push(ring.worker);
      // The worker's counters against what the guest saw answered: every request once.
      const answered = r.report.queueResponses.reduce((a, b) => a + b, 0);
      assert.equal(vbd.stats.rd_req + vbd.stats.wr_req + vbd.stats.f_req, answered, `${guests[i]!.name}: the worker counted what the guest saw answered`);
      assert.equal(vbd.stats.wr_sect, r.report.bytes / 512, `${guests[i]!.name}: sectors written`);
      assert.equal(vbd.stats.rd_sect, r.report.bytes / 512, `${guests[i]!.name}: sectors read`);
      assert.equal(vbd.stats.latency.write.count, vbd.stats.wr_req, 'a write latency per write, merged from the worker');
      assert.equal(vbd.inflight, 0);
      assert.equal(r.report.badSectors, 0, `${guests[i]!.name} read back what it wrote`);
    }
    assert.deepEqual(workers, [0, 1, 0, 1], 'rings go to the least loaded worker');
    assert.deepEqual(host.blkback.ringHost.workers, 2);

    for (const r of running) await host.xs.write(releasePath(r.guest.domid), '1');
    await withTimeout(Promise.all(running.map((r) => r.guest.result)), 30_000, 'guests ending');
    const file = await openFileDisk(image);
    try {
      for (const r of running) {
        const store = r.target === image ? file : stores[r.target]!;
        assert.equal(await countBadSectors(store, 0, r.report.bytes, r.seed, GENERATION), 0, `the store of ${r.target} holds every sector its guest wrote`);
      }
    } finally {
      await file.close();
    }
    await until('the rings are let go', () => host.blkback.vbds.size === 0 || [...host.blkback.vbds.values()].every((v) => v.servedRings.length === 0));
    assert.equal(host.blkback.budget.used, 0, 'no in-flight budget leaked');
  } finally {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("one guest's two queues are served by different workers, and both carry its I/O", { timeout: 60_000 }, async () => {
  const host = await SimHost.start({ workers: 2, maxQueues: 2 });
  try {
    const ram = createRamDisk(8 * MiB);
    host.registerStore('mq', ram);
    const seed = 77;
    const { guest, report } = await startMqGuest(host, 'w-mq', 'mq', 'phy', seed, 2);
    const vbd = host.blkback.vbds.get(`${guest.domid}/${XVDA}`)!;
    assert.equal(report.queues, 2, 'the guest negotiated two queues');
    assert.deepEqual(vbd.servedRings.map((r) => r.worker).sort(), [0, 1], 'one queue on each worker');
    assert.ok(
      report.queueResponses.every((n) => n > 0),
      `both queues answered (${report.queueResponses.join(', ')})`,
    );
    for (const [q, ring] of vbd.servedRings.entries()) {
      assert.equal(ring.stats.rd_req + ring.stats.wr_req + ring.stats.f_req, report.queueResponses[q], `queue ${q}: its worker counted what came back on it`);
    }
    await host.xs.write(releasePath(guest.domid), '1');
    await withTimeout(guest.result, 20_000, 'guest');
    assert.equal(report.badSectors, 0);
    assert.equal(await countBadSectors(ram, 0, report.bytes, seed, GENERATION), 0, 'the store holds every sector written through either queue');
  } finally {
    await host.stop();
  }
});

test('a guest destroyed while its requests are in flight on a worker: the ring goes once they are answered, with every grant pin, and the workers serve on', {
  timeout: 60_000,
}, async () => {
  const host = await SimHost.start({ workers: 2 });
  try {
    // Reads wait here until the test lets them go: the guest's requests stay in flight on the worker.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const ram = createRamDisk(8 * MiB);
    const held: BlockDevice = { ...wrapped(ram), name: 'held', readv: (offset, iov) => gate.then(() => ram.readv(offset, iov)) };
    Object.defineProperty(held, 'info', { get: () => ram.info });
    host.registerStore('held', held);
    const guest = await host.createGuest(
      { name: 'w-doomed', memoryMiB: 32, disks: [{ target: 'held', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: RANDOM_IO, params: { rw: 'randread', bs: 4096, iodepth: 8, seconds: 30, span: 8 * MiB, seed: 3 } },
    );
    guest.result.catch(() => undefined);
    const key = `${guest.domid}/${XVDA}`;
    await until('requests are in flight on the worker', () => (host.blkback.vbds.get(key)?.inflight ?? 0) >= 8);
    const vbd = host.blkback.vbds.get(key)!;
    const worker = vbd.servedRings[0]!.worker;
    assert.ok(worker >= 0, 'served by a worker');
    assert.ok(host.blkback.budget.used >= 8, 'the requests hold the shared budget');
    const active = new Int32Array(host.hypervisor.domainDataPlane(guest.domid)!.active);
    // Two words a ref (grant-domain.ts): its pin counts, then the frame the first pin resolved.
    const pinned = (): number => active.reduce((n, w, i) => n + (i % 2 === 0 && w !== 0 ? 1 : 0), 0);
    assert.ok(pinned() > 0, 'the worker holds grant pins of the guest (its ring, its requests)');

    const ring = vbd.servedRings[0]!;
    await withTimeout(host.destroyGuest(guest.domid), 10_000, 'destroyGuest');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(ring.inflight >= 8, `the requests stay in flight until the store answers (${ring.inflight})`);
    open();
    await until('the ring is torn down', () => !host.blkback.vbds.has(key) && (host.blkback.ringHost as WorkerRingHost).load.every((n) => n === 0));
    assert.equal(ring.inflight, 0, 'every request was answered');
    await until('every grant pin of the dead domain is dropped', () => pinned() === 0);
    assert.equal(host.blkback.budget.used, 0, 'the budget is whole again');
    assert.equal(vbd.stats.errors.io_error, 0);

    // The workers serve on.
    host.registerStore('after', createRamDisk(8 * MiB));
    const next = await host.createGuest(
      { name: 'w-after', memoryMiB: 32, disks: [{ target: 'after', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: VERIFY, params: { operations: 300, iodepth: 16, seed: 9 } },
    );
    const r = (await withTimeout(next.result, 30_000, 'the next guest')) as VerifyResult;
    assert.equal(r.mismatches, 0, r.firstMismatches.join('\n'));
    assert.ok(r.reads > 0 && r.writes > 0);
  } finally {
    await host.stop();
  }
});

/** A ring as FairShare sees it (test/blkback-turns.test.ts has the same). */
class FakeRing implements FairRing {
  waiting = 0;
  kicks = 0;
  waitingRequests(): number {
    return this.waiting;
  }
  hasQueued(): boolean {
    return this.waiting > 0;
  }
  kick(): void {
    this.kicks++;
  }
}

test("the fair share across workers: a domain's service on one worker counts on the others, where it yields to a domain behind it", () => {
  // Two workers' FairShares over one table, as blkback's workers have.
  const table = FairShareTable.create(64);
  const a = new FairShare(TURN_COST, table);
  const b = new FairShare(TURN_COST, table);
  const spreadOnA = new FakeRing();
  const spreadOnB = new FakeRing();
  const single = new FakeRing();
  const spreadA = a.join(1, spreadOnA);
  const spreadB = b.join(1, spreadOnB);
  const singleA = a.join(2, single);
  assert.equal(spreadA.at, spreadB.at, 'one account for domain 1, whatever worker its rings are on');
  // Domain 1 floods through its queue on worker B.
  spreadOnB.waiting = 1000;
  for (let i = 0; i < 200; i++) {
    assert.equal(b.mayTake(spreadB), true, 'alone on worker B, domain 1 takes what it likes');
    b.took(spreadB, 11);
    b.answered(spreadB);
  }
  assert.equal(spreadA.service, spreadB.service, "worker A sees domain 1's clock as B moved it");
  // On worker A, domain 2 has requests waiting: domain 1, far ahead by what it got on B, yields at once.
  spreadOnA.waiting = 100;
  single.waiting = 4;
  assert.equal(a.mayTake(spreadA), false, 'domain 1 yields on worker A to a domain behind it');
  assert.equal(single.kicks, 1, "and domain 2's ring is kicked");
  for (let i = 0; i < 4; i++) {
    assert.equal(a.mayTake(singleA), true);
    a.took(singleA, 1);
    single.waiting--;
  }
  assert.equal(a.mayTake(spreadA), true, 'nothing waiting beside it: domain 1 goes on (work-conserving)');
  // Not so on worker B, where domain 2 has no ring: stopping there would only leave B idle.
  single.waiting = 4;
  assert.equal(b.mayTake(spreadB), true, 'worker B does not wait for a ring it does not serve');
  // The account goes once no worker has a ring of it and nothing is in flight.
  a.leave(spreadA, spreadOnA);
  assert.equal(b.share(1), spreadB, 'domain 1 still has a ring on B');
  b.leave(spreadB, spreadOnB);
  const again = a.join(1, new FakeRing());
  assert.ok(again.service < singleA.service, 'a domain that left starts again behind, not with the service it had');
});

test('the in-flight budget across workers: one cap, and room made on one worker wakes a ring waiting on another', async () => {
  const one = new SharedInflightBudget(3);
  const other = new SharedInflightBudget(3, one.buffer);
  assert.ok(one.tryAcquire() && one.tryAcquire() && other.tryAcquire());
  assert.equal(other.tryAcquire(), false, "the cap is the backend's, not each worker's");
  assert.equal(one.used, 3);
  let kicked = 0;
  other.waitForRoom(() => kicked++);
  one.release();
  await until('the waiting ring is kicked', () => kicked === 1, 2000);
  assert.equal(other.tryAcquire(), true);
  other.release();
  other.release();
  one.release();
  assert.equal(one.used, 0);
});

for (const kind of ['shared', 'proxied'] as const) {
  test(`online resize of a ${kind === 'shared' ? 'RAM disk a worker shares' : 'store a worker reaches through the main thread'}: the worker serves the new end`, {
    timeout: 60_000,
  }, async () => {
    const host = await SimHost.start({ workers: 1 });
    try {
      const ram = createRamDisk(16 * MiB);
      host.registerStore('grow', kind === 'shared' ? ram : Object.assign(wrapped(ram), { resize: (n: number) => ram.resize!(n) }));
      let ready!: () => void;
      const isReady = new Promise<void>((resolve) => (ready = resolve));
      const guest = await host.createGuest(
        { name: `w-grow-${kind}`, memoryMiB: 32, disks: [{ target: 'grow', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
        { workload: RESIZE, params: { seed: 43, maxWaitMs: 5000 }, onReport: (m) => (m as { type: string }).type === 'ready' && ready() },
      );
      await withTimeout(Promise.race([isReady, guest.result]), 20_000, 'guest ready');
      const vbd = host.blkback.vbds.get(`${guest.domid}/${XVDA}`)!;
      assert.equal(vbd.servedRings[0]!.worker, 0, 'served by the worker');
      assert.equal(vbd.servedRings[0]!.proxied, kind === 'proxied');
      await vbd.resize(32 * MiB);
      const r = (await withTimeout(guest.result, 20_000, 'guest')) as ResizeResult;
      assert.equal(r.newSize, 32 * MiB, 'the guest saw the new size');
      assert.equal(r.writeError, null, 'the worker took a write at the new end');
      assert.equal(r.mismatches, 0, 'and read it back as written');
      assert.equal(await countBadSectors(ram, 32 * MiB - (64 << 10), 64 << 10, 43, 3), 0, 'the store holds it');
    } finally {
      await host.stop();
    }
  });
}
