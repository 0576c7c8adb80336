// The NBD codec against bytes written by hand from proto.md's layouts (hex literals, never the
// encoder's output), and the incremental readers fed every split of their input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ByteQueue,
  Command,
  CommandFlag,
  decodeBlockStatus,
  decodeErrorChunk,
  decodeInfoReply,
  decodeInfoRequest,
  decodeMetaContextReply,
  decodeMetaContextRequest,
  decodeOffsetData,
  decodeOffsetHole,
  decodeServerReply,
  encodeBlockStatusChunk,
  encodeClientFlags,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeInfoRequest,
  encodeMetaContextReply,
  encodeMetaContextRequest,
  encodeNoneChunk,
  encodeOffsetHoleChunk,
  encodeOptionError,
  encodeOptionReply,
  encodeOptionRequest,
  encodeRequest,
  encodeServerGreeting,
  encodeServerReply,
  encodeSimpleReply,
  isSafeU64,
  NbdProtocolError,
  Option,
  OptionReply,
  readClientFlags,
  readExportNameReply,
  readOptionReplyHeader,
  readOptionRequestHeader,
  readServerGreeting,
  readU64,
  ReplyReader,
  type ChunkHeader,
  RequestReader,
  type RequestHeader,
  ReplyType,
  writeOffsetDataHeader,
  writeU64,
} from '../src/nbd/codec.ts';

const hex = (text: string): Buffer => Buffer.from(text.replace(/[\s|]/g, ''), 'hex');

function queueOf(...chunks: Buffer[]): ByteQueue {
  const queue = new ByteQueue();
  for (const chunk of chunks) queue.push(chunk);
  return queue;
}

test('server greeting: NBDMAGIC, IHAVEOPT, handshake flags', () => {
  const bytes = hex('4e42444d41474943 | 49484156454f5054 | 0003');
  assert.deepEqual(encodeServerGreeting(3), bytes);
  assert.deepEqual(readServerGreeting(queueOf(bytes)), { handshakeFlags: 3 });
  assert.equal(readServerGreeting(queueOf(bytes.subarray(0, 17))), undefined, 'short input is undefined');
  assert.throws(
    () => readServerGreeting(queueOf(hex('4e42444d41474943 | 00420281861253 00 | 0000'))),
    (e: unknown) => e instanceof NbdProtocolError && e.fatal,
  );
  assert.throws(() => readServerGreeting(queueOf(hex('0000000000000000 | 49484156454f5054 | 0003'))), NbdProtocolError);
});

test('client flags', () => {
  assert.deepEqual(encodeClientFlags(3), hex('00000003'));
  assert.equal(readClientFlags(queueOf(hex('00000001'))), 1);
  assert.equal(readClientFlags(queueOf(hex('000000'))), undefined);
});

test('option request: IHAVEOPT, option, length, data', () => {
  const bytes = hex('49484156454f5054 | 00000007 | 00000003 | 616263');
  assert.deepEqual(encodeOptionRequest(Option.NBD_OPT_GO, Buffer.from('abc')), bytes);
  const queue = queueOf(bytes.subarray(0, 5), bytes.subarray(5));
  assert.deepEqual(readOptionRequestHeader(queue), { option: 7, length: 3 });
  assert.equal(queue.length, 3, 'the data is left for the caller');
  assert.throws(
    () => readOptionRequestHeader(queueOf(hex('49484156454f5055 00000007 00000000'))),
    (e: unknown) => e instanceof NbdProtocolError && e.kind === 'bad-magic',
  );
});

test('option reply and option error', () => {
  const ack = hex('0003e889045565a9 | 00000008 | 00000001 | 00000000');
  assert.deepEqual(encodeOptionReply(Option.NBD_OPT_STRUCTURED_REPLY, OptionReply.NBD_REP_ACK), ack);
  assert.deepEqual(readOptionReplyHeader(queueOf(ack)), { option: 8, replyType: 1, length: 0 });
  const unsup = hex('0003e889045565a9 | 00000063 | 80000001 | 00000002 | 6e6f');
  assert.deepEqual(encodeOptionError(99, OptionReply.NBD_REP_ERR_UNSUP, 'no'), unsup);
  assert.deepEqual(readOptionReplyHeader(queueOf(unsup)), { option: 99, replyType: 0x80000001, length: 2 });
  assert.throws(() => readOptionReplyHeader(queueOf(hex('0003e889045565a8 00000008 00000001 00000000'))), NbdProtocolError);
});

test('NBD_OPT_EXPORT_NAME reply, with and without the 124 zero bytes', () => {
  const short = hex('0000000100000200 | 0143');
  assert.deepEqual(encodeExportNameReply(0x100000200, 0x143, true), short);
  const long = Buffer.concat([short, Buffer.alloc(124)]);
  assert.deepEqual(encodeExportNameReply(0x100000200, 0x143, false), long);
  assert.deepEqual(readExportNameReply(queueOf(long), false), { size: 0x100000200, transmissionFlags: 0x143 });
  assert.equal(readExportNameReply(queueOf(long.subarray(0, 133)), false), undefined);
  assert.deepEqual(readExportNameReply(queueOf(short), true), { size: 0x100000200, transmissionFlags: 0x143 });
});

test('NBD_OPT_GO data: name and information requests', () => {
  const bytes = hex('00000002 | 6864 | 0002 | 0003 0001');
  assert.deepEqual(encodeInfoRequest('hd', [3, 1]), bytes);
  assert.deepEqual(decodeInfoRequest(bytes), { exportName: 'hd', infoTypes: [3, 1] });
  assert.deepEqual(decodeInfoRequest(hex('00000000 0000')), { exportName: '', infoTypes: [] });
  for (const bad of ['00000005 6864 0000', '00000002 6864 0002 0003', '00000002 6864 0000 ff', '00000002 6800 0000']) {
    assert.throws(
      () => decodeInfoRequest(hex(bad)),
      (e: unknown) => e instanceof NbdProtocolError && e.kind === 'bad-payload' && !e.fatal,
      bad,
    );
  }
  assert.throws(() => decodeInfoRequest(hex('00001001')), NbdProtocolError, 'a name above 4096 bytes is refused before reading it');
});

test('meta context request and reply', () => {
  const bytes = hex('00000002 6864 | 00000001 | 0000000f 626173653a616c6c6f636174696f6e');
  assert.deepEqual(encodeMetaContextRequest('hd', ['base:allocation']), bytes);
  assert.deepEqual(decodeMetaContextRequest(bytes), { exportName: 'hd', queries: ['base:allocation'] });
  assert.throws(() => decodeMetaContextRequest(hex('00000002 6864 00000002 00000001 61')), NbdProtocolError);
  const reply = hex('00000001 | 626173653a616c6c6f636174696f6e');
  assert.deepEqual(encodeMetaContextReply(1, 'base:allocation'), reply);
  assert.deepEqual(decodeMetaContextReply(reply), { contextId: 1, name: 'base:allocation' });
});

test('NBD_REP_SERVER for NBD_OPT_LIST', () => {
  const bytes = hex('00000002 | 6864 | 6469736b');
  assert.deepEqual(encodeServerReply('hd', 'disk'), bytes);
  assert.deepEqual(decodeServerReply(bytes), { exportName: 'hd', details: 'disk' });
  assert.throws(() => decodeServerReply(hex('00000009 6864')), NbdProtocolError);
});

test('NBD_REP_INFO payloads', () => {
  const exportInfo = hex('0000 | 0000000000100000 | 010d');
  assert.deepEqual(encodeInfoExport(0x100000, 0x10d), exportInfo);
  assert.deepEqual(decodeInfoReply(exportInfo), { type: 0, size: 0x100000, transmissionFlags: 0x10d });
  assert.deepEqual(encodeInfoName('hd'), hex('0001 6864'));
  assert.deepEqual(decodeInfoReply(hex('0001 6864')), { type: 1, name: 'hd' });
  assert.deepEqual(encodeInfoDescription('a'), hex('0002 61'));
  assert.deepEqual(decodeInfoReply(hex('0002 61')), { type: 2, description: 'a' });
  const blockSize = hex('0003 | 00000200 | 00001000 | 02000000');
  assert.deepEqual(encodeInfoBlockSize(512, 4096, 32 << 20), blockSize);
  assert.deepEqual(decodeInfoReply(blockSize), { type: 3, minimum: 512, preferred: 4096, maximum: 32 << 20 });
  assert.deepEqual(decodeInfoReply(hex('0009 aa')), { type: 9, unknown: hex('aa') });
  assert.throws(() => decodeInfoReply(hex('0003 00000200')), NbdProtocolError);
});

test('request header: 28 bytes, cookie echoed bit for bit', () => {
  const bytes = hex('25609513 | 0001 | 0001 | deadbeef 01020304 | 0000000100000000 | 00010000');
  const request: RequestHeader = {
    flags: CommandFlag.NBD_CMD_FLAG_FUA,
    type: Command.NBD_CMD_WRITE,
    cookieHi: 0xdeadbeef,
    cookieLo: 0x01020304,
    offset: 2 ** 32,
    length: 65536,
  };
  assert.deepEqual(encodeRequest(request), bytes);
});

test('replies: simple, OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, ERROR, ERROR_OFFSET, NONE', () => {
  assert.deepEqual(encodeSimpleReply(22, 0xdeadbeef, 7), hex('67446698 | 00000016 | deadbeef 00000007'));
  const dataHeader = Buffer.alloc(30);
  writeOffsetDataHeader(dataHeader, 2, 1, 0, 5, 4096, 512);
  assert.deepEqual(dataHeader.subarray(2), hex('668e33ef | 0001 | 0001 | 00000000 00000005 | 00000208 | 0000000000001000'));
  assert.deepEqual(encodeOffsetHoleChunk(0, 0, 5, 512, 1024), hex('668e33ef 0000 0002 00000000 00000005 0000000c | 0000000000000200 | 00000400'));
  assert.deepEqual(
    encodeBlockStatusChunk(1, 0, 5, 1, [
      { length: 4096, flags: 0 },
      { length: 8192, flags: 3 },
    ]),
    hex('668e33ef 0001 0005 00000000 00000005 00000014 | 00000001 | 00001000 00000000 | 00002000 00000003'),
  );
  assert.deepEqual(encodeErrorChunk(1, 0, 5, 5, 'io'), hex('668e33ef 0001 8001 00000000 00000005 00000008 | 00000005 | 0002 | 696f'));
  assert.deepEqual(encodeErrorChunk(1, 0, 5, 5, 'io', 512), hex('668e33ef 0001 8002 00000000 00000005 00000010 | 00000005 | 0002 | 696f | 0000000000000200'));
  assert.deepEqual(encodeNoneChunk(0, 5), hex('668e33ef 0001 0000 00000000 00000005 00000000'));
});

test('chunk payload decoders', () => {
  const data = decodeOffsetData(hex('0000000000001000 aabb'));
  assert.equal(data.offset, 4096);
  assert.deepEqual(Buffer.from(data.data), hex('aabb'));
  assert.deepEqual(decodeOffsetHole(hex('0000000000000200 00000400')), { offset: 512, length: 1024 });
  assert.deepEqual(decodeBlockStatus(hex('00000001 00001000 00000000 00002000 00000003')), {
    contextId: 1,
    descriptors: [
      { length: 4096, flags: 0 },
      { length: 8192, flags: 3 },
    ],
  });
  assert.deepEqual(decodeErrorChunk(ReplyType.NBD_REPLY_TYPE_ERROR, hex('00000005 0002 696f')), { error: 5, message: 'io' });
  assert.deepEqual(decodeErrorChunk(ReplyType.NBD_REPLY_TYPE_ERROR_OFFSET, hex('00000005 0002 696f 0000000000000200')), {
    error: 5,
    message: 'io',
    offset: 512,
  });
  for (const [name, fn] of [
    ['short OFFSET_DATA', () => decodeOffsetData(hex('00'))],
    ['long OFFSET_HOLE', () => decodeOffsetHole(hex('0000000000000200 00000400 00'))],
    ['empty BLOCK_STATUS', () => decodeBlockStatus(hex('00000001'))],
    ['ragged BLOCK_STATUS', () => decodeBlockStatus(hex('00000001 00001000 000000'))],
    ['error message overrun', () => decodeErrorChunk(ReplyType.NBD_REPLY_TYPE_ERROR, hex('00000005 0009 696f'))],
  ] as const) {
    assert.throws(fn, NbdProtocolError, name);
  }
});

test('64-bit fields: exact below 2^53, beyond it visibly unsafe', () => {
  const at = Buffer.alloc(8);
  writeU64(at, 0, Number.MAX_SAFE_INTEGER);
  assert.deepEqual(at, hex('001fffffffffffff'));
  assert.equal(readU64(at, 0), Number.MAX_SAFE_INTEGER);
  assert.ok(isSafeU64(readU64(at, 0)));
  assert.ok(!isSafeU64(readU64(hex('0020000000000001'), 0)));
  assert.ok(!isSafeU64(readU64(hex('ffffffffffffffff'), 0)));
});

test('ByteQueue hands out views within a chunk and copies only across chunks', () => {
  const a = hex('0102030405');
  const queue = queueOf(a, hex('0607'), hex('08'));
  const view = queue.take(2)!;
  assert.equal(view.buffer, a.buffer, 'a view, not a copy');
  assert.equal(queue.peekU32(0), 0x03040506);
  assert.equal(queue.peekU8(5), 8);
  assert.equal(queue.peekU8(6), undefined);
  assert.deepEqual(queue.takeIov(5), [hex('030405'), hex('0607')]);
  assert.equal(queue.take(2), undefined);
  assert.equal(queue.skip(9), 1);
  assert.equal(queue.length, 0);
});

/** Every way to cut `stream` in two, plus one byte at a time. */
function splits(stream: Buffer): Buffer[][] {
  const out: Buffer[][] = [];
  for (let cut = 0; cut <= stream.length; cut++) out.push([stream.subarray(0, cut), stream.subarray(cut)]);
  out.push([...stream].map((byte) => Buffer.from([byte])));
  return out;
}

test('RequestReader: the same requests and payloads at every split', () => {
  const stream = hex(
    [
      '25609513 0000 0000 00000000 00000001 0000000000000200 00000200', // READ 512 @ 512
      '25609513 0001 0001 00000000 00000002 0000000000000000 00000004 cafef00d', // WRITE+FUA 4 @ 0
      '25609513 0000 0003 00000000 00000003 0000000000000000 00000000', // FLUSH
      '25609513 0000 0001 00000000 00000004 0000000000000400 00000000', // zero-length WRITE
      '25609513 0000 0002 00000000 00000005 0000000000000000 00000000', // DISC
    ].join(''),
  );
  const expected = [
    { type: 0, flags: 0, cookieLo: 1, offset: 512, length: 512, payload: null },
    { type: 1, flags: 1, cookieLo: 2, offset: 0, length: 4, payload: 'cafef00d' },
    { type: 3, flags: 0, cookieLo: 3, offset: 0, length: 0, payload: null },
    { type: 1, flags: 0, cookieLo: 4, offset: 1024, length: 0, payload: '' },
    { type: 2, flags: 0, cookieLo: 5, offset: 0, length: 0, payload: null },
  ];
  for (const chunks of splits(stream)) {
    const seen: unknown[] = [];
    const reader = new RequestReader(
      {
        onRequest: (h, payload) =>
          seen.push({
            type: h.type,
            flags: h.flags,
            cookieLo: h.cookieLo,
            offset: h.offset,
            length: h.length,
            payload: payload && Buffer.concat(payload).toString('hex'),
          }),
        onFramingError: (kind) => assert.fail(kind),
      },
      1 << 20,
    );
    for (const chunk of chunks) reader.push(Buffer.from(chunk));
    assert.deepEqual(seen, expected);
    assert.equal(reader.buffered, 0);
  }
});

test('RequestReader stops at a bad magic or an oversized write, before taking its payload', () => {
  for (const [stream, kind] of [
    [hex('25609514 0000 0000 00000000 00000001 0000000000000000 00000200'), 'bad-magic'],
    [hex('25609513 0000 0001 00000000 00000001 0000000000000000 00001001'), 'write-too-long'],
  ] as const) {
    const errors: string[] = [];
    let requests = 0;
    const reader = new RequestReader({ onRequest: () => requests++, onFramingError: (k) => errors.push(k) }, 4096);
    reader.push(Buffer.concat([stream, hex('25609513 0000 0003 00000000 00000003 0000000000000000 00000000')]));
    assert.deepEqual(errors, [kind]);
    assert.equal(requests, 0);
    assert.ok(reader.stopped);
    assert.equal(reader.buffered, 0);
  }
});

test('ReplyReader: simple replies with read data and structured chunks at every split', () => {
  const stream = hex(
    [
      '67446698 00000000 00000000 00000001 aabbccdd', // read of 4, no error
      '67446698 00000005 00000000 00000002', // error: no data follows
      '668e33ef 0000 0001 00000000 00000003 0000000a 0000000000000200 1122', // OFFSET_DATA at 0x200, 2 bytes
      '668e33ef 0001 0000 00000000 00000003 00000000', // NONE, DONE
      '67446698 00000000 00000000 00000004', // a flush: no data
    ].join(''),
  );
  for (const chunks of splits(stream)) {
    const seen: unknown[] = [];
    const read1 = new Uint8Array(4);
    const read3 = new Uint8Array(4);
    const reader = new ReplyReader(
      {
        simpleReplyTarget: (_hi, lo) =>
          lo === 1 ? { length: 4, target: { iov: [read1], at: 0 } } : lo === 4 ? { length: 0, target: { iov: [], at: 0 } } : undefined,
        onSimpleReply: (error, _hi, lo) => seen.push(['simple', error, lo]),
        offsetDataTarget: (_h: ChunkHeader, offset) => ({ iov: [read3], at: offset - 0x200 }),
        onOffsetData: (h: ChunkHeader, offset, length) => seen.push(['data', h.cookieLo, offset, length]),
        onChunk: (h: ChunkHeader, payload) => seen.push(['chunk', h.flags, h.type, h.cookieLo, payload.toString('hex')]),
        onFramingError: (kind) => assert.fail(kind),
      },
      1 << 20,
    );
    for (const chunk of chunks) reader.push(Buffer.from(chunk));
    assert.deepEqual(seen, [
      ['simple', 0, 1],
      ['simple', 5, 2],
      ['data', 3, 0x200, 2],
      ['chunk', 1, 0, 3, ''],
      ['simple', 0, 4],
    ]);
    assert.equal(Buffer.from(read1).toString('hex'), 'aabbccdd');
    assert.equal(Buffer.from(read3).toString('hex'), '11220000');
  }
});

test('ReplyReader stops at a bad magic, an oversized chunk, an unknown cookie or a short OFFSET_DATA chunk', () => {
  for (const [stream, kind] of [
    [hex('67446699 00000000 00000000 00000001'), 'bad-magic'],
    [hex('668e33ef 0000 0005 00000000 00000003 00100001'), 'chunk-too-long'],
    [hex('67446698 00000000 00000000 00000009'), 'unknown-cookie'],
    [hex('668e33ef 0000 0001 00000000 00000003 00000004'), 'bad-chunk'],
  ] as const) {
    const errors: string[] = [];
    const reader = new ReplyReader(
      {
        simpleReplyTarget: () => undefined,
        onSimpleReply: () => assert.fail('no reply expected'),
        offsetDataTarget: () => assert.fail('no data expected'),
        onOffsetData: () => assert.fail('no data expected'),
        onChunk: () => assert.fail('no chunk expected'),
        onFramingError: (k) => errors.push(k),
      },
      1 << 20,
    );
    reader.push(stream);
    assert.deepEqual(errors, [kind]);
    assert.ok(reader.stopped);
  }
});
