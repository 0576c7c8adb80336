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
import { TURN_COST } from '../src/blkback/ring-server.ts';
import { SimHost } from '../src/toolstack/host.ts';
import type { VerifyResult } from '../src/workload/verify.ts';
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

test('FairShare: alone, a turn may take 32 requests past its segment quantum; next to another domain, none', () => {
  const fair = new FairShare(TURN_COST);
  assert.equal(fair.quantum(1), 4 * TURN_COST, 'alone: four quanta of segments');
  assert.equal(fair.minRequests(1), 32, 'alone: a 32-slot ring in one turn');
  const ringA = {};
  const ringB = {};
  fair.setBusy(1, ringA, true);
  fair.setBusy(1, ringB, true);
  assert.equal(fair.minRequests(1), 16, 'two saturated rings of one domain share the floor');
  fair.setBusy(1, ringB, false);
  fair.charge(2, 0.1, 1);
  assert.equal(fair.quantum(1), TURN_COST, 'another domain was served: one quantum');
  assert.equal(fair.minRequests(1), 0, 'and no floor');
  assert.equal(fair.minRequests(2), 32, 'domain 1 has not been served yet: 2 is alone');
  fair.charge(1, 0.1, 1.2);
  assert.equal(fair.minRequests(2), 0, 'once 1 is served, 2 is not alone either');
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
        { workload: VERIFY, params: { operations: 1500, iodepth: 32, minBytes: 64 << 10, maxBytes: 64 << 10, seed: 7 }, front: { ringPageOrder: 0, maxIndirectSegments: 32 } },
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
      { workload: VERIFY, params: { operations: 400, iodepth: 64, minBytes: 4096, maxBytes: 4096, seed: 8 }, front: { ringPageOrder: 0, maxIndirectSegments: 32 } },
    );
    const r = (await g.result) as VerifyResult & { front: BlkfrontStats };
    assert.equal(r.mismatches, 0, r.firstMismatches.join('\n'));
    // Completions come one by one. Above the mark req_event stays unarmed, so the guest refills the
    // freed slots without notifying us: we come back when completions bring the ring to the mark.
    // (Without the mark the drained ring's short poll mostly spares the guest's notification too.)
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
