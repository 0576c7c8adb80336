// `bench --suite net`: the seed's jobs derived for fio's nbd and rbd engines, the job as fio's own
// command line, the tables (ratios are medians of each round's own ratio), the option checks, and one
// tiny run against the real servers (ours, nbdkit, qemu-nbd) and clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { deriveNetFioJob, fioJobArgs, shellLine } from '../src/bench/net-fio-jobs.ts';
import { NET_GOALS, runNetBench, SERVER_LABEL } from '../src/bench/net-bench.ts';
import { formatNetTables, netRatios } from '../src/bench/net-report.ts';
import type { NetBenchReport, NetBenchResult } from '../src/bench/net-report.ts';
import { machineInfo } from '../src/bench/machine.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const seed = (name: string): string => readFileSync(fileURLToPath(new URL(`../../jobs/${name}.fio`, import.meta.url)), 'utf8');

test("deriveNetFioJob: the seed's randw for fio's nbd engine: engine in place of libaio, randwrite, size in place, no logs", () => {
  const out = deriveNetFioJob(seed('randw'), { engine: { ioengine: 'nbd', uri: 'nbd+unix:///e?socket=/run/s' }, size: 8 << 20, seconds: 2 });
  assert.equal(
    out,
    [
      '# This job file tries to mimic the Intel IOMeter File Server Access Pattern',
      '[global]',
      'numjobs=4',
      '',
      '[/dev/xvda]',
      'bs=64k',
      'rw=randwrite',
      'direct=1',
      'size=8388608',
      'ioengine=nbd',
      'uri=nbd+unix:///e?socket=/run/s',
      '# IOMeter defines the server loads as the following:',
      '# iodepth=1 Linear',
      '# iodepth=4 Very Light',
      '# iodepth=8 Light',
      '# iodepth=64 Moderate',
      '# iodepth=256 Heavy',
      'iodepth=256',
      'runtime=2000ms',
      'time_based=1',
      '',
    ].join('\n'),
  );
});

test("deriveNetFioJob: the seed's iometer for fio's rbd engine keeps its mix; a job without ioengine or size gets them appended", () => {
  const out = deriveNetFioJob(seed('iometer'), { engine: { ioengine: 'rbd', pool: 'p', image: 'i', clientname: 'admin' }, size: 1 << 20, seconds: 0.5 });
  for (const line of ['numjobs=2', 'bssplit=512/10:1k/5:2k/5:4k/60:8k/2:16k/4:32k/4:64k/10', 'rw=randrw', 'rwmixread=80', 'iodepth=256']) {
    assert.ok(out.split('\n').includes(line), line);
  }
  assert.match(out, /\nsize=1048576\nioengine=rbd\npool=p\nrbdname=i\nclientname=admin\n/);
  assert.match(out, /\nruntime=500ms\ntime_based=1\n$/);
  assert.doesNotMatch(out, /libaio|write_\w+_log|description|size=4g/);
  assert.equal(
    deriveNetFioJob('[j]\nrw=randread\n\n', { engine: { ioengine: 'nbd', uri: 'nbd://h/e' }, size: 4096, seconds: 1 }),
    '[j]\nrw=randread\nioengine=nbd\nuri=nbd://h/e\nsize=4096\nruntime=1000ms\ntime_based=1\n',
  );
});

test('fioJobArgs: [global] options first, then --name=SECTION and its options; comments dropped; shellLine quotes what needs it', () => {
  assert.deepEqual(fioJobArgs('# c\n[global]\nnumjobs=2\n\n[/dev/xvda]\nbs = 64k\ntime_based\n; x\n[b]\nrw=read\n'), [
    '--numjobs=2',
    '--name=/dev/xvda',
    '--bs=64k',
    '--time_based',
    '--name=b',
    '--rw=read',
  ]);
  assert.equal(shellLine(['fio', '--uri=nbd+unix:///?socket=/t/s', "it's", 'a b']), `fio '--uri=nbd+unix:///?socket=/t/s' 'it'\\''s' 'a b'`);
});

function result(part: NetBenchResult['part'], path: string, round: number, mbps: number): NetBenchResult {
  return {
    part,
    job: 'randw',
    path,
    round,
    position: 1,
    bytes: mbps * 1e6,
    ios: (mbps * 1e6) / 65536,
    seconds: 1,
    mbps,
    iops: (mbps * 1e6) / 65536,
    serverCpuUsPerIo: part === 'rbd' ? null : 10,
    clientCpuUsPerIo: 5,
    command: `cmd ${path} ${round}`,
  };
}

function report(results: NetBenchResult[], rounds: number): NetBenchReport {
  return {
    suite: 'net',
    machine: machineInfo(),
    seconds: 1,
    rounds,
    sizeBytes: 1 << 20,
    setup: [],
    skipped: ['rbd part: no cluster given'],
    goals: [...NET_GOALS],
    results,
  };
}

test('netRatios: the median of each round own ratio (not the ratio of medians), beside its goal', () => {
  const ours = SERVER_LABEL.blkback;
  const nbdkit = SERVER_LABEL.nbdkit;
  // Rounds: 100/100 = 1, 300/100 = 3, 120/400 = 0.3. Median of ratios 1; ratio of medians 120/100 = 1.2.
  const r = report(
    [
      result('server', ours, 1, 100),
      result('server', nbdkit, 1, 100),
      result('server', ours, 2, 300),
      result('server', nbdkit, 2, 100),
      result('server', ours, 3, 120),
      result('server', nbdkit, 3, 400),
      result('client', 'blkback nbd client', 1, 95),
      result('client', 'fio nbd engine', 1, 100),
    ],
    3,
  );
  const ratios = netRatios(r);
  const server = ratios.find((q) => q.goal.part === 'server')!;
  assert.deepEqual(server.perRound, [1, 3, 0.3]);
  assert.equal(server.ratio, 1);
  assert.equal(server.met, false);
  const client = ratios.find((q) => q.goal.part === 'client')!;
  assert.equal(client.ratio, 0.95);
  assert.equal(client.met, true);
  const rbd = ratios.find((q) => q.goal.part === 'rbd')!;
  assert.equal(rbd.ratio, null);
  assert.equal(rbd.met, null);

  const text = formatNetTables(r);
  assert.match(text, /\| randw \| blkback nbd-server \| 120 \| 1,831 \| 10\.0 \| 5\.0 \| 3 \|/);
  assert.match(text, /\| randw \| blkback nbd-server \/ nbdkit memory: 1\.00x \| 1\.00, 3\.00, 0\.30 \| ≥ 1\.2x \| no \|/);
  assert.match(text, /\| randw \| blkback nbd client \/ fio nbd engine: 0\.95x \| 0\.95 \| ≥ 0\.9x \| yes \|/);
  assert.doesNotMatch(text, /Ceph RBD/, 'a part that did not run has no table');
  assert.match(text, /- blkback nbd-server \(randw\): `cmd blkback nbd-server 1`/);
  assert.match(text, /not run: rbd part: no cluster given/);
});

test('bench --suite net: bad options are refused before anything runs', async () => {
  const cases: [string[], RegExp][] = [
    [['--net-size', '1000'], /--net-size: 1000 is not a multiple of 64 KiB/],
    [['--net-servers', 'nbdkit,tgt'], /--net-servers: 'tgt' is not one of blkback, nbdkit, qemu-nbd/],
    [['--rbd-conf', '/etc/ceph/ceph.conf'], /--rbd-conf and --rbd-image go together/],
    [['--rbd-conf', '/c', '--rbd-image', 'noslash'], /--rbd-image: 'noslash' is not POOL\/IMAGE/],
    [['--seed-jobs', 'randr'], /--seed-jobs: 'randr' is not one of randw, iometer/],
    [['--no-rbd', '--rbd-conf', '/c', '--rbd-image', 'a/b'], /--no-rbd skips the rbd part: it does not go with --rbd-conf/],
  ];
  for (const [args, message] of cases) {
    const r = await run(process.execPath, [MAIN, 'bench', '--suite', 'net', '--quick', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});

test('bench --suite net, tiny: every server and both clients measured on iometer, each figure with its command', { timeout: 60_000 }, async (t) => {
  if (stopIfMissing(t, missingTools(['fio', 'nbdkit', 'qemu-nbd', 'nbdcopy'], 'fio nbdkit qemu-utils libnbd-bin'))) return;
  const lines: string[] = [];
  const r = await runNetBench({ seconds: 0.5, rounds: 1, size: 8 << 20, jobs: ['iometer'], progress: (l) => lines.push(l) });
  const paths = r.results.map((x) => `${x.part}: ${x.path}`).sort();
  assert.deepEqual(r.skipped, ['rbd part: not asked for'], 'nothing else was skipped or failed');
  assert.deepEqual(paths, ['client: blkback nbd client', 'client: fio nbd engine', 'server: blkback nbd-server', 'server: nbdkit memory', 'server: qemu-nbd']);
  for (const x of r.results) {
    assert.ok(x.ios > 0 && x.mbps > 0, `${x.path} did I/O`);
    // The seed's iometer mix: 512 B to 64 KiB requests.
    assert.ok(x.bytes / x.ios >= 512 && x.bytes / x.ios <= 65536, `${x.path}: ${x.bytes / x.ios} bytes per I/O`);
    assert.ok(x.serverCpuUsPerIo !== null && x.serverCpuUsPerIo > 0, `${x.path}: the server's CPU was read`);
    if (x.path.startsWith('blkback nbd client')) assert.match(x.command, /^blkback fio --bare --disk 'vdev=xvda,access=rw,target=nbd\+unix:\/\/\/\?socket=/);
    else assert.match(x.command, /^fio --output-format=json --numjobs=2 --name=\/dev\/xvda .*--ioengine=nbd '--uri=nbd\+unix:\/\/\/(bench)?\?socket=/);
  }
  assert.equal(new Set(r.results.filter((x) => x.part === 'server').map((x) => x.command)).size, 3, 'each server has its own URI');
  assert.ok(
    lines.some((l) => /^\[net 1\/5\] round 1: iometer server: /.test(l)),
    lines.join('\n'),
  );
  assert.equal(netRatios(r).filter((q) => q.ratio !== null).length, 2, 'both goals with a ratio: server and client');
});
