// How many requests blkback takes from a ring per turn. A turn is one synchronous run of the ring
// server, so the store's calls made in it share a microtask checkpoint; that is how they are grouped
// here. Alone, on a store that takes a turn in one system call (native AIO), a domain's turn takes
// at least 32 requests whatever their size (FairShare.minRequests), so Linux's default 32-slot ring
// full of 64 KiB writes reaches the kernel in one io_submit; on an in-process store, and next to
// another domain, the segment quantum alone applies.
// And a ring nearly full of requests in flight is refilled several slots at a time, not one slot
// per completion (RingServer #refillAt).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { FairShare } from '../src/blkback/fair-share.ts';
import type { FairRing } from '../src/blkback/fair-share.ts';
import { TURN_COST } from '../src/blkback/ring-server.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import type { BlkfrontStats } from '../src/blkfront/blkfront.ts';
import { VERIFY } from './helpers-guest.ts';

/**
 * A store that counts its reads and writes per synchronous run (per turn of the ring server).
 * `serialMs`: requests complete one at a time, this long apart, as a loop device's worker does.
 */
function turnCounting(inner: BlockDevice, serialMs = 0, batchedSubmission = true): { device: BlockDevice; turns: number[] } {
  const turns: number[] = [];
  let open = false;
  const count = (): void => {
    if (!open) {
      open = true;
      turns.push(0);
      queueMicrotask(() => {
        open = false;
      });
    }
    turns[turns.length - 1]!++;
  };
  let tail: Promise<void> = Promise.resolve();
  const serially = (io: () => Promise<void>): Promise<void> => {
    if (serialMs === 0) return io();
    const done = tail.then(() => new Promise<void>((resolve) => setTimeout(resolve, serialMs))).then(io);
    tail = done.catch(() => undefined);
    return done;
  };
  const device: BlockDevice = {
    name: inner.name,
    // as a native-AIO disk says of itself (or not)
    get info() {
      return { ...inner.info, batchedSubmission };
    },
    readv: (offset, iov) => {
      count();
      return serially(() => inner.readv(offset, iov));
    },
    writev: (offset, iov, flags) => {
      count();
      return serially(() => inner.writev(offset, iov, flags));
    },
    flush: () => inner.flush(),
    discard: (offset, length) => inner.discard(offset, length),
    writeZeroes: (offset, length) => inner.writeZeroes(offset, length),
    close: () => inner.close(),
  };
  return { device, turns };
}

/** A ring as FairShare sees it: requests waiting (takeable), answers due, and the kicks it got. */
class FakeRing implements FairRing {
  waiting = 0;
  kicks = 0;
  /** waitingRequests() calls: each is a read of req_prod in a guest's memory on a real ring. */
  looks = 0;
  waitingRequests(): number {
    this.looks++;
    return this.waiting;
  }
  hasQueued(): boolean {
    return this.waiting > 0;
  }
  kick(): void {
    this.kicks++;
  }
}

test('FairShare: alone, a turn may take 32 requests past its segment quantum; next to a domain with work queued, none', () => {
  const fair = new FairShare(TURN_COST);
  const ringA = new FakeRing();
  const ringA2 = new FakeRing();
  const ringB = new FakeRing();
  const a = fair.join(1, ringA);
  assert.equal(fair.join(1, ringA2), a, 'one account per domain, whatever its rings');
  assert.equal(fair.quantum(a), 4 * TURN_COST, 'alone: four quanta of segments');
  assert.equal(fair.minRequests(a), 32, 'alone: a 32-slot ring in one turn');
  fair.setBusy(a, ringA, true);
  fair.setBusy(a, ringA2, true);
  assert.equal(fair.minRequests(a), 16, 'two saturated rings of one domain share the floor');
  fair.setBusy(a, ringA2, false);
  const b = fair.join(2, ringB);
  assert.equal(fair.quantum(a), 4 * TURN_COST, 'another domain with nothing queued leaves 1 alone');
  ringB.waiting = 3;
  assert.equal(fair.quantum(a), TURN_COST, 'another domain has requests waiting: one quantum');
  assert.equal(fair.minRequests(a), 0, 'and no floor');
  assert.equal(fair.minRequests(b), 32, 'domain 1 has nothing queued: 2 is alone');
  fair.took(a, 1);
  assert.equal(fair.minRequests(b), 0, 'a request of 1 in flight: 2 is not alone either');
  assert.equal(fair.answered(a), true, "1's answer came while 2 had requests waiting");
  ringB.waiting = 0;
  fair.took(a, 1);
  assert.equal(fair.answered(a), false, 'and not once 2 had none');
});

test('FairShare: 64 busy domains within a quantum of each other: a request reads no other ring; one a quantum behind is found', () => {
  const fair = new FairShare(TURN_COST);
  const rings = Array.from({ length: 64 }, () => new FakeRing());
  const shares = rings.map((r, i) => fair.join(i + 1, r));
  for (const r of rings) r.waiting = 32;
  // Round robin, a request each: every clock stays within a quantum of the others.
  for (let round = 0; round < 4; round++) {
    for (const s of shares) {
      assert.equal(fair.mayTake(s), true);
      fair.took(s, 1);
    }
  }
  for (const r of rings) r.looks = 0;
  for (const s of shares) assert.equal(fair.mayTake(s), true);
  assert.equal(
    rings.reduce((n, r) => n + r.looks, 0),
    0,
    "no domain was a quantum behind: nobody's req_prod was read (before: 63 per request)",
  );
  // Domain 1 takes on alone past a quantum: now the others are behind it and waiting.
  for (let i = 0; i < TURN_COST; i++) fair.took(shares[0]!, 1);
  assert.equal(fair.mayTake(shares[0]!), false, 'a quantum ahead of waiting neighbours: it yields');
  assert.equal(rings[1]!.kicks, 1, 'and kicks the first one behind');
});

test('FairShare: while two domains have requests waiting neither gets a quantum ahead; one back from a pause waits for no more than the request in progress', () => {
  const fair = new FairShare(TURN_COST);
  const flood = new FakeRing();
  const light = new FakeRing();
  const f = fair.join(1, flood);
  const l = fair.join(2, light);
  // The flooder alone for a while: it takes whatever it likes (work-conserving).
  flood.waiting = 1000;
  for (let i = 0; i < 100; i++) {
    assert.equal(fair.mayTake(f), true);
    fair.took(f, 11);
    fair.answered(f);
  }
  // The light guest's burst arrives: the flooder's very next request waits, and the light ring is kicked.
  light.waiting = 4;
  assert.equal(fair.mayTake(f), false, 'the flooder yields to a neighbour back from a pause');
  assert.equal(light.kicks, 1);
  for (let i = 0; i < 4; i++) {
    assert.equal(fair.mayTake(l), true, 'the light burst is taken in one turn');
    fair.took(l, 1);
    light.waiting--;
  }
  assert.equal(fair.mayTake(f), true, 'nothing waiting next to it: the flooder goes on');
  // The light guest had nothing for a long time: it banks no more than a quantum.
  for (let i = 0; i < 100; i++) fair.took(f, 11);
  light.waiting = 1000;
  let burst = 0;
  while (fair.mayTake(l)) {
    fair.took(l, 1);
    burst++;
  }
  assert.ok(burst <= 2 * TURN_COST + 11, `a domain back from a pause gets at most two quanta before the other (${burst})`);
  // Both flooding, turns alternating: service stays within a quantum and a request of each other.
  const rings = [
    { share: f, cost: 11 },
    { share: l, cost: 1 },
  ];
  let spread = 0;
  for (let turn = 0; turn < 1000; turn++) {
    const { share, cost } = rings[turn % 2]!;
    for (let taken = 0; taken < TURN_COST && fair.mayTake(share); taken += cost) fair.took(share, cost);
    spread = Math.max(spread, Math.abs(f.service - l.service));
  }
  assert.ok(spread <= 2 * TURN_COST + 11, `service clocks drifted ${spread} segments apart`);
});

for (const batched of [true, false]) {
  const what = batched
    ? 'a domain alone gets a full 32-slot ring of 64 KiB writes to a batching (native-AIO) store in one turn'
    : 'an in-process store keeps the segment quantum: four 64 KiB writes a turn';
  test(`${what}, and its data back`, async () => {
    const host = await SimHost.start();
    try {
      const { device, turns } = turnCounting(createRamDisk(32 << 20), 0, batched);
      host.registerStore('ram', device);
      const g = await host.createGuest(
        { name: 'big-turns', memoryMiB: 64, disks: [{ target: 'ram', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
        // Linux's blkfront defaults: a one-page ring (32 slots) and 32 indirect segments.
        {
          workload: VERIFY,
          params: { operations: 1500, iodepth: 32, minBytes: 64 << 10, maxBytes: 64 << 10, seed: 7 },
          front: { ringPageOrder: 0, maxIndirectSegments: 32 },
        },
      );
      const r = (await g.result) as VerifyResult;
      assert.equal(r.mismatches, 0, r.firstMismatches.join('\n'));
      const largest = Math.max(...turns);
      // The segment quantum alone (4 x 16 segments) allows 4 such requests a turn.
      if (batched) assert.ok(largest > (4 * TURN_COST) / 16, `largest turn ${largest} requests (turns: ${turns.length})`);
      else assert.equal(largest, (4 * TURN_COST) / 16, `largest turn ${largest} requests (turns: ${turns.length})`);
      assert.ok(largest <= 32, `a turn never takes more than the ring holds: ${largest}`);
    } finally {
      await host.stop();
    }
  });
}

test('a ring nearly full of requests in flight is refilled several slots a turn, not one per completion', async () => {
  const host = await SimHost.start();
  try {
    // One request at a time, 1 ms each: the ring stays full and completions come one by one.
    const { device, turns } = turnCounting(createRamDisk(16 << 20), 1);
    host.registerStore('ram', device);
    const g = await host.createGuest(
      { name: 'refill', memoryMiB: 64, disks: [{ target: 'ram', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      // twice as many I/Os outstanding as the 32-slot ring holds
      {
        workload: VERIFY,
        params: { operations: 400, iodepth: 64, minBytes: 4096, maxBytes: 4096, seed: 8 },
        front: { ringPageOrder: 0, maxIndirectSegments: 32 },
      },
    );
    const r = (await g.result) as VerifyResult & { front: BlkfrontStats };
    assert.equal(r.mismatches, 0, r.firstMismatches.join('\n'));
    // Completions come one by one. Above the mark req_event stays unarmed, so the guest refills the
    // freed slots without notifying us: we come back when completions bring the ring to the mark.
    // (Without the mark, the spin after each answer (#afterAnswers) mostly spares the guest's
    // notification too.)
    const { requests, notifies } = r.front;
    assert.ok(notifies * 3 < requests, `guest notified us ${notifies} times for ${requests} requests`);
    // After the first fill, turns happen as completions bring the ring down to 24 in flight: 8 slots.
    const steady = turns.slice(2, -2).sort((a, b) => a - b);
    const median = steady[steady.length >> 1]!;
    assert.ok(median >= 4, `median turn ${median} requests over ${steady.length} turns: ${turns.slice(0, 40).join(' ')}`);
  } finally {
    await host.stop();
  }
});
