// The NBD client as a store (src/nbd-client) against real servers: nbdkit (memory plugin, with
// filters that take capabilities away) and qemu-nbd. Bytes written are the bytes read back, holes
// read as zeroes and show in block status, capabilities follow the server's flags, lost connections
// are survived (or reported: never silently), and failures to connect are one-line errors naming why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { openSync, closeSync, ftruncateSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { WRITE_FUA } from '../src/block/types.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import { checkStoreSpec, openStoreUnderPolicy } from '../src/stores/path-policy.ts';
import type { NbdBlockDevice } from '../src/nbd-client/device.ts';
import { BlockError, Errno } from '../src/internal/errors.ts';
import { randomIntegrity } from './iscsi-initiator-helpers.ts';
import { Relay, makeX509, nbdkitMissing, qemuNbdMissing, scratchDir, startNbdkit, startQemuNbd } from './nbd-client-helpers.ts';
import { missingTools, stopIfMissing } from './helpers-tools.ts';
import { copyFileSync, mkdirSync } from 'node:fs';

const MiB = 1 << 20;

async function withNbdkit(name: string, args: readonly string[], fn: (uri: string, dir: string) => Promise<void>): Promise<void> {
  const { dir, drop } = scratchDir(name);
  const peer = await startNbdkit(join(dir, 'sock'), args);
  try {
    await fn(peer.uri, dir);
  } finally {
    await peer.kill();
    drop();
  }
}

async function open(uri: string): Promise<NbdBlockDevice> {
  return (await openBlockDevice(uri)) as NbdBlockDevice;
}

async function rejectsWith(p: Promise<unknown>, code: string, errno: number, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof BlockError, String(err));
    assert.equal(err.code, code, err.message);
    assert.equal(err.errno, errno, err.message);
    assert.match(err.message, message);
    assert.ok(!err.message.includes('\n'), `one line: ${err.message}`);
    return true;
  });
}

test('nbdkit memory: random writes at queue depth 32 read back byte for byte (openBlockDevice with an nbd+unix URI)', async (t) => {
  if (nbdkitMissing(t)) return;
  await withNbdkit('integrity', ['memory', '16M'], async (uri) => {
    const dev = await open(uri);
    try {
      assert.equal(dev.info.size, 16 * MiB);
      assert.equal(dev.exportInfo?.structuredReplies, true);
      assert.notEqual(dev.exportInfo?.baseAllocationId, undefined, 'base:allocation negotiated');
      assert.equal(dev.info.volatileCache, true, 'nbdkit memory offers flush');
      await randomIntegrity(dev, { seedBytes: randomBytes(4), rounds: 3, depth: 32, maxBytes: 256 * 1024 });
      assert.ok(dev.counters.requests > 3 * 32 * 2, 'requests went out');
    } finally {
      await dev.close();
    }
  });
});

test('requests larger than the server maximum are cut (blocksize-policy filter), scattered iovs land in place', async (t) => {
  if (nbdkitMissing(t)) return;
  const args = ['--filter=blocksize-policy', 'memory', '8M', 'blocksize-minimum=512', 'blocksize-preferred=4096', 'blocksize-maximum=65536'];
  await withNbdkit('split', args, async (uri) => {
    const dev = await open(uri);
    try {
      assert.equal(dev.exportInfo?.maximumPayload, 65536, 'NBD_INFO_BLOCK_SIZE read');
      // 1 MiB in three uneven buffers: 16 pieces of 64 KiB, each crossing buffer edges differently
      const data = randomBytes(MiB);
      const iov = [data.subarray(0, 1000 * 512), data.subarray(1000 * 512, 1001 * 512), data.subarray(1001 * 512)];
      await dev.writev(3 * 512, iov);
      const parts = [Buffer.alloc(7 * 512), Buffer.alloc(MiB - 7 * 512)];
      await dev.readv(3 * 512, parts);
      assert.ok(Buffer.concat(parts).equals(data), 'bytes read back through other buffer edges');
      assert.ok(dev.counters.requests >= 32, `cut into pieces (${dev.counters.requests} requests)`);
    } finally {
      await dev.close();
    }
  });
});

test('trim, write-zeroes and block status against nbdkit memory', async (t) => {
  if (nbdkitMissing(t)) return;
  await withNbdkit('status', ['memory', '8M'], async (uri) => {
    const dev = await open(uri);
    try {
      assert.equal(dev.info.canDiscard, true);
      assert.deepEqual(await dev.blockStatus(0, 8 * MiB), [{ offset: 0, length: 8 * MiB, allocated: false }], 'a fresh memory disk is one hole');
      await dev.writev(MiB, [randomBytes(2 * MiB)]);
      const ext = await dev.blockStatus(0, 8 * MiB);
      assert.deepEqual(
        ext.map((e) => e.allocated),
        [false, true, false],
      );
      assert.equal(ext[1]!.offset, MiB);
      assert.equal(ext[1]!.length, 2 * MiB);
      await dev.discard(MiB, MiB);
      await dev.writeZeroes(2 * MiB, 64 * 1024);
      const back = Buffer.alloc(64 * 1024, 0xee);
      await dev.readv(2 * MiB, [back]);
      assert.ok(
        back.every((b) => b === 0),
        'zeroed range reads zeroes',
      );
      const after = await dev.blockStatus(0, 8 * MiB);
      const at = (offset: number): boolean | undefined => after.find((e) => e.offset <= offset && offset < e.offset + e.length)?.allocated;
      assert.equal(at(MiB), false, 'the trimmed MiB is a hole now');
      assert.equal(at(MiB + MiB / 2), false);
      assert.equal(at(2 * MiB + 128 * 1024), true, 'the rest of the data is still allocated');
    } finally {
      await dev.close();
    }
  });
});

test('capabilities follow the flags: no structured replies, no write-zeroes, no FUA, no extents', async (t) => {
  if (nbdkitMissing(t)) return;
  const args = ['--no-sr', '--filter=nozero', '--filter=fua', '--filter=noextents', 'memory', '4M'];
  await withNbdkit('caps', args, async (uri) => {
    const dev = await open(uri);
    try {
      assert.equal(dev.exportInfo?.structuredReplies, false);
      assert.equal(dev.exportInfo?.baseAllocationId, undefined);
      assert.equal(dev.info.canWriteZeroes, true, 'emulated');
      const data = randomBytes(256 * 1024);
      // FUA without SEND_FUA: a write and a flush; write zeroes without the command: zero writes
      await dev.writev(0, [data], WRITE_FUA);
      await dev.writeZeroes(4096, 8192);
      data.fill(0, 4096, 4096 + 8192);
      const back = Buffer.alloc(data.byteLength);
      await dev.readv(0, [back]);
      assert.ok(back.equals(data), 'simple replies carry the data; emulated zeroes landed');
      assert.deepEqual(await dev.blockStatus(0, MiB), [{ offset: 0, length: MiB, allocated: true }], 'without base:allocation all counts as allocated');
    } finally {
      await dev.close();
    }
  });
});

test('an old server without fixed newstyle (no NBD_OPT_GO) is reached with NBD_OPT_EXPORT_NAME', async (t) => {
  if (nbdkitMissing(t)) return;
  await withNbdkit('oldopt', ['--mask-handshake=0', 'memory', '4M'], async (uri) => {
    const dev = await open(uri);
    try {
      assert.equal(dev.exportInfo?.structuredReplies, false);
      assert.equal(dev.info.size, 4 * MiB);
      const data = randomBytes(64 * 1024);
      await dev.writev(8192, [data]);
      const back = Buffer.alloc(data.byteLength);
      await dev.readv(8192, [back]);
      assert.ok(back.equals(data));
    } finally {
      await dev.close();
    }
  });
});

test('a read-only export opens read-only and refuses writes with EROFS before sending them', async (t) => {
  if (nbdkitMissing(t)) return;
  await withNbdkit('ro', ['-r', 'memory', '4M'], async (uri) => {
    const dev = await open(uri);
    try {
      assert.equal(dev.info.readOnly, true);
      const before = dev.counters.requests;
      await rejectsWith(dev.writev(0, [Buffer.alloc(512)]), 'BLK_ERR_READONLY', Errno.EROFS, /read-only disk \(the server exports it read-only\)/);
      assert.equal(dev.counters.requests, before, 'nothing was sent');
      await dev.readv(0, [Buffer.alloc(4096)]);
    } finally {
      await dev.close();
    }
  });
});

test('connect failures are one-line errors naming why: no socket, refused, no such export, TLS required, TLS failure, no TLS offered', async (t) => {
  if (nbdkitMissing(t) || qemuNbdMissing(t)) return;
  const { dir, drop } = scratchDir('errors');
  try {
    await rejectsWith(open(`nbd+unix:///?socket=${dir}/nothing`), 'BLK_ERR_NBD_CONNECT', Errno.ENOENT, /cannot connect to socket .*nothing: no such socket/);
    // a TCP port nobody listens on: take one, then free it
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    await rejectsWith(open(`nbd://127.0.0.1:${port}/x`), 'BLK_ERR_NBD_CONNECT', Errno.EIO, /cannot connect to 127\.0\.0\.1:\d+: connection refused/);

    const image = join(dir, 'disk.img');
    const fd = openSync(image, 'w');
    ftruncateSync(fd, MiB);
    closeSync(fd);
    const q = await startQemuNbd(join(dir, 'q.sock'), image, 'disk');
    try {
      await rejectsWith(open(`nbd+unix:///nope?socket=${q.socket}`), 'BLK_ERR_NBD_NO_EXPORT', Errno.ENOENT, /no such export 'nope'/);
      await rejectsWith(
        open(`nbds+unix:///disk?socket=${q.socket}&tls-psk-file=${writePsk(dir, 'alice')}`),
        'BLK_ERR_NBD_TLS',
        Errno.EACCES,
        /TLS failed: the server does not offer TLS/,
      );
    } finally {
      await q.kill();
    }

    const psk = writePsk(dir, 'alice');
    const tlsPeer = await startNbdkit(join(dir, 'tls.sock'), ['--tls=require', `--tls-psk=${psk}`, 'memory', '1M']);
    try {
      await rejectsWith(open(tlsPeer.uri), 'BLK_ERR_NBD_TLS_REQUIRED', Errno.EACCES, /the server requires TLS: use nbds:\/\//);
      const wrong = join(dir, 'wrong.psk');
      writeFileSync(wrong, `alice:${randomBytes(32).toString('hex')}\n`);
      await rejectsWith(open(`nbds+unix:///?socket=${tlsPeer.socket}&tls-psk-file=${wrong}`), 'BLK_ERR_NBD_TLS', Errno.EACCES, /TLS failed: /);
      // and the right key works, byte for byte
      const dev = await open(`nbds+unix:///?socket=${tlsPeer.socket}&tls-psk-file=${psk}`);
      try {
        const data = randomBytes(128 * 1024);
        await dev.writev(0, [data]);
        const back = Buffer.alloc(data.byteLength);
        await dev.readv(0, [back]);
        assert.ok(back.equals(data), 'bytes over TLS with PSK');
      } finally {
        await dev.close();
      }
    } finally {
      await tlsPeer.kill();
    }
  } finally {
    drop();
  }
});

test('TLS with x509 (nbds+unix, tls-certificates=DIR): the server verified against our CA, our client certificate verified by it', async (t) => {
  if (nbdkitMissing(t) || stopIfMissing(t, missingTools(['openssl'], 'openssl'))) return;
  const { dir, drop } = scratchDir('x509');
  const serverDir = join(dir, 'server');
  const clientDir = join(dir, 'client');
  mkdirSync(serverDir);
  mkdirSync(clientDir);
  makeX509(serverDir, clientDir);
  const peer = await startNbdkit(join(dir, 'sock'), ['--tls=require', `--tls-certificates=${serverDir}`, '--tls-verify-peer', 'memory', '1M']);
  try {
    const uri = `nbds+unix:///?socket=${peer.socket}&tls-certificates=${clientDir}`;
    const dev = await open(uri);
    try {
      const data = randomBytes(64 * 1024);
      await dev.writev(4096, [data]);
      const back = Buffer.alloc(data.byteLength);
      await dev.readv(4096, [back]);
      assert.ok(back.equals(data), 'bytes over TLS with x509');
    } finally {
      await dev.close();
    }
    // without our certificate the server hangs up: said as a TLS failure, not a broken handshake
    const noCert = join(dir, 'ca-only');
    mkdirSync(noCert);
    copyFileSync(join(clientDir, 'ca-cert.pem'), join(noCert, 'ca-cert.pem'));
    await rejectsWith(
      open(`nbds+unix:///?socket=${peer.socket}&tls-certificates=${noCert}`),
      'BLK_ERR_NBD_TLS',
      Errno.EACCES,
      /TLS failed: .*client certificate/,
    );
    await rejectsWith(open(`${uri}&tls-hostname=elsewhere.example`), 'BLK_ERR_NBD_TLS', Errno.EACCES, /TLS failed: ERR_TLS_CERT_ALTNAME_INVALID/);
    // another CA: the server's certificate is not trusted
    const otherServer = join(dir, 'other-server');
    const otherClient = join(dir, 'other-client');
    mkdirSync(otherServer);
    mkdirSync(otherClient);
    makeX509(otherServer, otherClient);
    await rejectsWith(
      open(`nbds+unix:///?socket=${peer.socket}&tls-certificates=${otherClient}`),
      'BLK_ERR_NBD_TLS',
      Errno.EACCES,
      /TLS failed: .*(CERT|SIGNATURE|certificate)/i,
    );
  } finally {
    await peer.kill();
    drop();
  }
});

const pskKeys = new Map<string, string>();
function writePsk(dir: string, user: string): string {
  const file = join(dir, `${user}.psk`);
  if (!pskKeys.has(file)) {
    pskKeys.set(file, randomBytes(32).toString('hex'));
    writeFileSync(file, `${user}:${pskKeys.get(file)}\n`, { mode: 0o600 });
  }
  return file;
}

test('nothing lost silently: the server dies between a write and the flush, comes back empty; the flush fails with EIO once', async (t) => {
  if (nbdkitMissing(t)) return;
  const { dir, drop } = scratchDir('lossy');
  const sock = join(dir, 'sock');
  let peer = await startNbdkit(sock, ['memory', '4M']);
  try {
    const dev = await open(`nbd+unix:///?socket=${sock}&reconnect-timeout=10`);
    try {
      await dev.writev(0, [randomBytes(64 * 1024)]);
      await dev.flush();
      await dev.writev(64 * 1024, [randomBytes(64 * 1024)]); // acknowledged, not flushed
      await peer.kill();
      peer = await startNbdkit(sock, ['memory', '4M']); // a new server: its cache never saw the write
      await rejectsWith(dev.flush(), 'BLK_ERR_NBD_CACHE_LOST', Errno.EIO, /flush failed: the connection was lost with acknowledged writes not yet flushed/);
      assert.equal(dev.counters.reconnects, 1);
      assert.equal(dev.counters.lostCacheFlushes, 1);
      await dev.flush(); // reported once, as Linux reports a writeback error
    } finally {
      await dev.close();
    }
  } finally {
    await peer.kill();
    drop();
  }
});

test('the server dies and stays away: the flush fails with EIO once the reconnect window ends', async (t) => {
  if (nbdkitMissing(t)) return;
  const { dir, drop } = scratchDir('gone');
  const sock = join(dir, 'sock');
  const peer = await startNbdkit(sock, ['memory', '4M']);
  try {
    const dev = await open(`nbd+unix:///?socket=${sock}&reconnect-timeout=0.3`);
    try {
      await dev.writev(0, [randomBytes(4096)]);
      await peer.kill();
      await rejectsWith(
        dev.flush(),
        'BLK_ERR_NBD_CONNECTION',
        Errno.EIO,
        /connection lost and not restored within 0\.3 s \(last attempt: .*no such socket|connection refused/,
      );
    } finally {
      await dev.close();
    }
  } finally {
    await peer.kill();
    drop();
  }
});

test('a connection lost with requests in flight: the device reconnects, sends them again, and they complete', async (t) => {
  if (nbdkitMissing(t)) return;
  const { dir, drop } = scratchDir('retry');
  const peer = await startNbdkit(join(dir, 'sock'), ['memory', '4M']);
  const relay = await Relay.start(join(dir, 'relay'), peer.socket);
  try {
    const dev = await open(`nbd+unix:///?socket=${relay.socket}&reconnect-timeout=10`);
    try {
      await dev.flush();
      relay.hold = true; // the next requests reach nobody
      const writes = Array.from({ length: 16 }, (_, i) => ({ offset: i * 128 * 1024, data: randomBytes(128 * 1024) }));
      const done = Promise.all(writes.map((w) => dev.writev(w.offset, [w.data])));
      await new Promise((r) => setTimeout(r, 50));
      relay.hold = false;
      relay.cut();
      await done;
      assert.equal(relay.connections, 2, 'one reconnect');
      assert.equal(dev.counters.reconnects, 1);
      assert.ok(dev.counters.resent >= 16, `the unanswered writes went again (${dev.counters.resent})`);
      await dev.flush(); // nothing acknowledged was at risk: no error
      for (const w of writes) {
        const back = Buffer.alloc(w.data.byteLength);
        await dev.readv(w.offset, [back]);
        assert.ok(back.equals(w.data), `write at ${w.offset} landed once reconnected`);
      }
    } finally {
      await dev.close();
    }
  } finally {
    await relay.close();
    await peer.kill();
    drop();
  }
});

test('qemu-nbd: integrity, sparse reads as holes (zeroes over junk), block status, and the bytes are in its file', async (t) => {
  if (qemuNbdMissing(t)) return;
  const { dir, drop } = scratchDir('qemu');
  const image = join(dir, 'disk.img');
  const fd = openSync(image, 'w');
  ftruncateSync(fd, 8 * MiB);
  closeSync(fd);
  const q = await startQemuNbd(join(dir, 'sock'), image, 'disk', ['--cache=writeback', '--discard=unmap']);
  try {
    const dev = await open(q.uri);
    try {
      assert.equal(dev.exportInfo?.structuredReplies, true);
      await randomIntegrity(dev, { seedBytes: randomBytes(4), rounds: 2, depth: 16, maxBytes: 128 * 1024 });
      const data = randomBytes(MiB);
      await dev.writev(0, [data]);
      await dev.discard(MiB, 7 * MiB);
      await dev.flush();
      // a read across data and a hole: the hole part must come back as zeroes, not the junk
      const back = Buffer.alloc(2 * MiB, 0xa5);
      await dev.readv(0, [back]);
      assert.ok(back.subarray(0, MiB).equals(data));
      assert.ok(
        back.subarray(MiB).every((b) => b === 0),
        'the hole reads as zeroes',
      );
      const ext = await dev.blockStatus(0, 8 * MiB);
      assert.equal(ext[0]!.allocated, true);
      assert.ok(
        ext.some((e) => !e.allocated && e.offset >= MiB),
        `a hole after the data: ${JSON.stringify(ext)}`,
      );
      assert.ok(readFileSync(image).subarray(0, MiB).equals(data), "the bytes are in qemu-nbd's file");
    } finally {
      await dev.close();
    }
  } finally {
    await q.kill();
    drop();
  }
});

test('path policy: an nbd+unix export is a remote store; a PSK file outside --allow-path is refused', async (t) => {
  if (nbdkitMissing(t)) return;
  await withNbdkit('policy', ['memory', '1M'], async (uri, dir) => {
    assert.deepEqual(await checkStoreSpec(uri, { allowPaths: [] }), { kind: 'remote' });
    const dev: BlockDevice = await openStoreUnderPolicy(uri, { allowPaths: [] });
    await dev.close();
    const psk = join(dir, 'k.psk');
    writeFileSync(psk, `u:${randomBytes(16).toString('hex')}\n`);
    await assert.rejects(checkStoreSpec(`nbds+unix:///?socket=${dir}/sock&tls-psk-file=${psk}`, { allowPaths: [] }), /no --allow-path directory was given/);
  });
});
