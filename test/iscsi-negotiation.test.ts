import assert from 'node:assert/strict';
import test from 'node:test';
import { LoginStatus } from '../src/iscsi/constants.ts';
import { ChapAuthenticator, ChapInitiator, ChapSecret } from '../src/iscsi/chap.ts';
import type { RandomSource } from '../src/iscsi/chap.ts';
import { InitiatorNegotiator, KEYS, TargetNegotiator, answerFullFeatureKeys, defaultOffer, keyDef } from '../src/iscsi/negotiation.ts';
import type { Digest, InitiatorConfig, KeyDef, LoginFlags, SessionParameters, TargetConfig, TargetLoginStep } from '../src/iscsi/negotiation.ts';
import { encodeText } from '../src/iscsi/text.ts';
import type { TextPair } from '../src/iscsi/text.ts';
import { mulberry32 } from '../src/internal/prng.ts';
import { UsageError } from '../src/internal/errors.ts';

// ---------------------------------------------------------------------------------------------
// Helpers. Expected bytes are written out by hand as "Key=value\0..." strings.

/** Wire text as a string with NULs, for byte-exact comparisons. */
const wire = (pairs: readonly TextPair[]): string => Buffer.from(encodeText(pairs)).toString('latin1');
/** Pairs from a hand-written "K=v\0K=v\0" string. */
function pairs(text: string): TextPair[] {
  return text
    .split('\0')
    .filter((s) => s.length > 0)
    .map((s) => {
      const eq = s.indexOf('=');
      return [s.slice(0, eq), s.slice(eq + 1)] as const;
    });
}

const SEC_TO_OP: LoginFlags = { csg: 0, nsg: 1, transit: true };
const SEC_STAY: LoginFlags = { csg: 0, nsg: 0, transit: false };
const OP_TO_FFP: LoginFlags = { csg: 1, nsg: 3, transit: true };
const OP_STAY: LoginFlags = { csg: 1, nsg: 1, transit: false };

const INAME = 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test';
const TNAME = 'iqn.2026-11.test:ram';
const NAMES = `InitiatorName=${INAME}\0TargetName=${TNAME}\0SessionType=Normal\0`;

function ok(r: TargetLoginStep): Extract<TargetLoginStep, { ok: true }> {
  assert.ok(r.ok, r.ok ? '' : `unexpected failure 0x${r.status.toString(16)}: ${r.reason}`);
  return r;
}

function refused(r: { ok: boolean; status?: number; reason?: string }, status: LoginStatus, re?: RegExp): void {
  assert.equal(r.ok, false, 'expected a failure');
  assert.equal(r.status, status, r.reason);
  if (re !== undefined) assert.match(r.reason ?? '', re);
}

/** One operational key offered by itself after the names, in a normal session. */
function answerTo(key: string, value: string, cfg: TargetConfig = defaultOffer()): TargetLoginStep {
  const t = new TargetNegotiator(cfg);
  return t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}${key}=${value}\0`));
}

function answerValue(key: string, value: string, cfg?: TargetConfig): string | undefined {
  const r = ok(answerTo(key, value, cfg));
  return r.answers.find((a) => a[0] === key)?.[1];
}

function counter(seed = 1): RandomSource {
  let x = seed;
  return (n) => Uint8Array.from({ length: n }, () => (x = (x * 1103515245 + 12345) >>> 0) >>> 24);
}

interface Transcript {
  readonly lines: string[];
  readonly target?: SessionParameters;
  readonly initiator?: SessionParameters;
  readonly error?: string;
}

/** Run our initiator against our target until the login completes or fails. */
function drive(t: TargetNegotiator, i: InitiatorNegotiator): Transcript {
  const lines: string[] = [];
  let req = i.start();
  for (let round = 0; round < 12; round++) {
    lines.push(`I ${req.csg}>${req.nsg}${req.transit ? ' T' : ''}: ${wire(req.pairs).replaceAll('\0', ' ')}`);
    const r = t.receiveLogin(req, req.pairs);
    if (!r.ok) return { lines, error: `target 0x${r.status.toString(16)}: ${r.reason}` };
    lines.push(`T ${r.csg}>${r.nsg}${r.transit ? ' T' : ''}: ${wire(r.answers).replaceAll('\0', ' ')}`);
    const s = i.receiveLogin({ csg: r.csg, nsg: r.nsg, transit: r.transit }, r.answers);
    if (!s.ok) return { lines, error: `initiator 0x${s.status.toString(16)}: ${s.reason}` };
    if (s.complete) {
      assert.ok(r.complete && t.complete && i.complete);
      return { lines, target: t.parameters(), initiator: i.parameters() };
    }
    req = s.next!;
  }
  return { lines, error: 'no end after 12 rounds' };
}

/** Both sides agree, each from its own point of view. */
function assertAgree(tp: SessionParameters, ip: SessionParameters): void {
  const { maxRecvDataSegmentLength: tRecv, maxXmitDataSegmentLength: tXmit, ...tRest } = tp;
  const { maxRecvDataSegmentLength: iRecv, maxXmitDataSegmentLength: iXmit, ...iRest } = ip;
  assert.equal(tRecv, iXmit, 'target receives what the initiator sends');
  assert.equal(iRecv, tXmit, 'initiator receives what the target sends');
  assert.deepEqual(tRest, iRest);
}

// ---------------------------------------------------------------------------------------------

test('the key table: defaults inside their ranges and value sets', () => {
  for (const [name, d] of Object.entries(KEYS) as [string, KeyDef][]) {
    if (d.range !== undefined && d.default !== undefined) {
      const n = Number(d.default);
      assert.ok(n >= d.range[0] && n <= d.range[1], name);
    }
    if (d.values !== undefined && d.default !== undefined) assert.ok(d.values.includes(d.default), name);
    if (d.kind === 'min' || d.kind === 'max') assert.ok(d.range !== undefined, name);
    assert.equal(keyDef(name), d);
  }
  assert.equal(keyDef('toString'), undefined);
  assert.equal(keyDef('X-vendor'), undefined);
  // Spot checks against RFC 7143 §13.
  assert.equal(KEYS.MaxRecvDataSegmentLength.default, '8192');
  assert.deepEqual(KEYS.MaxBurstLength.range, [512, 16777215]);
  assert.equal(KEYS.FirstBurstLength.default, '65536');
  assert.equal(KEYS.DefaultTime2Wait.kind, 'max');
  assert.equal(KEYS.DefaultTime2Retain.default, '20');
  assert.equal(KEYS.ImmediateData.kind, 'and');
  assert.equal(KEYS.InitialR2T.kind, 'or');
  assert.equal(KEYS.ErrorRecoveryLevel.range[1], 2);
  assert.equal(KEYS.TargetPortalGroupTag.sender, 'target');
});

test('a libiscsi login without CHAP: the exact answer', () => {
  // lib/login.c (1.19.0) iscsi_login_async, first PDU when no user is set: CSG=1, NSG=3, T=1.
  const request =
    NAMES +
    'HeaderDigest=None,CRC32C\0DataDigest=None\0InitialR2T=No\0ImmediateData=Yes\0MaxBurstLength=262144\0' +
    'FirstBurstLength=262144\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0MaxOutstandingR2T=1\0ErrorRecoveryLevel=0\0' +
    'IFMarker=No\0OFMarker=No\0MaxConnections=1\0MaxRecvDataSegmentLength=262144\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0';
  const t = new TargetNegotiator(defaultOffer());
  const r = ok(t.receiveLogin(OP_TO_FFP, pairs(request)));
  assert.equal(
    wire(r.answers),
    'HeaderDigest=None\0DataDigest=None\0InitialR2T=No\0ImmediateData=Yes\0MaxBurstLength=262144\0' +
      'FirstBurstLength=262144\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0MaxOutstandingR2T=1\0ErrorRecoveryLevel=0\0' +
      'IFMarker=No\0OFMarker=No\0MaxConnections=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0' +
      'TargetPortalGroupTag=1\0MaxRecvDataSegmentLength=262144\0',
  );
  assert.deepEqual([r.transit, r.csg, r.nsg, r.complete], [true, 1, 3, true]);
  const p = t.parameters();
  assert.equal(p.maxRecvDataSegmentLength, 262144);
  assert.equal(p.maxXmitDataSegmentLength, 262144);
  assert.equal(p.immediateData, true);
  assert.equal(p.initialR2T, false);
  assert.equal(p.firstBurstLength, 262144);
  assert.equal(p.maxBurstLength, 262144);
  assert.equal(p.headerDigest, false);
  assert.equal(p.dataDigest, false);
  assert.equal(p.defaultTime2Retain, 0);
  assert.equal(p.authMethod, 'None');
  assert.equal(p.targetPortalGroupTag, 1);
  assert.equal(t.identity?.initiatorName, INAME);
});

test('a libiscsi login with CHAP: security stage exchange, then operational', () => {
  const users = new Map([['user', new ChapSecret('password1234')]]);
  const t = new TargetNegotiator({
    ...defaultOffer(),
    authMethods: ['CHAP'],
    authenticator: new ChapAuthenticator({ initiators: users, random: (n) => (n === 1 ? Uint8Array.of(9) : Uint8Array.from({ length: n }, (_, k) => k)) }),
  });
  // OFFER_CHAP leg: T=1 towards the operational stage, as libiscsi sends it.
  let r = ok(t.receiveLogin(SEC_TO_OP, pairs(`${NAMES}AuthMethod=CHAP,None\0`)));
  assert.equal(wire(r.answers), 'AuthMethod=CHAP\0TargetPortalGroupTag=1\0');
  assert.equal(r.transit, false, 'CHAP has still to happen');
  r = ok(t.receiveLogin(SEC_STAY, pairs('CHAP_A=5\0')));
  assert.equal(wire(r.answers), 'CHAP_A=5\0CHAP_I=9\0CHAP_C=0x000102030405060708090a0b0c0d0e0f\0');
  assert.equal(r.transit, false);
  // libiscsi writes the response in upper-case hex.
  const md5 = new ChapInitiator({ name: 'user', secret: new ChapSecret('password1234'), random: counter() });
  md5.start();
  const mine = md5.step(r.answers);
  assert.equal(mine.status, 'success');
  const chapR = mine.pairs.find((x) => x[0] === 'CHAP_R')![1];
  r = ok(t.receiveLogin(SEC_TO_OP, pairs(`CHAP_N=user\0CHAP_R=0x${chapR.slice(2).toUpperCase()}\0`)));
  assert.equal(wire(r.answers), '');
  assert.deepEqual([r.transit, r.csg, r.nsg, r.complete], [true, 0, 1, false]);
  assert.equal(t.chapUser, 'user');
  // Operational stage: libiscsi sends no names again (secneg_phase moved on).
  r = ok(t.receiveLogin(OP_TO_FFP, pairs('HeaderDigest=None,CRC32C\0DataDigest=None\0InitialR2T=No\0ImmediateData=Yes\0MaxRecvDataSegmentLength=262144\0')));
  assert.equal(wire(r.answers), 'HeaderDigest=None\0DataDigest=None\0InitialR2T=No\0ImmediateData=Yes\0MaxRecvDataSegmentLength=262144\0');
  assert.deepEqual([r.transit, r.nsg, r.complete], [true, 3, true]);
  assert.equal(t.parameters().authMethod, 'CHAP');
});

test('an open-iscsi normal login: the exact answer, every key one open-iscsi parses', () => {
  // usr/login.c iscsi_make_login_pdu + fill_op_params_text with iscsid.conf defaults.
  const request =
    `InitiatorName=iqn.2004-10.com.ubuntu:01:5e4d1d1c6a2\0InitiatorAlias=host1\0TargetName=${TNAME}\0SessionType=Normal\0` +
    'HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0' +
    'InitialR2T=No\0ImmediateData=Yes\0MaxBurstLength=16776192\0FirstBurstLength=262144\0MaxOutstandingR2T=1\0MaxConnections=1\0' +
    'DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0MaxRecvDataSegmentLength=262144\0';
  const t = new TargetNegotiator(defaultOffer({ targetAlias: 'blkback ram' }));
  const r = ok(t.receiveLogin(OP_TO_FFP, pairs(request)));
  assert.equal(
    wire(r.answers),
    'HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0' +
      'InitialR2T=No\0ImmediateData=Yes\0MaxBurstLength=16776192\0FirstBurstLength=262144\0MaxOutstandingR2T=1\0MaxConnections=1\0' +
      'DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0TargetAlias=blkback ram\0TargetPortalGroupTag=1\0MaxRecvDataSegmentLength=262144\0',
  );
  assert.ok(r.complete);
  const p = t.parameters();
  assert.equal(p.initiatorAlias, 'host1');
  assert.equal(p.targetAlias, 'blkback ram');
  assert.equal(p.maxBurstLength, 16776192);
  // open-iscsi's get_op_params_text_keys fails the login on any key it does not know.
  const known = new Set([
    'TargetAlias',
    'TargetAddress',
    'TargetPortalGroupTag',
    'InitialR2T',
    'ImmediateData',
    'MaxRecvDataSegmentLength',
    'FirstBurstLength',
    'MaxBurstLength',
    'HeaderDigest',
    'DataDigest',
    'DefaultTime2Wait',
    'DefaultTime2Retain',
    'OFMarker',
    'OFMarkInt',
    'IFMarker',
    'IFMarkInt',
    'DataPDUInOrder',
    'DataSequenceInOrder',
    'MaxOutstandingR2T',
    'MaxConnections',
    'ErrorRecoveryLevel',
    'RDMAExtensions',
    'InitiatorRecvDataSegmentLength',
    'TargetRecvDataSegmentLength',
  ]);
  for (const [k] of r.answers) assert.ok(known.has(k), k);
});

test('an open-iscsi discovery login: session-wide keys not offered, digests and MRDSL answered', () => {
  const request =
    'InitiatorName=iqn.2004-10.com.ubuntu:01:5e4d1d1c6a2\0InitiatorAlias=host1\0SessionType=Discovery\0' +
    'HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0' +
    'MaxRecvDataSegmentLength=32768\0';
  const t = new TargetNegotiator(defaultOffer({ targetAlias: 'not in discovery' }));
  const r = ok(t.receiveLogin(OP_TO_FFP, pairs(request)));
  assert.equal(
    wire(r.answers),
    'HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0MaxRecvDataSegmentLength=262144\0',
  );
  const p = t.parameters();
  assert.equal(p.sessionType, 'Discovery');
  assert.equal(p.targetName, undefined);
  assert.equal(p.targetPortalGroupTag, undefined);
  assert.equal(p.maxXmitDataSegmentLength, 32768);
});

test('a discovery session answers Irrelevant to the keys only normal sessions use', () => {
  const t = new TargetNegotiator(defaultOffer());
  const r = ok(
    t.receiveLogin(
      OP_TO_FFP,
      pairs(
        `InitiatorName=${INAME}\0SessionType=Discovery\0InitialR2T=No\0ImmediateData=Yes\0MaxBurstLength=262144\0FirstBurstLength=262144\0` +
          'MaxOutstandingR2T=1\0MaxConnections=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0TaskReporting=RFC3720\0iSCSIProtocolLevel=1\0ErrorRecoveryLevel=0\0',
      ),
    ),
  );
  assert.equal(
    wire(r.answers),
    'InitialR2T=Irrelevant\0ImmediateData=Irrelevant\0MaxBurstLength=Irrelevant\0FirstBurstLength=Irrelevant\0MaxOutstandingR2T=Irrelevant\0' +
      'MaxConnections=Irrelevant\0DataPDUInOrder=Irrelevant\0DataSequenceInOrder=Irrelevant\0TaskReporting=Irrelevant\0iSCSIProtocolLevel=Irrelevant\0' +
      'ErrorRecoveryLevel=0\0MaxRecvDataSegmentLength=262144\0',
  );
  const p = t.parameters();
  assert.equal(p.maxBurstLength, 262144, 'defaults stand');
  assert.equal(p.initialR2T, true);
});

test('numerical keys: Minimum/Maximum at every boundary, out of range → Reject', () => {
  const cfg = defaultOffer({ maxBurstLength: 1048576, firstBurstLength: 65536, maxOutstandingR2T: 8 });
  const cases: [string, string, string][] = [
    // key, offer, answer
    ['MaxBurstLength', '511', 'Reject'],
    ['MaxBurstLength', '512', '512'],
    ['MaxBurstLength', '1048576', '1048576'],
    ['MaxBurstLength', '1048577', '1048576'],
    ['MaxBurstLength', '16777215', '1048576'],
    ['MaxBurstLength', '16777216', 'Reject'],
    ['MaxBurstLength', '0x100000', '1048576'],
    ['MaxBurstLength', 'lots', 'Reject'],
    ['MaxBurstLength', '', 'Reject'],
    ['FirstBurstLength', '511', 'Reject'],
    ['FirstBurstLength', '512', '512'],
    ['FirstBurstLength', '65537', '65536'],
    ['FirstBurstLength', '16777216', 'Reject'],
    ['MaxOutstandingR2T', '0', 'Reject'],
    ['MaxOutstandingR2T', '1', '1'],
    ['MaxOutstandingR2T', '8', '8'],
    ['MaxOutstandingR2T', '65535', '8'],
    ['MaxOutstandingR2T', '65536', 'Reject'],
    ['MaxConnections', '0', 'Reject'],
    ['MaxConnections', '1', '1'],
    ['MaxConnections', '65535', '1'],
    ['MaxConnections', '65536', 'Reject'],
    ['ErrorRecoveryLevel', '0', '0'],
    ['ErrorRecoveryLevel', '2', '0'],
    ['ErrorRecoveryLevel', '3', 'Reject'],
    ['DefaultTime2Wait', '0', '2'],
    ['DefaultTime2Wait', '2', '2'],
    ['DefaultTime2Wait', '3600', '3600'],
    ['DefaultTime2Wait', '3601', 'Reject'],
    ['DefaultTime2Retain', '0', '0'],
    ['DefaultTime2Retain', '20', '20'],
    ['DefaultTime2Retain', '3600', '20'],
    ['DefaultTime2Retain', '3601', 'Reject'],
    ['iSCSIProtocolLevel', '0', '0'],
    ['iSCSIProtocolLevel', '2', '1'],
    ['iSCSIProtocolLevel', '31', '1'],
    ['iSCSIProtocolLevel', '32', 'Reject'],
  ];
  for (const [key, offer, want] of cases) assert.equal(answerValue(key, offer, cfg), want, `${key}=${offer}`);
});

test('a Reject leaves the default in force', () => {
  const t = new TargetNegotiator(defaultOffer());
  ok(t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}MaxBurstLength=99\0MaxOutstandingR2T=0\0ErrorRecoveryLevel=7\0`)));
  const p = t.parameters();
  assert.equal(p.maxBurstLength, 262144);
  assert.equal(p.maxOutstandingR2T, 1);
  assert.equal(p.errorRecoveryLevel, 0);
});

test('Boolean keys: AND and OR against both of our settings', () => {
  const yes = defaultOffer({ immediateData: true, initialR2T: true });
  const no = defaultOffer({ immediateData: false, initialR2T: false });
  // ImmediateData: AND.
  assert.equal(answerValue('ImmediateData', 'Yes', yes), 'Yes');
  assert.equal(answerValue('ImmediateData', 'No', yes), 'No');
  assert.equal(answerValue('ImmediateData', 'Yes', no), 'No');
  assert.equal(answerValue('ImmediateData', 'No', no), 'No');
  // InitialR2T: OR.
  assert.equal(answerValue('InitialR2T', 'Yes', yes), 'Yes');
  assert.equal(answerValue('InitialR2T', 'No', yes), 'Yes');
  assert.equal(answerValue('InitialR2T', 'Yes', no), 'Yes');
  assert.equal(answerValue('InitialR2T', 'No', no), 'No');
  // DataPDUInOrder / DataSequenceInOrder: OR; we want order by default.
  assert.equal(answerValue('DataPDUInOrder', 'No'), 'Yes');
  assert.equal(answerValue('DataSequenceInOrder', 'No', { ...defaultOffer(), dataSequenceInOrder: false }), 'No');
  for (const bad of ['yes', 'true', '1', '']) assert.equal(answerValue('ImmediateData', bad), 'Reject', bad);
  // Obsolete markers and iSER over TCP.
  assert.equal(answerValue('IFMarker', 'Yes'), 'No');
  assert.equal(answerValue('OFMarker', 'No'), 'No');
  assert.equal(answerValue('IFMarkInt', '2048~8192'), 'Reject');
  assert.equal(answerValue('OFMarkInt', '1~65535'), 'Reject');
  assert.equal(answerValue('RDMAExtensions', 'Yes'), 'No');
  assert.equal(answerValue('InitiatorRecvDataSegmentLength', '262144'), 'Irrelevant');
  assert.equal(answerValue('TargetRecvDataSegmentLength', '8192'), 'Irrelevant');
});

test("list keys: the initiator's first acceptable value, else Reject", () => {
  const any = defaultOffer({ digest: 'any' });
  const crc = defaultOffer({ digest: 'crc32c' });
  const none = defaultOffer({ digest: 'none' });
  assert.equal(answerValue('HeaderDigest', 'None,CRC32C', any), 'None');
  assert.equal(answerValue('HeaderDigest', 'CRC32C,None', any), 'CRC32C');
  assert.equal(answerValue('DataDigest', 'CRC32C', any), 'CRC32C');
  assert.equal(answerValue('HeaderDigest', 'None,CRC32C', crc), 'CRC32C');
  assert.equal(answerValue('HeaderDigest', 'CRC32C,None', none), 'None');
  assert.equal(answerValue('HeaderDigest', 'X-fancy,CRC32C', any), 'CRC32C', 'unknown values are skipped');
  assert.equal(answerValue('HeaderDigest', 'CRC32C', none), 'Reject', 'None, the default, applies');
  assert.equal(answerValue('HeaderDigest', 'X-only', any), 'Reject');
  assert.equal(answerValue('HeaderDigest', 'None,', any), 'Reject');
  assert.equal(answerValue('TaskReporting', 'FastAbort,RFC3720'), 'RFC3720');
  assert.equal(answerValue('TaskReporting', 'ResponseFence'), 'Reject');
  // Nothing acceptable and the default (None) not acceptable either: the login cannot go on.
  refused(answerTo('HeaderDigest', 'None', crc), LoginStatus.INITIATOR_ERROR, /default None is not acceptable/);
  // A reserved constant inside an offered list is a protocol error.
  refused(answerTo('DataDigest', 'CRC32C,Reject'), LoginStatus.INITIATOR_ERROR, /cannot be offered/);
  const t = new TargetNegotiator(crc);
  ok(t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}HeaderDigest=CRC32C\0DataDigest=None,CRC32C\0`)));
  assert.equal(t.parameters().headerDigest, true);
  assert.equal(t.parameters().dataDigest, true);
});

test('FirstBurstLength: capped by MaxBurstLength, Irrelevant with InitialR2T=Yes and ImmediateData=No', () => {
  let t = new TargetNegotiator(defaultOffer());
  let r = ok(t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}FirstBurstLength=262144\0MaxBurstLength=65536\0`)));
  assert.equal(wire(r.answers.slice(0, 2)), 'FirstBurstLength=65536\0MaxBurstLength=65536\0');
  assert.equal(t.parameters().firstBurstLength, 65536);
  t = new TargetNegotiator(defaultOffer());
  r = ok(t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}FirstBurstLength=65536\0InitialR2T=Yes\0ImmediateData=No\0`)));
  assert.equal(wire(r.answers.slice(0, 3)), 'FirstBurstLength=Irrelevant\0InitialR2T=Yes\0ImmediateData=No\0');
  assert.equal(t.parameters().firstBurstLength, 65536, 'default');
  // The default InitialR2T is Yes, so ImmediateData=No alone makes it irrelevant too.
  t = new TargetNegotiator(defaultOffer());
  r = ok(t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}ImmediateData=No\0FirstBurstLength=4096\0`)));
  assert.equal(r.answers[1]![1], 'Irrelevant');
});

test('unknown and vendor keys get NotUnderstood; X#NodeArchitecture is a declaration', () => {
  const t = new TargetNegotiator(defaultOffer());
  const r = ok(t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}X-com.cisco.PingTimeout=5\0FooBar=1\0X#NodeArchitecture=Linux,open-iscsi\0Y#Thing=2\0`)));
  assert.equal(
    wire(r.answers),
    'X-com.cisco.PingTimeout=NotUnderstood\0FooBar=NotUnderstood\0Y#Thing=NotUnderstood\0TargetPortalGroupTag=1\0MaxRecvDataSegmentLength=262144\0',
  );
});

test('a key twice in one request, or again in a later request, is a protocol error', () => {
  refused(
    new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}MaxBurstLength=512\0MaxBurstLength=1024\0`)),
    LoginStatus.INITIATOR_ERROR,
    /twice/,
  );
  refused(new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}X-a=1\0X-a=1\0`)), LoginStatus.INITIATOR_ERROR, /twice/);
  const t = new TargetNegotiator(defaultOffer());
  ok(t.receiveLogin(OP_STAY, pairs(`${NAMES}MaxBurstLength=65536\0`)));
  refused(t.receiveLogin(OP_TO_FFP, pairs('MaxBurstLength=65536\0')), LoginStatus.INITIATOR_ERROR, /already negotiated/);
  refused(t.receiveLogin(OP_TO_FFP, []), LoginStatus.INITIATOR_ERROR, /already negotiated/);
  // Unknown keys too.
  const u = new TargetNegotiator(defaultOffer());
  ok(u.receiveLogin(OP_STAY, pairs(`${NAMES}X-a=1\0`)));
  refused(u.receiveLogin(OP_TO_FFP, pairs('X-a=1\0')), LoginStatus.INITIATOR_ERROR);
  // A name again in a later request.
  const v = new TargetNegotiator(defaultOffer());
  ok(v.receiveLogin(OP_STAY, pairs(NAMES)));
  refused(v.receiveLogin(OP_TO_FFP, pairs(`InitiatorName=${INAME}\0`)), LoginStatus.INITIATOR_ERROR);
  const w = new TargetNegotiator(defaultOffer());
  ok(w.receiveLogin(OP_STAY, pairs(NAMES)));
  ok(w.receiveLogin(OP_TO_FFP, pairs('InitiatorAlias=a\0')));
  assert.equal(w.parameters().initiatorAlias, 'a', 'an alias (Use ALL) may come later');
});

test('keys only a target sends, and reserved constants as offers, are protocol errors', () => {
  for (const k of ['TargetAlias=x', 'TargetAddress=10.0.0.1:3260,1', 'TargetPortalGroupTag=1']) {
    refused(new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}${k}\0`)), LoginStatus.INITIATOR_ERROR, /only be sent by a target/);
  }
  for (const v of ['NotUnderstood', 'Irrelevant', 'Reject']) {
    refused(answerTo('MaxBurstLength', v), LoginStatus.INITIATOR_ERROR, /only an answer/);
  }
  assert.equal(answerValue('SendTargets', 'All'), 'Reject', 'full feature phase only');
});

test('stages: security keys only in the security stage, transitions checked', () => {
  refused(
    new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}AuthMethod=None\0`)),
    LoginStatus.INITIATOR_ERROR,
    /outside the security stage/,
  );
  refused(new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}CHAP_A=5\0`)), LoginStatus.INITIATOR_ERROR, /outside the security stage/);
  refused(new TargetNegotiator(defaultOffer()).receiveLogin({ csg: 2, nsg: 3, transit: true }, pairs(NAMES)), LoginStatus.INITIATOR_ERROR, /CSG 2/);
  refused(new TargetNegotiator(defaultOffer()).receiveLogin({ csg: 1, nsg: 1, transit: true }, pairs(NAMES)), LoginStatus.INITIATOR_ERROR, /NSG/);
  refused(new TargetNegotiator(defaultOffer()).receiveLogin({ csg: 1, nsg: 2, transit: true }, pairs(NAMES)), LoginStatus.INITIATOR_ERROR, /NSG/);
  refused(new TargetNegotiator(defaultOffer()).receiveLogin({ csg: 0, nsg: 0, transit: true }, pairs(NAMES)), LoginStatus.INITIATOR_ERROR, /NSG/);
  // Staying in the security stage, then showing up in the operational one without our transit.
  const t = new TargetNegotiator(defaultOffer());
  ok(t.receiveLogin(SEC_STAY, pairs(NAMES)));
  refused(t.receiveLogin(OP_TO_FFP, []), LoginStatus.INITIATOR_ERROR, /stage 1/);
  // Security straight to the full feature phase is allowed when nothing is left to do.
  const u = new TargetNegotiator(defaultOffer());
  const r = ok(u.receiveLogin({ csg: 0, nsg: 3, transit: true }, pairs(`${NAMES}AuthMethod=None\0`)));
  assert.deepEqual([r.transit, r.nsg, r.complete], [true, 3, true]);
  assert.equal(wire(r.answers), 'AuthMethod=None\0TargetPortalGroupTag=1\0');
  assert.equal(u.parameters().maxRecvDataSegmentLength, 8192, 'never declared: the default');
  refused(u.receiveLogin(OP_TO_FFP, []), LoginStatus.INITIATOR_ERROR, /after the login completed/);
  // Once failed, it stays failed.
  const v = new TargetNegotiator(defaultOffer());
  refused(v.receiveLogin(OP_TO_FFP, pairs('SessionType=Normal\0')), LoginStatus.MISSING_PARAMETER);
  refused(v.receiveLogin(OP_TO_FFP, pairs(NAMES)), LoginStatus.MISSING_PARAMETER);
});

test('required names and session types', () => {
  refused(new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`TargetName=${TNAME}\0`)), LoginStatus.MISSING_PARAMETER, /InitiatorName/);
  refused(
    new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`InitiatorName=\0TargetName=${TNAME}\0`)),
    LoginStatus.MISSING_PARAMETER,
    /InitiatorName/,
  );
  refused(new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`InitiatorName=${INAME}\0`)), LoginStatus.MISSING_PARAMETER, /TargetName/);
  refused(
    new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`InitiatorName=${INAME}\0SessionType=Normal\0`)),
    LoginStatus.MISSING_PARAMETER,
    /TargetName/,
  );
  refused(
    new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`InitiatorName=${INAME}\0SessionType=Weird\0`)),
    LoginStatus.INITIATOR_ERROR,
    /SessionType/,
  );
  refused(
    new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`InitiatorName=a b\0SessionType=Discovery\0`)),
    LoginStatus.INITIATOR_ERROR,
    /white space/,
  );
  refused(
    new TargetNegotiator({ ...defaultOffer(), discovery: false }).receiveLogin(OP_TO_FFP, pairs(`InitiatorName=${INAME}\0SessionType=Discovery\0`)),
    LoginStatus.SESSION_TYPE_NOT_SUPPORTED,
  );
  refused(new TargetNegotiator({ ...defaultOffer(), normal: false }).receiveLogin(OP_TO_FFP, pairs(NAMES)), LoginStatus.SESSION_TYPE_NOT_SUPPORTED);
  // SessionType absent means Normal.
  const t = new TargetNegotiator(defaultOffer());
  ok(t.receiveLogin(OP_TO_FFP, pairs(`InitiatorName=${INAME}\0TargetName=${TNAME}\0`)));
  assert.equal(t.parameters().sessionType, 'Normal');
  // SessionType after the first request.
  const u = new TargetNegotiator(defaultOffer());
  ok(u.receiveLogin(OP_STAY, pairs(`InitiatorName=${INAME}\0TargetName=${TNAME}\0`)));
  refused(u.receiveLogin(OP_TO_FFP, pairs('SessionType=Discovery\0')), LoginStatus.INITIATOR_ERROR, /first Login Request/);
});

test('admit: refuse a target or an initiator, or supply per-target settings', () => {
  const seen: string[] = [];
  const cfg: TargetConfig = {
    ...defaultOffer(),
    admit: (who) => {
      seen.push(`${who.initiatorName} ${who.targetName ?? '-'} ${who.sessionType}`);
      if (who.targetName !== TNAME) return { ok: false, status: LoginStatus.NOT_FOUND, reason: `no target ${who.targetName}` };
      return { ok: true, targetAlias: 'per-target alias' };
    },
  };
  refused(new TargetNegotiator(cfg).receiveLogin(OP_TO_FFP, pairs(`InitiatorName=${INAME}\0TargetName=iqn.x:other\0`)), LoginStatus.NOT_FOUND, /iqn.x:other/);
  const r = ok(new TargetNegotiator(cfg).receiveLogin(OP_TO_FFP, pairs(NAMES)));
  assert.equal(wire(r.answers), 'TargetAlias=per-target alias\0TargetPortalGroupTag=1\0MaxRecvDataSegmentLength=262144\0');
  assert.deepEqual(seen, [`${INAME} iqn.x:other Normal`, `${INAME} ${TNAME} Normal`]);
});

test('authentication: required CHAP cannot be skipped; AuthMethod lists', () => {
  const chapCfg = (): TargetConfig => ({
    ...defaultOffer(),
    authMethods: ['CHAP'],
    authenticator: new ChapAuthenticator({ initiators: new Map([['u', new ChapSecret('password1234')]]), random: counter() }),
  });
  refused(new TargetNegotiator(chapCfg()).receiveLogin(OP_TO_FFP, pairs(NAMES)), LoginStatus.AUTHENTICATION_FAILURE, /skipped the security stage/);
  refused(new TargetNegotiator(chapCfg()).receiveLogin(SEC_TO_OP, pairs(`${NAMES}AuthMethod=None\0`)), LoginStatus.AUTHENTICATION_FAILURE, /AuthMethod=None/);
  refused(new TargetNegotiator(chapCfg()).receiveLogin(SEC_TO_OP, pairs(NAMES)), LoginStatus.AUTHENTICATION_FAILURE, /did not offer AuthMethod/);
  refused(new TargetNegotiator(chapCfg()).receiveLogin(SEC_STAY, pairs(`${NAMES}CHAP_A=5\0`)), LoginStatus.INITIATOR_ERROR, /without AuthMethod=CHAP/);
  refused(
    new TargetNegotiator(chapCfg()).receiveLogin(SEC_STAY, pairs(`${NAMES}AuthMethod=CHAP\0SRP_U=x\0`)),
    LoginStatus.INITIATOR_ERROR,
    /does not belong to CHAP/,
  );
  // While CHAP runs, T=1 from the initiator is answered with T=0.
  const t = new TargetNegotiator(chapCfg());
  const r = ok(t.receiveLogin(SEC_TO_OP, pairs(`${NAMES}AuthMethod=CHAP\0CHAP_A=5\0`)));
  assert.equal(r.transit, false);
  assert.deepEqual(
    r.answers.map((a) => a[0]),
    ['AuthMethod', 'CHAP_A', 'CHAP_I', 'CHAP_C', 'TargetPortalGroupTag'],
  );
  refused(t.receiveLogin(SEC_TO_OP, pairs('CHAP_N=u\0CHAP_R=0x00000000000000000000000000000000\0')), LoginStatus.AUTHENTICATION_FAILURE, /wrong CHAP response/);
  // No authentication configured: None is chosen from any list that has it.
  const n = new TargetNegotiator(defaultOffer());
  assert.equal(wire(ok(n.receiveLogin(SEC_TO_OP, pairs(`${NAMES}AuthMethod=CHAP,None\0`))).answers), 'AuthMethod=None\0TargetPortalGroupTag=1\0');
  // Optional CHAP: the initiator's order decides.
  const opt = (): TargetConfig => ({ ...chapCfg(), authMethods: ['CHAP', 'None'] });
  assert.equal(ok(new TargetNegotiator(opt()).receiveLogin(SEC_TO_OP, pairs(`${NAMES}AuthMethod=None,CHAP\0`))).answers[0]![1], 'None');
  assert.equal(ok(new TargetNegotiator(opt()).receiveLogin(SEC_TO_OP, pairs(`${NAMES}AuthMethod=CHAP,None\0`))).answers[0]![1], 'CHAP');
  // Security stage without AuthMethod, no authentication required: T=1 is honoured.
  const s = ok(new TargetNegotiator(defaultOffer()).receiveLogin(SEC_TO_OP, pairs(NAMES)));
  assert.deepEqual([s.transit, s.nsg], [true, 1]);
  assert.throws(() => new TargetNegotiator({ ...defaultOffer(), authMethods: ['CHAP'] }), UsageError);
  assert.throws(() => new TargetNegotiator({ ...defaultOffer(), authMethods: [] }), UsageError);
});

test('target offers what the initiator left out but we need, and waits for the answer', () => {
  // We require digests; the initiator offers nothing about them.
  let t = new TargetNegotiator({ ...defaultOffer({ digest: 'crc32c', maxBurstLength: 65536, firstBurstLength: 32768, immediateData: false }) });
  let r = ok(t.receiveLogin(OP_TO_FFP, pairs(NAMES)));
  assert.equal(
    wire(r.answers),
    'TargetPortalGroupTag=1\0MaxRecvDataSegmentLength=262144\0HeaderDigest=CRC32C\0DataDigest=CRC32C\0ImmediateData=No\0MaxBurstLength=65536\0',
  );
  assert.equal(r.transit, false, 'answers needed first');
  assert.deepEqual(r.awaiting, ['HeaderDigest', 'DataDigest', 'MaxBurstLength']);
  r = ok(t.receiveLogin(OP_TO_FFP, pairs('HeaderDigest=CRC32C\0DataDigest=CRC32C\0MaxBurstLength=65536\0')));
  assert.deepEqual([r.transit, r.complete, wire(r.answers)], [true, true, '']);
  let p = t.parameters();
  assert.equal(p.headerDigest, true);
  assert.equal(p.immediateData, false);
  assert.equal(p.maxBurstLength, 65536);
  assert.equal(p.firstBurstLength, 65536, 'FirstBurstLength irrelevant: ImmediateData=No and InitialR2T=Yes; default, capped by MaxBurstLength');

  // Unanswered offers stand (open-iscsi takes a target's offer silently).
  t = new TargetNegotiator(defaultOffer({ digest: 'crc32c' }));
  ok(t.receiveLogin(OP_TO_FFP, pairs(NAMES)));
  r = ok(t.receiveLogin(OP_TO_FFP, []));
  assert.ok(r.complete);
  p = t.parameters();
  assert.equal(p.headerDigest, true);
  assert.equal(p.dataDigest, true);

  // A rejected offer whose default we cannot take ends the login.
  t = new TargetNegotiator(defaultOffer({ digest: 'crc32c' }));
  ok(t.receiveLogin(OP_TO_FFP, pairs(NAMES)));
  refused(t.receiveLogin(OP_TO_FFP, pairs('HeaderDigest=Reject\0DataDigest=CRC32C\0')), LoginStatus.INITIATOR_ERROR, /default None is not acceptable/);
  // An answer outside the rules.
  t = new TargetNegotiator(defaultOffer({ maxBurstLength: 65536 }));
  ok(t.receiveLogin(OP_TO_FFP, pairs(NAMES)));
  refused(t.receiveLogin(OP_TO_FFP, pairs('MaxBurstLength=131072\0')), LoginStatus.INITIATOR_ERROR, /exceeds our offer/);
  t = new TargetNegotiator(defaultOffer({ digest: 'crc32c' }));
  ok(t.receiveLogin(OP_TO_FFP, pairs(NAMES)));
  refused(t.receiveLogin(OP_TO_FFP, pairs('HeaderDigest=None\0')), LoginStatus.INITIATOR_ERROR, /not among our offer/);
  // Offers come only when the initiator asks to leave the stage.
  t = new TargetNegotiator(defaultOffer({ digest: 'crc32c' }));
  r = ok(t.receiveLogin(OP_STAY, pairs(NAMES)));
  assert.deepEqual(r.awaiting, []);
  assert.equal(wire(r.answers), 'TargetPortalGroupTag=1\0MaxRecvDataSegmentLength=262144\0');
});

test('MaxRecvDataSegmentLength: a declaration both ways, range checked', () => {
  const t = new TargetNegotiator(defaultOffer({ maxRecvDataSegmentLength: 65536 }));
  ok(t.receiveLogin(OP_TO_FFP, pairs(`${NAMES}MaxRecvDataSegmentLength=4096\0`)));
  assert.equal(t.parameters().maxRecvDataSegmentLength, 65536);
  assert.equal(t.parameters().maxXmitDataSegmentLength, 4096);
  for (const bad of ['511', '16777216', 'big', '']) {
    refused(
      new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}MaxRecvDataSegmentLength=${bad}\0`)),
      LoginStatus.INITIATOR_ERROR,
      /MaxRecvDataSegmentLength/,
    );
  }
  ok(new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}MaxRecvDataSegmentLength=512\0`)));
  ok(new TargetNegotiator(defaultOffer()).receiveLogin(OP_TO_FFP, pairs(`${NAMES}MaxRecvDataSegmentLength=16777215\0`)));
  // Declared once per login even across several operational requests.
  const u = new TargetNegotiator(defaultOffer());
  const a = ok(u.receiveLogin(OP_STAY, pairs(NAMES)));
  const b = ok(u.receiveLogin(OP_TO_FFP, pairs('MaxRecvDataSegmentLength=8192\0')));
  assert.equal(a.answers.filter((x) => x[0] === 'MaxRecvDataSegmentLength').length, 1);
  assert.equal(b.answers.filter((x) => x[0] === 'MaxRecvDataSegmentLength').length, 0);
});

test('full feature phase Text: only MaxRecvDataSegmentLength changes', () => {
  const t = new TargetNegotiator(defaultOffer());
  refused(t.receiveText(pairs('MaxRecvDataSegmentLength=4096\0')), LoginStatus.INITIATOR_ERROR, /before the login completed/);
  ok(t.receiveLogin(OP_TO_FFP, pairs(NAMES)));
  const r = t.receiveText(
    pairs('MaxRecvDataSegmentLength=4096\0MaxBurstLength=512\0X-v=1\0SendTargets=All\0InitiatorAlias=new\0CHAP_A=5\0HeaderDigest=CRC32C\0'),
  );
  assert.ok(r.ok);
  assert.equal(wire(r.answers), 'MaxBurstLength=Reject\0X-v=NotUnderstood\0CHAP_A=Reject\0HeaderDigest=Reject\0');
  assert.equal(r.sendTargets, 'All');
  assert.equal(r.parameters.maxXmitDataSegmentLength, 4096);
  assert.equal(t.parameters().maxXmitDataSegmentLength, 4096);
  assert.equal(t.parameters().initiatorAlias, 'new');
  refused(t.receiveText(pairs('MaxRecvDataSegmentLength=100\0')), LoginStatus.INITIATOR_ERROR);
  refused(t.receiveText(pairs('TargetAlias=x\0')), LoginStatus.INITIATOR_ERROR);
  refused(t.receiveText(pairs('X-a=1\0X-a=2\0')), LoginStatus.INITIATOR_ERROR, /twice/);
  refused(t.receiveText(pairs('MaxRecvDataSegmentLength=Reject\0')), LoginStatus.INITIATOR_ERROR);
  // The free function works on a session's parameters alone.
  const f = answerFullFeatureKeys(pairs('MaxRecvDataSegmentLength=131072\0'), t.parameters());
  assert.ok(f.ok);
  assert.equal(f.parameters.maxXmitDataSegmentLength, 131072);
  assert.equal(f.answers.length, 0);
  assert.equal(f.sendTargets, undefined);
});

test('our initiator against our target: every parameter agreed, with and without CHAP', () => {
  const base: InitiatorConfig = { initiatorName: INAME, targetName: TNAME };
  let x = drive(new TargetNegotiator(defaultOffer()), new InitiatorNegotiator(base));
  assert.equal(x.error, undefined, x.lines.join('\n'));
  assertAgree(x.target!, x.initiator!);
  assert.equal(x.lines.length, 2, 'one round trip');

  // One-way CHAP.
  const users = new Map([['alice', new ChapSecret('alicesecret12')]]);
  const target = new Map([['tgt', new ChapSecret('targetsecret12')]]);
  x = drive(
    new TargetNegotiator({ ...defaultOffer(), authMethods: ['CHAP'], authenticator: new ChapAuthenticator({ initiators: users, random: counter(3) }) }),
    new InitiatorNegotiator({ ...base, auth: new ChapInitiator({ name: 'alice', secret: new ChapSecret('alicesecret12'), random: counter(4) }) }),
  );
  assert.equal(x.error, undefined, x.lines.join('\n'));
  assertAgree(x.target!, x.initiator!);
  assert.equal(x.target!.authMethod, 'CHAP');
  assert.equal(x.lines.length, 8);

  // Mutual CHAP.
  x = drive(
    new TargetNegotiator({
      ...defaultOffer(),
      authMethods: ['CHAP'],
      authenticator: new ChapAuthenticator({ initiators: users, target, requireMutual: true, random: counter(5) }),
    }),
    new InitiatorNegotiator({
      ...base,
      auth: new ChapInitiator({
        name: 'alice',
        secret: new ChapSecret('alicesecret12'),
        mutual: { secret: new ChapSecret('targetsecret12'), targetName: 'tgt' },
        random: counter(6),
      }),
    }),
  );
  assert.equal(x.error, undefined, x.lines.join('\n'));
  assertAgree(x.target!, x.initiator!);

  // Wrong secret: the target refuses.
  x = drive(
    new TargetNegotiator({ ...defaultOffer(), authMethods: ['CHAP'], authenticator: new ChapAuthenticator({ initiators: users, random: counter(7) }) }),
    new InitiatorNegotiator({ ...base, auth: new ChapInitiator({ name: 'alice', secret: new ChapSecret('wrongsecret12'), random: counter(8) }) }),
  );
  assert.match(x.error ?? '', /^target 0x201: wrong CHAP response/);

  // Optional CHAP offered by the initiator, the target needs none: it goes on without.
  x = drive(
    new TargetNegotiator(defaultOffer()),
    new InitiatorNegotiator({
      ...base,
      authOptional: true,
      auth: new ChapInitiator({ name: 'alice', secret: new ChapSecret('alicesecret12'), random: counter(9) }),
    }),
  );
  assert.equal(x.error, undefined, x.lines.join('\n'));
  assert.equal(x.initiator!.authMethod, 'None');
  // CHAP required by the initiator, the target offers none: the initiator refuses to go on.
  x = drive(
    new TargetNegotiator(defaultOffer()),
    new InitiatorNegotiator({ ...base, auth: new ChapInitiator({ name: 'alice', secret: new ChapSecret('alicesecret12'), random: counter(9) }) }),
  );
  assert.match(x.error ?? '', /target 0x201|initiator 0x201/);

  // Discovery.
  x = drive(new TargetNegotiator(defaultOffer()), new InitiatorNegotiator({ initiatorName: INAME, sessionType: 'Discovery', maxRecvDataSegmentLength: 32768 }));
  assert.equal(x.error, undefined, x.lines.join('\n'));
  assertAgree(x.target!, x.initiator!);
  assert.equal(x.target!.maxXmitDataSegmentLength, 32768);

  // The target requires digests the initiator does not mention: one more round trip.
  x = drive(
    new TargetNegotiator(defaultOffer({ digest: 'crc32c' })),
    new InitiatorNegotiator({ ...base, headerDigest: ['CRC32C', 'None'], dataDigest: ['None', 'CRC32C'] }),
  );
  assert.equal(x.error, undefined, x.lines.join('\n'));
  assert.equal(x.target!.headerDigest, true);
  assert.equal(x.target!.dataDigest, true);
  assertAgree(x.target!, x.initiator!);
});

test("initiator side: partial answers, target offers, and the target's mistakes", () => {
  const base: InitiatorConfig = {
    initiatorName: INAME,
    targetName: TNAME,
    maxBurstLength: 1048576,
    firstBurstLength: 65536,
    immediateData: false,
    initialR2T: true,
  };
  // A LIO-like target: leaves out the answers the RFC makes optional (AND with No, OR with Yes).
  let i = new InitiatorNegotiator(base);
  const first = i.start();
  assert.deepEqual([first.csg, first.nsg, first.transit], [1, 3, true]);
  assert.equal(
    wire(first.pairs),
    `${NAMES}HeaderDigest=None\0DataDigest=None\0InitialR2T=Yes\0ImmediateData=No\0MaxBurstLength=1048576\0FirstBurstLength=65536\0` +
      'MaxOutstandingR2T=1\0MaxConnections=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0ErrorRecoveryLevel=0\0MaxRecvDataSegmentLength=262144\0',
  );
  let s = i.receiveLogin(
    { csg: 1, nsg: 1, transit: false },
    pairs('HeaderDigest=None\0MaxBurstLength=262144\0TargetPortalGroupTag=3\0MaxRecvDataSegmentLength=8192\0X-vendor=1\0'),
  );
  assert.ok(s.ok);
  assert.equal(wire(s.next!.pairs), 'X-vendor=NotUnderstood\0');
  assert.equal(s.next!.transit, true);
  s = i.receiveLogin({ csg: 1, nsg: 3, transit: true }, []);
  assert.ok(s.ok && s.complete);
  let p = i.parameters();
  assert.equal(p.maxBurstLength, 262144);
  assert.equal(p.immediateData, false);
  assert.equal(p.initialR2T, true);
  assert.equal(p.dataDigest, false, 'unanswered list falls back to None');
  assert.equal(p.maxOutstandingR2T, 1, 'unanswered offer stands');
  assert.equal(p.targetPortalGroupTag, 3);
  assert.equal(p.maxXmitDataSegmentLength, 8192);
  assert.ok(s.notes.some((n) => n.includes('DataDigest')));

  // A target offering a key we did not offer gets our answer in the next request.
  i = new InitiatorNegotiator({ ...base, sessionType: 'Discovery', targetName: undefined as unknown as string });
  i.start();
  s = i.receiveLogin({ csg: 1, nsg: 1, transit: false }, pairs('HeaderDigest=None\0MaxBurstLength=65536\0iSCSIProtocolLevel=2\0'));
  assert.ok(s.ok);
  assert.equal(wire(s.next!.pairs), 'MaxBurstLength=Irrelevant\0iSCSIProtocolLevel=Irrelevant\0');
  i = new InitiatorNegotiator(base);
  i.start();
  s = i.receiveLogin({ csg: 1, nsg: 1, transit: false }, pairs('TaskReporting=FastAbort,RFC3720\0DefaultTime2Wait=5\0'));
  assert.ok(s.ok);
  assert.equal(wire(s.next!.pairs), 'TaskReporting=RFC3720\0', 'DefaultTime2Wait was our offer: an answer');
  s = i.receiveLogin({ csg: 1, nsg: 3, transit: true }, []);
  assert.ok(s.ok);
  p = i.parameters();
  assert.equal(p.defaultTime2Wait, 5);

  // Mistakes.
  const bad = (rsp: string, re: RegExp, flags: LoginFlags = { csg: 1, nsg: 3, transit: true }): void => {
    const n = new InitiatorNegotiator(base);
    n.start();
    const r = n.receiveLogin(flags, pairs(rsp));
    refused(r, r.ok ? LoginStatus.SUCCESS : r.status, re);
  };
  bad('MaxBurstLength=2097152\0', /exceeds our offer/);
  bad('DefaultTime2Wait=1\0', /below our offer/);
  bad('HeaderDigest=CRC32C\0', /not among our offer/);
  bad('InitiatorName=x\0', /only be sent by an initiator/);
  bad('MaxBurstLength=512\0MaxBurstLength=512\0', /twice/);
  bad('TaskReporting=RFC3720\0', /still had to answer TaskReporting/);
  bad('X-new=1\0', /still had to answer X-new/);
  bad('HeaderDigest=None\0', /stage 0/, { csg: 0, nsg: 1, transit: true });
  bad('MaxRecvDataSegmentLength=100\0', /MaxRecvDataSegmentLength/);
  bad('TargetPortalGroupTag=70000\0', /16-bit/);
  bad('AuthMethod=None\0', /outside|offered AuthMethod/);
  bad('CHAP_A=5\0', /outside the security stage/);
  // NotUnderstood for a standard key: the default applies, noted.
  const n = new InitiatorNegotiator(base);
  n.start();
  const r = n.receiveLogin({ csg: 1, nsg: 3, transit: true }, pairs('MaxOutstandingR2T=NotUnderstood\0'));
  assert.ok(r.ok);
  assert.ok(r.notes.some((x) => x.includes('NotUnderstood')));
  assert.throws(() => new InitiatorNegotiator({ initiatorName: INAME }), UsageError);
  assert.throws(() => new InitiatorNegotiator({ initiatorName: '', targetName: TNAME }), UsageError);
});

test('initiator full feature Text: MaxRecvDataSegmentLength both ways', () => {
  const i = new InitiatorNegotiator({ initiatorName: INAME, targetName: TNAME });
  assert.deepEqual(i.maxRecvDataSegmentLengthText(65536), [['MaxRecvDataSegmentLength', '65536']]);
  assert.equal(i.parameters().maxRecvDataSegmentLength, 65536);
  const r = i.receiveText(pairs('MaxRecvDataSegmentLength=131072\0TargetName=iqn.x:y\0TargetAddress=10.0.0.1:3260,1\0'));
  assert.ok(r.ok);
  assert.deepEqual(r.other, [
    ['TargetName', 'iqn.x:y'],
    ['TargetAddress', '10.0.0.1:3260,1'],
  ]);
  assert.equal(i.parameters().maxXmitDataSegmentLength, 131072);
  assert.equal(i.receiveText(pairs('MaxRecvDataSegmentLength=1\0')).ok, false);
  assert.throws(() => i.maxRecvDataSegmentLengthText(100), UsageError);
});

test('defaultOffer maps the digest choice and checks ranges', () => {
  assert.deepEqual(defaultOffer().headerDigest, ['CRC32C', 'None']);
  assert.deepEqual(defaultOffer({ digest: 'none' }).dataDigest, ['None']);
  assert.deepEqual(defaultOffer({ digest: 'crc32c' }).headerDigest, ['CRC32C']);
  assert.equal(defaultOffer().maxRecvDataSegmentLength, 262144);
  assert.equal(defaultOffer().maxBurstLength, 16776192);
  assert.equal(defaultOffer().maxOutstandingR2T, 16);
  assert.throws(() => defaultOffer({ maxRecvDataSegmentLength: 511 }), UsageError);
  assert.throws(() => defaultOffer({ maxBurstLength: 16777216 }), UsageError);
  assert.throws(() => defaultOffer({ maxOutstandingR2T: 0 }), UsageError);
  assert.throws(() => defaultOffer({ targetPortalGroupTag: 65536 }), UsageError);
  assert.throws(() => new TargetNegotiator({ headerDigest: [] }), UsageError);
  assert.throws(() => new TargetNegotiator({ headerDigest: ['MD5' as Digest] }), UsageError);
});

// ---------------------------------------------------------------------------------------------
// Property-style runs

function pick<T>(next: () => number, xs: readonly T[]): T {
  return xs[next() % xs.length]!;
}

test("random configurations on both sides: they agree, within both sides' limits", () => {
  const next = mulberry32(0x15c5);
  const digestSets: readonly (readonly Digest[])[] = [['None'], ['CRC32C'], ['CRC32C', 'None'], ['None', 'CRC32C']];
  let completed = 0;
  for (let run = 0; run < 400; run++) {
    const iDigests = pick(next, digestSets);
    const tcfg = defaultOffer({
      maxRecvDataSegmentLength: 512 + (next() % 262144),
      maxBurstLength: 512 + (next() % 1048576),
      firstBurstLength: 512 + (next() % 262144),
      maxOutstandingR2T: 1 + (next() % 32),
      immediateData: (next() & 1) === 1,
      initialR2T: (next() & 1) === 1,
      digest: pick(next, ['none', 'crc32c', 'any'] as const),
    });
    const icfg: InitiatorConfig = {
      initiatorName: INAME,
      targetName: TNAME,
      sessionType: next() % 5 === 0 ? 'Discovery' : 'Normal',
      maxRecvDataSegmentLength: 512 + (next() % 262144),
      maxBurstLength: 512 + (next() % 16776000),
      firstBurstLength: 512 + (next() % 1048576),
      maxOutstandingR2T: 1 + (next() % 64),
      immediateData: (next() & 1) === 1,
      initialR2T: (next() & 1) === 1,
      headerDigest: iDigests,
      dataDigest: pick(next, digestSets),
      defaultTime2Wait: next() % 3601,
      defaultTime2Retain: next() % 3601,
    };
    const x = drive(new TargetNegotiator(tcfg), new InitiatorNegotiator(icfg));
    const tAccepts = tcfg.headerDigest!;
    const overlap = iDigests.some((d) => tAccepts.includes(d));
    if (x.error !== undefined) {
      // The only way to fail here: no digest both sides accept.
      assert.ok(!overlap || !icfg.dataDigest!.some((d) => tcfg.dataDigest!.includes(d)), `${x.error}\n${x.lines.join('\n')}`);
      continue;
    }
    completed++;
    const tp = x.target!;
    assertAgree(tp, x.initiator!);
    assert.ok(tcfg.headerDigest!.includes(tp.headerDigest ? 'CRC32C' : 'None'));
    assert.ok(iDigests.includes(tp.headerDigest ? 'CRC32C' : 'None'));
    assert.equal(tp.maxRecvDataSegmentLength, tcfg.maxRecvDataSegmentLength);
    assert.equal(tp.maxXmitDataSegmentLength, icfg.maxRecvDataSegmentLength);
    assert.ok(tp.firstBurstLength <= tp.maxBurstLength);
    if (icfg.sessionType === 'Normal') {
      assert.equal(tp.maxBurstLength, Math.min(tcfg.maxBurstLength!, icfg.maxBurstLength!));
      assert.equal(tp.maxOutstandingR2T, Math.min(tcfg.maxOutstandingR2T!, icfg.maxOutstandingR2T!));
      assert.equal(tp.immediateData, tcfg.immediateData! && icfg.immediateData!);
      assert.equal(tp.initialR2T, tcfg.initialR2T! || icfg.initialR2T!);
      if (!(tp.initialR2T && !tp.immediateData)) {
        assert.equal(tp.firstBurstLength, Math.min(tcfg.firstBurstLength!, icfg.firstBurstLength!, icfg.maxBurstLength!, tp.maxBurstLength));
      }
    } else {
      assert.equal(tp.maxBurstLength, 262144);
    }
    assert.equal(tp.defaultTime2Wait, Math.max(2, icfg.defaultTime2Wait!));
    assert.equal(tp.defaultTime2Retain, Math.min(20, icfg.defaultTime2Retain!));
    assert.equal(tp.errorRecoveryLevel, 0);
    assert.equal(tp.maxConnections, 1);
  }
  assert.ok(completed > 250, `completed ${completed}`);
});

test('random offers thrown at the target: never a throw, one answer per negotiable key', () => {
  const next = mulberry32(0xbad);
  const keys = Object.keys(KEYS).filter((k) => !['InitiatorName', 'TargetName', 'SessionType'].includes(k));
  const values = [
    'Yes',
    'No',
    'None',
    'CRC32C',
    'CRC32C,None',
    '0',
    '1',
    '2',
    '511',
    '512',
    '8192',
    '65536',
    '262144',
    '16777215',
    '16777216',
    '0x200',
    'x',
    '',
    'Reject',
    'RFC3720',
    '1~2',
    'A,,B',
  ];
  for (let run = 0; run < 2000; run++) {
    const t = new TargetNegotiator(defaultOffer());
    const chosen = new Map<string, string>();
    const n = next() % 8;
    for (let k = 0; k < n; k++) chosen.set(pick(next, [...keys, 'X-v', 'Unknown']), pick(next, values));
    const ps: TextPair[] = [...pairs(next() % 4 === 0 ? `InitiatorName=${INAME}\0SessionType=Discovery\0` : NAMES), ...chosen];
    const r = t.receiveLogin(pick(next, [OP_TO_FFP, OP_STAY, SEC_TO_OP, SEC_STAY]), ps);
    if (!r.ok) {
      assert.ok([LoginStatus.INITIATOR_ERROR, LoginStatus.AUTHENTICATION_FAILURE].includes(r.status as 0x200), r.reason);
      continue;
    }
    for (const [k] of chosen) {
      const def = keyDef(k);
      const count: number = r.answers.filter((a) => a[0] === k).length;
      if (def === undefined || (def.kind !== 'declarative' && k !== 'MaxRecvDataSegmentLength')) assert.equal(count, 1, `${k} answered ${count} times`);
    }
    for (const [k, v] of r.answers) assert.ok(v.length > 0 || k === '', `${k} answered with an empty value`);
  }
});
