// `blkback serve` on a machine without Xen: one line naming what is missing, exit status 2, no
// stack trace, and no control socket left behind. (This test machine is not a Xen dom0; on one
// that is, the test skips.)
import { test } from 'node:test';
import { skipOnThisHost } from './helpers-tools.ts';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PATH_POLICY_HELP } from '../src/stores/path-policy.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function blkback(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

test('serve without Xen: exit 2 with one clear line, no stack trace, no socket', async (t) => {
  if (existsSync('/dev/xen/gntdev') || existsSync('/proc/xen/capabilities')) return skipOnThisHost(t, 'this machine runs on Xen');
  const dir = mkdtempSync(join(tmpdir(), 'blkback-serve-'));
  const socket = join(dir, 'control.sock');
  try {
    const r = await blkback(['serve', '--control-socket', socket, '--xenstore-socket', join(dir, 'xenstored.sock')]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0]!, /^blkback serve: Xen is not available here: \S.{10,}/);
    assert.match(lines[0]!, /\/dev\/xen|xenstored|hypervisor|dom0/i, 'it names what is missing');
    assert.doesNotMatch(r.stderr, /internal error|\bat .*\.js:\d+/);
    assert.equal(existsSync(socket), false, 'no control socket is created');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve --help teaches the set-up: a phy disk line, start before xl create, no xen-blkback', async () => {
  const r = await blkback(['serve', '--help']);
  assert.equal(r.code, 0);
  assert.ok(r.stdout.includes("disk = ['format=raw,vdev=xvda,access=rw,backendtype=phy,target=/dev/loop0']"));
  assert.match(r.stdout, /before 'xl create'/);
  assert.match(r.stdout, /xen-blkback/);
  assert.match(r.stdout, /--control-socket PATH/);
  assert.match(r.stdout, /\/run\/blkback\/control\.sock/);
  assert.match(r.stdout, /exits with status 2/);
});

test('serve rejects unknown options as a usage error', async () => {
  const r = await blkback(['serve', '--frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^blkback: serve: .*frobnicate/);
});

test('serve --help says what may be attached; a bad --allow-path is a usage error before anything starts', async () => {
  const help = await blkback(['serve', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^ {2}--allow-path DIR {9}regular files under DIR may be opened as stores \(repeatable\)$/m);
  assert.ok(help.stdout.includes(PATH_POLICY_HELP), 'the rule, as the iSCSI target states it');
  assert.match(help.stdout, /\/local\/domain\/0\/error\/backend\/vbd\/DOMID\/DEVID\/error/, 'where a refusal is recorded');
  const dir = mkdtempSync(join(tmpdir(), 'blkback-serve-'));
  try {
    const missing = join(dir, 'missing');
    const r = await blkback(['serve', '--allow-path', missing, '--control-socket', join(dir, 'control.sock'), '--xenstore-socket', join(dir, 'xs.sock')]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `blkback: --allow-path ${missing}: no such directory\n`);
    assert.equal(existsSync(join(dir, 'control.sock')), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('run and ctl --help say whose paths are opened', async () => {
  const [run, ctl] = await Promise.all([blkback(['run', '--help']), blkback(['ctl', '--help'])]);
  assert.match(run.stdout, /--allow-path DIR/);
  assert.ok(run.stdout.includes(PATH_POLICY_HELP));
  assert.match(run.stdout, /the stores of --map are yours/);
  assert.match(ctl.stdout, /path policy/);
  const missing = join(tmpdir(), `blkback-no-such-dir-${process.pid}`);
  const bad = await blkback(['run', fileURLToPath(new URL('../../examples/guest-phy.cfg', import.meta.url)), '--allow-path', missing]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(bad.stderr, `blkback: --allow-path ${missing}: no such directory\n`);
});
