// What one guest or client can make the daemon hold is bounded (issue 14, finding 2): writes inside
// one open transaction (100k writes of 2000 bytes grew the process by 230 MiB), replies to a client
// that never reads (450 MiB), and a length field the protocol does not allow (a 4 GiB one made the
// connection swallow the next 4 GiB; C xenstored drops such a connection). Each check measures the
// JS heap plus ArrayBuffers after a full GC, before and after the abuse.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { connectInProcess, connectUnix } from '../src/xenstore/client.ts';
import { encodeMessage, nulStrings, splitNul } from '../src/xenstore/codec.ts';
import { XsType } from '../src/xenstore/constants.ts';
import { XenstoreError } from '../src/xenstore/errors.ts';
import { transportPair } from '../src/xenstore/transport.ts';
import { MiB, RawSocketPeer, heldBytes } from './helpers-xenstore.ts';

function codeOf(err: unknown): string {
  return err instanceof XenstoreError ? err.code : `not a XenstoreError: ${String(err)}`;
}

/** Runs `n` operations keeping `window` in flight; counts outcomes by error code ('ok' for success). */
async function pipelined(n: number, window: number, op: (i: number) => Promise<unknown>): Promise<Map<string, number>> {
  const outcomes = new Map<string, number>();
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      let code = 'ok';
      try {
        await op(i);
      } catch (err) {
        code = codeOf(err);
      }
      outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  return outcomes;
}

async function withSocketDaemon(fn: (d: XenstoreDaemon, socket: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'xs-limits-'));
  const d = new XenstoreDaemon();
  const server = await d.listenUnix(join(dir, 'socket'));
  try {
    await fn(d, join(dir, 'socket'));
  } finally {
    await d.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a transaction holds at most its quota: a guest gets ENOMEM past `memory` and ENOSPC past `transaction-nodes`; dom0 ENOMEM past 32 MiB', async (t) => {
  const d = new XenstoreDaemon();
  const dom0 = connectInProcess(d, 0);
  await dom0.mkdir('/local/domain/5');
  await dom0.setPerms('/local/domain/5', [{ domid: 5, perm: 'n' }]);
  const g = connectInProcess(d, 5);
  const value = 'v'.repeat(2000);
  const before = heldBytes();

  // 1600 writes of 2000 bytes to 500 nodes, in one transaction: 3.2 MB sent, past the quota (guests
  // under sustained load are paced to a few thousand requests a second: src/xenstore/daemon.ts).
  const tx = await g.transactionStart();
  const guest = await pipelined(1600, 64, (i) => g.write(`data/k${i % 500}`, value, tx));
  const grown = heldBytes() - before;
  t.diagnostic(`guest: ${JSON.stringify(Object.fromEntries(guest))}; held +${(grown / MiB).toFixed(1)} MiB with the transaction open`);
  assert.ok((guest.get('ENOMEM') ?? 0) > 300, 'writes past the memory quota fail with ENOMEM');
  assert.ok((guest.get('ok') ?? 0) > 500, 'writes within the quota succeed');
  assert.ok(grown < 12 * MiB, `an open transaction grew the process by ${(grown / MiB).toFixed(1)} MiB`);
  // A failed write leaves the transaction usable and consistent: it commits what succeeded.
  await g.transactionEnd(tx, true);
  assert.equal(await g.read('data/k7'), value);

  // transaction-nodes: reads count as C xenstored counts them, every node accessed.
  for (let i = 0; i < 1100; i++) await dom0.write(`/local/domain/5/many/n${i}`, 'x');
  const tx2 = await g.transactionStart();
  const reads = await pipelined(1100, 16, (i) => g.read(`many/n${i}`, tx2));
  assert.ok((reads.get('ENOSPC') ?? 0) >= 70, `reads past transaction-nodes fail with ENOSPC: ${JSON.stringify(Object.fromEntries(reads))}`);
  await g.transactionEnd(tx2, false);

  // dom0 is exempt from guest quotas, but one transaction still stops at 32 MiB.
  const before0 = heldBytes();
  const tx0 = await dom0.transactionStart();
  const big = 'w'.repeat(4000);
  const d0 = await pipelined(20_000, 64, (i) => dom0.write(`/tx0/k${i % 1000}`, big, tx0));
  const grown0 = heldBytes() - before0;
  t.diagnostic(`dom0: ${JSON.stringify(Object.fromEntries(d0))}; held +${(grown0 / MiB).toFixed(1)} MiB with the transaction open`);
  assert.ok((d0.get('ENOMEM') ?? 0) > 10_000);
  assert.ok(grown0 < 48 * MiB, `a dom0 transaction grew the process by ${(grown0 / MiB).toFixed(1)} MiB`);
  await dom0.transactionEnd(tx0, false);
  const after = heldBytes() - before;
  t.diagnostic(`after the transactions ended: +${(after / MiB).toFixed(1)} MiB`);
  assert.ok(after < 12 * MiB, `memory returned after the transactions ended (+${(after / MiB).toFixed(1)} MiB)`);
  g.close();
  dom0.close();
});

test('replies to a client that never reads: the daemon stops answering and reading it, and the memory is bounded', async (t) => {
  await withSocketDaemon(async (d, socket) => {
    const c = connectInProcess(d, 0);
    await c.write('/big', 'x'.repeat(4000));
    const before = heldBytes();
    const peer = await RawSocketPeer.connect(socket);
    // 100k reads of a 4000-byte value would be 400 MB of replies.
    let i = 0;
    const read = encodeMessage(XsType.XS_READ, 0, 0, nulStrings('/big'));
    const sent = await peer.pump(() => (i++ < 100_000 ? read : undefined), 1000);
    const grown = heldBytes() - before;
    t.diagnostic(`sent ${sent.written} bytes of requests before the daemon stopped reading (stalled: ${sent.stalled}); held +${(grown / MiB).toFixed(1)} MiB`);
    assert.ok(sent.stalled, 'the daemon stops reading a client that does not read its replies');
    assert.ok(grown < 16 * MiB, `unread replies grew the process by ${(grown / MiB).toFixed(1)} MiB`);
    // Everyone else is still served.
    assert.equal((await c.read('/big')).length, 4000);
    const other = await connectUnix(socket);
    await other.write('/other', 'fine');
    other.close();
    // Once the client reads, it gets every answer in order.
    peer.read();
    const expected = Math.floor(sent.written / read.length);
    while (peer.messages.length < expected) await new Promise((r) => setTimeout(r, 20));
    assert.ok(peer.messages.every((m) => m.type === XsType.XS_READ && m.payload.length === 4000));
    peer.messages.length = 0;
    peer.destroy();
    await peer.closed;
    await new Promise((r) => setTimeout(r, 20));
    const after = heldBytes() - before;
    t.diagnostic(`after the client left: +${(after / MiB).toFixed(1)} MiB`);
    assert.ok(after < 4 * MiB, `memory returned after disconnect (+${(after / MiB).toFixed(1)} MiB)`);
    c.close();
  });
});

test('a watcher that never reads its events is dropped once 1 MiB of them wait; memory stays bounded', async (t) => {
  await withSocketDaemon(async (d, socket) => {
    const c = connectInProcess(d, 0);
    const peer = await RawSocketPeer.connect(socket);
    const token = 't'.repeat(2000);
    peer.socket.write(encodeMessage(XsType.XS_WATCH, 1, 0, nulStrings('/watched', token)));
    await new Promise((r) => setTimeout(r, 50));
    const before = heldBytes();
    let writes = 0;
    while (d.connectionCount > 1 && writes < 100_000) await c.write(`/watched/k${writes++ % 100}`, 'x');
    const grown = heldBytes() - before;
    t.diagnostic(`dropped after ${writes} events of ~2 KiB; held +${(grown / MiB).toFixed(1)} MiB`);
    assert.equal(d.connectionCount, 1, 'the watcher was dropped');
    assert.ok(writes < 5000, `dropped only after ${writes} events`);
    assert.ok(grown < 8 * MiB);
    assert.ok(await peer.waitClosed(2000), 'its socket was closed');
    c.close();
  });
});

test('a header announcing more than XENSTORE_PAYLOAD_MAX drops the connection at once (socket and in-process)', async () => {
  await withSocketDaemon(async (d, socket) => {
    const peer = await RawSocketPeer.connect(socket);
    const header = new Uint8Array(16);
    const dv = new DataView(header.buffer);
    dv.setUint32(0, XsType.XS_WRITE, true);
    dv.setUint32(4, 9, true);
    dv.setUint32(12, 0xffffffff, true); // 4 GiB
    peer.read();
    peer.socket.write(encodeMessage(XsType.XS_READ, 8, 0, nulStrings('/nothing')));
    peer.socket.write(header);
    // What follows would be "payload" to a daemon that skips it; this one is gone already.
    let sent = 0;
    const junk = new Uint8Array(64 * 1024).fill(0x41);
    const r = await peer.pump(() => (sent++ < 64 ? junk : undefined), 500);
    assert.ok(await peer.waitClosed(2000), `the daemon closed the connection (wrote ${r.written} bytes after the header)`);
    assert.deepEqual(
      peer.messages.map((m) => [m.type, m.reqId, splitNul(m.payload)[0]]),
      [[XsType.XS_ERROR, 8, 'ENOENT']],
      'the request before the bad header was answered, nothing after it',
    );
    const other = await connectUnix(socket);
    await other.write('/still', 'serving');
    assert.equal(await other.read('/still'), 'serving');
    other.close();
  });

  // In-process, for a guest's connection.
  const d = new XenstoreDaemon();
  const [served, mine] = transportPair();
  d.connect(7, served);
  const closed = new Promise<void>((resolve) => mine.onClose(resolve));
  const header = new Uint8Array(16);
  new DataView(header.buffer).setUint32(12, 4097, true);
  mine.send(header);
  mine.send(new Uint8Array(4097));
  await closed;
  assert.equal(d.connectionCount, 0);
  const c = connectInProcess(d, 0);
  await c.write('/ok', 'still serving');
  c.close();
  await d.close();
});
