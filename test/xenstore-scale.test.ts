// Creating siblings must cost O(1) amortized (issue 14, finding 3): a write used to copy its
// parent's whole child list, so 10^5 siblings took longer than 150 s. The test creates 10^5 and
// checks both an absolute bound (generous, for a loaded 2-core machine) and that the last writes
// cost about what the first did (a quadratic store fails that on any machine). Listings stay
// correct and in creation order (as C xenstored keeps them), through DIRECTORY_PART and through
// Debian's xenstore-list; transactions keep their copy-on-write isolation.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { connectInProcess } from '../src/xenstore/client.ts';
import type { XsClient } from '../src/xenstore/client.ts';
import { XenstoreError } from '../src/xenstore/errors.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';

const SIBLINGS = 100_000;
const CHUNK = 10_000;
/** Whole creation, on a loaded 2-core machine (about 2 s idle here after the fix). */
const BOUND_MS = 40_000;
/**
 * Per-write cost late over early (median of the last three 10k chunks over the cheapest of the
 * first three): about 1 when O(1) (GC of a growing heap makes single chunks up to 2x), and above 8
 * when a write costs O(siblings).
 */
const MAX_GROWTH = 4;
const WINDOW = 64;

/** Runs `n` operations `op(i)` keeping WINDOW of them in flight. */
async function pipelined(n: number, op: (i: number) => Promise<unknown>, deadline: number): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) {
      if (performance.now() > deadline) throw new Error(`still creating siblings after ${BOUND_MS} ms (at ${next})`);
      await op(next++);
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, lane));
}

function name(i: number): string {
  return `s${i}`;
}

test(`creating ${SIBLINGS} siblings costs O(1) per write, and listings stay correct`, { timeout: 120_000 }, async (t) => {
  const d = new XenstoreDaemon();
  const c = connectInProcess(d, 0);
  const dir = mkdtempSync(join(tmpdir(), 'xs-scale-'));
  const socket = join(dir, 'socket');
  const server = await d.listenUnix(socket);
  try {
    await c.mkdir('/big');
    const started = performance.now();
    const deadline = started + BOUND_MS;
    const perWrite: number[] = [];
    for (let at = 0; at < SIBLINGS; at += CHUNK) {
      const t0 = performance.now();
      await pipelined(CHUNK, (i) => c.write(`/big/${name(at + i)}`, 'x'), deadline);
      perWrite.push(((performance.now() - t0) * 1000) / CHUNK);
    }
    const total = performance.now() - started;
    const late = [...perWrite.slice(-3)].sort((a, b) => a - b)[1] as number;
    const growth = late / Math.min(...perWrite.slice(0, 3));
    t.diagnostic(
      `${SIBLINGS} siblings in ${Math.round(total)} ms; µs per write by 10k: ${perWrite.map((x) => x.toFixed(1)).join(' ')} (late/early ${growth.toFixed(2)})`,
    );
    assert.ok(total < BOUND_MS, `${SIBLINGS} siblings took ${Math.round(total)} ms`);
    assert.ok(growth < MAX_GROWTH, `per-write cost grew ${growth.toFixed(1)}x from the first 30k siblings to the last`);

    // Listing: E2BIG for DIRECTORY, then DIRECTORY_PART pages, in creation order.
    const expected = Array.from({ length: SIBLINGS }, (_, i) => name(i));
    const t1 = performance.now();
    assert.deepEqual(await c.directory('/big'), expected);
    t.diagnostic(`directory of ${SIBLINGS} by DIRECTORY_PART in ${Math.round(performance.now() - t1)} ms`);

    // Removing and re-adding moves a name to the end, as in C xenstored; a rewrite keeps its place.
    await c.rm('/big/s5');
    await c.write('/big/s7', 'rewritten');
    await c.write('/big/s5', 'again');
    const after = await c.directory('/big');
    assert.equal(after.length, SIBLINGS);
    assert.equal(after[after.length - 1], 's5');
    assert.equal(after[6], 's7');
    assert.equal(await c.read('/big/s7'), 'rewritten');

    // Debian's libxenstore pages through it the same way.
    // Only this part needs the tools: outside CI it is left out, saying so; under CI=true it fails.
    if (
      !stopIfMissing({ skip: (why) => t.diagnostic(`xenstore-list part skipped: ${why}`) }, missingTools(['xenstore-list', 'xenstore-ls'], 'xenstore-utils'))
    ) {
      const env = { ...process.env, XENSTORED_PATH: socket };
      const list = await run('xenstore-list', ['/big'], { timeoutMs: 30_000, env });
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(list.stdout.trimEnd().split('\n'), after);
      for (let i = 0; i < 300; i++) await c.write(`/small/n${i}`, `v${i}`);
      const ls = await run('xenstore-ls', ['/small'], { timeoutMs: 30_000, env });
      assert.equal(ls.code, 0, ls.stderr);
      assert.deepEqual(
        ls.stdout.trimEnd().split('\n'),
        Array.from({ length: 300 }, (_, i) => `n${i} = "v${i}"`),
      );
    }
  } finally {
    c.close();
    await d.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof XenstoreError && err.code === code);
}

async function list(c: XsClient, path: string, tx = 0): Promise<string[]> {
  return c.directory(path, tx);
}

test('transactions keep copy-on-write isolation over large child lists', async () => {
  const d = new XenstoreDaemon();
  const c = connectInProcess(d, 0);
  const other = connectInProcess(d, 0);
  const N = 3000;
  for (let i = 0; i < N; i++) await c.write(`/d/e${i}`, String(i));

  // A transaction's snapshot: siblings created outside after it started are invisible inside.
  const tx = await c.transactionStart();
  await other.write('/d/late', 'x');
  await other.rm('/d/e0');
  const inside = await list(c, '/d', tx);
  assert.equal(inside.length, N);
  assert.equal(inside[0], 'e0');
  assert.ok(!inside.includes('late'));
  // Its own creations and removals are visible only inside.
  await c.write('/d/mine', 'm', tx);
  await c.rm('/d/e1', tx);
  const inside2 = await list(c, '/d', tx);
  assert.equal(inside2[inside2.length - 1], 'mine');
  assert.ok(!inside2.includes('e1'));
  const outside = await list(c, '/d');
  assert.ok(!outside.includes('mine'));
  assert.ok(outside.includes('e1'));
  assert.equal(outside[outside.length - 1], 'late');
  // The child list it changed was changed outside too: the commit fails and changes nothing.
  await rejectsWith(c.transactionEnd(tx, true), 'EAGAIN');
  assert.deepEqual(await list(c, '/d'), outside);

  // Without a conflict the commit lands, and a snapshot taken before it does not see it.
  const early = await other.transactionStart();
  const tx2 = await c.transactionStart();
  for (let i = 0; i < 500; i++) await c.write(`/d/t${i}`, 't', tx2);
  await c.rm('/d/e2', tx2);
  await c.transactionEnd(tx2, true);
  const now = await list(c, '/d');
  assert.equal(now.length, N - 1 + 1 + 500 - 1);
  assert.equal(now[now.length - 1], 't499');
  assert.ok(!now.includes('e2'));
  const old = await list(other, '/d', early);
  assert.ok(old.includes('e2') && !old.includes('t0'));
  assert.equal(await other.read('/d/e2', early), '2');
  await other.transactionEnd(early, false);
  c.close();
  other.close();
});
