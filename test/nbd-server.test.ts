// The NBD server against a raw client: what the document asks of each option and command, what
// malformed input gets (the protocol's error, the connection still in step, or a dropped
// connection where the document says so), and that each refusal is counted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { BlockDevice } from '../src/block/types.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { createVolatileCache } from '../src/block/volatile-cache.ts';
import { ClientFlag, Command, CommandFlag, Info, Option, OptionReply, ReplyType, TransmissionFlag } from '../src/nbd/constants.ts';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOptionRequest } from '../src/nbd/handshake.ts';
import { encodeRequest, type RequestHeader } from '../src/nbd/transmission.ts';
import { loadTlsConfig } from '../src/nbd-server/tls.ts';
import { RawClient, readU32, readU64, startTestServer } from './nbd-server-helpers.ts';

const MiB = 1024 * 1024;

function request(type: number, cookie: number, offset = 0, length = 0, flags = 0): Buffer {
  const h: RequestHeader = { type, flags, cookieHi: 0xabcd0000, cookieLo: cookie, offset, length };
  return encodeRequest(h);
}

test('option haggling: LIST, INFO, errors for bad options, and the connection stays in step until GO', async () => {
  const srv = await startTestServer([
    { name: 'disk', description: 'a RAM disk' },
    { name: 'ro', readOnly: true },
  ]);
  try {
    const c = await RawClient.connect(srv.socketPath);
    const flags = await c.greeting();
    assert.equal(flags, 3, 'FIXED_NEWSTYLE | NO_ZEROES');

    c.send(encodeOptionRequest(Option.NBD_OPT_LIST));
    const list = await c.optionReplies();
    assert.deepEqual(
      list.map((r) => r.type),
      [OptionReply.NBD_REP_SERVER, OptionReply.NBD_REP_SERVER, OptionReply.NBD_REP_ACK],
    );
    assert.equal(list[0]!.data.toString('latin1', 4, 8), 'disk');

    c.send(encodeOptionRequest(Option.NBD_OPT_INFO, encodeInfoRequest('disk', [Info.NBD_INFO_NAME, Info.NBD_INFO_DESCRIPTION, Info.NBD_INFO_BLOCK_SIZE])));
    const info = await c.optionReplies();
    const byType = new Map(info.filter((r) => r.type === OptionReply.NBD_REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
    assert.equal(readU64(byType.get(Info.NBD_INFO_EXPORT)!, 2), 4 * MiB);
    assert.equal(byType.get(Info.NBD_INFO_NAME)!.toString('utf8', 2), 'disk');
    assert.equal(byType.get(Info.NBD_INFO_DESCRIPTION)!.toString('utf8', 2), 'a RAM disk');
    assert.equal(readU32(byType.get(Info.NBD_INFO_BLOCK_SIZE)!, 2), 512, 'minimum block size: the disk logical block');

    const errors: [string, Buffer, number][] = [
      ['unknown option', encodeOptionRequest(99), OptionReply.NBD_REP_ERR_UNSUP],
      ['unknown export', encodeOptionRequest(Option.NBD_OPT_INFO, encodeInfoRequest('nope')), OptionReply.NBD_REP_ERR_UNKNOWN],
      ['truncated INFO data', encodeOptionRequest(Option.NBD_OPT_INFO, Buffer.from('00000009', 'hex')), OptionReply.NBD_REP_ERR_INVALID],
      ['LIST with data', encodeOptionRequest(Option.NBD_OPT_LIST, Buffer.from('x')), OptionReply.NBD_REP_ERR_INVALID],
      [
        'SET_META_CONTEXT before structured replies',
        encodeOptionRequest(Option.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation'])),
        OptionReply.NBD_REP_ERR_INVALID,
      ],
      ['STARTTLS without TLS configured', encodeOptionRequest(Option.NBD_OPT_STARTTLS), OptionReply.NBD_REP_ERR_UNSUP],
      ['option data above the limit', encodeOptionRequest(Option.NBD_OPT_INFO, Buffer.alloc(70_000)), OptionReply.NBD_REP_ERR_TOO_BIG],
    ];
    for (const [what, bytes, expected] of errors) {
      c.send(bytes);
      const replies = await c.optionReplies();
      assert.equal(replies.length, 1, what);
      assert.equal(replies[0]!.type, expected, what);
    }
    assert.equal(srv.server.counters.optionErrors, errors.length);
    assert.equal(srv.server.counters.optionsTooBig, 1);

    // Still in step: GO works and the export serves.
    c.send(encodeOptionRequest(Option.NBD_OPT_GO, encodeInfoRequest('ro')));
    const go = await c.optionReplies();
    assert.equal(go.at(-1)!.type, OptionReply.NBD_REP_ACK);
    const exportInfo = go.find((r) => r.type === OptionReply.NBD_REP_INFO && r.data.readUInt16BE(0) === Info.NBD_INFO_EXPORT)!;
    assert.ok((exportInfo.data.readUInt16BE(10) & TransmissionFlag.NBD_FLAG_READ_ONLY) !== 0);
    c.send(request(Command.NBD_CMD_READ, 1, 0, 512));
    const read = await c.simpleReply(512);
    assert.equal(read.error, 0);
    c.destroy();
  } finally {
    await srv.close();
  }
});

test('handshake errors the document answers by closing: oldstyle client flags, EXPORT_NAME of an unknown export, bad option magic', async () => {
  const srv = await startTestServer([{ name: 'disk' }]);
  try {
    const a = await RawClient.connect(srv.socketPath);
    await a.greeting(0); // not fixed newstyle
    assert.ok(await a.waitClosed());

    const b = await RawClient.connect(srv.socketPath);
    await b.greeting();
    b.send(encodeOptionRequest(Option.NBD_OPT_EXPORT_NAME, Buffer.from('nope')));
    assert.ok(await b.waitClosed());

    const c = await RawClient.connect(srv.socketPath);
    await c.greeting();
    const bad = encodeOptionRequest(Option.NBD_OPT_LIST);
    bad[0] = 0;
    c.send(bad);
    assert.ok(await c.waitClosed());
    assert.equal(srv.server.counters.handshakeErrors, 3);

    // NBD_OPT_EXPORT_NAME of a known export: size, flags, and no zeroes (we offered NO_ZEROES).
    const d = await RawClient.connect(srv.socketPath);
    await d.greeting();
    d.send(encodeOptionRequest(Option.NBD_OPT_EXPORT_NAME, Buffer.from('disk')));
    const reply = await d.read(10);
    assert.equal(readU64(reply, 0), 4 * MiB);
    d.send(request(Command.NBD_CMD_FLUSH, 5));
    assert.deepEqual(await d.simpleReply(), { error: 0, cookie: 5, data: Buffer.alloc(0) });
    d.send(Buffer.concat([encodeOptionRequest(Option.NBD_OPT_ABORT), Buffer.alloc(12)])); // 28 bytes of not-a-request
    assert.ok(await d.waitClosed(), 'a bad request magic drops the connection');
  } finally {
    await srv.close();
  }
});

test('transmission: data written reads back; malformed requests get their error and the stream stays in step', async () => {
  const srv = await startTestServer([{ name: 'disk', device: createRamDisk(64 * MiB) }]);
  try {
    const c = await RawClient.connect(srv.socketPath);
    const { size, flags } = await c.go('disk');
    assert.equal(size, 64 * MiB);
    assert.ok((flags & TransmissionFlag.NBD_FLAG_CAN_MULTI_CONN) !== 0);
    const data = randomBytes(8192);
    c.send(Buffer.concat([request(Command.NBD_CMD_WRITE, 1, 65536, data.length, CommandFlag.NBD_CMD_FLAG_FUA), data]));
    assert.equal((await c.simpleReply()).error, 0);

    const refusals: [string, Buffer, number][] = [
      ['write past the end', Buffer.concat([request(Command.NBD_CMD_WRITE, 2, size - 512, 1024), Buffer.alloc(1024)]), 28],
      ['read past the end', request(Command.NBD_CMD_READ, 3, size, 512), 22],
      ['offset beyond 2^53', request(Command.NBD_CMD_READ, 4, 2 ** 60, 512), 22],
      ['unaligned read', request(Command.NBD_CMD_READ, 5, 100, 512), 22],
      ['unaligned write (its data still skipped)', Buffer.concat([request(Command.NBD_CMD_WRITE, 6, 0, 100), Buffer.alloc(100, 0xee)]), 22],
      ['unknown command', request(42, 7), 22],
      ['unknown flag', request(Command.NBD_CMD_READ, 8, 0, 512, 1 << 9), 22],
      ['NO_HOLE on a read', request(Command.NBD_CMD_READ, 9, 0, 512, CommandFlag.NBD_CMD_FLAG_NO_HOLE), 22],
      ['DF without structured replies', request(Command.NBD_CMD_READ, 10, 0, 512, CommandFlag.NBD_CMD_FLAG_DF), 22],
      ['flush with an offset', request(Command.NBD_CMD_FLUSH, 11, 512, 0), 22],
      ['block status without a meta context', request(Command.NBD_CMD_BLOCK_STATUS, 12, 0, 512), 22],
      ['read above the maximum block size', request(Command.NBD_CMD_READ, 13, 0, 33 * MiB), 22],
    ];
    for (const [what, bytes, errno] of refusals) {
      c.send(bytes);
      const r = await c.simpleReply();
      assert.equal(r.error, errno, what);
      assert.equal(r.cookie, bytes.readUInt32BE(12), what);
    }
    const counters = srv.server.counters;
    assert.equal(
      counters.outOfRange + counters.unaligned + counters.unknownCommand + counters.badFlags + counters.notNegotiated + counters.tooLarge,
      refusals.length,
    );
    assert.equal(counters.outOfRange, 3);
    assert.equal(counters.unaligned, 2);
    assert.equal(counters.tooLarge, 1);

    // Zero-length requests are no-ops that succeed (the document leaves them open).
    c.send(request(Command.NBD_CMD_READ, 20, 4096, 0));
    assert.deepEqual(await c.simpleReply(), { error: 0, cookie: 20, data: Buffer.alloc(0) });
    c.send(request(Command.NBD_CMD_WRITE, 21, 4096, 0));
    assert.equal((await c.simpleReply()).error, 0);

    // Still in step, and nothing the refused writes carried landed.
    c.send(request(Command.NBD_CMD_READ, 30, 65536, data.length));
    const back = await c.simpleReply(data.length);
    assert.deepEqual(back.data, data);
    c.send(request(Command.NBD_CMD_READ, 31, 0, 512));
    assert.deepEqual((await c.simpleReply(512)).data, Buffer.alloc(512));

    // Trim and write zeroes (NO_HOLE too) read back as zeroes.
    c.send(request(Command.NBD_CMD_TRIM, 40, 65536, 4096));
    c.send(request(Command.NBD_CMD_WRITE_ZEROES, 41, 65536 + 4096, 2048, CommandFlag.NBD_CMD_FLAG_NO_HOLE));
    c.send(request(Command.NBD_CMD_WRITE_ZEROES, 42, 65536 + 6144, 2048, CommandFlag.NBD_CMD_FLAG_FAST_ZERO | CommandFlag.NBD_CMD_FLAG_FUA));
    c.send(request(Command.NBD_CMD_CACHE, 43, 0, 4096));
    const cookies = new Set<number>();
    for (let i = 0; i < 4; i++) {
      const r = await c.simpleReply();
      assert.equal(r.error, 0);
      cookies.add(r.cookie);
    }
    assert.deepEqual([...cookies].sort(), [40, 41, 42, 43]);
    c.send(request(Command.NBD_CMD_READ, 44, 65536, 8192));
    assert.deepEqual((await c.simpleReply(8192)).data, Buffer.alloc(8192));

    c.send(request(Command.NBD_CMD_DISC, 50));
    assert.ok(await c.waitClosed(), 'NBD_CMD_DISC ends the connection');
    assert.equal(c.buffered, 0, 'no reply to NBD_CMD_DISC');
  } finally {
    await srv.close();
  }
});

test('pipelined requests, even one byte at a time, are all answered with their own cookies', async () => {
  const srv = await startTestServer([{ name: 'disk' }]);
  try {
    const c = await RawClient.connect(srv.socketPath);
    await c.go('disk');
    const blocks = Array.from({ length: 64 }, () => randomBytes(4096));
    const stream = Buffer.concat(blocks.map((b, i) => Buffer.concat([request(Command.NBD_CMD_WRITE, i, i * 8192, 4096), b])));
    for (let at = 0; at < stream.length; at += 997) c.send(stream.subarray(at, at + 997));
    const written = new Set<number>();
    for (let i = 0; i < blocks.length; i++) {
      const r = await c.simpleReply();
      assert.equal(r.error, 0);
      written.add(r.cookie);
    }
    assert.equal(written.size, blocks.length);
    const reads = Buffer.concat(blocks.map((_b, i) => request(Command.NBD_CMD_READ, 1000 + i, i * 8192, 4096)));
    for (const byte of reads) c.send(Buffer.from([byte]));
    for (let i = 0; i < blocks.length; i++) {
      const r = await c.simpleReply(4096);
      assert.deepEqual(r.data, blocks[r.cookie - 1000]);
    }
  } finally {
    await srv.close();
  }
});

test('read-only export: writes, trims and zeroes are EPERM; FUA, not offered there, is EINVAL', async () => {
  const srv = await startTestServer([{ name: 'ro', readOnly: true }]);
  try {
    const c = await RawClient.connect(srv.socketPath);
    const { flags } = await c.go('ro');
    assert.equal(flags & TransmissionFlag.NBD_FLAG_SEND_FUA, 0);
    c.send(Buffer.concat([request(Command.NBD_CMD_WRITE, 1, 0, 512, CommandFlag.NBD_CMD_FLAG_FUA), Buffer.alloc(512, 1)]));
    assert.equal((await c.simpleReply()).error, 1);
    c.send(request(Command.NBD_CMD_TRIM, 2, 0, 512));
    assert.equal((await c.simpleReply()).error, 1);
    c.send(request(Command.NBD_CMD_WRITE_ZEROES, 3, 0, 512));
    assert.equal((await c.simpleReply()).error, 1);
    c.send(request(Command.NBD_CMD_READ, 4, 0, 512, CommandFlag.NBD_CMD_FLAG_FUA));
    assert.equal((await c.simpleReply()).error, 22);
    c.send(request(Command.NBD_CMD_READ, 5, 0, 512));
    assert.deepEqual((await c.simpleReply(512)).data, Buffer.alloc(512), 'nothing was written');
    assert.equal(srv.server.counters.readOnlyWrites, 3);
  } finally {
    await srv.close();
  }
});

test('structured replies: holes come back as OFFSET_HOLE, data as OFFSET_DATA; block status; errors as ERROR chunks', async () => {
  const device = createRamDisk(4 * MiB, { name: 'ram:sparse' });
  const srv = await startTestServer([{ name: 'disk', device }]);
  try {
    const data = randomBytes(4096);
    await device.writev(8192, [data]);
    const c = await RawClient.connect(srv.socketPath);
    await c.go('disk', { structured: true, meta: true });

    c.send(request(Command.NBD_CMD_READ, 1, 0, 16384));
    const chunks = [];
    for (;;) {
      const ch = await c.chunk();
      chunks.push(ch);
      if ((ch.flags & 1) !== 0) break;
    }
    const assembled = Buffer.alloc(16384, 0xff);
    for (const ch of chunks) {
      assert.equal(ch.cookie, 1);
      const offset = readU64(ch.payload, 0);
      if (ch.type === ReplyType.NBD_REPLY_TYPE_OFFSET_HOLE) assembled.fill(0, offset, offset + readU32(ch.payload, 8));
      else if (ch.type === ReplyType.NBD_REPLY_TYPE_OFFSET_DATA) ch.payload.copy(assembled, offset, 8);
      else assert.fail(`unexpected chunk type ${ch.type}`);
    }
    assert.ok(
      chunks.some((ch) => ch.type === ReplyType.NBD_REPLY_TYPE_OFFSET_HOLE),
      'the unwritten parts are sent as holes',
    );
    const expected = Buffer.alloc(16384);
    data.copy(expected, 8192);
    assert.deepEqual(assembled, expected);

    // DF: one content chunk, holes included as zeroes.
    c.send(request(Command.NBD_CMD_READ, 2, 0, 16384, CommandFlag.NBD_CMD_FLAG_DF));
    const df = await c.chunk();
    assert.equal(df.type, ReplyType.NBD_REPLY_TYPE_OFFSET_DATA);
    assert.equal(df.flags & 1, 1);
    assert.deepEqual(df.payload.subarray(8), expected);

    c.send(request(Command.NBD_CMD_BLOCK_STATUS, 3, 0, 16384));
    const bs = await c.chunk();
    assert.equal(bs.type, ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS);
    assert.equal(readU32(bs.payload, 0), 1, 'the context id given at SET_META_CONTEXT');
    const descriptors = [];
    for (let at = 4; at < bs.payload.length; at += 8) descriptors.push([readU32(bs.payload, at), readU32(bs.payload, at + 4)]);
    assert.deepEqual(descriptors, [
      [8192, 3],
      [4096, 0],
      [4096, 3],
    ]);
    c.send(request(Command.NBD_CMD_BLOCK_STATUS, 4, 0, 16384, CommandFlag.NBD_CMD_FLAG_REQ_ONE));
    assert.equal((await c.chunk()).payload.length, 12, 'REQ_ONE: one descriptor');

    c.send(request(Command.NBD_CMD_READ, 5, 4 * MiB, 512));
    const err = await c.chunk();
    assert.equal(err.type, ReplyType.NBD_REPLY_TYPE_ERROR);
    assert.equal(readU32(err.payload, 0), 22);
    c.send(request(Command.NBD_CMD_READ, 6, 8192, 0));
    const none = await c.chunk();
    assert.deepEqual([none.type, none.flags, none.cookie], [ReplyType.NBD_REPLY_TYPE_NONE, 1, 6]);
  } finally {
    await srv.close();
  }
});

test('stream errors drop the connection: a bad request magic, a write above the maximum payload', async () => {
  const srv = await startTestServer([{ name: 'disk' }]);
  try {
    const a = await RawClient.connect(srv.socketPath);
    await a.go('disk');
    const bad = request(Command.NBD_CMD_READ, 1, 0, 512);
    bad.writeUInt8(bad[3]! ^ 1, 3);
    a.send(bad);
    assert.ok(await a.waitClosed());

    const b = await RawClient.connect(srv.socketPath);
    await b.go('disk');
    b.send(request(Command.NBD_CMD_WRITE, 2, 0, 64 * MiB));
    assert.ok(await b.waitClosed());
    assert.equal(srv.server.counters.framingErrors, 2);
    assert.ok(
      srv.logLines.some((l) => l.includes('write of 67108864 bytes')),
      srv.logLines.join('\n'),
    );

    // Others are still served.
    const c = await RawClient.connect(srv.socketPath);
    await c.go('disk');
    c.send(request(Command.NBD_CMD_FLUSH, 3));
    assert.equal((await c.simpleReply()).error, 0);
  } finally {
    await srv.close();
  }
});

test('multi-conn: a flush on one connection makes the writes acknowledged on another durable', async () => {
  const base = createRamDisk(4 * MiB, { name: 'ram:base' });
  const cache = createVolatileCache(base);
  const srv = await startTestServer([{ name: 'disk', device: cache }]);
  try {
    const writer = await RawClient.connect(srv.socketPath);
    const flusher = await RawClient.connect(srv.socketPath);
    await writer.go('disk');
    await flusher.go('disk');
    const data = randomBytes(4096);
    writer.send(Buffer.concat([request(Command.NBD_CMD_WRITE, 1, 4096, 4096), data]));
    assert.equal((await writer.simpleReply()).error, 0);
    const onBase = Buffer.alloc(4096);
    await base.readv(4096, [onBase]);
    assert.notDeepEqual(onBase, data, 'before the flush the write sits in the volatile cache');
    flusher.send(request(Command.NBD_CMD_FLUSH, 2));
    assert.equal((await flusher.simpleReply()).error, 0);
    await base.readv(4096, [onBase]);
    assert.deepEqual(onBase, data);
  } finally {
    await srv.close();
    await base.close();
  }
});

test('a client that disconnects with replies owed leaves the server serving the others', async () => {
  const srv = await startTestServer([{ name: 'disk', device: createRamDisk(64 * MiB) }]);
  try {
    const quitter = await RawClient.connect(srv.socketPath);
    await quitter.go('disk');
    const reads = Buffer.concat(Array.from({ length: 32 }, (_x, i) => request(Command.NBD_CMD_READ, i, i * MiB, MiB)));
    quitter.send(reads);
    await quitter.read(100); // the first reply has started
    quitter.destroy();
    const other = await RawClient.connect(srv.socketPath);
    await other.go('disk');
    other.send(request(Command.NBD_CMD_READ, 7, 0, 4096));
    assert.equal((await other.simpleReply(4096)).error, 0);
    const deadline = Date.now() + 5000;
    while (srv.server.connectionCount > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(srv.server.connectionCount, 1);
  } finally {
    await srv.close();
  }
});

test('unknown client flags are refused at once', async () => {
  const srv = await startTestServer([{ name: 'disk' }]);
  try {
    const c = await RawClient.connect(srv.socketPath);
    await c.greeting(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | (1 << 7));
    assert.ok(await c.waitClosed());
    assert.equal(srv.server.counters.handshakeErrors, 1);
  } finally {
    await srv.close();
  }
});

test('--tls require: every option but STARTTLS and ABORT is answered NBD_REP_ERR_TLS_REQD; EXPORT_NAME closes', async () => {
  const holder = await startTestServer([]);
  const pskFile = `${holder.dir}/keys.psk`;
  writeFileSync(pskFile, `alice:${randomBytes(16).toString('hex')}\n`);
  const srv = await startTestServer([{ name: 'disk' }], loadTlsConfig('require', { psk: pskFile }));
  try {
    const c = await RawClient.connect(srv.socketPath);
    await c.greeting();
    for (const option of [Option.NBD_OPT_LIST, Option.NBD_OPT_STRUCTURED_REPLY]) {
      c.send(encodeOptionRequest(option));
      assert.equal((await c.optionReplies())[0]!.type, OptionReply.NBD_REP_ERR_TLS_REQD);
    }
    c.send(encodeOptionRequest(Option.NBD_OPT_GO, encodeInfoRequest('disk')));
    assert.equal((await c.optionReplies())[0]!.type, OptionReply.NBD_REP_ERR_TLS_REQD);
    c.send(encodeOptionRequest(Option.NBD_OPT_STARTTLS, Buffer.from('x')));
    assert.equal((await c.optionReplies())[0]!.type, OptionReply.NBD_REP_ERR_INVALID, 'STARTTLS takes no data');
    c.send(encodeOptionRequest(Option.NBD_OPT_EXPORT_NAME, Buffer.from('disk')));
    assert.ok(await c.waitClosed());

    // A client that says STARTTLS and then speaks plain bytes fails the TLS handshake, and is counted.
    const d = await RawClient.connect(srv.socketPath);
    await d.greeting();
    d.send(encodeOptionRequest(Option.NBD_OPT_STARTTLS));
    assert.equal((await d.optionReplies())[0]!.type, OptionReply.NBD_REP_ACK);
    d.send(Buffer.alloc(64, 0x41));
    assert.ok(await d.waitClosed());
    assert.equal(srv.server.counters.tlsFailures, 1);
  } finally {
    await srv.close();
    await holder.close();
  }
});

test('write payloads held by a slow store survive the reuse of read memory', async () => {
  // A store that looks at the data only when it completes, 20 ms later: if the memory a payload
  // was read into were reused meanwhile, later requests' bytes would land instead.
  const ram = createRamDisk(16 * MiB, { name: 'ram:slow' });
  const slow: BlockDevice = {
    ...ram,
    name: 'slow',
    info: ram.info,
    writev: (offset, iov, flags) => new Promise((resolve, reject) => setTimeout(() => ram.writev(offset, iov, flags).then(resolve, reject), 20)),
  };
  const srv = await startTestServer([{ name: 'disk', device: slow }]);
  try {
    const c = await RawClient.connect(srv.socketPath);
    await c.go('disk');
    const count = 240; // 15 MiB of payload in flight at once: many slabs' worth
    const size = 65536;
    const blocks = Array.from({ length: count }, () => randomBytes(size));
    for (let i = 0; i < count; i += 16) {
      c.send(Buffer.concat(blocks.slice(i, i + 16).flatMap((b, j) => [request(Command.NBD_CMD_WRITE, i + j, (i + j) * size, size), b])));
    }
    for (let i = 0; i < count; i++) assert.equal((await c.simpleReply()).error, 0);
    const back = Buffer.alloc(count * size);
    await ram.readv(0, [back]);
    for (let i = 0; i < count; i++) assert.ok(back.subarray(i * size, (i + 1) * size).equals(blocks[i]!), `block ${i}`);
  } finally {
    await srv.close();
  }
});
