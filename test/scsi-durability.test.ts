// Durability through the device server: FUA reaches the device (or is emulated), WCE 0 makes every
// write durable, SYNCHRONIZE CACHE flushes (checked with a simulated power cut), a file-backed LU
// keeps what it acknowledged, and device failures become the right sense data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRamDisk } from '../src/block/ram.ts';
import { createVolatileCache } from '../src/block/volatile-cache.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { BlockError, Errno } from '../src/internal/errors.ts';
import { ScsiDeviceServer } from '../src/scsi/device-server.ts';
import { fakeTask, makeNexus, RecordingDevice, settle } from './support/scsi-task.ts';
import type { Outcome } from './support/scsi-task.ts';
import { hex, READ10, rw10, SYNC10, toHex, WRITE10 } from './helpers-scsi.ts';

const BS = 512;
const FUA = 0x08;

function serve(device: BlockDevice) {
  const server = new ScsiDeviceServer({
    luns: new Map([[0, { device, serial: 'D', deviceId: hex('6001405000000004') }]]),
    targetName: 'iqn.2026-01.test:durable',
  });
  const nexus = makeNexus();
  const run = (cdb: number[], data?: Uint8Array): Promise<Outcome> => settle(server.execute(fakeTask({ nexus, cdb, ...(data === undefined ? {} : { data }) })));
  return { server, run };
}
const good = (o: Outcome): void => assert.equal(o.status, 0, o.sense === undefined ? `status ${o.status}` : toHex(o.sense));
function sense(o: Outcome, key: number, asc: number, ascq: number): void {
  assert.equal(o.status, 2);
  const s = o.sense as Uint8Array;
  assert.deepEqual([s[2], s[12], s[13]], [key, asc, ascq], toHex(s));
}

test('the FUA bit reaches the device as WRITE_FUA, and only with FUA', async () => {
  const dev = new RecordingDevice(createRamDisk(1 << 20));
  const { run } = serve(dev);
  good(await run(rw10(WRITE10, 1, 1, FUA), new Uint8Array(BS)));
  good(await run(rw10(WRITE10, 2, 1), new Uint8Array(BS)));
  good(await run([0xaa, FUA, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0], new Uint8Array(BS)));
  const writes = dev.calls.filter((c) => c.op === 'writev').map((c) => [c.offset / BS, c.flags]);
  assert.deepEqual(writes, [
    [1, 1],
    [2, 0],
    [3, 1],
  ]);
});

test('a device without FUA gets a write and a flush for a FUA write', async () => {
  const dev = new RecordingDevice(createRamDisk(1 << 20));
  dev.infoOverride = { canFua: false };
  const { run } = serve(dev);
  good(await run(rw10(WRITE10, 1, 1, FUA), new Uint8Array(BS)));
  assert.deepEqual(
    dev.calls.map((c) => [c.op, c.flags]),
    [
      ['writev', 0],
      ['flush', 0],
    ],
  );
});

test('on a volatile-cache device WCE is 1 and changeable; clearing it makes every write FUA', async () => {
  const dev = new RecordingDevice(createVolatileCache(createRamDisk(1 << 20)));
  const { run } = serve(dev);
  const caching = await run([0x1a, 0x08, 0x08, 0, 255, 0]);
  assert.equal(toHex(caching.data.subarray(4, 7)), '081204');
  const changeable = await run([0x1a, 0x08, 0x48, 0, 255, 0]);
  assert.equal(changeable.data[6], 0x04);
  good(await run(rw10(WRITE10, 1, 1), new Uint8Array(BS)));
  good(await run([0x15, 0x10, 0, 0, 24, 0], hex('00000000 08 12 00 00 0000 0000 0000 0000 00 00 0000 00 00 0000')));
  good(await run(rw10(WRITE10, 2, 1), new Uint8Array(BS)));
  assert.deepEqual(
    dev.calls.filter((c) => c.op === 'writev').map((c) => c.flags),
    [0, 1],
  );
  // A RAM disk has no volatile cache: WCE 0, not changeable.
  const plain = serve(createRamDisk(1 << 20));
  assert.equal(toHex((await plain.run([0x1a, 0x08, 0x08, 0, 255, 0])).data.subarray(4, 7)), '081200');
  sense(await plain.run([0x15, 0x10, 0, 0, 24, 0], hex('00000000 08 12 04 00 0000 0000 0000 0000 00 00 0000 00 00 0000')), 5, 0x26, 0);
});

test('SYNCHRONIZE CACHE makes acknowledged writes survive a power cut; without it they may be lost', async () => {
  const cache = createVolatileCache(createRamDisk(1 << 20));
  const { run } = serve(cache);
  const a = new Uint8Array(4 * BS).fill(0xa1);
  const b = new Uint8Array(4 * BS).fill(0xb2);
  const c = new Uint8Array(BS).fill(0xc3);
  good(await run(rw10(WRITE10, 0, 4), a));
  good(await run(rw10(SYNC10, 0, 0)));
  good(await run(rw10(WRITE10, 8, 4), b));
  good(await run(rw10(WRITE10, 16, 1, FUA), c));
  await cache.powerCut();
  assert.ok(
    (await run(rw10(READ10, 0, 4))).data.every((x) => x === 0xa1),
    'synchronized data survives',
  );
  assert.ok(
    (await run(rw10(READ10, 8, 4))).data.every((x) => x === 0),
    'unsynchronized data is gone',
  );
  assert.ok(
    (await run(rw10(READ10, 16, 1))).data.every((x) => x === 0xc3),
    'FUA data survives',
  );
  // SYNCHRONIZE CACHE(16) over a range flushes too.
  good(await run(rw10(WRITE10, 8, 4), b));
  good(await run([0x91, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0]));
  await cache.powerCut();
  assert.ok((await run(rw10(READ10, 8, 4))).data.every((x) => x === 0xb2));
});

test('a file-backed LU (file:) keeps what it acknowledged, byte for byte', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'scsi-file-'));
  const path = join(dir, 'disk.img');
  try {
    await writeFile(path, new Uint8Array(0));
    await truncate(path, 1 << 20);
    const device = await openBlockDevice(`file:${path}`);
    const { server, run } = serve(device);
    const data = new Uint8Array(8 * BS);
    for (let i = 0; i < data.byteLength; i++) data[i] = (i * 13) & 0xff;
    good(await run(rw10(WRITE10, 3, 8), data));
    good(await run(rw10(SYNC10, 0, 0)));
    assert.equal(toHex((await run(rw10(READ10, 3, 8))).data), toHex(data));
    // The caching page says the page cache is a volatile cache.
    assert.equal((await run([0x1a, 0x08, 0x08, 0, 255, 0])).data[6], 0x04);
    await server.close();
    const onDisk = await readFile(path);
    assert.equal(toHex(onDisk.subarray(3 * BS, 11 * BS)), toHex(data));
    assert.ok(onDisk.subarray(0, 3 * BS).every((x) => x === 0));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('device failures: EIO on read is MEDIUM ERROR, ENOSPC on write is SPACE ALLOCATION FAILED', async () => {
  const dev = new RecordingDevice(createRamDisk(1 << 20));
  dev.readv = () => Promise.reject(new BlockError('BLK_ERR_IO', 'bad sector', { errno: Errno.EIO }));
  dev.writev = () => Promise.reject(new BlockError('BLK_ERR_IO', 'full', { errno: Errno.ENOSPC }));
  dev.flush = () => Promise.reject(new BlockError('BLK_ERR_IO', 'gone', { errno: Errno.EIO }));
  const { server, run } = serve(dev);
  sense(await run(rw10(READ10, 0, 1)), 3, 0x11, 0x00);
  sense(await run(rw10(WRITE10, 0, 1), new Uint8Array(BS)), 7, 0x27, 0x07);
  sense(await run(rw10(SYNC10, 0, 0)), 3, 0x0c, 0x00);
  assert.equal(server.leasedBuffers, 0, 'the read buffer went back');
  assert.deepEqual(server.stats()[0]?.errors, { MEDIUM_ERROR: 2, DATA_PROTECT: 1 });
});
