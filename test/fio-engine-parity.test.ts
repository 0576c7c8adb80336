// Behaviour parity with real fio 3.33: the same job run by fio (psync on a file in /dev/shm, per-I/O
// clat log with log_offset=1 for each I/O's direction, size and offset) and by our engine on a RAM
// disk. Tolerances: read share +-3 points, block-size shares +-4 points, mean I/O size within 12%
// (fio itself moves 4.5-5.0 KB with the seed on the iometer mix), offset deciles +-4 points,
// sequential orders exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRamDisk } from '../src/block/ram.ts';
import { runJob } from '../src/fio/engine/index.ts';
import type { FioJob } from '../src/fio/job.ts';
import { context, makeJob, split } from './fixtures/fio-engine/make-job.ts';
import { fioMissing, stopIfMissing } from './helpers-tools.ts';

const MiB = 1 << 20;
const IOMETER = '512/10:1k/5:2k/5:4k/60:8k/2:16k/4:32k/4:64k/10';
const IOMETER_BYTES = '512/10:1024/5:2048/5:4096/60:8192/2:16384/4:32768/4:65536/10';

// The tolerances were measured against fio 3.33: another version skips (fails under CI=true).
const fio = fioMissing();

interface Io {
  ddir: number;
  len: number;
  offset: number;
}

/** Runs fio with the given options on a 16 MiB file in /dev/shm; returns its I/Os in completion order. */
function runFio(args: string[], size = 16 * MiB): Io[] {
  const dir = mkdtempSync(join(tmpdir(), 'fio-parity-'));
  const file = `/dev/shm/blkback-parity-${process.pid}.dat`;
  try {
    execFileSync(
      'fio',
      [
        '--name=p',
        `--filename=${file}`,
        `--size=${size}`,
        '--ioengine=psync',
        '--write_lat_log=p',
        '--log_offset=1',
        ...args,
        `--output=${join(dir, 'out.txt')}`,
      ],
      {
        cwd: dir,
        timeout: 20_000,
        stdio: 'ignore',
      },
    );
    return readFileSync(join(dir, 'p_clat.1.log'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => {
        const f = line.split(',').map((x) => Number(x.trim()));
        return { ddir: f[2]!, len: f[3]!, offset: f[4]! };
      });
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(file, { force: true });
  }
}

async function runOurs(job: FioJob, size = 16 * MiB): Promise<Io[]> {
  const ctx = context(createRamDisk(size));
  await runJob({ ...job, writeLatLog: 'p', logOffset: true, logAvgMsec: 0 }, ctx);
  return ctx.rows.filter((r) => r.kind === 'clat').map((r) => ({ ddir: r.ddir, len: r.bs, offset: r.offset }));
}

const readShare = (l: Io[]): number => l.filter((io) => io.ddir === 0).length / l.length;
const meanLen = (l: Io[]): number => l.reduce((a, io) => a + io.len, 0) / l.length;
function shares(l: Io[], key: (io: Io) => number): Map<number, number> {
  const m = new Map<number, number>();
  for (const io of l) m.set(key(io), (m.get(key(io)) ?? 0) + 1 / l.length);
  return m;
}
function assertShares(ours: Map<number, number>, theirs: Map<number, number>, tol: number, what: string): void {
  for (const k of new Set([...ours.keys(), ...theirs.keys()])) {
    const a = ours.get(k) ?? 0;
    const b = theirs.get(k) ?? 0;
    assert.ok(Math.abs(a - b) <= tol, `${what} ${k}: ours ${(a * 100).toFixed(1)}% fio ${(b * 100).toFixed(1)}%`);
  }
}

test('iometer bssplit randrw 80/20 with the random map: mix, trimmed sizes (~4.8 KB) and bytes match fio', async (t) => {
  if (stopIfMissing(t, fio)) return;
  const theirs = runFio(['--rw=randrw', '--rwmixread=80', `--bssplit=${IOMETER}`]);
  const iom = split(IOMETER_BYTES);
  const ours = await runOurs(makeJob({ rw: 'randrw', rwmixread: 80, bssplit: [iom, iom, []], size: 16 * MiB }));
  const total = (l: Io[]): number => l.reduce((a, io) => a + io.len, 0);
  assert.equal(total(theirs), 16 * MiB);
  assert.equal(total(ours), 16 * MiB);
  assert.ok(Math.abs(readShare(ours) - readShare(theirs)) <= 0.03, `reads ours ${readShare(ours)} fio ${readShare(theirs)}`);
  const mo = meanLen(ours);
  const mt = meanLen(theirs);
  assert.ok(mt > 4300 && mt < 5300, `fio mean ${mt}`);
  assert.ok(Math.abs(mo - mt) / mt < 0.12, `mean I/O ours ${mo} fio ${mt}`);
  // Sizes bucketed as the nominal ones they were cut from (a trimmed I/O falls in the bucket below).
  const bucket = (io: Io): number => 2 ** Math.floor(Math.log2(io.len));
  assertShares(shares(ours, bucket), shares(theirs, bucket), 0.04, 'size bucket');
  const decile = (io: Io): number => Math.floor((io.offset / (16 * MiB)) * 10);
  assertShares(shares(ours, decile), shares(theirs, decile), 0.04, 'offset decile');
});

test('bsrange 1k-4k randread (norandommap): size histogram and offset spread match fio', async (t) => {
  if (stopIfMissing(t, fio)) return;
  const theirs = runFio(['--rw=randread', '--bsrange=1k-4k', '--norandommap', '--number_ios=4000']);
  const ours = await runOurs(
    makeJob({ rw: 'randread', bsMin: [1024, 1024, 1024], bsMax: [4096, 4096, 4096], norandommap: true, numberIos: 4000, size: 16 * MiB }),
  );
  assert.equal(ours.length, theirs.length);
  assertShares(
    shares(ours, (io) => io.len),
    shares(theirs, (io) => io.len),
    0.04,
    'size',
  );
  const decile = (io: Io): number => Math.floor((io.offset / (16 * MiB)) * 10);
  assertShares(shares(ours, decile), shares(theirs, decile), 0.04, 'offset decile');
  for (const l of [ours, theirs]) assert.ok(l.every((io) => io.offset % 1024 === 0));
});

test('randrw rwmixread=30 by I/O count and per-direction bs match fio', async (t) => {
  if (stopIfMissing(t, fio)) return;
  const theirs = runFio(['--rw=randrw', '--rwmixread=30', '--bs=4k,16k', '--norandommap', '--number_ios=6000']);
  const ours = await runOurs(makeJob({ rw: 'randrw', rwmixread: 30, bs: [4096, 16384, 16384], norandommap: true, numberIos: 6000, size: 16 * MiB }));
  assert.ok(Math.abs(readShare(ours) - readShare(theirs)) <= 0.03, `reads ours ${readShare(ours)} fio ${readShare(theirs)}`);
  for (const l of [ours, theirs]) assert.ok(l.every((io) => io.len === (io.ddir === 0 ? 4096 : 16384)));
});

test('sequential orders match fio exactly: write:4k, read:-8k, and a random-map randread covers every block', async (t) => {
  if (stopIfMissing(t, fio)) return;
  const offsets = (l: Io[]): number[] => l.map((io) => io.offset);
  assert.deepEqual(offsets(await runOurs(makeJob({ rw: 'write', rwSuffix: 4096, size: 65536 }), 65536)), offsets(runFio(['--rw=write:4k'], 65536)));
  assert.deepEqual(offsets(await runOurs(makeJob({ rw: 'read', rwSuffix: -8192, size: 65536 }), 65536)), offsets(runFio(['--rw=read:-8k'], 65536)));
  const sorted = (l: Io[]): number[] => offsets(l).sort((a, b) => a - b);
  assert.deepEqual(sorted(await runOurs(makeJob({ rw: 'randread', size: 1 * MiB }), 1 * MiB)), sorted(runFio(['--rw=randread'], 1 * MiB)));
});

test('randrepeat: two runs of ours issue identical offsets', async () => {
  const iom = split(IOMETER_BYTES);
  const job = makeJob({ rw: 'randrw', rwmixread: 80, bssplit: [iom, iom, []], size: 4 * MiB });
  const a = await runOurs(job, 4 * MiB);
  const b = await runOurs(job, 4 * MiB);
  assert.ok(a.length > 500);
  assert.deepEqual(a, b);
});
