// rbd: stores on a real Ceph cluster (one mon, one memstore OSD, brought up once for this file by
// test/support/ceph-cluster.ts): bytes through our librbd binding checked with Ceph's own `rbd export`,
// a guest verifying its disk through blkback, snapshots read-only, resize (ours, and another
// client's followed by the guest), and the errors users meet, each one line naming the spec.
import { after, before, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { WRITE_FUA } from '../src/block/types.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { ResizeResult } from './fixtures/guest2/resize.ts';
import { countBadSectors, VERIFY } from './helpers-guest.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';
import { cephMissing, startCephCluster } from './support/ceph-cluster.ts';
import type { CephCluster } from './support/ceph-cluster.ts';

const RESIZE = new URL('./fixtures/guest2/resize.js', import.meta.url);
const MiB = 1 << 20;
const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

let cluster: CephCluster | undefined;

before(async () => {
  if (cephMissing(1) === undefined) cluster = await startCephCluster({ osds: 1, osdBytes: 512 * MiB });
});

after(async () => {
  await cluster?.teardown();
});

/** The cluster, or undefined after skipping `t` (failing it under CI=true) when Ceph is not installed. */
function up(t: TestContext): CephCluster | undefined {
  if (stopIfMissing(t, cephMissing(1))) return undefined;
  assert.ok(cluster !== undefined, 'the cluster came up');
  return cluster;
}

async function newImage(c: CephCluster, name: string, size: string): Promise<string> {
  await c.cli('rbd', ['create', '--size', size, '--image-feature', 'layering', `rbd/${name}`]);
  return `rbd:rbd/${name}:conf=${c.conf}`;
}

/** The image's bytes as Ceph's own client reads them. */
async function exported(c: CephCluster, image: string): Promise<Uint8Array> {
  const file = join(c.dir, `${image.replace(/[/@]/g, '_')}.export`);
  await c.cli('rbd', ['export', '--no-progress', `rbd/${image}`, file]);
  return new Uint8Array(readFileSync(file));
}

function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

test('bytes written through the store (one buffer, several, FUA, write-zeroes, discard) are what Ceph exports', async (t) => {
  const c = up(t);
  if (c === undefined) return;
  const dev = await openBlockDevice(await newImage(c, 'bytes', '16M'));
  try {
    assert.equal(dev.info.size, 16 * MiB);
    const a = pattern(1 * MiB, 1);
    const b = pattern(300 * 512, 2);
    await dev.writev(0, [a]);
    // Several buffers, odd-sized and at odd offsets inside their ArrayBuffers: one rbd_aio_writev.
    const backing = pattern(8 * MiB, 3);
    await dev.writev(4 * MiB, [backing.subarray(512, 512 + 3 * 512), backing.subarray(7 * 512, 7 * 512 + 64 * 1024)], WRITE_FUA);
    await dev.writev(6 * MiB + 512, [b]);
    await dev.writeZeroes(64 * 1024, 128 * 1024);
    await dev.discard(8 * MiB, 4 * MiB); // one whole object: nothing of it must remain
    await dev.flush();

    const expected = new Uint8Array(16 * MiB);
    expected.set(a, 0);
    expected.fill(0, 64 * 1024, 192 * 1024);
    expected.set(backing.subarray(512, 512 + 3 * 512), 4 * MiB);
    expected.set(backing.subarray(7 * 512, 7 * 512 + 64 * 1024), 4 * MiB + 3 * 512);
    expected.set(b, 6 * MiB + 512);
    const got = await exported(c, 'bytes');
    assert.equal(got.length, expected.length);
    assert.ok(Buffer.from(got).equals(Buffer.from(expected)), 'rbd export reads exactly what was written');

    // And our reads, into several buffers, return the same bytes.
    const r1 = new Uint8Array(3 * 512);
    const r2 = new Uint8Array(64 * 1024);
    await dev.readv(4 * MiB, [r1, r2]);
    assert.ok(Buffer.from(r1).equals(Buffer.from(expected.subarray(4 * MiB, 4 * MiB + 3 * 512))));
    assert.ok(Buffer.from(r2).equals(Buffer.from(expected.subarray(4 * MiB + 3 * 512, 4 * MiB + 3 * 512 + 64 * 1024))));
  } finally {
    await dev.close();
  }
});

test('a request librbd refuses fails alone with its errno; close with requests in flight settles them all, then refuses more', async (t) => {
  const c = up(t);
  if (c === undefined) return;
  const dev = await openBlockDevice(await newImage(c, 'edges', '4M'));
  const data = pattern(4 * MiB, 11);
  await dev.writev(0, [data]);
  // Many vectors (more than Linux's IOV_MAX; the iovec scratch grows), and none at all.
  const many = Array.from({ length: 1500 }, (_, i) => pattern(512, 100 + i));
  await dev.writev(MiB, many);
  const back = Array.from({ length: 1500 }, () => new Uint8Array(512));
  await dev.readv(MiB, back);
  assert.ok(Buffer.concat(back).equals(Buffer.concat(many)), '1500 vectors written and read back');
  await dev.writev(0, []);
  await dev.readv(0, []);
  data.set(Buffer.concat(many), MiB);
  // Past the end: callers validate ranges, but a size that shrank under us must still fail cleanly.
  await assert.rejects(dev.readv(4 * MiB, [new Uint8Array(512)]), (e: Error & { errno?: number }) => e.errno === 22 && /read failed/.test(e.message));
  const reads = Array.from({ length: 64 }, (_, i) => {
    const b = new Uint8Array(64 * 1024);
    return dev.readv(i * 64 * 1024, [b]).then(() => Buffer.from(b).equals(Buffer.from(data.subarray(i * 64 * 1024, (i + 1) * 64 * 1024))));
  });
  await dev.close(); // with 64 reads in flight: no deadlock, every read settles first
  assert.deepEqual(await Promise.all(reads), new Array<boolean>(64).fill(true), 'each read in flight at close got its bytes');
  await assert.rejects(dev.readv(0, [new Uint8Array(512)]), /closed/);
});

test('a guest verifies its disk through blkback on an rbd: store, and the data is in the image', async (t) => {
  const c = up(t);
  if (c === undefined) return;
  const spec = await newImage(c, 'guest', '32M');
  const host = await SimHost.start();
  const dev = await openBlockDevice(spec);
  try {
    host.registerStore('ceph', dev);
    const guest = await host.createGuest(
      { name: 'on-ceph', memoryMiB: 32, disks: [{ target: 'ceph', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: VERIFY, params: { operations: 1500, iodepth: 16, seed: 17, flushEvery: 100 } },
    );
    const r = (await guest.result) as { mismatches: number; writes: number; reads: number; firstMismatches: string[] };
    assert.equal(r.mismatches, 0, r.firstMismatches.join('\n'));
    assert.ok(r.writes > 500 && r.reads > 500, `the guest did I/O (${r.writes} writes, ${r.reads} reads)`);
    const image = await exported(c, 'guest');
    assert.ok(
      image.some((x) => x !== 0),
      "the guest's writes are in the image as Ceph reads it",
    );
  } finally {
    await host.stop();
    await dev.close(); // registered stores stay the caller's
  }
});

test("blkback fio --disk 'vdev=xvda,access=rw,target=rbd:...': our fio runner in a guest verifies every block, and each is in the image", async (t) => {
  const c = up(t);
  if (c === undefined) return;
  const spec = await newImage(c, 'cli', '8M');
  const job = join(c.dir, 'verify.fio');
  writeFileSync(job, '[v]\nfilename=/dev/xvda\nioengine=libaio\nrw=randwrite\nbs=16k\niodepth=16\nsize=4m\nverify=crc32c\ndo_verify=1\nverify_fatal=1\n');
  const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
    const child = spawn(process.execPath, [main, 'fio', '--disk', `vdev=xvda,access=rw,target=${spec}`, job], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (b: Buffer) => (text += b.toString()));
    child.stderr.on('data', (b: Buffer) => (text += b.toString()));
    child.on('close', (code) => resolve({ code, text }));
  });
  assert.equal(out.code, 0, out.text);
  assert.match(out.text, /WRITE: bw=/);
  const image = await exported(c, 'cli');
  for (let at = 0; at < 4 * MiB; at += 16 * 1024) {
    assert.ok(
      image.subarray(at, at + 16 * 1024).some((x) => x !== 0),
      `block at ${at} is in the image`,
    );
  }
});

test('rbd:POOL/IMAGE@SNAP opens read-only and reads the snapshot, not what was written after it', async (t) => {
  const c = up(t);
  if (c === undefined) return;
  const spec = await newImage(c, 'snapped', '8M');
  const before = pattern(2 * MiB, 5);
  const afterSnap = pattern(2 * MiB, 6);
  const dev = await openBlockDevice(spec);
  let snap: BlockDevice | undefined;
  try {
    await dev.writev(0, [before]);
    await dev.flush();
    await c.cli('rbd', ['snap', 'create', 'rbd/snapped@s1']);
    await dev.writev(0, [afterSnap]);
    await dev.flush();
    snap = await openBlockDevice(`rbd:rbd/snapped@s1:conf=${c.conf}`);
    assert.equal(snap.info.readOnly, true, 'a snapshot is read-only');
    const r = new Uint8Array(2 * MiB);
    await snap.readv(0, [r]);
    assert.ok(Buffer.from(r).equals(Buffer.from(before)), 'the snapshot holds the data from before it');
    await dev.readv(0, [r]);
    assert.ok(Buffer.from(r).equals(Buffer.from(afterSnap)), 'the image holds the newer data');
    await assert.rejects(snap.writev(0, [r.subarray(0, 512)]), (e: Error & { errno?: number }) => e.errno === 30, 'writes to a snapshot: EROFS');
    await assert.rejects(snap.discard(0, 512), (e: Error & { errno?: number }) => e.errno === 30);
  } finally {
    await snap?.close();
    await dev.close();
  }
});

test('resize: ours reaches the cluster, and a resize by another client reaches the guest, which writes at the new end', async (t) => {
  const c = up(t);
  if (c === undefined) return;
  const spec = await newImage(c, 'growing', '16M');
  const dev = await openBlockDevice(spec);
  assert.ok(dev.resize !== undefined);
  await dev.resize(20 * MiB);
  const info = JSON.parse(await c.cli('rbd', ['info', '--format', 'json', 'rbd/growing'])) as { size: number };
  assert.equal(info.size, 20 * MiB, 'the cluster has the new size');

  const host = await SimHost.start();
  try {
    host.registerStore('grow', dev);
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const guest = await host.createGuest(
      { name: 'grower', memoryMiB: 32, disks: [{ target: 'grow', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: RESIZE, params: { seed: 43, maxWaitMs: 15_000 }, onReport: () => ready() },
    );
    await isReady;
    await c.cli('rbd', ['resize', '--size', '40M', 'rbd/growing']); // another client
    const r = (await guest.result) as ResizeResult;
    assert.equal(r.oldSize, 20 * MiB);
    assert.equal(r.newSize, 40 * MiB, `the guest saw the size another client set (after ${r.waitedMs.toFixed(0)} ms)`);
    assert.equal(r.writeError, null);
    assert.equal(r.mismatches, 0, 'the last 64 KiB of the grown disk read back as written');
    assert.equal(await countBadSectors(dev, 40 * MiB - (64 << 10), 64 << 10, 43, 3), 0, 'and the image holds it');
  } finally {
    await host.stop();
    await dev.close();
  }
});

test('errors name the spec and say what is wrong, within seconds: pool, image, snapshot, user, conf, unreachable cluster', async (t) => {
  const c = up(t);
  if (c === undefined) return;
  await newImage(c, 'exists', '4M');
  const cases: [string, RegExp][] = [
    [`rbd:nopool/img:conf=${c.conf}`, /no such pool 'nopool'/],
    [`rbd:rbd/nothere:conf=${c.conf}`, /no such image rbd\/nothere/],
    [`rbd:rbd/exists@nosnap:conf=${c.conf}`, /has no snapshot 'nosnap'/],
    [`rbd:rbd/exists:id=nobody:conf=${c.conf}`, /client\.nobody/],
    [`rbd:rbd/exists:conf=${c.dir}/missing.conf`, /cannot read Ceph configuration .*missing\.conf/],
    // A monitor address nobody answers on (our own mon's address, a port it does not listen on).
    [`rbd:rbd/exists:conf=${c.conf}:mon_host=127.0.0.1\\:9:client_mount_timeout=2`, /did not answer within 2 s|cannot connect/],
  ];
  for (const [spec, why] of cases) {
    const start = Date.now();
    await assert.rejects(
      openBlockDevice(spec),
      (err: Error) => {
        assert.ok(err.message.includes(spec), `names the spec: ${err.message}`);
        assert.match(err.message, why);
        assert.ok(!err.message.includes('\n'), 'one line');
        return true;
      },
      spec,
    );
    assert.ok(Date.now() - start < 20_000, `${spec} failed in ${Date.now() - start} ms`);
  }
});

test('blkback nbd-server exports an rbd: image, and nbdcopy copies out exactly what Ceph exports', async (t) => {
  const c = up(t);
  if (c === undefined) return;
  if (stopIfMissing(t, missingTools(['nbdcopy'], 'libnbd-bin'))) return;
  const spec = await newImage(c, 'served', '8M');
  const dev = await openBlockDevice(spec);
  try {
    await dev.writev(MiB, [pattern(3 * MiB, 9)]);
    await dev.flush();
  } finally {
    await dev.close();
  }
  const socket = join(c.dir, 'nbd.sock');
  // The conf file is read for the clients' sake: it must pass the server's path policy.
  const server = spawn(process.execPath, [main, 'nbd-server', '--listen', `unix:${socket}`, '--allow-path', c.dir, '--export', `img=${spec}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  server.stderr.on('data', (b: Buffer) => (log += b.toString()));
  try {
    const end = Date.now() + 20_000;
    while (!existsSync(socket)) {
      assert.ok(server.exitCode === null, `the server exited: ${log}`);
      assert.ok(Date.now() < end, `no socket after 20 s: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const out = join(c.dir, 'nbdcopy.raw');
    const copied = await run('nbdcopy', [`nbd+unix:///img?socket=${socket}`, out]);
    assert.equal(copied.code, 0, copied.stderr + log);
    const viaNbd = new Uint8Array(readFileSync(out));
    const viaCeph = await exported(c, 'served');
    assert.equal(viaNbd.length, 8 * MiB);
    assert.ok(
      viaCeph.subarray(MiB, 4 * MiB).some((x) => x !== 0),
      'the image holds the pattern',
    );
    assert.ok(Buffer.from(viaNbd).equals(Buffer.from(viaCeph)), 'nbdcopy read through our server what rbd export reads');
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode !== null ? r(undefined) : server.once('exit', r)));
  }
});
