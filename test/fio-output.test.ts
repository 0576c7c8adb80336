// Unit tests of fio's output formats: number formatting, unit scaling, percentile layout, group
// merging, terse field positions, log rows and names, the status line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { Ddir } from '../src/fio/job.ts';
import { LatencyHistogram } from '../src/stats/latency-histogram.ts';
import {
  N2S,
  StatusLine,
  cFixed,
  formatJson,
  formatLatLine,
  formatNormal,
  formatPercentiles,
  formatStatusLine,
  formatTerse,
  formatLogRow,
  logFileNames,
  num2str,
  openJobLogs,
  parseFioLog,
  buildReports,
  stringifyFioJson,
} from '../src/fio/output/index.ts';
import { dirWith, makeJob, makeResult } from './fixtures/fio-output/helpers.ts';

test('num2str matches fio 3.33 values seen in its own output', () => {
  // read: IOPS=117k, BW=459MiB/s (481MB/s)(6104KiB/13msec) for 6250496 bytes and 1526 I/Os in 13 ms
  assert.equal(num2str(Math.floor(1526000 / 13), 4, 1, false, N2S.NONE), '117k');
  assert.equal(num2str(480807384, 4, 1, true, N2S.BYTEPERSEC), '459MiB/s');
  assert.equal(num2str(480807384, 4, 1, false, N2S.BYTEPERSEC), '481MB/s');
  assert.equal(num2str(6250496, 4, 1, true, N2S.BYTE), '6104KiB');
  assert.equal(num2str(6250496, 4, 1, false, N2S.BYTE), '6250kB');
  assert.equal(num2str(40153, 4, 1, false, N2S.NONE), '40.2k');
  assert.equal(num2str(5068600, 6, 1, false, N2S.NONE), '5068.6k');
  assert.equal(num2str(1999, 4, 1, false, N2S.NONE), '1999');
  assert.equal(num2str(4096, 4, 1, true, N2S.BYTE), '4096B');
  assert.equal(num2str(65536, 4, 1, true, N2S.BYTE), '64.0KiB');
  // status line rates are KiB with base 1024
  assert.equal(num2str(1677312, 4, 1024, true, N2S.BYTEPERSEC), '1638MiB/s');
  // decimals that round up to a whole carry into the integer part
  assert.equal(num2str(99960, 4, 1, false, N2S.NONE), '100.0k');
});

test('cFixed rounds exact ties to even like printf', () => {
  assert.equal(cFixed(0.125, 2), '0.12');
  assert.equal(cFixed(0.375, 2), '0.38');
  assert.equal(cFixed(2.5, 0), '2');
  // Not ties, though x * 10^digits rounds to k + 0.5: the doubles lie above the decimal tie (glibc 2.36).
  assert.equal(cFixed(0.05, 1), '0.1');
  assert.equal(cFixed(0.45, 1), '0.5');
  assert.equal(cFixed(0.25, 1), '0.2');
  // fio printed IOPS=13.1k for 522 writes in 40 ms (13050 IOPS); we printed 13.0k.
  assert.equal(num2str(13050, 4, 1, false, N2S.NONE), '13.1k');
  assert.equal(cFixed(1 / 3, 6), '0.333333');
});

test('latency lines scale nsec -> usec -> msec by fio rules', () => {
  const h = new LatencyHistogram();
  for (const v of [1653, 2000, 5_068_600]) h.record(v);
  assert.match(formatLatLine('clat', h)!, /^ {4}clat \(nsec\): min=1653, max=5068.6k, avg=\d+\.\d\d, stdev=\d+\.\d\d$/);
  const u = new LatencyHistogram();
  for (const v of [66_000, 14_990_000, 300_000]) u.record(v);
  assert.match(formatLatLine('slat', u)!, /^ {4}slat \(usec\): min=66, max=14990, avg=/);
  const m = new LatencyHistogram();
  for (const v of [3_000_000, 200_000_000, 50_000_000]) m.record(v);
  assert.match(formatLatLine(' lat', m)!, /^ {5}lat \(msec\): min=3, max=200, avg=84\.33, stdev=/);
  assert.equal(formatLatLine('clat', new LatencyHistogram()), null);
});

test('percentile block: fio widths, four per row, usec scaling with rounding up', () => {
  const h = new LatencyHistogram();
  for (let i = 0; i < 1000; i++) h.record(3000 + i * 200);
  const list = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99];
  const text = formatPercentiles('clat', h, list, 2);
  const lines = text.split('\n');
  assert.equal(lines[0], '    clat percentiles (usec):');
  assert.match(lines[1]!, /^ {5}\| {2}1\.00th=\[ {1,}\d+\], {2}5\.00th=\[ *\d+\], 10\.00th=\[ *\d+\], 20\.00th=\[ *\d+\],$/);
  assert.equal(lines.length, 7); // header, 5 rows (4+4+4+4+1), trailing ''
  assert.match(lines[5]!, /^ {5}\| 99\.99th=\[ *\d+\]$/);
  // 1st percentile: 10th sample 4800 ns -> bucket [4800, 4864) midpoint 4832 -> rounded up to 5 usec
  assert.match(lines[1]!, /1\.00th=\[ {4}5\]/);
  // precision 1 and few values: one row
  const one = formatPercentiles('clat', h, [50, 99, 99.9], 1).split('\n');
  assert.match(one[1]!, /^ {5}\| 50\.0th=\[ *\d+\], 99\.0th=\[ *\d+\], 99\.9th=\[ *\d+\]$/);
});

test('group_reporting merges a group into one report: sums bytes and ios, merges histograms, sums bw', () => {
  const a = makeJob({ name: 'a', groupReporting: true, threadNumber: 1, rw: 'randread' });
  const b = makeJob({ name: 'a', groupReporting: true, threadNumber: 2, cloneIndex: 1, rw: 'randread' });
  const c = makeJob({ name: 'c', threadNumber: 3, rw: 'write' });
  const r1 = makeResult(a, { dirs: [dirWith(100, 4096, 1000, (i) => 1000 + i, [400, 410]), dirWith(0, 0, 0, () => 0), dirWith(0, 0, 0, () => 0)] });
  const r2 = makeResult(b, { dirs: [dirWith(300, 4096, 1200, () => 90_000, [1200, 1190]), dirWith(0, 0, 0, () => 0), dirWith(0, 0, 0, () => 0)] });
  const r3 = makeResult(c, { groupId: 1, dirs: [dirWith(0, 0, 0, () => 0), dirWith(50, 8192, 500, () => 5000), dirWith(0, 0, 0, () => 0)] });
  const reports = buildReports([r1, r2, r3]);
  assert.equal(reports.length, 2);
  const g = reports[0]!;
  assert.equal(g.members, 2);
  assert.equal(g.dirs[0].ioBytes, 400 * 4096);
  assert.equal(g.dirs[0].totalIos, 400);
  assert.equal(g.dirs[0].runtimeMs, 1200);
  assert.equal(g.dirs[0].clat.count, 400);
  assert.equal(g.dirs[0].clat.min, 1000);
  assert.equal(g.dirs[0].clat.max, 90_000);
  assert.equal(g.dirs[0].bw.mean, 405 + 1195);
  assert.equal(g.dirs[0].bw.min, 400 + 1190);
  // inputs untouched
  assert.equal(r1.dirs[0].clat.count, 100);
  const text = formatNormal([r1, r2, r3], { withHeader: false });
  assert.match(text, /^a: \(groupid=0, jobs=2\): err= 0: pid=\d+: /m);
  assert.match(text, /^c: \(groupid=1, jobs=1\)/m);
  assert.match(text, /^ {3}bw \( {2}KiB\/s\): min= 1590, max= 1610, per=\d+\.\d\d%, avg=1600\.00, stdev=/m);
  assert.match(text, /Run status group 0 \(all jobs\):\n {3}READ: bw=1333KiB\/s \(1365kB\/s\), 1333KiB\/s-1333KiB\/s/);
  assert.match(text, /Run status group 1 \(all jobs\):\n {2}WRITE: /);
  const json = formatJson([r1, r2, r3], { globalOptions: {} });
  const jobs = json['jobs'] as Record<string, unknown>[];
  assert.equal(jobs.length, 2);
  assert.equal((jobs[0]!['read'] as Record<string, unknown>)['io_bytes'], 400 * 4096);
  assert.equal((jobs[0]!['read'] as Record<string, unknown>)['total_ios'], 400);
});

test('terse v3: 121 fields without disks, 130 with one disk, fixed positions', () => {
  const job = makeJob({ name: 'rr', rw: 'randrw', description: '' });
  const r = makeResult(job, { dirs: [dirWith(1526, 4096, 13, (i) => 2000 + i), dirWith(522, 4096, 13, () => 3000), dirWith(0, 0, 0, () => 0)] });
  const line = formatTerse([r]).trimEnd();
  const f = line.split(';');
  assert.equal(f.length, 121);
  assert.deepEqual(f.slice(0, 5), ['3', 'fio-3.33', 'rr', '0', '0']);
  assert.equal(f[5], '6104'); // read KiB
  assert.equal(f[6], String(Math.floor(Math.floor(6250496000 / 13) / 1024)));
  assert.equal(f[7], String(Math.floor(1526000 / 13)));
  assert.equal(f[8], '13');
  assert.match(f[17]!, /^1\.000000%=\d+$/);
  assert.equal(f[34], '0%=0'); // 17 percentiles, then 3 pads
  assert.equal(f[46], '2088'); // write KiB: 5 + 41
  assert.match(f[87]!, /^\d+\.\d{6}%$/); // usr cpu
  assert.equal(f[92], '100.0%'); // depth 1
  const disk = formatTerse([r], { disks: [{ name: 'xvda', ios: [1, 2], merges: [0, 0], ticks: [3, 4], inQueue: 7, util: 12.5 }] })
    .trimEnd()
    .split(';');
  assert.equal(disk.length, 130);
  assert.deepEqual(disk.slice(121), ['xvda', '1', '2', '0', '0', '3', '4', '7', '12.50%']);
});

test('JSON text uses fio layout: " : ", two-space indent, floats with six decimals', () => {
  const job = makeJob({ name: 'rr', options: { rw: 'read' } });
  const r = makeResult(job, { dirs: [dirWith(10, 4096, 10, () => 2000), dirWith(0, 0, 0, () => 0), dirWith(0, 0, 0, () => 0)] });
  const text = stringifyFioJson(formatJson([r], { globalOptions: { bs: '4k' }, timestamp: 1_700_000_000_123 }));
  assert.match(text, /^\{\n {2}"fio version" : "fio-3.33",\n {2}"timestamp" : 1700000000,\n {2}"timestamp_ms" : 1700000000123,/);
  assert.match(text, /\n {8}"iops" : 1000\.000000,\n/);
  assert.match(text, /\n {8}"io_bytes" : 40960,\n/);
  assert.match(text, /\n {10}"percentile" : \{\n {12}"1\.000000" : 2008,/);
  assert.match(text, /\n {6}"iodepth_level" : \{\n {8}"1" : 100\.000000,/);
  assert.ok(text.endsWith('\n    }\n  ]\n}\n'));
  assert.deepEqual(JSON.parse(text)['jobs'][0]['job options'], { rw: 'read' });
});

test('log file names follow fio 3.33 (bare key, prefix, lat trio, per_job_logs=0)', () => {
  assert.deepEqual(logFileNames(makeJob({ name: 'randw', writeBwLog: '' })), { bw: 'randw_bw.1.log' });
  assert.deepEqual(logFileNames(makeJob({ name: 'x', threadNumber: 3, writeBwLog: 'mixedlog', writeLatLog: 'plat', writeIopsLog: 'pio' })), {
    bw: 'mixedlog_bw.3.log',
    lat: 'plat_lat.3.log',
    slat: 'plat_slat.3.log',
    clat: 'plat_clat.3.log',
    iops: 'pio_iops.3.log',
  });
  assert.deepEqual(logFileNames(makeJob({ writeBwLog: 'shared', perJobLogs: false })), { bw: 'shared_bw.log' });
  assert.equal(openJobLogs(makeJob(), tmpdir()), null);
});

test('log rows written as bytes are formatLogRow byte for byte: digits, signs, 2^53, prio, across flushes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fio-out-'));
  try {
    const edges = [0, 1, 9, 10, 99, 100, 2 ** 31 - 2, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 5, 1e15 + 7, 2 ** 53 - 1, 2 ** 53, 1e21, 123.9, -0, -7, -(2 ** 40)];
    let seed = 12345;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 ** (seed % 54);
    for (const [logOffset, logPrio] of [
      [false, false],
      [true, false],
      [true, true],
      [false, true],
    ] as const) {
      const sink = openJobLogs(makeJob({ name: 'b', writeLatLog: '', logOffset, logPrio }), dir)!;
      let expected = '';
      for (let i = 0; i < 20_000; i++) {
        const v = i < edges.length ? edges[i]! : rand();
        const t = i % 3 === 0 ? v : i;
        const bs = i % 5 === 0 ? v : 4096;
        const off = i % 7 === 0 ? v : i * 512;
        sink.row('lat', t, v, (i % 3) as Ddir, bs, off);
        expected += formatLogRow(t, v, (i % 3) as Ddir, bs, logOffset ? off : null, logPrio);
      }
      await sink.close();
      assert.equal(readFileSync(join(dir, 'b_lat.1.log'), 'utf8'), expected, `logOffset=${logOffset} logPrio=${logPrio}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('log rows: columns as fio prints them, offsets optional, shared logs appended job by job', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fio-out-'));
  try {
    const sink = openJobLogs(makeJob({ name: 'j', writeBwLog: '', writeLatLog: '', logOffset: true }), dir)!;
    sink.row('bw', 2, 3886.7, 0, 4096, 0);
    sink.row('clat', 10, 72777, 1, 4096, 8192);
    await sink.close();
    assert.equal(readFileSync(join(dir, 'j_bw.1.log'), 'utf8'), '2, 3886, 0, 4096, 0, 0\n');
    assert.equal(readFileSync(join(dir, 'j_clat.1.log'), 'utf8'), '10, 72777, 1, 4096, 8192, 0\n');
    assert.equal(readFileSync(join(dir, 'j_slat.1.log'), 'utf8'), '');
    const a = openJobLogs(makeJob({ name: 's', writeBwLog: 'shared', perJobLogs: false, threadNumber: 1 }), dir)!;
    const b = openJobLogs(makeJob({ name: 's', writeBwLog: 'shared', perJobLogs: false, threadNumber: 2 }), dir)!;
    for (let t = 500; t <= 100_000; t += 500) {
      a.row('bw', t, 808, 0, 0, 0);
      b.row('bw', t, 111, 0, 0, 0);
    }
    await Promise.all([a.close(), b.close()]);
    const shared = readFileSync(join(dir, 'shared_bw.log'), 'utf8').trimEnd().split('\n');
    assert.equal(shared.length, 400);
    // each job's rows form one block, as fio appends a whole log at job end
    const firstValue = shared[0]!.split(', ')[1];
    assert.ok(shared.slice(0, 200).every((l) => l.split(', ')[1] === firstValue));
    assert.deepEqual(readdirSync(dir).sort(), ['j_bw.1.log', 'j_clat.1.log', 'j_lat.1.log', 'j_slat.1.log', 'shared_bw.log']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a long per-I/O log streams to disk completely and in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fio-out-'));
  try {
    const sink = openJobLogs(makeJob({ name: 'big', writeIopsLog: '' }), dir)!;
    for (let i = 0; i < 300_000; i++) sink.row('iops', i, 1, 1, 4096, 0);
    await sink.close();
    const rows = parseFioLog(readFileSync(join(dir, 'big_iops.1.log'), 'utf8'));
    assert.equal(rows.length, 300_000);
    assert.ok(rows.every((r, i) => r.timeMs === i));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('parseFioLog reads 4 to 7 columns and rejects junk with the line number', () => {
  const rows = parseFioLog('500, 332760, 1, 4096\n1001, 4, 1, 0, 0\n2, 3886, 0, 4096, 4096, 0x0000\n3, 1, 0, 512, 0, 0, 9\n');
  assert.deepEqual(
    rows.map((r) => [r.timeMs, r.value, r.ddir, r.bs, r.offset, r.prio]),
    [
      [500, 332760, 1, 4096, null, null],
      [1001, 4, 1, 0, null, 0],
      [2, 3886, 0, 4096, 4096, 0],
      [3, 1, 0, 512, 0, 0],
    ],
  );
  assert.equal(parseFioLog('1, 2, 0, 0, 8192\n', { logOffset: true })[0]!.offset, 8192);
  assert.throws(() => parseFioLog('1, 2, 3\n', { file: 'x.log' }), /x\.log:1: expected 4 to 7/);
});

test('status line like fio: condensed run string, rates, IOPS, eta', () => {
  assert.equal(
    formatStatusLine({
      jobsRunning: 4,
      runChars: 'wwww',
      percentDone: 45,
      readBps: 0,
      writeBps: 1638 * 1024 * 1024 + 5000,
      readIops: 0,
      writeIops: 26_210,
      etaSeconds: 11,
    }),
    'Jobs: 4 (f=4): [w(4)][45.0%][w=1638MiB/s][w=26.2k IOPS][eta 00m:11s]',
  );
  assert.equal(
    formatStatusLine({
      jobsRunning: 2,
      runChars: 'mR_',
      percentDone: null,
      readBps: 2048 * 1024,
      writeBps: 100 * 1024,
      readIops: 512,
      writeIops: 25,
      etaSeconds: 3725,
      iopsLimit: [0, 2000],
    }),
    'Jobs: 2 (f=2), 0-2000 IOPS: [m(1),R(1),_(1)][-.-%][r=2048KiB/s,w=100KiB/s][r=512,w=25 IOPS][eta 01h:02m:05s]',
  );
  assert.equal(
    formatStatusLine({ jobsRunning: 0, runChars: '__', percentDone: 100, readBps: 0, writeBps: 0, readIops: 0, writeIops: 0, etaSeconds: 0 }),
    'Jobs: 0 (f=0)',
  );
});

test('StatusLine rewrites one terminal line, and throttles plain lines elsewhere', () => {
  const collect = () => {
    const s = new PassThrough();
    let out = '';
    s.on('data', (c: Buffer) => {
      out += c.toString();
    });
    return { s, text: () => out };
  };
  const tty = collect();
  const line = new StatusLine(tty.s, true);
  line.update('Jobs: 1');
  line.update('Jobs: 2');
  line.done();
  assert.equal(tty.text(), '\rJobs: 1\x1b[K\rJobs: 2\x1b[K\r\x1b[K');
  let now = 0;
  const plain = collect();
  const p = new StatusLine(plain.s, false, { intervalMs: 5000, now: () => now });
  p.update('a');
  now = 1000;
  p.update('b');
  now = 6000;
  p.update('c');
  now = 7000;
  p.update('d');
  p.done();
  assert.equal(plain.text(), 'a\nc\nd\n');
});

test('normal report: header line, zone resets on writes, description, latency distribution, cpu', () => {
  const job = makeJob({
    name: 'aio',
    rw: 'randrw',
    ioengine: 'libaio',
    iodepth: 8,
    description: 'mix',
    bssplit: [
      [
        { bs: 512, perc: 50 },
        { bs: 65536, perc: 50 },
      ],
      [],
      [],
    ],
  });
  const r = makeResult(job, {
    dirs: [dirWith(4000, 4096, 2001, (i) => (i % 2 ? 3500 : 150_000)), dirWith(4000, 4096, 2001, () => 900), dirWith(0, 0, 0, () => 0)],
    issued: [4000, 4000, 0],
    usrCpu: 17.2,
    sysCpu: 8.95,
    iodepthLevels: [7.4, 9.2, 6.7, 76.7, 0, 0, 0],
  });
  const text = formatNormal([r], { now: new Date(2026, 10, 25, 15, 36, 10), pid: 32441 });
  const lines = text.split('\n');
  assert.equal(lines[0], 'aio: (g=0): rw=randrw, bs=(R) 512B-64.0KiB, (W) 4096B-4096B, (T) 4096B-4096B, ioengine=libaio, iodepth=8');
  assert.equal(lines[1], 'fio-3.33');
  assert.equal(lines[2], 'Starting 1 process');
  assert.equal(lines[3], '');
  assert.equal(lines[4], 'aio: (groupid=0, jobs=1): err= 0: pid=32441: Wed Nov 25 15:36:10 2026');
  assert.equal(lines[5], '  Description  : [mix]');
  assert.equal(lines[6], '  read: IOPS=1999, BW=7996KiB/s (8188kB/s)(15.6MiB/2001msec)');
  assert.ok(lines.includes('  write: IOPS=1999, BW=7996KiB/s (8188kB/s)(15.6MiB/2001msec); 0 zone resets'));
  assert.ok(lines.includes('  lat (nsec)   : 1000=50.00%'));
  assert.ok(lines.includes('  lat (usec)   : 4=25.00%, 250=25.00%'));
  assert.ok(lines.includes('  cpu          : usr=17.20%, sys=8.95%, ctx=5, majf=0, minf=7'));
  assert.ok(lines.includes('  IO depths    : 1=7.4%, 2=9.2%, 4=6.7%, 8=76.7%, 16=0.0%, 32=0.0%, >=64=0.0%'));
  assert.ok(lines.includes('     issued rwts: total=4000,4000,0,0 short=0,0,0,0 dropped=0,0,0,0'));
  assert.ok(lines.includes('     latency   : target=0, window=0, percentile=100.00%, depth=8'));
  assert.ok(lines.includes('   READ: bw=7996KiB/s (8188kB/s), 7996KiB/s-7996KiB/s (8188kB/s-8188kB/s), io=15.6MiB (16.4MB), run=2001-2001msec'));
});
