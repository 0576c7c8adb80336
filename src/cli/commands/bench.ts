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
import type { LinkFillReport } from '../../bench/link-fill.ts';
import { formatRunnerTable, runRunnerBench } from '../../bench/runner-bench.ts';
import type { RunnerBenchReport } from '../../bench/runner-bench.ts';
import { formatSeedTables, runSeedBench, SEED_JOBS } from '../../bench/seed-bench.ts';
import type { SeedBenchReport, SeedJob } from '../../bench/seed-bench.ts';
import { parseSize } from '../../config/size.ts';
import { UsageError } from '../../internal/errors.ts';
import type { Command } from '../command.ts';

const SUITES = ['blkif', 'runner', 'seed', 'aio', 'iscsi', 'all'] as const;
type Suite = (typeof SUITES)[number];

const help = `blkback bench — measure the virtualization path, the fio runner and the seed's jobs

usage: blkback bench [--suite blkif|runner|seed|aio|iscsi|all] [--seconds N] [--rounds N] [--quick] [--json]
                     [--span SIZE] [--rw randread,randwrite] [--bs 4k,64k] [--iodepth 1,32,256]
                     [--no-kernel] [--seed-size SIZE] [--seed-jobs randw,iometer]
                     [--iscsi-targets A,B] [--iscsi-size SIZE] [--iscsi-count N]

Suites (default blkif; 'npm run bench' runs blkif as well):
  blkif   for each pattern (random reads or writes, block size, queue depth), in turn:
            guest   a simulated guest (worker thread) -> blkfront -> blkif ring -> blkback -> RAM disk
            bare    the same load straight on the same RAM disk, no guest: the path's cost as a ratio
            kernel  real fio (ioengine=libaio, direct=1) on a loop device (direct-io=on) over a
                    /dev/shm file: the kernel block path, our yardstick (needs root and fio)
  runner  the fio runner's own cost: one job file (4 KiB random reads, iodepth 256, time based) run
          by our bare runner on a null disk that leaves read buffers untouched and by
          'fio --ioengine=null', alternately; IOPS per CPU core of each and their ratio (goal >= 0.25x)
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
  all     blkif, runner, seed, aio (about 7 minutes on 2 cores)

Options:
  --seconds N       run time of every run (default: blkif 2, runner 3, seed 4, iscsi 10 (iscsi-perf);
                    --quick: 0.5, 1, 1, 2)
  --rounds N        times each suite runs its whole set, taking turns (default: blkif and iscsi 3,
                    runner and seed 2; --quick: 1); tables give medians and each ratio's median over
                    rounds
  --quick           short runs: a smoke test, not a measurement
  --json            print one JSON document: { machine, results: [...] } for one suite (blkif:
                    { path, round, rw, bs, iodepth, iops, mbps }; runner: { path, round, ios, iops,
                    cpuSeconds, iopsPerCore } and summary.ratio; seed: { job, path, round, mbps,
                    iops, avgIoBytes } and ratios; aio: { path, round, rw, bs, iodepth, iops, mbps,
                    cpuUsPerIo }; iscsi: { path A|B|file, round, tool, rw, bs, ios, seconds, iops,
                    mbps, targetCpuSeconds, targetCpuUsPerIo, clientCpuSeconds, command }), or
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
  --seed-jobs LIST  randw, iometer or both (default both)
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
`;

export const benchCommand: Command = {
  name: 'bench',
  summary: 'guest path vs bare vs kernel (fio); the fio runner vs fio; the seed jobs three ways',
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
      blkifRun = () => runBench({ seconds, rounds: blkifRounds, span, cases, kernel: !values['no-kernel'], progress, ...(socket === undefined ? {} : { xenstoreSocket: socket }) });
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
      if (kinds.length !== 2 || !kinds.every((k) => k === 'blkback' || k === 'tgt')) throw new UsageError(`--iscsi-targets: '${values['iscsi-targets']}' is not two of blkback, tgt (A,B)`);
      const same = kinds[0] === kinds[1];
      const targets = kinds.map((k, i): IscsiBenchTarget => ({ label: same ? `${k} ${i === 0 ? 'A' : 'B'}` : k, start: k === 'tgt' ? startTgt : blkbackTarget() })) as [IscsiBenchTarget, IscsiBenchTarget];
      iscsiRun = () => runIscsiBench({ targets, rounds: iscsiRounds, seconds, count4k: count, count64k: Math.max(1, Math.floor(count / 2)), lunBytes, progress });
      linkFillRun = () => runLinkFill({ seconds, sizeBytes: lunBytes, progress });
    }

    const blkif = blkifRun === null ? null : await blkifRun();
    const runner = runnerRun === null ? null : await runnerRun();
    const seed = seedRun === null ? null : await seedRun();
    const aio = aioRun === null ? null : await aioRun();
    const iscsi = iscsiRun === null ? null : await iscsiRun();
    const linkFill = linkFillRun === null ? null : await linkFillRun();

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
        doc = blkif ?? runner ?? seed ?? aio ?? (iscsi === null ? null : { ...iscsi, linkFill });
      }
      process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
      return 0;
    }
    const m = (blkif ?? runner ?? seed ?? aio ?? iscsi)!.machine;
    process.stdout.write(`machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}, load ${m.loadAverage.join(' ')}\n`);
    if (blkif !== null) process.stdout.write(`\n## blkif: guest vs bare vs kernel (${blkif.seconds} s x ${blkif.rounds} rounds)\nkernel path: ${blkif.kernel}\n\n${formatBenchTable(blkif)}\n`);
    if (runner !== null) process.stdout.write(`\n## runner: bare runner on a null disk vs fio --ioengine=null (${runner.seconds} s x ${runner.rounds} rounds)\n\n${formatRunnerTable(runner)}\n`);
    if (seed !== null) {
      process.stdout.write(`\n## seed: jobs/randw.fio and jobs/iometer.fio, guest vs bare vs fio (${seed.seconds} s x ${seed.rounds} rounds, size=${seed.sizeBytes})\n`);
      process.stdout.write(`store: ${seed.store}\nfio: ${seed.fio}\n\n${formatSeedTables(seed)}\n`);
    }
    if (iscsi !== null) {
      process.stdout.write(
        `\n## iscsi: A = ${iscsi.targets.A}, B = ${iscsi.targets.B}, same LUN store and clients (${iscsi.rounds} round${iscsi.rounds === 1 ? '' : 's'}; iscsi-perf ${iscsi.seconds} s, qemu-img bench -c ${iscsi.count4k} / ${iscsi.count64k} for 4k / 64k, QD${iscsi.queueDepth})\nstore: ${iscsi.store}\ncommand: blkback bench ${argv.join(' ')}\n\n${formatIscsiTable(iscsi)}\n`,
      );
      if (linkFill !== null) process.stdout.write(`\n${formatLinkFill(linkFill)}\n`);
    }
    if (aio !== null) {
      process.stdout.write(`\n## aio: phy: disk I/O, native AIO vs libuv's pool vs fio libaio (${aio.seconds} s x ${aio.rounds} rounds)\ndevice: ${aio.device}\n\n${formatAioTable(aio)}\n`);
    }
    return 0;
  },
};
