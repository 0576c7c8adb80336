// `blkback serve`'s path policy over the real-Xen adapters (FakeXenDevices for /dev/xen, our
// xenstored on a Unix socket), wired as serve wires it: a StoreRegistry holding the policy from
// --allow-path as blkback's opener, and the control target checking attaches with it. A backend entry
// naming /etc/shadow (as xl create, or anyone who may write backend/vbd, would write it) is not
// opened: the rule goes to the log and to the error node, as Linux's xen-blkback records a failure,
// and the backend goes to Closed. `ctl attach` of it is refused before xl runs or anything is written.
// An image under the --allow-path directory is served: the guest reads the file's bytes.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { Blkback } from '../src/blkback/blkback.ts';
import { BlkifRequest, BlkifResponse, decodeResponse, encodeRequest } from '../src/blkif/codec.ts';
import { BLKIF_OP, BLKIF_RSP } from '../src/blkif/constants.ts';
import { FrontRing, frontRingInit, SharedRing } from '../src/blkif/ring.ts';
import { resolvePathPolicy } from '../src/stores/path-policy.ts';
import { blkbackControlTarget } from '../src/control/blkback-target.ts';
import { ControlError } from '../src/control/protocol.ts';
import { xenstoreToolstack } from '../src/control/xenstore-toolstack.ts';
import { xlToolstack } from '../src/control/xl-toolstack.ts';
import type { XenstoreClient } from '../src/hypervisor/types.ts';
import { FakeXenDevices } from './support/fake-xen-devices.ts';
import type { FakeForeignDomain } from './support/fake-xen-devices.ts';
import { openXenHypervisor } from '../src/hypervisor/xen/index.ts';
import type { XenHypervisor } from '../src/hypervisor/xen/index.ts';
import { frontendDir, writeDiskEntries } from '../src/sim-host/disk-entries.ts';
import { StoreRegistry } from '../src/sim-host/stores.ts';
import { connectInProcess, connectUnix } from '../src/xenstore/client.ts';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { XenbusState } from '../src/xenbus/state.ts';

const GUEST = 7;
const IMAGE_BYTES = 1 << 20;
const TIMEOUT_MS = 5000;

async function until<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - start > TIMEOUT_MS) throw new Error(`timed out after ${TIMEOUT_MS} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** What libxl writes for a phy disk (with `params` as given), as another process on the socket. */
function libxlWrites(xs: XenstoreClient, devid: number, vdev: string, params: string): Promise<void> {
  return xs.transaction((tx) => writeDiskEntries(xs, tx, { kind: 'vbd', domid: GUEST, devid, vdev, target: params, type: 'phy', readOnly: false }));
}

/** Linux blkfront's connect, then one read of the first 8 sectors into a granted page; resolves with the page. */
async function connectAndRead(domain: FakeForeignDomain, xs: XenstoreClient, devid: number): Promise<{ sectors: number; data: Uint8Array }> {
  const fe = frontendDir(GUEST, devid);
  const be = await xs.read(`${fe}/backend`);
  await until(async () => ((await xs.tryRead(`${be}/state`)) === String(XenbusState.InitWait) ? true : undefined), 'InitWait');
  const [ringFrame, dataFrame] = [0, 1];
  domain.page(ringFrame).fill(0);
  domain.grant(8, ringFrame, false, 0);
  domain.grant(9, dataFrame, false, 0);
  const shared = new SharedRing([domain.page(ringFrame)], 'x86_64');
  frontRingInit(shared);
  const ring = new FrontRing(shared);
  const port = domain.allocUnbound();
  await xs.transaction(async (tx) => {
    await xs.write(`${fe}/ring-ref`, '8', tx);
    await xs.write(`${fe}/event-channel`, String(port), tx);
    await xs.write(`${fe}/protocol`, 'x86_64-abi', tx);
    await xs.write(`${fe}/state`, String(XenbusState.Initialised), tx);
  });
  await until(async () => ((await xs.tryRead(`${be}/state`)) === String(XenbusState.Connected) ? true : undefined), 'Connected');
  const sectors = Number(await xs.read(`${be}/sectors`));
  const req = new BlkifRequest();
  req.operation = BLKIF_OP.READ;
  req.nrSegments = 1;
  req.sectorNumber = 0;
  req.handle = 0;
  req.idLo = 1;
  req.segGref[0] = 9;
  req.segFirst[0] = 0;
  req.segLast[0] = 7;
  const slot = new Uint8Array(112);
  encodeRequest('x86_64', req, slot);
  ring.putRequest(slot);
  if (ring.pushRequestsAndCheckNotify()) domain.notify(port);
  const rsp = new BlkifResponse();
  await until(async () => (ring.takeResponse(slot) ? true : undefined), 'the read to be answered');
  decodeResponse('x86_64', slot, rsp);
  assert.equal(rsp.status, BLKIF_RSP.OKAY, 'the read succeeds');
  return { sectors, data: domain.page(dataFrame).slice() };
}

describe('blkback serve: the path policy over the real-Xen adapters', () => {
  let dir: string;
  let allowed: string;
  let image: string;
  let daemon: XenstoreDaemon;
  let server: Awaited<ReturnType<XenstoreDaemon['listenUnix']>>;
  let fake: FakeXenDevices;
  let domain: FakeForeignDomain;
  let hv: XenHypervisor;
  let stores: StoreRegistry;
  let blkback: Blkback;
  let toolstack: XenstoreClient;
  let guestXs: XenstoreClient;
  const log: string[] = [];
  let rule: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'blkback-serve-policy-'));
    allowed = join(dir, 'images');
    mkdirSync(allowed);
    image = join(allowed, 'guest.img');
    writeFileSync(image, Buffer.alloc(IMAGE_BYTES, 0x5a));
    symlinkSync('/etc/shadow', join(allowed, 'shadow.img'));
    const socket = join(dir, 'xenstored.sock');
    daemon = new XenstoreDaemon();
    server = await daemon.listenUnix(socket);
    fake = new FakeXenDevices(0);
    domain = fake.addDomain(GUEST, 16);
    hv = await openXenHypervisor({ xenstoreSocket: socket, devices: fake });
    // As `blkback serve --allow-path DIR` builds them.
    stores = new StoreRegistry(new Map(), { policy: await resolvePathPolicy([allowed]) });
    rule = `is not under an --allow-path directory (allowed: ${allowed})`;
    blkback = new Blkback(hv, { open: stores.open, dataPath: 'persistent', log: (line) => log.push(line) });
    await blkback.start();
    toolstack = await connectUnix(socket);
    guestXs = connectInProcess(daemon, GUEST);
    await toolstack.write(`/local/domain/${GUEST}/name`, 'policy-guest');
    await toolstack.write(`/local/domain/${GUEST}/domid`, String(GUEST));
  });

  after(async () => {
    await blkback?.stop();
    await hv?.close();
    toolstack?.close();
    guestXs?.close();
    await server?.close();
    await daemon?.close();
    await stores?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('params naming /etc/shadow (phy, file:, a symlink from the allowed directory) is refused: log, error node, Closed', async () => {
    const link = join(allowed, 'shadow.img');
    const cases = [
      { devid: 51712, vdev: 'xvda', params: '/etc/shadow', why: `disk target '/etc/shadow': /etc/shadow ${rule}` },
      { devid: 51728, vdev: 'xvdb', params: 'file:/etc/shadow', why: `disk target 'file:/etc/shadow': /etc/shadow ${rule}` },
      { devid: 51744, vdev: 'xvdc', params: link, why: `disk target '${link}': ${link} (/etc/shadow) ${rule}` },
    ];
    for (const c of cases) await libxlWrites(toolstack, c.devid, c.vdev, c.params);
    for (const c of cases) {
      const be = `/local/domain/0/backend/vbd/${GUEST}/${c.devid}`;
      const error = await until(() => toolstack.tryRead(`/local/domain/0/error/backend/vbd/${GUEST}/${c.devid}/error`), `the error node of ${c.vdev}`);
      assert.equal(error, `13 ${c.why}`, 'errno and the rule, where Linux xen-blkback records a failure');
      await until(async () => ((await toolstack.tryRead(`${be}/state`)) === String(XenbusState.Closed) ? true : undefined), `${c.vdev} Closed`);
      const vbd = blkback.vbds.get(`${GUEST}/${c.devid}`);
      assert.ok(vbd !== undefined);
      assert.equal(vbd.device, null, 'no store was opened');
      assert.equal(vbd.openFailure, c.why);
      assert.equal(await toolstack.tryRead(`${be}/sectors`), undefined, 'nothing advertised');
      assert.ok(log.includes(`vbd ${GUEST}/${c.devid}: ${c.why}`), log.join('\n'));
    }
  });

  test('an image under --allow-path is served: the guest reads its bytes', async () => {
    await libxlWrites(toolstack, 51760, 'xvdd', image);
    const { sectors, data } = await connectAndRead(domain, guestXs, 51760);
    assert.equal(sectors, IMAGE_BYTES / 512);
    assert.ok(
      data.every((b) => b === 0x5a),
      "the page holds the file's first 4 KiB",
    );
    assert.equal(await toolstack.tryRead(`/local/domain/0/error/backend/vbd/${GUEST}/51760/error`), undefined);
  });

  test("ctl attach through serve's control target: refused before xl runs; with --backend-kind, before anything is written", async () => {
    // serve's default toolstack is xl: a fake xl on PATH records whether it ran.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const calls = join(dir, 'xl-calls');
    writeFileSync(calls, '');
    writeFileSync(join(bin, 'xl'), `#!/bin/sh\necho "$*" >> '${calls}'\nexit 0\n`);
    chmodSync(join(bin, 'xl'), 0o755);
    const checkStore = (r: { type: string; params: string; readOnly: boolean }): Promise<void> => stores.check(r);
    const viaXl = blkbackControlTarget(blkback, xlToolstack({ env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` } }), {
      xenstore: hv.xenstore,
      checkStore,
      settleMs: 2000,
    });
    const refused = (why: string) => (e: unknown) => e instanceof ControlError && e.code === 'CTL_ERR_BAD_ARGUMENT' && e.message === `attach: ${why}`;
    await assert.rejects(viaXl.attach(GUEST, 'phy:/etc/shadow,xvde,w'), refused(`disk target '/etc/shadow': /etc/shadow ${rule}`));
    await assert.rejects(viaXl.attach(GUEST, 'file:/etc/shadow,xvde,w'), refused(`disk target '/etc/shadow': /etc/shadow ${rule}`));
    assert.equal(readFileSync(calls, 'utf8'), '', 'xl never ran');

    // serve --backend-kind blkback: attach writes the entries itself.
    const own = new Blkback(hv, { open: stores.open, backendKind: 'blkback', log: (line) => log.push(line) });
    await own.start();
    try {
      const target = blkbackControlTarget(own, xenstoreToolstack(hv.xenstore, 'blkback', { detachTimeoutMs: 500 }), { xenstore: hv.xenstore, checkStore });
      const link = join(allowed, 'shadow.img');
      await assert.rejects(target.attach(GUEST, `vdev=xvdf,target=${link}`), refused(`disk target '${link}': ${link} (/etc/shadow) ${rule}`));
      assert.equal(await toolstack.tryRead(`/local/domain/0/backend/blkback/${GUEST}`), undefined, 'nothing written');
      assert.equal(await toolstack.tryRead(`${frontendDir(GUEST, 51792)}/backend`), undefined);
      const ok = await target.attach(GUEST, `vdev=xvdf,access=rw,target=${image}`);
      assert.deepEqual(ok, { key: `${GUEST}/51792`, domid: GUEST, devid: 51792, vdev: 'xvdf' });
      assert.equal(own.vbds.get(`${GUEST}/51792`)?.device?.info.size, IMAGE_BYTES, 'the image is open');
      await target.detach(GUEST, 'xvdf');
    } finally {
      await own.stop();
    }
  });
});
