import { parseArgs } from 'node:util';
import { defaultCases, formatBenchTable, runBench } from '../../bench/blkif-bench.ts';
import type { BenchCase, BenchReport } from '../../bench/blkif-bench.ts';
import { machineInfo } from '../../bench/machine.ts';
import { AIO_CASES, formatAioTable, runAioBench } from '../../bench/aio-bench.ts';
import type { AioReport } from '../../bench/aio-bench.ts';
import type { MachineInfo } from '../../bench/machine.ts';
import { formatIscsiTable, runIscsiBench } from '../../bench/iscsi-bench.ts';
import type { IscsiBenchReport, IscsiBenchTarget } from '../../bench/iscsi-bench.ts';
import { blkbackTarget } from '../../bench/iscsi-target.ts';
import { startTgt } from '../../bench/iscsi-tgt.ts';
import { formatLinkFill, runLinkFill } from '../../bench/link-fill.ts';
import { runNetBench } from '../../bench/net-bench.ts';
import { formatNetTables } from '../../bench/net-report.ts';
import type { NetBenchReport } from '../../bench/net-report.ts';
import { NBD_SERVERS } from '../../bench/nbd-servers.ts';
import type { NbdServerKind } from '../../bench/nbd-servers.ts';
import type { LinkFillReport } from '../../bench/link-fill.ts';
import { formatRunnerTable, runRunnerBench } from '../../bench/runner-bench.ts';
import type { RunnerBenchReport } from '../../bench/runner-bench.ts';
import { formatSeedTables, runSeedBench, SEED_JOBS } from '../../bench/seed-bench.ts';
import { runScaleBench, SCALE_GUESTS, SCALE_MAX_WARMUP_S, SCALE_QUICK_GUESTS, warmupLabel } from '../../bench/scale-bench.ts';
import type { ScaleReport } from '../../bench/scale-bench.ts';
import { formatScaleTable, scaleChartInput, scaleGoalLines, storeLine } from '../../bench/scale-report.ts';
import { renderScaleChart } from '../../report/scale-chart.ts';
import { formatSyscallTable, runSyscallBench, SYSCALL_CASES, SYSCALL_PATHS } from '../../bench/syscall-bench.ts';
import type { SyscallReport } from '../../bench/syscall-bench.ts';
import type { DataPath } from '../../blkback/ring-server.ts';
import { svgToPng } from '../../report/png.ts';
import type { SeedBenchReport, SeedJob } from '../../bench/seed-bench.ts';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseSize } from '../../config/size.ts';
import { UsageError } from '../../internal/errors.ts';
import type { Command } from '../command.ts';

const SUITES = ['blkif', 'runner', 'seed', 'aio', 'iscsi', 'scale', 'syscalls', 'net', 'all'] as const;
type Suite = (typeof SUITES)[number];

const help = `blkback bench — measure the virtualization path, the fio runner and the seed's jobs

usage: blkback bench [--suite blkif|runner|seed|aio|iscsi|scale|syscalls|net|all] [--seconds N] [--rounds N] [--quick] [--json]
                     [--span SIZE] [--rw randread,randwrite] [--bs 4k,64k] [--iodepth 1,32,256]
                     [--no-kernel] [--seed-size SIZE] [--seed-jobs randw,iometer]
                     [--iscsi-targets A,B] [--iscsi-size SIZE] [--iscsi-count N]
                     [--net-size SIZE] [--net-servers blkback,nbdkit,qemu-nbd] [--rbd-conf PATH --rbd-image POOL/IMAGE [--rbd-id NAME] | --no-rbd]
                     [--guests 1,2,4] [--queues 1,2] [--workers 1,2] [--warmup N] [--plot FILE] [--results FILE] [--ring-page-order N]

Suites (default blkif; 'npm run bench' runs blkif as well):
  blkif   for each pattern (random reads or writes, block size, queue depth), in turn:
            guest   a simulated guest (worker thread) -> blkfront -> blkif ring -> blkback -> RAM disk
            bare    the same load straight on the same RAM disk, no guest: the path's cost as a ratio
            kernel  real fio (ioengine=libaio, direct=1) on a loop device (direct-io=on) over a
                    /dev/shm file: the kernel block path, our yardstick (needs root and fio)
  runner  the fio runner's own cost: one job file (4 KiB random reads, iodepth 256, time based) run
          by our bare runner on a null disk that leaves read buffers untouched and by
          'fio --ioengine=null', alternately; IOPS per CPU core of each and their ratio (goal >= 0.9x)
  seed    the seed's jobs/randw.fio and jobs/iometer.fio, --set size/runtime/time_based=1, no logs,
          three ways over one store: guest ('blkback fio'), bare ('blkback fio --bare') and real fio
          3.x with libaio on the loop device (derived job copies: rw=randwrite, filename=/dev/loopN).
          As root the store is a loop device (direct-io=on) over a /dev/shm file of random data
          (the guest's disk is 'phy:' on it); otherwise a RAM disk, and the fio path is skipped.
          Paths take turns within each round. MB/s and IOPS per path; guest/fio and bare/fio.
  aio     how a phy: (O_DIRECT) disk's requests reach the kernel: random I/O (4 and 64 KiB, QD 32)
          on a loop device (direct-io=on) over /dev/shm by our direct driver with Linux native
          AIO (--aio native: a turn's requests in one io_submit), by the same driver on libuv's
          thread pool (--aio threads), and by fio (libaio) as the yardstick; IOPS, our CPU time
          per I/O, native/threads and native/fio (needs root and fio)
  iscsi   two iSCSI targets, A and B (default: ours, 'blkback iscsi-target', and Debian's tgtd),
          serving one LUN store (a /dev/shm file of zeros) on 127.0.0.1 to the same clients, in
          turns within each round: 'qemu-img bench -f raw -t none -d 32 -s 4096|65536 [-w
          --pattern=0xab]' (reads and writes) and 'iscsi-perf -m 32 -b 8|128' (reads), plus
          qemu-img on the file itself (no iSCSI). IOPS, MB/s, each target's CPU time per I/O
          (procfs, all its threads), the client's CPU, and A/B (needs root, tgt, libiscsi-bin,
          qemu-utils and qemu-block-extra; not part of 'all'); our initiator against iscsi-perf
          on the same target; and the seed's randw.fio over the mail's 1 Gbit/s link (the rig of
          'reproduce --rig iscsi'), per backend, as a share of the link (goal: at least 0.9x)
  scale   one blkback (this process) serving G simulated guests, each with one disk on
          one shared RAM disk, each keeping 4 KiB random reads at QD32 in flight through blkfront;
          all guests run at once, a warm-up then a measured window. Per configuration (guests,
          queues per guest, data-plane workers): total IOPS, fairness (max/min per-guest IOPS), the
          backend threads' CPU µs per I/O (its main thread and data-plane workers), memory per
          connected ring and per guest, reads checked against each block's stamp; each figure
          beside its goal; a PNG of IOPS and fairness vs guests (the default sweep of 42
          configurations takes about 25 minutes on 2 cores with the automatic warm-up; --guests,
          --queues and --workers narrow it; not part of 'all')
  syscalls  system calls per request of the backend on a phy: disk (a loop device, direct-io=on,
          over /dev/shm), per data path (persistent, copy, map; --data-path to choose), random
          reads and writes of 4 and 64 KiB at QD32 from a simulated guest: 'perf stat --per-thread
          -e raw_syscalls:sys_enter' on every thread but the guest's, plus the grant and event-
          channel calls (function calls here, system calls on real Xen) at the price our real-Xen
          binding pays for each; goal at most 0.5 a request on persistent and copy (needs root,
          fio's loop device set-up and perf; not part of 'all')
  net     stores over the network, the seed's jobs (jobs/randw.fio, jobs/iometer.fio, derived copies
          for fio's network engines: src/bench/net-fio-jobs.ts), paths taking turns in each round:
            server  our NBD server ('blkback nbd-server', a RAM disk) vs nbdkit (memory plugin) vs
                    qemu-nbd (a /dev/shm raw file), every export prefilled with the same random bytes
                    and driven by 'fio --ioengine=nbd' over a Unix socket (goal: ours >= 1.2x nbdkit)
            client  our NBD client (our fio runner bare on nbd+unix:///...) vs fio's nbd engine, both
                    against nbdkit (goal: ours >= 0.9x fio)
            rbd     our rbd: store (our runner bare) vs 'fio --ioengine=rbd' on one image, prefilled
                    first: of an existing cluster (--rbd-conf, --rbd-image), or of a throwaway one
                    brought up for the run and torn down after (one mon, one memstore OSD; Debian's
                    ceph-mon, ceph-osd, ceph-common: skipped, saying so, without them; goal: ours >= 0.9x fio);
                    its rounds run after the NBD parts', the cluster brought up only then
          MB/s, IOPS, server and client CPU per I/O, and each ratio as the median of the rounds' own
          ratios; each figure names its command (needs fio, nbdkit, nbdcopy, qemu-nbd; not part of 'all')
  all     blkif, runner, seed, aio (about 7 minutes on 2 cores)

Options:
  --seconds N       run time of every run (default: blkif 2, runner 3, seed 4, iscsi 10 (iscsi-perf),
                    scale 3 (measured, after the warm-up); --quick: 0.5, 1, 1, 2, 0.5)
  --rounds N        times each suite runs its whole set, taking turns (default: blkif and iscsi 3,
                    runner and seed 2; --quick: 1); tables give medians and each ratio's median over
                    rounds
  --quick           short runs: a smoke test, not a measurement
  --json            print one JSON document: { machine, results: [...] } for one suite (blkif:
                    { path, round, rw, bs, iodepth, iops, mbps }; runner: { path, round, ios, iops,
                    cpuSeconds, iopsPerCore } and summary.ratio; seed: { job, path, round, mbps,
                    iops, avgIoBytes, cpuUsPerIo } and ratios; aio: { path, round, rw, bs, iodepth, iops, mbps,
                    cpuUsPerIo }; iscsi: { path A|B|file, round, tool, rw, bs, ios, seconds, iops,
                    mbps, targetCpuSeconds, targetCpuUsPerIo, clientCpuSeconds, command }; scale:
                    { machine, store, ..., rows: [{ guests, queues, workers, iops, fairness,
                    cpuUsPerIo, rssPerRing, heapPerRing, heapPerRingAfterIo, rssPerGuest, ... }],
                    skipped }; net: { machine, setup, skipped, goals, results: [{ part, job, path, round,
                    position, ios, mbps, iops, serverCpuUsPerIo, clientCpuUsPerIo, command }] }), or
                    { machine, blkif, runner, seed, aio } for all
 blkif only:
  --span SIZE       bytes of disk the random offsets cover (default 1G)
  --rw LIST         randread, randwrite or both (default both)
  --bs LIST         block sizes (default 4k,64k)
  --iodepth LIST    queue depths (default 1,32,256; --quick: 1,32)
  --no-kernel       skip the fio yardstick
  --xenstore-socket PATH  serve the simulated host's xenstore on this Unix socket while it runs
 seed only:
  --seed-size SIZE  size= of every job and of the store (default 512m; --quick: 128m)
  --seed-jobs LIST  randw, iometer or both (default both; net too)
 net only:
  --net-size SIZE   size= of every job and of every export (default 256m; --quick: 32m)
  --net-servers LIST  the server part's servers: blkback, nbdkit, qemu-nbd (default all; 'none' for none)
  --rbd-conf PATH   ceph.conf of an existing cluster, for the rbd part (default: a throwaway cluster)
  --rbd-image POOL/IMAGE  the image the rbd part writes (its first --net-size bytes are overwritten;
                    create it with --image-feature layering: fio opens it once per job)
  --rbd-id NAME     the cephx user (default admin)
  --no-rbd          no rbd part
 scale only:
  --guests LIST     guests per configuration (default 1,2,4,8,16,32,64; --quick: 1,4,16)
  --queues LIST     rings per guest (multi-queue), 1..4 (default 1,2,4)
  --workers LIST    blkback data-plane worker threads, 0 for none (every ring on the main thread)
                    (default 1,N with N the cores)
  --warmup N|auto   seconds every configuration runs before its measured window; auto (the default):
                    at least 1 s, then on until the total rate stops rising, at most 90 s (each guest
                    is a V8 isolate warming up its own code: 64 on 2 cores took over 30 s); --quick: 0.25
  --plot FILE       where the PNG of IOPS and fairness vs guests goes (default bench-scale.png)
  --results FILE    also write the JSON document (as --json prints it) to FILE
  --ring-page-order N  the backend's max-ring-page-order, 0..4 (default 4: 16-page rings of 512 slots)
 syscalls only:
  --data-path LIST  persistent, copy, map or several (default all three)
 iscsi only:
  --iscsi-targets A,B  the two targets, each blkback or tgt (default blkback,tgt; ratios are A/B;
                    tgt,tgt checks the harness: the ratios should be about 1)
  --iscsi-size SIZE the LUN store (default 1G; --quick: 256m)
  --iscsi-count N   qemu-img bench requests per 4 KiB run (-c; 64 KiB runs do N/2; default 100000,
                    --quick: 10000)

Figures move with the machine's load: compare paths within one run, not across runs.

examples:
  blkback bench --quick
  blkback bench --suite runner
  blkback bench --suite all --json > bench.json
  blkback bench --suite iscsi --iscsi-targets tgt,tgt --quick
  blkback bench --suite scale --guests 1,8,64 --plot /tmp/scale.png
  blkback bench --suite net --quick
  blkback bench --suite net --rounds 3 --rbd-conf /etc/ceph/ceph.conf --rbd-image rbd/bench
`;

export const benchCommand: Command = {
  name: 'bench',
  summary: 'guest path vs bare vs kernel (fio); the fio runner vs fio; the seed jobs three ways; one backend, many guests',
  help,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        suite: { type: 'string', default: 'blkif' },
        seconds: { type: 'string' },
        rounds: { type: 'string' },
        span: { type: 'string' },
        rw: { type: 'string' },
        bs: { type: 'string' },
        iodepth: { type: 'string' },
        quick: { type: 'boolean', default: false },
        'no-kernel': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        'xenstore-socket': { type: 'string' },
        'seed-size': { type: 'string' },
        'seed-jobs': { type: 'string' },
        'iscsi-targets': { type: 'string' },
        'iscsi-size': { type: 'string' },
        'iscsi-count': { type: 'string' },
        guests: { type: 'string' },
        queues: { type: 'string' },
        workers: { type: 'string' },
        warmup: { type: 'string' },
        plot: { type: 'string' },
        'data-path': { type: 'string' },
        results: { type: 'string' },
        'ring-page-order': { type: 'string' },
        'net-size': { type: 'string' },
        'net-servers': { type: 'string' },
        'rbd-conf': { type: 'string' },
        'rbd-image': { type: 'string' },
        'rbd-id': { type: 'string' },
        'no-rbd': { type: 'boolean', default: false },
      },
      strict: true,
    });
    const suite = values.suite as Suite;
    if (!(SUITES as readonly string[]).includes(suite)) throw new UsageError(`--suite: '${values.suite}' is not one of ${SUITES.join(', ')}`);
    const quick = values.quick;
    const secondsFor = (normal: number, short: number): number => {
      if (values.seconds === undefined) return quick ? short : normal;
      const s = Number(values.seconds);
      if (!(s > 0)) throw new UsageError(`--seconds: '${values.seconds}' is not a positive number`);
      return s;
    };
    const roundsFor = (normal: number): number => {
      if (values.rounds === undefined) return quick ? 1 : normal;
      const n = Number(values.rounds);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`--rounds: '${values.rounds}' is not a positive whole number`);
      return n;
    };
    const rounds = roundsFor(2);
    const progress = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };
    const want = (s: Exclude<Suite, 'all'>): boolean => suite === s || suite === 'all';

    // Everything is validated before the first run starts.
    let blkifRun: (() => Promise<BenchReport>) | null = null;
    if (want('blkif')) {
      const seconds = secondsFor(2, 0.5);
      const span = parseSize(values.span ?? '1G', '--span');
      const rws = (values.rw ?? 'randread,randwrite').split(',').map((s) => {
        if (s !== 'randread' && s !== 'randwrite') throw new UsageError(`--rw: '${s}' is not randread or randwrite`);
        return s;
      });
      const bss = (values.bs ?? '4k,64k').split(',').map((s) => parseSize(s, '--bs'));
      const depths = (values.iodepth ?? (quick ? '1,32' : '1,32,256')).split(',').map((s) => {
        const n = Number(s);
        if (!Number.isInteger(n) || n < 1 || n > 4096) throw new UsageError(`--iodepth: '${s}' is not a queue depth (1..4096)`);
        return n;
      });
      const cases: BenchCase[] = defaultCases().filter(() => false);
      for (const bs of bss) for (const rw of rws) for (const iodepth of depths) cases.push({ rw, bs, iodepth });
      const socket = values['xenstore-socket'];
      const blkifRounds = roundsFor(3);
      blkifRun = () =>
        runBench({
          seconds,
          rounds: blkifRounds,
          span,
          cases,
          kernel: !values['no-kernel'],
          progress,
          ...(socket === undefined ? {} : { xenstoreSocket: socket }),
        });
    }
    let runnerRun: (() => Promise<RunnerBenchReport>) | null = null;
    if (want('runner')) {
      const seconds = secondsFor(3, 1);
      runnerRun = () => runRunnerBench({ seconds, rounds, progress });
    }
    let aioRun: (() => Promise<AioReport>) | null = null;
    if (want('aio')) {
      const seconds = secondsFor(2, 0.5);
      const aioRounds = roundsFor(3);
      aioRun = () => runAioBench({ seconds, rounds: aioRounds, span: 256 << 20, cases: AIO_CASES, progress });
    }
    let seedRun: (() => Promise<SeedBenchReport>) | null = null;
    if (want('seed')) {
      const seconds = secondsFor(4, 1);
      const size = parseSize(values['seed-size'] ?? (quick ? '128m' : '512m'), '--seed-size');
      const jobs = (values['seed-jobs'] ?? SEED_JOBS.join(',')).split(',').map((s) => {
        if (!(SEED_JOBS as readonly string[]).includes(s)) throw new UsageError(`--seed-jobs: '${s}' is not one of ${SEED_JOBS.join(', ')}`);
        return s as SeedJob;
      });
      seedRun = () => runSeedBench({ seconds, rounds, size, jobs, progress });
    }

    let iscsiRun: (() => Promise<IscsiBenchReport>) | null = null;
    let linkFillRun: (() => Promise<LinkFillReport>) | null = null;
    if (suite === 'iscsi') {
      const seconds = secondsFor(10, 2);
      const iscsiRounds = roundsFor(3);
      const lunBytes = parseSize(values['iscsi-size'] ?? (quick ? '256m' : '1G'), '--iscsi-size');
      const count = Number(values['iscsi-count'] ?? (quick ? 10000 : 100000));
      if (!Number.isInteger(count) || count < 1) throw new UsageError(`--iscsi-count: '${values['iscsi-count']}' is not a positive whole number`);
      const kinds = (values['iscsi-targets'] ?? 'blkback,tgt').split(',');
      if (kinds.length !== 2 || !kinds.every((k) => k === 'blkback' || k === 'tgt'))
        throw new UsageError(`--iscsi-targets: '${values['iscsi-targets']}' is not two of blkback, tgt (A,B)`);
      const same = kinds[0] === kinds[1];
      const targets = kinds.map(
        (k, i): IscsiBenchTarget => ({ label: same ? `${k} ${i === 0 ? 'A' : 'B'}` : k, start: k === 'tgt' ? startTgt : blkbackTarget() }),
      ) as [IscsiBenchTarget, IscsiBenchTarget];
      iscsiRun = () =>
        runIscsiBench({ targets, rounds: iscsiRounds, seconds, count4k: count, count64k: Math.max(1, Math.floor(count / 2)), lunBytes, progress });
      linkFillRun = () => runLinkFill({ seconds, sizeBytes: lunBytes, progress });
    }

    let netRun: (() => Promise<NetBenchReport>) | null = null;
    if (suite === 'net') netRun = netSuite(values, { quick, seconds: secondsFor(4, 1), rounds, progress });

    let scaleRun: (() => Promise<ScaleReport>) | null = null;
    if (suite === 'scale') {
      const seconds = secondsFor(3, 0.5);
      // auto: at least 1 s, then until the rate stops rising, at most SCALE_MAX_WARMUP_S.
      const auto = values.warmup === undefined ? !quick : values.warmup === 'auto';
      const warmup = auto ? 1 : values.warmup === undefined ? 0.25 : Number(values.warmup);
      if (!(warmup >= 0)) throw new UsageError(`--warmup: '${values.warmup}' is not a number of seconds or 'auto'`);
      const list = (option: string, text: string, max: number, min = 1): number[] =>
        text.split(',').map((s) => {
          const n = Number(s);
          if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${option}: '${s}' is not a whole number from ${min} to ${max}`);
          return n;
        });
      const guests = list('guests', values.guests ?? (quick ? SCALE_QUICK_GUESTS : SCALE_GUESTS).join(','), 256);
      const queues = list('queues', values.queues ?? '1,2,4', 4);
      const workers = list('workers', values.workers ?? [...new Set([1, cpus().length])].join(','), 64, 0);
      const orderText = values['ring-page-order'];
      const order = orderText === undefined ? undefined : Number(orderText);
      if (order !== undefined && !(Number.isInteger(order) && order >= 0 && order <= 4))
        throw new UsageError(`--ring-page-order: '${orderText}' is not a whole number from 0 to 4`);
      scaleRun = () =>
        runScaleBench({
          guests,
          queues,
          workers,
          warmupSeconds: warmup,
          ...(auto ? { maxWarmupSeconds: SCALE_MAX_WARMUP_S } : {}),
          seconds,
          progress,
          ...(order === undefined ? {} : { maxRingPageOrder: order }),
        });
    }

    let syscallRun: (() => Promise<SyscallReport>) | null = null;
    if (suite === 'syscalls') {
      const seconds = secondsFor(2, 0.5);
      const paths = (values['data-path'] ?? SYSCALL_PATHS.join(',')).split(',').map((p) => {
        if (!(SYSCALL_PATHS as readonly string[]).includes(p)) throw new UsageError(`--data-path: '${p}' is not one of ${SYSCALL_PATHS.join(', ')}`);
        return p as DataPath;
      });
      const syscallRounds = roundsFor(1);
      syscallRun = () =>
        runSyscallBench({
          seconds,
          rounds: syscallRounds,
          span: 256 << 20,
          cases: quick ? SYSCALL_CASES.slice(0, 2) : SYSCALL_CASES,
          paths,
          command: `blkback bench ${argv.join(' ')}`,
          progress,
        });
    }

    const blkif = blkifRun === null ? null : await blkifRun();
    const runner = runnerRun === null ? null : await runnerRun();
    const seed = seedRun === null ? null : await seedRun();
    const aio = aioRun === null ? null : await aioRun();
    const iscsi = iscsiRun === null ? null : await iscsiRun();
    const linkFill = linkFillRun === null ? null : await linkFillRun();
    const scale = scaleRun === null ? null : await scaleRun();
    const syscalls = syscallRun === null ? null : await syscallRun();
    const net = netRun === null ? null : await netRun();
    if (scale !== null) {
      const plot = values.plot ?? 'bench-scale.png';
      writeFileSync(plot, svgToPng(renderScaleChart(scaleChartInput(scale))));
      progress(`plot: ${plot}`);
      if (values.results !== undefined) writeFileSync(values.results, `${JSON.stringify(scale, null, 2)}\n`);
    }

    if (values.json) {
      let doc: unknown;
      if (suite === 'all') {
        const strip = <T extends { machine: MachineInfo }>(r: T | null): Omit<T, 'machine'> | null => {
          if (r === null) return null;
          const { machine: _machine, ...rest } = r;
          return rest;
        };
        doc = { machine: machineInfo(), blkif: strip(blkif), runner: strip(runner), seed: strip(seed), aio: strip(aio) };
      } else {
        doc = blkif ?? runner ?? seed ?? aio ?? scale ?? syscalls ?? net ?? (iscsi === null ? null : { ...iscsi, linkFill });
      }
      process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
      return 0;
    }
    const m = (blkif ?? runner ?? seed ?? aio ?? iscsi ?? scale ?? syscalls ?? net)!.machine;
    process.stdout.write(`machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}, load ${m.loadAverage.join(' ')}\n`);
    if (blkif !== null)
      process.stdout.write(
        `\n## blkif: guest vs bare vs kernel (${blkif.seconds} s x ${blkif.rounds} rounds)\nkernel path: ${blkif.kernel}\n\n${formatBenchTable(blkif)}\n`,
      );
    if (runner !== null)
      process.stdout.write(
        `\n## runner: bare runner on a null disk vs fio --ioengine=null (${runner.seconds} s x ${runner.rounds} rounds)\n\n${formatRunnerTable(runner)}\n`,
      );
    if (seed !== null) {
      process.stdout.write(
        `\n## seed: jobs/randw.fio and jobs/iometer.fio, guest vs bare vs fio (${seed.seconds} s x ${seed.rounds} rounds, size=${seed.sizeBytes})\n`,
      );
      process.stdout.write(`store: ${seed.store}\nfio: ${seed.fio}\n\n${formatSeedTables(seed)}\n`);
    }
    if (iscsi !== null) {
      process.stdout.write(
        `\n## iscsi: A = ${iscsi.targets.A}, B = ${iscsi.targets.B}, same LUN store and clients (${iscsi.rounds} round${iscsi.rounds === 1 ? '' : 's'}; iscsi-perf ${iscsi.seconds} s, qemu-img bench -c ${iscsi.count4k} / ${iscsi.count64k} for 4k / 64k, QD${iscsi.queueDepth})\nstore: ${iscsi.store}\ncommand: blkback bench ${argv.join(' ')}\n\n${formatIscsiTable(iscsi)}\n`,
      );
      if (linkFill !== null) process.stdout.write(`\n${formatLinkFill(linkFill)}\n`);
    }
    if (scale !== null) {
      process.stdout.write(
        `\n## scale: one blkback, G guests, 4 KiB random reads at QD${scale.iodepth} each (${warmupLabel(scale.warmupSeconds, scale.maxWarmupSeconds, 'stopped')}, ${scale.seconds} s measured)\n` +
          `${storeLine(scale)}\n` +
          `guest memory: ${scale.guestMemoryBytes >> 10} KiB each; backend CPU: its main thread and data-plane workers (/proc/self/task/TID), the guests are worker threads too\n` +
          `${scale.skipped.map((s) => `not run: ${s.what}=${s.value}, ${s.reason}\n`).join('')}command: blkback bench ${argv.join(' ')}\n\n${formatScaleTable(scale)}\n\n` +
          `${scaleGoalLines(scale).join('\n')}\n`,
      );
    }
    if (net !== null)
      process.stdout.write(
        `\n## net: NBD servers, NBD clients and Ceph RBD, the seed's jobs (${net.seconds} s x ${net.rounds} round${net.rounds === 1 ? '' : 's'}, size=${net.sizeBytes})\n` +
          `command: blkback bench ${argv.join(' ')}\n${net.setup.map((l) => `${l}\n`).join('')}\n${formatNetTables(net)}\n`,
      );
    if (syscalls !== null) process.stdout.write(`\n## syscalls: per request, backend threads, phy: disk\n\n${formatSyscallTable(syscalls)}\n`);
    if (aio !== null) {
      process.stdout.write(
        `\n## aio: phy: disk I/O, native AIO vs libuv's pool vs fio libaio (${aio.seconds} s x ${aio.rounds} rounds)\ndevice: ${aio.device}\n\n${formatAioTable(aio)}\n`,
      );
    }
    return 0;
  },
};

interface NetValues {
  readonly 'net-size'?: string | undefined;
  readonly 'net-servers'?: string | undefined;
  readonly 'seed-jobs'?: string | undefined;
  readonly 'rbd-conf'?: string | undefined;
  readonly 'rbd-image'?: string | undefined;
  readonly 'rbd-id'?: string | undefined;
  readonly 'no-rbd'?: boolean | undefined;
}

/** `--suite net`'s options, checked before anything runs. */
function netSuite(values: NetValues, o: { quick: boolean; seconds: number; rounds: number; progress: (line: string) => void }): () => Promise<NetBenchReport> {
  const size = parseSize(values['net-size'] ?? (o.quick ? '32m' : '256m'), '--net-size');
  if (size % 65536 !== 0) throw new UsageError(`--net-size: ${size} is not a multiple of 64 KiB (the seed's largest block)`);
  const jobs = (values['seed-jobs'] ?? SEED_JOBS.join(',')).split(',').map((s) => {
    if (!(SEED_JOBS as readonly string[]).includes(s)) throw new UsageError(`--seed-jobs: '${s}' is not one of ${SEED_JOBS.join(', ')}`);
    return s as SeedJob;
  });
  const serversText = values['net-servers'] ?? NBD_SERVERS.join(',');
  const servers =
    serversText === 'none'
      ? []
      : serversText.split(',').map((s) => {
          if (!(NBD_SERVERS as readonly string[]).includes(s)) throw new UsageError(`--net-servers: '${s}' is not one of ${NBD_SERVERS.join(', ')} (or none)`);
          return s as NbdServerKind;
        });
  const conf = values['rbd-conf'];
  const image = values['rbd-image'];
  if ((conf === undefined) !== (image === undefined)) throw new UsageError('--rbd-conf and --rbd-image go together: the cluster and the image on it');
  if (image !== undefined && !/^[^/@:]+\/[^/@:]+$/.test(image)) throw new UsageError(`--rbd-image: '${image}' is not POOL/IMAGE`);
  if (values['rbd-id'] !== undefined && conf === undefined) throw new UsageError('--rbd-id goes with --rbd-conf and --rbd-image');
  if (values['no-rbd'] === true && conf !== undefined) throw new UsageError('--no-rbd skips the rbd part: it does not go with --rbd-conf');
  const rbd =
    conf === undefined || image === undefined
      ? values['no-rbd'] === true
        ? 'none'
        : 'throwaway'
      : { conf, image, ...(values['rbd-id'] === undefined ? {} : { id: values['rbd-id'] }) };
  return () => runNetBench({ seconds: o.seconds, rounds: o.rounds, size, jobs, servers, progress: o.progress, rbd });
}
