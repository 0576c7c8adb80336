// `blkback nbd-server` as users run it: --help that teaches, usage errors that say what is wrong,
// and a TCP listener that warns when it has no TLS and serves a real client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { parseListen } from '../src/cli/commands/nbd-server.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';

const MAIN = new URL('../src/cli/main.js', import.meta.url).pathname;

test('--help names every option and gives examples', async () => {
  const r = await run(process.execPath, [MAIN, 'nbd-server', '--help']);
  assert.equal(r.code, 0, r.stderr);
  for (const word of [
    '--export NAME=SPEC',
    '--read-only',
    '--listen unix:PATH',
    '--allow-uid',
    '--allow-path',
    '--tls off|on|require',
    '--tls-cert',
    '--tls-ca',
    '--tls-psk',
    'nbdinfo',
    'fio --ioengine=nbd',
  ]) {
    assert.ok(r.stdout.includes(word), `--help mentions ${word}`);
  }
});

test('usage errors say what is wrong', async () => {
  const cases: [string[], RegExp][] = [
    [[], /at least one --export/],
    [['--export', 'disk'], /not NAME=SPEC/],
    [['--export', 'a=ram:1M', '--export', 'a=ram:1M'], /given twice/],
    [['--export', 'a=ram:1M', '--listen', 'nowhere'], /neither unix:PATH nor HOST:PORT/],
    [['--export', 'a=ram:1M', '--tls', 'maybe'], /not off, on or require/],
    [['--export', 'a=ram:1M', '--tls', 'require'], /needs --tls-cert and --tls-key/],
    [['--export', 'a=ram:1M', '--tls-psk', '/nonexistent'], /--tls off/],
  ];
  for (const [args, message] of cases) {
    const r = await run(process.execPath, [MAIN, 'nbd-server', ...args]);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, message, args.join(' '));
  }
  assert.deepEqual(parseListen('[::1]:10809'), { kind: 'tcp', host: '::1', port: 10809 });
  assert.deepEqual(parseListen('unix:/run/x.sock'), { kind: 'unix', path: '/run/x.sock' });
});

test('TCP without TLS: the server says so at start, and serves nbdinfo', async (t) => {
  if (stopIfMissing(t, missingTools(['nbdinfo'], 'libnbd-bin'))) return;
  const child = spawn(process.execPath, [MAIN, 'nbd-server', '--export', 'disk=ram:4M', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 10_000;
    while (!/WARNING: TCP without TLS/.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.match(stderr, /WARNING: TCP without TLS/);
    const port = /listening on 127\.0\.0\.1:(\d+)/.exec(stderr)?.[1];
    assert.ok(port !== undefined && Number(port) > 0, stderr);
    const info = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`]);
    assert.equal(info.stdout.trim(), String(4 * 1024 * 1024), info.stderr);
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    assert.match(stderr, /stopped after 1 connections/);
  } finally {
    child.kill('SIGKILL');
  }
});
