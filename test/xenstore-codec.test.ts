import assert from 'node:assert/strict';
import test from 'node:test';
import { XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XsType } from '../src/xenstore/constants.ts';
import { XsDecoder, decodeHeader, encodeMessage, nulStrings, pathAndValue, splitNul } from '../src/xenstore/codec.ts';
import type { XsHeader, XsMessage } from '../src/xenstore/codec.ts';

// Naive vectors, written out by hand from struct xsd_sockmsg (4 x u32 little-endian).
// XS_WRITE (11), req_id 0x01020304, tx_id 7, len 8, "/foo\0bar"
const WRITE_BYTES = Uint8Array.from([
  0x0b, 0x00, 0x00, 0x00, 0x04, 0x03, 0x02, 0x01, 0x07, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x2f, 0x66, 0x6f, 0x6f, 0x00, 0x62, 0x61, 0x72,
]);
// XS_WATCH_EVENT (15), req 0, tx 0, len 10, "/a/b\0tok1\0"
const EVENT_BYTES = Uint8Array.from([
  0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x2f, 0x61, 0x2f, 0x62, 0x00, 0x74, 0x6f, 0x6b, 0x31, 0x00,
]);
// XS_TRANSACTION_START (6), req 0xfffffffe, tx 0, len 1, "\0"
const TSTART_BYTES = Uint8Array.from([0x06, 0x00, 0x00, 0x00, 0xfe, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);

const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

test('message type numbers and error names follow xs_wire.h', () => {
  assert.equal(XsType.XS_CONTROL, 0);
  assert.equal(XsType.XS_DIRECTORY, 1);
  assert.equal(XsType.XS_READ, 2);
  assert.equal(XsType.XS_WRITE, 11);
  assert.equal(XsType.XS_WATCH_EVENT, 15);
  assert.equal(XsType.XS_ERROR, 16);
  assert.equal(XsType.XS_SET_TARGET, 19);
  assert.equal(XsType.XS_RESET_WATCHES, 21);
  assert.equal(XsType.XS_DIRECTORY_PART, 22);
  assert.deepEqual(XSD_ERRORS.slice(0, 5), ['EINVAL', 'EACCES', 'EEXIST', 'EISDIR', 'ENOENT']);
  assert.equal(XSD_ERRORS[15], 'EPERM');
  assert.equal(XENSTORE_PAYLOAD_MAX, 4096);
});

test('encodeMessage produces the hand-written bytes', () => {
  assert.deepEqual(encodeMessage(XsType.XS_WRITE, 0x01020304, 7, pathAndValue('/foo', Buffer.from('bar'))), WRITE_BYTES);
  assert.deepEqual(encodeMessage(XsType.XS_WATCH_EVENT, 0, 0, nulStrings('/a/b', 'tok1')), EVENT_BYTES);
  assert.deepEqual(encodeMessage(XsType.XS_TRANSACTION_START, 0xfffffffe, 0, nulStrings('')), TSTART_BYTES);
});

test('decodeHeader reads the little-endian fields', () => {
  assert.deepEqual(decodeHeader(WRITE_BYTES), { type: 11, reqId: 0x01020304, txId: 7, len: 8 });
  assert.deepEqual(decodeHeader(TSTART_BYTES), { type: 6, reqId: 0xfffffffe, txId: 0, len: 1 });
});

test('splitNul: trailing nul ends a string, interior nuls separate', () => {
  assert.deepEqual(splitNul(Buffer.from('a\0b\0')), ['a', 'b']);
  assert.deepEqual(splitNul(Buffer.from('/x\0value')), ['/x', 'value']);
  assert.deepEqual(splitNul(Buffer.from('\0')), ['']);
  assert.deepEqual(splitNul(new Uint8Array(0)), []);
});

function collect(): { msgs: XsMessage[]; over: XsHeader[]; dec: XsDecoder } {
  const msgs: XsMessage[] = [];
  const over: XsHeader[] = [];
  const dec = new XsDecoder({
    onMessage: (m) => msgs.push({ ...m, payload: m.payload.slice() }),
    onOversize: (h) => over.push(h),
  });
  return { msgs, over, dec };
}

const STREAM = Uint8Array.from([...WRITE_BYTES, ...EVENT_BYTES, ...TSTART_BYTES]);

function checkStream(msgs: XsMessage[]): void {
  assert.equal(msgs.length, 3);
  const [w, e, t] = msgs as [XsMessage, XsMessage, XsMessage];
  assert.deepEqual([w.type, w.reqId, w.txId, text(w.payload)], [11, 0x01020304, 7, '/foo\0bar']);
  assert.deepEqual([e.type, e.reqId, e.txId, text(e.payload)], [15, 0, 0, '/a/b\0tok1\0']);
  assert.deepEqual([t.type, t.reqId, t.txId, text(t.payload)], [6, 0xfffffffe, 0, '\0']);
}

test('decoder: whole stream in one chunk', () => {
  const { msgs, dec } = collect();
  dec.push(STREAM);
  checkStream(msgs);
  assert.equal(dec.buffered, 0);
});

test('decoder: stream split at every byte boundary (two chunks)', () => {
  for (let cut = 0; cut <= STREAM.length; cut++) {
    const { msgs, dec } = collect();
    dec.push(STREAM.subarray(0, cut));
    dec.push(STREAM.subarray(cut));
    checkStream(msgs);
  }
});

test('decoder: stream split at every pair of boundaries (three chunks) and byte by byte', () => {
  for (let a = 0; a <= STREAM.length; a++) {
    for (let b = a; b <= STREAM.length; b += 3) {
      const { msgs, dec } = collect();
      dec.push(STREAM.subarray(0, a));
      dec.push(STREAM.subarray(a, b));
      dec.push(STREAM.subarray(b));
      checkStream(msgs);
    }
  }
  const { msgs, dec } = collect();
  for (const byte of STREAM) dec.push(Uint8Array.of(byte));
  checkStream(msgs);
});

test('decoder: an oversize payload is reported and skipped, never buffered, and the stream stays in sync', () => {
  const big = XENSTORE_PAYLOAD_MAX + 1;
  // XS_READ, req 9, tx 0, len 4097
  const header = Uint8Array.from([0x02, 0, 0, 0, 0x09, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x10, 0, 0]);
  const { msgs, over, dec } = collect();
  dec.push(header);
  assert.deepEqual(over, [{ type: 2, reqId: 9, txId: 0, len: big }]);
  for (let sent = 0; sent < big; sent += 1000) {
    dec.push(new Uint8Array(Math.min(1000, big - sent)).fill(0x41));
    assert.ok(dec.buffered === 0, `held ${dec.buffered} bytes of an oversize payload`);
  }
  dec.push(STREAM);
  checkStream(msgs);
});

test('decoder: a payload of exactly XENSTORE_PAYLOAD_MAX is accepted', () => {
  const payload = new Uint8Array(XENSTORE_PAYLOAD_MAX).fill(0x61);
  const { msgs, over, dec } = collect();
  const bytes = encodeMessage(XsType.XS_WRITE, 1, 0, payload);
  dec.push(bytes.subarray(0, 100));
  dec.push(bytes.subarray(100));
  assert.equal(over.length, 0);
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0]?.payload.length, XENSTORE_PAYLOAD_MAX);
});

test('decoder, pull side: append keeps bytes, next() decodes one message at a time, ready says when it can', () => {
  for (let cut = 0; cut <= STREAM.length; cut++) {
    const { msgs, dec } = collect();
    dec.append(STREAM.subarray(0, cut));
    assert.equal(msgs.length, 0, 'append alone decodes nothing');
    while (dec.ready) assert.equal(dec.next(), true);
    assert.equal(dec.next(), false, 'nothing more without more bytes');
    const early = msgs.length;
    assert.equal(early, [WRITE_BYTES.length, WRITE_BYTES.length + EVENT_BYTES.length, STREAM.length].filter((end) => end <= cut).length);
    dec.append(STREAM.subarray(cut));
    for (let n = early; n < 3; n++) {
      assert.equal(dec.ready, true);
      assert.equal(dec.next(), true);
      assert.equal(msgs.length, n + 1, 'one message per next()');
    }
    assert.equal(dec.ready, false);
    checkStream(msgs);
  }
});
