// How a user names one served disk: "3/51712" (domid/devid, the key of backend/vbd/3/51712),
// "3/xvda" (domid/vdev) or "vbd-3-51712" (Linux's xen-backend device name, as in
// /sys/bus/xen-backend/devices/vbd-3-51712/statistics).
import { deviceIdToVdev, vdevToDeviceId } from '../config/vdev.ts';
import { DOMID_FIRST_RESERVED } from '../abi/xen.ts';

export interface DiskRef {
  readonly domid: number;
  readonly devid: number;
}

/** "3/xvda" -> { domid: 3, devid: 51712 }; undefined with the reason when it is not a disk name. */
export function parseDiskRef(text: string): { ref: DiskRef } | { why: string } {
  const m = /^(?:(\d{1,5})\/([^/\s]+)|vbd-(\d{1,5})-(\d{1,10}))$/.exec(text.trim());
  if (m === null) return { why: `'${text}' is not a disk name (expected DOMID/DEVID, DOMID/VDEV or vbd-DOMID-DEVID, e.g. 3/51712 or 3/xvda)` };
  const domid = Number(m[1] ?? m[3]);
  if (domid >= DOMID_FIRST_RESERVED) return { why: `'${text}': ${domid} is not a domain id` };
  const vdev = m[2] ?? m[4] ?? '';
  try {
    return { ref: { domid, devid: vdevToDeviceId(vdev) } };
  } catch (err) {
    return { why: `'${text}': ${(err as Error).message}` };
  }
}

export function diskKey(ref: DiskRef): string {
  return `${ref.domid}/${ref.devid}`;
}

/** The vdev name of a device id, or the number itself when it is in no known encoding. */
export function vdevName(devid: number): string {
  try {
    return deviceIdToVdev(devid);
  } catch {
    return String(devid);
  }
}
