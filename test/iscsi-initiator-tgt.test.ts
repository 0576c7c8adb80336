// The iSCSI initiator (src/iscsi-initiator) against Debian's tgtd, a target we did not write: data
// integrity at QD 32 with writes past FirstBurstLength (R2T), digests, flush, a thin LUN's UNMAP,
// login failures (no such target, wrong CHAP secret) and CHAP success, a readonly=1 LUN opening
// read-only (MODE SENSE's WP bit). Needs root and tgt; outside
// CI a missing tool skips (saying which), under CI=true it fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTgt, tgtUnavailable } from '../src/bench/iscsi-tgt.ts';
import type { TgtTarget } from '../src/bench/iscsi-tgt.ts';
import type { LunMode } from '../src/bench/iscsi-target.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import { WRITE_FUA } from '../src/block/types.ts';
import type { IscsiBlockDevice } from '../src/iscsi-initiator/device.ts';
import { stopIfMissing } from './helpers-tools.ts';
import { randomIntegrity, writeReadBack } from './iscsi-initiator-helpers.ts';

const MiB = 1 << 20;
const DISK = 32 * MiB;

function missing(): { what: string; install: string } | undefined {
  const why = tgtUnavailable();
  return why === null ? undefined : { what: why, install: 'apt-get install tgt; run as root' };
}

async function withTgt(mode: LunMode, fn: (t: TgtTarget, dir: string, file: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-init-tgt-'));
  const file = join(dir, 'lun.img');
  writeFileSync(file, '');
  truncateSync(file, DISK); // sparse
  const t = await startTgt({ backingFile: file, mode });
  try {
    await fn(t, dir, file);
  } finally {
    await t.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function open(spec: string): Promise<IscsiBlockDevice> {
  return (await openBlockDevice(spec)) as IscsiBlockDevice;
}

test('tgt: random writes at QD 32 past FirstBurstLength read back equal, in the backing file too; flush and FUA', { timeout: 60_000 }, async (t) => {
  if (stopIfMissing(t, missing())) return;
  await withTgt('thick', async (tgt, _dir, file) => {
    const dev = await open(tgt.url);
    try {
      assert.equal(dev.info.size, DISK);
      assert.equal(dev.info.canDiscard, false);
      const p = dev.parameters!;
      await randomIntegrity(dev, { seedBytes: randomBytes(32), rounds: 2, depth: 32, maxBytes: Math.max(4 * p.firstBurstLength, 256 * 1024) });
      assert.ok(dev.counters.r2ts > 0, 'R2Ts answered');
      assert.ok(dev.counters.immediateBytes > 0, 'immediate data used');
      const fua = randomBytes(8192);
      await dev.writev(DISK - 8192, [fua], WRITE_FUA);
      await dev.flush();
      assert.deepEqual(readFileSync(file).subarray(DISK - 8192), fua, 'tgt wrote our bytes to its backing file');
    } finally {
      await dev.close();
    }
  });
});

test('tgt: CRC32C digests; UNMAP on a thin LUN', { timeout: 60_000 }, async (t) => {
  if (stopIfMissing(t, missing())) return;
  await withTgt('thin', async (tgt) => {
    // tgt offers no digest unless told
    for (const key of ['HeaderDigest', 'DataDigest'])
      await tgt.admin(['--mode', 'target', '--op', 'update', '--tid', '1', '--name', key, '--value', 'CRC32C,None']);
    const dev = await open(`${tgt.url}?digest=crc32c`);
    try {
      assert.equal(dev.parameters!.headerDigest, true);
      assert.equal(dev.parameters!.dataDigest, true);
      await randomIntegrity(dev, { seedBytes: randomBytes(32), rounds: 1, depth: 32, maxBytes: 256 * 1024 });
      assert.equal(dev.info.canDiscard, true);
      const data = randomBytes(MiB);
      await dev.writev(4 * MiB, [data]);
      await dev.discard(4 * MiB, MiB / 2);
      const back = Buffer.alloc(MiB, 0xee);
      await dev.readv(4 * MiB, [back]);
      assert.ok(
        back.subarray(0, MiB / 2).every((x) => x === 0),
        'unmapped half reads zeroes',
      );
      assert.deepEqual(back.subarray(MiB / 2), data.subarray(MiB / 2));
    } finally {
      await dev.close();
    }
  });
});

test('tgt: login failures say which (no such target, wrong CHAP secret); CHAP succeeds', { timeout: 60_000 }, async (t) => {
  if (stopIfMissing(t, missing())) return;
  await withTgt('thick', async (tgt, dir) => {
    await assert.rejects(open(`iscsi://127.0.0.1:${tgt.port}/iqn.2026-12.org.blkback:nope/1`), /login failed: no such target iqn\.2026-12\.org\.blkback:nope/);
    await tgt.admin(['--mode', 'account', '--op', 'new', '--user', 'alice', '--password', 'alice-secret-0123']);
    await tgt.admin(['--mode', 'account', '--op', 'bind', '--tid', '1', '--user', 'alice']);
    const good = join(dir, 'good');
    const bad = join(dir, 'bad');
    writeFileSync(good, 'alice alice-secret-0123\n');
    writeFileSync(bad, 'alice wrong-secret-98765\n');
    await assert.rejects(open(`${tgt.url}?secret-file=${bad}`), (e: Error) => {
      assert.match(e.message, /login failed: authentication failed/);
      assert.doesNotMatch(e.message, /wrong-secret|alice-secret|\n/);
      return true;
    });
    const dev = await open(`iscsi://alice@127.0.0.1:${tgt.port}/${tgt.targetName}/1?secret-file=${good}`);
    try {
      assert.equal(dev.parameters!.authMethod, 'CHAP');
      await writeReadBack(dev, 128 * 1024);
    } finally {
      await dev.close();
    }
  });
});

test('tgt: a readonly=1 LUN opens read-only (WP from MODE SENSE): writes refused with EROFS locally, reads the backing file', {
  timeout: 60_000,
}, async (t) => {
  if (stopIfMissing(t, missing())) return;
  await withTgt('readonly', async (tgt, _dir, file) => {
    const data = randomBytes(64 * 1024);
    const fd = openSync(file, 'r+');
    try {
      writeSync(fd, data, 0, data.byteLength, MiB);
    } finally {
      closeSync(fd);
    }
    const dev = await open(tgt.url);
    try {
      assert.equal(dev.info.readOnly, true);
      const sent = dev.counters.commands;
      await assert.rejects(dev.writev(0, [Buffer.alloc(4096, 1)]), (e: Error & { errno: number }) => {
        assert.equal(e.errno, 30);
        assert.match(e.message, /write refused: read-only disk \(the target reports the LUN write-protected\)/);
        return true;
      });
      assert.equal(dev.counters.commands, sent, 'refused locally, nothing sent');
      const back = Buffer.alloc(data.byteLength);
      await dev.readv(MiB, [back]);
      assert.deepEqual(back, data);
      assert.ok(
        readFileSync(file)
          .subarray(0, 4096)
          .every((b) => b === 0),
        'the backing file was not written',
      );
    } finally {
      await dev.close();
    }
  });
});

test('tgt: mutual CHAP (an outgoing account) succeeds; a wrong target secret fails naming mutual CHAP', { timeout: 60_000 }, async (t) => {
  if (stopIfMissing(t, missing())) return;
  await withTgt('thick', async (tgt, dir) => {
    await tgt.admin(['--mode', 'account', '--op', 'new', '--user', 'alice', '--password', 'alice-secret-0123']);
    await tgt.admin(['--mode', 'account', '--op', 'bind', '--tid', '1', '--user', 'alice']);
    await tgt.admin(['--mode', 'account', '--op', 'new', '--user', 'tgt-id', '--password', 'tgt-secret-45678']);
    await tgt.admin(['--mode', 'account', '--op', 'bind', '--tid', '1', '--user', 'tgt-id', '--outgoing']);
    const own = join(dir, 'own');
    const mutual = join(dir, 'mutual');
    const wrong = join(dir, 'wrong');
    writeFileSync(own, 'alice alice-secret-0123\n');
    writeFileSync(mutual, 'tgt-id tgt-secret-45678\n');
    writeFileSync(wrong, 'tgt-id wrong-secret-98765\n');
    await assert.rejects(open(`${tgt.url}?secret-file=${own}&mutual-secret-file=${wrong}`), (e: Error) => {
      assert.match(e.message, /login failed: mutual CHAP: wrong CHAP response from the target/);
      assert.doesNotMatch(e.message, /secret-\d|\n/);
      return true;
    });
    const dev = await open(`${tgt.url}?secret-file=${own}&mutual-secret-file=${mutual}`);
    try {
      await writeReadBack(dev, 64 * 1024);
    } finally {
      await dev.close();
    }
  });
});
