// The engine's hot path: the word-at-a-time random map and the bulk random fill against their
// one-at-a-time models, completions reaped and refilled in one stretch (one submission turn per
// batch of completions, not per I/O), and latency stamps that stay per I/O on a device that works
// inside its calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createNullDisk } from '../src/block/null.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { RandomMap, runJob } from '../src/fio/engine/index.ts';
import { Taus88 } from '../src/fio/engine/rand.ts';
import { context, makeJob } from './fixtures/fio-engine/make-job.ts';

const MiB = 1 << 20;

test('random map: setRun, nextFree and the counts match a block-by-block model', () => {
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  for (let trial = 0; trial < 200; trial++) {
    const blocks = 1 + rnd(3000);
    const map = new RandomMap(blocks);
    const model = new Uint8Array(blocks);
    let used = 0;
    for (let op = 0; op < 300; op++) {
      const b = rnd(blocks);
      const n = 1 + rnd(200);
      let want = 0;
      for (let x = b; x < blocks && want < n && model[x] === 0; x++, want++) model[x] = 1;
      used += want;
      assert.equal(map.setRun(b, n), want, `trial ${trial}: setRun(${b}, ${n}) on ${blocks} blocks`);
      const from = rnd(blocks);
      let free = -1;
      for (let k = 0; k < blocks && free < 0; k++) if (model[(from + k) % blocks] === 0) free = (from + k) % blocks;
      assert.equal(map.nextFree(from), free, `trial ${trial}: nextFree(${from})`);
      assert.equal(map.usedBlocks, used);
      assert.equal(map.isFull, used === blocks);
    }
  }
});

test('Taus88.fill writes the same words as successive next() calls, and leaves the stream where they would', () => {
  const a = new Taus88(0x89);
  const b = new Taus88(0x89);
  const words = new Uint32Array(10_001);
  a.fill(words);
  for (let i = 0; i < words.length; i++) assert.equal(words[i], b.next(), `word ${i}`);
  assert.equal(a.next(), b.next());
});

/**
 * A device that, like Linux AIO, sends the requests of one turn together (a microtask after the
 * first) and completes them together a macrotask later. It counts submissions and the requests in them.
 */
function batchingDevice(): BlockDevice & { submissions: number; requests: number } {
  const inner = createNullDisk(64 * MiB);
  let queued: (() => void)[] = [];
  const dev = {
    name: 'batching',
    info: { ...inner.info, batchedSubmission: true },
    submissions: 0,
    requests: 0,
    readv(): Promise<void> {
      return new Promise<void>((resolve) => {
        if (queued.length === 0) {
          queueMicrotask(() => {
            const turn = queued;
            queued = [];
            dev.submissions++;
            dev.requests += turn.length;
            setImmediate(() => turn.forEach((done) => done()));
          });
        }
        queued.push(resolve);
      });
    },
    writev: () => Promise.resolve(),
    flush: () => Promise.resolve(),
    discard: () => Promise.resolve(),
    writeZeroes: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  return dev;
}

test('completions that arrive together are refilled in one stretch: one submission per batch, not per I/O', async () => {
  const dev = batchingDevice();
  // fio's default iodepth_batch_complete_max (1): reaped one at a time, yet without a turn each.
  const r = await runJob(makeJob({ rw: 'randread', size: 16 * MiB, iodepth: 32, iodepthBatchCompleteMax: 1 }), context(dev));
  assert.equal(r.error, 0);
  assert.equal(r.dirs[0].totalIos, 4096);
  assert.equal(dev.requests, 4096);
  assert.ok(dev.submissions <= 4096 / 16, `${dev.submissions} submissions for 4096 I/Os at depth 32`);
  // Every submission but the last refills the whole queue: the depth at issue is 32 (fio's cur_depth).
  assert.ok(r.iodepthLevels[5]! > 95, `depth levels ${r.iodepthLevels.join(',')}`);
  assert.ok(r.dirs[0].clat.min >= 0 && r.dirs[0].slat.min >= 0);
});

test("a device that works inside its calls: each I/O's submission latency is its own call, not its stretch's", async () => {
  // A fake clock that only the device moves: every read takes exactly 1 ms, in the call.
  let clock = 0;
  const inner = createNullDisk(64 * MiB);
  const dev: BlockDevice = {
    ...inner,
    name: 'slow-in-call',
    info: inner.info,
    readv(offset, iov) {
      clock += 1;
      return inner.readv(offset, iov);
    },
  };
  const r = await runJob(makeJob({ rw: 'randread', size: 1 * MiB, iodepth: 8 }), context(dev, { now: () => clock }));
  assert.equal(r.dirs[0].totalIos, 256);
  assert.equal(r.dirs[0].slat.min, 1e6);
  assert.equal(r.dirs[0].slat.max, 1e6, 'no I/O is charged for the calls of the others prepared with it');
  assert.equal(r.dirs[0].lat.count, 256);
  assert.ok(r.dirs[0].clat.min >= 0);
});
