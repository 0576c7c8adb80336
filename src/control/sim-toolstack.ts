// The simulation's toolstack for the control socket: SimHost writes and removes the xenstore entries
// as libxl would. The guest's own code connects or closes its frontend (as a Linux guest's xenbus
// probe and blkfront do), so a detach completes only if the guest lets the disk go; after
// `detachTimeoutMs` the entries are removed anyway, as libxl's forced remove does.
import type { XlDisk } from '../config/xl-disk.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import type { SimHost } from '../toolstack/host.ts';
import { guestDiskFromXl } from '../toolstack/from-xl.ts';
import type { Toolstack } from './toolstack.ts';

export function simToolstack(host: SimHost, options: { readonly detachTimeoutMs?: number } = {}): Toolstack {
  return {
    name: 'the simulated toolstack',
    async attach(domid: number, disk: XlDisk): Promise<void> {
      if ((await host.xs.tryRead(`/local/domain/${domid}/domid`)) === undefined) {
        throw new BlockError('BLK_ERR_NODOMAIN', `attach: there is no domain ${domid}`, { errno: Errno.ENOENT });
      }
      if ((await host.xs.tryRead(`/local/domain/0/backend/vbd/${domid}/${disk.deviceId}/frontend`)) !== undefined) {
        throw new BlockError('BLK_ERR_EXISTS', `attach: domain ${domid} already has a device ${disk.vdev} (${disk.deviceId})`, { errno: Errno.EEXIST });
      }
      await host.attachDisk(domid, guestDiskFromXl(disk, 'attach'));
    },
    async detach(domid: number, devid: number): Promise<void> {
      await host.detachDisk(domid, devid, options.detachTimeoutMs);
    },
  };
}
