// The iSCSI initiator (src/iscsi-initiator) as a BlockDevice against our own target over loopback:
// data integrity at queue depth 32 through every data path (immediate, unsolicited, R2T), digests,
// flush and FUA, discard on a thin LUN, login failures that say which, CHAP, and the reconnect
// rules (retry within the window, then a clear error; a flush after a lost session fails).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { PduReader } from '../src/iscsi/pdu-reader.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startIscsiTarget } from '../src/iscsi-target/run.ts';
import type { RunningIscsiTarget, StartIscsiTargetOptions } from '../src/iscsi-target/run.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { WRITE_FUA } from '../src/block/types.ts';
import { parseChapSecretsFile } from '../src/iscsi/chap.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import { checkStoreSpec, openStoreUnderPolicy } from '../src/stores/path-policy.ts';
import { openIscsiDevice } from '../src/iscsi-initiator/device.ts';
import type { IscsiBlockDevice } from '../src/iscsi-initiator/device.ts';
import type { IscsiStoreSpec } from '../src/config/store-spec.ts';
import { parseStoreSpec } from '../src/config/store-spec.ts';
import { randomIntegrity } from './iscsi-initiator-helpers.ts';
import { TestInitiator } from './helpers-iscsi.ts';

const TARGET = 'iqn.2026-12.org.blkback:init-test';
const MiB = 1 << 20;
const FIRST_BURST = 16384;

function targetOptions(device: BlockDevice, extra: Partial<StartIscsiTargetOptions> = {}, port = 0): StartIscsiTargetOptions {
  return {
    portal: { host: '127.0.0.1', port },
    targetName: TARGET,
    luns: [{ lun: 0, spec: 'test', thin: true }],
    allow: 'ALL',
    allowPaths: [],
    openStore: async () => device,
    // small bursts and segments so a modest write needs unsolicited Data-Out and R2Ts
    firstBurstLength: FIRST_BURST,
    maxRecvDataSegmentLength: 8192,
    ...extra,
  };
}

async function withTarget(
  extra: Partial<StartIscsiTargetOptions>,
  fn: (t: RunningIscsiTarget, device: BlockDevice) => Promise<void>,
  device = createRamDisk(32 * MiB, { name: 'ram:32M' }),
): Promise<void> {
  const t = await startIscsiTarget(targetOptions(device, extra));
  try {
    await fn(t, device);
  } finally {
    await t.close();
  }
}

const url = (t: RunningIscsiTarget, query = '', user = ''): string => `iscsi://${user}127.0.0.1:${t.portal.port}/${TARGET}/0${query}`;

async function open(spec: string): Promise<IscsiBlockDevice> {
  return (await openBlockDevice(spec)) as IscsiBlockDevice;
}

test('store spec: iscsi:// parses, options checked, a secret in the URL refused', () => {
  const s = parseStoreSpec('iscsi://alice@10.0.0.2:3261/iqn.2026-12.org.x:disk/3?secret-file=/etc/blk/chap&digest=crc32c&reconnect-timeout=2.5');
  assert.deepEqual(s, {
    kind: 'iscsi',
    host: '10.0.0.2',
    port: 3261,
    user: 'alice',
    targetName: 'iqn.2026-12.org.x:disk',
    lun: 3,
    secretFile: '/etc/blk/chap',
    digest: true,
    initiatorName: undefined,
    reconnectTimeoutMs: 2500,
  });
  const d = parseStoreSpec('iscsi://[::1]/iqn.2026-12.org.x:disk/0');
  assert.equal(d.kind === 'iscsi' && `${d.host} ${d.port} ${String(d.user)} ${d.digest}`, '::1 3260 undefined false');
  assert.throws(() => parseStoreSpec('iscsi://alice:hunter2hunter2@h/iqn.x/0'), /secret goes in a file/);
  assert.throws(() => parseStoreSpec('iscsi://h/iqn.x'), /expected iscsi:/);
  assert.throws(() => parseStoreSpec('iscsi://h/iqn.x/99999'), /LUN/);
  assert.throws(() => parseStoreSpec('iscsi://h:0/iqn.x/0'), /port/);
  assert.throws(() => parseStoreSpec('iscsi://h/iqn.x/0?digest=md5'), /digest=md5/);
  assert.throws(() => parseStoreSpec('iscsi://h/iqn.x/0?password=x'), /unknown iscsi option 'password'/);
});

test('our target: random writes at QD 32 (immediate, unsolicited and R2T data) read back equal, on the initiator and in the store', async () => {
  await withTarget({}, async (t, store) => {
    const dev = await open(url(t));
    try {
      assert.equal(dev.info.size, store.info.size);
      assert.equal(dev.info.logicalBlockSize, 512);
      const p = dev.parameters!;
      assert.equal(p.firstBurstLength, FIRST_BURST);
      assert.equal(p.immediateData, true);
      assert.equal(p.initialR2T, false);
      await randomIntegrity(dev, { seedBytes: randomBytes(32), rounds: 3, depth: 32, maxBytes: 256 * 1024, store });
      assert.ok(dev.counters.immediateBytes > 0, 'immediate data used');
      assert.ok(dev.counters.unsolicitedBytes > 0, 'unsolicited Data-Out used');
      assert.ok(dev.counters.r2ts > 0, 'R2Ts answered');
      assert.equal(dev.counters.protocolErrors, 0);
      assert.ok(dev.counters.maxInFlight > 1, `commands overlap (most in flight: ${dev.counters.maxInFlight})`);
    } finally {
      await dev.close();
    }
  });
});

test('our target: the initiator keeps within the CmdSN window the target opens (MaxCmdSN)', async () => {
  const depth = 4;
  await withTarget({ queueDepth: depth }, async (t, store) => {
    const dev = await open(url(t));
    try {
      await randomIntegrity(dev, { seedBytes: randomBytes(32), rounds: 1, depth: 32, maxBytes: 64 * 1024, store });
      // the target saw every CmdSN inside its window, and the window (not the 32 offered) bounded the
      // depth; our count can exceed the target's by commands it finished whose answer is on the way
      assert.equal(t.target.counters.cmdSNOutsideWindow, 0);
      assert.ok(dev.counters.maxInFlight > 1 && dev.counters.maxInFlight < 32, `most in flight ${dev.counters.maxInFlight}, window ${depth}`);
    } finally {
      await dev.close();
    }
  });
});

test('our target: CRC32C header and data digests when asked', async () => {
  await withTarget({ digest: 'any' }, async (t, store) => {
    const dev = await open(url(t, '?digest=crc32c'));
    try {
      assert.equal(dev.parameters!.headerDigest, true);
      assert.equal(dev.parameters!.dataDigest, true);
      await randomIntegrity(dev, { seedBytes: randomBytes(32), rounds: 1, depth: 32, maxBytes: 128 * 1024, store });
      assert.ok(dev.counters.r2ts > 0);
    } finally {
      await dev.close();
    }
    const plain = await open(url(t));
    assert.equal(plain.parameters!.headerDigest, false);
    await plain.close();
  });
});

test('our target: flush, FUA writes, vectored I/O, discard on a thin LUN reads zeroes', async () => {
  await withTarget({}, async (t, store) => {
    const dev = await open(url(t));
    try {
      assert.equal(dev.info.canDiscard, true);
      const a = randomBytes(4096);
      const b = randomBytes(8192);
      await dev.writev(1 * MiB, [a.subarray(0, 1000 + 24), a.subarray(1024), b], WRITE_FUA);
      await dev.flush();
      const back = [Buffer.alloc(512), Buffer.alloc(12288 - 512)];
      await dev.readv(1 * MiB, back);
      assert.deepEqual(Buffer.concat(back), Buffer.concat([a, b]));
      const inStore = Buffer.alloc(12288);
      await store.readv(1 * MiB, [inStore]);
      assert.deepEqual(inStore, Buffer.concat([a, b]));
      await dev.discard(1 * MiB, 4096);
      const after = Buffer.alloc(12288, 0xee);
      await dev.readv(1 * MiB, [after]);
      assert.ok(
        after.subarray(0, 4096).every((x) => x === 0),
        'discarded range reads zeroes',
      );
      assert.deepEqual(after.subarray(4096), b);
    } finally {
      await dev.close();
    }
  });
  await withTarget({ luns: [{ lun: 0, spec: 'test' }] }, async (t) => {
    const dev = await open(url(t));
    try {
      assert.equal(dev.info.canDiscard, false);
      await assert.rejects(dev.discard(0, 4096), (e: NodeJS.ErrnoException & { errno: number }) => e.errno === 95);
    } finally {
      await dev.close();
    }
  });
});

test('login failures are one line saying which: no such target, refused by ACL, wrong CHAP secret; CHAP succeeds', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-iscsi-init-'));
  try {
    const good = join(dir, 'good');
    const bad = join(dir, 'bad');
    writeFileSync(good, 'alice alice-secret-0123\n');
    writeFileSync(bad, 'alice wrong-secret-98765\n');
    await withTarget(
      { chap: { initiators: parseChapSecretsFile('alice alice-secret-0123\n', 'chap') }, allow: new Set(['iqn.2026-12.org.blkback:initiator']) },
      async (t, store) => {
        const port = t.portal.port;
        await assert.rejects(open(`iscsi://alice@127.0.0.1:${port}/iqn.2026-12.org.blkback:nope/0?secret-file=${good}`), (e: Error) => {
          assert.match(e.message, /login failed: no such target iqn\.2026-12\.org\.blkback:nope/);
          assert.doesNotMatch(e.message, /\n/);
          return true;
        });
        await assert.rejects(open(url(t, `?secret-file=${bad}`, 'alice@')), (e: Error) => {
          assert.match(e.message, /login failed: authentication failed/);
          assert.doesNotMatch(e.message, /wrong-secret|alice-secret|\n/);
          return true;
        });
        await assert.rejects(
          open(url(t, `?secret-file=${good}&initiator-name=iqn.2026-12.org.blkback:stranger`, 'alice@')),
          /login failed: refused by the target's access list \(initiator iqn\.2026-12\.org\.blkback:stranger/,
        );
        await assert.rejects(open(url(t)), /login failed: authentication failed/); // the target wants CHAP
        const dev = await open(url(t, `?secret-file=${good}`));
        try {
          assert.equal(dev.parameters!.authMethod, 'CHAP');
          const data = randomBytes(65536);
          await dev.writev(0, [data]);
          const back = Buffer.alloc(65536);
          await store.readv(0, [back]);
          assert.deepEqual(back, data);
        } finally {
          await dev.close();
        }
      },
    );
    await assert.rejects(open(`iscsi://127.0.0.1:1/${TARGET}/0`), /cannot connect to 127\.0\.0\.1:1: ECONNREFUSED/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reconnect: requests made while the target is down complete once it is back; a flush after the lost session fails with EIO, once', async () => {
  const store = createRamDisk(16 * MiB, { name: 'ram:16M' });
  let t = await startIscsiTarget(targetOptions(store));
  const port = t.portal.port;
  const dev = await open(`iscsi://127.0.0.1:${port}/${TARGET}/0?reconnect-timeout=20`);
  try {
    const data = randomBytes(64 * 1024);
    await dev.writev(0, [data]);
    await t.close(); // the target goes away between the write and the flush
    const flushed = dev.flush().then(
      () => 'ok',
      (e: NodeJS.ErrnoException & { errno: number }) => e,
    );
    const written = dev.writev(MiB, [data]);
    await new Promise((r) => setTimeout(r, 300));
    t = await startIscsiTarget(targetOptions(store, {}, port));
    const f = await flushed;
    assert.ok(f instanceof Error, 'the flush after a lost session fails');
    assert.equal(f.errno, 5);
    assert.match(f.message, /flush failed: the session was lost/);
    await written;
    assert.ok(dev.counters.reconnects >= 1);
    await dev.flush(); // told once; the writes since went to the new session and are flushed now
    const back = Buffer.alloc(64 * 1024);
    await dev.readv(MiB, [back]);
    assert.deepEqual(back, data);
  } finally {
    await dev.close();
    await t.close();
  }
});

test('reconnect: a flush with nothing written since the last flush survives a lost session', async () => {
  const store = createRamDisk(16 * MiB, { name: 'ram:16M' });
  let t = await startIscsiTarget(targetOptions(store));
  const port = t.portal.port;
  const dev = await open(`iscsi://127.0.0.1:${port}/${TARGET}/0`);
  try {
    await dev.writev(0, [randomBytes(4096)]);
    await dev.flush();
    await t.close();
    t = await startIscsiTarget(targetOptions(store, {}, port));
    await dev.flush();
  } finally {
    await dev.close();
    await t.close();
  }
});

test('reconnect: past the time limit requests fail with a clear error', async () => {
  const store = createRamDisk(16 * MiB, { name: 'ram:16M' });
  const t = await startIscsiTarget(targetOptions(store));
  const dev = await open(`iscsi://127.0.0.1:${t.portal.port}/${TARGET}/0?reconnect-timeout=0.4`);
  try {
    await t.close();
    const started = Date.now();
    await assert.rejects(dev.readv(0, [Buffer.alloc(4096)]), (e: Error & { errno: number }) => {
      assert.match(e.message, /connection lost and not restored within 0\.4 s/);
      assert.equal(e.errno, 5);
      return true;
    });
    assert.ok(Date.now() - started >= 300, 'it kept trying for about the window');
  } finally {
    await dev.close();
  }
});

test('a LOGICAL UNIT RESET from another initiator after an unflushed write: the next flush fails with EIO; with nothing unflushed it does not', async () => {
  await withTarget({}, async (t) => {
    const dev = await open(url(t));
    const other = await TestInitiator.connect(t.portal.port);
    try {
      assert.equal(await other.login({ targetName: TARGET, initiatorName: 'iqn.2026-12.org.blkback:other' }), 0);
      await dev.writev(0, [randomBytes(4096)]);
      assert.equal(await other.taskManagement(5 /* LOGICAL UNIT RESET */), 0);
      await assert.rejects(dev.flush(), (e: Error & { errno: number }) => e.errno === 5 && /flush failed/.test(e.message));
      assert.ok(dev.counters.unitAttentions >= 1);
      await dev.flush();
      const seen = dev.counters.unitAttentions;
      assert.equal(await other.taskManagement(5), 0);
      await dev.flush(); // the unit attention arrives, but nothing acknowledged was unflushed
      assert.equal(dev.counters.unitAttentions, seen + 1);
      assert.equal(dev.counters.lostCacheFlushes, 1);
    } finally {
      other.close();
      await dev.close();
    }
  });
});

/**
 * A TCP relay between the initiator and our target that re-frames what the target sends (no
 * digests) and lets `mutate` change one PDU header: a hostile or broken target, built from an honest one.
 */
async function hostileRelay(
  targetPort: number,
  mutate: (h: Buffer, dataLength: number) => boolean | 'freeze',
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let done = false;
  const server = net.createServer((client) => {
    const upstream = net.createConnection({ host: '127.0.0.1', port: targetPort });
    sockets.add(client);
    sockets.add(upstream);
    let frozen = false;
    const reader = new PduReader({
      dataBuffer: () => undefined,
      onPdu: (h, _ahs, data, length) => {
        const header = Buffer.from(h);
        if (!done) {
          const m = mutate(header, length);
          if (m !== false) done = true;
          if (m === 'freeze') frozen = true; // this connection hears nothing more from the target
        }
        if (frozen) return;
        const pad = (4 - (length % 4)) % 4;
        client.write(Buffer.concat([header, data === null ? Buffer.alloc(0) : Buffer.from(data.subarray(0, length)), Buffer.alloc(pad)]));
      },
      onDataDigestError: () => client.destroy(),
      onFramingError: () => client.destroy(),
    });
    reader.maxDataSegmentLength = 1 << 24;
    upstream.on('data', (c: Buffer) => reader.push(c));
    client.on('data', (c: Buffer) => upstream.write(c));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

for (const c of [
  { what: 'Data-In outside the read buffer', opcode: 0x25, field: 40, value: 0xfffff000, op: 'read' },
  { what: 'an R2T past the end of the write', opcode: 0x31, field: 44, value: 0x7fffffff, op: 'write' },
  { what: 'Data-In for a task we never sent', opcode: 0x25, field: 16, value: 0x7654321, op: 'read' },
] as const) {
  test(`a hostile target sending ${c.what}: counted, the connection dropped, the request retried on a new one and correct`, { timeout: 20_000 }, async () => {
    await withTarget({}, async (t, store) => {
      const data = randomBytes(256 * 1024);
      await store.writev(0, [data]);
      const relay = await hostileRelay(t.portal.port, (h, length) => {
        if ((h[0]! & 0x3f) !== c.opcode || (c.opcode === 0x25 && length === 0)) return false;
        h.writeUInt32BE(c.value, c.field);
        return true;
      });
      const dev = await open(`iscsi://127.0.0.1:${relay.port}/${TARGET}/0`);
      try {
        const back = Buffer.alloc(data.byteLength);
        if (c.op === 'read') await dev.readv(0, [back]);
        else {
          await dev.writev(0, [data]);
          await store.readv(0, [back]);
        }
        assert.deepEqual(back, data);
        assert.equal(dev.counters.protocolErrors, 1);
        assert.equal(dev.counters.reconnects, 1);
      } finally {
        await dev.close();
        await relay.close();
      }
    });
  });
}

test('under a path policy an iscsi:// secret file must lie in an allowed directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-iscsi-policy-'));
  const outside = mkdtempSync(join(tmpdir(), 'blkback-iscsi-outside-'));
  try {
    writeFileSync(join(dir, 'chap'), 'alice alice-secret-0123\n');
    writeFileSync(join(outside, 'chap'), 'alice alice-secret-0123\n');
    await withTarget({ chap: { initiators: parseChapSecretsFile('alice alice-secret-0123\n', 'chap') } }, async (t) => {
      const policy = { allowPaths: [dir] };
      await assert.rejects(openStoreUnderPolicy(url(t, `?secret-file=${join(outside, 'chap')}`), policy), /--allow-path/);
      assert.deepEqual(await checkStoreSpec(url(t, `?secret-file=${join(dir, 'chap')}`), policy), { kind: 'remote' });
      const dev = await openStoreUnderPolicy(url(t, `?secret-file=${join(dir, 'chap')}`), policy);
      assert.equal(dev.info.size, 32 * MiB);
      await dev.close();
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  }
});

test('a target that stops answering: pinged, the connection dropped after the NOP timeout, the read retried on a new one', { timeout: 20_000 }, async () => {
  await withTarget({}, async (t, store) => {
    const data = randomBytes(64 * 1024);
    await store.writev(0, [data]);
    const relay = await hostileRelay(t.portal.port, (h) => ((h[0]! & 0x3f) === 0x25 ? 'freeze' : false));
    const spec = parseStoreSpec(`iscsi://127.0.0.1:${relay.port}/${TARGET}/0`);
    assert.equal(spec.kind, 'iscsi');
    const dev = await openIscsiDevice(spec as IscsiStoreSpec, { nopIntervalMs: 100, nopTimeoutMs: 200 });
    try {
      const back = Buffer.alloc(data.byteLength);
      await dev.readv(0, [back]);
      assert.deepEqual(back, data);
      assert.equal(dev.counters.nopTimeouts, 1);
      assert.equal(dev.counters.reconnects, 1);
    } finally {
      await dev.close();
      await relay.close();
    }
  });
});

test("--map /dev/sdb=iscsi://...: a guest writes through blkback and our initiator, fio verifies, the bytes are in the target's store", async () => {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const guestCfg = fileURLToPath(new URL('../../examples/guest-phy.cfg', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'iscsi-map-'));
  // A write-then-verify job over the first 4 MiB of the guest's xvda (the target's LUN).
  const job = join(dir, 'verify.fio');
  writeFileSync(job, '[v]\nfilename=/dev/xvda\nrw=randwrite\nbs=16k\niodepth=16\nsize=4m\nverify=crc32c\ndo_verify=1\nverify_fatal=1\n');
  try {
    await withTarget({}, async (t, store) => {
      const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
        const child = spawn(process.execPath, [main, 'fio', '--guest', guestCfg, '--map', `/dev/sdb=${url(t)}`, job], { stdio: ['ignore', 'pipe', 'pipe'] });
        let text = '';
        child.stdout.on('data', (b: Buffer) => (text += b));
        child.stderr.on('data', (b: Buffer) => (text += b));
        child.on('close', (code) => resolve({ code, text }));
      });
      assert.equal(out.code, 0, out.text);
      assert.match(out.text, /WRITE: bw=/);
      // fio's verify read the blocks back through the guest; the store itself holds them too: nonzero.
      const head = new Uint8Array(4 * MiB);
      await store.readv(0, [head]);
      assert.ok(
        head.some((b) => b !== 0),
        "the guest's writes reached the target's store",
      );
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
