import { parseArgs } from 'node:util';
import { defaultCases, formatBenchTable, runBench } from '../../bench/blkif-bench.ts';
import type { BenchCase } from '../../bench/blkif-bench.ts';
import { parseSize } from '../../config/size.ts';
import { UsageError } from '../../internal/errors.ts';
import type { Command } from '../command.ts';

const help = `blkback bench — measure the virtualization path against bare storage and the kernel

usage: blkback bench [--seconds N] [--span SIZE] [--rw randread,randwrite] [--bs 4k,64k]
                     [--iodepth 1,32,256] [--quick] [--no-kernel] [--json]

For each pattern (random reads or writes, block size, queue depth) it runs, in turn:
  guest   a simulated guest (worker thread) -> blkfront -> blkif ring -> blkback -> RAM disk
  bare    the same load straight on the same RAM disk, no guest: the cost of the path shows as a ratio
  kernel  real fio (ioengine=libaio, direct=1) on a loop device (direct-io=on) over a /dev/shm file:
          the kernel block path, our yardstick (needs root and fio; skipped otherwise, and said so)

Options:
  --seconds N     run time per pattern and path (default 2; --quick: 0.5)
  --span SIZE     bytes of disk the random offsets cover (default 1G, like the kernel-path baselines)
  --rw LIST       randread, randwrite or both (default both)
  --bs LIST       block sizes (default 4k,64k)
  --iodepth LIST  queue depths (default 1,32,256)
  --quick         0.5 s per run and QD 1 and 32 only
  --no-kernel     skip the fio yardstick
  --xenstore-socket PATH  serve the simulated host's xenstore on this Unix socket while it runs
  --json          print one JSON document: { machine, results: [{ path, rw, bs, iodepth, iops, mbps }] }

Figures move with the machine's load: compare paths within one run, not across runs.

example:
  blkback bench --quick
  blkback bench --bs 4k --iodepth 32 --seconds 5 --json > bench.json
`;

export const benchCommand: Command = {
  name: 'bench',
  summary: 'guest path vs bare RAM disk vs kernel loop device (fio), random I/O',
  help,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        seconds: { type: 'string' },
        span: { type: 'string' },
        rw: { type: 'string' },
        bs: { type: 'string' },
        iodepth: { type: 'string' },
        quick: { type: 'boolean', default: false },
        'no-kernel': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        'xenstore-socket': { type: 'string' },
      },
      strict: true,
    });
    const seconds = values.seconds !== undefined ? Number(values.seconds) : values.quick ? 0.5 : 2;
    if (!(seconds > 0)) throw new UsageError(`--seconds: '${values.seconds}' is not a positive number`);
    const span = parseSize(values.span ?? '1G', '--span');
    const rws = (values.rw ?? 'randread,randwrite').split(',').map((s) => {
      if (s !== 'randread' && s !== 'randwrite') throw new UsageError(`--rw: '${s}' is not randread or randwrite`);
      return s;
    });
    const bss = (values.bs ?? '4k,64k').split(',').map((s) => parseSize(s, '--bs'));
    const depths = (values.iodepth ?? (values.quick ? '1,32' : '1,32,256')).split(',').map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 1 || n > 4096) throw new UsageError(`--iodepth: '${s}' is not a queue depth (1..4096)`);
      return n;
    });
    const cases: BenchCase[] = defaultCases().filter(() => false);
    for (const bs of bss) for (const rw of rws) for (const iodepth of depths) cases.push({ rw, bs, iodepth });
    const progress = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };
    const socket = values['xenstore-socket'];
    const report = await runBench({ seconds, span, cases, kernel: !values['no-kernel'], progress, ...(socket === undefined ? {} : { xenstoreSocket: socket }) });
    if (values.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      const m = report.machine;
      process.stdout.write(`machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}, load ${m.loadAverage.join(' ')}\n`);
      process.stdout.write(`kernel path: ${report.kernel}\n\n${formatBenchTable(report)}\n`);
    }
    return 0;
  },
};
