// The simulation's toolstack for the control socket: SimHost writes and removes the xenstore entries
// as libxl would, under the backend directory its blkback serves (SimHost's backendKind, "vbd" unless
// the host was started with another, as `blkback serve --backend-kind` on real Xen). The guest's own
// code connects or closes its frontend (as a Linux guest's xenbus probe and blkfront do), so a detach
// completes only if the guest lets the disk go; after `detachTimeoutMs` the entries are removed
// anyway, as libxl's forced remove does.
import type { XlDisk } from '../config/xl-disk.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import type { SimHost } from '../sim-host/host.ts';
import { guestDiskFromXl } from '../sim-host/from-xl.ts';
import { backendDir, DEFAULT_BACKEND_KIND, domainDir, DomainKey, frontendDir, VbdKey } from '../xenbus/device-paths.ts';
import type { Toolstack } from './toolstack.ts';

export function simToolstack(host: SimHost, options: { readonly detachTimeoutMs?: number } = {}): Toolstack {
  const kind = host.backendKind;
  return {
    name: kind === DEFAULT_BACKEND_KIND ? 'the simulated toolstack' : `the simulated toolstack (backend/${kind})`,
    async attach(domid: number, disk: XlDisk): Promise<void> {
      if ((await host.xs.tryRead(`${domainDir(domid)}/${DomainKey.domid}`)) === undefined) {
        throw new BlockError('BLK_ERR_NODOMAIN', `attach: there is no domain ${domid}`, { errno: Errno.ENOENT });
      }
      // The device number is the guest's, taken whichever backend serves it. The frontend directory
      // is the guest's to change, so our own backend directory is checked as well.
      const be = backendDir(kind, domid, disk.deviceId);
      const ours = (await host.xs.tryRead(`${be}/${VbdKey.frontend}`)) === undefined ? undefined : be;
      const other = ours ?? (await host.xs.tryRead(`${frontendDir(domid, disk.deviceId)}/${VbdKey.backend}`));
      if (other !== undefined) {
        throw new BlockError('BLK_ERR_EXISTS', `attach: domain ${domid} already has a device ${disk.vdev} (${disk.deviceId}), served by ${other}`, {
          errno: Errno.EEXIST,
        });
      }
      await host.attachDisk(domid, guestDiskFromXl(disk, 'attach'));
    },
    async detach(domid: number, devid: number): Promise<void> {
      await host.detachDisk(domid, devid, options.detachTimeoutMs);
    },
  };
}
