import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildMapTable, parseMapOption } from '../../config/map.ts';
import { parseXlConfig } from '../../config/xl-cfg.ts';
import { isRemoteTarget, parseXlDiskSpec } from '../../config/xl-disk.ts';
import type { GuestConfig } from '../../sim-host/host.ts';
import { guestConfigFromXl, guestDiskFromXl } from '../../sim-host/from-xl.ts';
import { formatErrorReport, formatJson, formatNormal, formatStatusLine, formatTerse, StatusLine, stringifyFioJson } from '../../fio/output/index.ts';
import { runFio } from '../../fio/session.ts';
import type { FioTarget, JobFileText } from '../../fio/session.ts';
import type { FioProgress } from '../../fio/progress.ts';
import { UsageError } from '../../internal/errors.ts';
import type { Command } from '../command.ts';

const help = `blkback fio — run fio job files inside a simulated guest (or bare on a block device)

usage: blkback fio [--guest GUEST.cfg] [--disk DISKSPEC] [--map PATH=SPEC]... [--bare]
                   [--set KEY=VALUE]... [--strict] [--output-format normal|json|terse]
                   [--output FILE] [--log-dir DIR] [--xenstore-socket PATH] JOB.fio...

Job files are read with fio 3's grammar ([global] inheritance by position, include, \${VAR}, number
suffixes and kb_base, bssplit, ...) and run with fio's semantics. In a guest, a filename /dev/xvda
(or a job section named [/dev/xvda], as in the 2011 mail's job files) is the guest's disk xvda; every
job of the guest shares that disk and its ring: numjobs=4 x iodepth=256 offers 1024 I/Os to one ring.
Output, log files (write_bw_log, write_lat_log, write_iops_log) and their names follow fio 3.33.

Where the jobs run:
  (default)            a guest with one RAM disk (xvda) sized for the jobs
  --guest GUEST.cfg    a guest from an xl config file (name, memory, vcpus, disk)
  --disk DISKSPEC      the guest's disk in xl syntax, e.g. 'phy:/dev/loop0,xvda,w' or
                       'target=/dev/shm/disk.img,vdev=xvda,backendtype=qdisk'; an iSCSI LUN
                       as target=iscsi://[USER@]HOST[:PORT]/IQN/LUN[?OPTIONS], given last:
                       'vdev=xvda,access=rw,target=iscsi://10.0.0.2/iqn.2026-12.org.x:d/0'
                       (blkback logs in itself; 'blkback run --help' has the form real xl takes)
  --map PATH=SPEC      serve a disk target that does not exist here from a store (ram:1G, a path, ...)
  --bare               the same jobs straight on the block device (--disk's target, default a RAM
                       disk), no guest: the cost of the virtualization path shows by comparison
The disks named here (--disk, --guest's config, --map) are yours and are opened as written, with
your rights. A backend entry someone else writes through --xenstore-socket may name only block
devices under /dev (the path policy of 'blkback serve --help', with no --allow-path). A disk that
cannot be opened ends the run at once, with the reason.

Job options:
  --set KEY=VALUE      override an option in every job AFTER parsing, above the job's own value,
                       e.g. --set size=256m --set runtime=10. (Unlike options on fio's own command
                       line, which land in [global] and so lose to the job section's value.)
  --strict             parse exactly as fio 3.33. Without it, one legacy reading is kept: an
                       abbreviated value such as the mail's rw=randw runs as randwrite with a
                       warning (fio 1.41-2.0.11 took the first value with that prefix; fio >= 2.0.12
                       rejects it). This is the only documented difference from fio 3.33.

Output:
  --output-format F    normal (default), json (fio's schema) or terse (v3)
  --output FILE        write the report there instead of stdout
  --log-dir DIR        where log files go (default: the current directory, as fio)
  --xenstore-socket P  serve the simulated host's xenstore on this Unix socket while it runs

examples:
  blkback fio --set size=256m --set runtime=10 --set time_based=1 jobs/randw.fio
  blkback fio --guest examples/guest-phy.cfg --map /dev/sdb=ram:1G --set size=512m jobs/iometer.fio
  blkback fio --bare --disk 'phy:/dev/loop0,xvda,w' --output-format json jobs/randw.fio
`;

export const fioCommand: Command = {
  name: 'fio',
  summary: 'run fio job files in a simulated guest (or bare), fio-compatible output and logs',
  help,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        guest: { type: 'string' },
        disk: { type: 'string' },
        map: { type: 'string', multiple: true },
        bare: { type: 'boolean', default: false },
        set: { type: 'string', multiple: true },
        strict: { type: 'boolean', default: false },
        'output-format': { type: 'string', default: 'normal' },
        output: { type: 'string' },
        'log-dir': { type: 'string' },
        'xenstore-socket': { type: 'string' },
      },
    });
    if (positionals.length === 0) throw new UsageError("fio: give at least one job file (see 'blkback fio --help')");
    const format = values['output-format'];
    if (format !== 'normal' && format !== 'json' && format !== 'terse') {
      throw new UsageError(`--output-format: '${format}' is not normal, json or terse`);
    }
    const files: JobFileText[] = positionals.map((path) => {
      try {
        return { path, text: readFileSync(path, 'utf8') };
      } catch (err) {
        throw new UsageError(`${path}: cannot read job file: ${(err as Error).message}`);
      }
    });
    for (const s of values.set ?? []) if (!s.includes('=')) throw new UsageError(`--set '${s}': expected KEY=VALUE, e.g. --set size=256m`);
    if (values.bare && values.guest !== undefined) throw new UsageError('--bare and --guest exclude each other: --bare runs with no guest');
    const maps = buildMapTable((values.map ?? []).map(parseMapOption));
    const disk = values.disk === undefined ? undefined : parseXlDiskSpec(values.disk, '--disk');
    const log = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };

    let target: FioTarget;
    if (values.bare) {
      const spec =
        disk === undefined
          ? undefined
          : (maps.get(disk.target) ?? (isRemoteTarget(disk.target) ? disk.target : disk.backendtype === 'phy' ? `phy:${disk.target}` : `file:${disk.target}`));
      target = { kind: 'bare', ...(spec === undefined ? {} : { spec }) };
    } else {
      let guest: GuestConfig | undefined;
      if (values.guest !== undefined) {
        const cfg = parseXlConfig(readText(values.guest), values.guest);
        if (cfg.ignored.length > 0) log(`${cfg.file}: ignoring keys that mean nothing here: ${cfg.ignored.join(', ')}`);
        guest = guestConfigFromXl(cfg, disk === undefined ? cfg.disks : [disk]);
      } else if (disk !== undefined) {
        guest = { name: 'fio', memoryMiB: 512, disks: [guestDiskFromXl(disk, '--disk')] };
      }
      target = {
        kind: 'guest',
        ...(guest === undefined ? {} : { guest }),
        maps,
        ...(values['xenstore-socket'] === undefined ? {} : { xenstoreSocket: values['xenstore-socket'] }),
      };
    }

    // A --log-dir that does not exist yet is made now, not found missing by the first log file mid-run.
    const logDir = values['log-dir'] ?? process.cwd();
    if (values['log-dir'] !== undefined) {
      try {
        makeDirs(logDir);
      } catch (err) {
        throw new UsageError(`--log-dir ${logDir}: cannot create: ${(err as Error).message}`);
      }
    }
    // The simulated host's log (blkback's view of the disk) is kept quiet unless the run fails: then it
    // holds the cause, e.g. a disk target that does not exist here and wants --map.
    const hostLog: string[] = [];
    const status = new StatusLine(process.stderr, process.stderr.isTTY === true);
    const outcome = await runFio({
      files,
      strict: values.strict,
      overrides: values.set ?? [],
      readInclude: (path, fromFile) => {
        for (const candidate of [path, resolve(dirname(fromFile), path)]) if (existsSync(candidate)) return readFileSync(candidate, 'utf8');
        return undefined;
      },
      target,
      logDir,
      onWarning: (w) => log(`note: ${w}`),
      onProgress: (p, jobs) => status.update(formatStatusLine(progressLine(p, jobs))),
      onLog: (line) => hostLog.push(line),
    }).catch((err: unknown) => {
      status.done();
      for (const line of hostLog) log(line);
      throw err;
    });
    status.done();
    const results = outcome.results;
    // As fio, on stderr whatever the format: which I/O of which job failed, and why.
    process.stderr.write(formatErrorReport(results));
    let text: string;
    if (format === 'json') text = `${stringifyFioJson(formatJson(results, { globalOptions: outcome.parsed.globalOptions }))}\n`;
    else if (format === 'terse') text = formatTerse(results);
    else text = formatNormal(results, {});
    if (values.output !== undefined) writeFileSync(values.output, text);
    else process.stdout.write(text);
    return results.some((r) => r.error !== 0) ? 1 : 0;
  },
};

/** mkdir -p, one level at a time: Node 20's recursive mkdirSync spins forever on some paths (/proc/x). */
function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let at = resolve(dir); !existsSync(at); at = dirname(at)) {
    missing.push(at);
    if (dirname(at) === at) break;
  }
  for (const d of missing.reverse()) mkdirSync(d);
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`${path}: cannot read: ${(err as Error).message}`);
  }
}

function progressLine(p: FioProgress, jobs: readonly { runtimeUs: number; timeBased: boolean }[]): Parameters<typeof formatStatusLine>[0] {
  const runtimeMs = Math.max(0, ...jobs.map((j) => j.runtimeUs / 1000));
  const known = runtimeMs > 0;
  return {
    jobsRunning: p.jobsRunning,
    runChars: p.states,
    percentDone: known ? Math.min(99.9, (p.elapsedMs / runtimeMs) * 100) : null,
    readBps: p.bps[0],
    writeBps: p.bps[1],
    readIops: p.iops[0],
    writeIops: p.iops[1],
    etaSeconds: known ? Math.max(0, (runtimeMs - p.elapsedMs) / 1000) : null,
  };
}
