// `blkback iscsi-target` against software no one here wrote: libiscsi's tools (iscsi-ls, iscsi-inq,
// iscsi-readcapacity16, with CHAP and header digests) and QEMU's iSCSI client (qemu-img info,
// convert, compare and bench, qemu-io writes and pattern reads, discard on a thin LUN). Every byte
// QEMU writes is checked in the store file itself, and `blkback ctl --iscsi` lists what is served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';

const MAIN = new URL('../src/cli/main.js', import.meta.url).pathname;
const TARGET = 'iqn.2026-12.org.blkback:interop';
const toolsMissing = missingTools(['iscsi-ls', 'iscsi-inq', 'iscsi-readcapacity16', 'qemu-img', 'qemu-io'], 'libiscsi-bin qemu-utils qemu-block-extra');

interface Running {
  readonly port: number;
  readonly dir: string;
  readonly lunFile: string;
  readonly control: string;
  readonly proc: ChildProcess;
  readonly log: () => string;
  stop(): Promise<number | null>;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function startTarget(extra: string[] = [], lunFlags: string[] = []): Promise<Running> {
  const dir = mkdtempSync(join('/dev/shm', 'blkback-interop-'));
  const lunFile = join(dir, 'lun1.img');
  writeFileSync(lunFile, '');
  await run('truncate', ['-s', '64M', lunFile]);
  const port = await freePort();
  const control = join(dir, 'ctl.sock');
  const proc = spawn(
    process.execPath,
    [
      MAIN,
      'iscsi-target',
      '--portal',
      `127.0.0.1:${port}`,
      '--target-name',
      TARGET,
      '--allow-path',
      dir,
      '--lun',
      `1=file:${lunFile}`,
      ...lunFlags,
      '--allow',
      'ALL',
      '--control-socket',
      control,
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  proc.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  const start = Date.now();
  while (!/listening on/.test(log)) {
    if (proc.exitCode !== null || Date.now() - start > 10_000) throw new Error(`target did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    dir,
    lunFile,
    control,
    proc,
    log: () => log,
    stop: () =>
      new Promise((resolve) => {
        proc.once('exit', (code) => {
          rmSync(dir, { recursive: true, force: true });
          resolve(code);
        });
        proc.kill('SIGTERM');
      }),
  };
}

function url(t: Running, lun = 1, auth = ''): string {
  return `iscsi://${auth}127.0.0.1:${t.port}/${TARGET}/${lun}`;
}

async function ok(tool: string, args: string[]): Promise<string> {
  const r = await run(tool, args);
  assert.equal(r.code, 0, `${tool} ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('libiscsi tools: discovery, INQUIRY and its VPD pages, READ CAPACITY(16)', async (tc) => {
  if (stopIfMissing(tc, toolsMissing)) return;
  const t = await startTarget();
  try {
    const ls = await ok('iscsi-ls', ['-s', `iscsi://127.0.0.1:${t.port}/`]);
    assert.match(ls, new RegExp(`Target:${TARGET} Portal:127.0.0.1:${t.port},1`));
    // iscsi-ls prints the last LBA times the block size (tgt's 1 GiB LUN shows as 1023M, too)
    assert.match(ls, /Lun:1\s+Type:DIRECT_ACCESS \(Size:63M\)/);
    const inq = await ok('iscsi-inq', [url(t)]);
    assert.match(inq, /Vendor:BLKBACK/);
    assert.match(inq, /Version Descriptor:04c0 SBC-3/);
    for (const page of ['0x80', '0x83', '0xb0', '0xb1', '0xb2']) {
      const vpd = await run('iscsi-inq', ['-e', '1', '-c', page, url(t)]);
      assert.equal(vpd.code, 0, `VPD ${page}: ${vpd.stderr}`);
    }
    const cap = await ok('iscsi-readcapacity16', [url(t)]);
    assert.match(cap, /RETURNED LOGICAL BLOCK ADDRESS:131071/);
    assert.match(cap, /Total size:67108864/);
  } finally {
    await t.stop();
  }
});

test('QEMU: qemu-io writes and pattern reads land in the store file byte for byte, with and without header digests; flush; discard on a thin LUN', async (tc) => {
  if (stopIfMissing(tc, toolsMissing)) return;
  const t = await startTarget([], ['--thin']);
  try {
    await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'read -P 0xab 0 64k', url(t)]);
    await ok('qemu-io', [
      '-f',
      'raw',
      '-t',
      'none',
      '-c',
      'aio_write -P 0xcd 1M 1M',
      '-c',
      'aio_flush',
      '-c',
      'read -P 0xcd 1M 1M',
      '-c',
      'read -P 0xab 0 64k',
      '-c',
      'flush',
      url(t),
    ]);
    // header digests: QEMU asks for them with its header-digest option (libiscsi 1.19's tools cannot)
    const opts = `driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=127.0.0.1:${t.port},file.target=${TARGET},file.lun=1,file.header-digest=crc32c`;
    await ok('qemu-io', ['--image-opts', opts, '-c', 'write -P 0x77 4M 256k', '-c', 'read -P 0x77 4M 256k']);
    assert.match(t.log(), /HeaderDigest=CRC32C/);
    const store = readFileSync(t.lunFile);
    assert.ok(store.subarray(4 << 20, (4 << 20) + (256 << 10)).every((b) => b === 0x77));
    assert.ok(store.subarray(0, 65536).every((b) => b === 0xab));
    assert.ok(store.subarray(1 << 20, 2 << 20).every((b) => b === 0xcd));
    assert.ok(store.subarray(65536, 1 << 20).every((b) => b === 0));
    // discard: QEMU sends UNMAP because the LUN says it is thin (LBPME); the file gets a hole
    const before = statSync(t.lunFile).blocks;
    await ok('qemu-io', ['-f', 'raw', '-c', 'discard 1M 1M', '-c', 'read -P 0 1M 1M', url(t)]);
    assert.ok(statSync(t.lunFile).blocks < before, 'the discarded range no longer takes space in the file');
    assert.ok(
      readFileSync(t.lunFile)
        .subarray(1 << 20, 2 << 20)
        .every((b) => b === 0),
    );
  } finally {
    await t.stop();
  }
});

test('QEMU: qemu-img info, convert to and from the LUN, compare, and bench with a pattern', async (tc) => {
  if (stopIfMissing(tc, toolsMissing)) return;
  const t = await startTarget();
  const work = mkdtempSync(join(tmpdir(), 'blkback-qemu-'));
  try {
    const info = await ok('qemu-img', ['info', '-f', 'raw', url(t)]);
    assert.match(info, /virtual size: 64 MiB \(67108864 bytes\)/);
    const src = join(work, 'src.img');
    const back = join(work, 'back.img');
    const content = Buffer.concat([randomBytes(8 << 20), Buffer.alloc(8 << 20), randomBytes(48 << 20)]);
    writeFileSync(src, content);
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', '-n', src, url(t)]);
    assert.ok(readFileSync(t.lunFile).equals(content), 'the store holds what qemu-img convert sent');
    await ok('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, url(t)]);
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', url(t), back]);
    assert.ok(readFileSync(back).equals(content), 'and sends it back unchanged');
    // bench: 2000 writes of 4 KiB at queue depth 32, the pattern checked in the file
    await ok('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-w', '--pattern=0x5a', '-c', '2000', '-d', '32', '-s', '4096', url(t)]);
    assert.ok(
      readFileSync(t.lunFile)
        .subarray(0, 2000 * 4096)
        .every((b) => b === 0x5a),
    );
    await ok('qemu-img', ['bench', '-f', 'raw', '-t', 'none', '-c', '2000', '-d', '32', '-s', '65536', url(t)]);
  } finally {
    rmSync(work, { recursive: true, force: true });
    await t.stop();
  }
});

test('CHAP with libiscsi: one-way and mutual logins, a wrong secret refused; no secret in the log or ctl list', async (tc) => {
  if (stopIfMissing(tc, toolsMissing)) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-chap-'));
  const chapFile = join(dir, 'chap');
  const mutualFile = join(dir, 'mutual');
  writeFileSync(chapFile, 'alice alice-secret-0123\n', { mode: 0o600 });
  writeFileSync(mutualFile, 'target-user target-secret-9876\n', { mode: 0o600 });
  const t = await startTarget(['--chap-file', chapFile, '--mutual-chap-file', mutualFile]);
  try {
    await ok('iscsi-inq', [url(t, 1, 'alice%alice-secret-0123@')]);
    await ok('iscsi-inq', [`${url(t, 1, 'alice%alice-secret-0123@')}?target_user=target-user&target_password=target-secret-9876`]);
    const wrongMutual = await run('iscsi-inq', [`${url(t, 1, 'alice%alice-secret-0123@')}?target_user=target-user&target_password=wrong-secret-000`]);
    assert.notEqual(wrongMutual.code, 0, 'the initiator refuses a target that cannot prove the mutual secret');
    const wrong = await run('iscsi-inq', [url(t, 1, 'alice%not-the-secret@')]);
    assert.notEqual(wrong.code, 0);
    const none = await run('iscsi-inq', [url(t)]);
    assert.notEqual(none.code, 0);
    const list = await run(process.execPath, [MAIN, 'ctl', '--socket', t.control, 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /CHAP: mutual/);
    for (const s of ['alice-secret-0123', 'target-secret-9876', 'not-the-secret']) {
      assert.ok(!t.log().includes(s), `secret ${s} in the target's log`);
      assert.ok(!list.stdout.includes(s));
    }
    assert.match(t.log(), /login from .* refused: .*alice/);
  } finally {
    await t.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('blkback ctl --iscsi: LUNs, sessions with negotiated values, and counters of a running target', async (tc) => {
  if (stopIfMissing(tc, toolsMissing)) return;
  const t = await startTarget([], ['--read-only']);
  try {
    // a session that stays while we look
    const reader = spawn('qemu-io', ['-f', 'raw', '-r', '-c', 'read 0 64k', '-c', 'sleep 3000', url(t)], { stdio: 'ignore' });
    // Listened for at once: on a loaded machine the 3 s sleep may be over before the checks below are.
    const readerExited = new Promise((r) => reader.once('exit', r));
    await new Promise((r) => setTimeout(r, 1000));
    const list = await ok(process.execPath, [MAIN, 'ctl', '--socket', t.control, 'list']);
    assert.match(list, new RegExp(`iSCSI target ${TARGET} on 127.0.0.1:${t.port}`));
    assert.match(list, /^\s*1\s+64 MiB\s+512\s+ro\s+thick\s+file:/m);
    assert.match(list, /Normal\s+iqn\.2008-11\.org\.linux-kvm/);
    const stats = await ok(process.execPath, [MAIN, 'ctl', '--socket', t.control, 'stats', '--json']);
    const st = JSON.parse(stats) as { counters: Record<string, number>; luns: { counters: Record<string, number> }[] };
    assert.ok(st.counters.loginsSucceeded! >= 1);
    assert.ok(st.luns[0]!.counters.readCommands! >= 1);
    await readerExited;
    // writes to a read-only LUN are refused with DATA PROTECT, and nothing changes in the file
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4k', url(t)]);
    assert.notEqual(w.code, 0);
    assert.ok(
      readFileSync(t.lunFile)
        .subarray(0, 4096)
        .every((b) => b === 0),
    );
  } finally {
    await t.stop();
  }
});
