// Resolves what the toolstack wrote in a backend's `params` to an open block device: first through
// `--map PATH=SPEC` (so the seeds' /dev/sdb can be a RAM disk here), then as a path. Named stores
// (RAM disks, devices registered by a test) are shared: two guests, or a `phy:` and a `file:` disk,
// naming the same store see the same bytes. `phy` opens paths with O_DIRECT, `qdisk`/`file` through
// the page cache, as the kernel blkback and QEMU's qdisk do.
//
// Who named the path decides how it is opened. `params` can be written by anyone who may write the
// backend directory (xl, `blkback ctl attach`, any xenstore client dom0 admits): such a path is
// opened only if the path policy allows it (src/stores/path-policy.ts: block devices under /dev,
// regular files under an --allow-path directory). Stores the user named on our own command line
// (--map specs, and targets the caller marks with trust(): `blkback run`'s guest configs) are the
// user's own words and are opened as written.
import { existsSync } from 'node:fs';
import { openDirectDisk } from '../block/direct.ts';
import type { IoEngine } from '../block/direct.ts';
import { openFileDisk } from '../block/file.ts';
import { openBlockDevice } from '../stores/open.ts';
import { checkStoreSpec, openStoreUnderPolicy } from '../stores/path-policy.ts';
import type { PathPolicy } from '../stores/path-policy.ts';
import type { BlockDevice } from '../block/types.ts';
import type { DeviceOpener, OpenedDevice } from '../blkback/vbd.ts';
import { BlockError, Errno, UsageError } from '../internal/errors.ts';

interface Shared {
  device: BlockDevice;
  users: number;
  /** Registered by the caller: it owns the device and closes it. */
  external: boolean;
}

export interface StoreRegistryOptions {
  /** How O_DIRECT ('phy') disks reach the kernel (block/direct.ts); default native AIO where it works. */
  readonly ioEngine?: IoEngine;
  /**
   * Which host paths a `params` nobody here vouched for may name. Default: block devices under /dev
   * and no regular file (no --allow-path directory).
   */
  readonly policy?: PathPolicy;
}

/** What a backend asks for: its `type` and `params` keys. */
export interface StoreRequest {
  readonly type: string;
  readonly params: string;
  readonly readOnly?: boolean;
}

/** Specs opened as written when mapped or trusted (an iscsi:// or nbd:// URL or an rbd: image names a LUN, export or image, not a host path). */
const PREFIXED = /^(phy|file|direct|iscsi|rbd|nbds?|nbds?\+unix):/;
const MEMORY = /^(ram|null):/;

export class StoreRegistry {
  readonly #maps: ReadonlyMap<string, string>;
  readonly #shared = new Map<string, Shared>();
  readonly #trusted = new Set<string>();
  readonly #ioEngine: { ioEngine?: IoEngine };
  readonly #policy: PathPolicy;

  constructor(maps: ReadonlyMap<string, string> = new Map(), options: StoreRegistryOptions = {}) {
    this.#maps = maps;
    this.#ioEngine = options.ioEngine === undefined ? {} : { ioEngine: options.ioEngine };
    this.#policy = options.policy ?? { allowPaths: [] };
  }

  /** Makes `name` (as it appears in a disk spec's target) resolve to this device. */
  register(name: string, device: BlockDevice): void {
    this.#shared.set(name, { device, users: 0, external: true });
  }

  /**
   * The caller named this target itself (a guest config given on its command line): open it as
   * written, outside the path policy. A target others name later (ctl attach) gets the same trust:
   * the user already exposed that path to a guest.
   */
  trust(target: string): void {
    this.#trusted.add(target);
  }

  /**
   * Would open() accept this target? Throws what open() would for a target the path policy refuses
   * or that does not exist; opens nothing. For answering `ctl attach` before the toolstack writes
   * anything (only open() is safe against a file replaced meanwhile).
   */
  async check({ type, params }: StoreRequest): Promise<void> {
    const spec = this.#maps.get(params) ?? params;
    if (this.#shared.has(spec) || MEMORY.test(spec) || this.#vouched(params)) return;
    const policed = this.#policedSpec(type, params);
    try {
      await checkStoreSpec(policed, this.#policy);
    } catch (err) {
      throw refusal(params, policed, err);
    }
  }

  readonly open: DeviceOpener = async ({ type, params, readOnly }) => {
    const spec = this.#maps.get(params) ?? params;
    const shared = this.#shared.get(spec);
    if (shared !== undefined) return this.#use(spec, shared);
    if (MEMORY.test(spec)) {
      const entry: Shared = { device: await openBlockDevice(spec), users: 0, external: false };
      this.#shared.set(spec, entry);
      return this.#use(spec, entry);
    }
    let device: BlockDevice;
    if (this.#vouched(params)) {
      const prefixed = PREFIXED.test(spec);
      if (!prefixed && !existsSync(spec)) throw missing(params);
      device = prefixed
        ? await openBlockDevice(spec, { readOnly, ...this.#ioEngine })
        : type === 'phy'
          ? await openDirectDisk(spec, { readOnly, ...this.#ioEngine })
          : await openFileDisk(spec, { readOnly });
    } else {
      const policed = this.#policedSpec(type, params);
      try {
        device = await openStoreUnderPolicy(policed, this.#policy, { readOnly, ...this.#ioEngine });
      } catch (err) {
        throw refusal(params, policed, err);
      }
    }
    return { device, release: () => device.close() };
  };

  /** Mapped on our command line, or trusted by the caller. */
  #vouched(params: string): boolean {
    return this.#maps.has(params) || this.#trusted.has(params);
  }

  /** The store spec the policy judges: phy: (O_DIRECT) or file: (page cache) by the backend's type. */
  #policedSpec(type: string, params: string): string {
    const prefix = PREFIXED.exec(params)?.[0];
    if (!params.slice(prefix?.length ?? 0).startsWith('/')) {
      throw new BlockError('BLK_ERR_REFUSED', `disk target '${params}' is not an absolute path (toolstacks name disks by absolute path)`, {
        errno: Errno.EACCES,
      });
    }
    if (prefix !== undefined) return params;
    if (!existsSync(params)) throw missing(params);
    return `${type === 'phy' ? 'phy' : 'file'}:${params}`;
  }

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

function missing(params: string): BlockError {
  return new BlockError('BLK_ERR_NODEV', `disk target '${params}' does not exist on this machine; map it to a store, e.g. --map ${params}=ram:1G`, {
    errno: Errno.ENOENT,
  });
}

/** The policy's complaint about `spec`, said about the target as the toolstack wrote it. */
function refusal(params: string, spec: string, err: unknown): unknown {
  if (!(err instanceof UsageError)) return err;
  const prefix = `store spec '${spec}': `;
  const why = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
  const code = err.errno === Errno.ENOENT ? 'BLK_ERR_NODEV' : 'BLK_ERR_REFUSED';
  return new BlockError(code, `disk target '${params}': ${why}`, { errno: err.errno, cause: err });
}
