// A toolstack of our own for disks that xl cannot make: those under a backend directory other than
// vbd and qdisk (`blkback serve --backend-kind NAME`, beside the kernel's xen-blkback). Attach
// writes the backend's and the frontend's xenstore entries in one transaction, as libxl does;
// detach closes the device with the guest and removes them (src/sim-host/disk-entries.ts). No
// hotplug script runs: serve opens the path in `params` itself.
import type { XlDisk } from '../config/xl-disk.ts';
import type { XenstoreClient } from '../hypervisor/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { removeDiskEntries, writeDiskEntries } from '../sim-host/disk-entries.ts';
import { backendDir, domainDir, DomainKey, frontendDir, VbdKey } from '../xenbus/device-paths.ts';
import type { Toolstack } from './toolstack.ts';

export interface XenstoreToolstackOptions {
  /** How long detach waits for the guest to close the disk before removing it anyway (default 10 s). */
  readonly detachTimeoutMs?: number;
  readonly log?: (line: string) => void;
}

export function xenstoreToolstack(xs: XenstoreClient, kind: string, options: XenstoreToolstackOptions = {}): Toolstack {
  return {
    name: `blkback's own toolstack (backend/${kind})`,
    async attach(domid: number, disk: XlDisk): Promise<void> {
      const refuse = (why: string): never => {
        throw new BlockError('BLK_ERR_CONFIG', `attach: disk '${disk.spec}': ${why}`, { errno: Errno.EINVAL });
      };
      if (disk.backendtype !== 'phy') refuse(`backendtype ${disk.backendtype}: disks under backend/${kind} are served as phy`);
      if (disk.script !== undefined) refuse(`script=${disk.script}: no hotplug script runs here (serve opens the target itself)`);
      if (disk.backendDomain !== undefined) refuse(`backend=${disk.backendDomain}: only dom0 serves disks here`);
      if (
        (await xs.tryRead(`${domainDir(domid)}/${DomainKey.domid}`)) === undefined &&
        (await xs.tryRead(`${domainDir(domid)}/${DomainKey.name}`)) === undefined
      ) {
        throw new BlockError('BLK_ERR_NODOMAIN', `attach: there is no domain ${domid}`, { errno: Errno.ENOENT });
      }
      const fe = frontendDir(domid, disk.deviceId);
      const other = await xs.tryRead(`${fe}/${VbdKey.backend}`);
      if (other !== undefined) {
        throw new BlockError('BLK_ERR_EXISTS', `attach: domain ${domid} already has a device ${disk.vdev} (${disk.deviceId}), served by ${other}`, {
          errno: Errno.EEXIST,
        });
      }
      await xs.transaction((tx) =>
        writeDiskEntries(xs, tx, {
          kind,
          domid,
          devid: disk.deviceId,
          vdev: disk.vdev,
          target: disk.target,
          type: 'phy',
          readOnly: disk.access === 'r',
          discard: disk.discard,
        }),
      );
      options.log?.(`attach: wrote ${backendDir(kind, domid, disk.deviceId)} and ${fe} (${disk.target})`);
    },
    async detach(domid: number, devid: number): Promise<void> {
      await removeDiskEntries(xs, kind, domid, devid, {
        ...(options.detachTimeoutMs === undefined ? {} : { timeoutMs: options.detachTimeoutMs }),
        ...(options.log === undefined ? {} : { log: options.log }),
      });
    },
  };
}
