// Fuzzing the xenstore wire protocol (issue 14, "Fuzz the xenstore wire protocol"): seeded random
// and malformed requests (unknown types, bad lengths, payloads without their nuls, invalid and
// over-long paths, unknown transaction ids, watch floods), floods, messages cut at random byte
// boundaries, connections that disconnect mid-message and headers no protocol allows, over the Unix
// socket (dom0) and the in-process transport (a guest). Throughout: nothing escapes the daemon, every
// whole request gets exactly one answer and none is an internal error (EIO), a connection is dropped
// only after an impossible header, memory stays bounded, and Debian's xenstore-read still gets
// answers afterwards. The seed is printed; FUZZ_SEED=<n> replays a run.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { connectInProcess } from '../src/xenstore/client.ts';
import { XsDecoder, encodeMessage, splitNul } from '../src/xenstore/codec.ts';
import type { XsMessage } from '../src/xenstore/codec.ts';
import { XENSTORE_PAYLOAD_MAX, XsType } from '../src/xenstore/constants.ts';
import { transportPair } from '../src/xenstore/transport.ts';
import { Rng } from '../src/loadgen/pattern.ts';
import { MiB, RawSocketPeer, heldBytes } from './helpers-xenstore.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const GUEST = 7;

/** One end of a fuzzed connection, whatever it runs over. */
interface Wire {
  send(bytes: Uint8Array): void;
  /** Replies and events, in order. */
  readonly messages: XsMessage[];
  readonly closed: Promise<void>;
  isClosed(): boolean;
  close(): void;
}

async function socketWire(path: string): Promise<Wire> {
  const peer = await RawSocketPeer.connect(path);
  peer.read();
  let closed = false;
  void peer.closed.then(() => (closed = true));
  return {
    send: (b) => void (peer.socket.destroyed || peer.socket.write(b)),
    messages: peer.messages,
    closed: peer.closed,
    isClosed: () => closed,
    close: () => peer.destroy(),
  };
}

function inProcessWire(d: XenstoreDaemon, domid: number): Wire {
  const [served, mine] = transportPair();
  d.connect(domid, served);
  const messages: XsMessage[] = [];
  const dec = new XsDecoder({ onMessage: (m) => messages.push(m), onOversize: () => assert.fail('the daemon sent an oversize message') });
  mine.onData((b) => dec.push(b));
  let closed = false;
  const done = new Promise<void>((resolve) => mine.onClose(resolve));
  void done.then(() => (closed = true));
  return { send: (b) => mine.send(b), messages, closed: done, isClosed: () => closed, close: () => mine.close() };
}

const WORDS = [
  '/',
  '/a',
  '/a/b',
  'rel',
  'rel/x/y',
  `/local/domain/${GUEST}`,
  `/local/domain/${GUEST}/data/z`,
  '/local/domain/0/backend',
  '',
  '//',
  '/trailing/',
  '/sp ace',
  '/ünï',
  '@introduceDomain',
  '@releaseDomain',
  '@other',
  'r5',
  'n0',
  'b7',
  'w65535',
  'x99999999',
  'T',
  'F',
  '1',
  '2',
  '3',
  '0',
  '-1',
  '4294967295',
  'quota',
  'help',
  'print',
  'x'.repeat(2100),
  `/${'p/'.repeat(1600)}q`,
];

/** A random request payload: words joined by nuls, sometimes without its last nul, sometimes raw bytes. */
function payload(rng: Rng): Uint8Array {
  const kind = rng.below(10);
  if (kind === 0) {
    const b = new Uint8Array(rng.below(200));
    for (let i = 0; i < b.length; i++) b[i] = rng.below(256);
    return b;
  }
  const parts: string[] = [];
  for (let k = rng.below(5); k > 0; k--) parts.push(WORDS[rng.below(WORDS.length)] as string);
  const text = parts.join('\0') + (kind < 5 ? '\0' : '');
  const bytes = Buffer.from(text);
  return bytes.length > XENSTORE_PAYLOAD_MAX ? bytes.subarray(0, XENSTORE_PAYLOAD_MAX) : bytes;
}

/** Request types, weighted towards real ones; never XS_RELEASE of our own guest (that drops it, by design). */
function type(rng: Rng): number {
  const r = rng.below(20);
  if (r === 0) return rng.below(0x10000);
  if (r === 1) return [XsType.XS_WATCH_EVENT, XsType.XS_ERROR, 20, 23, 0xffff][rng.below(5)] as number;
  const t = rng.below(23);
  return t === XsType.XS_RELEASE ? XsType.XS_READ : t;
}

interface Outcome {
  sent: number;
  answered: number;
  internalErrors: string[];
  duplicates: number;
  dropped: boolean;
}

/**
 * Sends `n` random requests over `wire`, cut at random byte boundaries and sometimes paced, plus an
 * impossible header at the end when `poison`; waits for the answers. Request ids are 1..n.
 */
async function fuzzConnection(wire: Wire, rng: Rng, n: number, txIds: () => number[], poison: boolean): Promise<Outcome> {
  const stream: Uint8Array[] = [];
  for (let i = 1; i <= n; i++) {
    const tx = rng.below(4) === 0 ? (txIds()[0] ?? 0) : rng.below(8) === 0 ? rng.below(0x100000000) : 0;
    stream.push(encodeMessage(type(rng), i, tx, payload(rng)));
  }
  if (poison) {
    const h = new Uint8Array(16);
    new DataView(h.buffer).setUint32(12, XENSTORE_PAYLOAD_MAX + 1 + rng.below(0xffffefff), true);
    stream.push(h, new Uint8Array(rng.below(5000)));
  }
  const all = Buffer.concat(stream);
  for (let at = 0; at < all.length; ) {
    const cut = Math.min(all.length - at, 1 + rng.below(rng.below(4) === 0 ? 8 : 3000));
    wire.send(all.subarray(at, at + cut));
    at += cut;
    if (rng.below(16) === 0) await new Promise((r) => setImmediate(r));
  }
  const deadline = performance.now() + 10_000;
  const replies = (): XsMessage[] => wire.messages.filter((m) => m.type !== XsType.XS_WATCH_EVENT);
  while (replies().length < n && !wire.isClosed() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  if (poison) await Promise.race([wire.closed, new Promise((r) => setTimeout(r, 2000))]);
  const seen = new Set<number>();
  const out: Outcome = { sent: n, answered: 0, internalErrors: [], duplicates: 0, dropped: wire.isClosed() };
  for (const m of replies()) {
    if (seen.has(m.reqId)) out.duplicates++;
    seen.add(m.reqId);
    out.answered++;
    if (m.type === XsType.XS_ERROR && splitNul(m.payload)[0] === 'EIO') out.internalErrors.push(`r${m.reqId}`);
  }
  return out;
}

test(`xenstore wire fuzz (seed ${SEED}): malformed, cut, flooded and abandoned requests over the socket and in-process`, { timeout: 60_000 }, async (t) => {
  t.diagnostic(`FUZZ_SEED=${SEED}`);
  const rng = new Rng(SEED);
  const dir = mkdtempSync(join(tmpdir(), 'xs-fuzz-'));
  const socket = join(dir, 'socket');
  const lines: string[] = [];
  const d = new XenstoreDaemon({ log: (l) => l.startsWith('BUG') && lines.push(l) });
  const server = await d.listenUnix(socket);
  const dom0 = connectInProcess(d, 0);
  const started = performance.now();
  try {
    const guestDir = async (): Promise<void> => {
      await dom0.rm(`/local/domain/${GUEST}`);
      await dom0.mkdir(`/local/domain/${GUEST}`);
      await dom0.setPerms(`/local/domain/${GUEST}`, [{ domid: GUEST, perm: 'n' }]);
      await dom0.write(`/local/domain/${GUEST}/data/z`, 'seed');
    };
    await dom0.mkdir('/local/domain');
    await guestDir();
    await dom0.write('/local/domain/0/name', 'Domain-0');
    const before = heldBytes();
    const rssBefore = process.memoryUsage().rss;

    // Transactions the fuzzers may name: one open for dom0 (another connection's ids are not theirs).
    const tx0 = await dom0.transactionStart();
    const txs = (): number[] => [tx0, 1, 2];

    // 1. Random requests, cut anywhere: dom0 over the socket, a guest in-process, several at once.
    const conns: Promise<Outcome>[] = [];
    for (let c = 0; c < 6; c++) {
      const wire = c % 2 === 0 ? await socketWire(socket) : inProcessWire(d, GUEST);
      conns.push(fuzzConnection(wire, new Rng(rng.below(0x7fffffff)), 400, txs, false).finally(() => wire.close()));
    }
    for (const [i, o] of (await Promise.all(conns)).entries()) {
      assert.equal(o.dropped, false, `connection ${i} was dropped without an impossible header`);
      assert.equal(o.answered, o.sent, `connection ${i}: ${o.answered} answers to ${o.sent} requests`);
      assert.equal(o.duplicates, 0, `connection ${i}: a request answered twice`);
      assert.deepEqual(o.internalErrors, [], `connection ${i}: internal errors (EIO) for ${o.internalErrors.join(', ')}`);
    }

    // 2. Then an impossible header: answered up to it, then dropped (both transports).
    for (const wire of [await socketWire(socket), inProcessWire(d, GUEST)]) {
      const o = await fuzzConnection(wire, new Rng(rng.below(0x7fffffff)), 50, txs, true);
      assert.equal(o.dropped, true, 'dropped after an impossible header');
      assert.equal(o.answered, o.sent, 'every request before the header was answered');
      assert.deepEqual(o.internalErrors, []);
      wire.close();
    }

    // 3. Disconnects mid-message, with transactions and watches left behind.
    for (let c = 0; c < 20; c++) {
      const wire = c % 2 === 0 ? await socketWire(socket) : inProcessWire(d, GUEST);
      wire.send(encodeMessage(XsType.XS_TRANSACTION_START, 1, 0, Buffer.from('\0')));
      wire.send(encodeMessage(XsType.XS_WATCH, 2, 0, Buffer.from(`/local/domain/${GUEST}\0tok${c}\0`)));
      const m = encodeMessage(XsType.XS_WRITE, 3, 0, Buffer.from(`/local/domain/${GUEST}/data/cut\0${'v'.repeat(1000)}`));
      wire.send(m.subarray(0, rng.below(m.length)));
      if (c % 3 === 0) await new Promise((r) => setImmediate(r));
      wire.close();
    }

    // 4. Floods: a guest registering watches past its quota, and a dom0 client pipelining 20k
    // requests in random pieces while a guest watcher reads every event. (The fuzzers above may
    // have removed or locked the guest's directory: give it back first.)
    await dom0.write('/local/domain/0/name', 'Domain-0');
    await guestDir();
    const watcher = inProcessWire(d, GUEST);
    // One watch on the flood's directory, the others elsewhere (each matching watch is an event).
    for (let i = 1; i <= 300; i++) {
      const wpath = i === 1 ? `/local/domain/${GUEST}/data` : `/local/domain/${GUEST}/data/w${i}`;
      watcher.send(encodeMessage(XsType.XS_WATCH, i, 0, Buffer.from(`${wpath}\0w${i}\0`)));
    }
    const flood = await socketWire(socket);
    const N = 20_000;
    const parts: Uint8Array[] = [];
    for (let i = 1; i <= N; i++) {
      const op = i % 3 === 0 ? XsType.XS_READ : XsType.XS_WRITE;
      const body = op === XsType.XS_READ ? '/local/domain/0/name\0' : `/local/domain/${GUEST}/data/f${i % 50}\0${i}`;
      parts.push(encodeMessage(op, i, 0, Buffer.from(body)));
    }
    const blob = Buffer.concat(parts);
    for (let at = 0; at < blob.length; ) {
      const cut = Math.min(blob.length - at, 1 + rng.below(9000));
      flood.send(blob.subarray(at, at + cut));
      at += cut;
    }
    const floodDeadline = performance.now() + 20_000;
    while (flood.messages.filter((m) => m.type !== XsType.XS_WATCH_EVENT).length < N && performance.now() < floodDeadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const floodReplies = flood.messages.filter((m) => m.type !== XsType.XS_WATCH_EVENT);
    assert.equal(floodReplies.length, N, 'every request of the flood answered');
    assert.ok(
      floodReplies.every((m, i) => m.reqId === i + 1 && m.type !== XsType.XS_ERROR),
      'in order, none failed',
    );
    const watchReplies = watcher.messages.filter((m) => m.type !== XsType.XS_WATCH_EVENT);
    const quotaErrors = watchReplies.filter((m) => m.type === XsType.XS_ERROR && splitNul(m.payload)[0] === 'EQUOTA').length;
    assert.equal(watchReplies.length, 300);
    assert.ok(quotaErrors >= 300 - 128, `watches past the guest's quota refused (${quotaErrors})`);
    assert.ok(watcher.messages.length - watchReplies.length > 1000, 'the guest watcher heard the flood');
    flood.messages.length = 0;
    watcher.messages.length = 0;
    flood.close();
    watcher.close();
    await dom0.transactionEnd(tx0, false);

    // Nothing escaped, nothing leaked.
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(lines, [], 'no internal error was logged');
    assert.equal(d.connectionCount, 1, 'only the in-process dom0 client is left');
    const grown = heldBytes() - before;
    const rssGrown = process.memoryUsage().rss - rssBefore;
    t.diagnostic(`fuzzed for ${Math.round(performance.now() - started)} ms; held +${(grown / MiB).toFixed(1)} MiB, RSS +${(rssGrown / MiB).toFixed(1)} MiB`);
    assert.ok(grown < 16 * MiB, `held memory grew by ${(grown / MiB).toFixed(1)} MiB`);
    assert.ok(rssGrown < 128 * MiB, `RSS grew by ${(rssGrown / MiB).toFixed(1)} MiB`);

    // And the daemon still answers a real peer.
    // Only this part needs the tool: outside CI it is left out, saying so; under CI=true it fails.
    if (!stopIfMissing({ skip: (why) => t.diagnostic(`xenstore-read part skipped: ${why}`) }, missingTools(['xenstore-read'], 'xenstore-utils'))) {
      const r = await run('xenstore-read', ['/local/domain/0/name'], { timeoutMs: 5000, env: { ...process.env, XENSTORED_PATH: socket } });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'Domain-0\n');
    }
    assert.equal(await dom0.read('/local/domain/0/name'), 'Domain-0');
  } finally {
    dom0.close();
    await d.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
