// blkback against a guest racing it through shared memory (test/fixtures/hostile/race-guest.ts), on
// each data path: indirect segment lists rewritten while their requests are in flight, ring slots
// rewritten between the backend's read of req_prod and its copy (and while in flight), and grants
// revoked in the middle of I/O. The backend must act on one copy of what it validated, write only
// pages granted to it, answer every request once with a status its effects fit, never touch a page
// after the guest got it back, and give every grant back when the disks close; a new guest then
// gets verified I/O.
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { DataPath } from '../src/blkback/ring-server.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { vdevToDeviceId } from '../src/config/xl-disk.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { testWorkers } from './helpers-workers.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import { VERIFY } from './helpers-guest.ts';
import { fillDiskPattern } from './fixtures/hostile/disk-pattern.ts';
import type { RaceParams, RaceResult } from './fixtures/hostile/race-guest.ts';
import { gatedStore, slowStore } from './fixtures/hostile/slow-store.ts';
import { attachRawDisk } from './fixtures/hostile/toolstack.ts';

const RACE = new URL('./fixtures/hostile/race-guest.js', import.meta.url);
const DATA_PATHS: readonly DataPath[] = ['map', 'persistent', 'copy'];
/** How long each of the three attacks runs per data path. */
const ATTACK_SECONDS = 0.8;
/** The stores hold each request this long: long enough to act while it is in flight. */
const RACE_DELAY_MS = 1;
const REVOKE_DELAY_MS = 3;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang?)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function patternDisk(size: number, seed: number): Promise<BlockDevice> {
  const ram = createRamDisk(size);
  await fillDiskPattern(ram, seed);
  return ram;
}

for (const dataPath of DATA_PATHS) {
  test(
    `blkback acts on one copy of what a racing guest wrote, on data path ${dataPath}: indirect lists, ring slots, grants revoked mid-I/O`,
    { timeout: 60_000 },
    (t) => raceRun(t, dataPath),
  );
}

async function raceRun(t: TestContext, dataPath: DataPath): Promise<void> {
  const lines: string[] = [];
  const host = await SimHost.start({ dataPath, log: (line) => lines.push(line), ...testWorkers() });
  try {
    const diskSeeds = { indirect: 0x1d1e0001, slot: 0x5107a002, revoke: 0x4e70c003 };
    // The slot attack's store answers only while the guest's gate word is open (see race-slot.ts).
    let gate: Int32Array | undefined;
    host.registerStore('race-indirect', slowStore(await patternDisk(8 << 20, diskSeeds.indirect), RACE_DELAY_MS));
    host.registerStore(
      'race-slot',
      gatedStore(await patternDisk(4 << 20, diskSeeds.slot), () => gate),
    );
    host.registerStore('race-revoke', slowStore(await patternDisk(1 << 20, diskSeeds.revoke), REVOKE_DELAY_MS));
    const vdevs = { indirect: 'xvdb', slot: 'xvdc', revoke: 'xvdd' } as const;
    const params: RaceParams = {
      devices: { indirect: vdevToDeviceId(vdevs.indirect), slot: vdevToDeviceId(vdevs.slot), revoke: vdevToDeviceId(vdevs.revoke) },
      diskSeeds,
      seed: 0x7ace,
      seconds: ATTACK_SECONDS,
      otherDomid: 0x1234,
      persistent: dataPath === 'persistent',
      revokePages: 800,
      revokeDelayMs: REVOKE_DELAY_MS,
    };
    let connected!: () => void;
    const isConnected = new Promise<void>((resolve) => (connected = resolve));
    let domid = -1;
    const guest = await host.createGuest(
      { name: 'racer', memoryMiB: 64, disks: [] },
      {
        workload: RACE,
        params,
        onReport: (m) => {
          const report = m as { type: string; frame?: number };
          if (report.type === 'connected') connected();
          const memory = host.hypervisor.domain(domid)?.handles.memory.buffer;
          if (report.type === 'gate' && memory !== undefined) gate = new Int32Array(memory, report.frame! * 4096, 1);
        },
      },
    );
    domid = guest.domid;
    for (const [key, vdev] of Object.entries(vdevs)) await attachRawDisk(host, domid, { target: `race-${key}`, vdev, readOnly: false });
    await withTimeout(
      Promise.race([isConnected, guest.result.then(() => assert.fail('the racing guest finished before connecting'))]),
      15_000,
      'race guest setup',
    );
    const vbdOf = (vdev: string) => {
      const v = host.blkback.vbds.get(`${domid}/${vdevToDeviceId(vdev)}`);
      assert.ok(v !== undefined, `blkback serves ${vdev}`);
      return v;
    };
    const vbds = { indirect: vbdOf(vdevs.indirect), slot: vbdOf(vdevs.slot), revoke: vbdOf(vdevs.revoke) };
    for (const [key, v] of Object.entries(vbds)) assert.equal(v.dataPath, dataPath, `${key} is served on the data path under test`);
    const r = (await withTimeout(guest.result, 40_000, 'race guest')) as RaceResult;

    // ------------------------------------------------------------ 1. indirect lists rewritten in flight
    const ind = r.indirect;
    t.diagnostic(
      `${dataPath} indirect: ${ind.rounds} rounds, ${ind.rewrites} entry rewrites; READ ${ind.readOk} OKAY / ${ind.readError} ERROR (${ind.partialErrors} partly copied), WRITE ${ind.writeOk} OKAY / ${ind.writeError} ERROR`,
    );
    assert.equal(ind.mismatches, 0, `every indirect request acted on one copy of its list: ${ind.details.join('; ')}`);
    assert.equal(ind.badAnswers, 0);
    assert.equal(ind.unanswered, 0, 'every indirect request was answered');
    assert.ok(ind.rewrites > 0 && ind.readOk > 0 && ind.readError > 0 && ind.writeOk > 0 && ind.writeError > 0, 'both outcomes happened for reads and writes');
    // Only the copy path does a read's I/O before it finds out a ref is bad (when copying to the guest).
    if (dataPath !== 'copy') assert.equal(ind.partialErrors, 0, 'a refused read wrote nothing into the guest');

    // ------------------------------------------------------------ 2. ring slots rewritten (double fetch)
    const sl = r.slot;
    t.diagnostic(
      `${dataPath} slots: ${sl.rounds} rounds, ${sl.rewrites} word rewrites (${sl.lateRewrites} after the backend took the requests, in ${sl.lateRounds} rounds); ` +
        `${sl.ok} OKAY (${sl.partPages} with a part-page segment), ${sl.errors} ERROR (${sl.partialErrors} partly copied), ${sl.notSupported} EOPNOTSUPP`,
    );
    assert.ok(sl.gateWorks, "the slot attack's store waited for the guest's gate");
    assert.equal(sl.mismatches, 0, `every answer and effect fits one copy of the slot: ${sl.details.join('; ')}`);
    assert.equal(sl.unanswered, 0, 'every slot was answered');
    assert.ok(sl.ok > 0 && sl.errors + sl.notSupported > 0, 'both valid and refused copies were taken');
    assert.ok(sl.lateRounds > 0 && sl.lateRewrites > 0, 'slots were also rewritten after the backend took them');
    if (dataPath !== 'copy') assert.equal(sl.partialErrors, 0, 'a refused read wrote nothing into the guest');

    // ------------------------------------------------------------ 3. grants revoked in the middle of I/O
    const rv = r.revoke;
    t.diagnostic(
      `${dataPath} revoke: ${rv.requests} requests, ${rv.revokedEarly} revoked before the backend held them, ${rv.revokedForcibly} by clearing GTF_permit_access; ` +
        `${rv.backBeforeAnswer} pages back before the answer, ${rv.backAfterAnswer} after, ${rv.heldAfterAnswer} still held; ` +
        `revoked requests ${rv.okRevoked} OKAY / ${rv.errorRevoked} ERROR`,
    );
    assert.equal(rv.mismatches, 0, `answers fit what reached the pages and the disk: ${rv.details.join('; ')}`);
    assert.equal(rv.badAnswers, 0);
    assert.equal(rv.unanswered, 0, 'every request with a revoked grant was answered');
    assert.equal(rv.refusedRevokes, 0, 'a grant the entry shows free can be ended');
    assert.ok(rv.revokedEarly > 0 && rv.revokedForcibly > 0 && rv.errorRevoked > 0 && rv.okRevoked > 0, 'revoked early and mid-I/O, with both outcomes');
    if (dataPath === 'persistent') {
      assert.ok(rv.heldAfterAnswer > 0 && r.inUseBeforeClose > 0, 'the persistent path keeps the grants it mapped until the disk closes');
    } else {
      assert.equal(rv.heldAfterAnswer, 0, 'no grant stays held once its request is answered');
      assert.equal(r.inUseBeforeClose, 0, 'no grant stays held once the attacks are over');
      assert.ok(rv.backBeforeAnswer > 0, 'pages came back while their requests were in flight');
    }
    const revokeErrors = vbds.revoke.stats.errors;
    assert.ok(revokeErrors.bad_grant > 0, 'revoked grants were refused and counted');

    // ------------------------------------------------------------ memory, grants, and the next guest
    assert.equal(r.memory.badFrames, 0, `backend wrote only granted pages, and none after the guest got it back: ${r.memory.details.join('; ')}`);
    assert.ok(r.memory.canaryFrames > 0);
    assert.equal(r.inUseAfterClose, 0, 'no grant is held once the disks are closed');
    assert.equal(r.unreturned, 0, 'every grant the backend held could be ended after closing');
    for (const [key, v] of Object.entries(vbds)) {
      assert.equal(v.stats.errors.io_error, 0, `${key}: no I/O errors`);
      assert.equal(v.stats.errors.ring_overflow, 0, `${key}: the ring was never halted`);
    }
    host.registerStore('fresh', createRamDisk(8 << 20));
    const fresh = await host.createGuest(
      { name: 'fresh', memoryMiB: 32, disks: [{ target: 'fresh', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: VERIFY, params: { operations: 300, iodepth: 16, seed: 98 } },
    );
    const fr = (await withTimeout(fresh.result, 20_000, 'fresh guest')) as VerifyResult;
    assert.equal(fr.mismatches, 0, fr.firstMismatches.join('\n'));
    assert.ok(fr.reads > 0 && fr.writes > 0);
    assert.equal(host.blkback.budget.used, 0, 'no in-flight budget leaked');
  } finally {
    await withTimeout(host.stop(), 15_000, 'host.stop');
  }
}
