// The real-Xen BackendHypervisor (src/hypervisor/xen) without Xen: the adapters against
// FakeXenDevices; the koffi layer on this host (no /dev/xen: a helpful XenUnavailableError); the
// grant-copy segment layout against a C program built with Xen's header; and the koffi binding end
// to end over stand-in libxengnttab/libxenevtchn libraries built here with the real prototypes.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import koffi from 'koffi';
import { EventChannelError, GrantError } from '../src/hypervisor/errors.ts';
import { GNTST, PAGE_SIZE } from '../src/hypervisor/types.ts';
import type { EventChannel, GrantCopyOp } from '../src/hypervisor/types.ts';
import { XenBackendEvents } from '../src/hypervisor/xen/backend-events.ts';
import { XenBackendGrants } from '../src/hypervisor/xen/backend-grants.ts';
import { FakeXenDevices } from './support/fake-xen-devices.ts';
import type { FakeForeignDomain } from './support/fake-xen-devices.ts';
import { openXenHypervisor, xenAvailable, XenUnavailableError } from '../src/hypervisor/xen/index.ts';
import { PACKED_SEGMENT_LAYOUT, koffiNativeMemory, koffiSegmentLayout, openKoffiDevices } from '../src/hypervisor/xen/koffi-devices.ts';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { compileAndReadValues, gccMissing } from './helpers-c.ts';
import { skipOnThisHost, stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';

const GUEST = 7;

async function until(check: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

/** Lets queued reports and setImmediate deliveries run. */
async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

function fill(page: Uint8Array, seed: number): void {
  for (let i = 0; i < page.length; i++) page[i] = (seed * 31 + i * 7) & 0xff;
}

function expectGrantError(fn: () => unknown, ref: number, domid: number, status: number, text: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof GrantError, `expected GrantError, got ${String(error)}`);
    assert.equal(error.ref, ref);
    assert.equal(error.domid, domid);
    assert.equal(error.status, status);
    assert.match(error.message, text);
    return true;
  });
}

/** What the C fixtures need and this machine lacks: gcc and Xen's headers (libxen-dev). */
function xenCcMissing(): Missing | undefined {
  const missing = gccMissing();
  if (missing !== undefined) return missing;
  for (const h of ['/usr/include/xengnttab.h', '/usr/include/xenevtchn.h'])
    if (!fs.existsSync(h)) return { what: `${h} absent`, install: 'apt-get install libxen-dev' };
  return undefined;
}

function findFixture(name: string): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const rel = join('test', 'fixtures', 'xen-ffi', name);
  return [resolve(here, 'fixtures/xen-ffi', name), resolve(here, '../..', rel), resolve(process.cwd(), rel)].find((p) => fs.existsSync(p));
}

// ------------------------------------------------------------------------------------ grants

describe('XenBackendGrants over fake devices', () => {
  let devices: FakeXenDevices;
  let guest: FakeForeignDomain;
  let grants: XenBackendGrants;

  before(() => {
    devices = new FakeXenDevices(0);
    guest = devices.addDomain(GUEST, 16);
    for (let frame = 0; frame < 16; frame++) fill(guest.page(frame), frame);
    for (let ref = 0; ref < 8; ref++) guest.grant(ref, ref); // refs 0..7 writable, frame = ref
    guest.grant(8, 8, true); // read-only
    guest.grant(9, 9, false, 3); // granted to another domain
    grants = new XenBackendGrants(devices);
  });

  test('maps refs as PAGE_SIZE views of the granted pages; writes reach the guest; unmap is idempotent', () => {
    const mapping = grants.map(GUEST, [3, 1, 6], 3, true);
    assert.equal(mapping.pages.length, 3);
    for (const [i, frame] of [3, 1, 6].entries()) {
      assert.equal(mapping.pages[i]!.length, PAGE_SIZE);
      assert.deepEqual(mapping.pages[i], guest.page(frame));
    }
    const first = mapping.pages[0]!;
    first.fill(0xab, 100, 200);
    assert.equal(devices.mappedRuns, 1);
    mapping.unmap();
    mapping.unmap();
    assert.equal(devices.mappedRuns, 0);
    assert.equal(devices.calls.get('unmap'), 1);
    assert.equal(mapping.pages.length, 0, 'no views are handed out after unmap');
    assert.equal(first.length, 0, 'the old view is detached, not left over freed memory');
    assert.equal(guest.page(3)[150], 0xab);
    assert.equal(guest.page(3)[99], (3 * 31 + 99 * 7) & 0xff);
  });

  test('a read-only mapping of a read-only grant works; writes through it never reach the guest', () => {
    const before = guest.page(8).slice();
    const mapping = grants.map(GUEST, [8], 1, false);
    assert.deepEqual(mapping.pages[0], before);
    mapping.pages[0]!.fill(0xff, 0, 1); // on real Xen this page is PROT_READ and the write would kill the process
    mapping.unmap();
    assert.deepEqual(guest.page(8), before);
    assert.equal(devices.readOnlyWrites, 1);
  });

  test('all or nothing: a bad ref anywhere in the list fails the map, names the ref, and leaves nothing mapped', () => {
    expectGrantError(
      () => grants.map(GUEST, [0, 1, 12, 2], 4, true),
      12,
      GUEST,
      GNTST.general_error,
      /grant ref 12 of domain 7: gntdev refused to map it writable \(EINVAL\)/,
    );
    assert.equal(devices.mappedRuns, 0);
    expectGrantError(() => grants.map(GUEST, [0, 8], 2, true), 8, GUEST, GNTST.general_error, /ref 8 .*writable/);
    expectGrantError(() => grants.map(GUEST, [9], 1, false), 9, GUEST, GNTST.general_error, /read-only/);
    assert.equal(devices.mappedRuns, 0);
    const readOnly = grants.map(GUEST, [8], 1, false);
    assert.equal(readOnly.pages.length, 1, 'the read-only ref maps read-only');
    readOnly.unmap();
  });

  test('refs and domids that are not numbers Xen takes are refused before any device call', () => {
    const calls = devices.calls.get('mapDomainGrantRefs') ?? 0;
    expectGrantError(() => grants.map(GUEST, [1, -1], 2, true), -1, GUEST, GNTST.bad_gntref, /not a grant reference/);
    expectGrantError(() => grants.map(GUEST, [1.5], 1, true), 1.5, GUEST, GNTST.bad_gntref, /not a grant reference/);
    expectGrantError(() => grants.map(0x7ff0, [1], 1, true), 1, 0x7ff0, GNTST.bad_domain, /not a domid/);
    expectGrantError(() => grants.map(GUEST, [1], 2, true), -1, GUEST, GNTST.general_error, /map of 2 refs from a list of 1/);
    assert.equal(grants.map(GUEST, [], 0, true).pages.length, 0);
    assert.equal(devices.calls.get('mapDomainGrantRefs') ?? 0, calls);
  });

  test('allocBuffer returns zeroed memory of the size asked for and refuses bad sizes', () => {
    const buffer = grants.allocBuffer(5000);
    assert.equal(buffer.length, 5000);
    assert.equal(buffer.byteOffset, 0);
    assert.ok(buffer.every((b) => b === 0));
    assert.throws(() => grants.allocBuffer(0), RangeError);
    assert.throws(() => grants.allocBuffer(1.5), RangeError);
  });

  test('copy moves bytes both ways between allocBuffer memory and granted pages, in one device call', () => {
    const buffer = grants.allocBuffer(3 * PAGE_SIZE);
    assert.equal(buffer.length, 3 * PAGE_SIZE);
    fill(buffer, 99);
    const before = devices.calls.get('grantCopy') ?? 0;
    const ops: GrantCopyOp[] = [
      { source: { ref: 2, domid: GUEST, offset: 512 }, dest: { buffer: buffer.subarray(PAGE_SIZE + 100) }, length: 1024 },
      { source: { buffer: buffer.subarray(10) }, dest: { ref: 4, domid: GUEST, offset: 0 }, length: PAGE_SIZE },
      { source: { ref: 5, domid: GUEST, offset: 0 }, dest: { ref: 6, domid: GUEST, offset: 2048 }, length: 2048 },
      { source: { buffer: buffer.subarray(0, 64) }, dest: { buffer: buffer.subarray(2 * PAGE_SIZE) }, length: 64 },
    ];
    const expected5 = guest.page(5).slice(0, 2048);
    const expected2 = guest.page(2).slice(512, 1536);
    const expectedBuf = buffer.slice(10, 10 + PAGE_SIZE);
    assert.deepEqual(grants.copy(ops), [GNTST.okay, GNTST.okay, GNTST.okay, GNTST.okay]);
    assert.equal(devices.calls.get('grantCopy'), before + 1, 'one batch, one call');
    assert.deepEqual(buffer.subarray(PAGE_SIZE + 100, PAGE_SIZE + 1124), expected2);
    assert.deepEqual(guest.page(4), expectedBuf);
    assert.deepEqual(guest.page(6).subarray(2048), expected5);
    assert.deepEqual(buffer.subarray(2 * PAGE_SIZE, 2 * PAGE_SIZE + 64), buffer.subarray(0, 64));
  });

  test('copy reports a status per op; bad ops fail alone and the rest of the batch still copies', () => {
    const buffer = grants.allocBuffer(PAGE_SIZE);
    fill(buffer, 5);
    const ok: GrantCopyOp = { source: { buffer }, dest: { ref: 7, domid: GUEST, offset: 0 }, length: 16 };
    const statuses = grants.copy([
      { source: { ref: 100, domid: GUEST, offset: 0 }, dest: { buffer }, length: 16 }, // no such grant
      ok,
      { source: { buffer }, dest: { ref: 8, domid: GUEST, offset: 0 }, length: 16 }, // write to a read-only grant
      { source: { ref: 1, domid: 55, offset: 0 }, dest: { buffer }, length: 16 }, // no such domain
      { source: { ref: 1, domid: GUEST, offset: 4000 }, dest: { buffer }, length: 200 }, // crosses the page
      { source: { ref: 1, domid: GUEST, offset: 0 }, dest: { buffer: buffer.subarray(PAGE_SIZE - 8) }, length: 16 }, // buffer too short
      { source: { ref: 1, domid: GUEST, offset: 0 }, dest: { buffer }, length: PAGE_SIZE + 1 },
      { source: { ref: -3, domid: GUEST, offset: 0 }, dest: { buffer }, length: 1 },
    ]);
    assert.deepEqual(statuses, [
      GNTST.bad_gntref,
      GNTST.okay,
      GNTST.general_error,
      GNTST.bad_domain,
      GNTST.bad_copy_arg,
      GNTST.bad_copy_arg,
      GNTST.bad_copy_arg,
      GNTST.bad_gntref,
    ]);
    assert.deepEqual(guest.page(7).subarray(0, 16), buffer.subarray(0, 16));
  });

  test('a buffer that allocBuffer did not hand out is refused and never reaches the device', () => {
    const before = devices.calls.get('grantCopy') ?? 0;
    const heap = new Uint8Array(PAGE_SIZE);
    const shared = new Uint8Array(new SharedArrayBuffer(PAGE_SIZE));
    const statuses = grants.copy([
      { source: { ref: 1, domid: GUEST, offset: 0 }, dest: { buffer: heap }, length: 16 },
      { source: { buffer: shared }, dest: { ref: 1, domid: GUEST, offset: 0 }, length: 16 },
      { source: { buffer: Buffer.alloc(64) }, dest: { ref: 1, domid: GUEST, offset: 0 }, length: 16 },
    ]);
    assert.deepEqual(statuses, [GNTST.general_error, GNTST.general_error, GNTST.general_error]);
    assert.equal(devices.calls.get('grantCopy') ?? 0, before);
    assert.ok(heap.every((b) => b === 0));
  });

  test('the native segment array is reused and grown on demand, not allocated per call', () => {
    const buffer = grants.allocBuffer(PAGE_SIZE);
    const op: GrantCopyOp = { source: { ref: 1, domid: GUEST, offset: 0 }, dest: { buffer }, length: 8 };
    grants.copy([op]);
    const allocs = devices.calls.get('allocPages')!;
    const frees = devices.calls.get('freePages') ?? 0;
    for (let i = 0; i < 20; i++) grants.copy([op, op, op]);
    assert.equal(devices.calls.get('allocPages'), allocs, 'no allocation for batches that fit');
    const big = new Array<GrantCopyOp>(1000).fill(op);
    assert.ok(grants.copy(big).every((s) => s === GNTST.okay));
    assert.equal(devices.calls.get('allocPages'), allocs + 1, 'one larger array');
    assert.equal(devices.calls.get('freePages') ?? 0, frees + 1, 'the old array is freed');
  });
});

// ------------------------------------------------------------------------------------ events

describe('XenBackendEvents over fake devices', () => {
  let devices: FakeXenDevices;
  let guest: FakeForeignDomain;
  let events: XenBackendEvents;
  const opened: EventChannel[] = [];
  const bind = (port: number): EventChannel => {
    const ch = events.bindInterdomain(GUEST, port);
    opened.push(ch);
    return ch;
  };

  before(() => {
    devices = new FakeXenDevices(0);
    guest = devices.addDomain(GUEST);
    events = new XenBackendEvents(devices);
  });
  after(() => {
    for (const ch of opened) ch.close();
  });

  test('a new channel delivers its initial pending event once a handler is set, then unmasks', async () => {
    const remote = guest.allocUnbound();
    const ch = bind(remote);
    await settle();
    assert.ok(devices.isMasked(ch.localPort), 'reported by the kernel, held until a handler exists');
    let calls = 0;
    let maskedDuringHandler = false;
    ch.onEvent(() => {
      calls++;
      maskedDuringHandler = devices.isMasked(ch.localPort);
    });
    await until(() => calls === 1, 'initial delivery');
    assert.ok(maskedDuringHandler, 'the handler runs before the kernel unmask');
    await settle();
    assert.equal(devices.isMasked(ch.localPort), false);
  });

  test('notifies coalesce while the port is masked, and one raised during the handler is not lost', async () => {
    const remote = guest.allocUnbound();
    const ch = bind(remote);
    let calls = 0;
    let reentered = false;
    ch.onEvent(() => {
      calls++;
      if (!reentered) {
        reentered = true;
        guest.notify(remote); // arrives while the kernel still masks the port
      }
    });
    await until(() => calls >= 2, 'delivery of the event raised in the handler');
    await settle();
    const base = calls;
    guest.notify(remote);
    guest.notify(remote);
    guest.notify(remote);
    await until(() => calls > base, 'delivery');
    await settle(10);
    assert.ok(calls - base >= 1 && calls - base <= 2, `three notifies gave ${calls - base} handler calls`);
    assert.equal(devices.isMasked(ch.localPort), false);
  });

  test('mask holds events back; unmask delivers what came meanwhile, once', async () => {
    const remote = guest.allocUnbound();
    const ch = bind(remote);
    let calls = 0;
    ch.onEvent(() => calls++);
    await until(() => calls === 1, 'initial delivery');
    await settle();
    ch.mask();
    guest.notify(remote);
    guest.notify(remote);
    guest.notify(remote);
    await settle(10);
    assert.equal(calls, 1, 'nothing delivered while masked');
    assert.ok(devices.isMasked(ch.localPort), 'stays masked in the kernel too');
    ch.unmask();
    await until(() => calls >= 2, 'delivery at unmask');
    await settle(10);
    // The first notify was reported (and masked the port), the rest coalesced into one more.
    const after = calls as number;
    assert.ok(after === 2 || after === 3, `three notifies while masked gave ${after - 1} handler calls`);
    assert.equal(devices.isMasked(ch.localPort), false);
    const settled = calls;
    ch.unmask(); // nothing pending: no call
    await settle(5);
    assert.equal(calls, settled);
  });

  test('notify goes through XenDevices.evtchn.notify to the remote port', () => {
    const remote = guest.allocUnbound();
    const ch = bind(remote);
    const before = devices.calls.get('notify') ?? 0;
    ch.notify();
    ch.notify();
    assert.equal(guest.notifications(remote), 2);
    assert.equal(devices.calls.get('notify'), before + 2);
  });

  test('lost events (ring overflow) call every handler and unmask every port', async () => {
    const a = bind(guest.allocUnbound());
    const b = bind(guest.allocUnbound());
    let ca = 0;
    let cb = 0;
    a.onEvent(() => ca++);
    b.onEvent(() => cb++);
    await until(() => ca === 1 && cb === 1, 'initial deliveries');
    devices.loseEvents();
    await until(() => ca === 2 && cb === 2, 'deliveries after the overflow');
  });

  test('close unbinds, frees the remote port for a new bind, and makes the channel inert', async () => {
    const remote = guest.allocUnbound();
    const ch = bind(remote);
    let calls = 0;
    ch.onEvent(() => calls++);
    await until(() => calls === 1, 'initial delivery');
    const open = events.openPorts;
    ch.close();
    ch.close();
    assert.equal(events.openPorts, open - 1);
    assert.throws(() => ch.onEvent(() => {}), EventChannelError);
    const notifies = devices.calls.get('notify') ?? 0;
    ch.notify();
    ch.mask();
    ch.unmask();
    assert.equal(devices.calls.get('notify') ?? 0, notifies);
    const again = bind(remote);
    assert.notEqual(again.localPort, -1);
  });

  test('a handler that closes its channel is not unmasked after it', async () => {
    const remote = guest.allocUnbound();
    const ch = events.bindInterdomain(GUEST, remote);
    const port = ch.localPort;
    let calls = 0;
    ch.onEvent(() => {
      calls++;
      ch.close();
    });
    const unmasks = devices.calls.get('unmask') ?? 0;
    await until(() => calls === 1, 'delivery');
    await settle();
    assert.equal(devices.calls.get('unmask') ?? 0, unmasks);
    assert.equal(devices.isMasked(port), false, 'the port is gone');
  });

  test('binding to a port that is not unbound for us is an EventChannelError', () => {
    const remote = guest.allocUnbound();
    bind(remote);
    assert.throws(
      () => events.bindInterdomain(GUEST, remote),
      (e: unknown) => e instanceof EventChannelError && /not unbound/.test(e.message),
    );
    assert.throws(
      () => events.bindInterdomain(99, 1),
      (e: unknown) => e instanceof EventChannelError && /ESRCH/.test(e.message),
    );
    assert.throws(() => events.bindInterdomain(GUEST, 0), EventChannelError);
  });

  test('the adapters reach the kernel only through XenDevices (no koffi import)', () => {
    const here = dirname(fileURLToPath(import.meta.url));
    for (const file of ['backend-events', 'backend-grants']) {
      const path = [resolve(here, '../src/hypervisor/xen', `${file}.js`), resolve(here, '../src/hypervisor/xen', `${file}.ts`)].find((p) => fs.existsSync(p));
      assert.ok(path !== undefined, `${file} not found`);
      const text = fs.readFileSync(path, 'utf8');
      assert.doesNotMatch(text, /from ['"]koffi['"]|koffi-devices/, `${file} must not import koffi`);
    }
  });
});

// ------------------------------------------------------------------------------------ opening

describe('openXenHypervisor', () => {
  test('on this host (no /dev/xen) the koffi layer throws XenUnavailableError saying what to do', async (t) => {
    if (fs.existsSync('/dev/xen/gntdev')) return skipOnThisHost(t, '/dev/xen/gntdev exists: this host is a Xen domain');
    assert.throws(
      () => openKoffiDevices(),
      (e: unknown) =>
        e instanceof XenUnavailableError &&
        e.code === 'BLK_ERR_XEN_UNAVAILABLE' &&
        /\/dev\/xen\/gntdev is absent/.test(e.message) &&
        /modprobe xen-gntdev/.test(e.message),
    );
    await assert.rejects(openXenHypervisor(), XenUnavailableError);
    const probe = xenAvailable();
    assert.equal(probe.ok, false);
    assert.match(probe.why ?? '', /\/dev\/xen\/gntdev/);
  });

  test('a missing library is a XenUnavailableError that names the package', () => {
    assert.throws(
      () => openKoffiDevices({ gntdevPath: '/dev/null', evtchnPath: '/dev/null', gnttabLibrary: 'libxengnttab-absent.so.1' }),
      (e: unknown) => e instanceof XenUnavailableError && /libxengnttab-absent\.so\.1/.test(e.message) && /apt-get install/.test(e.message),
    );
  });

  test('a missing xenstored socket is a XenUnavailableError', async () => {
    const devices = new FakeXenDevices();
    await assert.rejects(
      openXenHypervisor({ devices, xenstoreSocket: '/nonexistent/xenstored.sock' }),
      (e: unknown) => e instanceof XenUnavailableError && /xenstored/.test(e.message),
    );
  });

  test('with devices and a xenstored socket: domid from the relative key `domid`, else 0; close closes both', async () => {
    const daemon = new XenstoreDaemon();
    const dir = fs.mkdtempSync(join(os.tmpdir(), 'xen-ffi-'));
    const server = await daemon.listenUnix(join(dir, 'socket'));
    try {
      const devices = new FakeXenDevices();
      const hv = await openXenHypervisor({ devices, xenstoreSocket: join(dir, 'socket') });
      assert.equal(hv.domid, 0);
      assert.ok(hv.grants instanceof XenBackendGrants);
      assert.ok(hv.events instanceof XenBackendEvents);
      await hv.xenstore.write('/local/domain/0/domid', '5');
      await hv.close();
      assert.ok(devices.closed);
      const hv2 = await openXenHypervisor({ devices: new FakeXenDevices(), xenstoreSocket: join(dir, 'socket') });
      assert.equal(hv2.domid, 5);
      await hv2.close();
    } finally {
      await server.close();
      await daemon.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ------------------------------------------------------------------------------------ koffi

describe('the koffi layer', () => {
  test('xengnttab_grant_copy_segment_t: our packing, koffi and the C compiler agree', (t) => {
    if (stopIfMissing(t, xenCcMissing())) return;
    const source = findFixture('segment-layout.c');
    assert.ok(source !== undefined, 'test/fixtures/xen-ffi/segment-layout.c not found');
    const c = compileAndReadValues(source);
    const ours = koffiSegmentLayout();
    for (const [field, offset] of Object.entries(PACKED_SEGMENT_LAYOUT)) {
      assert.equal(c[field], offset, `C ${field}`);
      assert.equal(ours[field], offset, `koffi ${field}`);
    }
    assert.equal(c['GNTCOPY_source_gref'], 1);
    assert.equal(c['GNTCOPY_dest_gref'], 2);
  });

  test('native memory: mmap gives page-aligned, writable memory; munmap takes it back', () => {
    const memory = koffiNativeMemory();
    const region = memory.allocPages(2 * PAGE_SIZE);
    assert.equal(region.address % BigInt(PAGE_SIZE), 0n);
    assert.equal(region.view.byteLength, 2 * PAGE_SIZE);
    const bytes = new Uint8Array(region.view);
    bytes.fill(0x5a);
    assert.equal(bytes[2 * PAGE_SIZE - 1], 0x5a);
    memory.freePages(region.address, 2 * PAGE_SIZE);
    assert.throws(() => memory.allocPages(100), RangeError);
  });

  describe('end to end over stand-in libxengnttab and libxenevtchn', () => {
    const missing = xenCcMissing();
    const gtSource = findFixture('standin-xengnttab.c');
    const evSource = findFixture('standin-xenevtchn.c');
    // A missing tool skips (fails under CI=true); missing fixtures of our own always fail.
    const skip = missing !== undefined || gtSource === undefined || evSource === undefined;
    let dir = '';
    let gtLib = '';
    let evLib = '';

    before(() => {
      if (skip) return;
      dir = fs.mkdtempSync(join(os.tmpdir(), 'xen-ffi-'));
      gtLib = join(dir, 'libxengnttab-standin.so');
      evLib = join(dir, 'libxenevtchn-standin.so');
      for (const [src, out] of [
        [gtSource!, gtLib],
        [evSource!, evLib],
      ] as const) {
        const cc = spawnSync('gcc', ['-O1', '-Wall', '-Werror', '-shared', '-fPIC', '-o', out, src], { encoding: 'utf8' });
        assert.equal(cc.status, 0, cc.stderr);
      }
    });
    after(() => {
      if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
    });

    // The default reader (the fd on libuv's epoll); the thread reader's delivery is checked below
    // in a process of its own, since the stand-in libraries keep their state for the process.
    test('map, copy and events through koffi, the epoll reader and close', async (t) => {
      if (stopIfMissing(t, missing)) return;
      assert.ok(gtSource !== undefined && evSource !== undefined, 'stand-in sources test/fixtures/xen-ffi/standin-*.c not found');
      // The same dlopen handle as the binding's: the test reads and drives the stand-in's state.
      const gt = koffi.load(gtLib);
      const ev = koffi.load(evLib);
      const frameOf = gt.func('uint8_t *standin_frame(uint32_t frame)');
      const copyCalls = gt.func('unsigned int standin_copy_calls(void)');
      const liveMaps = gt.func('int standin_live_maps(void)');
      const failEintr = gt.func('void standin_fail_eintr(unsigned int n)');
      const raise = ev.func('int standin_raise(uint32_t port)');
      const notified = ev.func('unsigned int standin_notified(uint32_t port)');
      const unmasks = ev.func('unsigned int standin_unmasks(uint32_t port)');
      const isBound = ev.func('int standin_bound(uint32_t port)');
      const frame = (n: number): Uint8Array => new Uint8Array(koffi.view(frameOf(n), PAGE_SIZE));

      const devices = openKoffiDevices({ gntdevPath: '/dev/null', evtchnPath: '/dev/null', gnttabLibrary: gtLib, evtchnLibrary: evLib, evtchnReader: 'epoll' });
      const grants = new XenBackendGrants(devices);
      const events = new XenBackendEvents(devices);
      try {
        for (let n = 0; n < 16; n++) fill(frame(n), n + 40);

        // map: views over the mmap'd pages, writes reach the frames at unmap
        const mapping = grants.map(GUEST, [2, 5], 2, true);
        assert.deepEqual(mapping.pages[1], frame(5));
        mapping.pages[0]!.fill(0xee, 0, 32);
        mapping.unmap();
        assert.equal(liveMaps(), 0);
        assert.equal(frame(2)[31], 0xee);
        const ro = grants.map(GUEST, [15], 1, false);
        assert.deepEqual(ro.pages[0], frame(15));
        ro.unmap();
        // a signal during the map (EINTR) is retried, not taken for a bad grant; one that never stops is an error
        failEintr(3);
        const retried = grants.map(GUEST, [6], 1, true);
        assert.deepEqual(retried.pages[0], frame(6));
        retried.unmap();
        failEintr(1000);
        expectGrantError(() => grants.map(GUEST, [6], 1, true), 6, GUEST, GNTST.general_error, /EINTR/);
        failEintr(0);
        expectGrantError(() => grants.map(GUEST, [1, 15], 2, true), 15, GUEST, GNTST.general_error, /writable \(EINVAL\)/);
        expectGrantError(() => grants.map(GUEST, [1, 2, 40], 3, false), 40, GUEST, GNTST.general_error, /read-only \(EINVAL\)/);
        assert.equal(liveMaps(), 0);

        // copy: one xengnttab_grant_copy for the batch, C reads our packed segments
        const buffer = grants.allocBuffer(2 * PAGE_SIZE);
        fill(buffer, 7);
        const calls = copyCalls();
        const statuses = grants.copy([
          { source: { ref: 3, domid: GUEST, offset: 100 }, dest: { buffer: buffer.subarray(PAGE_SIZE + 1) }, length: 300 },
          { source: { buffer: buffer.subarray(5) }, dest: { ref: 4, domid: GUEST, offset: 4000 }, length: 96 },
          { source: { ref: 99, domid: GUEST, offset: 0 }, dest: { buffer }, length: 8 },
          { source: { buffer }, dest: { ref: 15, domid: GUEST, offset: 0 }, length: 8 },
          { source: { ref: 1, domid: 8, offset: 0 }, dest: { buffer }, length: 8 },
        ]);
        assert.deepEqual(statuses, [GNTST.okay, GNTST.okay, GNTST.bad_gntref, GNTST.general_error, GNTST.bad_domain]);
        assert.equal(copyCalls(), calls + 1);
        assert.deepEqual(buffer.subarray(PAGE_SIZE + 1, PAGE_SIZE + 301), frame(3).subarray(100, 400));
        assert.deepEqual(frame(4).subarray(4000), buffer.subarray(5, 101));
        failEintr(2);
        buffer.fill(0, 0, 64);
        assert.deepEqual(grants.copy([{ source: { ref: 7, domid: GUEST, offset: 0 }, dest: { buffer }, length: 64 }]), [GNTST.okay]);
        assert.equal(copyCalls(), calls + 4, 'interrupted twice, done on the third call');
        assert.deepEqual(buffer.subarray(0, 64), frame(7).subarray(0, 64));

        // events: bind (starts pending), delivery via the reader thread, unmask after the handler
        const ch = events.bindInterdomain(GUEST, 3);
        assert.equal(ch.localPort, 103);
        let delivered = 0;
        ch.onEvent(() => delivered++);
        await until(() => delivered === 1, 'the initial event through the reader thread');
        await until(() => unmasks(103) === 1, 'unmask after the handler');
        raise(103);
        await until(() => delivered === 2, 'a raised event');
        ch.mask();
        raise(103);
        await sleep(30);
        assert.equal(delivered, 2, 'masked: held back');
        ch.unmask();
        await until(() => delivered === 3, 'delivery at unmask');
        ch.notify();
        assert.equal(notified(103), 1);
        assert.throws(
          () => events.bindInterdomain(GUEST, 3),
          (e: unknown) => e instanceof EventChannelError && /EINVAL/.test(e.message),
        );
        ch.close();
        assert.equal(isBound(103), 0);
      } finally {
        await devices.close();
      }
      assert.throws(() => devices.evtchn.notify(103), /closed/);
    });

    for (const evtchnReader of ['epoll', 'thread'] as const)
      test(`${evtchnReader} reader: an event is delivered, and a process that never closes the devices still exits`, (t) => {
        if (stopIfMissing(t, missing)) return;
        assert.ok(gtSource !== undefined && evSource !== undefined, 'stand-in sources test/fixtures/xen-ffi/standin-*.c not found');
        const here = dirname(fileURLToPath(import.meta.url));
        const devicesModule = pathToFileURL(resolve(here, '../src/hypervisor/xen/koffi-devices.js')).href;
        const eventsModule = pathToFileURL(resolve(here, '../src/hypervisor/xen/backend-events.js')).href;
        const script = join(dir, 'no-close.mjs');
        fs.writeFileSync(
          script,
          `import { openKoffiDevices } from ${JSON.stringify(devicesModule)};
import { XenBackendEvents } from ${JSON.stringify(eventsModule)};
const devices = openKoffiDevices({ gntdevPath: '/dev/null', evtchnPath: '/dev/null', gnttabLibrary: ${JSON.stringify(gtLib)}, evtchnLibrary: ${JSON.stringify(evLib)}, evtchnReader: ${JSON.stringify(evtchnReader)} });
const ch = new XenBackendEvents(devices).bindInterdomain(7, 5);
ch.onEvent(() => { console.log('event'); ch.close(); });
`,
        );
        const run = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 10_000 });
        assert.equal(run.signal, null, 'the process hung at exit');
        assert.equal(run.status, 0, run.stderr);
        assert.equal(run.stdout.trim(), 'event');
      });
  });
});
