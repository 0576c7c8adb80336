// A hostile initiator against the target: more than 10^5 malformed or mutated PDUs (bad opcodes,
// flags and lengths, data segments past the negotiated maximum, bad digests, wrong DataSN and buffer
// offsets, login PDUs out of phase, oversized and repeated keys), thousands of connections, and a
// slow sender. Afterwards the target is up, its connections are gone, its memory is bounded, every
// bad PDU was counted, and a well-behaved session beside all of it still has its data intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startIscsiTarget } from '../src/iscsi-target/run.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { crc32c } from '../src/iscsi/crc32c.ts';
import { mulberry32 } from '../src/internal/prng.ts';
import { TestInitiator, read16, write16 } from './helpers-iscsi.ts';

const TARGET = 'iqn.2026-12.org.blkback:test';
const MiB = 1 << 20;
const GOAL_PDUS = 100_000;

/** Header + optional digests + padded data, as a hostile initiator might frame (or misframe) it. */
function frame(h: Buffer, data: Buffer | undefined, digests: { header: boolean; data: boolean }, corrupt: 'none' | 'header' | 'data'): Buffer {
  const parts: Buffer[] = [h];
  if (digests.header) {
    const d = Buffer.alloc(4);
    d.writeUInt32LE((crc32c(h) ^ (corrupt === 'header' ? 1 : 0)) >>> 0);
    parts.push(d);
  }
  if (data !== undefined && data.byteLength > 0) {
    const padded = Buffer.concat([data, Buffer.alloc((4 - (data.byteLength % 4)) % 4)]);
    parts.push(padded);
    if (digests.data) {
      const d = Buffer.alloc(4);
      d.writeUInt32LE((crc32c(padded) ^ (corrupt === 'data' ? 1 : 0)) >>> 0);
      parts.push(d);
    }
  }
  return Buffer.concat(parts);
}

/**
 * A random hostile PDU. `survivable` ones are bad in ways the protocol answers in band (Reject,
 * CHECK CONDITION, a dropped command, a failed task); the others are the ones after which the
 * connection must end (each connection's blast ends with one). The LUN field always says LUN 0.
 */
function hostilePdu(rnd: () => number, state: { cmdSN: number; itt: number }, maxData: number, survivable: boolean): { h: Buffer; data: Buffer | undefined } {
  const h = Buffer.alloc(48);
  let data: Buffer | undefined;
  const itt = state.itt++;
  h.writeUInt32BE(itt, 16);
  h.writeUInt32BE(state.cmdSN >>> 0, 24);
  const kind = survivable ? rnd() % 12 : 100 + (rnd() % 7);
  switch (kind) {
    case 0:
    case 1: {
      // WRITE(16) with immediate data, random LBA (some beyond the end), mutated CDB
      h[0] = 0x01;
      h[1] = 0x80 | 0x20 | 1;
      const blocks = 1 + (rnd() % 16);
      data = Buffer.alloc(rnd() % 2 === 0 ? blocks * 512 : rnd() % (blocks * 512), 0xee);
      h.writeUInt32BE(blocks * 512, 20);
      h[32] = 0x8a;
      h.writeUInt32BE(rnd() % 4 === 0 ? rnd() : 0, 34);
      h.writeUInt32BE(rnd() % 200000, 38);
      h.writeUInt32BE(blocks, 42);
      if (rnd() % 4 === 0) h[32 + (rnd() % 16)] = rnd() & 0xff;
      state.cmdSN++;
      break;
    }
    case 2: {
      // READ(16), lengths up to past the maximum transfer length
      h[0] = 0x01;
      h[1] = 0x80 | 0x40 | 1;
      const blocks = rnd() % 3 === 0 ? rnd() : rnd() % 300;
      h.writeUInt32BE(Math.min(blocks * 512, 0xffffffff), 20);
      h[32] = 0x88;
      h.writeUInt32BE(rnd() % 200000, 38);
      h.writeUInt32BE(blocks >>> 0, 42);
      state.cmdSN++;
      break;
    }
    case 3: {
      // Data-Out: unknown tasks, wrong DataSN, wrong offsets
      h[0] = 0x05;
      h[1] = rnd() % 2 === 0 ? 0x80 : 0;
      h.writeUInt32BE(rnd() % 2 === 0 ? (itt - 1) >>> 0 : rnd(), 16);
      h.writeUInt32BE(0xffffffff, 20);
      h.writeUInt32BE(rnd() % 4, 36);
      h.writeUInt32BE(rnd() % 3 === 0 ? 0 : rnd() % 100000, 40);
      data = Buffer.alloc(rnd() % 4096, 0xdd);
      break;
    }
    case 4: {
      // NOP-Out ping with data
      h[0] = 0x40;
      h[1] = 0x80;
      h.writeUInt32BE(0xffffffff, 20);
      data = Buffer.alloc(rnd() % 1000, 0x11);
      break;
    }
    case 5: {
      // Text Request: SendTargets, junk, repeated keys, renegotiation
      h[0] = 0x04;
      h[1] = 0x80;
      const pairs: [string, string][] = [
        ['SendTargets', 'All'],
        ['X-junk', 'y'.repeat(rnd() % 300)],
        ['MaxRecvDataSegmentLength', String(rnd())],
        ['HeaderDigest', 'CRC32C'],
      ];
      if (rnd() % 2 === 0) pairs.push(['SendTargets', 'All']);
      data = encodeTextLoose(pairs);
      h.writeUInt32BE(0xffffffff, 20);
      state.cmdSN++;
      break;
    }
    case 6: {
      // task management, never the resets that are meant to reach every session
      h[0] = 0x42;
      const fns = [1, 2, 3, 4, 8, 0, 9, 0x7f];
      h[1] = 0x80 | (fns[rnd() % fns.length] as number);
      h.writeUInt32BE(rnd() % 2 === 0 ? (itt - 2) >>> 0 : rnd(), 20);
      h.writeUInt32BE(rnd(), 32);
      break;
    }
    case 7: {
      // opcodes an initiator must not send, unknown ones, SNACK
      const ops = [0x20, 0x21, 0x25, 0x31, 0x3f, 0x07, 0x1c, 0x10, 0x22, 0x26];
      h[0] = ops[rnd() % ops.length] as number;
      h[1] = rnd() & 0xff;
      break;
    }
    case 8: {
      // a CDB of random bytes
      h[0] = 0x01;
      h[1] = 0x80 | (rnd() % 2 === 0 ? 0x40 : 0) | 1;
      for (let i = 32; i < 48; i++) h[i] = rnd() & 0xff;
      h.writeUInt32BE(rnd() % 65536, 20);
      state.cmdSN++;
      break;
    }
    case 9: {
      // CmdSN far outside the window
      h[0] = 0x01;
      h[1] = 0x80 | 1;
      h.writeUInt32BE((state.cmdSN + 100_000 + (rnd() % 1_000_000)) >>> 0, 24);
      break;
    }
    case 10: {
      // an immediate command with the same ITT as one in flight
      h[0] = 0x41;
      h[1] = 0x80 | 0x40 | 1;
      h.writeUInt32BE((itt - 1) >>> 0, 16);
      h[32] = 0x88;
      h.writeUInt32BE(8, 42);
      h.writeUInt32BE(4096, 20);
      break;
    }
    case 11: {
      // a valid command with header bytes mutated (not opcode, lengths or LUN)
      h[0] = 0x01;
      h[1] = 0x80 | 0x40 | 1;
      h[32] = 0x28;
      h.writeUInt16BE(8, 39);
      h.writeUInt32BE(4096, 20);
      for (let i = 0; i < 3; i++) {
        const at = [1, 2, 3, 20, 21, 22, 23, 24, 28, 32, 33, 40, 41, 47][rnd() % 14] as number;
        h[at] = rnd() & 0xff;
      }
      state.cmdSN++;
      break;
    }
    // ---- fatal: the connection must end
    case 100: // a data segment longer than the negotiated maximum
      h[0] = 0x04;
      h[1] = 0x80;
      data = Buffer.alloc(maxData + 4 + (rnd() % 1000));
      break;
    case 101: // a login PDU in full feature phase
      h[0] = 0x43;
      h[1] = 0x87;
      data = encodeTextLoose([
        ['InitiatorName', 'iqn.x'],
        ['SessionType', 'Normal'],
      ]);
      break;
    case 102: // NOP-Out with both an ITT and a TTT
      h[0] = 0x40;
      h[1] = 0x80;
      h.writeUInt32BE(rnd() >>> 1, 20);
      break;
    case 103: // Text continuing an exchange that does not exist
      h[0] = 0x04;
      h[1] = 0x80;
      h.writeUInt32BE(rnd() >>> 1, 20);
      state.cmdSN++;
      break;
    case 104: // immediate data on a command without the W bit
      h[0] = 0x01;
      h[1] = 0x80 | 1;
      h.writeUInt32BE(512, 20);
      data = Buffer.alloc(512);
      state.cmdSN++;
      break;
    case 105: {
      // random bytes for the lengths and AHS: the stream is no longer followable
      h[0] = 0x00;
      h[1] = 0x80;
      h[4] = rnd() & 0xff;
      h[5] = rnd() & 0xff;
      h[6] = rnd() & 0xff;
      return { h, data: undefined };
    }
    default: // logout
      h[0] = 0x46;
      h[1] = 0x80;
      break;
  }
  h.fill(0, 8, 16);
  h.writeUIntBE(Math.min(data?.byteLength ?? 0, 0xffffff), 5, 3);
  return { h, data };
}

/** key=value\0 without the codec's checks (a hostile peer does not run them). */
function encodeTextLoose(pairs: [string, string][]): Buffer {
  return Buffer.from(pairs.map(([k, v]) => `${k}=${v}\0`).join(''));
}

function rawConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
    s.on('error', () => undefined);
    s.on('data', () => undefined);
  });
}

function loginPdu(csgNsg: number, pairs: [string, string][], isid = 1, version = 0): Buffer {
  const text = encodeTextLoose(pairs);
  const h = Buffer.alloc(48);
  h[0] = 0x43;
  h[1] = csgNsg;
  h[2] = version;
  h[3] = version;
  h.writeUIntBE(text.byteLength, 5, 3);
  h[8] = 0x80;
  h.writeUInt32BE(isid, 10);
  h.writeUInt32BE(0x77, 16);
  return frame(h, text, { header: false, data: false }, 'none');
}

test('10^5 hostile PDUs, thousands of connections and a slow sender: the target stays up, bounded, and a good session keeps its data', {
  timeout: 240_000,
}, async () => {
  const lun0 = createRamDisk(64 * MiB, { name: 'ram:hostile' });
  const lun1 = createRamDisk(16 * MiB, { name: 'ram:good' });
  const devices = new Map<number, BlockDevice>([
    [0, lun0],
    [1, lun1],
  ]);
  const logs: string[] = [];
  const t = await startIscsiTarget({
    portal: { host: '127.0.0.1', port: 0 },
    targetName: TARGET,
    luns: [
      { lun: 0, spec: 'hostile' },
      { lun: 1, spec: 'good' },
    ],
    allow: 'ALL',
    allowPaths: [],
    openStore: async (l) => devices.get(l.lun)!,
    maxRecvDataSegmentLength: 8192,
    loginTimeoutMs: 5000,
    maxConnections: 300,
    log: (l) => {
      if (logs.length < 1000) logs.push(l);
    },
  });
  const port = t.portal.port;
  const counters = t.target.counters;
  const rssBefore = process.memoryUsage().rss;
  let phaseStart = Date.now();
  const phase = (name: string): void => {
    if (process.env.HOSTILE_DEBUG !== undefined) console.log(`phase ${name}: ${Date.now() - phaseStart} ms, ${JSON.stringify(counters)}`);
    phaseStart = Date.now();
  };
  try {
    // the well-behaved session, on its own LUN
    const good = await TestInitiator.connect(port);
    assert.equal(await good.login({ initiatorName: 'iqn.2026-12.org.blkback:good' }), 0);
    const pattern = Buffer.alloc(1 * MiB);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
    assert.equal((await good.command(write16(0, pattern.length / 512), { dataOut: pattern, lun: 1 })).status, 0);
    const checkGood = async (when: string): Promise<void> => {
      const r = await good.command(read16(0, pattern.length / 512), { readLength: pattern.length, lun: 1 });
      if (r.status === 2 && r.sense![2]! === 6) return checkGood(when); // a unit attention (another initiator's actions): read again
      assert.equal(r.status, 0, `good session read ${when}`);
      assert.ok(r.data.equals(pattern), `good session data intact ${when}`);
    };

    // 1. full-feature-phase fuzz: logged-in sessions blasting mutated PDUs, some with digests
    const rnd = mulberry32(20261206);
    let round = 0;
    while (counters.pdusIn < GOAL_PDUS) {
      const batch: Promise<void>[] = [];
      for (let k = 0; k < 8; k++) {
        batch.push(
          (async () => {
            const c = await TestInitiator.connect(port);
            const digests = { header: rnd() % 3 === 0, data: rnd() % 3 === 0 };
            const status = await c.login({
              initiatorName: `iqn.2026-12.org.blkback:hostile-${round}-${k}`,
              headerDigest: digests.header,
              dataDigest: digests.data,
              maxRecvDataSegmentLength: 8192,
            });
            if (status !== 0) return void c.close();
            const state = { cmdSN: c.cmdSN, itt: 1 };
            const out: Buffer[] = [];
            for (let i = 0; i < 500; i++) {
              const { h, data } = hostilePdu(rnd, state, 8192, i < 499);
              // data digest errors are answered in band; a bad header digest ends the stream
              const corrupt = i === 499 && digests.header && rnd() % 3 === 0 ? 'header' : digests.data && rnd() % 20 === 0 ? 'data' : 'none';
              out.push(frame(h, data, digests, corrupt));
            }
            c.send(Buffer.concat(out));
            await new Promise((r) => setTimeout(r, 30));
            c.close();
          })(),
        );
      }
      await Promise.all(batch);
      round++;
      if (round % 10 === 0) await checkGood(`after fuzz round ${round}`);
    }
    const fuzzPdus = counters.pdusIn;
    phase('fuzz');

    // 2. login-phase fuzz: out-of-phase PDUs, bad versions and stages, repeated and oversized keys
    const loginCases: Buffer[] = [
      frame(Buffer.from([0x01, 0x81, ...new Array<number>(46).fill(0)]), undefined, { header: false, data: false }, 'none'), // SCSI command first
      loginPdu(
        0x87,
        [
          ['InitiatorName', 'iqn.a'],
          ['TargetName', TARGET],
        ],
        2,
        5,
      ), // version 5 only
      loginPdu(0x8b, [
        ['InitiatorName', 'iqn.a'],
        ['TargetName', TARGET],
      ]), // CSG 2
      loginPdu(0x87, [
        ['InitiatorName', 'iqn.a'],
        ['InitiatorName', 'iqn.b'],
        ['TargetName', TARGET],
      ]), // repeated key
      loginPdu(0x87, [
        ['InitiatorName', 'iqn.a'],
        ['TargetName', TARGET],
        ['X-big', 'v'.repeat(5000)],
      ]), // oversized value
      loginPdu(0x87, [['k'.repeat(200), 'v']]),
      loginPdu(0x87, [
        ['InitiatorName', 'iqn.a'],
        ['TargetName', TARGET],
        ['MaxRecvDataSegmentLength', '1'],
      ]),
      loginPdu(0x47, [
        ['InitiatorName', 'iqn.a'],
        ['TargetName', TARGET],
      ]), // T and C together
      Buffer.concat([Buffer.from([0x43, 0x87, 0, 0, 0, 0xff, 0xff, 0xff]), Buffer.alloc(40)]), // 16 MiB login text
    ];
    for (let i = 0; i < 200; i++) {
      const s = await rawConnect(port);
      s.write(loginCases[i % loginCases.length]!);
      // continuation storm: C-bit login PDUs until the 64 KiB text bound
      if (i % 20 === 0) for (let j = 0; j < 20; j++) s.write(loginPdu(0x40 | 0x04, [['X-fill', 'z'.repeat(4000)]]));
      setTimeout(() => s.destroy(), 200);
    }

    phase('login fuzz');
    // 3. thousands of connections at once (more than the target admits), then gone
    const many: net.Socket[] = [];
    const seenBefore = counters.connectionsAccepted + counters.connectionsRefused;
    const opened = await Promise.allSettled(Array.from({ length: 1500 }, () => rawConnect(port)));
    for (const o of opened) if (o.status === 'fulfilled') many.push(o.value);
    // wait until the target has seen every connection the kernel completed
    const waitStart = Date.now();
    while (counters.connectionsAccepted + counters.connectionsRefused - seenBefore < many.length && Date.now() - waitStart < 20_000) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(many.length > 300, `${many.length} connections opened`);
    assert.ok(counters.connectionsRefused > 0, 'connections past --max-connections are refused');
    await checkGood('with 1500 idle connections open');
    for (const s of many) s.destroy();

    phase('many connections');
    // 4. a slow sender: a login PDU a byte at a time, never finished in time
    const slow = await rawConnect(port);
    let slowClosed = false;
    slow.on('close', () => (slowClosed = true));
    const slowBytes = loginPdu(0x87, [
      ['InitiatorName', 'iqn.2026-12.org.blkback:slow'],
      ['TargetName', TARGET],
    ]);
    for (let i = 0; i < 40 && !slowClosed; i++) {
      slow.write(slowBytes.subarray(i, i + 1));
      await new Promise((r) => setTimeout(r, 100));
    }
    const slowStart = Date.now();
    while (!slowClosed && Date.now() - slowStart < 8000) await new Promise((r) => setTimeout(r, 100));
    assert.ok(slowClosed, 'a login that does not finish within the login timeout is cut off');
    assert.ok(counters.loginTimeouts >= 1);

    phase('slow sender');
    // afterwards: up, bounded, counted, and the good session intact
    const settle = Date.now();
    while (t.target.connectionCount > 1 && Date.now() - settle < 10_000) await new Promise((r) => setTimeout(r, 100));
    assert.equal(t.target.connectionCount, 1, "only the good session's connection is left");
    assert.equal(t.target.sessions.length, 1);
    await checkGood('at the end');
    const fresh = await TestInitiator.connect(port);
    assert.equal(await fresh.login({ initiatorName: 'iqn.2026-12.org.blkback:after' }), 0, 'a new initiator can still log in');
    fresh.close();
    good.close();
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    assert.ok(rssGrowth < 400 * MiB, `memory grew by ${(rssGrowth / MiB).toFixed(0)} MiB`);
    assert.ok(fuzzPdus >= GOAL_PDUS, `${fuzzPdus} PDUs`);
    assert.ok(counters.protocolErrors + counters.digestErrors + counters.framingErrors > 1000, JSON.stringify(counters));
    assert.ok(counters.checkConditions > 1000);
    assert.ok(counters.loginsFailed > 100);
    console.log(
      `hostile: ${counters.pdusIn} PDUs in, ${counters.connectionsAccepted} connections accepted, ${counters.connectionsRefused} refused, ` +
        `${counters.protocolErrors} protocol errors (${counters.dataSequenceErrors} data sequence), ${counters.digestErrors} digest errors, ${counters.framingErrors} framing errors, ` +
        `${counters.checkConditions} CHECK CONDITIONs, ${counters.loginsFailed} failed logins, ${counters.loginTimeouts} login timeouts; RSS +${(rssGrowth / MiB).toFixed(0)} MiB`,
    );
  } finally {
    await t.close();
  }
});
