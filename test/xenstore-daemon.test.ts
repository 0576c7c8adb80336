import assert from 'node:assert/strict';
import test from 'node:test';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { XsClient, connectInProcess } from '../src/xenstore/client.ts';
import { XenstoreError } from '../src/xenstore/errors.ts';
import { XsType } from '../src/xenstore/constants.ts';
import { XsDecoder, encodeMessage, nulStrings, splitNul } from '../src/xenstore/codec.ts';
import type { XsMessage } from '../src/xenstore/codec.ts';
import { transportPair } from '../src/xenstore/transport.ts';
import { BlockError } from '../src/internal/errors.ts';

async function rejectsWith(p: Promise<unknown>, code: string, messagePart?: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof XenstoreError, `expected XenstoreError, got ${String(err)}`);
    assert.ok(err instanceof BlockError);
    assert.equal(err.code, code);
    if (messagePart !== undefined) assert.ok(err.message.includes(messagePart), err.message);
    return true;
  });
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** dom0 prepares /local/domain/<id> owned by the domain, as a toolstack does. */
async function giveDomainDir(dom0: XsClient, domid: number): Promise<void> {
  await dom0.mkdir(`/local/domain/${domid}`);
  await dom0.setPerms(`/local/domain/${domid}`, [{ domid, perm: 'n' }]);
}

test('read, write (creating parents), mkdir, directory, rm (recursive)', async () => {
  const d = new XenstoreDaemon();
  const c = connectInProcess(d, 0);
  await c.write('/a/b/c', 'hello');
  assert.equal(await c.read('/a/b/c'), 'hello');
  assert.equal(await c.read('/a/b'), '', 'parents are created with empty values');
  await c.mkdir('/a/b/d');
  await c.mkdir('/a/b/c'); // existing: value untouched
  assert.equal(await c.read('/a/b/c'), 'hello');
  assert.deepEqual(await c.directory('/a/b'), ['c', 'd']);
  assert.deepEqual(await c.directory('/'), ['a']);
  await rejectsWith(c.read('/nope'), 'ENOENT', 'read /nope');
  assert.equal(await c.tryRead('/nope'), undefined);
  await c.rm('/a/b');
  await rejectsWith(c.read('/a/b/c'), 'ENOENT');
  assert.deepEqual(await c.directory('/a'), []);
  await c.rm('/a/missing'); // parent exists: not an error
  await rejectsWith(c.rm('/x/y'), 'ENOENT', 'rm /x/y');
  await rejectsWith(c.rm('/'), 'EINVAL');
  await rejectsWith(c.write('/bad//path', 'x'), 'EINVAL');
  await rejectsWith(c.write('/trailing/', 'x'), 'EINVAL');
  await rejectsWith(c.write('/sp ace', 'x'), 'EINVAL');
  c.close();
  await d.close();
});

test('relative paths are below /local/domain/<domid>; get_domain_path', async () => {
  const d = new XenstoreDaemon();
  const dom0 = connectInProcess(d, 0);
  await giveDomainDir(dom0, 3);
  const g = connectInProcess(d, 3);
  await g.write('device/vbd/51712/state', '1');
  assert.equal(await dom0.read('/local/domain/3/device/vbd/51712/state'), '1');
  const path = await g.request(XsType.XS_GET_DOMAIN_PATH, nulStrings('3'));
  assert.deepEqual(splitNul(path), ['/local/domain/3']);
  g.close();
  dom0.close();
});

test('perms: owner, default entry, per-domain entries, EACCES, inheritance, owner change only by dom0', async () => {
  const d = new XenstoreDaemon();
  const dom0 = connectInProcess(d, 0);
  const g5 = connectInProcess(d, 5);
  const g6 = connectInProcess(d, 6);
  await dom0.write('/secret', 's');
  assert.deepEqual(await dom0.getPerms('/secret'), [{ domid: 0, perm: 'n' }]);
  await rejectsWith(g5.read('/secret'), 'EACCES', 'read /secret');
  await rejectsWith(g5.write('/secret', 'x'), 'EACCES');
  // A domain that cannot read the parent may not learn whether the child exists.
  await rejectsWith(g5.read('/secret/missing'), 'EACCES');

  await dom0.write('/shared', 'v');
  await dom0.setPerms('/shared', [
    { domid: 0, perm: 'r' },
    { domid: 6, perm: 'b' },
    { domid: 5, perm: 'n' },
  ]);
  await rejectsWith(g5.read('/shared'), 'EACCES');
  assert.equal(await g6.read('/shared'), 'v');
  await g6.write('/shared', 'w6');
  const g7 = connectInProcess(d, 7);
  assert.equal(await g7.read('/shared'), 'w6', 'default (first entry) perm is r');
  await rejectsWith(g7.write('/shared', 'x'), 'EACCES');
  await rejectsWith(g7.read('/shared/missing'), 'ENOENT'); // readable parent: simply missing

  // A node created by an unprivileged domain inherits the parent's perms with itself as owner.
  await g6.write('/shared/child', 'c');
  assert.deepEqual(await dom0.getPerms('/shared/child'), [
    { domid: 6, perm: 'r' },
    { domid: 6, perm: 'b' },
    { domid: 5, perm: 'n' },
  ]);
  // A node created by dom0 inherits the parent's perms unchanged.
  await dom0.write('/shared/by0', 'x');
  assert.deepEqual((await dom0.getPerms('/shared/by0'))[0], { domid: 0, perm: 'r' });

  // Owners may set perms but not give the node away; others may not set perms.
  await g6.setPerms('/shared/child', [
    { domid: 6, perm: 'n' },
    { domid: 7, perm: 'r' },
  ]);
  assert.equal(await g7.read('/shared/child'), 'c');
  await rejectsWith(g6.setPerms('/shared/child', [{ domid: 7, perm: 'n' }]), 'EPERM');
  await rejectsWith(g7.setPerms('/shared/child', [{ domid: 7, perm: 'n' }]), 'EACCES');
  await rejectsWith(g5.directory('/'), 'EACCES');
  for (const c of [dom0, g5, g6, g7]) c.close();
});

test('introduce and release only by dom0; is_domain_introduced', async () => {
  const d = new XenstoreDaemon();
  const dom0 = connectInProcess(d, 0);
  const g = connectInProcess(d, 4);
  await rejectsWith(g.request(XsType.XS_INTRODUCE, nulStrings('9', '1234', '5')), 'EACCES');
  const events: string[] = [];
  await dom0.watch('@introduceDomain', 'intro', (p) => events.push(p));
  await dom0.watch('@releaseDomain', 'rel', (p) => events.push(p));
  await dom0.request(XsType.XS_INTRODUCE, nulStrings('4', '1234', '5'));
  assert.deepEqual(splitNul(await dom0.request(XsType.XS_IS_DOMAIN_INTRODUCED, nulStrings('4'))), ['T']);
  assert.deepEqual(splitNul(await dom0.request(XsType.XS_IS_DOMAIN_INTRODUCED, nulStrings('8'))), ['F']);
  await rejectsWith(g.request(XsType.XS_RELEASE, nulStrings('4')), 'EACCES');
  await dom0.request(XsType.XS_RELEASE, nulStrings('4'));
  await tick();
  assert.deepEqual(events, ['@introduceDomain', '@releaseDomain', '@introduceDomain', '@releaseDomain']);
  assert.equal(g.closed, true, 'release drops the domain connection');
  await rejectsWith(dom0.request(XsType.XS_RELEASE, nulStrings('4')), 'ENOENT');
  dom0.close();
});

test('quotas: nodes per domain, watches, transactions (EQUOTA); dom0 is exempt', async () => {
  const d = new XenstoreDaemon({ quotaNodes: 5, quotaWatches: 2, quotaTransactions: 1 });
  const dom0 = connectInProcess(d, 0);
  await giveDomainDir(dom0, 5); // that node counts for domain 5: 1 of 5
  const g = connectInProcess(d, 5);
  await g.write('a/b/c', 'x'); // 3 more: 4
  await rejectsWith(g.write('d/e', 'x'), 'EQUOTA', 'write d/e');
  await g.write('d', 'x'); // 5
  await rejectsWith(g.mkdir('f'), 'EQUOTA');
  await g.write('d', 'rewrite is not a new node');
  await g.rm('a'); // frees 3
  await g.write('x/y/z', '1');
  for (let i = 0; i < 20; i++) await dom0.write(`/many/${i}`, 'x');

  await g.watch('/local/domain/5', 't1', () => {});
  await g.watch('/local/domain/5', 't2', () => {});
  await rejectsWith(
    g.watch('/local/domain/5', 't3', () => {}),
    'EQUOTA',
  );
  await g.unwatch('/local/domain/5', 't1');
  await g.watch('/local/domain/5', 't3', () => {});

  const tx = await g.transactionStart();
  await rejectsWith(g.transactionStart(), 'EQUOTA');
  await g.transactionEnd(tx, false);
  await g.transactionEnd(await g.transactionStart(), false);

  const big = 'v'.repeat(3000);
  await rejectsWith(g.write('x/big', big), 'EQUOTA');
  await dom0.write('/big', big);
  assert.equal((await dom0.read('/big')).length, 3000);
  g.close();
  dom0.close();
});

test('watches: initial event, changes at and below the path, parent removal, relative paths, unwatch', async () => {
  const d = new XenstoreDaemon();
  const dom0 = connectInProcess(d, 0);
  const events: string[] = [];
  await dom0.watch('/w/x', 'tok', (p, t) => events.push(`${t}:${p}`));
  assert.deepEqual(events, ['tok:/w/x'], 'initial event on registration');
  await dom0.write('/w/x', '1');
  await dom0.write('/w/x/y/z', '2');
  await dom0.write('/w/other', '3'); // sibling: no event
  await dom0.write('/w', 'parent value'); // parent written: no event
  await dom0.setPerms('/w/x', [{ domid: 0, perm: 'r' }]);
  await dom0.rm('/w'); // parent removed: event names the watched path
  await tick();
  assert.deepEqual(events, ['tok:/w/x', 'tok:/w/x', 'tok:/w/x/y/z', 'tok:/w/x', 'tok:/w/x']);

  await rejectsWith(
    dom0.watch('/w/x', 'tok', () => {}),
    'EEXIST',
  );
  await dom0.unwatch('/w/x', 'tok');
  await dom0.write('/w/x', 'after');
  await tick();
  assert.equal(events.length, 5);
  await rejectsWith(dom0.unwatch('/w/x', 'tok'), 'ENOENT');

  // Relative watch from a guest: events come back relative; unreadable changes are not reported.
  await giveDomainDir(dom0, 2);
  const g = connectInProcess(d, 2);
  const gev: string[] = [];
  await g.watch('device', 'dev', (p) => gev.push(p));
  await dom0.write('/local/domain/2/device/vbd/1/state', '1');
  await dom0.write('/local/domain/2/device/hidden', 'h');
  await dom0.setPerms('/local/domain/2/device/hidden', [{ domid: 0, perm: 'n' }]);
  await dom0.write('/local/domain/2/device/hidden', 'h2');
  await tick();
  assert.deepEqual(gev, ['device', 'device/vbd/1/state', 'device/hidden']);
  g.close();
  dom0.close();
});

test('watch events from another connection reach the watcher', async () => {
  const d = new XenstoreDaemon();
  const a = connectInProcess(d, 0);
  const b = connectInProcess(d, 0);
  const seen: string[] = [];
  await a.watch('/backend', 'be', (p) => seen.push(p));
  await b.write('/backend/vbd/3/51712/state', '2');
  await b.rm('/backend/vbd/3');
  await tick();
  assert.deepEqual(seen, ['/backend', '/backend/vbd/3/51712/state', '/backend/vbd/3']);
  a.close();
  b.close();
});

test('transactions: own writes visible inside, invisible outside until commit, abort discards', async () => {
  const d = new XenstoreDaemon();
  const c = connectInProcess(d, 0);
  const other = connectInProcess(d, 0);
  const seen: string[] = [];
  await other.watch('/t', 'tt', (p) => seen.push(p));
  const tx = await c.transactionStart();
  await c.write('/t/a', '1', tx);
  assert.equal(await c.read('/t/a', tx), '1');
  assert.deepEqual(await c.directory('/t', tx), ['a']);
  assert.equal(await other.tryRead('/t/a'), undefined);
  await tick();
  assert.deepEqual(seen, ['/t'], 'no event before commit');
  await c.transactionEnd(tx, true);
  assert.equal(await other.read('/t/a'), '1');
  await tick();
  assert.deepEqual(seen, ['/t', '/t/a']);

  const tx2 = await c.transactionStart();
  await c.write('/t/b', '2', tx2);
  await c.rm('/t/a', tx2);
  await c.transactionEnd(tx2, false);
  assert.equal(await other.read('/t/a'), '1');
  assert.equal(await other.tryRead('/t/b'), undefined);
  await rejectsWith(c.transactionEnd(tx2, true), 'ENOENT');
  await rejectsWith(c.read('/t/a', 999), 'ENOENT');
  c.close();
  other.close();
});

test('transactions: a conflicting change makes commit fail with EAGAIN; transaction() retries and succeeds', async () => {
  const d = new XenstoreDaemon();
  const c = connectInProcess(d, 0);
  const other = connectInProcess(d, 0);
  await c.write('/cnt', '0');

  const tx = await c.transactionStart();
  const v = Number(await c.read('/cnt', tx));
  await other.write('/cnt', '10'); // someone else changes what tx read
  await c.write('/cnt', String(v + 1), tx);
  await rejectsWith(c.transactionEnd(tx, true), 'EAGAIN', 'transaction_end');
  assert.equal(await c.read('/cnt'), '10', 'the failed commit changed nothing');

  // Unrelated changes do not conflict.
  const tx2 = await c.transactionStart();
  await c.write('/cnt', String(Number(await c.read('/cnt', tx2)) + 1), tx2);
  await other.write('/unrelated', 'x');
  await c.transactionEnd(tx2, true);
  assert.equal(await c.read('/cnt'), '11');

  // A node created meanwhile by another counts as a change to what the tx saw (absent).
  const tx3 = await c.transactionStart();
  assert.equal(await c.tryRead('/fresh', tx3), undefined);
  await other.write('/fresh', 'x');
  await c.write('/fresh', 'mine', tx3);
  await rejectsWith(c.transactionEnd(tx3, true), 'EAGAIN');

  let attempts = 0;
  const result = await c.transaction(async (t) => {
    attempts++;
    const n = Number(await c.read('/cnt', t));
    if (attempts === 1) await other.write('/cnt', '100'); // forces one EAGAIN
    await c.write('/cnt', String(n + 1), t);
    return n + 1;
  });
  assert.equal(attempts, 2);
  assert.equal(result, 101);
  assert.equal(await c.read('/cnt'), '101');

  // Bounded: a transaction that always conflicts gives up with EAGAIN.
  const bounded = new XsClient(
    (() => {
      const [served, mine] = transportPair();
      d.connect(0, served);
      return mine;
    })(),
    0,
    { maxTransactionAttempts: 3 },
  );
  let tries = 0;
  await rejectsWith(
    bounded.transaction(async (t) => {
      tries++;
      await bounded.read('/cnt', t);
      await other.write('/cnt', String(tries));
      await bounded.write('/cnt', 'never', t);
    }),
    'EAGAIN',
  );
  assert.equal(tries, 3);
  // An exception inside fn aborts the transaction and propagates.
  await assert.rejects(
    c.transaction(async (t) => {
      await c.write('/aborted', 'x', t);
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(await c.tryRead('/aborted'), undefined);
  for (const x of [c, other, bounded]) x.close();
});

/** A raw connection for wire-level checks. */
function rawConnection(d: XenstoreDaemon, domid: number): { send(b: Uint8Array): void; next(): Promise<XsMessage>; closed: Promise<void> } {
  const [served, mine] = transportPair();
  d.connect(domid, served);
  const closed = new Promise<void>((resolve) => mine.onClose(resolve));
  const queue: XsMessage[] = [];
  const waiters: ((m: XsMessage) => void)[] = [];
  const dec = new XsDecoder({
    onMessage: (m) => {
      const w = waiters.shift();
      if (w) w(m);
      else queue.push(m);
    },
    onOversize: () => assert.fail('daemon sent an oversize message'),
  });
  mine.onData((b) => dec.push(b));
  return {
    closed,
    send: (b) => mine.send(b),
    next: () =>
      new Promise((resolve) => {
        const m = queue.shift();
        if (m) resolve(m);
        else waiters.push(resolve);
      }),
  };
}

test('wire: a header announcing more than XENSTORE_PAYLOAD_MAX drops the connection, as C xenstored does', async () => {
  const d = new XenstoreDaemon();
  const dropped = rawConnection(d, 0);
  const body = new Uint8Array(5000).fill(0x61);
  body.set(Buffer.from('/big\0'), 0);
  const msg = new Uint8Array(16 + 5000);
  const dv = new DataView(msg.buffer);
  dv.setUint32(0, XsType.XS_WRITE, true);
  dv.setUint32(4, 77, true);
  dv.setUint32(12, 5000, true);
  msg.set(body, 16);
  dropped.send(encodeMessage(XsType.XS_WRITE, 76, 0, Buffer.from('/before\0v')));
  dropped.send(msg.slice(0, 1000));
  dropped.send(msg.slice(1000));
  const before = await dropped.next();
  assert.deepEqual([before.type, before.reqId], [XsType.XS_WRITE, 76], 'requests before the bad header are answered');
  await dropped.closed;
  assert.equal(d.connectionCount, 0);

  // Other connections are untouched; an unknown type is an error answer, not a drop.
  const raw = rawConnection(d, 0);
  raw.send(encodeMessage(XsType.XS_READ, 78, 0, nulStrings('/big')));
  const r = await raw.next();
  assert.deepEqual([r.type, r.reqId, splitNul(r.payload)], [XsType.XS_ERROR, 78, ['ENOENT']]);
  // Unknown type and a reply with the request's tx_id echoed.
  raw.send(encodeMessage(99, 79, 0, nulStrings('')));
  const u = await raw.next();
  assert.deepEqual([u.type, u.reqId, splitNul(u.payload)], [XsType.XS_ERROR, 79, ['EINVAL']]);
  raw.send(encodeMessage(XsType.XS_TRANSACTION_START, 80, 0, nulStrings('')));
  const ts = await raw.next();
  const txid = Number(splitNul(ts.payload)[0]);
  raw.send(encodeMessage(XsType.XS_WRITE, 81, txid, Buffer.from('/x\0v')));
  const w = await raw.next();
  assert.deepEqual([w.type, w.reqId, w.txId, splitNul(w.payload)], [XsType.XS_WRITE, 81, txid, ['OK']]);
  // The client refuses to send an oversize request at all.
  const c = connectInProcess(d, 0);
  await rejectsWith(c.write('/huge', 'x'.repeat(5000)), 'E2BIG', 'write /huge');
  c.close();
});

test('directory longer than one payload: DIRECTORY answers E2BIG, the client falls back to DIRECTORY_PART', async () => {
  const d = new XenstoreDaemon();
  const c = connectInProcess(d, 0);
  const names: string[] = [];
  for (let i = 0; i < 400; i++) names.push(`entry-number-${String(i).padStart(4, '0')}`);
  await c.transaction(async (tx) => {
    for (const n of names) await c.mkdir(`/big/${n}`, tx);
  });
  await rejectsWith(c.request(XsType.XS_DIRECTORY, nulStrings('/big')), 'E2BIG');
  assert.deepEqual(await c.directory('/big'), names);
  c.close();
});

test('a closed connection rejects pending and later requests and drops its watches', async () => {
  const d = new XenstoreDaemon();
  const c = connectInProcess(d, 0);
  await c.watch('/z', 'z', () => {});
  assert.equal(d.connectionCount, 1);
  c.close();
  await rejectsWith(c.read('/z'), 'EIO', 'connection closed');
  await tick();
  assert.equal(d.connectionCount, 0);
});

test('garbage on the wire never throws out of the daemon; every request gets exactly one answer', async () => {
  for (const domid of [0, 7]) await garbage(domid);
});

async function garbage(domid: number): Promise<void> {
  const d = new XenstoreDaemon();
  const raw = rawConnection(d, domid);
  let seed = 12345 + domid;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  const words = ['/a', 'b', '', '@introduceDomain', 'r5', 'n0', 'T', 'F', '1', '/local/domain/7/x', '//', 'x'.repeat(40)];
  const N = 300;
  for (let i = 0; i < N; i++) {
    const type = rnd(24);
    const parts: string[] = [];
    for (let k = rnd(4); k > 0; k--) parts.push(words[rnd(words.length)] as string);
    raw.send(encodeMessage(type === XsType.XS_WATCH_EVENT ? XsType.XS_READ : type, 1000 + i, rnd(3), Buffer.from(parts.join('\0'))));
  }
  const answered = new Set<number>();
  while (answered.size < N) {
    const m = await raw.next();
    if (m.type === XsType.XS_WATCH_EVENT) continue;
    assert.ok(!answered.has(m.reqId), `two answers to ${m.reqId}`);
    assert.ok(m.reqId >= 1000 && m.reqId < 1000 + N);
    if (m.type === XsType.XS_ERROR) assert.notEqual(splitNul(m.payload)[0], 'EIO', `internal error answering ${m.reqId}`);
    answered.add(m.reqId);
  }
}
