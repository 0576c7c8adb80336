// The engine against in-process devices: stats, timing options, verify, sync, logs, scheduling.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { createNullDisk } from '../src/block/null.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { BlockError, Errno } from '../src/internal/errors.ts';
import { assignGroups, JobRunner, runJob, runJobs } from '../src/fio/engine/index.ts';
import { context, makeJob } from './fixtures/fio-engine/make-job.ts';

const MiB = 1 << 20;

/** A device that forwards to `inner`, with hooks around reads. */
function wrap(inner: BlockDevice, hooks: { beforeRead?(offset: number): void; delayMs?: number; failWrites?: boolean }): BlockDevice & { maxInFlight: number } {
  let inFlight = 0;
  const w = {
    name: inner.name,
    get info() {
      return inner.info;
    },
    maxInFlight: 0,
    async readv(offset: number, iov: readonly Uint8Array[]) {
      hooks.beforeRead?.(offset);
      inFlight++;
      w.maxInFlight = Math.max(w.maxInFlight, inFlight);
      if (hooks.delayMs) await new Promise((r) => setTimeout(r, hooks.delayMs));
      await inner.readv(offset, iov);
      inFlight--;
    },
    async writev(offset: number, iov: readonly Uint8Array[], flags?: number) {
      if (hooks.failWrites) throw new BlockError('BLK_ERR_TEST', 'injected', { errno: Errno.ENOSPC });
      inFlight++;
      w.maxInFlight = Math.max(w.maxInFlight, inFlight);
      if (hooks.delayMs) await new Promise((r) => setTimeout(r, hooks.delayMs));
      await inner.writev(offset, iov, flags);
      inFlight--;
    },
    flush: () => inner.flush(),
    discard: (o: number, l: number) => inner.discard(o, l),
    writeZeroes: (o: number, l: number) => inner.writeZeroes(o, l),
    close: () => inner.close(),
  };
  return w;
}

test('a read job: bytes, I/Os, issued counts, latencies and depth levels', async () => {
  const r = await runJob(makeJob({ rw: 'randread', size: 1 * MiB }), context(createRamDisk(4 * MiB)));
  assert.equal(r.error, 0);
  assert.equal(r.dirs[0].ioBytes, 1 * MiB);
  assert.equal(r.dirs[0].totalIos, 256);
  assert.deepEqual(r.issued, [256, 0, 0]);
  assert.equal(r.dirs[0].clat.count, 256);
  assert.equal(r.dirs[0].slat.count, 256);
  assert.ok(r.dirs[0].lat.mean >= r.dirs[0].clat.mean);
  assert.equal(r.dirs[1].totalIos, 0);
  assert.equal(r.iodepthLevels[0], 100, 'QD1: every I/O at depth 1');
});

test('iodepth keeps that many I/Os in flight; a sync engine caps it at 1 like fio', async () => {
  const dev = wrap(createRamDisk(8 * MiB), { delayMs: 1 });
  const r = await runJob(makeJob({ rw: 'randread', size: 1 * MiB, iodepth: 16 }), context(dev));
  assert.equal(dev.maxInFlight, 16);
  assert.ok(r.iodepthLevels[4]! > 40 && r.iodepthLevels[4] === Math.max(...r.iodepthLevels), `depth 16 share ${r.iodepthLevels[4]}`);
  const dev2 = wrap(createRamDisk(8 * MiB), {});
  await runJob(makeJob({ rw: 'randread', size: 256 * 1024, iodepth: 16, ioengine: 'psync' }), context(dev2));
  assert.equal(dev2.maxInFlight, 1);
});

test('iodepth_low: once full, the queue drains to iodepth_low before refilling', async () => {
  const dev = wrap(createNullDisk(8 * MiB), { delayMs: 1 });
  const r = await runJob(makeJob({ rw: 'randread', size: 1 * MiB, iodepth: 16, iodepthLow: 4, norandommap: true }), context(dev));
  // Refills start at depth <= 4, so a good share of submissions land at depths 5..8 and below.
  assert.ok(r.iodepthLevels[3]! + r.iodepthLevels[2]! > 15, `levels ${r.iodepthLevels.join(',')}`);
});

test('runtime with time_based loops until the time is up; ramp_time is excluded and the log clock restarts', async () => {
  const ctx = context(createRamDisk(4 * MiB));
  const t0 = performance.now();
  const r = await runJob(
    makeJob({ rw: 'randread', size: 1 * MiB, runtimeUs: 300_000, rampTimeUs: 200_000, timeBased: true, writeBwLog: 'x', logAvgMsec: 100 }),
    ctx,
  );
  const wall = performance.now() - t0;
  assert.ok(wall >= 490 && wall < 900, `wall ${wall}`);
  assert.ok(r.runtimeMs >= 300 && r.runtimeMs < 400, `runtime ${r.runtimeMs}`);
  assert.ok(r.dirs[0].ioBytes > 1 * MiB, 'time_based went over the region more than once');
  const bw = ctx.rows.filter((row) => row.kind === 'bw');
  assert.ok(bw.length >= 3 && bw.length <= 4, `${bw.length} windowed rows`);
  assert.ok(bw[0]!.time >= 100 && bw[0]!.time < 180, `first row at ${bw[0]!.time} ms after the ramp`);
  assert.ok(bw.every((row) => row.bs === 0 && row.offset === 0 && row.ddir === 0));
  const total = r.dirs[0].ioBytes / 1024 / (r.runtimeMs / 1000);
  const mean = bw.slice(0, 3).reduce((a, row) => a + row.value, 0) / 3;
  assert.ok(mean > total / 3 && mean < total * 3, `windowed KiB/s ${mean} vs ${total}`);
});

test('runtime without time_based stops at the end of the data or the time, whichever first', async () => {
  const r = await runJob(makeJob({ rw: 'read', size: 256 * 1024, runtimeUs: 5_000_000 }), context(createRamDisk(4 * MiB)));
  assert.equal(r.dirs[0].ioBytes, 256 * 1024);
  assert.ok(r.runtimeMs < 1000);
});

test('rate_iops paces each direction separately and evenly', async () => {
  const r = await runJob(
    makeJob({ rw: 'randrw', size: 4 * MiB, rateIops: [200, 200, 0], runtimeUs: 500_000, timeBased: true, iodepth: 4 }),
    context(createRamDisk(8 * MiB)),
  );
  for (const d of [0, 1] as const) {
    const iops = (r.dirs[d].totalIos * 1000) / r.runtimeMs;
    assert.ok(iops > 160 && iops < 240, `ddir ${d}: ${iops} IOPS`);
  }
});

test('rate in bytes/s paces writes', async () => {
  const r = await runJob(makeJob({ rw: 'write', size: 4 * MiB, rate: [0, 1 * MiB, 0], runtimeUs: 400_000, timeBased: true }), context(createRamDisk(8 * MiB)));
  const bw = r.dirs[1].ioBytes / (r.runtimeMs / 1000);
  assert.ok(bw > 0.8 * MiB && bw < 1.2 * MiB, `${bw} B/s`);
});

test('thinktime waits after every thinktime_blocks I/Os', async () => {
  const r = await runJob(makeJob({ rw: 'read', size: 32 * 1024, thinktimeUs: 20_000, thinktimeBlocks: 2, iodepth: 8 }), context(createRamDisk(1 * MiB)));
  assert.equal(r.dirs[0].totalIos, 8);
  assert.ok(r.runtimeMs >= 75, `runtime ${r.runtimeMs}`);
});

test('fsync=N flushes every N writes and end_fsync once more, counted in sync', async () => {
  let flushes = 0;
  const ram = createRamDisk(4 * MiB);
  const dev: BlockDevice = { ...wrap(ram, {}), flush: () => (flushes++, ram.flush()) };
  const r = await runJob(makeJob({ rw: 'write', size: 256 * 1024, fsync: 4, endFsync: true }), context(dev));
  assert.equal(r.dirs[1].totalIos, 64);
  assert.equal(flushes, 17);
  assert.equal(r.sync.totalIos, 17);
  assert.equal(r.sync.lat.count, 17);
});

for (const kind of ['crc32c', 'md5', 'crc32', 'pattern'] as const) {
  test(`verify=${kind}: writes, then reads everything back, counted in read stats`, async () => {
    const job = makeJob({
      rw: 'randwrite',
      size: 1 * MiB,
      verify: kind,
      verifyPattern: kind === 'pattern' ? Uint8Array.of(0xde, 0xad, 0xbe, 0xef) : null,
      iodepth: 4,
    });
    const r = await runJob(job, context(createRamDisk(4 * MiB)));
    assert.equal(r.error, 0, r.errorMessage);
    assert.equal(r.dirs[1].totalIos, 256);
    assert.equal(r.dirs[0].totalIos, 256);
    assert.equal(r.verifyFailures.length, 0);
  });
}

test('verify catches a corruption injected between the write and verify phases (err 84, offset, length)', async () => {
  const ram = createRamDisk(4 * MiB);
  let corrupted = false;
  const target = 40960;
  const dev = wrap(ram, {
    beforeRead: () => {
      if (corrupted) return;
      corrupted = true;
      const one = new Uint8Array(1);
      void ram.readv(target + 100, [one]);
      one[0] = one[0]! ^ 0xff;
      void ram.writev(target + 100, [one]);
    },
  });
  const job = makeJob({ name: 'vjob', rw: 'randwrite', bs: [8192, 8192, 8192], size: 1 * MiB, verify: 'crc32c' });
  const r = await runJob(job, context(dev));
  assert.equal(r.error, 84);
  assert.equal(r.verifyFailures.length, 1);
  assert.equal(r.verifyFailures[0]!.offset, target);
  assert.equal(r.verifyFailures[0]!.length, 8192);
  assert.match(r.verifyFailures[0]!.message, /^vjob: verify: bad crc32c .* offset 40960, length 8192/);
  // What fio prints on stderr: its verify line, then the error.
  assert.match(r.errorReport?.[0] ?? '', /^verify: bad crc32c .* offset 40960, length 8192/);
  assert.equal(r.errorReport?.[1], 'fio: vjob: err=84 (Invalid or incomplete multibyte or wide character): the data read back is not what was written');
  // A corrupted header is reported like fio's "bad magic header".
  const ram2 = createRamDisk(4 * MiB);
  let done2 = false;
  const dev2 = wrap(ram2, {
    beforeRead: () => {
      if (done2) return;
      done2 = true;
      void ram2.writev(0, [Uint8Array.of(0xde, 0xad)]);
    },
  });
  const r2 = await runJob(makeJob({ rw: 'write', size: 64 * 1024, verify: 'md5' }), context(dev2));
  assert.equal(r2.error, 84);
  assert.match(r2.errorMessage, /bad magic header adde, wanted acca .*offset 0, length 4096/);
});

test('do_verify=0 skips the read-back', async () => {
  const r = await runJob(makeJob({ rw: 'randwrite', size: 256 * 1024, verify: 'crc32c', doVerify: false }), context(createRamDisk(1 * MiB)));
  assert.equal(r.dirs[0].totalIos, 0);
  assert.equal(r.dirs[1].totalIos, 64);
});

test('per-I/O log rows (log_avg_msec=0): one row per I/O and kind with bs and offset; lat in ns', async () => {
  const ctx = context(createRamDisk(1 * MiB));
  await runJob(makeJob({ rw: 'randwrite', size: 64 * 1024, writeBwLog: 'a', writeLatLog: 'a', writeIopsLog: 'a', logOffset: true }), ctx);
  for (const kind of ['bw', 'iops', 'lat', 'slat', 'clat'] as const) assert.equal(ctx.rows.filter((r) => r.kind === kind).length, 16, kind);
  const clat = ctx.rows.filter((r) => r.kind === 'clat');
  assert.deepEqual(
    clat.map((r) => r.offset).sort((a, b) => a - b),
    Array.from({ length: 16 }, (_, i) => i * 4096),
  );
  assert.ok(clat.every((r) => r.bs === 4096 && r.ddir === 1 && r.value > 0 && Number.isInteger(r.value)));
  assert.ok(ctx.rows.filter((r) => r.kind === 'iops').every((r) => r.value === 1));
});

test('a device error ends the job with its errno and a message naming the I/O', async () => {
  const r = await runJob(makeJob({ rw: 'write', size: 64 * 1024 }), context(wrap(createRamDisk(1 * MiB), { failWrites: true })));
  assert.equal(r.error, Errno.ENOSPC);
  assert.match(r.errorMessage, /write offset=0, buflen=4096: injected/);
  assert.deepEqual(r.errorReport, ['fio: io_u error on file job: No space left on device: write offset=0, buflen=4096', 'fio: job: injected']);
});

test('an I/O the device refuses for not being whole blocks names the option that made it, with its line', async () => {
  const ram = createRamDisk(1 * MiB);
  const strict: BlockDevice = {
    ...ram,
    name: ram.name,
    get info() {
      return ram.info;
    },
    readv: async (offset, iov) => {
      const len = iov.reduce((n, b) => n + b.length, 0);
      if (offset % 512 !== 0 || len % 512 !== 0)
        throw new BlockError('BLK_ERR_RANGE', `${len} bytes at ${offset} is not sector-aligned`, { errno: Errno.EINVAL });
      return ram.readv(offset, iov);
    },
  };
  const origins = { bs: { where: 'jobs/x.fio:7', text: 'bs = 8k', note: "' 8k' is 8 bytes, as fio 3.33 reads it (a blank before a number hides its unit)" } };
  const job = makeJob({
    name: 'odd',
    filename: ['/dev/xvda'],
    rw: 'read',
    bs: [8, 8, 8],
    bsMin: [8, 8, 8],
    bsMax: [8, 8, 8],
    blockalign: [8, 8, 8],
    size: 4096,
    origins,
  });
  const r = await runJob(job, context(strict));
  assert.equal(r.error, Errno.EINVAL);
  assert.deepEqual(r.errorReport, [
    'fio: io_u error on file /dev/xvda: Invalid argument: read offset=0, buflen=8',
    'fio: odd: 8 bytes at 0 is not sector-aligned',
    "fio: odd: /dev/xvda takes I/O in whole 512-byte blocks, and bs=8 ('bs = 8k' at jobs/x.fio:7: ' 8k' is 8 bytes, as fio 3.33 reads it (a blank before a number hides its unit)) is not a multiple of 512",
  ]);
});

test('a slow device does not stop the clock: runtime ends the job on time; stop() ends it early', async () => {
  const slow = wrap(createRamDisk(4 * MiB), { delayMs: 40 });
  const t0 = performance.now();
  const r = await runJob(makeJob({ rw: 'randread', size: 4 * MiB, iodepth: 4, runtimeUs: 150_000, timeBased: true }), context(slow));
  const wall = performance.now() - t0;
  assert.ok(wall < 400, `wall ${wall}`);
  assert.ok(r.dirs[0].totalIos >= 8 && r.dirs[0].totalIos <= 24, `${r.dirs[0].totalIos} I/Os`);

  const runner = new JobRunner(makeJob({ rw: 'randread', size: 4 * MiB, timeBased: true, runtimeUs: 60_000_000 }), context(createRamDisk(4 * MiB)));
  const pending = runner.run();
  await new Promise((res) => setTimeout(res, 100));
  const mid = runner.progress();
  assert.ok(mid.ios[0] > 0 && !mid.done && mid.elapsedMs >= 90);
  runner.stop();
  const res = await pending;
  assert.ok(runner.progress().done);
  assert.ok(res.runtimeMs < 1000);
});

test('group ids: stonewall and new_group open groups, wait_for and clones do not', () => {
  const jobs = [
    makeJob({ name: 'a' }),
    makeJob({ name: 'b', waitFor: 'a' }),
    makeJob({ name: 'c', stonewall: true, threadNumber: 3 }),
    makeJob({ name: 'c', stonewall: true, cloneIndex: 1, threadNumber: 4 }),
    makeJob({ name: 'd', newGroup: true }),
    makeJob({ name: 'e', fileIndex: 1 }),
  ];
  assert.deepEqual(assignGroups(jobs), [0, 0, 1, 1, 2, 3]);
});

test('runJobs: jobs run together; stonewall waits for all earlier jobs; wait_for waits for the named one; startdelay', async () => {
  const dev = createRamDisk(16 * MiB);
  const spans = new Map<string, { start: number; end: number }>();
  const base = { rw: 'read' as const, size: 1 * MiB, rateIops: [2000, 0, 0] as [number, number, number] };
  const jobs = [
    makeJob({ ...base, name: 'a', threadNumber: 1 }),
    makeJob({ ...base, name: 'b', threadNumber: 2, offset: 1 * MiB, size: 512 * 1024 }),
    makeJob({ ...base, name: 'c', threadNumber: 3, waitFor: 'b', offset: 2 * MiB, size: 256 * 1024 }),
    makeJob({ ...base, name: 'd', threadNumber: 4, stonewall: true, offset: 3 * MiB, size: 128 * 1024, startDelayUs: [50_000, 50_000] }),
  ];
  const results = await runJobs(jobs, context(dev), {
    onStart: (r) => spans.set(r.job.name, { start: performance.now(), end: 0 }),
    onEnd: (res) => (spans.get(res.job.name)!.end = performance.now()),
  });
  assert.deepEqual(
    results.map((r) => r.groupId),
    [0, 0, 0, 1],
  );
  const s = (n: string) => spans.get(n)!;
  // Together: each starts before the other is a quarter through (rate-limited, a runs about 130 ms;
  // a fixed bound in ms failed on a loaded CI machine).
  const aRun = s('a').end - s('a').start;
  assert.ok(
    Math.abs(s('a').start - s('b').start) < aRun / 4,
    `a and b start together (${(s('b').start - s('a').start).toFixed(1)} ms apart, a ran ${aRun.toFixed(1)} ms)`,
  );
  assert.ok(s('c').start >= s('b').end - 1 && s('c').start < s('a').end, 'c waits for b only');
  assert.ok(s('d').start >= s('a').end - 1 && s('d').start >= s('c').end - 1, 'd waits for everything before it');
  const dRun = results[3]!;
  assert.ok(dRun.startedAt - (results[0]!.startedAt + results[0]!.runtimeMs) >= 45, 'startdelay after the stonewall');
});
