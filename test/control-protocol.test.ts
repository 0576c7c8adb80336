// The control socket's codec: requests and answers as literal JSON lines, strict validation of
// every field, hostile input (garbage, huge lines, prototype keys, control characters) answered
// with an error and never a throw, and line framing split at every byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CONTROL_ERROR_CODES,
  decodeRequest,
  decodeResponse,
  encodeError,
  encodeRequest,
  encodeResult,
  LineDecoder,
  MAX_REQUEST_LINE,
} from '../src/control/protocol.ts';
import type { LineEvent } from '../src/control/protocol.ts';
import { parseDiskRef } from '../src/control/disk-ref.ts';
import { summarizeLatency } from '../src/control/latency-summary.ts';
import { LatencyHistogram } from '../src/stats/latency-histogram.ts';
import { mulberry32 } from '../src/internal/prng.ts';

function errorCode(line: string): { id: number | null; code: string } {
  const d = decodeRequest(line);
  assert.equal(d.ok, false, `expected an error for ${line.slice(0, 80)}`);
  return d.ok ? { id: null, code: '' } : { id: d.id, code: d.error.code };
}

test('requests encode to the documented lines and decode back', () => {
  assert.equal(encodeRequest(7, { op: 'stats', disk: '3/xvda' }), '{"v":1,"id":7,"op":"stats","disk":"3/xvda"}\n');
  assert.equal(encodeRequest(1, { op: 'list' }), '{"v":1,"id":1,"op":"list"}\n');
  const lines = [
    '{"v":1,"id":1,"op":"list"}',
    '{"v":1,"id":2,"op":"stats"}',
    '{"v":1,"id":3,"op":"stats","disk":"3/51712"}',
    '{"v":1,"id":4,"op":"attach","domid":3,"spec":"format=raw,vdev=xvdb,access=rw,target=/dev/loop1"}',
    '{"v":1,"id":5,"op":"detach","domid":3,"vdev":"xvdb"}',
    '{"v":1,"id":6,"op":"resize","disk":"3/xvda","size":21474836480}',
  ];
  for (const line of lines) {
    const d = decodeRequest(line);
    assert.ok(d.ok, line);
    assert.deepEqual(d.value, JSON.parse(line));
    const { v: _v, id, ...call } = d.value;
    assert.equal(encodeRequest(id, call), `${line}\n`, 're-encodes byte for byte');
  }
});

test('answers: results and errors as literal lines, decoded by the client', () => {
  assert.equal(encodeResult(3, [{ key: '1/51712' }]), '{"v":1,"id":3,"ok":true,"result":[{"key":"1/51712"}]}\n');
  const err = encodeError(4, { code: 'CTL_ERR_UNKNOWN_DISK', message: 'no disk 1/xvdb', known: ['1/51712'] });
  assert.equal(err, '{"v":1,"id":4,"ok":false,"error":{"code":"CTL_ERR_UNKNOWN_DISK","message":"no disk 1/xvdb","known":["1/51712"]}}\n');
  const d = decodeResponse(err.trimEnd());
  assert.ok(d.ok && !d.value.ok);
  assert.deepEqual(d.ok && !d.value.ok && d.value.error, { code: 'CTL_ERR_UNKNOWN_DISK', message: 'no disk 1/xvdb', known: ['1/51712'] });
  // A code from a newer server is kept as a failure with its message.
  const future = decodeResponse('{"v":1,"id":1,"ok":false,"error":{"code":"CTL_ERR_SOMETHING_NEW","message":"m"}}');
  assert.ok(future.ok && !future.value.ok && future.value.error.code === 'CTL_ERR_FAILED');
  for (const bad of ['', 'x', '[]', '{"v":2,"id":1,"ok":true}', '{"v":1,"id":-1,"ok":true}', '{"v":1,"id":1,"ok":false}', '{"v":1,"id":1,"ok":"yes"}']) {
    assert.equal(decodeResponse(bad).ok, false, bad);
  }
});

test('every field is checked: wrong types, ranges, unknown keys and ops get the right code and keep the id', () => {
  assert.deepEqual(errorCode('not json'), { id: null, code: 'CTL_ERR_BAD_JSON' });
  assert.deepEqual(errorCode('[1,2]'), { id: null, code: 'CTL_ERR_BAD_JSON' });
  assert.deepEqual(errorCode('null'), { id: null, code: 'CTL_ERR_BAD_JSON' });
  assert.deepEqual(errorCode('42'), { id: null, code: 'CTL_ERR_BAD_JSON' });
  for (const id of ['-1', '1.5', '"7"', 'null', '9007199254740993', 'true']) {
    assert.deepEqual(errorCode(`{"v":1,"id":${id},"op":"list"}`), { id: null, code: 'CTL_ERR_BAD_REQUEST' }, `id ${id}`);
  }
  assert.deepEqual(errorCode('{"id":1,"op":"list"}'), { id: 1, code: 'CTL_ERR_VERSION' });
  assert.deepEqual(errorCode('{"v":2,"id":1,"op":"list"}'), { id: 1, code: 'CTL_ERR_VERSION' });
  assert.deepEqual(errorCode('{"v":"1","id":1,"op":"list"}'), { id: 1, code: 'CTL_ERR_VERSION' });
  assert.deepEqual(errorCode('{"v":1,"id":2,"op":"mkfs"}'), { id: 2, code: 'CTL_ERR_UNKNOWN_OP' });
  assert.deepEqual(errorCode('{"v":1,"id":2,"op":"toString"}'), { id: 2, code: 'CTL_ERR_UNKNOWN_OP' });
  assert.deepEqual(errorCode('{"v":1,"id":2,"op":["list"]}'), { id: 2, code: 'CTL_ERR_BAD_REQUEST' });
  const bad: [string, string][] = [
    ['list', '"disk":"1/xvda"'], // list takes nothing
    ['stats', '"disk":""'],
    ['stats', '"disk":5'],
    ['stats', `"disk":"${'1'.repeat(65)}"`],
    ['stats', '"disk":"1/xvda\\n"'],
    ['stats', '"__proto__":{"polluted":1}'],
    ['attach', '"domid":1'],
    ['attach', '"domid":-1,"spec":"vdev=xvdb,target=/x"'],
    ['attach', '"domid":32752,"spec":"vdev=xvdb,target=/x"'], // DOMID_FIRST_RESERVED
    ['attach', '"domid":1.5,"spec":"vdev=xvdb,target=/x"'],
    ['attach', '"domid":"1","spec":"vdev=xvdb,target=/x"'],
    ['attach', `"domid":1,"spec":"${'a'.repeat(4097)}"`],
    ['attach', '"domid":1,"spec":"vdev=xvdb,\\u0000target=/x"'],
    ['detach', '"domid":1'],
    ['detach', '"domid":1,"vdev":["xvdb"]'],
    ['resize', '"disk":"1/xvda"'],
    ['resize', '"disk":"1/xvda","size":0'],
    ['resize', '"disk":"1/xvda","size":1e300'],
    ['resize', '"disk":"1/xvda","size":"20G"'],
    ['resize', '"disk":"1/xvda","size":4096,"force":true'],
  ];
  for (const [op, fields] of bad) {
    assert.deepEqual(errorCode(`{"v":1,"id":9,"op":"${op}",${fields}}`), { id: 9, code: 'CTL_ERR_BAD_REQUEST' }, `${op} with ${fields.slice(0, 60)}`);
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was touched');
  // Domain ids up to 0x7FEF are domains.
  assert.equal(decodeRequest('{"v":1,"id":1,"op":"detach","domid":32751,"vdev":"xvda"}').ok, true);
});

test('hostile input never throws: random bytes, random JSON, deep nesting, a huge line', () => {
  const next = mulberry32(20240611);
  const alphabet = '{}[]":,01-9.eE \\u\u0000\u00ffabvidopstlx/';
  for (let i = 0; i < 3000; i++) {
    const len = next() % 200;
    let s = '';
    for (let j = 0; j < len; j++) s += alphabet[next() % alphabet.length];
    const d = decodeRequest(s);
    if (!d.ok) assert.ok((CONTROL_ERROR_CODES as readonly string[]).includes(d.error.code));
  }
  const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
  assert.equal(errorCode(deep).code, 'CTL_ERR_BAD_JSON');
  assert.equal(errorCode(`{"v":1,"id":1,"op":"list","x":"${'y'.repeat(MAX_REQUEST_LINE)}"}`).code, 'CTL_ERR_TOO_LONG');
  // Error messages quote what was sent, but short and escaped.
  const d = decodeRequest(`{"v":1,"id":1,"op":"${'\\u001b[31m'.repeat(30)}"}`);
  assert.ok(!d.ok);
  assert.ok(!d.ok && d.error.message.length < 200 && !d.error.message.includes('\u001b'), !d.ok ? d.error.message : '');
});

test('line framing: split at every byte, CRLF, empty lines, and an over-long line skipped without buffering it', () => {
  const text = '{"v":1,"id":1,"op":"list"}\r\n\n{"v":1,"id":2,"op":"stats","disk":"1/xvda"}\n{"v":1,"id":3';
  const bytes = Buffer.from(text);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const dec = new LineDecoder(1024);
    const events = [...dec.push(bytes.subarray(0, cut)), ...dec.push(bytes.subarray(cut))];
    assert.deepEqual(events, [{ line: '{"v":1,"id":1,"op":"list"}' }, { line: '{"v":1,"id":2,"op":"stats","disk":"1/xvda"}' }], `cut at ${cut}`);
    assert.equal(dec.buffered, '{"v":1,"id":3'.length);
  }
  const dec = new LineDecoder(100);
  const events: LineEvent[] = [];
  for (let i = 0; i < 100; i++) {
    events.push(...dec.push(Buffer.alloc(1000, 0x61)));
    assert.ok(dec.buffered <= 100, 'an over-long line is not held');
  }
  events.push(...dec.push(Buffer.from('aaa\nok\n')));
  assert.deepEqual(events, [{ tooLong: 1000 }, { line: 'ok' }], 'reported once, then the next line is read');
  // A multi-byte character split across chunks survives.
  const e = Buffer.from('"é"\n');
  const d2 = new LineDecoder(100);
  assert.deepEqual([...d2.push(e.subarray(0, 2)), ...d2.push(e.subarray(2))], [{ line: '"é"' }]);
});

test('disk names: DOMID/DEVID, DOMID/VDEV and vbd-D-N', () => {
  assert.deepEqual(parseDiskRef('3/51712'), { ref: { domid: 3, devid: 51712 } });
  assert.deepEqual(parseDiskRef('3/xvda'), { ref: { domid: 3, devid: 51712 } });
  assert.deepEqual(parseDiskRef('vbd-3-51728'), { ref: { domid: 3, devid: 51728 } });
  assert.deepEqual(parseDiskRef('12/sdb'), { ref: { domid: 12, devid: (8 << 8) | 16 } });
  for (const bad of ['xvda', '3', '3/', '/xvda', '3/xvda/1', '99999/xvda', '3/floppy', 'vbd-3', '-1/xvda']) {
    assert.ok('why' in parseDiskRef(bad), bad);
  }
});

test('latency summary: fio percentiles plus decade buckets that add up to the count', () => {
  const h = new LatencyHistogram();
  for (let i = 0; i < 900; i++) h.record(50_000); // 50 us
  for (let i = 0; i < 90; i++) h.record(2_000_000); // 2 ms
  for (let i = 0; i < 10; i++) h.record(3e10); // 30 s
  const s = summarizeLatency(h);
  assert.equal(s.count, 1000);
  assert.ok(Math.abs(s.p50 - 50_000) / 50_000 < 1 / 64, `p50 ${s.p50}`);
  assert.ok(Math.abs(s.p90 - 50_000) / 50_000 < 1 / 64, `p90 ${s.p90}`);
  assert.ok(Math.abs(s.p99 - 2e6) / 2e6 < 1 / 64, `p99 ${s.p99}`);
  assert.ok(s.p999 > 1e10, `p99.9 ${s.p999}`);
  assert.deepEqual(
    s.buckets.map((b) => [b.le_ns, b.count]),
    [
      [1e3, 0],
      [1e4, 0],
      [1e5, 900],
      [1e6, 0],
      [1e7, 90],
      [1e8, 0],
      [1e9, 0],
      [1e10, 0],
      [null, 10],
    ],
  );
  const empty = summarizeLatency(new LatencyHistogram());
  assert.deepEqual([empty.count, empty.min, empty.p50, empty.p999], [0, 0, 0, 0]);
});

test('nesting is refused before JSON.parse builds it; brackets inside strings do not count', () => {
  assert.equal(errorCode('{"v":1,"id":1,"op":"list","x":[[1]]}').code, 'CTL_ERR_BAD_JSON');
  assert.equal(errorCode(`${'{"a":'.repeat(3)}1}}}`).code, 'CTL_ERR_BAD_JSON');
  // Depth 2 still reaches the field checks (and keeps the id).
  assert.deepEqual(errorCode('{"v":1,"id":4,"op":"list","x":[1]}'), { id: 4, code: 'CTL_ERR_BAD_REQUEST' });
  const spec = 'vdev=xvdb,target=/srv/[[[{{{\\"x\\"}}}]]].img';
  const d = decodeRequest(JSON.stringify({ v: 1, id: 2, op: 'attach', domid: 1, spec }));
  assert.ok(d.ok && d.value.op === 'attach' && d.value.spec === spec, JSON.stringify(d));
});
