// Guest disk names <-> the xenstore "virtual-device" number, per Xen's docs/misc/vbd-interface.txt:
//
//   1 << 28 | disk << 8 | partition      xvd, disks or partitions 16 onwards (disk < 2^20, partition < 256)
//   202 << 8 | disk << 4 | partition     xvd, disks and partitions up to 15
//   8 << 8 | disk << 4 | partition       sd, disks and partitions up to 15
//   3 << 8 | disk << 6 | partition       hd, disks 0..1, partitions 0..63
//   22 << 8 | (disk-2) << 6 | partition  hd, disks 2..3, partitions 0..63
//
// Disk letters count in bijective base 26 (a=0 … z=25, aa=26, …; "xvdtq37" is disk 536 partition 37).
// "dNpM" names xvd disk N partition M, and a bare number (decimal, 0x hex or 0 octal) is the device
// id itself.
import { UsageError } from '../internal/errors.ts';

const XVD_MAJOR = 202;
const SD_MAJOR = 8;
const HD_MAJOR_01 = 3;
const HD_MAJOR_23 = 22;
const XVD_EXT_FLAG = 1 << 28;
const XVD_EXT_MAX_DISK = (1 << 20) - 1;
const RESERVED_FROM = 2 << 28;

function lettersToDisk(letters: string): number {
  let n = 0;
  for (let i = 0; i < letters.length; i++) n = n * 26 + (letters.charCodeAt(i) - 0x60);
  return n - 1;
}

function diskToLetters(disk: number): string {
  let s = '';
  for (let k = disk + 1; k > 0; k = Math.floor((k - 1) / 26)) s = String.fromCharCode(0x61 + ((k - 1) % 26)) + s;
  return s;
}

function xvdId(disk: number, partition: number, name: string): number {
  if (disk < 16 && partition < 16) return (XVD_MAJOR << 8) | (disk << 4) | partition;
  if (disk <= XVD_EXT_MAX_DISK && partition < 256) return XVD_EXT_FLAG | (disk << 8) | partition;
  throw new UsageError(`vdev '${name}': disk ${disk} partition ${partition} is beyond Xen's encoding (disk < 2^20, partition < 256)`);
}

/** "xvda" -> 51712; throws UsageError naming the vdev when it is not a valid name. */
export function vdevToDeviceId(name: string): number {
  const fail = (why: string): never => {
    throw new UsageError(`vdev '${name}': ${why}`);
  };
  let m = /^(xvd|sd|hd)([a-z]{1,5})(0|[1-9]\d{0,2})?$/.exec(name);
  if (m !== null) {
    const [, kind, letters = '', part] = m;
    const disk = lettersToDisk(letters);
    const partition = part === undefined ? 0 : Number(part);
    if (kind === 'xvd') return xvdId(disk, partition, name);
    if (kind === 'sd') {
      if (disk < 16 && partition < 16) return (SD_MAJOR << 8) | (disk << 4) | partition;
      return fail('sd names cover disks sda..sdp and partitions up to 15 (use xvd names beyond)');
    }
    if (partition >= 64) return fail('hd partitions go up to 63');
    if (disk < 2) return (HD_MAJOR_01 << 8) | (disk << 6) | partition;
    if (disk < 4) return (HD_MAJOR_23 << 8) | ((disk - 2) << 6) | partition;
    return fail('hd names cover disks hda..hdd only (use xvd names beyond)');
  }
  m = /^d(0|[1-9]\d*)(?:p(0|[1-9]\d*))?$/.exec(name);
  if (m !== null) return xvdId(Number(m[1]), Number(m[2] ?? 0), name);
  let id: number | undefined;
  if (/^0x[0-9a-f]+$/i.test(name)) id = Number.parseInt(name.slice(2), 16);
  else if (/^0[0-7]+$/.test(name)) id = Number.parseInt(name.slice(1), 8);
  else if (/^(0|[1-9]\d*)$/.test(name)) id = Number(name);
  if (id !== undefined) {
    if (id >= RESERVED_FROM) return fail(`device number ${id} is in the range reserved by vbd-interface.txt (>= 2<<28)`);
    return id;
  }
  return fail('not a disk name (expected xvdX, xvdXN, sdX, hdX, dNpM or a device number)');
}

/** 51712 -> "xvda"; the inverse of vdevToDeviceId for the encodings above. */
export function deviceIdToVdev(id: number): string {
  if (!Number.isInteger(id) || id < 0 || id >= RESERVED_FROM) {
    throw new UsageError(`device id ${id}: not a Xen virtual device number`);
  }
  const suffix = (partition: number): string => (partition === 0 ? '' : String(partition));
  if (id >= XVD_EXT_FLAG) return `xvd${diskToLetters((id >>> 8) & XVD_EXT_MAX_DISK)}${suffix(id & 0xff)}`;
  const major = id >>> 8;
  const minor = id & 0xff;
  if (id < 1 << 16) {
    if (major === XVD_MAJOR) return `xvd${diskToLetters(minor >>> 4)}${suffix(minor & 15)}`;
    if (major === SD_MAJOR) return `sd${diskToLetters(minor >>> 4)}${suffix(minor & 15)}`;
    if (major === HD_MAJOR_01 && minor >>> 6 < 2) return `hd${diskToLetters(minor >>> 6)}${suffix(minor & 63)}`;
    if (major === HD_MAJOR_23 && minor >>> 6 < 2) return `hd${diskToLetters(2 + (minor >>> 6))}${suffix(minor & 63)}`;
  }
  throw new UsageError(`device id ${id}: not in an encoding of vbd-interface.txt (xvd 202<<8, 1<<28; sd 8<<8; hd 3<<8, 22<<8)`);
}
