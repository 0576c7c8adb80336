// What the toolstack makes of a parsed xl config or disk spec: the guests and disks SimHost starts.
import type { XlConfig } from '../config/xl-cfg.ts';
import type { XlDisk } from '../config/xl-disk.ts';
import { UsageError } from '../internal/errors.ts';
import type { GuestConfig, GuestDisk } from './host.ts';

/** `where` (a file name, or "--disk") prefixes the error for disks this host cannot serve. */
export function guestDiskFromXl(d: XlDisk, where: string): GuestDisk {
  if (d.backendtype === 'tap') throw new UsageError(`${where}: disk '${d.spec}': backendtype tap is not supported here (use phy or qdisk)`);
  return { target: d.target, vdev: d.vdev, readOnly: d.access === 'r', backendtype: d.backendtype };
}

export function guestConfigFromXl(cfg: XlConfig, disks: readonly XlDisk[] = cfg.disks): GuestConfig {
  return { name: cfg.name, memoryMiB: cfg.memory, vcpus: cfg.vcpus, disks: disks.map((d) => guestDiskFromXl(d, cfg.file)) };
}
