// The iSCSI target end to end over loopback TCP, driven by a hand-built initiator (helpers-iscsi.ts):
// login rules (ACL, unknown target, CHAP), every data path (immediate, unsolicited, R2T with
// several outstanding, digests), command numbering, NOP, task management, logout, reinstatement,
// and data read back from the store itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startIscsiTarget } from '../src/iscsi-target/run.ts';
import type { RunningIscsiTarget, StartIscsiTargetOptions } from '../src/iscsi-target/run.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { parseChapSecretsFile } from '../src/iscsi/chap.ts';
import { TestInitiator, read16, write16, synchronizeCache10, testUnitReady } from './helpers-iscsi.ts';

const TARGET = 'iqn.2026-12.org.blkback:test';
const MiB = 1 << 20;

async function withTarget(
  opts: Partial<StartIscsiTargetOptions> & { device?: BlockDevice },
  fn: (t: RunningIscsiTarget, device: BlockDevice, logs: string[]) => Promise<void>,
): Promise<void> {
  const device = opts.device ?? createRamDisk(64 * MiB, { name: 'ram:64M' });
  const logs: string[] = [];
  const t = await startIscsiTarget({
    portal: { host: '127.0.0.1', port: 0 },
    targetName: TARGET,
    luns: [{ lun: 0, spec: 'test' }],
    allow: 'ALL',
    allowPaths: [],
    openStore: async () => device,
    log: (l) => logs.push(l),
    ...opts,
  });
  try {
    await fn(t, device, logs);
  } finally {
    await t.close();
  }
}

async function connect(t: RunningIscsiTarget, login: Parameters<TestInitiator['login']>[0] = {}): Promise<TestInitiator> {
  const c = await TestInitiator.connect(t.portal.port);
  const status = await c.login(login);
  assert.equal(status, 0, `login status 0x${status.toString(16)}`);
  return c;
}

async function deviceBytes(device: BlockDevice, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  await device.readv(offset, [b]);
  return b;
}

test('discovery: SendTargets lists the target and its address to an allowed initiator only', async () => {
  await withTarget({ allow: new Set(['iqn.2026-12.org.blkback:allowed']), advertise: { host: '10.1.2.3', port: 3260 } }, async (t) => {
    const allowed = await TestInitiator.connect(t.portal.port);
    assert.equal(await allowed.login({ sessionType: 'Discovery', initiatorName: 'iqn.2026-12.org.blkback:allowed' }), 0);
    assert.deepEqual(await allowed.text([['SendTargets', 'All']]), [
      ['TargetName', TARGET],
      ['TargetAddress', '10.1.2.3:3260,1'],
    ]);
    allowed.close();
    const other = await TestInitiator.connect(t.portal.port);
    assert.equal(await other.login({ sessionType: 'Discovery', initiatorName: 'iqn.2026-12.org.blkback:stranger' }), 0);
    assert.deepEqual(await other.text([['SendTargets', 'All']]), []);
    other.close();
  });
});

test('login: a refused initiator, an unknown target and a missing name get their status, and the connection closes', async () => {
  await withTarget({ allow: new Set(['iqn.2026-12.org.blkback:allowed']) }, async (t, _d, logs) => {
    const c1 = await TestInitiator.connect(t.portal.port);
    assert.equal(await c1.login({ initiatorName: 'iqn.2026-12.org.blkback:stranger' }), 0x0202);
    const c2 = await TestInitiator.connect(t.portal.port);
    assert.equal(await c2.login({ initiatorName: 'iqn.2026-12.org.blkback:allowed', targetName: 'iqn.2026-12.org.blkback:nope' }), 0x0203);
    for (const c of [c1, c2]) {
      assert.equal(await c.next(2000), undefined);
      assert.ok(c.closed);
    }
    assert.ok(
      logs.some((l) => /stranger is not allowed/.test(l)),
      logs.join('\n'),
    );
    assert.ok(logs.some((l) => /asked for target iqn.2026-12.org.blkback:nope/.test(l)));
  });
});

test('CHAP: one-way and mutual logins work, a wrong secret or no CHAP is refused, secrets never reach the log', async () => {
  const initiators = parseChapSecretsFile('alice alice-secret-0123\n# comment\nbob bob-secret-456789\n', 'chap.txt');
  const targetSecret = parseChapSecretsFile('target target-secret-9876\n', 'mutual.txt', true);
  await withTarget({ chap: { initiators, target: targetSecret } }, async (t, _d, logs) => {
    const ok = await connect(t, { chap: { name: 'alice', secret: 'alice-secret-0123' } });
    assert.equal((await ok.command(testUnitReady())).status, 0);
    ok.close();
    const mutual = await connect(t, { chap: { name: 'bob', secret: 'bob-secret-456789', mutualSecret: 'target-secret-9876' } });
    mutual.close();
    const wrong = await TestInitiator.connect(t.portal.port);
    assert.equal(await wrong.login({ chap: { name: 'alice', secret: 'not-alices-secret' } }), 0x0201);
    const none = await TestInitiator.connect(t.portal.port);
    assert.equal(await none.login({}), 0x0201);
    const all = logs.join('\n');
    for (const secret of ['alice-secret-0123', 'bob-secret-456789', 'target-secret-9876', 'not-alices-secret'])
      assert.ok(!all.includes(secret), `secret in log:\n${all}`);
  });
});

test('data paths: immediate, unsolicited and solicited data, several R2Ts in flight, small segments; bytes land on the store and read back', async () => {
  const cases = [
    { name: 'immediate + unsolicited, big segments', login: {} },
    { name: 'R2T only', login: { immediateData: false, initialR2T: true } },
    { name: 'immediate then R2T', login: { immediateData: true, initialR2T: true, firstBurstLength: 8192 } },
    {
      name: 'unsolicited Data-Out, small segments',
      login: { immediateData: false, initialR2T: false, maxRecvDataSegmentLength: 4096, firstBurstLength: 65536 },
    },
    {
      name: 'R2T sequences of 16 KiB, 4 outstanding',
      login: { immediateData: false, initialR2T: true, maxBurstLength: 16384, maxOutstandingR2T: 4, maxRecvDataSegmentLength: 8192 },
    },
    { name: 'digests', login: { headerDigest: true, dataDigest: true, maxRecvDataSegmentLength: 8192 } },
  ];
  await withTarget({ maxRecvDataSegmentLength: 65536, maxBurstLength: 262144 }, async (t, device) => {
    let lba = 0;
    for (const k of cases) {
      const c = await connect(t, k.login);
      for (const size of [512, 4096, 65536, 300 * 1024, 1 * MiB]) {
        const data = randomBytes(size);
        const w = await c.command(write16(lba, size / 512), { dataOut: data });
        assert.equal(w.status, 0, `${k.name}: write ${size}`);
        assert.equal(w.residualKind, '');
        assert.deepEqual(await deviceBytes(device, lba * 512, size), data, `${k.name}: store bytes of a ${size}-byte write`);
        const r = await c.command(read16(lba, size / 512), { readLength: size });
        assert.equal(r.status, 0);
        assert.deepEqual(r.data, data, `${k.name}: read back ${size}`);
        lba += size / 512;
      }
      c.close();
    }
  });
});

test('many commands in flight at once, all answered with the right data', async () => {
  await withTarget({}, async (t) => {
    const c = await connect(t);
    const writes = [];
    const blobs: Buffer[] = [];
    for (let i = 0; i < 100; i++) {
      blobs.push(randomBytes(8192));
      writes.push(c.command(write16(i * 16, 16), { dataOut: blobs[i]! }));
    }
    for (const w of await Promise.all(writes)) assert.equal(w.status, 0);
    const reads = await Promise.all(blobs.map((_, i) => c.command(read16(i * 16, 16), { readLength: 8192 })));
    reads.forEach((r, i) => assert.deepEqual(r.data, blobs[i]));
    c.close();
  });
});

test('residuals: more or less expected than the CDB moves', async () => {
  await withTarget({}, async (t) => {
    const c = await connect(t);
    const over = await c.command(read16(0, 2), { readLength: 512, edtl: 512 });
    assert.equal(over.residualKind, 'O');
    assert.equal(over.residual, 512);
    assert.equal(over.data.byteLength, 512);
    const under = await c.command(read16(0, 1), { readLength: 4096, edtl: 4096 });
    assert.equal(under.residualKind, 'U');
    assert.equal(under.residual, 4096 - 512);
    c.close();
  });
});

test('CmdSN: a command beyond MaxCmdSN is dropped unanswered and the session goes on', async () => {
  await withTarget({ queueDepth: 8 }, async (t) => {
    const c = await connect(t);
    const saved = c.cmdSN;
    c.cmdSN = (saved + 100) >>> 0; // far outside the window of 8
    const dropped = c.command(testUnitReady());
    const outcome = await Promise.race([dropped.then(() => 'answered'), new Promise((r) => setTimeout(() => r('silent'), 500))]);
    assert.equal(outcome, 'silent');
    c.cmdSN = saved;
    assert.equal((await c.command(testUnitReady())).status, 0);
    assert.equal(t.target.counters.cmdSNOutsideWindow, 1);
    c.close();
  });
});

test('NOP: our ping is echoed; an initiator that never answers ours is disconnected', async () => {
  await withTarget({ nopIntervalMs: 1000, nopTimeoutMs: 1000 }, async (t) => {
    const c = await connect(t);
    assert.deepEqual(await c.ping(Buffer.from('ping data')), Buffer.from('ping data'));
    // TestInitiator answers the target's pings itself: after 3 s it is still connected
    await new Promise((r) => setTimeout(r, 3000));
    assert.ok(!c.closed);
    assert.ok(c.unsolicited.some((p) => p.opcode === 0x20));
    // a silent initiator: logged in, then deaf
    const deaf = await connect(t);
    deaf.socket.pause();
    deaf.socket.removeAllListeners('data');
    const start = Date.now();
    while (t.target.counters.nopTimeouts === 0 && Date.now() - start < 8000) await new Promise((r) => setTimeout(r, 100));
    assert.equal(t.target.counters.nopTimeouts, 1, 'the target closed the connection whose initiator stopped answering');
    assert.equal(t.target.sessions.length, 1, 'and only that one');
    deaf.close();
    c.close();
  });
});

test('task management: ABORT TASK of an unknown task, LUN RESET, then unit attention; logout answers and closes', async () => {
  await withTarget({}, async (t) => {
    const c = await connect(t);
    assert.equal(await c.taskManagement(1, { rtt: 0x12345678, refCmdSN: (c.cmdSN + 1000) >>> 0 }), 1); // task does not exist
    assert.equal(await c.taskManagement(5, { lun: 0 }), 0);
    const ua = await c.command(testUnitReady());
    assert.equal(ua.status, 2);
    assert.equal(ua.sense![2]! & 0x0f, 0x06); // UNIT ATTENTION
    assert.equal(ua.sense![12], 0x29);
    assert.equal((await c.command(testUnitReady())).status, 0);
    assert.equal(await c.taskManagement(5, { lun: 7 }), 2); // LUN does not exist
    assert.equal(await c.logout(), 0);
    assert.equal(await c.next(2000), undefined);
    assert.ok(c.closed);
  });
});

/** A store whose writes wait until released: commands stay in flight as long as a test wants. */
function gatedDevice(inner: BlockDevice): { device: BlockDevice; release(): void; held(): number } {
  const gates: (() => void)[] = [];
  let open = false;
  return {
    device: {
      ...inner,
      name: inner.name,
      get info() {
        return inner.info;
      },
      readv: (o, iov) => inner.readv(o, iov),
      writev: async (o, iov, f) => {
        if (!open) await new Promise<void>((r) => gates.push(r));
        return inner.writev(o, iov, f);
      },
      flush: () => inner.flush(),
      discard: (o, l) => inner.discard(o, l),
      writeZeroes: (o, l) => inner.writeZeroes(o, l),
      close: () => inner.close(),
    },
    release() {
      open = true;
      for (const g of gates.splice(0)) g();
    },
    held: () => gates.length,
  };
}

test("a lost connection never loses an acknowledged write, and a re-login waits for the old session's writes", async () => {
  const ram = createRamDisk(64 * MiB, { name: 'ram:64M' });
  const gate = gatedDevice(ram);
  await withTarget({ device: gate.device }, async (t) => {
    gate.release();
    const c = await connect(t);
    // acknowledged writes
    const acked: Buffer[] = [];
    for (let i = 0; i < 20; i++) {
      acked.push(randomBytes(4096));
      assert.equal((await c.command(write16(i * 8, 8), { dataOut: acked[i]! })).status, 0);
    }
    assert.equal((await c.command(synchronizeCache10())).status, 0);
    c.close();
    // a new session: every acknowledged write is there
    const d = await connect(t);
    for (let i = 0; i < 20; i++) assert.deepEqual((await d.command(read16(i * 8, 8), { readLength: 4096 })).data, acked[i]);
    d.close();
  });
  // now with writes in flight when the connection dies, and the same initiator logging in again
  const ram2 = createRamDisk(64 * MiB, { name: 'ram:64M' });
  const gate2 = gatedDevice(ram2);
  await withTarget({ device: gate2.device }, async (t) => {
    const isid = Buffer.from([0x80, 1, 2, 3, 0, 0]);
    const old = await connect(t, { isid });
    const stale = old.command(write16(0, 8), { dataOut: Buffer.alloc(4096, 0xee) }).catch(() => undefined);
    while (gate2.held() === 0) await new Promise((r) => setTimeout(r, 10));
    old.close(); // the old write is still held in the store
    await stale;
    const again = await TestInitiator.connect(t.portal.port);
    const login = again.login({ isid });
    // the re-login of the same initiator port waits while the old write is pending
    const early = await Promise.race([login.then(() => 'logged in'), new Promise((r) => setTimeout(() => r('waiting'), 300))]);
    assert.equal(early, 'waiting');
    gate2.release();
    assert.equal(await login, 0);
    // the same initiator port lost its nexus: SPC-4 says the first command hears of it (29h/07h)
    const ua = await again.command(testUnitReady());
    assert.equal(ua.status, 2);
    assert.deepEqual([ua.sense![2]! & 0x0f, ua.sense![12], ua.sense![13]], [6, 0x29, 0x07]);
    const fresh = Buffer.alloc(4096, 0x11);
    assert.equal((await again.command(write16(0, 8), { dataOut: fresh })).status, 0);
    // the stale write landed before, never after, the new acknowledged one
    assert.deepEqual(await deviceBytes(ram2, 0, 4096), fresh);
    again.close();
  });
});

test('a connection cut in the middle of many writes: every write acknowledged before the cut is on the LUN', async () => {
  const ram = createRamDisk(64 * MiB, { name: 'ram:64M' });
  // A store that takes 0-19 ms per write for the first `passing` writes of a round and holds the
  // rest until the cut: some are answered, the others are in flight when the connection goes,
  // however fast or slow this host runs the loop.
  let passing = 0;
  let started = 0;
  let releaseHeld: () => void = () => undefined;
  let held = Promise.resolve();
  const slow: BlockDevice = {
    name: ram.name,
    get info() {
      return ram.info;
    },
    readv: (o, iov) => ram.readv(o, iov),
    writev: (o, iov, f) => {
      const wait = started++ < passing ? new Promise((r) => setTimeout(r, Math.floor(Math.random() * 20))) : held;
      return wait.then(() => ram.writev(o, iov, f));
    },
    flush: () => ram.flush(),
    discard: (o, l) => ram.discard(o, l),
    writeZeroes: (o, l) => ram.writeZeroes(o, l),
    close: () => ram.close(),
  };
  await withTarget({ device: slow }, async (t) => {
    for (let round = 0; round < 5; round++) {
      // cut once some have been answered (more each round), with the rest still in flight
      const cutAfter = 5 + round * 10;
      started = 0;
      passing = cutAfter + round * 5;
      held = new Promise<void>((r) => {
        releaseHeld = r;
      });
      const c = await connect(t);
      const acked = new Map<number, Buffer>();
      const all: Promise<unknown>[] = [];
      for (let i = 0; i < 200; i++) {
        const data = randomBytes(8192);
        const lba = (round * 200 + i) * 16;
        all.push(
          c.command(write16(lba, 16), { dataOut: data }).then(
            (r) => {
              if (r.status === 0) acked.set(lba, data);
            },
            () => undefined,
          ),
        );
      }
      while (acked.size < cutAfter) await new Promise((r) => setImmediate(r));
      c.close(); // the cut
      releaseHeld(); // the held writes now reach the store, their answers nowhere
      await Promise.all(all);
      assert.ok(acked.size >= cutAfter && acked.size <= passing, `round ${round}: ${acked.size} of 200 answered before the cut (${passing} let through)`);
      await new Promise((r) => setTimeout(r, 50));
      for (const [lba, data] of acked) assert.deepEqual(await deviceBytes(ram, lba * 512, 8192), data, `round ${round}: acknowledged write at LBA ${lba}`);
    }
  });
});
