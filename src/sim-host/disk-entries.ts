// The xenstore entries a toolstack writes for one guest disk, and how it takes them away, as libxl
// does (libxl_disk.c device_disk_add; libxl_device.c libxl__initiate_device_generic_remove): a
// backend directory (dom0's, readable by the guest) and a frontend directory (the guest's, readable
// by dom0), laid out as src/xenbus/device-paths.ts says. `kind` is the backend's directory: "vbd"
// for Linux's xen-blkback and for `blkback serve` by default; another name lets a second backend run
// beside the kernel's.
import type { XenstoreClient } from '../hypervisor/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { backendDir, errorDir, frontendDir, VbdKey } from '../xenbus/device-paths.ts';
import { parseXenbusState, XenbusState } from '../xenbus/state.ts';

export { backendDir, errorDir, frontendDir };

export interface DiskEntries {
  readonly kind: string;
  readonly domid: number;
  readonly devid: number;
  readonly vdev: string;
  /** The backend's `params`: a path, a store spec or a registered store name. */
  readonly target: string;
  /** The backend's `type` (phy, qdisk). */
  readonly type: string;
  readonly readOnly: boolean;
  /** discard-enable (xl's default: on). */
  readonly discard?: boolean;
}

/** Both directories with their keys and permissions; call inside a transaction, so a watcher sees the whole device at once. */
export async function writeDiskEntries(xs: XenstoreClient, tx: number, d: DiskEntries): Promise<void> {
  const be = backendDir(d.kind, d.domid, d.devid);
  const fe = frontendDir(d.domid, d.devid);
  const backend: [string, string][] = [
    [VbdKey.frontend, fe],
    [VbdKey.params, d.target],
    [VbdKey.frontendId, String(d.domid)],
    [VbdKey.online, '1'],
    [VbdKey.removable, '0'],
    [VbdKey.bootable, '1'],
    [VbdKey.state, String(XenbusState.Initialising)],
    [VbdKey.dev, d.vdev],
    [VbdKey.type, d.type],
    [VbdKey.mode, d.readOnly ? 'r' : 'w'],
    [VbdKey.deviceType, 'disk'],
    [VbdKey.discardEnable, d.discard === false ? '0' : '1'],
  ];
  const frontend: [string, string][] = [
    [VbdKey.backend, be],
    [VbdKey.backendId, '0'],
    [VbdKey.state, String(XenbusState.Initialising)],
    [VbdKey.virtualDevice, String(d.devid)],
    [VbdKey.deviceType, 'disk'],
  ];
  // An error recorded for an earlier device with this number is not this one's.
  const error = errorDir(d.kind, d.domid, d.devid);
  if ((await xs.tryRead(error, tx)) !== undefined) await xs.rm(error, tx);
  await xs.mkdir(be, tx);
  await xs.setPerms(
    be,
    [
      { domid: 0, perm: 'n' },
      { domid: d.domid, perm: 'r' },
    ],
    tx,
  );
  for (const [k, v] of backend) await xs.write(`${be}/${k}`, v, tx);
  await xs.mkdir(fe, tx);
  await xs.setPerms(
    fe,
    [
      { domid: d.domid, perm: 'n' },
      { domid: 0, perm: 'r' },
    ],
    tx,
  );
  for (const [k, v] of frontend) await xs.write(`${fe}/${k}`, v, tx);
}

/**
 * Detach: in one transaction the backend goes offline (`online` = 0) and to Closing, which tells the
 * frontend to let go; once the backend reaches Closed (the frontend closed and the backend drained
 * its ring) both directories are removed, and the backend drops the device. If the guest does not
 * answer within `timeoutMs`, or has no frontend directory left (it died), the entries are removed
 * anyway, as libxl's forced remove does. Resolves with whether it had to force.
 */
export async function removeDiskEntries(
  xs: XenstoreClient,
  kind: string,
  domid: number,
  devid: number,
  options: { readonly timeoutMs?: number; readonly log?: (line: string) => void } = {},
): Promise<{ forced: boolean }> {
  const be = backendDir(kind, domid, devid);
  const fe = frontendDir(domid, devid);
  const timeoutMs = options.timeoutMs ?? 10_000;
  if ((await xs.tryRead(`${be}/${VbdKey.frontend}`)) === undefined) {
    throw new BlockError('BLK_ERR_NODEV', `domain ${domid} has no disk with device id ${devid} (${be} is missing)`, { errno: Errno.ENOENT });
  }
  const state = parseXenbusState(await xs.tryRead(`${be}/${VbdKey.state}`));
  const frontendThere = (await xs.tryRead(`${fe}/${VbdKey.state}`)) !== undefined;
  let forced = false;
  if (state !== XenbusState.Closed) {
    await xs.transaction(async (tx) => {
      await xs.write(`${be}/${VbdKey.online}`, '0', tx);
      await xs.write(`${be}/${VbdKey.state}`, String(XenbusState.Closing), tx);
    });
    // A state node that vanished means the device went with its domain: nothing left to wait for.
    forced =
      !frontendThere || !(await waitForNode(xs, `${be}/${VbdKey.state}`, (v) => v === undefined || parseXenbusState(v) === XenbusState.Closed, timeoutMs));
    if (forced)
      options.log?.(`domain ${domid}: disk ${devid} ${frontendThere ? `did not close within ${timeoutMs} ms` : 'has no frontend left'}; removing it anyway`);
  }
  await xs.transaction(async (tx) => {
    await xs.rm(fe, tx).catch(() => undefined);
    await xs.rm(be, tx).catch(() => undefined);
    await xs.rm(errorDir(kind, domid, devid), tx).catch(() => undefined);
  });
  return { forced };
}

let waitTokens = 0;

/** Resolves true once `path`'s value satisfies `done`, false after `timeoutMs`. */
async function waitForNode(xs: XenstoreClient, path: string, done: (value: string | undefined) => boolean, timeoutMs: number): Promise<boolean> {
  const token = `toolstack-wait-${++waitTokens}`;
  const reached = await new Promise<boolean>((resolve) => {
    let finished = false;
    const finish = (value: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve(value);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    void xs
      .watch(path, token, () => {
        void xs.tryRead(path).then(
          (v) => done(v) && finish(true),
          () => undefined,
        );
      })
      .catch(() => finish(false));
  });
  await xs.unwatch(path, token).catch(() => undefined);
  return reached;
}
