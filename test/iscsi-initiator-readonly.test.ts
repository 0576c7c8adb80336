// A write-protected LUN through our initiator: the device learns the WP bit from MODE SENSE after
// login and opens read-only (info.readOnly), refuses writes, discards and write-zeroes itself with
// EROFS (nothing is sent), still reads; blkback then gives the guest a read-only disk
// (VDISK_READONLY), and the guest's write fails. A writable LUN stays writable; a device opened
// read-only on a writable LUN behaves the same as one on a write-protected LUN. A target that
// refuses MODE SENSE(6) is asked with MODE SENSE(10).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { startIscsiTarget } from '../src/iscsi-target/run.ts';
import type { RunningIscsiTarget, StartIscsiTargetOptions } from '../src/iscsi-target/run.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { WRITE_FUA } from '../src/block/types.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import type { IscsiBlockDevice } from '../src/iscsi-initiator/device.ts';
import { VDISK_READONLY } from '../src/blkif/constants.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { WRITE_PATTERN } from './helpers-guest.ts';
import { modeSense10Cdb, modeSense6Cdb, parseWriteProtect } from '../src/iscsi-initiator/scsi-cdb.ts';

const TARGET = 'iqn.2026-12.org.blkback:ro-test';
const MiB = 1 << 20;
const EROFS = 30;

async function withTarget(readOnly: boolean, fn: (t: RunningIscsiTarget, store: BlockDevice) => Promise<void>): Promise<void> {
  const store = createRamDisk(8 * MiB, { name: 'ram:8M' });
  const options: StartIscsiTargetOptions = {
    portal: { host: '127.0.0.1', port: 0 },
    targetName: TARGET,
    luns: [{ lun: 0, spec: 'test', thin: true, readOnly }],
    allow: 'ALL',
    allowPaths: [],
    openStore: async () => store,
  };
  const t = await startIscsiTarget(options);
  try {
    await fn(t, store);
  } finally {
    await t.close();
  }
}

const url = (t: RunningIscsiTarget): string => `iscsi://127.0.0.1:${t.portal.port}/${TARGET}/0`;

async function open(spec: string, readOnly = false): Promise<IscsiBlockDevice> {
  return (await openBlockDevice(spec, { readOnly })) as IscsiBlockDevice;
}

/** Every write path fails with EROFS naming the reason, and not one command goes to the target. */
async function assertWritesRefused(dev: IscsiBlockDevice, reason: RegExp): Promise<void> {
  const sent = dev.counters.commands;
  const refused = (what: RegExp) => (e: Error & { errno: number }) => {
    assert.equal(e.errno, EROFS, e.message);
    assert.match(e.message, what);
    assert.match(e.message, reason);
    assert.doesNotMatch(e.message, /\n/);
    return true;
  };
  await assert.rejects(dev.writev(0, [Buffer.alloc(4096, 1)]), refused(/write refused: read-only disk/));
  await assert.rejects(dev.writev(0, [Buffer.alloc(4096, 1)], WRITE_FUA), refused(/write refused/));
  await assert.rejects(dev.discard(0, 4096), refused(/discard refused/));
  await assert.rejects(dev.writeZeroes(0, 4096), refused(/write-zeroes refused/));
  await dev.flush(); // nothing of ours to make durable: not an error
  assert.equal(dev.counters.commands, sent, 'refused locally, nothing sent');
}

test('a write-protected LUN (our target --read-only) opens read-only: info.readOnly, writes refused with EROFS locally, reads intact', async () => {
  await withTarget(true, async (t, store) => {
    const data = randomBytes(64 * 1024);
    await store.writev(MiB, [data]);
    const dev = await open(url(t));
    try {
      assert.equal(dev.info.readOnly, true);
      assert.equal(dev.info.canDiscard, false, 'no discard on a read-only disk');
      assert.equal(dev.info.size, store.info.size);
      await assertWritesRefused(dev, /the target reports the LUN write-protected/);
      const back = Buffer.alloc(data.byteLength);
      await dev.readv(MiB, [back]);
      assert.deepEqual(back, data);
      const inStore = Buffer.alloc(4096);
      await store.readv(0, [inStore]);
      assert.ok(
        inStore.every((b) => b === 0),
        'the store was not written',
      );
    } finally {
      await dev.close();
    }
  });
});

test('a writable LUN stays writable; opened read-only it refuses writes the same way', async () => {
  await withTarget(false, async (t, store) => {
    const dev = await open(url(t));
    try {
      assert.equal(dev.info.readOnly, false);
      assert.equal(dev.info.canDiscard, true);
      const data = randomBytes(8192);
      await dev.writev(0, [data]);
      await dev.flush();
      const back = Buffer.alloc(data.byteLength);
      await store.readv(0, [back]);
      assert.deepEqual(back, data);
    } finally {
      await dev.close();
    }
    const ro = await open(url(t), true);
    try {
      assert.equal(ro.info.readOnly, true);
      await assertWritesRefused(ro, /opened read-only/);
    } finally {
      await ro.close();
    }
  });
});

/** Reads backend key `key` once the backend is Connected (state 4), when blkback has written its keys. */
async function readWhenConnected(host: SimHost, backend: string, key: string): Promise<string | undefined> {
  for (let i = 0; i < 500; i++) {
    if ((await host.xs.tryRead(`${backend}/state`)) === '4') return host.xs.tryRead(`${backend}/${key}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`${backend} never reached Connected`);
}

for (const readOnly of [true, false]) {
  test(`a guest on ${readOnly ? 'a write-protected' : 'a writable'} iSCSI LUN (disk access=rw): blkback advertises info ${readOnly ? 'with' : 'without'} VDISK_READONLY, and the guest's write ${readOnly ? 'fails' : 'lands'}`, {
    timeout: 30_000,
  }, async () => {
    await withTarget(readOnly, async (t, store) => {
      const host = await SimHost.start();
      try {
        const g = await host.createGuest(
          { name: 'ro-guest', memoryMiB: 16, disks: [{ target: url(t), vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
          { workload: WRITE_PATTERN, params: { offset: 0, length: 64 * 1024, bs: 4096, iodepth: 4, seed: 7, generation: 1 } },
        );
        // the guest may finish (or fail) while we read xenstore: take its outcome now, not later
        const outcome = g.result.then(
          () => null,
          (e: unknown) => e as Error,
        );
        const info = await readWhenConnected(host, `/local/domain/0/backend/vbd/${g.domid}/51712`, 'info');
        assert.equal((Number(info) & VDISK_READONLY) !== 0, readOnly, `backend info=${info}`);
        const head = Buffer.alloc(64 * 1024);
        if (readOnly) {
          const failed = await outcome;
          assert.match(String(failed?.message), /read-only/, "the guest's write fails");
          await store.readv(0, [head]);
          assert.ok(
            head.every((b) => b === 0),
            'nothing reached the store',
          );
        } else {
          assert.equal(await outcome, null, "the guest's writes succeed");
          await store.readv(0, [head]);
          assert.ok(
            head.some((b) => b !== 0),
            "the guest's writes reached the store",
          );
        }
      } finally {
        await host.stop();
      }
    });
  });
}

test('MODE SENSE CDBs and the WP bit of either header, against hand-written bytes', () => {
  const c6 = new Uint8Array(16);
  modeSense6Cdb(c6);
  assert.deepEqual([...c6.subarray(0, 6)], [0x1a, 0x00, 0x3f, 0x00, 192, 0x00]); // all pages, current values
  const c10 = new Uint8Array(16);
  modeSense10Cdb(c10);
  assert.deepEqual([...c10.subarray(0, 10)], [0x5a, 0x00, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0x00]);
  // MODE SENSE(6) header: data length, medium type, device-specific parameter (WP 0x80, DPOFUA 0x10), bd length
  assert.equal(parseWriteProtect(Uint8Array.of(3, 0, 0x90, 0), 4, false), true);
  assert.equal(parseWriteProtect(Uint8Array.of(3, 0, 0x10, 0), 4, false), false);
  // MODE SENSE(10) header: 2-byte length, medium type, device-specific parameter at byte 3
  assert.equal(parseWriteProtect(Uint8Array.of(0, 6, 0, 0x80, 0, 0, 0, 0), 8, true), true);
  assert.equal(parseWriteProtect(Uint8Array.of(0, 6, 0x80, 0, 0, 0, 0, 0), 8, true), false);
  assert.equal(parseWriteProtect(Uint8Array.of(3, 0, 0x80, 0), 3, false), null, 'short: no header');
});

/**
 * A relay in front of our target that turns the initiator's MODE SENSE(6) CDBs into an opcode no
 * target knows, so the target answers CHECK CONDITION (invalid command): as a target without
 * MODE SENSE(6) would. No digests on this connection, so requests are re-framed by hand.
 */
async function refuseModeSense6(targetPort: number): Promise<{ port: number; rewritten: () => number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let rewritten = 0;
  const server = net.createServer((client) => {
    const upstream = net.createConnection({ host: '127.0.0.1', port: targetPort });
    sockets.add(client).add(upstream);
    let input = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      input = Buffer.concat([input, chunk]);
      while (input.length >= 48) {
        const length = input.readUIntBE(5, 3);
        const total = 48 + input[4]! * 4 + length + ((4 - (length % 4)) % 4);
        if (input.length < total) break;
        const pdu = Buffer.from(input.subarray(0, total));
        input = input.subarray(total);
        if ((pdu[0]! & 0x3f) === 0x01 && pdu[32] === 0x1a) {
          pdu[32] = 0xff;
          rewritten++;
        }
        upstream.write(pdu);
      }
    });
    upstream.on('data', (c: Buffer) => client.write(c));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('close', end);
      s.on('error', end);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    rewritten: () => rewritten,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

test('a target that refuses MODE SENSE(6): the WP bit comes from MODE SENSE(10)', async () => {
  await withTarget(true, async (t) => {
    const relay = await refuseModeSense6(t.portal.port);
    try {
      const dev = await open(`iscsi://127.0.0.1:${relay.port}/${TARGET}/0`);
      try {
        assert.equal(relay.rewritten(), 1, 'MODE SENSE(6) was asked once, and refused');
        assert.equal(dev.info.readOnly, true);
        await assert.rejects(dev.writev(0, [Buffer.alloc(512)]), (e: Error & { errno: number }) => e.errno === EROFS);
      } finally {
        await dev.close();
      }
    } finally {
      await relay.close();
    }
  });
});
