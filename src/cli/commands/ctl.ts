// `blkback ctl`: talk to a running `blkback serve` (real Xen) or `blkback run --control-socket`
// (simulation) over its control socket.
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseSize } from '../../config/size.ts';
import { ControlClient } from '../../control/client.ts';
import { formatBytes, formatDiskList, formatIscsiCounters, formatIscsiStatus, formatStatistics } from '../../control/format.ts';
import { checkSocketDirectory, defaultControlSocket, ISCSI_TARGET_SOCKET_NAME, ROOT_CONTROL_SOCKET } from '../../control/paths.ts';
import { UsageError } from '../../internal/errors.ts';
import type { Command } from '../command.ts';

const help = `blkback ctl — list, watch and hot-plug the disks a running blkback serves

usage: blkback ctl [--socket PATH] [--json] list
       blkback ctl [--socket PATH] [--json] stats [DISK]
       blkback ctl [--socket PATH] attach DOMID DISKSPEC
       blkback ctl [--socket PATH] detach DOMID VDEV
       blkback ctl [--socket PATH] resize DISK SIZE

Talks to 'blkback serve' (real Xen, dom0) or 'blkback run --control-socket PATH' (the simulation)
over their control socket. The same commands work in both. With --iscsi (or --socket naming an
iSCSI target's socket) list and stats show a 'blkback iscsi-target': its LUNs, sessions with their
negotiated parameters, and its counters.

  list       one line per disk: DOMID/DEVID, vdev, xenbus state, size, mode, ring pages and ABI,
             requests in flight, and the store serving it (phy:/dev/loop0)
  stats      Linux xen-blkback's counters, under the names of
             /sys/bus/xen-backend/devices/vbd-DOMID-DEVID/statistics/ (oo_req, rd_req, wr_req,
             f_req, ds_req, rd_sect, wr_sect), errors by kind, and per operation the latency
             percentiles p50/p90/p99/p99.9 (fio's histogram buckets) and counts per decade
  attach     add a disk to a running guest, as 'xl block-attach DOMID DISKSPEC' (on real Xen it
             runs exactly that; with 'serve --backend-kind NAME' serve writes the xenstore
             entries itself, as xl would); DISKSPEC is in xl disk syntax, several arguments are
             joined by ','. The server opens only what its path policy allows: block devices
             under /dev, files under its --allow-path directories (and, for 'blkback run', its
             --map targets and its guests' own disks); anything else is refused before anything
             is written, with the rule in the answer (see 'blkback serve --help')
  detach     remove a disk: the guest closes it, blkback drains it, the toolstack removes it
             (on real Xen: 'xl block-detach DOMID VDEV', or serve itself as for attach)
  resize     grow the disk's store to SIZE (512, 4k, 10G ...) and tell the guest the new size

DISK names one served disk: DOMID/DEVID (3/51712), DOMID/VDEV (3/xvda) or vbd-3-51712.

options:
  --socket PATH    the control socket (default ${ROOT_CONTROL_SOCKET} when root; otherwise
                   $XDG_RUNTIME_DIR/blkback/control.sock, or /tmp/blkback-UID/control.sock)
  --iscsi          the iSCSI target's socket in the same directory (${ISCSI_TARGET_SOCKET_NAME})
  --json           print the answer as JSON, for scripts (counters and latencies in nanoseconds)
  --timeout SECS   give up waiting for an answer after SECS seconds (default 60)

exit status: 0 done, 1 the server refused or failed (the message says why), 2 bad usage.

examples:
  blkback ctl list
  blkback ctl stats 3/xvda
  blkback ctl stats --json | jq '.[] | {key, rd_req, wr_req, p99: .latency_ns.write.p99}'
  blkback ctl attach 3 'format=raw,vdev=xvdb,access=rw,backendtype=phy,target=/dev/loop1'
  blkback ctl detach 3 xvdb
  blkback ctl resize 3/xvda 20G
  # the simulation: a guest on RAM, a spare RAM store for hot-plugging, the control socket
  blkback run guest.cfg --map /dev/sdb=ram:1G --map /dev/sdc=ram:256M --control-socket /tmp/ctl.sock --hold &
  blkback ctl --socket /tmp/ctl.sock list
`;

function domidArg(text: string | undefined): number {
  if (text === undefined) throw new UsageError("ctl: give the guest's domain id (see 'xl list')");
  if (!/^\d{1,5}$/.test(text)) throw new UsageError(`ctl: '${text}' is not a domain id (a number, as 'xl list' shows)`);
  return Number(text);
}

export const ctlCommand: Command = {
  name: 'ctl',
  summary: 'list disks, show statistics, attach, detach or resize disks of a running blkback',
  help,
  async run(argv) {
    let values: { socket?: string | undefined; json?: boolean | undefined; timeout?: string | undefined; iscsi?: boolean | undefined };
    let positionals: string[];
    try {
      ({ values, positionals } = parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: { socket: { type: 'string' }, json: { type: 'boolean' }, timeout: { type: 'string' }, iscsi: { type: 'boolean' } },
      }));
    } catch (err) {
      throw new UsageError(`ctl: ${(err as Error).message} (see 'blkback ctl --help')`);
    }
    const [action, ...args] = positionals;
    const json = values.json ?? false;
    const socket =
      values.socket ?? (values.iscsi === true ? defaultControlSocket(process.env, process.getuid?.() ?? 0, ISCSI_TARGET_SOCKET_NAME) : defaultControlSocket());
    let timeoutMs = 60_000;
    if (values.timeout !== undefined) {
      const s = Number(values.timeout);
      if (!Number.isFinite(s) || s <= 0) throw new UsageError(`ctl: --timeout '${values.timeout}' is not a positive number of seconds`);
      timeoutMs = s * 1000;
    }
    const arity = (min: number, max: number, shape: string): void => {
      if (args.length < min || args.length > max) throw new UsageError(`ctl: usage: blkback ctl ${action} ${shape}`.trimEnd());
    };
    // Check the arguments before connecting: a typo is reported the same with or without a server.
    let call: (c: ControlClient) => Promise<string>;
    switch (action) {
      case undefined:
        throw new UsageError("ctl: say what to do: list, stats, attach, detach or resize (see 'blkback ctl --help')");
      case 'list':
        arity(0, 0, '');
        call = async (c) => {
          if ((await c.info()).service === 'iscsi-target') {
            const st = await c.iscsiStatus();
            return json ? `${JSON.stringify(st, null, 2)}\n` : formatIscsiStatus(st);
          }
          const disks = await c.list();
          return json ? `${JSON.stringify(disks, null, 2)}\n` : formatDiskList(disks);
        };
        break;
      case 'stats': {
        arity(0, 1, '[DISK]');
        const disk = args[0];
        call = async (c) => {
          if ((await c.info()).service === 'iscsi-target') {
            const st = await c.iscsiStatus();
            return json ? `${JSON.stringify(st, null, 2)}\n` : formatIscsiCounters(st, disk);
          }
          const stats = await c.stats(disk);
          return json ? `${JSON.stringify(stats, null, 2)}\n` : formatStatistics(stats);
        };
        break;
      }
      case 'attach': {
        if (args.length < 2) throw new UsageError("ctl: usage: blkback ctl attach DOMID DISKSPEC (e.g. attach 3 'vdev=xvdb,target=/dev/loop1')");
        const domid = domidArg(args[0]);
        // As xl block-attach does, further arguments are more parts of the one disk spec.
        const spec = args.slice(1).join(',');
        call = async (c) => {
          const r = await c.attach(domid, spec);
          return json ? `${JSON.stringify(r, null, 2)}\n` : `attached ${r.vdev} to domain ${r.domid} (disk ${r.key})\n`;
        };
        break;
      }
      case 'detach': {
        arity(2, 2, 'DOMID VDEV');
        const domid = domidArg(args[0]);
        const vdev = args[1]!;
        call = async (c) => {
          const r = await c.detach(domid, vdev);
          return json ? `${JSON.stringify(r, null, 2)}\n` : `detached ${r.vdev} from domain ${domid} (disk ${r.key})\n`;
        };
        break;
      }
      case 'resize': {
        arity(2, 2, 'DISK SIZE');
        const disk = args[0]!;
        const size = parseSize(args[1]!, 'ctl resize: SIZE');
        call = async (c) => {
          const r = await c.resize(disk, size);
          return json ? `${JSON.stringify(r, null, 2)}\n` : `resized ${r.key} (${r.vdev}) from ${formatBytes(r.oldSize)} to ${formatBytes(r.newSize)}\n`;
        };
        break;
      }
      default:
        throw new UsageError(`ctl: unknown action '${action}' (expected list, stats, attach, detach or resize)`);
    }
    // A default socket is trusted only in a directory of our own: in a shared $TMPDIR another user
    // could have made blkback-UID first and put a socket of theirs in it, to read what we send.
    if (values.socket === undefined && existsSync(dirname(socket))) checkSocketDirectory(dirname(socket), process.geteuid?.() ?? 0, '--socket');
    const client = await ControlClient.connect(socket, { timeoutMs });
    try {
      process.stdout.write(await call(client));
    } finally {
      client.close();
    }
    return 0;
  },
};
