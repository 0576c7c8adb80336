// The xenbus handshake as a real guest would see it: the keys each side leaves in xenstore once
// Connected (protocol-notes §2.1: what Linux's blkback and blkfront write), read-only disks,
// close-and-reconnect on the same device, a stale ring-ref0, online resize, and a guest destroyed
// in the middle of its I/O.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { GuestDisk, GuestHandle } from '../src/sim-host/host.ts';
import { XenbusState } from '../src/xenbus/state.ts';
import type { HoldReport } from './fixtures/guest2/hold.ts';
import type { ReconnectResult } from './fixtures/guest2/reconnect.ts';
import type { ResizeResult } from './fixtures/guest2/resize.ts';
import { releasePath } from './fixtures/guest2/release.ts';
import { countBadSectors, VERIFY } from './helpers-guest.ts';

const HOLD = new URL('./fixtures/guest2/hold.js', import.meta.url);
const RECONNECT = new URL('./fixtures/guest2/reconnect.js', import.meta.url);
const RESIZE = new URL('./fixtures/guest2/resize.js', import.meta.url);
const BUSY = new URL('./fixtures/guest2/busy.js', import.meta.url);
const MiB = 1 << 20;
const XVDA = 51712;

function disk(target: string, readOnly = false): GuestDisk {
  return { target, vdev: 'xvda', readOnly, backendtype: 'phy' };
}

/** Starts a guest and resolves with its first report of type `type` (or rejects if it ends first). */
async function startReporting<T>(
  host: SimHost,
  name: string,
  target: string,
  workload: URL,
  params: unknown,
  type: string,
  options: { readOnly?: boolean; front?: { abi?: 'x86_64' | 'x86_32'; ringPageOrder?: number } } = {},
): Promise<{ guest: GuestHandle; report: Promise<T> }> {
  let got!: (m: T) => void;
  const report = new Promise<T>((resolve) => (got = resolve));
  const guest = await host.createGuest(
    { name, memoryMiB: 32, disks: [disk(target, options.readOnly ?? false)] },
    {
      workload,
      params,
      ...(options.front === undefined ? {} : { front: options.front }),
      onReport: (m) => {
        if ((m as { type?: string }).type === type) got(m as T);
      },
    },
  );
  const ended = guest.result.then(
    (r) => Promise.reject(new Error(`${name} finished before reporting '${type}': ${JSON.stringify(r)}`)),
    (err: unknown) => Promise.reject(err),
  );
  ended.catch(() => undefined);
  return { guest, report: Promise.race([report, ended]) };
}

async function release(host: SimHost, guest: GuestHandle): Promise<void> {
  await host.xs.write(releasePath(guest.domid), '1');
  await guest.result;
}

async function readDir(host: SimHost, path: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const key of await host.xs.directory(path)) {
    const value = await host.xs.tryRead(`${path}/${key}`);
    if (value !== undefined) out.set(key, value);
  }
  return out;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) assert.fail(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('after connect the backend and frontend keys are what Linux writes (§2.1)', async () => {
  const host = await SimHost.start();
  try {
    const ram = createRamDisk(32 * MiB);
    host.registerStore('keys', ram);
    const multi = await startReporting<HoldReport>(host, 'keys-multi', 'keys', HOLD, {}, 'ready');
    const r = await multi.report;
    assert.equal(r.checked, true, 'the guest wrote and read back through the ring');
    const be = await readDir(host, `/local/domain/0/backend/vbd/${multi.guest.domid}/${XVDA}`);
    const expected: Record<string, string> = {
      // toolstack's keys stay as libxl wrote them
      frontend: `/local/domain/${multi.guest.domid}/device/vbd/${XVDA}`,
      'frontend-id': String(multi.guest.domid),
      params: 'keys',
      mode: 'w',
      type: 'phy',
      online: '1',
      // blkback's
      'max-ring-page-order': '4',
      'feature-flush-cache': '1',
      'feature-barrier': '1',
      'feature-discard': '1',
      'discard-granularity': String(ram.info.discardGranularity),
      'discard-alignment': '0',
      'discard-secure': '0',
      sectors: String((32 * MiB) / 512),
      info: '0',
      'sector-size': '512',
      'physical-sector-size': String(ram.info.physicalBlockSize),
      state: String(XenbusState.Connected),
    };
    for (const [key, value] of Object.entries(expected)) assert.equal(be.get(key), value, `backend ${key}`);
    assert.ok(Number(be.get('discard-granularity')) % 512 === 0 && Number(be.get('discard-granularity')) > 0);

    const fe = await readDir(host, `/local/domain/${multi.guest.domid}/device/vbd/${XVDA}`);
    assert.equal(fe.get('state'), String(XenbusState.Connected));
    assert.equal(fe.get('protocol'), 'x86_64-abi');
    assert.equal(fe.get('ring-page-order'), '4');
    assert.match(fe.get('event-channel') ?? '', /^\d+$/);
    for (let i = 0; i < 16; i++) assert.match(fe.get(`ring-ref${i}`) ?? '', /^\d+$/, `ring-ref${i}`);
    assert.equal(fe.has('ring-ref'), false, 'a multi-page frontend writes ring-ref0..N, not ring-ref');
    assert.equal(new Set([...fe].filter(([k]) => k.startsWith('ring-ref')).map(([, v]) => v)).size, 16, 'ring refs are distinct');
    assert.equal(r.ringPages, 16);
    assert.equal(r.ringSize, 512);
    assert.equal(r.size, 32 * MiB);
    assert.equal(r.canDiscard, true);
    const vbd = host.blkback.vbds.get(`${multi.guest.domid}/${XVDA}`);
    assert.equal(vbd?.state, XenbusState.Connected);
    assert.equal(vbd?.ringPages, 16);

    // A single-page, 32-bit frontend on a 4 KiB-sector disk: ring-ref, and sectors still in 512-byte units.
    const ram4k = createRamDisk(16 * MiB, { logicalBlockSize: 4096 });
    host.registerStore('keys4k', ram4k);
    const single = await startReporting<HoldReport>(host, 'keys-single', 'keys4k', HOLD, {}, 'ready', { front: { abi: 'x86_32', ringPageOrder: 0 } });
    const r1 = await single.report;
    assert.equal(r1.checked, true);
    const be1 = await readDir(host, `/local/domain/0/backend/vbd/${single.guest.domid}/${XVDA}`);
    assert.equal(be1.get('sectors'), String((16 * MiB) / 512), 'sectors counts 512-byte units whatever the sector size');
    assert.equal(be1.get('sector-size'), '4096');
    assert.equal(be1.get('state'), '4');
    const fe1 = await readDir(host, `/local/domain/${single.guest.domid}/device/vbd/${XVDA}`);
    assert.equal(fe1.get('protocol'), 'x86_32-abi');
    assert.match(fe1.get('ring-ref') ?? '', /^\d+$/);
    assert.equal(fe1.has('ring-page-order'), false);
    assert.equal(fe1.has('ring-ref0'), false);
    assert.equal(fe1.get('state'), '4');
    assert.equal(r1.ringPages, 1);
    assert.equal(r1.size, 16 * MiB);

    await release(host, multi.guest);
    await release(host, single.guest);
  } finally {
    await host.stop();
  }
});

test('a read-only disk: info=4 (VDISK_READONLY), writes fail with EROFS, reads work', async () => {
  const host = await SimHost.start();
  try {
    host.registerStore('ro', createRamDisk(8 * MiB));
    const g = await startReporting<HoldReport>(host, 'ro', 'ro', HOLD, {}, 'ready', { readOnly: true });
    const r = await g.report;
    const be = await readDir(host, `/local/domain/0/backend/vbd/${g.guest.domid}/${XVDA}`);
    assert.equal(be.get('mode'), 'r');
    assert.equal(be.get('info'), '4');
    assert.equal(be.get('state'), '4');
    assert.equal(r.readOnly, true);
    assert.ok(r.writeError !== null, 'the write failed');
    assert.equal(r.writeError.code, 'BLK_ERR_READONLY');
    assert.equal(r.writeError.errno, 30, 'EROFS');
    assert.equal(host.blkback.vbds.get(`${g.guest.domid}/${XVDA}`)?.stats.wr_req, 0, 'no write reached the backend');
    await release(host, g.guest);
  } finally {
    await host.stop();
  }
});

test('close then reconnect on the same device: backend goes Closed, InitWait, Connected; data kept', async () => {
  const host = await SimHost.start();
  try {
    const ram = createRamDisk(8 * MiB);
    host.registerStore('re', ram);
    const states: string[] = [];
    const guest = await host.createGuest({ name: 're', memoryMiB: 32, disks: [disk('re')] }, { workload: RECONNECT, params: { seed: 31, length: 256 << 10 } });
    const statePath = `/local/domain/0/backend/vbd/${guest.domid}/${XVDA}/state`;
    await host.xs.watch(statePath, 'test-states', () => {
      void host.xs.tryRead(statePath).then((v) => {
        if (v !== undefined && states[states.length - 1] !== v) states.push(v);
      });
    });
    const r = (await guest.result) as ReconnectResult;
    await host.xs.unwatch(statePath, 'test-states');
    assert.equal(r.backendStateAfterClose, String(XenbusState.Closed), 'backend Closed after the frontend closed');
    assert.equal(r.frontendStateAfterClose, String(XenbusState.Closed));
    assert.equal(r.error, null, `reconnect failed: ${r.error}; backend states seen: ${states.join(' ')}`);
    assert.equal(r.mismatchesAfterReconnect, 0, 'data written before the close reads back after the reconnect');
    assert.equal(r.mismatchesAfterRewrite, 0);
    assert.equal(r.size, 8 * MiB);
    const closed = states.indexOf('6');
    assert.ok(closed >= 0, `backend went Closed (${states.join(' ')})`);
    const after = states.slice(closed + 1);
    assert.ok(after.indexOf('2') >= 0 && after.indexOf('4') > after.indexOf('2'), `then InitWait, then Connected (${states.join(' ')})`);
    assert.equal(await countBadSectors(ram, 0, 256 << 10, 31, 2), 0, 'the store holds what the second connection wrote');
  } finally {
    await host.stop();
  }
});

test('a stale ring-ref0 with no ring-page-order is ignored: only ring-ref is read', async () => {
  const host = await SimHost.start();
  try {
    host.registerStore('stale', createRamDisk(8 * MiB));
    const g = await startReporting<HoldReport>(host, 'stale', 'stale', HOLD, {}, 'ready', { front: { ringPageOrder: 0 } });
    const fe = `/local/domain/${g.guest.domid}/device/vbd/${XVDA}`;
    // Plant the leftover of an earlier multi-page frontend, atomically with checking that this
    // frontend has not published its ring yet (so the backend cannot have connected).
    const before = await host.xs.transaction(async (tx) => {
      const state = await host.xs.tryRead(`${fe}/state`, tx);
      const ref = await host.xs.tryRead(`${fe}/ring-ref`, tx);
      await host.xs.write(`${fe}/ring-ref0`, '4000', tx);
      return { state, ref };
    });
    assert.equal(before.state, String(XenbusState.Initialising), 'planted before the frontend went Initialised');
    assert.equal(before.ref, undefined);
    const r = await g.report;
    assert.equal(r.checked, true, 'I/O works over the ring named by ring-ref');
    assert.equal(r.ringPages, 1);
    assert.equal(await host.xs.tryRead(`${fe}/ring-ref0`), '4000', 'the stale key was there all along');
    assert.equal(await host.xs.tryRead(`${fe}/ring-page-order`), undefined);
    assert.equal(host.blkback.vbds.get(`${g.guest.domid}/${XVDA}`)?.ringPages, 1);
    await release(host, g.guest);
  } finally {
    await host.stop();
  }
});

test('online resize: the guest sees the new size and can write at the new end', async () => {
  const host = await SimHost.start();
  try {
    const ram = createRamDisk(16 * MiB);
    host.registerStore('grow', ram);
    const g = await startReporting<{ size: number }>(host, 'grow', 'grow', RESIZE, { seed: 41, maxWaitMs: 3000 }, 'ready');
    assert.equal((await g.report).size, 16 * MiB);
    const vbd = host.blkback.vbds.get(`${g.guest.domid}/${XVDA}`);
    assert.ok(vbd !== undefined);
    await vbd.resize(32 * MiB);
    const r = (await g.guest.result) as ResizeResult;
    assert.equal(r.oldSize, 16 * MiB);
    assert.equal(r.newSize, 32 * MiB, `the guest saw the new size (waited ${r.waitedMs.toFixed(0)} ms)`);
    assert.equal(r.writeError, null);
    assert.equal(r.mismatches, 0, 'the last 64 KiB of the grown disk read back as written');
    assert.equal(await countBadSectors(ram, 32 * MiB - (64 << 10), 64 << 10, 41, 3), 0, 'and the store holds it');
    assert.equal(await host.xs.tryRead(`/local/domain/0/backend/vbd/${g.guest.domid}/${XVDA}/sectors`), String((32 * MiB) / 512));
  } finally {
    await host.stop();
  }
});

test('resizing a store that cannot resize is refused, and the guest keeps its disk', async () => {
  const host = await SimHost.start();
  try {
    const ram = createRamDisk(8 * MiB);
    // The same RAM disk without its resize method: a store that cannot change size.
    const fixed: BlockDevice = {
      name: 'fixed',
      get info() {
        return ram.info;
      },
      readv: (o, iov) => ram.readv(o, iov),
      writev: (o, iov, f) => ram.writev(o, iov, f),
      flush: () => ram.flush(),
      discard: (o, n) => ram.discard(o, n),
      writeZeroes: (o, n) => ram.writeZeroes(o, n),
      close: () => ram.close(),
    };
    host.registerStore('fixed', fixed);
    const g = await startReporting<HoldReport>(host, 'fixed', 'fixed', HOLD, {}, 'ready');
    assert.equal((await g.report).checked, true);
    const vbd = host.blkback.vbds.get(`${g.guest.domid}/${XVDA}`);
    assert.ok(vbd !== undefined);
    await assert.rejects(vbd.resize(16 * MiB), (err: Error & { code?: string }) => err.code === 'BLK_ERR_UNSUPPORTED', 'the caller learns the resize failed');
    const be = `/local/domain/0/backend/vbd/${g.guest.domid}/${XVDA}`;
    assert.equal(await host.xs.tryRead(`${be}/state`), '4', 'a refused resize does not tear the device down');
    assert.equal(await host.xs.tryRead(`${be}/sectors`), String((8 * MiB) / 512));
    await release(host, g.guest);
  } finally {
    await host.stop();
  }
});

test('a guest destroyed mid-I/O leaves blkback healthy: vbd removed, a new guest works', async () => {
  const host = await SimHost.start();
  try {
    host.registerStore('doomed', createRamDisk(16 * MiB));
    const g = await startReporting<{ done: number }>(host, 'doomed', 'doomed', BUSY, { iodepth: 32, reportAfter: 200, seed: 5, maxMs: 8000 }, 'busy');
    await g.report;
    const key = `${g.guest.domid}/${XVDA}`;
    assert.ok((host.blkback.vbds.get(key)?.stats.wr_req ?? 0) > 0, 'the guest was doing I/O');
    await host.destroyGuest(g.guest.domid);
    await assert.rejects(g.guest.result, /domain/);
    await until('blkback dropped the vbd', () => !host.blkback.vbds.has(key));
    assert.equal(await host.xs.tryRead(`/local/domain/0/backend/vbd/${g.guest.domid}`), undefined);
    await until('the in-flight budget is back to zero', () => host.blkback.budget.used === 0);

    const next = await host.createGuest(
      { name: 'after', memoryMiB: 32, disks: [disk('doomed')] },
      { workload: VERIFY, params: { operations: 400, iodepth: 16, seed: 6 } },
    );
    const r = (await next.result) as { mismatches: number; writes: number; reads: number };
    assert.equal(r.mismatches, 0);
    assert.ok(r.writes > 0 && r.reads > 0);
  } finally {
    await host.stop();
  }
});
