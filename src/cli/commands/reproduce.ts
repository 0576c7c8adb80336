import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { machineInfo } from '../../bench/machine.ts';
import { parseSize } from '../../config/size.ts';
import { UsageError } from '../../internal/errors.ts';
import { bandwidthSeriesFromLogs, formatTable, renderBandwidthChart, renderReport, svgToPng } from '../../report/index.ts';
import { bwLogsOf, runExperiment, summarize } from '../../reproduce/experiment.ts';
import type { Backend } from '../../reproduce/experiment.ts';
import { SEED_LINK, parseLinkSpec } from '../../rig/link-spec.ts';
import type { Command } from '../command.ts';

const SEED_RATIO = 0.85; // the mail: "qdisk was around 15% down compared to blkback"

const help = `blkback reproduce — the 2011 xen-devel experiment, end to end, with its plots

usage: blkback reproduce [--quick] [--runs N] [--runtime T] [--size SIZE] [--out DIR]
                        [--rig local|iscsi] [--link 1gbit|none|RATE] [--storage SPEC]

Runs the mail's two fio job files (randw.fio: 4 jobs of 64 KiB random writes; iometer.fio: 2 jobs of
the IOMeter file-server mix, 80% reads, 512 B-64 KiB) as given, in the mail's two guests:
  phy    disk = [ 'phy:/dev/sdb,xvda,w' ]   blkback with direct I/O straight into granted pages
                                            (the kernel blkback analog)
  file   disk = [ 'file:/dev/sdb,xvda,w' ]  blkback through the page cache (QEMU qdisk analog)
over one RAM store standing in for the mail's iSCSI RAM disk: a file in /dev/shm that phy reads
through a loop device with direct I/O and file through the page cache (without root: one in-process
RAM disk for both, and the report says so). Each job file runs N times per backend, the backends
interleaved, the first rotating run by run (the order is printed). Size and runtime are scaled to
this machine (--set size=, runtime=, time_based=1), and bandwidth is logged over 500 ms windows
unless a job says otherwise, as the 2011 fio did.

It writes to --out:
  randw-bw.png, iometer-bw.png (and .svg)  bandwidth over time, one line per backend and run
  report.html                              setup, plots and results on one self-contained page
  logs/<job>/<backend>-run<N>/             every fio log (per job, fio 3.33 names and format)
  results.json                             the numbers behind the table
and prints a table: mean bandwidth, IOPS, p50/p99 completion latency per backend, and the ratio
file/phy beside the mail's (~${SEED_RATIO}).

Options:
  --quick          1 run of 3 s each, 256 MiB store: under 30 seconds
  --runs N         runs per job file and backend (default 3)
  --runtime T      seconds per run (default 10)
  --size SIZE      size of the RAM store and of each job's region (default 1G)
  --out DIR        output directory (default ./reproduce-out)
  --rig iscsi      the mail's rig (the default as root): a RAM LUN of --size on our iSCSI target,
                   run in its own network namespace behind a veth pair shaped with tc to --link;
                   each guest's /dev/sdb is that LUN through our initiator (iscsi://). The report
                   names the link and the CPU time of the target and of this process (initiator,
                   blkback and guests). Without root: the target on loopback, unshaped, and the
                   report says so. Both guests reach the LUN through our initiator: there is no
                   host page cache over it, so file differs from phy by blkback's path alone
  --rig local      the store on this host, as described above (the default without root)
  --link RATE      the storage link with --rig iscsi: ${SEED_LINK} (default, the mail's), none
                   (unshaped veth), or a tc rate such as 100mbit, 2.5gbit
  --storage SPEC   use this store for both backends instead (ram:2G, /dev/nvme0n1, ...; implies
                   --rig local)

example:
  blkback reproduce --quick --out /tmp/seed
`;

export const reproduceCommand: Command = {
  name: 'reproduce',
  summary: "the seed's experiment: both job files, phy vs file guests, 3 runs, plots and report",
  help,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean', default: false },
        runs: { type: 'string' },
        runtime: { type: 'string' },
        size: { type: 'string' },
        out: { type: 'string', default: 'reproduce-out' },
        storage: { type: 'string' },
        rig: { type: 'string' },
        link: { type: 'string' },
      },
    });
    const rig = values.rig ?? (values.storage === undefined && process.getuid?.() === 0 ? 'iscsi' : 'local');
    if (rig !== 'local' && rig !== 'iscsi') throw new UsageError(`--rig ${rig}: expected local or iscsi`);
    if (rig === 'iscsi' && values.storage !== undefined) throw new UsageError('--storage names a local store: it goes with --rig local, not --rig iscsi');
    if (rig === 'local' && values.link !== undefined) throw new UsageError('--link shapes the iSCSI rig\'s storage link: it goes with --rig iscsi');
    const link = parseLinkSpec(values.link ?? SEED_LINK);
    const runs = values.runs !== undefined ? Number(values.runs) : values.quick ? 1 : 3;
    if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new UsageError(`--runs: '${values.runs}' is not a run count (1..100)`);
    const runtime = values.runtime !== undefined ? Number(values.runtime) : values.quick ? 3 : 10;
    if (!(runtime > 0)) throw new UsageError(`--runtime: '${values.runtime}' is not a positive number of seconds`);
    const storeBytes = parseSize(values.size ?? (values.quick ? '256M' : '1G'), '--size');
    const out = values.out;
    mkdirSync(out, { recursive: true });

    const asset = (rel: string): { path: string; text: string } => {
      const url = new URL(rel, import.meta.url);
      return { path: rel.replace(/^.*\//, ''), text: readFileSync(url, 'utf8') };
    };
    const jobFiles = [asset('../../../../jobs/randw.fio'), asset('../../../../jobs/iometer.fio')].map((f) => ({ ...f, path: `jobs/${f.path}` }));
    const guestConfigs: Record<Backend, { path: string; text: string }> = {
      phy: { ...asset('../../../../examples/guest-phy.cfg'), path: 'examples/guest-phy.cfg' },
      file: { ...asset('../../../../examples/guest-qdisk.cfg'), path: 'examples/guest-qdisk.cfg' },
    };
    const log = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };
    const started = Date.now();
    const outcome = await runExperiment({
      jobFiles,
      guestConfigs,
      runs,
      runtimeSeconds: runtime,
      storeBytes,
      ...(values.storage === undefined ? {} : { storage: values.storage }),
      rig,
      link,
      outDir: out,
      progress: log,
    });

    const plots: { title: string; svg: string; caption: string }[] = [];
    for (const job of ['randw', 'iometer']) {
      const series = bandwidthSeriesFromLogs(
        outcome.records
          .filter((r) => r.job === job)
          .map((r) => ({ label: `${r.backend} run ${r.run}`, group: r.backend, run: r.run, files: bwLogsOf(r.logDir) })),
      );
      const svg = renderBandwidthChart({ title: `Bandwidth - ${job}`, series });
      writeFileSync(join(out, `${job}-bw.svg`), svg);
      writeFileSync(join(out, `${job}-bw.png`), svgToPng(svg));
      plots.push({
        title: `${job}-bw`,
        svg,
        caption: `${job}.fio: bandwidth per 500 ms window, summed over the run's jobs; one line per backend and run.`,
      });
    }

    const summary = summarize(outcome.records);
    const columns = ['job', 'backend', 'runs', 'MiB/s', 'IOPS', 'clat p50 (us)', 'clat p99 (us)', 'file/phy', 'seed file/phy'];
    const rows: (string | number)[][] = [];
    for (const s of summary) {
      const phy = summary.find((x) => x.job === s.job && x.backend === 'phy');
      const ratio = s.backend === 'file' && phy !== undefined && phy.mibps > 0 ? (s.mibps / phy.mibps).toFixed(2) : '';
      rows.push([s.job, s.backend, s.runs, round(s.mibps, 1), Math.round(s.iops), round(s.p50us, 1), round(s.p99us, 1), ratio, s.backend === 'file' ? `~${SEED_RATIO}` : '']);
    }
    const machine = machineInfo();
    const rigReport = outcome.rig;
    const rigSetup = rigReport === undefined
      ? { rig: 'local' }
      : {
          rig: 'iscsi',
          link: rigReport.link,
          target_cpu: cpuLine(rigReport.targetCpuSeconds, rigReport.wallSeconds),
          initiator_cpu: `${cpuLine(rigReport.hostCpuSeconds, rigReport.wallSeconds)} (this process: our initiator, blkback and the guests)`,
        };
    if (rigReport !== undefined) log(`rig: ${rigReport.link}; target CPU ${rigSetup.target_cpu}; initiator side ${rigSetup.initiator_cpu}`);
    writeFileSync(join(out, 'results.json'), `${JSON.stringify({ machine, ...rigSetup, storage: outcome.storage, overrides: outcome.overrides, summary, runs: outcome.records.map((r) => ({ job: r.job, backend: r.backend, run: r.run, position: r.position, logDir: r.logDir })) }, null, 2)}\n`);
    const html = renderReport({
      title: 'blkback: the 2011 xen-devel blkback benchmark, reproduced',
      setup: {
        machine: { ...machine, ...rigSetup, storage_phy: outcome.storage.phy, storage_file: outcome.storage.file, job_overrides: outcome.overrides.join(' '), runs },
        notes: [
          'phy: blkback maps the guest\'s grants and does O_DIRECT I/O straight into them (the mail\'s kernel blkback, disk phy:/dev/sdb).',
          'file: blkback goes through the page cache (the mail\'s QEMU qdisk, disk file:/dev/sdb).',
          ...outcome.notes,
          'The guests are worker threads on a simulated hypervisor: the same blkif ring, grants and event channels as Xen, no real Xen.',
          `The mail found qdisk about 15% behind blkback (file/phy ~${SEED_RATIO}).`,
        ],
        configs: [guestConfigs.phy, guestConfigs.file].map((c) => ({ name: c.path, text: c.text })),
        jobs: jobFiles.map((j) => ({ name: j.path, text: j.text })),
      },
      plots,
      table: { columns, rows },
    });
    writeFileSync(join(out, 'report.html'), html);
    process.stdout.write(`${formatTable(columns, rows)}\n`);
    log(`wrote ${join(out, 'randw-bw.png')}, ${join(out, 'iometer-bw.png')}, ${join(out, 'report.html')} and the fio logs in ${join(out, 'logs')} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    return 0;
  },
};

/** '12.3 s (45% of one core over 27 s)'. */
function cpuLine(cpuSeconds: number, wallSeconds: number): string {
  if (!Number.isFinite(cpuSeconds)) return 'unknown (the process was gone)';
  return `${cpuSeconds.toFixed(1)} s (${Math.round((100 * cpuSeconds) / wallSeconds)}% of one core over ${wallSeconds.toFixed(0)} s)`;
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
