// `blkback serve`: the backend in a real Xen dom0. Owns /local/domain/0/backend/vbd (or another
// directory, --backend-kind) and serves each disk the toolstack sets up there (xl create, xl
// block-attach, blkback ctl attach) until SIGINT or SIGTERM, with the control socket for `blkback
// ctl`. On a machine without Xen it says what is missing and exits 2.
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Blkback, isBackendKind } from '../../blkback/blkback.ts';
import { MAX_QUEUES_LIMIT } from '../../blkback/vbd.ts';
import { xenDataPlaneProvider } from '../../blkback/workers/data-plane.ts';
import { MAX_WORKERS } from '../../blkback/workers/worker-ring-host.ts';
import { blkbackControlTarget } from '../../control/blkback-target.ts';
import { defaultControlSocket, ROOT_CONTROL_SOCKET } from '../../control/paths.ts';
import { serveControl } from '../../control/server.ts';
import type { ControlServer } from '../../control/server.ts';
import { xenstoreToolstack } from '../../control/xenstore-toolstack.ts';
import { xlToolstack } from '../../control/xl-toolstack.ts';
import { UsageError } from '../../internal/errors.ts';
import { configureSocketAccess, takeAllowUidOptions } from '../../internal/unix-listener.ts';
import { IO_ENGINES } from '../../block/direct.ts';
import { linuxAioProblem } from '../../internal/linux-aio.ts';
import type { IoEngine } from '../../block/direct.ts';
import { StoreRegistry } from '../../sim-host/stores.ts';
import { backendRoot } from '../../xenbus/device-paths.ts';
import { ALLOW_PATH_OPTION_HELP, PATH_POLICY_HELP, resolvePathPolicy } from '../../stores/path-policy.ts';
import type { Command } from '../command.ts';

/** Exit status when Xen is not there: the environment, not the command line, is wrong (but not a crash). */
export const EXIT_NO_XEN = 2;

const help = `blkback serve — be the block backend of a real Xen host (run in dom0, as root)

usage: blkback serve [--control-socket PATH] [--xenstore-socket PATH]
                     [--max-ring-page-order N] [--max-queues N] [--max-inflight N] [--workers N]
                     [--data-path persistent|copy|map]
                     [--aio native|threads] [--backend-kind NAME] [--allow-path DIR]...
                     [--allow-uid UID]...

Takes over /local/domain/0/backend/vbd: every guest disk the toolstack sets up there with
backendtype=phy (at 'xl create', or later with 'xl block-attach' or 'blkback ctl attach') is
served from the path in its params key (a block device such as /dev/loop0, /dev/vg0/guest, or a
raw image file under an --allow-path directory), with Linux xen-blkback's handshake and keys. Logs
go to stderr with timestamps. SIGINT or SIGTERM stops it cleanly: each disk answers the requests in
flight, then blkback exits 0.

Before you start:
  - do not load the kernel's backend: 'modprobe -r xen-blkback' (and blacklist it), or both
    backends race for the same devices;
  - start 'blkback serve' before 'xl create', so the guest finds its disks at boot;
  - in the guest's xl config, ask for a phy backend, e.g.
      disk = ['format=raw,vdev=xvda,access=rw,backendtype=phy,target=/dev/loop0']
    (qdisk disks stay QEMU's, and show up nowhere here).

What may be attached: a disk's params is a path someone else named (xl create, xl block-attach,
'blkback ctl attach', or anything else that may write the backend directory), and blkback runs as
root, so every path passes a path policy before it is opened.
${PATH_POLICY_HELP}
A refused 'blkback ctl attach' is answered with the rule, and nothing is written to xenstore. A
refused disk set up some other way is logged with the rule, which also goes where Linux's
xen-blkback records a failure (/local/domain/0/error/backend/vbd/DOMID/DEVID/error, or
backend/NAME with --backend-kind), and the disk's backend goes to Closed. For example,
--allow-path /srv/xen/images serves the raw images kept there.

On a machine without Xen (no /dev/xen, no xenstored) it prints one line saying what is missing
and exits with status 2.

options:
  --control-socket PATH    serve 'blkback ctl' on this Unix socket (default
                           ${ROOT_CONTROL_SOCKET} when root). Created 0600; only root and
                           the user running blkback are served (SO_PEERCRED is checked, others
                           are closed and logged)
  --allow-uid UID          also serve this user on the control socket (numeric uid; repeatable;
                           the socket is then 0666 and the credential check alone decides)
  --xenstore-socket PATH   xenstored's Unix socket (default /run/xenstored/socket)
  --max-ring-page-order N  largest ring a frontend may use, 2^N pages (0..4, default 4)
  --max-queues N           rings a frontend may use per disk, advertised as multi-queue-max-queues
                           (1..${MAX_QUEUES_LIMIT}; default: this machine's CPU count, as Linux's
                           xen-blkback). Linux blkfront uses one per guest vCPU up to this (and up
                           to its own max_queues, 4 by default); 1 gives every disk one ring
  --max-inflight N         requests in flight across all disks before rings wait (default 4096)
  --workers N              data-plane worker threads (0..${MAX_WORKERS}; default: this machine's CPU
                           count, as Linux's xen-blkback runs a thread per ring). Each guest ring
                           (each queue of each disk) is served by one of them, the least loaded
                           when it connects: the worker maps the ring, binds its event channel
                           with its own /dev/xen/gntdev and /dev/xen/evtchn handles and does its
                           I/O, while the main thread keeps xenstore, the handshake and the
                           control socket. Statistics, the in-flight cap and the fair share
                           between guests are the backend's, across workers (domains on one
                           worker share its time fairly; a guest spreading queues over workers is
                           charged on each for all it gets). 0 serves every ring on the main
                           thread. Disks whose store a worker cannot open for itself (iscsi://)
                           are still served on a worker, with their I/O passed to the main thread
                           ('ctl stats': 'store via main thread')
  --data-path persistent|copy|map
                           how guest data moves (default persistent): 'persistent' advertises
                           feature-persistent and, with a frontend that agrees (Linux blkfront
                           does by default), maps each grant once and keeps it (up to 1056 a
                           ring) until the frontend disconnects: no grant system call a request,
                           I/O straight from the guest's pages, and the guest copies its data
                           into its granted pool (as with Linux's own blkback); a frontend that
                           does not agree gets 'copy'. 'copy' grant-copies between the guest's
                           pages and our own (one hypercall a turn, nothing mapped: the
                           conservative choice, immune to XSA-229-style unmap races); 'map' maps
                           and unmaps each request's grants (the slowest here)
  --backend-kind NAME      own /local/domain/0/backend/NAME instead of backend/vbd (default vbd).
                           The kernel's xen-blkback owns backend/vbd, so with another name (e.g.
                           'blkback') both can run, each serving its own disks: one guest can
                           then have a disk from each, to compare them. xl makes only vbd and
                           qdisk disks, so disks of another kind are attached and detached with
                           'blkback ctl attach/detach', which write the xenstore entries
                           themselves (no hotplug script: serve opens the target); detach them
                           before 'xl destroy', which does not know them
${ALLOW_PATH_OPTION_HELP}
  --aio native|threads     how disk I/O reaches the kernel (default native): 'native' hands all
                           the requests of a turn to Linux AIO in one io_submit; 'threads' gives
                           each to a thread of libuv's pool (costs a thread hand-off a request;
                           the only choice where io_setup fails, e.g. aio-max-nr reached)

examples:
  losetup --direct-io=on -f --show guest.img        # -> /dev/loop0
  blkback serve 2>>/var/log/blkback.log &
  xl create guest.cfg        # disk = ['format=raw,vdev=xvda,access=rw,backendtype=phy,target=/dev/loop0']
  blkback ctl list
  blkback ctl stats 1/xvda

  modprobe xen-blkback                              # the kernel's backend keeps backend/vbd
  blkback serve --backend-kind blkback &
  xl create guest.cfg                               # xvda from the kernel's backend
  blkback ctl attach 1 'vdev=xvdb,access=rw,target=/dev/loop1'  # domain 1's xvdb from blkback
  blkback ctl detach 1 xvdb
`;

function count(text: string | undefined, what: string, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new UsageError(`serve: ${what} '${text}' is not a whole number in ${min}..${max}`);
  return n;
}

function timestamped(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'serve the disks of real Xen guests (dom0), with a control socket for blkback ctl',
  help,
  async run(argv) {
    const access = takeAllowUidOptions(argv, 'serve');
    argv = access.rest;
    configureSocketAccess({ allowUids: access.allowUids, log: timestamped });
    let values: Record<string, string | undefined>;
    let allowPaths: string[];
    try {
      let allow: string[] | undefined;
      ({
        values: { 'allow-path': allow, ...values },
      } = parseArgs({
        args: argv,
        allowPositionals: false,
        strict: true,
        options: {
          'control-socket': { type: 'string' },
          'xenstore-socket': { type: 'string' },
          'max-ring-page-order': { type: 'string' },
          'max-queues': { type: 'string' },
          'max-inflight': { type: 'string' },
          workers: { type: 'string' },
          'data-path': { type: 'string' },
          aio: { type: 'string' },
          'backend-kind': { type: 'string' },
          'allow-path': { type: 'string', multiple: true },
        },
      }));
      allowPaths = allow ?? [];
    } catch (err) {
      throw new UsageError(`serve: ${(err as Error).message} (see 'blkback serve --help')`);
    }
    const maxRingPageOrder = count(values['max-ring-page-order'], '--max-ring-page-order', 0, 4);
    const maxQueues = count(values['max-queues'], '--max-queues', 1, MAX_QUEUES_LIMIT);
    const maxInflight = count(values['max-inflight'], '--max-inflight', 1, 1 << 20);
    // Default: one data-plane thread per CPU (real Xen: test:xen's PV, PVH and same-guest boots run so).
    const workers = count(values.workers, '--workers', 0, MAX_WORKERS) ?? Math.min(MAX_WORKERS, availableParallelism());
    const dataPath = values['data-path'] ?? 'persistent';
    if (dataPath !== 'copy' && dataPath !== 'map' && dataPath !== 'persistent') {
      throw new UsageError(`serve: --data-path '${dataPath}' is not one of persistent, copy, map`);
    }
    const ioEngine = values.aio;
    if (ioEngine !== undefined && !IO_ENGINES.includes(ioEngine as IoEngine)) {
      throw new UsageError(`serve: --aio '${ioEngine}' is neither 'native' nor 'threads'`);
    }
    const backendKind = values['backend-kind'] ?? 'vbd';
    if (!isBackendKind(backendKind)) {
      throw new UsageError(`serve: --backend-kind '${backendKind}' is not a xenstore directory name (a-z, 0-9, _ and -, a letter first)`);
    }
    if (backendKind === 'qdisk') throw new UsageError("serve: --backend-kind qdisk is QEMU's directory; choose another name, such as 'blkback'");
    const policy = await resolvePathPolicy(allowPaths);
    const controlPath = values['control-socket'] ?? defaultControlSocket();
    const xenstoreSocket = values['xenstore-socket'];

    // Loaded only here: the binding to /dev/xen (and its FFI library) is no business of other commands.
    const noXen = (why: string): number => {
      process.stderr.write(`blkback serve: Xen is not available here: ${why}\n`);
      return EXIT_NO_XEN;
    };
    let xen: typeof import('../../hypervisor/xen/index.ts');
    try {
      xen = await import('../../hypervisor/xen/index.ts');
    } catch (err) {
      // A broken install (the FFI package missing) is still an environment problem, not a crash.
      return noXen(`the Xen binding cannot be loaded: ${String((err as Error).message).split('\n')[0]} (run npm ci)`);
    }
    const available = xen.xenAvailable(xenstoreSocket === undefined ? {} : { xenstoreSocket });
    if (!available.ok) return noXen(available.why ?? 'no Xen hypervisor interface found');
    let hv;
    try {
      hv = await xen.openXenHypervisor(xenstoreSocket === undefined ? {} : { xenstoreSocket });
    } catch (err) {
      if (err instanceof xen.XenUnavailableError) return noXen(err.message);
      throw err;
    }

    const log = timestamped;
    const stores = new StoreRegistry(new Map(), { policy, ...(ioEngine === undefined ? {} : { ioEngine: ioEngine as IoEngine }) });
    const blkback = new Blkback(hv, {
      open: stores.open,
      log,
      dataPath,
      backendKind,
      ...(maxRingPageOrder === undefined ? {} : { maxRingPageOrder }),
      ...(maxQueues === undefined ? {} : { maxQueues }),
      ...(maxInflight === undefined ? {} : { maxInflight }),
      ...(workers === 0 ? {} : { workers, dataPlane: xenDataPlaneProvider() }),
    });
    let control: ControlServer | undefined;
    try {
      await blkback.start();
      // xl writes only vbd (and qdisk) disks; under another directory attach and detach are ours
      const toolstack = backendKind === 'vbd' ? xlToolstack() : xenstoreToolstack(hv.xenstore, backendKind, { log });
      control = await serveControl(blkbackControlTarget(blkback, toolstack, { xenstore: hv.xenstore, checkStore: (r) => stores.check(r) }), {
        path: controlPath,
        log,
      });
      log(`serve: blkback serves ${backendRoot(backendKind, hv.domid)}; control socket ${controlPath}`);
      log(
        `serve: disks may be block devices under /dev${policy.allowPaths.length === 0 ? ' (no --allow-path: no image files)' : ` and files under ${policy.allowPaths.join(', ')}`}`,
      );
      const aioProblem = ioEngine === 'threads' ? 'as asked' : linuxAioProblem();
      log(`serve: phy disks do I/O through ${aioProblem === undefined ? 'Linux AIO (--aio native)' : `libuv's thread pool (--aio threads: ${aioProblem})`}`);
      log(
        `serve: ${workers === 0 ? 'rings are served on the main thread (--workers 0)' : `rings are served by ${workers} data-plane worker thread${workers === 1 ? '' : 's'}, each with its own gntdev and evtchn handles`}`,
      );
      const signal = await new Promise<NodeJS.Signals>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      log(`serve: ${signal}: answering the requests in flight, then stopping`);
      // A second signal while draining gives up on a clean stop.
      const force = (sig: NodeJS.Signals): void => {
        log(`serve: ${sig} again: exiting without draining`);
        process.exit(1);
      };
      process.once('SIGINT', force);
      process.once('SIGTERM', force);
    } finally {
      await control?.close();
      await blkback.stop();
      await stores.close();
      await hv.close();
    }
    log('serve: stopped');
    return 0;
  },
};
