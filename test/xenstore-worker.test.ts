// A guest worker thread talks to the daemon over a MessagePort served for its domid.

import assert from 'node:assert/strict';
import test from 'node:test';
import { Worker } from 'node:worker_threads';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { connectInProcess } from '../src/xenstore/client.ts';

// The worker body: plain JS run with eval, importing the compiled client by URL.
const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
import(workerData.clientUrl).then(async ({ clientFromPort }) => {
  const xs = clientFromPort(workerData.port, workerData.domid);
  const outcome = async (fn) => { try { return { ok: await fn() }; } catch (e) { return { code: e.code, name: e.name, message: e.message }; } };
  const report = {};
  report.secret = await outcome(() => xs.read('/secret'));
  report.beforeGrant = await outcome(() => xs.write('data/x', 'early'));
  parentPort.postMessage({ phase: 'ready', report });
  parentPort.once('message', async () => {
    const after = {};
    after.write = await outcome(() => xs.write('data/x', 'from-worker'));
    after.read = await outcome(() => xs.read('/local/domain/5/data/x'));
    after.perms = await outcome(() => xs.getPerms('data/x'));
    after.events = [];
    await xs.watch('data', 'w', (p) => after.events.push(p));
    await xs.write('data/y', '2');
    after.other = await outcome(() => xs.write('/local/domain/6/x', 'no'));
    xs.close();
    parentPort.postMessage({ phase: 'done', after });
  });
});
`;

test('worker for domid 5: denied a dom0 n0 node, may write under /local/domain/5 once it owns it', async () => {
  const daemon = new XenstoreDaemon();
  const dom0 = connectInProcess(daemon, 0);
  await dom0.write('/secret', 'dom0 only');
  await dom0.setPerms('/secret', [{ domid: 0, perm: 'n' }]);
  await dom0.mkdir('/local/domain/5');
  await dom0.mkdir('/local/domain/6');

  const port = daemon.createPort(5);
  const clientUrl = new URL('../src/xenstore/client.js', import.meta.url).href;
  const worker = new Worker(WORKER, { eval: true, workerData: { port, domid: 5, clientUrl }, transferList: [port] });
  const messages: { phase: string; report?: Record<string, unknown>; after?: Record<string, unknown> }[] = [];
  const waiters: (() => void)[] = [];
  worker.on('message', (m: (typeof messages)[number]) => {
    messages.push(m);
    waiters.shift()?.();
  });
  const next = (): Promise<(typeof messages)[number]> =>
    new Promise((resolve, reject) => {
      const failed = (e: Error): void => reject(e);
      worker.once('error', failed);
      const take = (): void => {
        worker.off('error', failed);
        resolve(messages.shift() as (typeof messages)[number]);
      };
      if (messages.length > 0) take();
      else waiters.push(take);
    });
  try {
    const ready = await next();
    assert.equal(ready.phase, 'ready');
    assert.deepEqual(
      { code: (ready.report?.secret as { code: string }).code, name: (ready.report?.secret as { name: string }).name },
      { code: 'EACCES', name: 'XenstoreError' },
    );
    assert.match((ready.report?.secret as { message: string }).message, /read \/secret/);
    assert.equal((ready.report?.beforeGrant as { code: string }).code, 'EACCES', 'dom0 still owns /local/domain/5');

    await dom0.setPerms('/local/domain/5', [{ domid: 5, perm: 'n' }]);
    worker.postMessage('go');
    const done = await next();
    const after = done.after as Record<string, unknown>;
    assert.deepEqual(after.write, { ok: undefined });
    assert.deepEqual(after.read, { ok: 'from-worker' });
    assert.deepEqual(after.perms, { ok: [{ domid: 5, perm: 'n' }] }, 'the new node is owned by its creator');
    assert.deepEqual(after.events, ['data', 'data/y']);
    assert.equal((after.other as { code: string }).code, 'EACCES');
    assert.equal(await dom0.read('/local/domain/5/data/x'), 'from-worker');
    assert.equal(await dom0.read('/local/domain/5/data/y'), '2');
    // The worker closed its client: the daemon forgets that connection (and its watch).
    for (let i = 0; i < 50 && daemon.connectionCount > 1; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(daemon.connectionCount, 1);
  } finally {
    await worker.terminate();
    dom0.close();
    await daemon.close();
  }
});
