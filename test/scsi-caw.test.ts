// COMPARE AND WRITE: results, sense data, data-out size rules, and atomicity against other commands
// on the same blocks (a write lands entirely before the compare or after the CAW's write).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { createRamDisk } from '../src/block/ram.ts';
import { ScsiDeviceServer } from '../src/scsi/device-server.ts';
import type { ItNexus } from '../src/scsi/types.ts';
import { fakeTask, makeNexus, RecordingDevice, settle } from './support/scsi-task.ts';
import type { FakeTask, Outcome } from './support/scsi-task.ts';
import { compareAndWriteCdb, hex, READ10, rw10, toHex, WRITE10 } from './helpers-scsi.ts';

const BS = 512;
const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);
const cat = (...parts: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(parts));

function setup(max?: number) {
  const device = new RecordingDevice(createRamDisk(1 << 20));
  const server = new ScsiDeviceServer({
    luns: new Map([[0, { device, serial: 'C', deviceId: hex('6001405000000003') }]]),
    targetName: 'iqn.2026-01.test:caw',
    ...(max === undefined ? {} : { maxCompareAndWriteBlocks: max }),
  });
  const i1 = makeNexus('iqn.2026-01.test:one', 1);
  const i2 = makeNexus('iqn.2026-01.test:two', 2);
  const task = (nexus: ItNexus, cdb: number[], data?: Uint8Array, edtl?: number): FakeTask =>
    fakeTask({ nexus, cdb, ...(data === undefined ? {} : { data }), ...(edtl === undefined ? {} : { edtl }) });
  const run = (nexus: ItNexus, cdb: number[], data?: Uint8Array, edtl?: number): Promise<Outcome> => settle(server.execute(task(nexus, cdb, data, edtl)));
  return { server, device, i1, i2, task, run };
}

const good = (o: Outcome): void => assert.equal(o.status, 0, o.sense === undefined ? `status ${o.status}` : toHex(o.sense));
function miscompare(o: Outcome, offset: number): void {
  assert.equal(o.status, 2);
  const s = o.sense as Uint8Array;
  assert.deepEqual([s[0], s[2], s[12], s[13]], [0xf0, 0x0e, 0x1d, 0x00], toHex(s));
  assert.equal(Buffer.from(s).readUInt32BE(3), offset);
}
function illegal(o: Outcome, asc: number): void {
  assert.equal(o.status, 2);
  const s = o.sense as Uint8Array;
  assert.deepEqual([s[2], s[12]], [5, asc], toHex(s));
}

test('COMPARE AND WRITE: equal data is replaced; a miscompare reports the offset and writes nothing', async () => {
  const { run, i1 } = setup();
  for (const n of [1, 7, 255]) {
    good(await run(i1, rw10(WRITE10, 0, n), fill(n * BS, 0x41)));
    good(await run(i1, compareAndWriteCdb(0, n), cat(fill(n * BS, 0x41), fill(n * BS, 0x42))));
    assert.ok((await run(i1, rw10(READ10, 0, n))).data.every((x) => x === 0x42));
    const cmp = fill(n * BS, 0x42);
    cmp[n * BS - 27] = 0x43;
    miscompare(await run(i1, compareAndWriteCdb(0, n), cat(cmp, fill(n * BS, 0x44))), n * BS - 27);
    assert.ok((await run(i1, rw10(READ10, 0, n))).data.every((x) => x === 0x42));
  }
  // At the last LBA, and an unwritten block (zeroes) against a non-zero compare buffer.
  good(await run(i1, compareAndWriteCdb(2047, 1), cat(fill(BS, 0), fill(BS, 9))));
  miscompare(await run(i1, compareAndWriteCdb(100, 1), cat(fill(BS, 0x25), fill(BS, 0x42))), 0);
});

test('COMPARE AND WRITE: data-out size must be exactly 2 x blocks; length limit; zero blocks; range', async () => {
  const { run, i1, device } = setup(16);
  // libiscsi's InvalidDataOutSize: the CDB says 1 (or 3) blocks, 2 blocks' worth of pairs arrive.
  illegal(await run(i1, compareAndWriteCdb(0, 1), fill(4 * BS, 0)), 0x24);
  illegal(await run(i1, compareAndWriteCdb(0, 3), fill(4 * BS, 0)), 0x24);
  // 256 blocks truncated to 0 in the CDB by the initiator, with 512 blocks of data: refused.
  illegal(await run(i1, compareAndWriteCdb(0, 0), fill(2 * BS, 0)), 0x24);
  good(await run(i1, compareAndWriteCdb(0, 0)));
  illegal(await run(i1, compareAndWriteCdb(0, 17), fill(34 * BS, 0)), 0x24);
  good(await run(i1, compareAndWriteCdb(0, 16), fill(32 * BS, 0)));
  illegal(await run(i1, compareAndWriteCdb(2047, 2), fill(4 * BS, 0)), 0x21);
  illegal(await run(i1, compareAndWriteCdb(0, 1, 0x20), fill(2 * BS, 0)), 0x24);
  // FUA reaches the device; the Block Limits page says the limit.
  good(await run(i1, compareAndWriteCdb(5, 1, 0x08), fill(2 * BS, 0)));
  assert.ok(device.calls.some((c) => c.op === 'writev' && c.offset === 5 * BS && c.flags === 1));
  const bl = await run(i1, [0x12, 1, 0xb0, 0, 255, 0]);
  assert.equal(bl.data[5], 16);
});

test("atomicity: a WRITE arriving during a CAW waits and lands after the CAW's write", async () => {
  const { server, device, i1, i2, task, run } = setup();
  good(await run(i1, rw10(WRITE10, 10, 1), fill(BS, 0x41)));
  device.hold('readv');
  const caw = settle(server.execute(task(i1, compareAndWriteCdb(10, 1), cat(fill(BS, 0x41), fill(BS, 0x42)))));
  await tick();
  assert.equal(device.heldCount, 1, 'the CAW is reading');
  const writes = device.calls.length;
  const w = settle(server.execute(task(i2, rw10(WRITE10, 10, 1), fill(BS, 0x43))));
  // A write elsewhere does not wait.
  good(await run(i2, rw10(WRITE10, 11, 1), fill(BS, 0x44)));
  await tick();
  assert.equal(device.calls.slice(writes).filter((c) => c.op === 'writev' && c.offset === 10 * BS).length, 0, 'the overlapping write waits');
  device.unhold('readv');
  device.releaseHeld();
  good(await caw);
  good(await w);
  const order = device.calls.filter((c) => c.op === 'writev' && c.offset === 10 * BS).slice(-2);
  assert.equal(order.length, 2);
  assert.ok(
    (await run(i1, rw10(READ10, 10, 1))).data.every((x) => x === 0x43),
    'the later WRITE is the last word',
  );
  assert.equal(server.unit(0)?.lockedRanges, 0);
});

test('atomicity: a CAW arriving while a WRITE is in flight waits for it and compares the new data', async () => {
  const { server, device, i1, i2, task, run } = setup();
  good(await run(i1, rw10(WRITE10, 20, 2), fill(2 * BS, 0x41)));
  device.hold('writev');
  const w = settle(server.execute(task(i2, rw10(WRITE10, 20, 2), fill(2 * BS, 0x43))));
  await tick();
  assert.equal(device.heldCount, 1);
  const caw = settle(server.execute(task(i1, compareAndWriteCdb(21, 1), cat(fill(BS, 0x43), fill(BS, 0x45)))));
  // A read of the range is not blocked by a plain write, but the CAW must not read yet.
  await tick();
  assert.equal(device.calls.filter((c) => c.op === 'readv' && c.offset === 21 * BS).length, 0);
  device.unhold('writev');
  device.releaseHeld();
  good(await w);
  good(await caw);
  const back = (await run(i1, rw10(READ10, 20, 2))).data;
  assert.ok(back.subarray(0, BS).every((x) => x === 0x43));
  assert.ok(back.subarray(BS).every((x) => x === 0x45));
});

test('atomicity: a READ overlapping a CAW sees the data before or after, never between', async () => {
  const { server, device, i1, i2, task, run } = setup();
  good(await run(i1, rw10(WRITE10, 30, 4), fill(4 * BS, 0x41)));
  device.hold('writev');
  const caw = settle(server.execute(task(i1, compareAndWriteCdb(30, 4), cat(fill(4 * BS, 0x41), fill(4 * BS, 0x42)))));
  await tick();
  await tick();
  const r = settle(server.execute(task(i2, rw10(READ10, 30, 4))));
  await tick();
  assert.equal(device.calls.filter((c) => c.op === 'readv' && c.offset === 30 * BS).length, 1, 'only the CAW has read');
  device.unhold('writev');
  device.releaseHeld();
  good(await caw);
  const o = await r;
  good(o);
  assert.ok(o.data.every((x) => x === 0x42));
});

test('two paths taking turns (MultipathIO.CompareAndWrite), and a storm of racing CAWs', async () => {
  const { server, i1, i2, task, run } = setup();
  good(await run(i1, [0x41, 0, 0, 0, 0, 0, 0, 1, 0, 0], fill(BS, 0)));
  for (let lba = 0; lba < 8; lba++) {
    for (const [p, nexus] of [
      [0, i1],
      [1, i2],
    ] as const) {
      good(await run(nexus, compareAndWriteCdb(lba, 1), cat(fill(BS, p), fill(BS, p + 1))));
      miscompare(await run(nexus, compareAndWriteCdb(lba, 1), cat(fill(BS, p), fill(BS, p + 1))), 0);
    }
  }
  // 400 CAWs queued at once on one LBA, 0->1 on one nexus and 1->0 on the other.
  const results: Promise<Outcome>[] = [];
  for (let i = 0; i < 200; i++) {
    results.push(settle(server.execute(task(i1, compareAndWriteCdb(100, 1), cat(fill(BS, 0), fill(BS, 1))))));
    results.push(settle(server.execute(task(i2, compareAndWriteCdb(100, 1), cat(fill(BS, 1), fill(BS, 0))))));
  }
  const outs = await Promise.all(results);
  let wins = 0;
  for (const o of outs) {
    if (o.status === 0) wins++;
    else miscompare(o, 0);
  }
  // Each success flips the block, so the final value is the parity of the successes.
  const final = (await run(i1, rw10(READ10, 100, 1))).data[0];
  assert.equal(final, wins % 2);
  assert.ok(wins >= 1);
  assert.equal(server.unit(0)?.lockedRanges, 0);
});

test('an aborted task waiting for an LBA range wakes on ABORT TASK SET and ends without I/O', async () => {
  const { server, device, i1, i2, task } = setup();
  device.hold('readv');
  const first = settle(server.execute(task(i1, compareAndWriteCdb(50, 1), cat(fill(BS, 0), fill(BS, 1)))));
  await tick();
  const t2 = task(i2, compareAndWriteCdb(50, 1), cat(fill(BS, 0), fill(BS, 2)));
  const second = settle(server.execute(t2));
  await tick();
  t2.aborted = true;
  server.abortTaskSet(0, i2);
  const o = await second;
  assert.equal(o.status, 0x40, 'TASK ABORTED');
  assert.equal(device.calls.filter((c) => c.op === 'readv').length, 1);
  device.unhold('readv');
  device.releaseHeld();
  good(await first);
  assert.equal(server.unit(0)?.lockedRanges, 0);
});
