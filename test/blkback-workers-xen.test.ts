// A data-plane worker on the real-Xen binding, without Xen: the worker opens the koffi devices
// itself, over the stand-in libxengnttab and libxenevtchn (test/fixtures/xen-ffi, built here with
// the real prototypes; their state is the process's, so this thread reads what the worker did).
// A ring in the stand-in guest's frame 0 holds one read; the worker maps the ring, binds the port,
// takes the read, grant-copies the store's bytes into the guest's frame 1 from its own native
// bounce memory, answers and notifies; stopped, it unmaps and unbinds everything it made.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import koffi from 'koffi';
import { BlkifRequest, BlkifResponse, decodeResponse, encodeRequest } from '../src/blkif/codec.ts';
import { BLKIF_OP, BLKIF_RSP } from '../src/blkif/constants.ts';
import { FrontRing, frontRingInit, SharedRing } from '../src/blkif/ring.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { FairShareTable } from '../src/blkback/fair-share.ts';
import { TURN_COST } from '../src/blkback/ring-server.ts';
import { xenDataPlaneProvider } from '../src/blkback/workers/data-plane.ts';
import { SharedInflightBudget } from '../src/blkback/workers/shared-budget.ts';
import { WorkerRingHost } from '../src/blkback/workers/worker-ring-host.ts';
import { gccMissing } from './helpers-c.ts';
import { stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';

const GUEST = 7;
const PAGE = 4096;

function xenCcMissing(): Missing | undefined {
  const missing = gccMissing();
  if (missing !== undefined) return missing;
  for (const h of ['/usr/include/xengnttab.h', '/usr/include/xenevtchn.h'])
    if (!fs.existsSync(h)) return { what: `${h} absent`, install: 'apt-get install libxen-dev' };
  return undefined;
}

function findFixture(name: string): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const rel = join('test', 'fixtures', 'xen-ffi', name);
  const found = [resolve(here, 'fixtures/xen-ffi', name), resolve(here, '../..', rel), resolve(process.cwd(), rel)].find((p) => fs.existsSync(p));
  assert.ok(found !== undefined, `stand-in source ${rel} not found`);
  return found;
}

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) assert.fail(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test('a data-plane worker on the real-Xen binding maps, serves, answers and lets go of a ring with handles of its own', { timeout: 60_000 }, async (t) => {
  if (stopIfMissing(t, xenCcMissing())) return;
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'workers-xen-'));
  const gtLib = join(dir, 'libxengnttab-standin.so');
  const evLib = join(dir, 'libxenevtchn-standin.so');
  for (const [src, out] of [
    [findFixture('standin-xengnttab.c'), gtLib],
    [findFixture('standin-xenevtchn.c'), evLib],
  ] as const) {
    const cc = spawnSync('gcc', ['-O1', '-Wall', '-Werror', '-shared', '-fPIC', '-o', out, src], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
  }
  // The same library instances the worker's koffi loads (one dlopen per process).
  const gt = koffi.load(gtLib);
  const ev = koffi.load(evLib);
  const frameOf = gt.func('uint8_t *standin_frame(uint32_t frame)');
  const liveMaps = gt.func('int standin_live_maps(void)') as () => number;
  const copyCalls = gt.func('unsigned int standin_copy_calls(void)') as () => number;
  const notified = ev.func('unsigned int standin_notified(uint32_t port)') as (port: number) => number;
  const isBound = ev.func('int standin_bound(uint32_t port)') as (port: number) => number;
  const frame = (n: number): Uint8Array => new Uint8Array(koffi.view(frameOf(n) as object, PAGE));

  // The guest: a one-page ring in frame 0 holding one read of sector 8 into frame 1 (all of it).
  const ringPage = frame(0);
  ringPage.fill(0);
  frame(1).fill(0xee);
  const shared = new SharedRing([ringPage], 'x86_64');
  frontRingInit(shared);
  const front = new FrontRing(shared);
  const req = new BlkifRequest();
  req.operation = BLKIF_OP.READ;
  req.nrSegments = 1;
  req.idLo = 42;
  req.sectorNumber = 8;
  req.segGref[0] = 1;
  req.segFirst[0] = 0;
  req.segLast[0] = 7;
  const slot = new Uint8Array(shared.stride);
  encodeRequest('x86_64', req, slot);
  front.putRequest(slot);
  front.pushRequestsAndCheckNotify();

  const ram = createRamDisk(1 << 20);
  const data = new Uint8Array(PAGE);
  for (let i = 0; i < PAGE; i++) data[i] = (i * 13 + 5) & 0xff;
  await ram.writev(8 * 512, [data]);

  const errors: string[] = [];
  const host = new WorkerRingHost({
    workers: 1,
    provider: xenDataPlaneProvider({ devices: { gntdevPath: '/dev/null', evtchnPath: '/dev/null', gnttabLibrary: gtLib, evtchnLibrary: evLib } }),
    budget: new SharedInflightBudget(64),
    fairShare: FairShareTable.create(),
    quantum: TURN_COST,
    log: () => undefined,
    logError: (line) => errors.push(line),
  });
  try {
    await host.ready();
    assert.ok(host.threadIds[0]! > 0, 'the worker reported its thread');
    const copies = copyCalls();
    // Domain 7's port 3 is unbound for us in the stand-in; bound, it is local port 103 and starts pending.
    const ring = await host.attach({
      frontendDomid: GUEST,
      devid: 51712,
      queue: 0,
      queues: 1,
      refs: [0],
      port: 3,
      abi: 'x86_64',
      device: ram,
      readOnly: false,
      discard: false,
      maxIndirectSegments: 0,
      dataPath: 'copy',
      name: 'vbd 7/51712',
    });
    assert.equal(ring.worker, 0);
    assert.equal(isBound(103), 1, 'the worker bound the port through its own evtchn handle');
    await until('the read is answered', () => ring.stats.rd_req === 1 && ring.inflight === 0 && notified(103) > 0);
    assert.deepEqual(frame(1), data, "the store's bytes are in the guest's frame (grant copy from the worker's native memory)");
    assert.ok(copyCalls() > copies, 'through xengnttab_grant_copy');
    assert.equal(ring.stats.rd_sect, 8);
    assert.equal(ring.stats.errors.bad_grant, 0);
    await ring.stop();
    assert.equal(isBound(103), 0, 'the port is unbound at stop');
    assert.equal(liveMaps(), 0, 'the ring is unmapped at stop');
    // The stand-in's mappings are copies written back at unmap: the response is in frame 0 now.
    const rsp = new BlkifResponse();
    assert.ok(front.takeResponse(slot), 'one response on the ring');
    decodeResponse('x86_64', slot, rsp);
    assert.equal(rsp.idLo, 42);
    assert.equal(rsp.status, BLKIF_RSP.OKAY);
    assert.deepEqual(errors, []);
  } finally {
    await host.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
