// fd-stream (src/internal/fd-stream.ts): descriptors net.Socket refuses (an eventfd), read on libuv's
// epoll into a fixed buffer; and tick-clock (src/internal/tick-clock.ts), one clock reading per loop turn.
import { test } from 'node:test';
import { stopIfMissing } from './helpers-tools.ts';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import koffi from 'koffi';
import { fdStream, fdStreamProblem } from '../src/internal/fd-stream.ts';
import { freshNow, tickNow } from '../src/internal/tick-clock.ts';

const EFD_CLOEXEC = 0o2000000;

test('fd stream: an eventfd (which net.Socket refuses) is read on epoll into the fixed buffer, and destroy closes it', async (t) => {
  const problem = fdStreamProblem();
  if (problem !== undefined && stopIfMissing(t, { what: `libuv's pipe_wrap binding (${problem})`, install: 'Node 20, as package.json engines and CI use' }))
    return;
  const eventfd = koffi.load('libc.so.6').func('int eventfd(unsigned int initval, int flags)') as (initval: number, flags: number) => number;
  const fd = eventfd(0, EFD_CLOEXEC);
  assert.ok(fd >= 0);
  assert.throws(() => new net.Socket({ fd }), { code: 'ERR_INVALID_FD_TYPE' }, 'the public API refuses an eventfd');
  const buffer = new Uint8Array(16);
  const counts: bigint[] = [];
  let wake: (() => void) | undefined;
  const stream = fdStream(fd, buffer, (bytes) => {
    assert.equal(bytes.buffer, buffer.buffer, 'the read landed in our buffer');
    assert.equal(bytes.length, 8, 'an eventfd read gives its 8-byte counter');
    counts.push(new BigUint64Array(bytes.slice().buffer)[0]!);
    wake?.();
  });
  const signalled = (): Promise<void> => new Promise((resolve) => (wake = resolve));
  try {
    let next = signalled();
    fs.writeSync(fd, new BigUint64Array([3n]));
    fs.writeSync(fd, new BigUint64Array([4n])); // both before the loop reads: one read of 7
    await next;
    next = signalled();
    fs.writeSync(fd, new BigUint64Array([5n]));
    await next;
    assert.deepEqual(counts, [7n, 5n]);
  } finally {
    const closed = new Promise((resolve) => stream.once('close', resolve));
    stream.destroy();
    await closed;
  }
  assert.throws(() => fs.fstatSync(fd), /EBADF/, 'the stream owned the fd and closed it');
});

test('tick clock: one reading is shared until the loop turns; freshNow reads again', async () => {
  const first = freshNow();
  assert.equal(tickNow(), first, 'the same turn: the same reading');
  const spin = performance.now() + 2;
  while (performance.now() < spin); // time passes, the reading stays
  assert.equal(tickNow(), first);
  const fresh = freshNow();
  assert.ok(fresh > first, 'freshNow reads the clock');
  assert.equal(tickNow(), fresh, 'and shares the new reading');
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(tickNow() > fresh, 'a later loop turn reads the clock again');
});
