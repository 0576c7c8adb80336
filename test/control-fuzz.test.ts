// Fuzzing the control socket's line protocol against a live server in a child process (so that its
// memory is its own): malformed lines, huge lines, floods of pipelined requests, requests written a
// byte at a time, disconnects mid-line and mid-answer, and clients that write but never read. The
// server must stay up, keep answering a well-behaved client the whole time, answer every line it
// reads in order, keep its peak RSS within a bound, and hold nothing once the clients are gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlClient } from '../src/control/client.ts';
import { MAX_REQUEST_LINE } from '../src/control/protocol.ts';
import { mulberry32 } from '../src/internal/prng.ts';

const SERVER_JS = new URL('../src/control/server.js', import.meta.url).href;
const MiB = 1 << 20;
/**
 * Peak RSS the server may add over its idle RSS while being fuzzed. What it holds per connection is
 * bounded (a read, a line, an answer: well under 1 MiB); the rest is garbage V8 has not collected
 * yet (it lets the heap and the external memory of read buffers grow some tens of MiB between
 * collections). Before the fix, 24 clients that never read cost 8 MiB each.
 */
const RSS_BOUND = 64 * MiB;
/** Heap and buffers still in use after the clients left and a full GC, over the idle figure. */
const RETAINED_BOUND = 8 * MiB;

// The server under test: a target whose `list` answer is about 6 KiB, so that every 27-byte request
// is answered 200 times larger (what makes a client that never reads expensive).
const SERVER = `
const { serveControl } = await import(${JSON.stringify(SERVER_JS)});
const disks = Array.from({ length: 24 }, (_, i) => ({ key: i + '/51712', domid: i, devid: 51712, vdev: 'xvda', state: 'Connected', store: 'phy:/dev/vg0/guest-' + i + '-' + 'x'.repeat(40), size: 2 ** 34, readOnly: false, ringPages: 16, abi: 'x86_64-abi', dataPath: 'persistent', grantsKept: 1056, inflight: 0 }));
const no = async () => { throw new Error('not here'); };
const target = { list: async () => disks, stats: async () => [], attach: no, detach: no, resize: no, info: async () => ({ service: 'blkback' }) };
const server = await serveControl(target, { path: process.argv[1], log: () => undefined, maxConnections: 64 });
process.on('message', () => {
  globalThis.gc();
  const m = process.memoryUsage();
  process.send({ used: m.heapUsed + m.external, rss: m.rss });
});
process.stdout.write('ready\\n');
process.stdin.on('end', async () => { await server.close(); process.exit(0); });
process.stdin.resume();
`;

function status(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

function connect(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Writes `data` respecting backpressure; resolves false if the peer stops reading for `stallMs`. */
async function writeAll(s: net.Socket, data: Uint8Array, stallMs = 10_000): Promise<boolean> {
  if (s.write(data)) return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), stallMs);
    s.once('drain', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Reads answer lines until `count` have come, or the socket closes. */
function readLines(s: net.Socket, count: number, ms = 20_000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const lines: string[] = [];
    let partial = '';
    const timer = setTimeout(() => reject(new Error(`only ${lines.length} of ${count} answers within ${ms} ms`)), ms);
    const finish = (): void => {
      clearTimeout(timer);
      s.off('data', onData);
      resolve(lines);
    };
    const onData = (d: Buffer): void => {
      const parts = (partial + d.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length >= count) finish();
    };
    s.on('data', onData);
    s.once('close', finish);
  });
}

/** A line of hostile junk without "\n" (so that each is exactly one request to answer). */
function junkLine(rand: () => number): string {
  const valid = ['{"v":1,"id":1,"op":"list"}', '{"v":1,"id":2,"op":"stats","disk":"1/xvda"}', '{"v":1,"id":3,"op":"resize","disk":"1/xvda","size":4096}'];
  const base = valid[rand() % valid.length]!;
  switch (rand() % 9) {
    case 0: {
      // random bytes, any value but "\n", as latin1 (invalid UTF-8 included)
      const n = 1 + (rand() % 300);
      let s = '';
      for (let i = 0; i < n; i++) {
        const c = rand() % 256;
        s += String.fromCharCode(c === 10 ? 11 : c);
      }
      return s.trim() === '' ? 'x' : s;
    }
    case 1:
      return base.slice(0, 1 + (rand() % (base.length - 1))); // truncated
    case 2: {
      const i = rand() % base.length; // one byte flipped
      const c = String.fromCharCode(32 + (rand() % 95));
      return base.slice(0, i) + c + base.slice(i + 1);
    }
    case 3:
      return `${'['.repeat(20_000)}${']'.repeat(20_000)}`; // deep nesting
    case 4:
      return `{"v":1,"id":${rand()},"op":"attach","domid":${['-1', '1e400', '"3"', 'null', '32752', '1.5'][rand() % 6]},"spec":"x"}`;
    case 5:
      return `{"v":1,"id":5,"op":"list","__proto__":{"polluted":true},"constructor":1}`;
    case 6:
      return `{"v":1,"id":6,"op":"stats","disk":"${'\\u0000'.repeat(rand() % 20)}a"}`;
    case 7:
      return `{"v":1,"id":7,"op":"attach","domid":1,"spec":"${'a'.repeat(4000 + (rand() % 200))}"}`;
    default:
      return `${base}\r`; // CRLF
  }
}

test('control protocol fuzz: malformed, huge, pipelined, partial, torn and unread requests; the server stays up and bounded', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-ctl-fuzz-'));
  const path = join(dir, 'control.sock');
  const server = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', SERVER, path], { stdio: ['pipe', 'pipe', 'inherit', 'ipc'] });
  const memory = (): Promise<{ used: number; rss: number }> =>
    new Promise((resolve) => {
      server.once('message', (m) => resolve(m as { used: number; rss: number }));
      server.send('memory');
    });
  let out = '';
  server.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const rand = mulberry32(1414);
  let good: ControlClient | undefined;
  let goodStop = false;
  let goodLoop: Promise<void> = Promise.resolve();
  const goodLatencies: number[] = [];
  const summary: string[] = [];
  try {
    const start = Date.now();
    while (!out.includes('ready')) {
      if (Date.now() - start > 15_000) throw new Error('the server did not start');
      await new Promise((r) => setTimeout(r, 20));
    }
    const pid = server.pid!;
    const idleUse = await memory();
    const idle = status(pid);

    // A well-behaved client asks every 20 ms during the whole campaign.
    good = await ControlClient.connect(path, { timeoutMs: 10_000 });
    const g = good;
    goodLoop = (async () => {
      while (!goodStop) {
        const t0 = performance.now();
        const disks = await g.list();
        assert.equal(disks.length, 24);
        goodLatencies.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    // 1. Malformed lines on four connections: every line gets exactly one answer, in order.
    await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const s = await connect(path);
        const lines = Array.from({ length: 400 }, () => junkLine(rand));
        const answers = readLines(s, lines.length + 1);
        await writeAll(s, Buffer.from(`${lines.join('\n')}\n{"v":1,"id":424242,"op":"info"}\n`, 'latin1'));
        const got = await answers;
        assert.equal(got.length, lines.length + 1, 'one answer a line');
        for (const a of got) assert.doesNotThrow(() => JSON.parse(a), a.slice(0, 100));
        assert.match(got.at(-1)!, /"id":424242,"ok":true/, 'the last answer is the last request');
        s.destroy();
      }),
    );
    summary.push('1600 malformed lines');

    // 2. Huge lines: three of 1 MiB, one of 8 MiB streamed in pieces, then a good request.
    {
      const s = await connect(path);
      const answers = readLines(s, 5);
      for (let i = 0; i < 3; i++) await writeAll(s, Buffer.from(`${'{'.repeat(MiB)}\n`));
      const piece = Buffer.alloc(64 * 1024, 0x61);
      for (let i = 0; i < 128; i++) await writeAll(s, piece);
      await writeAll(s, Buffer.from('\n{"v":1,"id":9,"op":"info"}\n'));
      const got = await answers;
      assert.equal(got.filter((a) => a.includes('CTL_ERR_TOO_LONG')).length, 4, got.join('\n').slice(0, 500));
      assert.match(got[4]!, /"id":9,"ok":true/);
      assert.ok(got[0]!.includes(String(MAX_REQUEST_LINE)));
      s.destroy();
    }
    summary.push('11 MiB of over-long lines');

    // 3. A pipelined flood that is read: 30000 requests in one go, all answered in order.
    {
      const s = await connect(path);
      const n = 30_000;
      const answers = readLines(s, n, 60_000);
      let text = '';
      for (let i = 1; i <= n; i++) text += `{"v":1,"id":${i},"op":${i % 10 === 0 ? '"list"' : '"info"'}}\n`;
      await writeAll(s, Buffer.from(text));
      const got = await answers;
      assert.equal(got.length, n);
      for (let i = 0; i < n; i += 997) assert.ok(got[i]!.startsWith(`{"v":1,"id":${i + 1},"ok":true`), got[i]!.slice(0, 80));
      s.destroy();
    }
    summary.push('30000 pipelined requests');

    // 4. Requests written a byte at a time, on ten connections at once.
    await Promise.all(
      Array.from({ length: 10 }, async (_, c) => {
        const s = await connect(path);
        const text = Array.from({ length: 20 }, (_, i) => `{"v":1,"id":${c * 100 + i},"op":"info"}\n`).join('');
        const answers = readLines(s, 20);
        for (let i = 0; i < text.length; i++) {
          s.write(text[i]!);
          if (i % 7 === 0) await new Promise((r) => setImmediate(r));
        }
        const got = await answers;
        assert.deepEqual(
          got.map((a) => (JSON.parse(a) as { id: number }).id),
          Array.from({ length: 20 }, (_, i) => c * 100 + i),
        );
        s.destroy();
      }),
    );
    summary.push('200 requests a byte at a time');

    // 5. Disconnects: mid-line, right after a request (before its answer), and after 1 MiB of junk.
    for (let round = 0; round < 6; round++) {
      await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const s = await connect(path);
          s.on('error', () => undefined);
          const line = '{"v":1,"id":1,"op":"list"}\n';
          if (i % 3 === 0) s.write(line.slice(0, 1 + (rand() % (line.length - 2))));
          else if (i % 3 === 1) s.write(line.repeat(50));
          else s.write(Buffer.alloc(MiB, 0x7b));
          await new Promise((r) => setImmediate(r));
          s.destroy();
        }),
      );
    }
    summary.push('240 torn connections');

    // 6. Clients that write and never read: 24 connections flood requests until the server stops
    // reading them. Each answer is ~200x its request.
    const flooders = await Promise.all(Array.from({ length: 24 }, () => connect(path)));
    const request = Buffer.from('{"v":1,"id":1,"op":"list"}\n'.repeat(2400)); // 64 KiB
    let written = 0;
    await Promise.all(
      flooders.map(async (s) => {
        s.on('error', () => undefined);
        s.pause();
        const until = Date.now() + 2000;
        while (Date.now() < until && !s.destroyed) {
          if (!(await writeAll(s, request, 300))) break; // the server stopped reading: good
          written += request.length;
        }
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    const flooded = status(pid);
    for (const s of flooders) s.destroy();
    summary.push(`24 clients that never read (${(written / MiB).toFixed(0)} MiB of requests taken, RSS ${(flooded.rss / MiB).toFixed(0)} MiB)`);

    goodStop = true;
    await goodLoop;
    const after = await good.list();
    assert.equal(after.length, 24, 'the well-behaved client is still served');
    assert.equal(server.exitCode, null, 'the server is still up');
    await new Promise((r) => setTimeout(r, 200)); // the server sees the flooders' closes
    const end = status(pid);
    const endUse = await memory();
    const retained = endUse.used - idleUse.used;
    const grew = end.hwm - idle.rss;
    const worst = Math.max(...goodLatencies);
    process.stdout.write(
      `control fuzz: ${summary.join('; ')}; server RSS idle ${(idle.rss / MiB).toFixed(0)} MiB, peak ${(end.hwm / MiB).toFixed(0)} MiB ` +
        `(+${(grew / MiB).toFixed(0)}, bound ${RSS_BOUND / MiB}); in use after GC +${(retained / MiB).toFixed(1)} MiB; ` +
        `good client ${goodLatencies.length} answers, worst ${worst.toFixed(0)} ms\n`,
    );
    assert.ok(retained <= RETAINED_BOUND, `the server still holds ${(retained / MiB).toFixed(1)} MiB after its clients left`);
    assert.ok(grew <= RSS_BOUND, `the server's peak RSS grew ${(grew / MiB).toFixed(0)} MiB (bound ${RSS_BOUND / MiB} MiB)`);
    assert.ok(worst < 2000, `the well-behaved client waited ${worst.toFixed(0)} ms for an answer`);
  } finally {
    goodStop = true;
    await goodLoop.catch(() => undefined);
    good?.close();
    server.stdin!.end();
    await new Promise((resolve) => {
      const timer = setTimeout(() => server.kill('SIGKILL'), 5000);
      server.once('exit', () => {
        clearTimeout(timer);
        resolve(undefined);
      });
      if (server.exitCode !== null) resolve(undefined);
    });
    rmSync(dir, { recursive: true, force: true });
  }
});
