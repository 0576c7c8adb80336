// A server that breaks the protocol must not break the client: a scripted fake NBD server (the
// codec's server-side encoders for the honest parts, hand-written bytes for the broken ones) sends
// data outside the request, short replies, bad magics, unknown cookies, oversized chunks and error
// chunks. The client drops the connection and counts it, or fails that request with the right
// errno; it never writes outside the caller's buffer, never crashes, and never hands back a read
// with bytes the server did not send.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { Command, HandshakeFlag, NBD_REPLY_FLAG_DONE, Option, OptionReply, REQUEST_HEADER_LENGTH, ReplyType, TransmissionFlag } from '../src/nbd/constants.ts';
import {
  encodeInfoExport,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerGreeting,
  readClientFlags,
  readOptionRequestHeader,
} from '../src/nbd/handshake.ts';
import { decodeRequestHeader, encodeErrorChunk, newRequestHeader, writeChunkHeader } from '../src/nbd/transmission.ts';
import type { RequestHeader } from '../src/nbd/transmission.ts';
import { ByteQueue } from '../src/nbd/wire.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import type { NbdBlockDevice } from '../src/nbd-client/device.ts';
import { BlockError, Errno } from '../src/internal/errors.ts';
import { scratchDir } from './nbd-client-helpers.ts';

const SIZE = 1 << 20;

/** Answers one request by writing whatever it likes to the socket. */
type Behaviour = (r: Readonly<RequestHeader>, socket: net.Socket) => void;

async function fakeServer(path: string, behave: Behaviour): Promise<{ connections: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const q = new ByteQueue();
    let phase: 'flags' | 'options' | 'transmission' = 'flags';
    const req = newRequestHeader();
    socket.write(encodeServerGreeting(HandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE | HandshakeFlag.NBD_FLAG_NO_ZEROES));
    socket.on('data', (chunk: Buffer) => {
      q.push(chunk);
      for (;;) {
        if (phase === 'flags') {
          if (readClientFlags(q) === undefined) return;
          phase = 'options';
        } else if (phase === 'options') {
          if (q.length < 16) return;
          const length = q.peekU32(12)!;
          if (q.length < 16 + length) return;
          const h = readOptionRequestHeader(q)!;
          q.skip(h.length);
          if (h.option === Option.NBD_OPT_SET_META_CONTEXT)
            socket.write(encodeOptionReply(h.option, OptionReply.NBD_REP_META_CONTEXT, encodeMetaContextReply(7, 'base:allocation')));
          if (h.option === Option.NBD_OPT_GO) {
            socket.write(
              encodeOptionReply(
                h.option,
                OptionReply.NBD_REP_INFO,
                encodeInfoExport(SIZE, TransmissionFlag.NBD_FLAG_HAS_FLAGS | TransmissionFlag.NBD_FLAG_SEND_FLUSH),
              ),
            );
            phase = 'transmission';
          }
          socket.write(encodeOptionReply(h.option, OptionReply.NBD_REP_ACK));
        } else {
          const bytes = q.take(REQUEST_HEADER_LENGTH);
          if (bytes === undefined) return;
          decodeRequestHeader(bytes, 0, req);
          if (req.type === Command.NBD_CMD_WRITE && q.skip(req.length) !== req.length) throw new Error('fake: write payload split (not needed here)');
          behave(req, socket);
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

function chunk(r: Readonly<RequestHeader>, flags: number, type: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(20 + payload.length);
  writeChunkHeader(out, 0, flags, type, r.cookieHi, r.cookieLo, payload.length);
  payload.copy(out, 20);
  return out;
}

/** OFFSET_DATA for [offset, offset+length) filled with `fill`. */
function data(r: Readonly<RequestHeader>, flags: number, offset: number, length: number, fill: number): Buffer {
  const payload = Buffer.alloc(8 + length, fill);
  payload.writeUInt32BE(Math.floor(offset / 2 ** 32), 0);
  payload.writeUInt32BE(offset >>> 0, 4);
  return chunk(r, flags, ReplyType.NBD_REPLY_TYPE_OFFSET_DATA, payload);
}

async function withFake(name: string, behave: Behaviour, fn: (dev: NbdBlockDevice, connections: () => number) => Promise<void>): Promise<void> {
  const { dir, drop } = scratchDir(name);
  const fake = await fakeServer(join(dir, 'sock'), behave);
  try {
    const dev = (await openBlockDevice(`nbd+unix:///?socket=${join(dir, 'sock')}&reconnect-timeout=2`)) as NbdBlockDevice;
    try {
      await fn(dev, fake.connections);
    } finally {
      await dev.close();
    }
  } finally {
    await fake.close();
    drop();
  }
}

/** A 4 KiB read into the middle of a larger buffer whose edges must stay untouched. */
async function guardedRead(dev: NbdBlockDevice): Promise<{ result: Promise<void>; guard: () => void }> {
  const whole = Buffer.alloc(3 * 4096, 0x5a);
  const result = dev.readv(4096, [whole.subarray(4096, 8192)]);
  return {
    result,
    guard: () => {
      assert.ok(
        whole.subarray(0, 4096).every((b) => b === 0x5a),
        'nothing written before the buffer',
      );
      assert.ok(
        whole.subarray(8192).every((b) => b === 0x5a),
        'nothing written after the buffer',
      );
    },
  };
}

async function failsWith(p: Promise<unknown>, code: string, errno: number, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof BlockError, String(err));
    assert.equal(err.code, code, err.message);
    assert.equal(err.errno, errno);
    assert.match(err.message, message);
    return true;
  });
}

test('data outside the read: the connection is dropped and counted, the read fails after its resends, the buffer edges untouched', async () => {
  await withFake(
    'outside',
    (r, s) => {
      if (r.type === Command.NBD_CMD_READ) s.write(data(r, NBD_REPLY_FLAG_DONE, r.offset + r.length, 4096, 0xee));
    },
    async (dev, connections) => {
      const { result, guard } = await guardedRead(dev);
      await failsWith(result, 'BLK_ERR_NBD_CONNECTION', Errno.EIO, /failed on 8 connections, the last: .*broke the protocol: data for/); // MAX_RESENDS in device.ts
      guard();
      assert.ok(dev.counters.protocolErrors >= 2, `counted (${dev.counters.protocolErrors})`);
      assert.ok(connections() >= 2, 'reconnected to try again');
    },
  );
});

test('a read the server says is DONE but covered only half of fails with EIO; the connection stays usable', async () => {
  let reads = 0;
  await withFake(
    'short',
    (r, s) => {
      if (r.type !== Command.NBD_CMD_READ) return;
      reads++;
      if (reads === 1) s.write(data(r, NBD_REPLY_FLAG_DONE, r.offset, r.length / 2, 0xee));
      else s.write(data(r, NBD_REPLY_FLAG_DONE, r.offset, r.length, 0x11));
    },
    async (dev, connections) => {
      const { result, guard } = await guardedRead(dev);
      await failsWith(result, 'BLK_ERR_NBD_PROTOCOL', Errno.EIO, /covered 2048 of 4096 bytes/);
      guard();
      const back = Buffer.alloc(4096);
      await dev.readv(0, [back]);
      assert.ok(
        back.every((b) => b === 0x11),
        'the next read is whole',
      );
      assert.equal(connections(), 1);
    },
  );
});

test('bad magic, unknown cookie and an oversized chunk each drop the connection before anything is buffered', async () => {
  const cases: [string, Behaviour, RegExp][] = [
    ['magic', (_r, s) => void s.write(Buffer.from('deadbeef000000000000000000000000', 'hex')), /magic 0xdeadbeef/],
    [
      'cookie',
      (r, s) => void s.write(chunk({ ...r, cookieLo: r.cookieLo + 1000 }, NBD_REPLY_FLAG_DONE, ReplyType.NBD_REPLY_TYPE_NONE, Buffer.alloc(0))),
      /not in flight/,
    ],
    [
      'huge',
      (r, s) => {
        const h = Buffer.alloc(20);
        writeChunkHeader(h, 0, NBD_REPLY_FLAG_DONE, ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS, r.cookieHi, r.cookieLo, 0xfffffff0);
        s.write(h);
      },
      /reply chunk of 4294967280 bytes/,
    ],
  ];
  for (const [name, behave, why] of cases) {
    await withFake(
      name,
      (r, s) => {
        if (r.type === Command.NBD_CMD_FLUSH) behave(r, s);
      },
      async (dev) => {
        await failsWith(dev.flush(), 'BLK_ERR_NBD_CONNECTION', Errno.EIO, why);
        assert.ok(dev.counters.protocolErrors >= 1, name);
      },
    );
  }
});

test("the server's error chunks fail the request with the errno they carry, and the message it sent", async () => {
  await withFake(
    'errors',
    (r, s) => {
      if (r.type === Command.NBD_CMD_WRITE) s.write(encodeErrorChunk(NBD_REPLY_FLAG_DONE, r.cookieHi, r.cookieLo, 28, 'disk full'));
      if (r.type === Command.NBD_CMD_READ) s.write(encodeErrorChunk(NBD_REPLY_FLAG_DONE, r.cookieHi, r.cookieLo, 5, 'media error', r.offset));
    },
    async (dev, connections) => {
      await failsWith(
        dev.writev(0, [Buffer.alloc(4096)]),
        'BLK_ERR_NBD_COMMAND',
        Errno.ENOSPC,
        /NBD_CMD_WRITE at 0\+4096: the server answered ENOSPC \(disk full\)/,
      );
      const { result, guard } = await guardedRead(dev);
      await failsWith(result, 'BLK_ERR_NBD_COMMAND', Errno.EIO, /answered EIO \(media error\)/);
      guard();
      assert.equal(connections(), 1, 'errors are answers, not broken streams');
      assert.equal(dev.counters.protocolErrors, 0);
    },
  );
});
