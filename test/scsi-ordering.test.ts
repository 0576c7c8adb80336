// Task attributes (SIMPLE, ORDERED, HEAD OF QUEUE) and the data-in buffer pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { createRamDisk } from '../src/block/ram.ts';
import { ScsiDeviceServer } from '../src/scsi/device-server.ts';
import { DataBufferPool } from '../src/block/data-buffers.ts';
import { baseAligned } from '../src/block/buffer-alignment.ts';
import { TaskAttribute } from '../src/scsi/types.ts';
import { fakeTask, makeNexus, RecordingDevice, settle } from './support/scsi-task.ts';
import { hex } from './helpers-scsi.ts';

const READ10 = (lba: number): number[] => [0x28, 0, 0, 0, (lba >>> 8) & 0xff, lba & 0xff, 0, 0, 1, 0];

function setup() {
  const device = new RecordingDevice(createRamDisk(1 << 20));
  const server = new ScsiDeviceServer({
    luns: new Map([[0, { device, serial: 'O', deviceId: hex('6001405000000005') }]]),
    targetName: 'iqn.2026-01.test:order',
  });
  const nexus = makeNexus();
  const start = (lba: number, attribute: TaskAttribute) => settle(server.execute(fakeTask({ nexus, cdb: READ10(lba), attribute })));
  return { device, server, start };
}

test('an ORDERED task waits for the tasks before it, and the tasks after it wait for it', async () => {
  const { device, start } = setup();
  device.hold('readv');
  const a = start(1, TaskAttribute.SIMPLE);
  const b = start(2, TaskAttribute.SIMPLE);
  await tick();
  assert.equal(device.heldCount, 2);
  const o = start(3, TaskAttribute.ORDERED);
  const c = start(4, TaskAttribute.SIMPLE);
  const h = start(5, TaskAttribute.HEAD_OF_QUEUE);
  await tick();
  // Only the HEAD OF QUEUE task joined the two SIMPLE ones.
  assert.deepEqual(
    device.calls.map((x) => x.offset / 512),
    [1, 2, 5],
  );
  device.releaseHeld();
  await Promise.all([a, b, h]);
  await tick();
  assert.deepEqual(
    device.calls.map((x) => x.offset / 512),
    [1, 2, 5, 3],
    'the ORDERED task runs alone',
  );
  device.releaseHeld();
  await o;
  await tick();
  assert.deepEqual(
    device.calls.map((x) => x.offset / 512),
    [1, 2, 5, 3, 4],
  );
  device.unhold('readv');
  device.releaseHeld();
  assert.equal((await c).status, 0);
});

test('data-in buffers are page-aligned, sized by class, reused, and bounded when idle', () => {
  const pool = new DataBufferPool({ maxBufferBytes: 1 << 20, maxIdleBytes: 8 << 20 });
  const a = pool.take(512);
  assert.equal(a.view.byteLength, 512);
  assert.equal(a.bytes.byteLength, 4096);
  assert.equal(a.bytes.byteOffset % 4096, 0);
  assert.equal(baseAligned(a.bytes.buffer, 4096), 'yes');
  assert.equal(a.iov[0], a.view);
  const b = pool.take(4096 * 3);
  assert.equal(b.bytes.byteLength, 16384);
  assert.equal(b.bytes.byteOffset % 16384, 0);
  assert.equal(pool.leased, 2);
  a.release();
  a.release(); // a second call from the same lease is ignored
  assert.equal(pool.leased, 1);
  const c = pool.take(4096);
  assert.equal(c.bytes, a.bytes, 'reused');
  assert.equal(c.view.byteLength, 4096);
  const big = pool.take(3 << 20);
  assert.equal(big.view.byteLength, 3 << 20);
  big.release();
  b.release();
  c.release();
  assert.equal(pool.leased, 0);
  assert.ok(pool.idleBytes <= 8 << 20);
});
