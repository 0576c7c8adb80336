// Job-file parser: unit tests against fio 3.33 behaviour measured in docs/fio-compat.md §1-§3.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expandClones, FioParseError, matchPosval, matchPosvalLegacy, parseBytes, parseJobFiles, parseTimeUs } from '../src/fio/jobfile/index.ts';
import { UsageError } from '../src/internal/errors.ts';

const KW = { pagesize: 4096, mb_memory: 24000, ncpus: 2 };
const parse = (text: string, opts: Parameters<typeof parseJobFiles>[1] = {}) =>
  parseJobFiles([{ path: 'jobs/t.fio', text }], { keywords: KW, env: {}, ...opts });
const job = (body: string, opts: Parameters<typeof parseJobFiles>[1] = {}) => {
  const j = parse(`[global]\nioengine=null\nfilename=/dev/null\n[j]\n${body}\n`, opts).jobs[0];
  assert.ok(j);
  return j;
};

test('byte suffixes and kb_base, including the kib/mib swap (fio-compat §1 table)', () => {
  const cases: [string, number, number][] = [
    ['4k', 4096, 4000],
    ['4K', 4096, 4000],
    ['4kb', 4096, 4000],
    ['4KB', 4096, 4000],
    ['4ki', 4096, 4000],
    ['4KiB', 4000, 4096],
    ['4kib', 4000, 4096],
    ['1m', 1048576, 1000000],
    ['1mi', 1048576, 1000000],
    ['1MiB', 1000000, 1048576],
    ['1.5m', 1, 1],
    ['4x', 4, 4],
    ['0x10', 16, 16],
    [' 8k', 8, 8],
    ['512', 512, 512],
    ['1g', 1024 ** 3, 1e9],
  ];
  for (const [s, k1024, k1000] of cases) {
    assert.equal(Number(parseBytes(s, 1024)?.value), k1024, `${s} @1024`);
    assert.equal(Number(parseBytes(s, 1000)?.value), k1000, `${s} @1000`);
  }
  assert.deepEqual(parseBytes('10%', 1024), { value: 10n, percent: true });
  assert.equal(parseBytes('k', 1024), null);
  assert.equal(parseBytes('', 1024), null);
});

test('time units: seconds by default for runtime-like options, microseconds for thinktime', () => {
  assert.equal(parseTimeUs('10', true), 10_000_000n);
  assert.equal(parseTimeUs('10', false), 10n);
  assert.equal(parseTimeUs('1m', true), 60_000_000n);
  assert.equal(parseTimeUs('5ms', true), 5000n);
  assert.equal(parseTimeUs('7us', true), 7n);
  assert.equal(parseTimeUs('2h', true), 7_200_000_000n);
  assert.equal(parseTimeUs('1d', true), 86_400_000_000n);
  assert.equal(parseTimeUs('3s', false), 3_000_000n);
  const j = job('runtime=1m\nstartdelay=1-3\nthinktime=10\nramp_time=250ms');
  assert.equal(j.runtimeUs, 60_000_000);
  assert.deepEqual(j.startDelayUs, [1_000_000, 3_000_000]);
  assert.equal(j.thinktimeUs, 10);
  assert.equal(j.rampTimeUs, 250_000);
});

test('kb_base applies to size written above it (priority order, not file order)', () => {
  assert.equal(job('size=1m\nkb_base=1000').size, 1_000_000);
  assert.equal(job('size=1m').size, 1_048_576);
});

test('per-direction bs lists', () => {
  assert.deepEqual(job('bs=8k,32k').bs, [8192, 32768, 32768]);
  assert.deepEqual(job('bs=8k,32k,').bs, [8192, 32768, 4096]);
  assert.deepEqual(job('bs=,8k').bs, [4096, 8192, 8192]);
  assert.deepEqual(job('bs=4k,8k,16k').bs, [4096, 8192, 16384]);
  assert.deepEqual(job('bs= 8k').bs, [8, 8, 8]);
  const r = job('rw=randread\nbsrange=4k:1k');
  assert.deepEqual([r.bsMin[0], r.bsMax[0]], [1024, 4096]);
  assert.deepEqual(job('rate=,500k').rate, [0, 512000, 512000]);
});

test('bssplit normalisation as measured (blank shares, remainder, rounding, per direction)', () => {
  const shares = (s: string, extra = '') => job(`rw=randrw\nbssplit=${s}\n${extra}`).bssplit;
  assert.deepEqual(shares('4k/50:1k/:32k/')[0], [
    { bs: 1024, perc: 25 },
    { bs: 32768, perc: 25 },
    { bs: 4096, perc: 50 },
  ]);
  assert.deepEqual(shares('4k/10:8k/20')[0], [
    { bs: 4096, perc: 10 },
    { bs: 8192, perc: 90 },
  ]);
  assert.deepEqual(shares('4k/60:8k/60')[0], [
    { bs: 4096, perc: 60 },
    { bs: 8192, perc: 40 },
  ]);
  assert.deepEqual(shares('4k/50:6k/50')[0], [
    { bs: 4096, perc: 50 },
    { bs: 4096, perc: 50 },
  ]);
  assert.deepEqual(shares('4k/50:6k/50', 'bs_unaligned')[0], [
    { bs: 4096, perc: 50 },
    { bs: 6144, perc: 50 },
  ]);
  assert.deepEqual(shares('4k/0:8k/50')[0], [
    { bs: 4096, perc: 50 },
    { bs: 8192, perc: 50 },
  ]);
  const pd = shares('4k/50:8k/50,16k/100');
  assert.deepEqual(pd[0], [
    { bs: 4096, perc: 50 },
    { bs: 8192, perc: 50 },
  ]);
  assert.deepEqual(pd[1], [{ bs: 16384, perc: 100 }]);
  const empty = job('rw=randrw\nbs=2k\nbssplit=,16k/100');
  assert.deepEqual(empty.bssplit[0], []);
  assert.equal(empty.bsMin[0], 2048);
  assert.throws(() => shares('4k/:8k/:16k/60:32k/60'), /bssplit percentages add to more than 100%/);
  // the seed's iometer mix: min 512, max 64k, shares sum to 100
  const io = shares('512/10:1k/5:2k/5:4k/60:8k/2:16k/4:32k/4:64k/10')[0];
  assert.equal(
    io.reduce((a, e) => a + e.perc, 0),
    100,
  );
});

test('booleans are integers only; STR_SET keys may be bare', () => {
  assert.equal(job('direct=1').direct, true);
  assert.equal(job('buffered=0').direct, true);
  assert.throws(() => job('direct=true'), /t\.fio:5: failed parsing 'direct=true'/);
  assert.throws(() => job('direct=2'), /max value out of range: 2 \(1 max\)/);
  assert.throws(() => job('direct'), /Option direct requires an argument/);
  assert.equal(job('norandommap').norandommap, true);
  assert.equal(job('time_based=5\nruntime=1').timeBased, true);
});

test('errors name file:line and the option', () => {
  const e = (() => {
    try {
      parse('[global]\nioengine=null\n\n[j]\n\n\nBS=16k\n');
    } catch (x) {
      return x;
    }
    return null;
  })();
  assert.ok(e instanceof FioParseError && e instanceof UsageError);
  assert.equal((e as Error).message, "jobs/t.fio:7: bad option 'BS=16k' (options are case-sensitive; did you mean 'bs'?)");
  assert.throws(() => parse('[j]\nfoo=bar\n'), /t\.fio:2: bad option 'foo=bar'/);
  assert.throws(() => parse('[j]\nbw_avg_time=500\n'), /did you mean 'bwavgtime'/);
  assert.throws(() => parse('rw=read\n[j]\n'), /t\.fio:1: option <rw=read> outside of \[\] job section/);
  assert.throws(() => parse(''), /No job\(s\) defined/);
  assert.throws(() => parse('[j]\nzonemode=strided\n'), /t\.fio:2: 'zonemode=strided': zonemode is a fio option this runner does not implement/);
  assert.throws(() => parse('[j]\nverify=sha256\n'), /t\.fio:2: .*verify=sha256.*does not implement/);
  assert.throws(() => parse('[j]\nrwmixread=101\n'), /t\.fio:2: failed parsing 'rwmixread=101': rwmixread: max value out of range/);
  assert.throws(() => parse('[j]\nrw = read\n'), /failed parsing 'rw= read'/);
  assert.throws(() => parse('[j]\nrate=1m\nrate_iops=10\n'), /mutually exclusive/);
  assert.throws(() => parse('[j]\nsize=1k\nbs=4k\n'), /size too small/);
  assert.throws(() => parse('[j]\nwait_for=x\n'), /waitee job x unknown/);
});

test('notes for options that cannot change the I/O pattern', () => {
  const r = parse('[global]\nioengine=libaio\nthread\ngtod_reduce=1\n[j]\nrw=read\n');
  assert.ok(r.warnings.some((w) => w.includes('t.fio:2: ioengine=libaio')));
  assert.ok(r.warnings.some((w) => w.includes('t.fio:3: thread ignored')));
  assert.equal(r.jobs[0]?.ioengine, 'libaio');
});

test('legacy prefix rule table and strict refusal', () => {
  const rw = ['read', 'write', 'trim', 'randread', 'randwrite', 'randtrim', 'rw', 'readwrite', 'randrw', 'trimwrite', 'randtrimwrite'];
  assert.equal(matchPosvalLegacy(rw, 'randw'), 'randwrite');
  assert.equal(matchPosvalLegacy(rw, 'randwr'), 'randwrite');
  assert.equal(matchPosvalLegacy(rw, 'randr'), 'randrw');
  assert.equal(matchPosvalLegacy(rw, 'rand'), 'randrw');
  assert.equal(matchPosvalLegacy(rw, 'r'), 'rw');
  assert.equal(matchPosvalLegacy(rw, 'w'), 'write');
  assert.equal(matchPosval(rw, 'randw'), null);
  assert.equal(matchPosval(rw, 'randread:4'), 'randread');
  const r = parse('[j]\nrw=randw\n');
  assert.equal(r.jobs[0]?.rw, 'randwrite');
  assert.deepEqual(r.warnings, ['jobs/t.fio:2: rw=randw read as randwrite (fio 1.41-2.0.11 prefix rule); fio >= 2.0.12 rejects it; --strict refuses']);
  assert.equal(parse('[j]\nrw=randr\n').jobs[0]?.rw, 'randrw');
  assert.throws(() => parse('[j]\nrw=randw\n', { strict: true }), /t\.fio:2: failed parsing 'rw=randw': valid values for rw/);
  assert.throws(() => parse('[j]\nrw=bogus\n'), /failed parsing 'rw=bogus'/);
});

test("--set overrides beat the job's own value and land in job options", () => {
  const r = parse('[global]\nsize=1m\n[j]\nsize=4g\nruntime=100\nfilename=/dev/a\n', { overrides: ['size=256m', 'runtime=10', 'filename=/dev/b'] });
  const j = r.jobs[0];
  assert.equal(j?.size, 256 * 1024 * 1024);
  assert.equal(j?.runtimeUs, 10_000_000);
  assert.deepEqual(j?.filename, ['/dev/b']);
  assert.equal(j?.options.size, '256m');
  assert.throws(() => parse('[j]\n', { overrides: ['sise=1m'] }), /bad option 'sise=1m'/);
});

test('include: splice, nesting, lookup as given then beside the including file', () => {
  const files: Record<string, string> = { 'jobs/inc/a.inc': 'bs=8k\ninclude b.inc\n', 'jobs/inc/b.inc': 'iodepth=4\n', 'cwd.inc': 'size=2m\n' };
  const seen: string[] = [];
  const readInclude = (p: string) => {
    seen.push(p);
    return files[p];
  };
  const r = parse('[global]\ninclude cwd.inc\n[j]\ninclude inc/a.inc\n', { readInclude });
  assert.equal(r.jobs[0]?.bs[0], 8192);
  assert.equal(r.jobs[0]?.iodepth, 4);
  assert.equal(r.jobs[0]?.size, 2 * 1024 * 1024);
  assert.deepEqual(seen, ['cwd.inc', 'inc/a.inc', 'jobs/inc/a.inc', 'b.inc', 'jobs/inc/b.inc']);
  assert.throws(() => parse('[j]\ninclude missing.inc\n', { readInclude }), /t\.fio:2: include missing\.inc: unable to open/);
  assert.throws(() => parse('include cwd.inc\n[j]\n', { readInclude }), /outside of \[\] job section/);
});

test('${VAR} and keyword arithmetic', () => {
  assert.equal(job('size=${SZ}', { env: { SZ: '3m' } }).size, 3 * 1048576);
  assert.throws(() => job('bs=${UNSET}k'), /failed parsing 'bs=k'/);
  assert.throws(() => job('bs=$MYBS'), /failed parsing/);
  assert.equal(job('iodepth=2*$ncpus').iodepth, 4);
  assert.equal(job('size=$mb_memory/1024\nbs=1').size, 23);
  assert.equal(job('bs=2*4096').bs[0], 2);
});

test('inheritance by position; any global* section is global; name= renames', () => {
  const r = parse('[global]\nbs=4k\n[a]\n[global_x]\nbs=16k\n[b]\nname=bee\n');
  assert.deepEqual(
    r.jobs.map((j) => [j.name, j.bs[0]]),
    [
      ['a', 4096],
      ['bee', 16384],
    ],
  );
  assert.deepEqual(r.globalOptions, { bs: '16k' });
  assert.deepEqual(r.jobs[1]?.options, { name: 'bee' });
});

test('filename appends across global and job; default names; /dev job names', () => {
  assert.deepEqual(parse('[global]\nfilename=a\n[j]\nfilename=b:c\\:d\n').jobs[0]?.filename, ['a', 'b', 'c:d']);
  assert.deepEqual(parse('[j]\n').jobs[0]?.filename, ['j.0.0']);
  assert.deepEqual(parse('[/dev/xvda]\n').jobs[0]?.filename, ['/dev/xvda']);
});

test('expandClones: thread numbers, fio subjob order and offset_increment, clone file names', () => {
  const r = parse('[a]\nnumjobs=3\noffset=1m\noffset_increment=64k\nstonewall\n[b]\nnumjobs=2\n');
  const c = expandClones(r);
  assert.deepEqual(
    c.map((j) => [j.name, j.threadNumber, j.cloneIndex, j.offset, j.stonewall]),
    [
      ['a', 1, 0, 1048576, true],
      ['a', 2, 2, 1048576 + 131072, false],
      ['a', 3, 1, 1048576 + 65536, false],
      ['b', 4, 0, 0, false],
      ['b', 5, 1, 0, false],
    ],
  );
  assert.deepEqual(
    c.map((j) => j.filename[0]),
    ['a.0.0', 'a.2.0', 'a.1.0', 'b.0.0', 'b.1.0'],
  );
});

test('second job file: its first job gets the implicit stonewall; globals carry over', () => {
  const r = parseJobFiles(
    [
      { path: 'x.fio', text: '[global]\nbs=8k\n[a]\n[b]\n' },
      { path: 'y.fio', text: '[c]\n[d]\n' },
    ],
    { env: {} },
  );
  assert.deepEqual(
    r.jobs.map((j) => [j.name, j.stonewall, j.fileIndex, j.bs[0]]),
    [
      ['a', false, 0, 8192],
      ['b', false, 0, 8192],
      ['c', true, 1, 8192],
      ['d', false, 1, 8192],
    ],
  );
});

test('rw suffix, verify fixups, iodepth fixups', () => {
  assert.equal(job('rw=randread:4').rwSuffix, 4);
  assert.equal(job('rw=write:4k').rwSuffix, 4096);
  assert.equal(job('rw=read:-8k').rwSuffix, -8192);
  const v = job('rw=randwrite\nverify=crc32c-intel');
  assert.equal(v.verify, 'crc32c');
  assert.equal(v.verifyInterval, 4096);
  const p = job('rw=write\nverify_pattern=0xdeadbeef');
  assert.equal(p.verify, 'pattern');
  assert.deepEqual([...(p.verifyPattern ?? [])], [0xde, 0xad, 0xbe, 0xef]);
  const d = job('iodepth=8\niodepth_low=20\niodepth_batch=0');
  assert.deepEqual([d.iodepthLow, d.iodepthBatchSubmit, d.iodepthBatchCompleteMin, d.iodepthBatchCompleteMax], [8, 8, 1, 1]);
  const z = job('rw=randread\nrandom_distribution=zoned:60/10:30/20:10/');
  assert.deepEqual(z.randomDistribution, {
    kind: 'zoned',
    zones: [
      [
        { accessPerc: 60, size: 10 },
        { accessPerc: 30, size: 20 },
        { accessPerc: 10, size: 70 },
      ],
      [
        { accessPerc: 60, size: 10 },
        { accessPerc: 30, size: 20 },
        { accessPerc: 10, size: 70 },
      ],
      [
        { accessPerc: 60, size: 10 },
        { accessPerc: 30, size: 20 },
        { accessPerc: 10, size: 70 },
      ],
    ],
  });
  assert.equal(z.norandommap, true);
  assert.deepEqual(job('rw=randread\nrandom_distribution=zipf:1.2').randomDistribution, { kind: 'zipf', theta: 1.2, center: 0 });
  assert.throws(() => job('random_distribution=zipf:1'), /zipf theta/);
});

test("a blank after '=' hides a unit, as in fio 3.33: read as fio reads it, with a note naming file:line, option, value and what was meant", () => {
  // Measured with fio 3.33: `bs = 8k` runs 8-byte blocks ("bs=(R) 8B-8B"), `bs =8k` 8192; `bs = 4k, 8k` is 4 and 8 bytes;
  // `runtime = 1m` runs 1 s; `rw = randwrite` fails parsing; `size = 64k` is "size too small ... 64 < 4096".
  const r = parse('[j]\nioengine=null\nfilename=/dev/null\nbs = 8k\nruntime = 1m\n[k]\nioengine=null\nfilename=/dev/null\nbs =8k\nbsrange = 4k-8k\n');
  const [j, k] = r.jobs;
  assert.deepEqual(j?.bs, [8, 8, 8]);
  assert.equal(j?.runtimeUs, 1_000_000);
  assert.deepEqual(k?.bs, [8192, 8192, 8192]);
  assert.deepEqual(k?.bsMin, [4, 4, 4]);
  assert.deepEqual(r.warnings, [
    "jobs/t.fio:4: 'bs = 8k': ' 8k' is 8 bytes, as fio 3.33 reads it (a blank before a number hides its unit); write bs=8k for 8192 bytes",
    "jobs/t.fio:5: 'runtime = 1m': ' 1m' is 1 s, as fio 3.33 reads it (a blank before a number hides its unit); write runtime=1m for 60 s",
    "jobs/t.fio:10: 'bsrange = 4k-8k': ' 4k' is 4 bytes, as fio 3.33 reads it (a blank before a number hides its unit); write bsrange=4k-8k for 4096 bytes",
  ]);
  assert.deepEqual(j?.origins?.bs, {
    where: 'jobs/t.fio:4',
    text: 'bs = 8k',
    note: "' 8k' is 8 bytes, as fio 3.33 reads it (a blank before a number hides its unit)",
  });
  assert.deepEqual(k?.origins?.bs, { where: 'jobs/t.fio:9', text: 'bs =8k' }, 'no note when the value reads as it looks');
  assert.deepEqual(job('bs = 4k, 8k').bs, [4, 8, 8]);

  assert.throws(
    () => job('rw = randwrite'),
    (e: FioParseError) =>
      e.message ===
      "jobs/t.fio:5: failed parsing 'rw= randwrite': valid values for rw: read, write, trim, randread, randwrite, randtrim, rw, readwrite, randrw, trimwrite, randtrimwrite (fio 3.33 keeps the blank after '=': ' randwrite' is not 'randwrite'; write rw=randwrite)",
  );
  assert.throws(
    () => job('size = 64k'),
    (e: FioParseError) =>
      e.message ===
      "jobs/t.fio:4: job j: size too small, must not be less than minimum block size: 64 < 4096 (size: 'size = 64k' at jobs/t.fio:5: ' 64k' is 64 bytes, as fio 3.33 reads it (a blank before a number hides its unit))",
  );
});
