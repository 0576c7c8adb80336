// The NBD client composed with the rest: against our own NBD server (Unix socket and TCP), as the
// store behind a LUN of our iSCSI target, and under a simulated guest (guest over blkback over the
// NBD client over nbdkit), with the bytes checked at the far end each time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRamDisk } from '../src/block/ram.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import { startIscsiTarget } from '../src/iscsi-target/run.ts';
import { startNbdServer } from '../src/nbd-server/run.ts';
import type { NbdBlockDevice } from '../src/nbd-client/device.ts';
import { randomIntegrity, writeReadBack } from './iscsi-initiator-helpers.ts';
import { nbdkitMissing, scratchDir, startNbdkit } from './nbd-client-helpers.ts';

const MiB = 1 << 20;

test('our NBD server over a Unix socket and over TCP: integrity at depth 16, trim, block status, the bytes in its store', async () => {
  const { dir, drop } = scratchDir('ours');
  const store = createRamDisk(16 * MiB, { name: 'ram:16M' });
  const tcp = await startNbdServer({
    listen: { kind: 'tcp', host: '127.0.0.1', port: 0 },
    exports: [{ name: 'disk', spec: 'ram' }],
    openStore: async () => store,
  });
  const unix = await startNbdServer({
    listen: { kind: 'unix', path: join(dir, 'nbd.sock') },
    exports: [{ name: 'disk', spec: 'ram' }],
    openStore: async () => store,
  });
  try {
    const port = tcp.address.kind === 'tcp' ? tcp.address.port : 0;
    const sock = unix.address.kind === 'unix' ? unix.address.path : '';
    for (const uri of [`nbd+unix:///disk?socket=${sock}`, `nbd://127.0.0.1:${port}/disk`]) {
      const dev = (await openBlockDevice(uri)) as NbdBlockDevice;
      try {
        assert.equal(dev.info.size, 16 * MiB, uri);
        assert.equal(dev.info.canDiscard, true, `${uri}: our server offers trim for a RAM disk`);
        await randomIntegrity(dev, { seedBytes: randomBytes(4), rounds: 2, depth: 16, maxBytes: 128 * 1024, store });
        {
          await dev.discard(0, 16 * MiB);
          const ext = await dev.blockStatus(0, 16 * MiB);
          assert.ok(
            ext.every((e) => !e.allocated),
            `${uri}: all holes after discarding everything: ${JSON.stringify(ext)}`,
          );
        }
      } finally {
        await dev.close();
      }
    }
  } finally {
    await unix.close().catch(() => undefined);
    await tcp.close().catch(() => undefined);
    drop();
  }
});

test('a LUN of our iSCSI target backed by an nbd+unix store: what the initiator writes is in the NBD export', async (t) => {
  if (nbdkitMissing(t)) return;
  const { dir, drop } = scratchDir('lun');
  const peer = await startNbdkit(join(dir, 'sock'), ['memory', '16M']);
  const target = await startIscsiTarget({
    portal: { host: '127.0.0.1', port: 0 },
    targetName: 'iqn.2026-12.org.blkback:nbd-lun',
    luns: [{ lun: 0, spec: peer.uri, thin: true }],
    allow: 'ALL',
    allowPaths: [],
  });
  const direct = await openBlockDevice(peer.uri);
  try {
    const initiator = await openBlockDevice(`iscsi://127.0.0.1:${target.portal.port}/iqn.2026-12.org.blkback:nbd-lun/0`);
    try {
      assert.equal(initiator.info.size, 16 * MiB);
      await writeReadBack(initiator, 2 * MiB, direct);
    } finally {
      await initiator.close();
    }
  } finally {
    await direct.close();
    await target.close();
    await peer.kill();
    drop();
  }
});

test("--map /dev/sdb=nbd+unix://...: a guest writes through blkback and our NBD client, fio verifies, the bytes are in nbdkit's memory", async (t) => {
  if (nbdkitMissing(t)) return;
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const guestCfg = fileURLToPath(new URL('../../examples/guest-phy.cfg', import.meta.url));
  const { dir, drop } = scratchDir('guest');
  const peer = await startNbdkit(join(dir, 'sock'), ['memory', '32M']);
  const job = join(dir, 'verify.fio');
  writeFileSync(job, '[v]\nfilename=/dev/xvda\nrw=randwrite\nbs=16k\niodepth=16\nsize=4m\nverify=crc32c\ndo_verify=1\nverify_fatal=1\n');
  try {
    const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const child = spawn(process.execPath, [main, 'fio', '--guest', guestCfg, '--map', `/dev/sdb=${peer.uri}`, job], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (b: Buffer) => (text += b));
      child.stderr.on('data', (b: Buffer) => (text += b));
      child.on('close', (code) => resolve({ code, text }));
    });
    assert.equal(out.code, 0, out.text);
    assert.match(out.text, /WRITE: bw=/);
    assert.doesNotMatch(out.text, /verify: bad|err=\s*[1-9]/);
    // fio verified through the guest; the export itself holds the blocks too (read on a new connection)
    const direct = await openBlockDevice(peer.uri);
    try {
      const head = Buffer.alloc(4 * MiB);
      await direct.readv(0, [head]);
      let written = 0;
      for (let at = 0; at < head.length; at += 16 * 1024) if (head.subarray(at, at + 16 * 1024).some((b) => b !== 0)) written++;
      assert.equal(written, 256, "every 16 KiB block of the job's 4 MiB reached the export");
    } finally {
      await direct.close();
    }
  } finally {
    await peer.kill();
    drop();
  }
});

test('blkback run: an xl config with the real-xl line (backendtype=phy, script=/bin/true, target=nbd+unix://...) writes into the export', async (t) => {
  if (nbdkitMissing(t)) return;
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const { dir, drop } = scratchDir('xl');
  const peer = await startNbdkit(join(dir, 'sock'), ['memory', '32M']);
  try {
    const cfg = join(dir, 'guest-nbd.cfg');
    writeFileSync(
      cfg,
      `name = "nbd-guest"\nmemory = 128\nvcpus = 1\ndisk = [ 'vdev=xvda, access=rw, backendtype=phy, script=/bin/true, target=${peer.uri}' ]\n`,
    );
    const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const child = spawn(process.execPath, [main, 'run', cfg, '--operations', '400', '--length', '2M', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (b: Buffer) => (text += b));
      child.stderr.on('data', (b: Buffer) => (text += b));
      child.on('close', (code) => resolve({ code, text }));
    });
    assert.equal(out.code, 0, out.text);
    // the integrity load ends by writing and reading back its region: the data is in the export
    const direct = await openBlockDevice(peer.uri);
    try {
      const head = Buffer.alloc(2 * MiB);
      await direct.readv(0, [head]);
      assert.ok(
        head.some((b) => b !== 0),
        "the guest's writes reached nbdkit",
      );
    } finally {
      await direct.close();
    }
  } finally {
    await peer.kill();
    drop();
  }
});
