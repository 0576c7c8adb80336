// Transmission workers (src/nbd-server/worker-pool.ts): the handshake on the main thread, the data
// path of each plain connection on a worker. Bytes written on one worker read back on another,
// a flush on one covering writes of another, the first requests sent with the handshake's last
// option not lost in the hand-off, bad input answered and counted on a worker, a client gone
// mid-reply, stores that cannot be shared kept on the main thread, and a stop that leaves no
// thread or descriptor behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFileDisk } from '../src/block/file.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { createVolatileCache } from '../src/block/volatile-cache.ts';
import { ClientFlag, Command, Info, Option } from '../src/nbd/constants.ts';
import { encodeClientFlags, encodeInfoRequest, encodeOptionRequest } from '../src/nbd/handshake.ts';
import { encodeRequest } from '../src/nbd/transmission.ts';
import type { NbdExport } from '../src/nbd-server/export.ts';
import { NbdServer } from '../src/nbd-server/server.ts';
import { RawClient } from './nbd-server-helpers.ts';

const MiB = 1024 * 1024;
const CLI = join(import.meta.dirname, '..', 'src', 'cli', 'main.js');

function request(type: number, cookie: number, offset = 0, length = 0, flags = 0): Buffer {
  return encodeRequest({ type, flags, cookieHi: 0x5eed0000, cookieLo: cookie, offset, length });
}

interface Served {
  readonly server: NbdServer;
  readonly socketPath: string;
  readonly logLines: string[];
  close(): Promise<void>;
}

async function serve(exports: { name: string; device: BlockDevice }[], workers: number): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-nbd-workers-'));
  const socketPath = join(dir, 'nbd.sock');
  const list: NbdExport[] = exports.map((e) => ({ name: e.name, description: '', device: e.device, readOnly: false }));
  const logLines: string[] = [];
  const server = new NbdServer({ exports: list, log: (line) => logLines.push(line) });
  await server.startWorkers(workers);
  await server.listen({ kind: 'unix', path: socketPath });
  return {
    server,
    socketPath,
    logLines,
    async close() {
      await server.close();
      for (const e of list) await e.device.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function connect(path: string, name: string): Promise<RawClient> {
  const c = await RawClient.connect(path);
  await c.go(name);
  return c;
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function write(c: RawClient, cookie: number, offset: number, data: Buffer, flags = 0): Promise<void> {
  c.send(Buffer.concat([request(Command.NBD_CMD_WRITE, cookie, offset, data.length, flags), data]));
  const r = await c.simpleReply();
  assert.equal(r.error, 0, `write at ${offset}`);
  assert.equal(r.cookie, cookie);
}

async function read(c: RawClient, cookie: number, offset: number, length: number): Promise<Buffer> {
  c.send(request(Command.NBD_CMD_READ, cookie, offset, length));
  const r = await c.simpleReply(length);
  assert.equal(r.error, 0, `read at ${offset}`);
  return r.data;
}

test('bytes written through connections on one worker read back through connections on the other', async () => {
  const srv = await serve([{ name: 'disk', device: createRamDisk(16 * MiB, { name: 'ram' }) }], 2);
  try {
    const clients = [];
    for (let i = 0; i < 4; i++) clients.push(await connect(srv.socketPath, 'disk'));
    await until('four connections on workers', () => srv.server.workers!.connectionCount === 4);
    assert.deepEqual(srv.server.workers!.connectionsPerWorker, [2, 2], 'spread over both workers');
    // Connection i is on worker i % 2 (the one with fewer connections gets the next).
    const blocks = clients.map(() => randomBytes(256 * 1024));
    await Promise.all(clients.map((c, i) => write(c, i, i * MiB, blocks[i]!)));
    for (let i = 0; i < clients.length; i++) {
      const reader = clients[(i + 1) % clients.length]!;
      assert.ok((await read(reader, 100 + i, i * MiB, blocks[i]!.length)).equals(blocks[i]!), `block ${i} read through another worker`);
    }
    assert.equal(srv.server.counters.bytesWritten, 4 * 256 * 1024, 'workers count into the server total');
    assert.equal(srv.server.counters.handshakesCompleted, 4);
    for (const c of clients) c.destroy();
    await until('connections closed', () => srv.server.connectionCount === 0);
  } finally {
    await srv.close();
  }
});

test('requests sent in the same packet as NBD_OPT_GO reach the worker: nothing is lost in the hand-off', async () => {
  const device = createRamDisk(8 * MiB, { name: 'ram' });
  const srv = await serve([{ name: 'disk', device }], 1);
  try {
    for (let round = 0; round < 5; round++) {
      const c = await RawClient.connect(srv.socketPath);
      await c.read(18);
      const data = randomBytes(64 * 1024 + 512);
      // Client flags, GO, a write, a read of it and a flush: all in one write.
      c.send(
        Buffer.concat([
          encodeClientFlags(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES),
          encodeOptionRequest(Option.NBD_OPT_GO, encodeInfoRequest('disk', [Info.NBD_INFO_BLOCK_SIZE])),
          request(Command.NBD_CMD_WRITE, 1, round * MiB, data.length),
          data,
          request(Command.NBD_CMD_FLUSH, 2),
        ]),
      );
      const replies = await c.optionReplies();
      assert.equal(replies.at(-1)!.type, 1, 'NBD_REP_ACK');
      const answers = [await c.simpleReply(), await c.simpleReply()];
      assert.deepEqual(answers.map((a) => [a.cookie, a.error]).sort(), [
        [1, 0],
        [2, 0],
      ]);
      assert.ok((await read(c, 3, round * MiB, data.length)).equals(data));
      c.destroy();
    }
    assert.equal(srv.server.counters.requests, 15);
  } finally {
    await srv.close();
  }
});

test('multi-conn across workers on a file: a flush on one connection covers a write on another, and the file holds it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-nbd-workers-file-'));
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(4 * MiB));
  const srv = await serve([{ name: 'disk', device: await openFileDisk(path, { name: 'file' }) }], 2);
  try {
    const writer = await connect(srv.socketPath, 'disk');
    const flusher = await connect(srv.socketPath, 'disk');
    await until('both on workers', () => srv.server.workers!.connectionCount === 2);
    assert.deepEqual(srv.server.workers!.connectionsPerWorker, [1, 1]);
    const data = randomBytes(128 * 1024);
    await write(writer, 1, MiB, data);
    flusher.send(request(Command.NBD_CMD_FLUSH, 2));
    assert.equal((await flusher.simpleReply()).error, 0);
    // The workers wrote the very file (their own descriptors of it), not a copy.
    assert.ok(
      readFileSync(path)
        .subarray(MiB, MiB + data.length)
        .equals(data),
    );
    assert.ok((await read(flusher, 3, MiB, data.length)).equals(data));
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a store that cannot be shared (a volatile cache) keeps its connections on the main thread, and its flush covers them all', async () => {
  const backing = createRamDisk(4 * MiB, { name: 'ram' });
  const cache = createVolatileCache(backing, { name: 'volatile' });
  const srv = await serve([{ name: 'cached', device: cache }], 2);
  try {
    const writer = await connect(srv.socketPath, 'cached');
    const flusher = await connect(srv.socketPath, 'cached');
    const data = randomBytes(64 * 1024);
    await write(writer, 1, 0, data);
    assert.equal(srv.server.workers!.connectionCount, 0, 'both stayed on the main thread');
    assert.equal(srv.server.connectionCount, 2);
    const before = Buffer.alloc(data.length);
    await backing.readv(0, [before]);
    assert.ok(!before.equals(data), 'the write sits in the volatile cache');
    flusher.send(request(Command.NBD_CMD_FLUSH, 2));
    assert.equal((await flusher.simpleReply()).error, 0);
    const after = Buffer.alloc(data.length);
    await backing.readv(0, [after]);
    assert.ok(after.equals(data), 'the flush on the other connection wrote it back');
  } finally {
    await srv.close();
  }
});

test('bad input on a worker connection: the protocol error, counted, the connection in step; bad magic drops only that connection', async () => {
  const srv = await serve([{ name: 'disk', device: createRamDisk(4 * MiB, { name: 'ram' }) }], 2);
  try {
    const c = await connect(srv.socketPath, 'disk');
    const other = await connect(srv.socketPath, 'disk');
    await until('on workers', () => srv.server.workers!.connectionCount === 2);
    c.send(request(Command.NBD_CMD_READ, 1, 0, 512, 1 << 9));
    c.send(request(Command.NBD_CMD_READ, 2, 4 * MiB, 512));
    c.send(request(77, 3));
    const errors = [await c.simpleReply(), await c.simpleReply(), await c.simpleReply()];
    assert.deepEqual(
      errors.map((e) => e.error),
      [22, 22, 22],
      'EINVAL each',
    );
    assert.equal(srv.server.counters.badFlags, 1);
    assert.equal(srv.server.counters.outOfRange, 1);
    assert.equal(srv.server.counters.unknownCommand, 1);
    const data = randomBytes(4096);
    await write(c, 4, 0, data);
    assert.ok((await read(c, 5, 0, 4096)).equals(data), 'still in step');
    const bad = request(Command.NBD_CMD_READ, 6, 0, 512);
    bad.writeUInt32BE(0xdeadbeef, 0);
    c.send(bad);
    assert.ok(await c.waitClosed(), 'dropped after bad magic');
    assert.equal(srv.server.counters.framingErrors, 1);
    assert.ok((await read(other, 7, 0, 4096)).equals(data), 'the other worker connection goes on');
    await until('the dropped connection is gone', () => srv.server.workers!.connectionCount === 1);
  } finally {
    await srv.close();
  }
});

test('a client gone mid-reply on a worker costs nothing but its work; the worker serves the next', async () => {
  const srv = await serve([{ name: 'disk', device: createRamDisk(64 * MiB, { name: 'ram' }) }], 1);
  try {
    const quitter = await connect(srv.socketPath, 'disk');
    const reads = [];
    for (let i = 0; i < 64; i++) reads.push(request(Command.NBD_CMD_READ, i, (i % 32) * MiB, MiB));
    quitter.send(Buffer.concat(reads));
    await quitter.read(1000);
    quitter.destroy();
    await until('the quitter is gone', () => srv.server.connectionCount === 0);
    const next = await connect(srv.socketPath, 'disk');
    const data = randomBytes(8192);
    await write(next, 1, 3 * MiB, data);
    assert.ok((await read(next, 2, 3 * MiB, data.length)).equals(data));
    assert.equal(srv.server.workers!.connectionsPerWorker[0], 1, 'the same worker, still alive');
  } finally {
    await srv.close();
  }
});

test('close() with connections on workers leaves no worker thread and no descriptor behind', async () => {
  const fds = (): number => readdirSync('/proc/self/fd').length;
  const threads = (): number => readdirSync('/proc/self/task').length;
  await readFile('/proc/self/stat'); // libuv's pool threads, started once, are not ours to count
  const before = fds();
  const threadsBefore = threads();
  const srv = await serve([{ name: 'disk', device: createRamDisk(4 * MiB, { name: 'ram' }) }], 2);
  const clients = [];
  for (let i = 0; i < 4; i++) clients.push(await connect(srv.socketPath, 'disk'));
  await until('on workers', () => srv.server.workers!.connectionCount === 4);
  assert.ok(fds() > before + 4, 'the server and the clients hold descriptors');
  assert.ok(threads() >= threadsBefore + 2, 'two worker threads run');
  await srv.close();
  for (const c of clients) assert.ok(await c.waitClosed(), 'each client sees its connection end');
  await until('every descriptor closed', () => fds() === before);
  await until('every worker thread gone', () => threads() === threadsBefore);
});

test('blkback nbd-server --workers 2: SIGTERM with connections on workers exits cleanly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-nbd-workers-cli-'));
  const socketPath = join(dir, 'nbd.sock');
  const child = spawn(process.execPath, [CLI, 'nbd-server', '--listen', `unix:${socketPath}`, '--export', 'disk=ram:8M', '--workers', '2'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await until('listening', () => stderr.includes('listening on'), 15_000);
    assert.match(stderr, /2 transmission workers/);
    const clients = [await connect(socketPath, 'disk'), await connect(socketPath, 'disk')];
    const data = randomBytes(65536);
    await write(clients[0]!, 1, 0, data);
    assert.ok((await read(clients[1]!, 2, 0, data.length)).equals(data));
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 10_000))]);
    assert.equal(code, 0, stderr);
    for (const c of clients) assert.ok(await c.waitClosed());
    assert.match(stderr, /stopped after 2 connections, 2 requests/);
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
