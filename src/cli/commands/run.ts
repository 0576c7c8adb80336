import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { buildMapTable, parseMapOption } from '../../config/map.ts';
import { parseXlConfig } from '../../config/xl-cfg.ts';
import type { XlConfig } from '../../config/xl-cfg.ts';
import { parseSize } from '../../config/size.ts';
import { ALLOW_PATH_OPTION_HELP, PATH_POLICY_HELP, resolvePathPolicy } from '../../stores/path-policy.ts';
import { UsageError } from '../../internal/errors.ts';
import { configureSocketAccess, takeAllowUidOptions } from '../../internal/unix-listener.ts';
import { SimHost } from '../../sim-host/host.ts';
import { blkbackControlTarget } from '../../control/blkback-target.ts';
import { serveControl } from '../../control/server.ts';
import type { ControlServer } from '../../control/server.ts';
import { simToolstack } from '../../control/sim-toolstack.ts';
import { guestConfigFromXl } from '../../sim-host/from-xl.ts';
import type { VerifyResult } from '../../loadgen/verify.ts';
import type { Command } from '../command.ts';

const help = `blkback run — start simulated guests from xl config files and check their disks

usage: blkback run GUEST.cfg... [--map PATH=SPEC]... [--xenstore-socket PATH] [--control-socket PATH]
                   [--operations N] [--iodepth N] [--max-io SIZE] [--length SIZE] [--abi x86_64|x86_32]
                   [--hold] [--json] [--allow-path DIR]... [--allow-uid UID]...

Each config file is read as xl reads it (name, memory, vcpus and disk are honoured; keys that mean
nothing here, such as kernel, vif or vfb, are listed once as ignored). Each guest runs as a worker
thread with its memory= as its I/O arena; its disks are served by blkback, phy: disks with direct
I/O (as the kernel's blkback) and file: disks through the page cache (as QEMU's qdisk).

A disk on an iSCSI LUN names it as target=iscsi://[USER@]HOST[:PORT]/IQN/LUN[?OPTIONS] (options:
secret-file=, mutual-secret-file=, digest=, initiator-name=, reconnect-timeout=), last in the disk
spec; blkback logs in with its own initiator. The same line works with real xl when it carries
script=, which stops libxl from stat()ing the target as a dom0 path (a phy target without script=
must exist in dom0); there 'blkback serve' must be the backend reading that directory (the
kernel's blkback cannot use a URL):
  disk = ['vdev=xvda, access=rw, backendtype=phy, script=/bin/true, target=iscsi://10.0.0.2/iqn.2026-12.org.x:d/0']

In each guest, on its first disk, an integrity load runs: random reads and writes of random sizes at
random offsets, many in flight, every read checked, then the whole region read back. The exit status
is 0 only if every byte read back is the byte written.

Whose paths are opened: the disks of the configs given here and the stores of --map are yours, and
are opened as written (a config's target=/srv/guest.img needs no --allow-path). A disk someone
else names is another matter: one hot-plugged with 'blkback ctl attach' over --control-socket, or
a backend entry written through --xenstore-socket. Unless it is a --map target or one of the
configs' targets, it must pass this rule:
${PATH_POLICY_HELP}
A refused attach is answered with the rule; a refused xenstore entry is logged, and its backend
records the rule in /local/domain/0/error/backend/vbd/DOMID/DEVID/error and goes to Closed.

Options:
  --map PATH=SPEC          serve a disk target that does not exist here from a store:
                           ram:SIZE, null:SIZE, file:PATH, phy:PATH, volatile:SPEC or a path
                           (the seed configs name /dev/sdb: --map /dev/sdb=ram:1G)
  --xenstore-socket PATH   also serve the xenstore on this Unix socket, so that
                           XENSTORED_PATH=PATH xenstore-ls /local/domain shows the live tree
  --control-socket PATH    serve 'blkback ctl --socket PATH' (list, stats, attach, detach,
                           resize) while the host is up; with --hold, until Ctrl-C. Disks to
                           hot-plug must resolve here too: --map /dev/sdc=ram:256M, then
                           blkback ctl --socket PATH attach DOMID 'vdev=xvdb,target=/dev/sdc'
                           Both sockets are created 0600: only root and the user running
                           blkback are served (SO_PEERCRED is checked; others closed, logged)
  --allow-uid UID          also serve this user on both sockets (numeric uid; repeatable; the
                           sockets are then 0666 and the credential check alone decides)
  --operations N           I/Os per guest (default 5000)
  --iodepth N              I/Os in flight per guest (default 32)
  --max-io SIZE            largest I/O (default 128k)
  --length SIZE            bytes of the disk to exercise (default: all, at most 64M)
  --abi x86_64|x86_32      the ring ABI the guests' blkfront speaks (default x86_64)
${ALLOW_PATH_OPTION_HELP}
                           (for disks others name: ctl attach, --xenstore-socket)
  --hold                   after the check, keep the host up until Ctrl-C (to inspect the xenstore)
  --json                   print the results as JSON

example:
  blkback run examples/guest-phy.cfg examples/guest-qdisk.cfg --map /dev/sdb=ram:1G
`;

export const runCommand: Command = {
  name: 'run',
  summary: 'start guests from xl config files and verify their disks end to end',
  help,
  async run(argv) {
    const access = takeAllowUidOptions(argv, 'run');
    argv = access.rest;
    configureSocketAccess({ allowUids: access.allowUids, log: (line) => void process.stderr.write(`${line}\n`) });
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        map: { type: 'string', multiple: true },
        'xenstore-socket': { type: 'string' },
        'control-socket': { type: 'string' },
        operations: { type: 'string' },
        iodepth: { type: 'string' },
        'max-io': { type: 'string' },
        length: { type: 'string' },
        abi: { type: 'string' },
        hold: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        'allow-path': { type: 'string', multiple: true },
      },
    });
    if (positionals.length === 0) throw new UsageError("run: give at least one guest config file (see 'blkback run --help')");
    const abi = values.abi ?? 'x86_64';
    if (abi !== 'x86_64' && abi !== 'x86_32') throw new UsageError(`--abi: '${abi}' is not x86_64 or x86_32`);
    const policy = await resolvePathPolicy(values['allow-path'] ?? []);
    const count = (text: string | undefined, what: string, fallback: number): number => {
      if (text === undefined) return fallback;
      const n = Number(text);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`${what}: '${text}' is not a positive integer`);
      return n;
    };
    const configs: XlConfig[] = positionals.map((file) => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        throw new UsageError(`${file}: cannot read: ${(err as Error).message}`);
      }
      return parseXlConfig(text, file);
    });
    const log = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };
    for (const c of configs) if (c.ignored.length > 0) log(`${c.file}: ignoring keys that mean nothing here: ${c.ignored.join(', ')}`);
    const names = new Set<string>();
    for (const c of configs) {
      if (names.has(c.name)) throw new UsageError(`${c.file}: a guest named '${c.name}' is already being started`);
      names.add(c.name);
      if (c.disks.length === 0) throw new UsageError(`${c.file}: guest '${c.name}' has no disk to check`);
    }
    const maps = buildMapTable((values.map ?? []).map(parseMapOption));
    const host = await SimHost.start({ maps, policy, log, ...(values['xenstore-socket'] === undefined ? {} : { xenstoreSocket: values['xenstore-socket'] }) });
    let control: ControlServer | undefined;
    const controlPath = values['control-socket'];
    if (controlPath !== undefined) {
      try {
        control = await serveControl(blkbackControlTarget(host.blkback, simToolstack(host), { xenstore: host.xs, checkStore: (r) => host.stores.check(r) }), {
          path: controlPath,
          log,
        });
      } catch (err) {
        await host.stop();
        throw err;
      }
    }
    const params = {
      operations: count(values.operations, '--operations', 5000),
      iodepth: count(values.iodepth, '--iodepth', 32),
      maxBytes: parseSize(values['max-io'] ?? '128k', '--max-io'),
      ...(values.length === undefined ? {} : { length: parseSize(values.length, '--length') }),
    };
    let failed = 0;
    const results: Record<string, unknown> = {};
    try {
      const guests = await Promise.all(
        configs.map((c, i) =>
          host.createGuest(
            guestConfigFromXl(c),
            // Guests may share a store (both seed configs name /dev/sdb): each checks its own slice.
            {
              workload: new URL('../../guest/workloads/verify.js', import.meta.url),
              params: { ...params, seed: i + 1, slice: [i, configs.length] },
              front: { abi },
            },
          ),
        ),
      );
      for (const g of guests) {
        try {
          const r = (await g.result) as VerifyResult & { size: number; ringSize: number };
          results[g.name] = r;
          const rate = (r.operations / (r.elapsedMs / 1000)).toFixed(0);
          log(
            `${g.name}: ${r.mismatches === 0 ? 'ok' : 'DATA MISMATCH'}: ${r.reads} reads, ${r.writes} writes, ${r.flushes} flushes, ` +
              `${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${(r.elapsedMs / 1000).toFixed(2)} s (${rate} ops/s), ring ${r.ringSize} slots`,
          );
          for (const m of r.firstMismatches) log(`  ${m}`);
          if (r.mismatches > 0) failed++;
        } catch (err) {
          failed++;
          results[g.name] = { error: (err as Error).message };
          log(`${g.name}: failed: ${(err as Error).message}`);
        }
      }
      results.blkback = host.blkback.stats();
      if (values.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
      if (values.hold) {
        log('holding; press Ctrl-C to stop');
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
      }
    } finally {
      await control?.close();
      await host.stop();
    }
    return failed === 0 ? 0 : 1;
  },
};
