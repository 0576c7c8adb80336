// Resolves what the toolstack wrote in a backend's `params` to an open block device: first through
// `--map PATH=SPEC` (so the seeds' /dev/sdb can be a RAM disk here), then as a path. Named stores
// (RAM disks, devices registered by a test) are shared: two guests, or a `phy:` and a `file:` disk,
// naming the same store see the same bytes. `phy` opens paths with O_DIRECT, `qdisk`/`file` through
// the page cache, as the kernel blkback and QEMU's qdisk do.
import { existsSync } from 'node:fs';
import { openDirectDisk } from '../block/direct.ts';
import type { IoEngine } from '../block/direct.ts';
import { openFileDisk } from '../block/file.ts';
import { openBlockDevice } from '../block/open.ts';
import type { BlockDevice } from '../block/types.ts';
import type { DeviceOpener, OpenedDevice } from '../blkback/vbd.ts';
import { BlockError, Errno } from '../internal/errors.ts';

interface Shared {
  device: BlockDevice;
  users: number;
  /** Registered by the caller: it owns the device and closes it. */
  external: boolean;
}

export class StoreRegistry {
  readonly #maps: ReadonlyMap<string, string>;
  readonly #shared = new Map<string, Shared>();

  readonly #ioEngine: { ioEngine?: IoEngine };

  /** `ioEngine`: how O_DIRECT ('phy') disks reach the kernel (block/direct.ts); default native AIO where it works. */
  constructor(maps: ReadonlyMap<string, string> = new Map(), options: { readonly ioEngine?: IoEngine } = {}) {
    this.#maps = maps;
    this.#ioEngine = options.ioEngine === undefined ? {} : { ioEngine: options.ioEngine };
  }

  /** Makes `name` (as it appears in a disk spec's target) resolve to this device. */
  register(name: string, device: BlockDevice): void {
    this.#shared.set(name, { device, users: 0, external: true });
  }

  readonly open: DeviceOpener = async ({ type, params, readOnly }) => {
    const spec = this.#maps.get(params) ?? params;
    const shared = this.#shared.get(spec);
    if (shared !== undefined) return this.#use(spec, shared);
    if (/^(ram|null):/.test(spec)) {
      const entry: Shared = { device: await openBlockDevice(spec), users: 0, external: false };
      this.#shared.set(spec, entry);
      return this.#use(spec, entry);
    }
    const prefixed = /^(phy|file|direct):/.test(spec);
    if (!prefixed && !existsSync(spec)) {
      throw new BlockError(
        'BLK_ERR_NODEV',
        `disk target '${params}' does not exist on this machine; map it to a store, e.g. --map ${params}=ram:1G`,
        { errno: Errno.ENOENT },
      );
    }
    const device = prefixed
      ? await openBlockDevice(spec, { readOnly, ...this.#ioEngine })
      : type === 'phy'
        ? await openDirectDisk(spec, { readOnly, ...this.#ioEngine })
        : await openFileDisk(spec, { readOnly });
    return { device, release: () => device.close() };
  };

  #use(key: string, entry: Shared): OpenedDevice {
    entry.users++;
    return {
      device: entry.device,
      release: async () => {
        entry.users--;
        if (entry.users === 0 && !entry.external) {
          this.#shared.delete(key);
          await entry.device.close();
        }
      },
    };
  }

  async close(): Promise<void> {
    for (const entry of this.#shared.values()) if (!entry.external) await entry.device.close();
    this.#shared.clear();
  }
}
