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
import { cpuOfBackend, reproduceOnXen } from '../../reproduce/xen.ts';
import { openRbdRig, startThrowawayRbdRig } from '../../rig/rbd-rig.ts';
import type { RbdRig } from '../../rig/rbd-rig.ts';
import { parseStoreSpec } from '../../config/store-spec.ts';
import type { XenReproduceOutcome } from '../../reproduce/xen.ts';
import type { ReportTable } from '../../report/index.ts';
import { SYSCALL_GOAL } from '../../xen-tcg/syscalls.ts';
import type { Command } from '../command.ts';

const SEED_RATIO = 0.85; // the mail: "qdisk was around 15% down compared to blkback"

const help = `blkback reproduce — the 2011 xen-devel experiment, end to end, with its plots

usage: blkback reproduce [--quick] [--runs N] [--runtime T] [--size SIZE] [--out DIR]
                        [--rig local|iscsi|rbd] [--link 1gbit|none|RATE] [--storage SPEC]
                        [--rbd-conf PATH --rbd-image POOL/IMAGE [--rbd-id NAME] | --ceph-osds 1|3]
       blkback reproduce --xen [--quick] [--runs N] [--size SIZE] [--out DIR] [--cache DIR]

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
  --rig rbd        the store on Ceph: both guests' /dev/sdb is one RBD image, reached through librbd
                   (an rbd: store): the image --rbd-image of an existing cluster (--rbd-conf), whose
                   first --size bytes the runs overwrite, or, without them, a throwaway cluster
                   brought up for the run and torn down after (Debian's ceph-mon, ceph-osd and
                   ceph-common; no systemd): one mon, --ceph-osds memstore OSDs, pool rbd. The report
                   says what the cluster was (Ceph version, OSDs up, objectstore, the pool's size and
                   min_size). As with iscsi, there is no host page cache under the file guest
  --rbd-conf PATH  an existing cluster's ceph.conf (with --rig rbd)
  --rbd-image POOL/IMAGE  the image on it
  --rbd-id NAME    the cephx user (default admin)
  --ceph-osds N    the throwaway cluster's OSDs: 1 (pool size 1) or 3 (size 3 / min_size 2, each OSD
                   in a network namespace of its own, as three hosts; needs root); default 3 as
                   root, else 1
  --link RATE      the storage link with --rig iscsi: ${SEED_LINK} (default, the mail's), none
                   (unshaped veth), or a tc rate such as 100mbit, 2.5gbit
  --storage SPEC   use this store for both backends instead: any store spec (ram:2G, /dev/nvme0n1,
                   nbd+unix:///EXPORT?socket=PATH, nbd://HOST/EXPORT, rbd:POOL/IMAGE[:conf=PATH],
                   iscsi://HOST/IQN/LUN, ...); implies --rig local, and the report names it

On real Xen (--xen; root, and QEMU, which it installs from Debian with debootstrap when missing):
the mail's literal chain, booted as Xen 4.17 under QEMU's software emulation (no KVM needed). In
dom0, 'blkback iscsi-target' exports RAM disks (files in dom0's RAM) and dom0's own Linux initiator
(open-iscsi) logs in to it over loopback; the LUNs become SCSI disks, and one PV guest gets xvda from
the kernel's xen-blkback (phy: on LUN 0's disk) and xvdb from 'blkback serve' (phy: on LUN 1's),
plus xvdc served by serve's own initiator (iscsi://). Each job file runs on one disk, then the
other, the order alternating, --runs times each after a warm-up run of each, fio verifying every
block. There is no link to shape: under emulation the rig measures the backends, not the link.
The first run builds Xen, kernel and dom0 images from Debian's packages into the cache (2-5
minutes; the path is printed); a run with --quick takes about 5-10 minutes, a full one 15-30.
  --xen            as above; writes the same report (report.html, <job>-bw.png, results.json) and
                   the harness's console logs and checks in <out>/xen-harness
  --quick          1 run of each job, 64 MiB LUNs; default: --runs 3, 256 MiB LUNs (--size)
  --cache DIR      the image cache (default $BLKBACK_XEN_CACHE or /var/cache/blkback/xen-tcg)

examples:
  blkback reproduce --quick --out /tmp/seed
  blkback reproduce --quick --storage 'nbd+unix:///?socket=/tmp/nbdkit.sock' --size 256M
  blkback reproduce --rig rbd --rbd-conf /etc/ceph/ceph.conf --rbd-image rbd/seed --quick
  sudo blkback reproduce --xen --quick --out /tmp/seed-xen
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
        xen: { type: 'boolean', default: false },
        cache: { type: 'string' },
        'rbd-conf': { type: 'string' },
        'rbd-image': { type: 'string' },
        'rbd-id': { type: 'string' },
        'ceph-osds': { type: 'string' },
      },
    });
    if (values.xen) return reproduceXen(values);
    if (values.cache !== undefined) throw new UsageError('--cache is the Xen image cache: it goes with --xen');
    const rig = values.rig ?? (values.storage === undefined && process.getuid?.() === 0 ? 'iscsi' : 'local');
    if (rig !== 'local' && rig !== 'iscsi' && rig !== 'rbd') throw new UsageError(`--rig ${rig}: expected local, iscsi or rbd`);
    if (rig !== 'local' && values.storage !== undefined) throw new UsageError(`--storage gives the store itself: it goes with --rig local, not --rig ${rig}`);
    if (rig !== 'iscsi' && values.link !== undefined) throw new UsageError("--link shapes the iSCSI rig's storage link: it goes with --rig iscsi");
    const rbdConf = values['rbd-conf'];
    const rbdImage = values['rbd-image'];
    if (rig !== 'rbd' && (rbdConf ?? rbdImage ?? values['rbd-id'] ?? values['ceph-osds']) !== undefined)
      throw new UsageError('--rbd-conf, --rbd-image, --rbd-id and --ceph-osds go with --rig rbd');
    if ((rbdConf === undefined) !== (rbdImage === undefined))
      throw new UsageError('--rbd-conf and --rbd-image go together (an existing cluster and the image on it); give neither for a throwaway cluster');
    if (rbdConf !== undefined && values['ceph-osds'] !== undefined)
      throw new UsageError('--ceph-osds sizes the throwaway cluster: it does not go with --rbd-conf');
    if (values['rbd-id'] !== undefined && rbdConf === undefined) throw new UsageError('--rbd-id is the user of an existing cluster: it goes with --rbd-conf');
    const cephOsds = values['ceph-osds'] === undefined ? (process.getuid?.() === 0 ? 3 : 1) : Number(values['ceph-osds']);
    if (cephOsds !== 1 && cephOsds !== 3) throw new UsageError(`--ceph-osds: '${values['ceph-osds']}' is not 1 or 3`);
    // A bad spec fails here, before any store is made.
    if (values.storage !== undefined) parseStoreSpec(values.storage);
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
    let rbdRig: RbdRig | undefined;
    if (rig === 'rbd') {
      if (rbdConf === undefined || rbdImage === undefined) {
        rbdRig = await startThrowawayRbdRig({ osds: cephOsds, imageBytes: storeBytes, log });
      } else {
        log(`--rig rbd: reading the cluster in ${rbdConf} and opening ${rbdImage}`);
        rbdRig = await openRbdRig({
          conf: rbdConf,
          image: rbdImage,
          minBytes: storeBytes,
          ...(values['rbd-id'] === undefined ? {} : { id: values['rbd-id'] }),
        });
      }
      log(`cluster: ${rbdRig.description}`);
    }
    const storage = rbdRig?.spec ?? values.storage;
    const outcome = await runExperiment({
      jobFiles,
      guestConfigs,
      runs,
      runtimeSeconds: runtime,
      storeBytes,
      ...(storage === undefined ? {} : { storage }),
      ...(rbdRig === undefined
        ? {}
        : {
            storageNote: `the seed's rig on Ceph: ${rbdRig.description}; both guests reach the image through librbd, so there is no host page cache under the file guest`,
          }),
      rig: rig === 'iscsi' ? 'iscsi' : 'local',
      link,
      outDir: out,
      progress: log,
    }).finally(() => rbdRig?.close());

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
      rows.push([
        s.job,
        s.backend,
        s.runs,
        round(s.mibps, 1),
        Math.round(s.iops),
        round(s.p50us, 1),
        round(s.p99us, 1),
        ratio,
        s.backend === 'file' ? `~${SEED_RATIO}` : '',
      ]);
    }
    const machine = machineInfo();
    const rigReport = outcome.rig;
    const rigSetup =
      rigReport === undefined
        ? rbdRig === undefined
          ? { rig: 'local' }
          : {
              rig: 'rbd',
              cluster: rbdRig.description,
              ceph_osds: rbdRig.cluster.osds,
              objectstore: rbdRig.cluster.objectstores.join(', '),
              pool_size: rbdRig.cluster.poolSize,
            }
        : {
            rig: 'iscsi',
            link: rigReport.link,
            target_cpu: cpuLine(rigReport.targetCpuSeconds, rigReport.wallSeconds),
            initiator_cpu: `${cpuLine(rigReport.hostCpuSeconds, rigReport.wallSeconds)} (this process: our initiator, blkback and the guests)`,
            initiator_main_thread_cpu: `${cpuLine(rigReport.mainThreadCpuSeconds, rigReport.wallSeconds)} (its main thread: our initiator and blkback; the guests are worker threads)`,
          };
    if (rigReport !== undefined)
      log(`rig: ${rigReport.link}; target CPU ${rigSetup.target_cpu}; initiator side ${rigSetup.initiator_cpu}, of it ${rigSetup.initiator_main_thread_cpu}`);
    writeFileSync(
      join(out, 'results.json'),
      `${JSON.stringify({ machine, ...rigSetup, storage: outcome.storage, overrides: outcome.overrides, summary, runs: outcome.records.map((r) => ({ job: r.job, backend: r.backend, run: r.run, position: r.position, logDir: r.logDir })) }, null, 2)}\n`,
    );
    const html = renderReport({
      title: 'blkback: the 2011 xen-devel blkback benchmark, reproduced',
      setup: {
        machine: {
          ...machine,
          ...rigSetup,
          storage_phy: outcome.storage.phy,
          storage_file: outcome.storage.file,
          job_overrides: outcome.overrides.join(' '),
          runs,
        },
        notes: [
          "phy: blkback maps the guest's grants and does O_DIRECT I/O straight into them (the mail's kernel blkback, disk phy:/dev/sdb).",
          "file: blkback goes through the page cache (the mail's QEMU qdisk, disk file:/dev/sdb).",
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
    log(
      `wrote ${join(out, 'randw-bw.png')}, ${join(out, 'iometer-bw.png')}, ${join(out, 'report.html')} and the fio logs in ${join(out, 'logs')} (${((Date.now() - started) / 1000).toFixed(0)} s)`,
    );
    return 0;
  },
};

interface XenValues {
  readonly quick: boolean;
  readonly runs?: string;
  readonly size?: string;
  readonly out: string;
  readonly cache?: string;
  readonly rig?: string;
  readonly link?: string;
  readonly storage?: string;
  readonly runtime?: string;
  readonly 'rbd-conf'?: string;
  readonly 'rbd-image'?: string;
}

async function reproduceXen(values: XenValues): Promise<number> {
  for (const [name, given] of [
    ['--rig', values.rig],
    ['--link', values.link],
    ['--storage', values.storage],
    ['--runtime', values.runtime],
    ['--rbd-conf', values['rbd-conf']],
    ['--rbd-image', values['rbd-image']],
  ] as const) {
    if (given !== undefined)
      throw new UsageError(`${name} is not for --xen: its rig is fixed (our target and Linux's initiator in dom0; the jobs run to their size)`);
  }
  if (process.getuid?.() !== 0) throw new UsageError('--xen boots Xen under QEMU and builds its images with debootstrap: run it as root');
  const runs = values.runs !== undefined ? Number(values.runs) : values.quick ? 1 : 3;
  if (!Number.isInteger(runs) || runs < 1 || runs > 9) throw new UsageError(`--runs: '${values.runs}' is not a run count (1..9 with --xen)`);
  const diskMiB = Math.round(parseSize(values.size ?? (values.quick ? '64M' : '256M'), '--size') / 1048576);
  if (diskMiB < 16 || diskMiB > 1024)
    throw new UsageError(`--size: ${diskMiB} MiB: with --xen a LUN is 16M to 1G (it lives in dom0's 4 GiB of RAM, three times)`);
  const out = values.out;
  mkdirSync(out, { recursive: true });
  const log = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };
  const started = Date.now();
  // randw writes three quarters of the LUN, iometer a third of that (src/xen-tcg/run.ts)
  const outcome = await reproduceOnXen({
    out,
    pairs: runs,
    diskMiB,
    fioMiB: Math.floor((diskMiB * 3) / 4),
    timeoutSeconds: 600 + 600 * runs,
    ...(values.cache !== undefined ? { cache: values.cache } : {}),
    log,
  });
  writeXenReport(outcome, out, runs);
  log(
    `wrote ${join(out, 'report.html')}, ${[...outcome.plots.values()].map((p) => p.png).join(', ')} and results.json; the harness's logs in ${outcome.harnessDir} (${((Date.now() - started) / 1000).toFixed(0)} s)`,
  );
  if (outcome.failedChecks.length > 0) log(`${outcome.failedChecks.length} checks failed: see ${join(outcome.harnessDir, 'results.json')}`);
  return outcome.status;
}

function writeXenReport(outcome: XenReproduceOutcome, out: string, runs: number): void {
  const columns = [
    'job',
    'backend',
    'runs',
    'write MB/s (median)',
    'each run',
    'verify MB/s (median)',
    'dom0 CPUs busy',
    'serve CPUs',
    'target CPUs',
    'ours/kernel',
  ];
  const rows: (string | number)[][] = [];
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length === 0 ? 0 : s.length % 2 === 1 ? (s[s.length >> 1] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
  };
  for (const job of [...new Set(outcome.rows.map((r) => r.job))]) {
    const summary = outcome.rows.find((r) => r.job === job && r.pair === 0);
    for (const backend of ['kernel', 'ours'] as const) {
      const fio = outcome.fio.filter((f) => f.job === job && f.guest.startsWith(`${backend}-`)).sort((a, b) => a.guest.localeCompare(b.guest));
      const cpu = cpuOfBackend(outcome.cpu, job, backend);
      rows.push([
        job,
        backend === 'kernel' ? "Linux's xen-blkback (phy:)" : 'blkback serve (phy:)',
        fio.length,
        round(median(fio.map((f) => f.writeMBps)), 1),
        fio.map((f) => f.writeMBps.toFixed(1)).join(', '),
        round(median(fio.map((f) => f.verifyMBps)), 1),
        cpu === undefined ? '' : cpu.dom0.toFixed(2),
        cpu === undefined || backend === 'kernel' ? '' : cpu.serve.toFixed(2),
        cpu === undefined ? '' : cpu.target.toFixed(2),
        backend === 'ours' && summary !== undefined ? summary.ratio.toFixed(2) : '',
      ]);
    }
  }
  const setup = {
    rig: "Xen 4.17 under QEMU TCG; dom0: blkback iscsi-target (RAM disks) <- Linux's initiator (open-iscsi, loopback) -> SCSI disks -> both backends -> one PV guest",
    runs,
    images: outcome.images,
    harness: outcome.harnessDir,
    checks_failed: outcome.failedChecks.length,
  };
  writeFileSync(
    join(out, 'results.json'),
    `${JSON.stringify({ ...setup, rows: outcome.rows, fio: outcome.fio, cpu: outcome.cpu, failedChecks: outcome.failedChecks }, null, 2)}\n`,
  );
  const read = (rel: string): { name: string; text: string } => ({ name: rel, text: readFileSync(new URL(`../../../../${rel}`, import.meta.url), 'utf8') });
  const html = renderReport({
    title: "blkback: the 2011 xen-devel benchmark on real Xen (the seed's chain)",
    setup: {
      machine: { ...machineInfo(), ...setup },
      notes: [
        "The mail's chain in one boot: an iSCSI target exporting a RAM disk (ours, in dom0), Linux's own initiator making it a SCSI disk, and the block backend serving that disk to the guest as a phy: disk.",
        "One guest, two disks: xvda from the kernel's xen-blkback, xvdb from blkback serve; each job runs on one, then the other, the order alternating, after an uncounted warm-up on each. The ratio is the median of the pairs' ratios.",
        'xvdc: blkback serve with its own initiator (target=iscsi://...), read whole and written with fsync by the guest, checked in dom0.',
        "Under emulation there is no link to shape (QEMU's user network moves about 4 MB/s): this rig measures the backends; the 1 Gbit/s link is `blkback reproduce --rig iscsi`.",
        'fio verifies every block it wrote (verify=crc32c); every check is in xen-harness/results.json.',
      ],
      configs: [],
      jobs: [read('jobs/randw.fio'), read('jobs/iometer.fio')],
    },
    plots: [...outcome.plots].map(([job, p]) => ({
      title: `${job}-bw`,
      svg: p.svg,
      caption: `${job}.fio in the guest: write bandwidth per backend and run`,
    })),
    table: { columns, rows },
    tables: xenExtraTables(outcome),
  });
  writeFileSync(join(out, 'report.html'), html);
  process.stdout.write(`${formatTable(columns, rows)}\n`);
  for (const t of xenExtraTables(outcome)) process.stdout.write(`\n${t.title}\n${formatTable(t.columns, t.rows)}\n`);
}

/** CPU per I/O per backend and serve's system calls per request, as test:xen's summary gives them. */
function xenExtraTables(outcome: XenReproduceOutcome): ReportTable[] {
  const tables: ReportTable[] = [];
  if (outcome.cpuPerIo.length > 0) {
    tables.push({
      title: "dom0's CPU per I/O",
      columns: ['job', 'pair', 'kernel xen-blkback: dom0 CPU ms/I/O', 'blkback serve: dom0 CPU ms/I/O', 'of it serve', 'ours/kernel'],
      rows: outcome.cpuPerIo.map((r) => [
        r.job,
        r.pair === 0 ? 'median' : r.pair,
        r.kernelMs.toFixed(2),
        r.oursMs.toFixed(2),
        r.serveMs.toFixed(2),
        r.ratio.toFixed(2),
      ]),
      caption:
        "dom0's busy CPUs during each run (2-second samples) times the run's seconds, over its I/Os (fio's writes and verify reads). " +
        'Emulated CPU time swings from boot to boot: compare the backends within a pair.',
    });
  }
  if (outcome.syscalls.length > 0) {
    tables.push({
      title: "serve's system calls per request",
      columns: ['disk', 'data path', 'requests', 'system calls', 'per request', `goal <= ${SYSCALL_GOAL}`, 'most frequent, per request'],
      rows: outcome.syscalls.map((f) => [
        f.disk,
        f.dataPath ?? 'unknown',
        f.requests,
        f.syscalls,
        f.perRequest.toFixed(2),
        f.perRequest <= SYSCALL_GOAL ? 'PASS' : 'MISS',
        f.top.map((t) => `${t.name} ${t.perRequest.toFixed(2)}`).join(', '),
      ]),
      caption: 'Counted by strace -c -f -p <serve> in dom0 while the guest ran 4 KiB random reads, then writes, at queue depth 32 on that disk alone.',
    });
  }
  return tables;
}

/** '12.3 s (45% of one core over 27 s)'. */
function cpuLine(cpuSeconds: number, wallSeconds: number): string {
  if (!Number.isFinite(cpuSeconds)) return 'unknown (the process was gone)';
  return `${cpuSeconds.toFixed(1)} s (${Math.round((100 * cpuSeconds) / wallSeconds)}% of one core over ${wallSeconds.toFixed(0)} s)`;
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
