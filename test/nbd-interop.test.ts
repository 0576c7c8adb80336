// Our NBD server against the real peers over a Unix socket: libnbd's nbdinfo, nbdcopy and nbdsh,
// qemu-img and qemu-io, fio's nbd engine running the seed jobs with verify, and TLS (x509 and
// PSK) as libnbd speaks it. Each part skips without its tool (fails under CI=true).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRamDisk } from '../src/block/ram.ts';
import { loadTlsConfig } from '../src/nbd-server/tls.ts';
import { fioMissing, missingTools, run, stopIfMissing } from './helpers-tools.ts';
import { startTestServer, type TestServer } from './nbd-server-helpers.ts';

const MiB = 1024 * 1024;
const LIBNBD = 'libnbd-bin python3-libnbd';
/** nbdsh runs `python3 -m nbd`: Debian's python3 has the module, a python3 earlier in PATH may not. */
const DEBIAN_PATH = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

function uri(srv: TestServer, name: string): string {
  return `nbd+unix:///${name}?socket=${srv.socketPath}`;
}

function ok(r: { code: number; stdout: string; stderr: string }, what: string): string {
  assert.equal(r.code, 0, `${what} failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

test('nbdinfo --json and --map read the export: size, block sizes, flags, holes', async (t) => {
  if (stopIfMissing(t, missingTools(['nbdinfo'], LIBNBD))) return;
  const device = createRamDisk(8 * MiB, { name: 'ram:info' });
  await device.writev(MiB, [randomBytes(64 * 1024)]);
  const srv = await startTestServer([
    { name: 'disk', device, description: 'for nbdinfo' },
    { name: 'ro', readOnly: true },
  ]);
  try {
    const info = JSON.parse(ok(await run('nbdinfo', ['--json', uri(srv, 'disk')]), 'nbdinfo --json')) as {
      exports: Record<string, unknown>[];
      protocol: string;
    };
    const e = info.exports[0]!;
    assert.equal(info.protocol, 'newstyle-fixed');
    assert.equal(e['export-size'], 8 * MiB);
    assert.equal(e['description'], 'for nbdinfo');
    assert.equal(e['block_size_minimum'], 512);
    assert.equal(e['block_size_maximum'], 32 * MiB);
    assert.equal(e['is_read_only'], false);
    assert.equal(e['can_multi_conn'], true);
    assert.equal(e['can_trim'], true);
    assert.deepEqual(e['contexts'], ['base:allocation']);
    const ro = JSON.parse(ok(await run('nbdinfo', ['--json', uri(srv, 'ro')]), 'nbdinfo ro')) as { exports: Record<string, unknown>[] };
    assert.equal(ro.exports[0]!['is_read_only'], true);
    assert.equal(ro.exports[0]!['can_fua'], false);

    const map = ok(await run('nbdinfo', ['--map', uri(srv, 'disk')]), 'nbdinfo --map')
      .trim()
      .split('\n')
      .map((line) => line.trim().split(/\s+/));
    assert.deepEqual(
      map.map((f) => [Number(f[0]), Number(f[1]), Number(f[2])]),
      [
        [0, MiB, 3],
        [MiB, 64 * 1024, 0],
        [MiB + 64 * 1024, 7 * MiB - 64 * 1024, 3],
      ],
    );
    const list = ok(await run('nbdinfo', ['--list', '--json', `nbd+unix://?socket=${srv.socketPath}`]), 'nbdinfo --list');
    assert.deepEqual(
      (JSON.parse(list) as { exports: { 'export-name': string }[] }).exports.map((x) => x['export-name']),
      ['disk', 'ro'],
    );
  } finally {
    await srv.close();
  }
});

test('nbdcopy round-trips a random image byte for byte, over several connections', async (t) => {
  if (stopIfMissing(t, missingTools(['nbdcopy'], LIBNBD))) return;
  const srv = await startTestServer([{ name: 'disk', device: createRamDisk(16 * MiB) }]);
  try {
    const image = randomBytes(16 * MiB);
    image.fill(0, 4 * MiB, 8 * MiB); // a zero run, which nbdcopy sends as zeroes or skips
    const src = join(srv.dir, 'src.img');
    const dst = join(srv.dir, 'dst.img');
    writeFileSync(src, image);
    ok(await run('nbdcopy', ['--connections=4', '--requests=16', src, uri(srv, 'disk')]), 'nbdcopy to the server');
    ok(await run('nbdcopy', ['--connections=2', uri(srv, 'disk'), dst]), 'nbdcopy from the server');
    assert.ok(readFileSync(dst).equals(image), 'the copy back equals the image');
  } finally {
    await srv.close();
  }
});

test('qemu-img convert, compare and info, and qemu-io with nbd+unix://', async (t) => {
  if (stopIfMissing(t, missingTools(['qemu-img', 'qemu-io'], 'qemu-utils'))) return;
  const srv = await startTestServer([{ name: 'disk', device: createRamDisk(8 * MiB) }]);
  try {
    const src = join(srv.dir, 'src.img');
    writeFileSync(src, randomBytes(8 * MiB));
    const target = uri(srv, 'disk');
    const info = JSON.parse(ok(await run('qemu-img', ['info', '--output=json', target]), 'qemu-img info')) as { 'virtual-size': number };
    assert.equal(info['virtual-size'], 8 * MiB);
    ok(await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, target]), 'qemu-img convert');
    ok(await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, target]), 'qemu-img compare');
    const io = ok(
      await run('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0xa5 1M 192k',
        '-c',
        'write -z 2M 64k',
        '-c',
        'flush',
        '-c',
        'read -P 0xa5 1M 192k',
        '-c',
        'read -P 0 2M 64k',
        target,
      ]),
      'qemu-io',
    );
    assert.doesNotMatch(io, /Pattern verification failed|error/i, io);
    // And a byte changed through qemu-io makes compare see a difference: compare can fail.
    const differs = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, target]);
    assert.equal(differs.code, 1, differs.stdout);
  } finally {
    await srv.close();
  }
});

test('nbdsh: zero-length requests, requests past the end, unaligned ones, FUA on a read-only export, a client gone mid-reply', async (t) => {
  if (stopIfMissing(t, missingTools(['nbdsh'], LIBNBD))) return;
  const srv = await startTestServer([
    { name: 'disk', device: createRamDisk(4 * MiB) },
    { name: 'ro', readOnly: true },
    { name: 'big', device: createRamDisk(64 * MiB) },
  ]);
  try {
    const script = new URL('../../test/fixtures/nbd/edge-cases.py', import.meta.url).pathname;
    const code = `import sys; sys.argv = ['edge-cases', '${uri(srv, 'ro')}', '${uri(srv, 'big')}']; exec(open('${script}').read())`;
    const r = await run('nbdsh', ['-u', uri(srv, 'disk'), '-c', code], { env: DEBIAN_PATH });
    const out = JSON.parse(ok(r, 'nbdsh').trim().split('\n').at(-1)!) as Record<string, number | string | boolean>;
    // libnbd names the error the server answered (nbd.Error.errno); 0: the request succeeded.
    assert.deepEqual(out, {
      size: 4 * MiB,
      minimum: 512,
      zero_length_read: 0,
      zero_length_write: 0,
      read_past_end: 'EINVAL',
      read_straddling_end: 'EINVAL',
      write_past_end: 'ENOSPC',
      unaligned_read: 'EINVAL',
      unaligned_length_write: 'EINVAL',
      trim_past_end: 'EINVAL',
      zero_past_end: 'ENOSPC',
      block_status_past_end: 'EINVAL',
      read_back_ok: true,
      ro_is_read_only: true,
      ro_can_fua: false,
      ro_write: 'EPERM',
      ro_write_fua: 'EPERM',
      ro_trim: 'EPERM',
      ro_read_fua: 'EINVAL',
    });
    // The client that left mid-reply took nothing else down.
    const deadline = Date.now() + 5000;
    while (srv.server.connectionCount > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(srv.server.connectionCount, 0);
    const again = await run('nbdsh', ['-u', uri(srv, 'big'), '-c', 'print(len(h.pread(4096, 0)))'], { env: DEBIAN_PATH });
    assert.equal(ok(again, 'nbdsh after').trim(), '4096');
  } finally {
    await srv.close();
  }
});

/** A seed job for fio's nbd engine that verifies its own data (each job in its own region). */
function deriveVerifyingJob(seed: string, nbdUri: string, bytesPerJob: number): string {
  const out: string[] = [];
  for (const raw of seed.split('\n')) {
    const line = raw.trim();
    const key = line.includes('=') && !line.startsWith('#') ? line.slice(0, line.indexOf('=')).trim() : '';
    if (key === 'description' || /^write_\w+_log$/.test(key) || key === 'rwmixread') continue;
    if (key === 'ioengine') out.push('ioengine=nbd', `uri=${nbdUri}`);
    else if (key === 'rw')
      out.push('rw=randwrite'); // randw is not fio 3.33's; a verify needs each block written once
    else if (key === 'size') out.push(`size=${bytesPerJob}`, `offset_increment=${bytesPerJob}`);
    else out.push(raw);
  }
  // verify_state_save=0: fio would otherwise leave local-<job>-N-verify.state files in the cwd
  out.push('verify=crc32c', 'verify_fatal=1', 'verify_state_save=0');
  return `${out.join('\n')}\n`;
}

test('fio --ioengine=nbd runs both seed jobs (derived copies) and verifies every block', async (t) => {
  if (stopIfMissing(t, fioMissing())) return;
  const srv = await startTestServer([{ name: 'disk', device: createRamDisk(64 * MiB) }]);
  try {
    for (const seed of ['randw', 'iometer']) {
      const text = readFileSync(new URL(`../../jobs/${seed}.fio`, import.meta.url), 'utf8');
      const job = deriveVerifyingJob(text, uri(srv, 'disk'), 8 * MiB);
      assert.match(job, /ioengine=nbd\n/);
      assert.doesNotMatch(job, /ioengine=libaio|rw=randw\n/);
      const path = join(srv.dir, `${seed}.fio`);
      writeFileSync(path, job);
      const r = await run('fio', ['--output-format=json', `--output=${path}.json`, path], { timeoutMs: 120_000 });
      ok(r, `fio ${seed}`);
      const result = JSON.parse(readFileSync(`${path}.json`, 'utf8')) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] };
      const jobs = result.jobs;
      assert.equal(jobs.length, seed === 'randw' ? 4 : 2);
      for (const j of jobs) {
        assert.equal(j.error, 0);
        assert.equal(j.write.io_bytes, 8 * MiB, `${seed}: each job writes its whole region`);
        assert.equal(j.read.io_bytes, 8 * MiB, `${seed}: and reads it all back to verify`);
      }
    }
  } finally {
    await srv.close();
  }
});

function makeCertificates(dir: string): Promise<void> {
  const steps: string[][] = [
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=blkback test CA'],
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=localhost'],
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'server-cert.pem', '-days', '2'],
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client-key.pem', '-out', 'client.csr', '-subj', '/CN=client'],
    ['x509', '-req', '-in', 'client.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'client-cert.pem', '-days', '2'],
  ];
  return steps.reduce<Promise<void>>(
    (previous, args) =>
      previous.then(async () => {
        const r = await run('sh', ['-c', `cd "${dir}" && openssl "$@"`, 'openssl', ...args]);
        assert.equal(r.code, 0, r.stderr);
      }),
    Promise.resolve(),
  );
}

test('TLS with x509: nbdinfo and nbdcopy over nbds+unix:// with client certificates; --tls require refuses a plain client', async (t) => {
  if (stopIfMissing(t, missingTools(['nbdinfo', 'nbdcopy', 'openssl'], `${LIBNBD} openssl`))) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-nbd-pki-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await makeCertificates(dir);
  // libnbd looks for ca-cert.pem, client-cert.pem and client-key.pem in one directory.
  const clientDir = join(dir, 'client');
  mkdirSync(clientDir);
  for (const f of ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']) writeFileSync(join(clientDir, f), readFileSync(join(dir, f)));
  const tls = loadTlsConfig('require', { cert: join(dir, 'server-cert.pem'), key: join(dir, 'server-key.pem'), ca: join(dir, 'ca-cert.pem') });
  const srv = await startTestServer([{ name: 'disk', device: createRamDisk(8 * MiB) }], tls);
  try {
    const secure = `nbds+unix:///disk?socket=${srv.socketPath}&tls-certificates=${clientDir}`;
    const info = JSON.parse(ok(await run('nbdinfo', ['--json', secure]), 'nbdinfo over TLS')) as { TLS: boolean; exports: Record<string, unknown>[] };
    assert.equal(info.TLS, true);
    assert.equal(info.exports[0]!['export-size'], 8 * MiB);
    const image = randomBytes(8 * MiB);
    const src = join(srv.dir, 'src.img');
    const dst = join(srv.dir, 'dst.img');
    writeFileSync(src, image);
    ok(await run('nbdcopy', [src, secure]), 'nbdcopy to the server over TLS');
    ok(await run('nbdcopy', [secure, dst]), 'nbdcopy back over TLS');
    assert.ok(readFileSync(dst).equals(image));
    assert.ok(srv.server.counters.tlsHandshakes >= 3);

    const plain = await run('nbdinfo', [uri(srv, 'disk')]);
    assert.notEqual(plain.code, 0, 'a plain client gets nothing from --tls require');
    // A client certificate the CA did not sign is refused in the TLS handshake.
    const rogueDir = join(dir, 'rogue');
    mkdirSync(rogueDir);
    const rogue = await run('sh', [
      '-c',
      `cd "${rogueDir}" && openssl req -x509 -newkey rsa:2048 -nodes -keyout client-key.pem -out client-cert.pem -days 2 -subj /CN=rogue`,
    ]);
    assert.equal(rogue.code, 0, rogue.stderr);
    writeFileSync(join(rogueDir, 'ca-cert.pem'), readFileSync(join(dir, 'ca-cert.pem')));
    const refused = await run('nbdinfo', [`nbds+unix:///disk?socket=${srv.socketPath}&tls-certificates=${rogueDir}`]);
    assert.notEqual(refused.code, 0, 'a certificate from another CA is refused');
    assert.ok(srv.server.counters.tlsFailures >= 1);
  } finally {
    await srv.close();
  }
});

test('TLS with a pre-shared key (psktool format): nbdinfo and nbdcopy with tls-psk-file=', async (t) => {
  if (stopIfMissing(t, missingTools(['nbdinfo', 'nbdcopy'], LIBNBD))) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-nbd-psk-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pskFile = join(dir, 'keys.psk');
  const otherFile = join(dir, 'other.psk');
  writeFileSync(pskFile, `# made like psktool -u alice\nalice:${randomBytes(32).toString('hex')}\n`);
  writeFileSync(otherFile, `alice:${randomBytes(32).toString('hex')}\n`);
  const srv = await startTestServer([{ name: 'disk', device: createRamDisk(4 * MiB) }], loadTlsConfig('require', { psk: pskFile }));
  try {
    const secure = `nbds+unix://alice@/disk?socket=${srv.socketPath}&tls-psk-file=${pskFile}`;
    const info = JSON.parse(ok(await run('nbdinfo', ['--json', secure]), 'nbdinfo over TLS-PSK')) as { TLS: boolean };
    assert.equal(info.TLS, true);
    const image = randomBytes(4 * MiB);
    const src = join(dir, 'src.img');
    const dst = join(dir, 'dst.img');
    writeFileSync(src, image);
    ok(await run('nbdcopy', [src, secure]), 'nbdcopy over TLS-PSK');
    ok(await run('nbdcopy', [secure, dst]), 'nbdcopy back');
    assert.ok(readFileSync(dst).equals(image));
    const wrongKey = await run('nbdinfo', [`nbds+unix://alice@/disk?socket=${srv.socketPath}&tls-psk-file=${otherFile}`]);
    assert.notEqual(wrongKey.code, 0, 'a wrong key is refused');
  } finally {
    await srv.close();
  }
});
