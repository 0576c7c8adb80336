// The engine's I/O pattern, I/O by I/O (no device): fio 3.33's offsets, sizes, mix and loops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jobGeometry, RandomMap, WorkloadPattern } from '../src/fio/engine/index.ts';
import type { FioJob } from '../src/fio/job.ts';
import { makeJob, split, trace } from './fixtures/fio-engine/make-job.ts';

const MiB = 1 << 20;
const IOMETER = '512/10:1024/5:2048/5:4096/60:8192/2:16384/4:32768/4:65536/10';

function ios(job: FioJob, deviceSize = 64 * MiB, seed = 0x89): { ddir: number; offset: number; len: number }[] {
  return trace(new WorkloadPattern(job, jobGeometry(job, deviceSize), seed));
}

test('random map: setRun stops at the first used block, nextFree wraps, full map reports -1', () => {
  const m = new RandomMap(100);
  assert.equal(m.setRun(10, 5), 5);
  assert.equal(m.setRun(8, 5), 2, 'stops at block 10, which is used');
  assert.equal(m.nextFree(9), 15);
  assert.equal(m.setRun(95, 10), 5, 'stops at the end of the map');
  assert.equal(m.nextFree(97), 0, 'wraps to the start');
  for (let b = 0; b < 100; b++) m.setRun(b, 1);
  assert.ok(m.isFull);
  assert.equal(m.nextFree(3), -1);
  m.reset();
  assert.equal(m.usedBlocks, 0);
  assert.equal(m.nextFree(99), 99);
});

test('rw=read walks the region in order once; offset and size bound it', () => {
  const list = ios(makeJob({ rw: 'read', offset: 1 * MiB, size: 256 * 1024 }));
  assert.equal(list.length, 64);
  list.forEach((io, i) => {
    assert.equal(io.offset, 1 * MiB + i * 4096);
    assert.equal(io.len, 4096);
    assert.equal(io.ddir, 0);
  });
});

test('rw=write:4k skips 4k after each I/O; stops at the end of a region inside the device, wraps at the device end', () => {
  const list = ios(makeJob({ rw: 'write', rwSuffix: 4096, size: 65536 }));
  assert.deepEqual(
    list.map((io) => io.offset / 1024),
    [0, 8, 16, 24, 32, 40, 48, 56],
  );
  assert.ok(list.every((io) => io.ddir === 1));
  const whole = ios(makeJob({ rw: 'write', rwSuffix: 4096, size: 65536 }), 65536);
  assert.deepEqual(
    whole.map((io) => io.offset / 1024),
    [0, 8, 16, 24, 32, 40, 48, 56, 0, 8, 16, 24, 32, 40, 48, 56],
    'ending at the device end it wraps (fio: 16 I/Os on a 64k file)',
  );
});

test('rw=read:-8k walks backwards and wraps to the end, as fio 3.33 does', () => {
  const list = ios(makeJob({ rw: 'read', rwSuffix: -8192, size: 65536 }));
  assert.deepEqual(
    list.map((io) => io.offset / 1024),
    [0, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0],
  );
});

test('rw=randread:4 issues runs of 4 consecutive blocks from each random offset', () => {
  const list = ios(makeJob({ rw: 'randread', rwSuffix: 4, size: 4 * MiB, norandommap: true, numberIos: 400 }));
  assert.equal(list.length, 400);
  let randomStarts = 0;
  for (let i = 0; i < list.length; i++) {
    if (i % 4 === 0) {
      randomStarts++;
      continue;
    }
    assert.equal(list[i]!.offset, list[i - 1]!.offset + 4096, `I/O ${i} follows its predecessor`);
  }
  const starts = new Set(list.filter((_, i) => i % 4 === 0).map((io) => io.offset));
  assert.ok(starts.size > randomStarts * 0.9, 'the run starts are random');
});

test('rw=rw keeps one sequential position per direction and stops at size in total', () => {
  const list = ios(makeJob({ rw: 'rw', size: 1 * MiB }));
  assert.equal(
    list.reduce((a, io) => a + io.len, 0),
    1 * MiB,
  );
  for (const d of [0, 1]) {
    const offs = list.filter((io) => io.ddir === d).map((io) => io.offset);
    offs.forEach((o, i) => assert.equal(o, i * 4096));
  }
});

test('rwmixread counts I/Os: 30% reads of 20000 I/Os with mixed block sizes', () => {
  const job = makeJob({ rw: 'randrw', rwmixread: 30, bs: [4096, 65536, 4096], size: 64 * MiB, norandommap: true, numberIos: 20000 });
  const list = ios(job);
  const reads = list.filter((io) => io.ddir === 0).length / list.length;
  assert.ok(Math.abs(reads - 0.3) < 0.015, `read share ${reads}`);
  assert.ok(
    list.every((io) => io.len === (io.ddir === 0 ? 4096 : 65536)),
    'bs per direction',
  );
});

test('random map: every block exactly once per pass; norandommap repeats blocks', () => {
  const withMap = ios(makeJob({ rw: 'randread', size: 1 * MiB }));
  assert.equal(withMap.length, 256);
  assert.equal(new Set(withMap.map((io) => io.offset)).size, 256);
  const noMap = ios(makeJob({ rw: 'randread', size: 1 * MiB, norandommap: true }));
  assert.equal(noMap.length, 256);
  const unique = new Set(noMap.map((io) => io.offset)).size;
  // fio 3.33 measured 159/256 unique; a uniform draw gives 256*(1-1/e) = 162 on average.
  assert.ok(unique > 140 && unique < 185, `unique ${unique}`);
});

test('random map trims I/Os to the free run: the iometer bssplit averages about 4.8 KB, every byte once', () => {
  const sizes = split(IOMETER);
  const job = makeJob({ rw: 'randrw', rwmixread: 80, bssplit: [sizes, sizes, []], size: 16 * MiB });
  for (const seed of [0x89, 7]) {
    const list = ios(job, 64 * MiB, seed);
    const total = list.reduce((a, io) => a + io.len, 0);
    assert.equal(total, 16 * MiB, 'the pass covers the region exactly');
    const mean = total / list.length;
    // fio 3.33 on the same job: 4492..5034 bytes per I/O over seeds (nominal mix: 11571).
    assert.ok(mean > 4300 && mean < 5300, `mean ${mean}`);
    const seen = new Uint8Array((16 * MiB) / 512);
    for (const io of list) {
      assert.equal(io.offset % 512, 0);
      assert.equal(io.len % 512, 0);
      assert.ok(io.offset + io.len <= 16 * MiB);
      for (let b = io.offset / 512; b < (io.offset + io.len) / 512; b++) {
        assert.equal(seen[b], 0, `block ${b} hit twice`);
        seen[b] = 1;
      }
    }
    assert.ok(
      list.some((io) => !sizes.some((s) => s.bs === io.len)),
      'some I/Os were trimmed to odd sizes',
    );
  }
});

test('bssplit without the map keeps the nominal shares; per direction', () => {
  const job = makeJob({
    rw: 'randrw',
    bssplit: [split('4096/50:8192/50'), split('16384/100'), []],
    size: 64 * MiB,
    norandommap: true,
    numberIos: 20000,
  });
  const list = ios(job);
  const reads = list.filter((io) => io.ddir === 0);
  const share4k = reads.filter((io) => io.len === 4096).length / reads.length;
  assert.ok(Math.abs(share4k - 0.5) < 0.03, `4k share ${share4k}`);
  assert.ok(list.filter((io) => io.ddir === 1).every((io) => io.len === 16384));
  const iom = split(IOMETER);
  const nominal = ios(makeJob({ rw: 'randread', bssplit: [iom, iom, []], size: 256 * MiB, norandommap: true, numberIos: 20000 }), 256 * MiB);
  const mean = nominal.reduce((a, io) => a + io.len, 0) / nominal.length;
  assert.ok(Math.abs(mean - 11571) < 600, `nominal mean ${mean}`);
});

test('bsrange draws multiples of the low end uniformly, aligned to it', () => {
  const list = ios(makeJob({ rw: 'randread', bsMin: [1024, 1024, 1024], bsMax: [4096, 4096, 4096], size: 64 * MiB, norandommap: true, numberIos: 6000 }));
  const counts = new Map<number, number>();
  for (const io of list) {
    assert.equal(io.len % 1024, 0);
    assert.equal(io.offset % 1024, 0);
    counts.set(io.len, (counts.get(io.len) ?? 0) + 1);
  }
  assert.deepEqual(
    [...counts.keys()].sort((a, b) => a - b),
    [1024, 2048, 3072, 4096],
  );
  assert.equal(list.length, 6000);
  for (const c of counts.values()) assert.ok(Math.abs(c / list.length - 0.25) < 0.03, `share ${c / list.length}`);
});

test('blockalign aligns random offsets (and turns the random map off, as fio does)', () => {
  const job = makeJob({ rw: 'randread', blockalign: [65536, 65536, 65536], options: { ba: '64k' }, size: 8 * MiB, numberIos: 2000 });
  assert.equal(jobGeometry(job, 64 * MiB).useMap, false);
  const list = ios(job);
  assert.ok(list.every((io) => io.offset % 65536 === 0));
});

test('offsets stay inside [offset, offset+size) for random I/O with large blocks', () => {
  const list = ios(makeJob({ rw: 'randwrite', bs: [65536, 65536, 65536], offset: 3 * MiB, size: 5 * MiB, norandommap: true, numberIos: 3000 }));
  assert.ok(list.every((io) => io.offset >= 3 * MiB && io.offset + io.len <= 8 * MiB && io.offset % 65536 === 0));
});

test('number_ios stops early; io_size loops over the region; loops repeats it', () => {
  assert.equal(ios(makeJob({ rw: 'read', size: 64 * 1024, numberIos: 5 })).length, 5);
  const p = new WorkloadPattern(
    makeJob({ rw: 'randread', size: 256 * 1024, ioSize: 768 * 1024 }),
    jobGeometry(makeJob({ rw: 'randread', size: 256 * 1024, ioSize: 768 * 1024 }), 64 * MiB),
    1,
  );
  const looped = trace(p);
  assert.equal(looped.length, 192);
  for (let pass = 0; pass < 3; pass++) {
    assert.equal(new Set(looped.slice(pass * 64, pass * 64 + 64).map((io) => io.offset)).size, 64, `pass ${pass} hits each block once`);
  }
  const loops = ios(makeJob({ rw: 'read', size: 64 * 1024, loops: 3 }));
  assert.equal(loops.length, 48);
  assert.equal(loops[16]!.offset, 0);
  const small = ios(makeJob({ rw: 'read', size: 256 * 1024, ioSize: 64 * 1024 }));
  assert.equal(small.length, 16, 'io_size below size stops early');
});

test('randrepeat: the same job gives the same offsets; another thread number gives others', () => {
  const job = makeJob({ rw: 'randrw', size: 16 * MiB, numberIos: 500 });
  const a = ios(job).map((io) => `${io.ddir}:${io.offset}`);
  const b = ios(job).map((io) => `${io.ddir}:${io.offset}`);
  assert.deepEqual(a, b);
  const c = ios(makeJob({ rw: 'randrw', size: 16 * MiB, numberIos: 500, threadNumber: 2 })).map((io) => `${io.ddir}:${io.offset}`);
  assert.notDeepEqual(a, c);
});

function hottestShare(list: { offset: number }[], blocks: number, topFraction: number): number {
  const counts = new Map<number, number>();
  for (const io of list) counts.set(io.offset, (counts.get(io.offset) ?? 0) + 1);
  const sorted = [...counts.values()].sort((x, y) => y - x);
  const top = sorted.slice(0, Math.ceil(blocks * topFraction)).reduce((a, b) => a + b, 0);
  return top / list.length;
}

test('random_distribution: zipf, pareto and normal concentrate I/O on few blocks, scattered over the region', () => {
  const base = { rw: 'randread' as const, size: 16 * MiB, numberIos: 20000 };
  const blocks = (16 * MiB) / 4096;
  const uniform = hottestShare(ios(makeJob({ ...base, norandommap: true })), blocks, 0.1);
  const zipf = ios(makeJob({ ...base, randomDistribution: { kind: 'zipf', theta: 1.2, center: 0 } }));
  const pareto = ios(makeJob({ ...base, randomDistribution: { kind: 'pareto', h: 0.9, center: 0 } }));
  const normal = ios(makeJob({ ...base, randomDistribution: { kind: 'normal', dev: 5, center: 0 } }));
  assert.ok(uniform < 0.4, `uniform top-10% share ${uniform}`);
  for (const [name, list] of [
    ['zipf', zipf],
    ['pareto', pareto],
    ['normal', normal],
  ] as const) {
    const share = hottestShare(list, blocks, 0.1);
    assert.ok(share > 0.6, `${name} top-10% share ${share}`);
    // Hashed: the hottest blocks are spread over the region, not packed at its start.
    const hot = [...new Set(list.slice(0, 2000).map((io) => io.offset))];
    const spread = Math.max(...hot) - Math.min(...hot);
    assert.ok(spread > 8 * MiB, `${name} spread ${spread}`);
  }
});

test('random_distribution=zoned and zoned_abs send each share of I/O to its zone', () => {
  const zones = [
    { accessPerc: 60, size: 10 },
    { accessPerc: 30, size: 20 },
    { accessPerc: 10, size: 70 },
  ];
  const list = ios(makeJob({ rw: 'randread', size: 10 * MiB, numberIos: 20000, randomDistribution: { kind: 'zoned', zones: [zones, zones, zones] } }));
  const inFirst = list.filter((io) => io.offset < 1 * MiB).length / list.length;
  const inSecond = list.filter((io) => io.offset >= 1 * MiB && io.offset < 3 * MiB).length / list.length;
  assert.ok(Math.abs(inFirst - 0.6) < 0.02, `zone 1 share ${inFirst}`);
  assert.ok(Math.abs(inSecond - 0.3) < 0.02, `zone 2 share ${inSecond}`);
  const abs = [
    { accessPerc: 80, size: 1 * MiB },
    { accessPerc: 20, size: 9 * MiB },
  ];
  const listAbs = ios(makeJob({ rw: 'randread', size: 10 * MiB, numberIos: 10000, randomDistribution: { kind: 'zoned_abs', zones: [abs, abs, abs] } }));
  const hot = listAbs.filter((io) => io.offset < 1 * MiB).length / listAbs.length;
  assert.ok(Math.abs(hot - 0.8) < 0.02, `zoned_abs share ${hot}`);
});

test('trimwrite trims each block, then writes it', () => {
  const list = ios(makeJob({ rw: 'trimwrite', size: 64 * 1024 }));
  assert.equal(list.length, 32);
  for (let i = 0; i < 32; i += 2) {
    assert.equal(list[i]!.ddir, 2);
    assert.equal(list[i + 1]!.ddir, 1);
    assert.equal(list[i + 1]!.offset, list[i]!.offset);
    assert.equal(list[i]!.offset, (i / 2) * 4096);
  }
});
