// Login Responses in parts (C bit, RFC 7143 §11.13.2): a fake target, a small TCP server
// speaking only the login, cuts its answers into 2-3 PDUs anywhere, inside keys and values (CHAP_C
// and CHAP_R included), and checks that the initiator asks for each next part with an empty Login
// Request and negotiates from the joined text. Targets that break the rules (C with T, parts without
// end, a stage change mid-answer, too much text, a key never finished) fail the login with one line
// and a protocol-error count, never a hang.
//
// The fake target's PDUs come from a naive encoder here (Buffer writes at the RFC's offsets), not
// from the codec under test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { connectTcp } from '../src/iscsi-initiator/transport.ts';
import { InitiatorSession, newSessionCounters, randomIsid } from '../src/iscsi-initiator/session.ts';
import type { SessionCounters } from '../src/iscsi-initiator/session.ts';
import type { SessionParameters } from '../src/iscsi/negotiation.ts';
import { ChapSecret } from '../src/iscsi/chap.ts';

const TARGET = 'iqn.2026-12.org.blkback:login-parts';
const INITIATOR = 'iqn.2026-12.org.blkback:initiator';
const TSIH = 0x1234;
const ALICE_SECRET = 'alice-secret-0123';
const TARGET_CHAP = { name: 'fake-target', secret: 'target-secret-4567' };

type Pairs = [string, string][];

function encodeText(pairs: Pairs): Buffer {
  return Buffer.from(pairs.map(([k, v]) => `${k}=${v}\0`).join(''), 'utf8');
}

function decodeText(data: Buffer): Map<string, string> {
  const m = new Map<string, string>();
  for (const item of data.toString('utf8').split('\0')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    m.set(item.slice(0, eq), item.slice(eq + 1));
  }
  return m;
}

function md5(id: number, secret: string, challenge: Buffer): Buffer {
  return createHash('md5')
    .update(Buffer.from([id]))
    .update(secret)
    .update(challenge)
    .digest();
}

/** A request as the fake target saw it. */
interface Seen {
  readonly transit: boolean;
  readonly continued: boolean;
  readonly csg: number;
  readonly nsg: number;
  readonly data: Buffer;
  readonly isid: string;
  readonly itt: number;
}

/** One answer of the target: its text, the stage flags of its last part, and where to cut it. */
interface Answer {
  text: Buffer;
  csg: number;
  nsg: number;
  transit: boolean;
  final: boolean;
}

/** Misbehaviours, each applied to the first answer cut in parts. */
type Hostile = 'c-and-t' | 'endless' | 'stage-change' | 'too-long' | 'unfinished-key';

interface FakeOptions {
  /** Offsets at which to cut one answer (of stage `csg`, the `n`th answer of the login). */
  readonly cuts: (text: Buffer, csg: number, n: number) => number[];
  readonly chap?: { readonly mutual: boolean };
  readonly hostile?: Hostile;
}

interface FakeTarget {
  readonly port: number;
  /** Requests per connection, in order. */
  readonly connections: Seen[][];
  /** Connections still open on the target's side. */
  openConnections(): Promise<number>;
  close(): Promise<void>;
}

/** The operational answer: what these keys say is what the initiator must end up with. */
const OVERRIDES: Pairs = [
  ['MaxBurstLength', '65536'],
  ['FirstBurstLength', '16384'],
  ['MaxRecvDataSegmentLength', '16384'],
  ['TargetAlias', 'a fake target that answers in parts'],
];

/** Every other operational offer of the initiator is answered with its own value. */
function operational(offers: Map<string, string>): Pairs {
  const out: Pairs = [];
  for (const [k, v] of offers) if (!OVERRIDES.some(([o]) => o === k) && !/^(Initiator|Target|Session)/.test(k)) out.push([k, v]);
  return [...out, ...OVERRIDES];
}

async function startFakeTarget(o: FakeOptions): Promise<FakeTarget> {
  const connections: Seen[][] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const seen: Seen[] = [];
    connections.push(seen);
    let input = Buffer.alloc(0);
    let statSN = 100;
    let answers = 0;
    let parts: Buffer[] = [];
    let current: Answer | undefined;
    let chap: { id: number; challenge: Buffer } | undefined;
    let hostileDone = false;

    const send = (req: Buffer, a: { transit: boolean; continued: boolean; csg: number; nsg: number; final: boolean }, data: Buffer): void => {
      const h = Buffer.alloc(48);
      h[0] = 0x23;
      h[1] = (a.transit ? 0x80 : 0) | (a.continued ? 0x40 : 0) | (a.csg << 2) | a.nsg;
      h.writeUIntBE(data.length, 5, 3);
      req.copy(h, 8, 8, 14); // ISID
      h.writeUInt16BE(a.final ? TSIH : 0, 14);
      req.copy(h, 16, 16, 20); // ITT
      h.writeUInt32BE(statSN++, 24);
      h.writeUInt32BE(req.readUInt32BE(24), 28); // ExpCmdSN
      h.writeUInt32BE(req.readUInt32BE(24) + 31, 32); // MaxCmdSN
      socket.write(Buffer.concat([h, data, Buffer.alloc((4 - (data.length % 4)) % 4)]));
    };

    /** The next part of the current answer: C=1 while more follows; the last carries the answer's flags. */
    const sendPart = (req: Buffer): void => {
      const a = current!;
      const part = parts.shift()!;
      if (parts.length > 0) {
        if (o.hostile !== undefined && !hostileDone) {
          hostileDone = true;
          switch (o.hostile) {
            case 'c-and-t':
              return send(req, { transit: true, continued: true, csg: a.csg, nsg: a.nsg, final: false }, part);
            case 'endless':
              parts.unshift(Buffer.alloc(0)); // an empty part with C=1, again and again
              hostileDone = false;
              return send(req, { transit: false, continued: true, csg: a.csg, nsg: a.csg, final: false }, part);
            case 'stage-change':
              parts = [parts[0]!];
              current = { ...a, csg: a.csg === 0 ? 1 : 0 };
              break;
            case 'too-long':
              // 9 parts of 8000 bytes of one long key's value: over 64 KiB joined
              parts = [...Array.from({ length: 9 }, () => Buffer.alloc(8000, 0x61)), Buffer.from('\0')];
              return send(req, { transit: false, continued: true, csg: a.csg, nsg: a.csg, final: false }, Buffer.concat([Buffer.from('X-fake.long='), part]));
            case 'unfinished-key':
              parts = [];
              return send(
                req,
                { transit: a.transit, continued: false, csg: a.csg, nsg: a.nsg, final: a.final },
                Buffer.concat([part, Buffer.from('X-fake.cut-here')]),
              );
          }
        }
        return send(req, { transit: false, continued: true, csg: a.csg, nsg: a.csg, final: false }, part);
      }
      current = undefined;
      send(req, { transit: a.transit, continued: false, csg: a.csg, nsg: a.nsg, final: a.final }, part);
    };

    const answer = (text: Map<string, string>, csg: number): Answer => {
      if (csg === 0) {
        if (text.has('AuthMethod'))
          return {
            text: encodeText([
              ['TargetPortalGroupTag', '1'],
              ['AuthMethod', 'CHAP'],
            ]),
            csg: 0,
            nsg: 0,
            transit: false,
            final: false,
          };
        if (text.has('CHAP_A')) {
          chap = { id: randomBytes(1)[0]!, challenge: randomBytes(16) };
          return {
            text: encodeText([
              ['CHAP_A', '5'],
              ['CHAP_I', String(chap.id)],
              ['CHAP_C', `0x${chap.challenge.toString('hex')}`],
            ]),
            csg: 0,
            nsg: 0,
            transit: false,
            final: false,
          };
        }
        const r = text.get('CHAP_R') ?? '';
        assert.equal(text.get('CHAP_N'), 'alice');
        assert.equal(r, `0x${md5(chap!.id, ALICE_SECRET, chap!.challenge).toString('hex')}`, 'the initiator answered the challenge it was sent, whole');
        const pairs: Pairs = [];
        const ci = text.get('CHAP_I');
        const cc = text.get('CHAP_C');
        assert.equal(ci !== undefined, o.chap?.mutual === true, 'CHAP_I/CHAP_C sent exactly when mutual');
        if (ci !== undefined && cc !== undefined) {
          pairs.push(['CHAP_N', TARGET_CHAP.name], ['CHAP_R', `0x${md5(Number(ci), TARGET_CHAP.secret, Buffer.from(cc.slice(2), 'hex')).toString('hex')}`]);
        }
        return { text: encodeText(pairs), csg: 0, nsg: 1, transit: true, final: false };
      }
      return { text: encodeText(operational(text)), csg: 1, nsg: 3, transit: true, final: true };
    };

    const onRequest = (h: Buffer, data: Buffer): void => {
      const flags = h[1]!;
      const req: Seen = {
        transit: (flags & 0x80) !== 0,
        continued: (flags & 0x40) !== 0,
        csg: (flags >> 2) & 3,
        nsg: flags & 3,
        data,
        isid: h.subarray(8, 14).toString('hex'),
        itt: h.readUInt32BE(16),
      };
      seen.push(req);
      if (current !== undefined) return sendPart(h); // the initiator asked for the next part
      const a = answer(decodeText(data), req.csg);
      const cuts = o
        .cuts(a.text, a.csg, answers++)
        .filter((c) => c > 0 && c < a.text.length)
        .sort((x, y) => x - y);
      parts = [];
      let at = 0;
      for (const c of [...cuts, a.text.length]) {
        parts.push(a.text.subarray(at, c));
        at = c;
      }
      current = a;
      sendPart(h);
    };

    socket.on('data', (chunk: Buffer) => {
      input = Buffer.concat([input, chunk]);
      for (;;) {
        if (input.length < 48) return;
        const length = input.readUIntBE(5, 3);
        const total = 48 + length + ((4 - (length % 4)) % 4);
        if (input.length < total) return;
        const h = Buffer.from(input.subarray(0, 48));
        const data = Buffer.from(input.subarray(48, 48 + length));
        input = input.subarray(total);
        if ((h[0]! & 0x3f) !== 0x03) return void socket.destroy(); // only the login is spoken here
        onRequest(h, data);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections,
    openConnections: () => new Promise<number>((r) => server.getConnections((_e, n) => r(n))),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

async function login(port: number, chap?: { mutual: boolean }, counters: SessionCounters = newSessionCounters()): Promise<SessionParameters> {
  const where = `iscsi://127.0.0.1:${port}/${TARGET}/0`;
  const tcp = await connectTcp('127.0.0.1', port, 5000, where);
  const session = new InitiatorSession(tcp.transport, counters, () => undefined);
  tcp.attach(session);
  const p = await session.login({
    where,
    initiatorName: INITIATOR,
    targetName: TARGET,
    chap:
      chap === undefined
        ? undefined
        : {
            name: 'alice',
            secret: new ChapSecret(ALICE_SECRET),
            ...(chap.mutual ? { mutual: { name: TARGET_CHAP.name, secret: new ChapSecret(TARGET_CHAP.secret) } } : {}),
          },
    digest: false,
    isid: randomIsid(),
    loginTimeoutMs: 5000,
  });
  session.shutdown('test done');
  return p;
}

function assertOperational(p: SessionParameters): void {
  assert.equal(p.maxBurstLength, 65536);
  assert.equal(p.firstBurstLength, 16384);
  assert.equal(p.maxXmitDataSegmentLength, 16384);
  assert.equal(p.targetAlias, 'a fake target that answers in parts');
}

/**
 * Each answer that was cut into k parts was followed by k-1 empty Login Requests: C=0, T=0, the
 * same stage, ISID and ITT as the request that started it.
 */
function assertEmptyRequests(seen: readonly Seen[], partsPerAnswer: readonly number[]): void {
  let i = 0;
  for (const k of partsPerAnswer) {
    const first = seen[i++]!;
    assert.ok(first.data.length > 0, 'an answer starts from a request with text');
    for (let j = 1; j < k; j++) {
      const r = seen[i++]!;
      assert.deepEqual(
        { length: r.data.length, continued: r.continued, transit: r.transit, csg: r.csg, isid: r.isid, itt: r.itt },
        { length: 0, continued: false, transit: false, csg: first.csg, isid: first.isid, itt: first.itt },
      );
    }
  }
  assert.equal(i, seen.length, 'no other requests');
}

test('an operational answer in 3 parts, cut inside a key and inside a value: joined, negotiated, each part asked for with an empty request', async () => {
  const fake = await startFakeTarget({
    cuts: (text) => [text.indexOf('FirstBurst') + 5, text.indexOf('=16384') + 3],
  });
  try {
    assertOperational(await login(fake.port));
    assertEmptyRequests(fake.connections[0]!, [3]);
  } finally {
    await fake.close();
  }
});

test('CHAP and mutual CHAP with every answer in parts (CHAP_C and CHAP_R cut in their hex values, a cut right after a NUL)', async () => {
  const fake = await startFakeTarget({
    chap: { mutual: true },
    cuts: (text, csg, n) => {
      const s = text.toString('latin1');
      if (csg === 1) return [s.indexOf('\0') + 1, Math.floor(text.length / 2)];
      switch (n) {
        case 0:
          return [s.indexOf('AuthMe') + 4];
        case 1:
          return [s.indexOf('CHAP_C=') + 12, s.indexOf('CHAP_C=') + 30];
        default:
          return [s.indexOf('CHAP_R=') + 20];
      }
    },
  });
  try {
    const p = await login(fake.port, { mutual: true });
    assert.equal(p.authMethod, 'CHAP');
    assertOperational(p);
    assertEmptyRequests(fake.connections[0]!, [2, 3, 2, 3]);
  } finally {
    await fake.close();
  }
});

test('a 2-part operational answer cut at every byte boundary logs in the same', { timeout: 60_000 }, async () => {
  let cut = 1;
  let length = 0;
  const fake = await startFakeTarget({
    cuts: (text) => {
      length = text.length;
      return [cut];
    },
  });
  try {
    for (; cut === 1 || cut < length; cut++) {
      assertOperational(await login(fake.port));
      assertEmptyRequests(fake.connections.at(-1)!, [2]);
    }
    assert.equal(fake.connections.length, length - 1);
  } finally {
    await fake.close();
  }
});

for (const c of [
  { hostile: 'c-and-t', why: /the target broke the protocol: a Login Response with both the C and T bits set/ },
  { hostile: 'endless', why: /the target broke the protocol: more than 64 continued Login Responses/ },
  { hostile: 'stage-change', why: /the target broke the protocol: a Login Response in stage 0 to a request in stage 1/ },
  { hostile: 'too-long', why: /the target broke the protocol: login text longer than 65536 bytes/ },
  { hostile: 'unfinished-key', why: /the target broke the protocol: bad text from the target: .*without a NUL/ },
] as const) {
  test(`a target whose answer in parts breaks the rules (${c.hostile}): the login fails with one line, counted, the connection closed`, {
    timeout: 20_000,
  }, async () => {
    const fake = await startFakeTarget({ hostile: c.hostile, cuts: (text) => [Math.floor(text.length / 2)] });
    const counters = newSessionCounters();
    try {
      const started = Date.now();
      await assert.rejects(login(fake.port, undefined, counters), (e: Error) => {
        assert.match(e.message, /login failed: /);
        assert.match(e.message, c.why);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
      assert.ok(Date.now() - started < 4000, 'failed at once, not by the login timeout');
      assert.equal(counters.protocolErrors, 1);
      // the initiator closed its side: the target's socket ends
      for (let i = 0; i < 200 && (await fake.openConnections()) > 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await fake.openConnections(), 0);
    } finally {
      await fake.close();
    }
  });
}
