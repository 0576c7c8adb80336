import assert from 'node:assert/strict';
import test from 'node:test';
import { BlockError } from '../src/internal/errors.ts';
import {
  LARGE_VALUE_KEYS,
  TextAccumulator,
  TextLimit,
  decodeText,
  encodeText,
  formatBase64,
  formatBoolean,
  formatHex,
  isReservedValue,
  isValidKey,
  parseBinary,
  parseBoolean,
  parseNumber,
  parseNumericRange,
  segmentText,
  splitList,
} from '../src/iscsi/text.ts';
import type { TextDecodeResult, TextErrorCode, TextPair } from '../src/iscsi/text.ts';

// Hand-written wire bytes: latin1 strings with explicit NULs, so the expected bytes never come from
// the encoder under test.
const bytes = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'latin1'));
const LOGIN_TEXT =
  'InitiatorName=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test\0TargetName=iqn.2026-11.test:ram\0SessionType=Normal\0HeaderDigest=None,CRC32C\0';
const LOGIN_PAIRS: TextPair[] = [
  ['InitiatorName', 'iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test'],
  ['TargetName', 'iqn.2026-11.test:ram'],
  ['SessionType', 'Normal'],
  ['HeaderDigest', 'None,CRC32C'],
];

function expectError(r: TextDecodeResult, code: TextErrorCode, offset: number, key?: string): void {
  assert.equal(r.ok, false, `expected ${code}`);
  if (r.ok) return;
  assert.equal(r.error.code, code, r.error.message);
  assert.equal(r.error.offset, offset, r.error.message);
  assert.equal(r.error.key, key);
  assert.ok(r.error.message.length > 0);
}

test('decodeText reads hand-written login text', () => {
  const r = decodeText(bytes(LOGIN_TEXT));
  assert.ok(r.ok);
  assert.deepEqual(r.pairs, LOGIN_PAIRS);
  assert.deepEqual(decodeText(new Uint8Array(0)), { ok: true, pairs: [] });
});

test('encodeText writes exactly the hand-written bytes', () => {
  assert.equal(Buffer.from(encodeText(LOGIN_PAIRS)).toString('latin1'), LOGIN_TEXT);
  assert.equal(encodeText([]).length, 0);
  assert.ok(Buffer.isBuffer(encodeText([['A', 'b']])));
  assert.equal(
    Buffer.from(
      encodeText([
        ['CHAP_C', '0x0102'],
        ['Empty', ''],
      ]),
    ).toString('latin1'),
    'CHAP_C=0x0102\0Empty=\0',
  );
  // UTF-8 in values (aliases are UTF-8 text).
  assert.deepEqual([...encodeText([['InitiatorAlias', 'hôte']])], [...Buffer.from('InitiatorAlias=h\xc3\xb4te\0', 'latin1')]);
});

test('values: empty, containing "=", UTF-8; empty entries skipped', () => {
  let r = decodeText(bytes('A=\0B=x=y\0'));
  assert.ok(r.ok);
  assert.deepEqual(r.pairs, [
    ['A', ''],
    ['B', 'x=y'],
  ]);
  r = decodeText(bytes('\0\0A=1\0\0\0B=2\0\0'));
  assert.ok(r.ok);
  assert.deepEqual(r.pairs, [
    ['A', '1'],
    ['B', '2'],
  ]);
  r = decodeText(bytes('InitiatorAlias=h\xc3\xb4te\0'));
  assert.ok(r.ok);
  assert.deepEqual(r.pairs, [['InitiatorAlias', 'hôte']]);
});

test('every decode error, with its offset and key', () => {
  expectError(decodeText(bytes('A=1\0NoEquals\0')), 'MISSING_EQUALS', 4);
  expectError(decodeText(bytes('=value\0')), 'EMPTY_KEY', 0);
  expectError(decodeText(bytes('A=1\0B=2')), 'NO_NUL_TERMINATOR', 4, 'B');
  expectError(decodeText(bytes('A=1\0tail')), 'NO_NUL_TERMINATOR', 4);
  expectError(decodeText(bytes(`${'K'.repeat(64)}=v\0`)), 'KEY_TOO_LONG', 0, 'K'.repeat(64));
  expectError(decodeText(bytes('A=1\0' + '1lower=1\0')), 'BAD_KEY', 4, '1lower');
  expectError(decodeText(bytes('Bad Key=1\0')), 'BAD_KEY', 0, 'Bad Key');
  expectError(decodeText(bytes('Bad/Key=1\0')), 'BAD_KEY', 0, 'Bad/Key');
  expectError(decodeText(bytes('A#B#C=1\0')), 'BAD_KEY', 0, 'A#B#C');
  expectError(decodeText(bytes('K\xff=1\0')), 'NOT_UTF8', 0);
  expectError(decodeText(bytes('A=1\0K=\xc3\x28\0')), 'NOT_UTF8', 4, 'K');
  expectError(decodeText(bytes(`TargetAlias=${'a'.repeat(256)}\0`)), 'VALUE_TOO_LONG', 0, 'TargetAlias');
  expectError(decodeText(bytes(`X-list=${'a'.repeat(100)},${'b'.repeat(256)}\0`)), 'VALUE_TOO_LONG', 0, 'X-list');
  const manyElements = Array.from({ length: 40 }, () => 'v'.repeat(250)).join(',');
  expectError(decodeText(bytes(`X-list=${manyElements}\0`)), 'VALUE_TOO_LONG', 0, 'X-list');
});

test('key syntax: 63 bytes, the label characters, X- and X# extension keys', () => {
  assert.ok(isValidKey('K'.repeat(63)));
  assert.ok(!isValidKey('K'.repeat(64)));
  assert.ok(!isValidKey(''));
  assert.ok(isValidKey('X-com.example.Key_1+a@b'));
  assert.ok(isValidKey('X#NodeArchitecture'));
  assert.ok(isValidKey('Y#Other'));
  assert.ok(isValidKey('iSCSIProtocolLevel'), 'RFC 7143 §13.24: not every standard key starts with a capital');
  assert.ok(!isValidKey('x#lower'), "'#' only after a capital letter");
  assert.ok(!isValidKey('1Key'));
  assert.ok(!isValidKey('-Key'));
  assert.ok(!isValidKey('_Key'));
  assert.ok(!isValidKey('Ke#y'));
  assert.ok(!isValidKey('Key~'));
  const r = decodeText(bytes(`${'K'.repeat(63)}=1\0X#NodeArchitecture=blkback\0`));
  assert.ok(r.ok);
  assert.equal(r.pairs.length, 2);
});

test('value bounds: 255-byte simple values, large binary keys exempt', () => {
  let r = decodeText(bytes(`TargetAlias=${'a'.repeat(255)}\0`));
  assert.ok(r.ok);
  r = decodeText(bytes(`X-list=${'a'.repeat(255)},${'b'.repeat(255)}\0`));
  assert.ok(r.ok, 'each simple value of a list is bounded, not the list');
  const chapC = `0x${'ab'.repeat(1024)}`;
  r = decodeText(bytes(`CHAP_C=${chapC}\0`));
  assert.ok(r.ok);
  assert.equal(r.pairs[0]![1], chapC);
  for (const k of ['CHAP_C', 'CHAP_R', 'SRP_A', 'KRB_AP_REQ']) assert.ok(LARGE_VALUE_KEYS.has(k));
  assert.ok(!LARGE_VALUE_KEYS.has('CHAP_N'));
  expectError(decodeText(bytes(`CHAP_N=${'n'.repeat(256)}\0`)), 'VALUE_TOO_LONG', 0, 'CHAP_N');
  // Multi-byte characters count in bytes.
  expectError(decodeText(bytes(`TargetAlias=${'\xc3\xb4'.repeat(128)}\0`)), 'VALUE_TOO_LONG', 0, 'TargetAlias');
});

test('encodeText refuses pairs we must never send', () => {
  assert.throws(() => encodeText([['bad key', 'x']]), BlockError);
  assert.throws(() => encodeText([['Key', 'a\0b']]), BlockError);
  assert.throws(() => encodeText([['TargetAlias', 'a'.repeat(256)]]), BlockError);
  assert.throws(
    () => encodeText([['K'.repeat(64), 'x']]),
    (e: unknown) => e instanceof BlockError && e.code === 'BLK_ERR_ISCSI_TEXT',
  );
});

test('TextAccumulator.feed: every split point of a login text across two and three PDUs', () => {
  const whole = bytes(LOGIN_TEXT);
  const acc = new TextAccumulator();
  for (let cut = 0; cut <= whole.length; cut++) {
    assert.deepEqual(acc.feed(whole.subarray(0, cut), true), { status: 'partial' });
    const r = acc.feed(whole.subarray(cut), false);
    assert.equal(r.status, 'complete', `cut ${cut}`);
    if (r.status === 'complete') {
      assert.deepEqual(r.pairs, LOGIN_PAIRS);
      assert.equal(r.bytes, whole.length);
    }
    assert.equal(acc.length, 0);
  }
  const small = bytes('A=1\0BB=22\0');
  for (let i = 0; i <= small.length; i++) {
    for (let j = i; j <= small.length; j++) {
      acc.feed(small.subarray(0, i), true);
      acc.feed(small.subarray(i, j), true);
      const r = acc.feed(small.subarray(j), false);
      assert.equal(r.status, 'complete');
      if (r.status === 'complete')
        assert.deepEqual(r.pairs, [
          ['A', '1'],
          ['BB', '22'],
        ]);
    }
  }
});

test('TextAccumulator copies segments: the receive buffer may be reused', () => {
  const acc = new TextAccumulator();
  const rx = bytes('A=1\0B=');
  acc.feed(rx, true);
  rx.fill(0x58);
  const r = acc.feed(bytes('2\0'), false);
  assert.equal(r.status, 'complete');
  if (r.status === 'complete')
    assert.deepEqual(r.pairs, [
      ['A', '1'],
      ['B', '2'],
    ]);
});

test('TextAccumulator: bound checked before buffering, errors reported, then usable again', () => {
  const acc = new TextAccumulator({ maxBytes: 16 });
  assert.equal(acc.maxBytes, 16);
  assert.equal(new TextAccumulator(100).maxBytes, 100);
  assert.equal(new TextAccumulator().maxBytes, TextLimit.TEXT_MAX_DEFAULT);
  assert.deepEqual(acc.feed(bytes('A=12345\0'), true), { status: 'partial' });
  const over = acc.feed(bytes('B=123456789\0'), false);
  assert.equal(over.status, 'error');
  if (over.status === 'error') assert.equal(over.error.code, 'TEXT_TOO_LONG');
  assert.equal(acc.length, 0, 'reset after an error');
  // Exactly at the bound is fine.
  const ok = acc.feed(bytes('A=12345678901\0'.slice(0, 15) + '\0'), false);
  assert.equal(ok.status, 'complete');
  // A final segment that does not end with NUL.
  const bad = acc.feed(bytes('A=1'), false);
  assert.equal(bad.status, 'error');
  if (bad.status === 'error') assert.equal(bad.error.code, 'NO_NUL_TERMINATOR');
  // A continued text whose final segment is empty still decodes what came before.
  acc.feed(bytes('A=1\0'), true);
  const empty = acc.feed(new Uint8Array(0), false);
  assert.equal(empty.status, 'complete');
});

test('TextAccumulator push/take: bounded append and join', () => {
  const acc = new TextAccumulator(8);
  assert.ok(acc.push(bytes('A=1\0')));
  assert.ok(acc.push(bytes('B=')));
  assert.equal(acc.length, 6);
  assert.ok(!acc.push(bytes('234')), 'would exceed 8 bytes');
  assert.equal(acc.length, 6, 'nothing appended on refusal');
  assert.ok(acc.push(bytes('2\0')));
  assert.equal(Buffer.from(acc.take()).toString('latin1'), 'A=1\0B=2\0');
  assert.equal(acc.length, 0);
  assert.equal(acc.take().length, 0);
});

test('segmentText cuts after NULs where pairs fit, inside a pair only when it must', () => {
  const text = bytes('AAAA=1\0BB=2\0CCCCCCCCCC=3\0');
  assert.deepEqual(
    segmentText(text, 100).map((s) => Buffer.from(s).toString('latin1')),
    ['AAAA=1\0BB=2\0CCCCCCCCCC=3\0'],
  );
  assert.deepEqual(
    segmentText(text, 12).map((s) => Buffer.from(s).toString('latin1')),
    ['AAAA=1\0BB=2\0', 'CCCCCCCCCC=3', '\0'],
  );
  assert.deepEqual(
    segmentText(text, 8).map((s) => Buffer.from(s).toString('latin1')),
    ['AAAA=1\0', 'BB=2\0', 'CCCCCCCC', 'CC=3\0'],
  );
  for (let max = 1; max <= text.length + 1; max++) {
    const segs = segmentText(text, max);
    for (const s of segs) assert.ok(s.length <= max && s.length > 0);
    assert.deepEqual([...Buffer.concat(segs)], [...text], `max ${max}`);
    // Through the accumulator the pairs come back whole.
    const acc = new TextAccumulator();
    let r;
    for (let i = 0; i < segs.length; i++) r = acc.feed(segs[i]!, i < segs.length - 1);
    assert.equal(r?.status, 'complete');
  }
  assert.throws(() => segmentText(text, 0), BlockError);
});

test('parseNumber: decimal and hex constants below 2^64', () => {
  assert.equal(parseNumber('0'), 0);
  assert.equal(parseNumber('262144'), 262144);
  assert.equal(parseNumber('0x40000'), 262144);
  assert.equal(parseNumber('0X40000'), 262144);
  assert.equal(parseNumber('0xffffFFFF'), 0xffffffff);
  assert.equal(parseNumber('007'), 7);
  assert.equal(parseNumber('18446744073709551615'), 2 ** 64 - 1);
  assert.equal(parseNumber('0xffffffffffffffff'), 2 ** 64 - 1);
  for (const bad of ['', '18446744073709551616', '0x10000000000000000', '-1', '+1', '1.0', '1e3', ' 1', '1 ', '0x', '0xg', '0b1234', 'Yes', '0x-1']) {
    assert.equal(parseNumber(bad), null, JSON.stringify(bad));
  }
});

test('parseNumericRange: a~b with a <= b', () => {
  assert.deepEqual(parseNumericRange('1~65535'), [1, 65535]);
  assert.deepEqual(parseNumericRange('0x10~0x10'), [16, 16]);
  for (const bad of ['2~1', '1~', '~2', '1', '1~2~3', 'a~b']) assert.equal(parseNumericRange(bad), null, bad);
});

test('parseBinary: hex (odd length has an implied leading nibble) and base64', () => {
  assert.deepEqual([...parseBinary('0x0102ff')!], [1, 2, 255]);
  assert.deepEqual([...parseBinary('0XABcd')!], [0xab, 0xcd]);
  assert.deepEqual([...parseBinary('0x123')!], [0x01, 0x23]);
  assert.deepEqual([...parseBinary('0x1')!], [0x01]);
  assert.deepEqual([...parseBinary('0bAQL/')!], [1, 2, 255]);
  assert.deepEqual([...parseBinary('0BAQI=')!], [1, 2]);
  assert.deepEqual([...parseBinary('0bAQI')!], [1, 2], 'padding optional');
  assert.deepEqual([...parseBinary('0bAQ==')!], [1]);
  assert.deepEqual([...parseBinary('0bAQ')!], [1]);
  for (const bad of ['', '0x', '0b', '0xzz', '1234', '0y12', '0bAQ=', '0bA', '0bAQI==', '0b!!!!', '0bAR==', '0bA=QI', '0bAQ===']) {
    assert.equal(parseBinary(bad), null, JSON.stringify(bad));
  }
  // The bound on the decoded length.
  assert.equal(parseBinary(`0x${'00'.repeat(1024)}`, 1024)?.length, 1024);
  assert.equal(parseBinary(`0x${'00'.repeat(1025)}`, 1024), null);
  assert.equal(parseBinary(`0x0${'00'.repeat(1024)}`, 1024), null);
  assert.equal(parseBinary(formatBase64(new Uint8Array(1024)), 1024)?.length, 1024);
  assert.equal(parseBinary(formatBase64(new Uint8Array(1025)), 1024), null);
});

test('formatHex and formatBase64 round-trip through parseBinary', () => {
  const data = Uint8Array.from({ length: 37 }, (_, i) => (i * 73) & 0xff);
  assert.equal(formatHex(Uint8Array.of(0, 1, 0xab)), '0x0001ab');
  assert.equal(formatBase64(Uint8Array.of(1, 2, 255)), '0bAQL/');
  for (let n = 1; n <= data.length; n++) {
    const d = data.subarray(3, 3 + Math.min(n, data.length - 3));
    assert.deepEqual([...parseBinary(formatHex(d))!], [...d]);
    assert.deepEqual([...parseBinary(formatBase64(d))!], [...d]);
  }
});

test('booleans, lists and the reserved constants', () => {
  assert.equal(parseBoolean('Yes'), true);
  assert.equal(parseBoolean('No'), false);
  for (const bad of ['yes', 'NO', '', 'True', '1']) assert.equal(parseBoolean(bad), null);
  assert.equal(formatBoolean(true), 'Yes');
  assert.equal(formatBoolean(false), 'No');
  assert.deepEqual(splitList('CRC32C,None'), ['CRC32C', 'None']);
  assert.deepEqual(splitList('None'), ['None']);
  for (const bad of ['', 'a,', ',a', 'a,,b']) assert.equal(splitList(bad), null);
  for (const r of ['NotUnderstood', 'Irrelevant', 'Reject']) assert.ok(isReservedValue(r));
  for (const v of ['None', 'reject', 'Yes', '']) assert.ok(!isReservedValue(v));
});
