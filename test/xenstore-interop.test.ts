// Interop with Xen's own tools (Debian xenstore-utils, libxenstore 4.17): they find our daemon
// through XENSTORED_PATH. libxenstore sends nothing on connect (no XS_CONTROL handshake): the
// first bytes are the tool's request, header and payload in separate writes.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { connectInProcess, connectUnix } from '../src/xenstore/client.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';
import type { RunResult } from './helpers-tools.ts';

const TOOLS = ['xenstore-write', 'xenstore-read', 'xenstore-ls', 'xenstore-list', 'xenstore-rm', 'xenstore-chmod', 'xenstore-watch', 'xenstore-exists'];

const toolsMissing = missingTools(TOOLS, 'xenstore-utils');

/** Runs a tool against the daemon on `socket` (it answers on this same event loop). */
function xs(socket: string, tool: string, ...args: string[]): Promise<RunResult> {
  return run(tool, args, { timeoutMs: 5000, env: { ...process.env, XENSTORED_PATH: socket } });
}

async function ok(socket: string, tool: string, ...args: string[]): Promise<string> {
  const r = await xs(socket, tool, ...args);
  assert.equal(r.code, 0, `${tool} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

test('xenstore-utils against our daemon: write/read/ls/list/exists/chmod/rm agree with the in-process client', async (t) => {
  if (stopIfMissing(t, toolsMissing)) return;
  const dir = mkdtempSync(join(tmpdir(), 'xs-interop-'));
  const socket = join(dir, 'socket');
  const daemon = new XenstoreDaemon();
  const server = await daemon.listenUnix(socket);
  const c = connectInProcess(daemon, 0);
  try {
    await ok(socket, 'xenstore-write', '/tool/a', 'one', '/tool/b/c', 'two words');
    assert.equal(await c.read('/tool/a'), 'one');
    assert.equal(await c.read('/tool/b/c'), 'two words');

    await c.write('/local/domain/0/name', 'Domain-0');
    assert.equal(await ok(socket, 'xenstore-read', '/local/domain/0/name'), 'Domain-0\n');
    const r = await xs(socket, 'xenstore-read', '/nope');
    assert.notEqual(r.code, 0);
    assert.equal(await ok(socket, 'xenstore-list', '/tool'), 'a\nb\n');
    assert.equal((await xs(socket, 'xenstore-exists', '/tool/b')).code, 0);
    assert.notEqual((await xs(socket, 'xenstore-exists', '/tool/zz')).code, 0);

    const ls = await ok(socket, 'xenstore-ls', '/tool');
    assert.match(ls, /^a = "one"$/m);
    assert.match(ls, /^b = ""$/m);
    assert.match(ls, /^ c = "two words"$/m);

    await ok(socket, 'xenstore-chmod', '/tool/a', 'n0', 'r5');
    assert.deepEqual(await c.getPerms('/tool/a'), [
      { domid: 0, perm: 'n' },
      { domid: 5, perm: 'r' },
    ]);
    await c.setPerms('/tool/b/c', [{ domid: 3, perm: 'b' }]);
    const lsp = await ok(socket, 'xenstore-ls', '-p', '/tool');
    assert.match(lsp, /a = "one".*\(n0,r5\)/);
    assert.match(lsp, /c = "two words".*\(b3\)/);

    // A guest connection sees the effect of the tool's chmod.
    const g5 = connectInProcess(daemon, 5);
    assert.equal(await g5.read('/tool/a'), 'one');
    g5.close();

    await ok(socket, 'xenstore-rm', '/tool/a');
    assert.equal(await c.tryRead('/tool/a'), undefined);
    await c.rm('/tool/b');
    assert.equal(await ok(socket, 'xenstore-list', '/tool'), '');

    // Our own socket client, against our daemon.
    const u = await connectUnix(socket);
    assert.equal(u.domid, 0);
    await u.write('/via/socket', 'yes');
    assert.equal(await ok(socket, 'xenstore-read', '/via/socket'), 'yes\n');
    u.close();
  } finally {
    c.close();
    await daemon.close();
    await server.close();
    assert.equal(existsSync(socket), false, 'socket file removed at close');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('xenstore-watch reports a change made by the in-process client', async (t) => {
  if (stopIfMissing(t, toolsMissing)) return;
  const dir = mkdtempSync(join(tmpdir(), 'xs-watch-'));
  const socket = join(dir, 'socket');
  const daemon = new XenstoreDaemon();
  const server = await daemon.listenUnix(socket);
  const c = connectInProcess(daemon, 0);
  const child = spawn('xenstore-watch', ['/watched'], { env: { ...process.env, XENSTORED_PATH: socket }, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    const waitFor = (line: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`xenstore-watch did not print '${line}'; got ${JSON.stringify(out)}`)), 5000);
        const check = (): void => {
          if (out.split('\n').includes(line)) {
            clearTimeout(timer);
            child.stdout.off('data', onData);
            resolve();
          }
        };
        const onData = (d: Buffer): void => {
          out += d.toString();
          check();
        };
        child.stdout.on('data', onData);
        check();
      });
    await waitFor('/watched'); // the initial event
    await c.write('/watched/key', 'v');
    await waitFor('/watched/key');
    await c.rm('/watched');
    await c.write('/elsewhere', 'x');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(out.split('\n').filter((l) => l === '/elsewhere').length, 0, 'no event outside the watched path');
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    c.close();
    await daemon.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('blkback xenstored: serves the socket until SIGTERM, then removes it', async (t) => {
  if (stopIfMissing(t, toolsMissing)) return;
  const dir = mkdtempSync(join(tmpdir(), 'xs-cmd-'));
  const socket = join(dir, 'socket');
  const log = join(dir, 'trace.log');
  const moduleUrl = new URL('../src/cli/commands/xenstored.js', import.meta.url).href;
  const code = `import(${JSON.stringify(moduleUrl)}).then(async (m) => { process.exitCode = await m.xenstoredCommand.run(process.argv.slice(1)); });`;
  const child = spawn(process.execPath, ['-e', code, '--', '--socket', socket, '--quota-nodes', '50', '--log', log], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    const deadline = Date.now() + 5000;
    while (!existsSync(socket)) {
      assert.ok(Date.now() < deadline, `socket never appeared; stderr: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await ok(socket, 'xenstore-write', '/from/tool', 'hi');
    assert.equal(await ok(socket, 'xenstore-read', '/from/tool'), 'hi\n');
    const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    child.kill('SIGTERM');
    assert.equal(await exit, 0, stderr);
    assert.equal(existsSync(socket), false, 'socket removed at exit');
    assert.match(stderr, /listening on/);
    const { readFileSync } = await import('node:fs');
    assert.match(readFileSync(log, 'utf8'), /XS_WRITE \/from\/tool hi/);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
