// The reconnect and unflushed-writes mechanism the iSCSI initiator and the NBD client share
// (src/block/reconnect.ts), without a network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Reconnector, UnflushedWrites } from '../src/block/reconnect.ts';

test('a flush fails once when the cache may have been lost with writes it had not covered', () => {
  const w = new UnflushedWrites();
  w.cacheMayBeLost(); // nothing written yet: nothing to lose
  assert.equal(w.flushed(w.flushStarting()), false);
  w.acked();
  const covers = w.flushStarting();
  w.acked(); // acknowledged while the flush was in flight: not covered by it
  assert.equal(w.flushed(covers), false);
  w.cacheMayBeLost();
  assert.equal(w.flushed(w.flushStarting()), true, 'the write after the last flush may be gone');
  assert.equal(w.flushed(w.flushStarting()), false, 'reported once');
  w.cacheMayBeLost(); // everything acknowledged is flushed now
  assert.equal(w.flushed(w.flushStarting()), false);
});

test('reconnect: concurrent callers share one run of attempts, which gives up when the window ends', async () => {
  let attempts = 0;
  let up = false;
  const r = new Reconnector<string>({
    windowMs: 400,
    connect: async () => {
      attempts++;
      if (!up) throw new Error(`refused ${attempts}`);
      r.connected();
      return 'connection';
    },
    closed: () => undefined,
    gaveUp: (last) => new Error(`gave up: ${last}`),
  });
  r.lost();
  setTimeout(() => (up = true), 120);
  const [a, b] = await Promise.all([r.reconnect(), r.reconnect()]);
  assert.equal(a, 'connection');
  assert.equal(b, 'connection');
  assert.ok(attempts >= 2 && attempts <= 5, `${attempts} attempts, backing off`);

  up = false;
  attempts = 0;
  r.lost();
  const started = Date.now();
  await assert.rejects(r.reconnect(), /gave up: refused/);
  assert.ok(Date.now() - started < 1000, 'within the window (and one backoff step)');
  // after giving up, a later request gets one attempt, not a new window
  attempts = 0;
  await assert.rejects(r.reconnect(), /gave up/);
  assert.equal(attempts, 1);
});

test('reconnect stops when the device is closed', async () => {
  let closed = false;
  const r = new Reconnector<string>({
    windowMs: 10_000,
    connect: async () => {
      closed = true;
      throw new Error('refused');
    },
    closed: () => (closed ? new Error('device closed') : undefined),
    gaveUp: () => new Error('gave up'),
  });
  r.lost();
  await assert.rejects(r.reconnect(), /device closed/);
  await r.settled();
});
