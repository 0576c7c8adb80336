// The control target of a running Blkback: list, stats and resize straight from its Vbds; attach
// and detach through a toolstack (the simulation's SimHost or real Xen's `xl`), then wait until
// blkback has picked the device up (or let it go), so the answer describes what is really served.
import type { Blkback } from '../blkback/blkback.ts';
import type { Vbd } from '../blkback/vbd.ts';
import { parseXlDiskSpec } from '../config/xl-disk.ts';
import { vdevToDeviceId } from '../config/vdev.ts';
import type { XenstoreClient } from '../hypervisor/types.ts';
import { BlockError } from '../internal/errors.ts';
import { VbdKey } from '../xenbus/device-paths.ts';
import { XenbusState, xenbusStateName } from '../xenbus/state.ts';
import { diskKey, parseDiskRef, vdevName } from './disk-ref.ts';
import { summarizeLatency } from './latency-summary.ts';
import { ControlError } from './protocol.ts';
import type { AttachResult, ControlTarget, DetachResult, DiskStatistics, DiskSummary, ResizeResult } from './target.ts';
import type { Toolstack } from './toolstack.ts';

const SECTOR = 512;

export interface BlkbackTargetOptions {
  /** dom0's xenstore connection: lets `list` say what the toolstack asked for (phy:/dev/loop0, read-only). */
  readonly xenstore?: XenstoreClient;
  /**
   * How long attach and detach wait for blkback to pick the device up or drop it (default 60 s: a
   * watch event takes well under a second on an idle host, but dom0 under QEMU emulation on a busy
   * machine saw the entries 21 and 27 s after they were written (docs/xen-tcg.md); libxl's own
   * hotplug timeout, LIBXL_HOTPLUG_TIMEOUT, is 40 s).
   */
  readonly settleMs?: number;
  /**
   * Checks a disk's target as blkback's opener will (StoreRegistry.check: the path policy, whether
   * it exists), before the toolstack is asked for anything: a refused target is answered at once,
   * naming the rule, and no xenstore entry is written. blkback's own open stays the authority.
   */
  readonly checkStore?: (request: { readonly type: string; readonly params: string; readonly readOnly: boolean }) => Promise<void>;
}

export function blkbackControlTarget(blkback: Blkback, toolstack: Toolstack, options: BlkbackTargetOptions = {}): ControlTarget {
  const xs = options.xenstore;
  const settleMs = options.settleMs ?? 60_000;

  const sortedVbds = (): Vbd[] => [...blkback.vbds.values()].sort((a, b) => a.frontendDomid - b.frontendDomid || a.devid - b.devid);

  const knownKeys = (): string[] => sortedVbds().map((v) => diskKey({ domid: v.frontendDomid, devid: v.devid }));

  const unknown = (text: string): ControlError => {
    const known = knownKeys();
    const listed = known.length === 0 ? 'none' : known.map((k) => `${k} (${vdevName(Number(k.split('/')[1]))})`).join(', ');
    return new ControlError('CTL_ERR_UNKNOWN_DISK', `no disk ${text} is served here; known disks: ${listed}`, { known });
  };

  const find = (text: string): Vbd => {
    const parsed = parseDiskRef(text);
    if ('why' in parsed) throw new ControlError('CTL_ERR_BAD_ARGUMENT', parsed.why);
    const key = diskKey(parsed.ref);
    const vbd = blkback.vbds.get(key);
    if (vbd === undefined) throw unknown(text === key ? `${key} (${vdevName(parsed.ref.devid)})` : `${text} (${key})`);
    return vbd;
  };

  const describeStore = async (vbd: Vbd): Promise<{ store: string; readOnly: boolean }> => {
    const device = vbd.device;
    let store = device?.name ?? '(not open)';
    let readOnly = device?.info.readOnly ?? false;
    if (xs !== undefined) {
      const read = (key: string): Promise<string | undefined> => xs.tryRead(`${vbd.backendPath}/${key}`).catch(() => undefined);
      const [type, params, mode] = await Promise.all([read(VbdKey.type), read(VbdKey.params), read(VbdKey.mode)]);
      if (params !== undefined) store = `${type ?? 'phy'}:${params}`;
      if (mode !== undefined && mode !== 'w') readOnly = true;
    }
    return { store, readOnly };
  };

  /** Polls blkback's table: it changes from xenstore watch events, which come with no completion signal. */
  const settle = async (what: string, done: () => boolean): Promise<void> => {
    const start = Date.now();
    while (!done()) {
      if (Date.now() - start > settleMs) throw new ControlError('CTL_ERR_FAILED', `${what} within ${settleMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };

  return {
    async list(): Promise<DiskSummary[]> {
      return Promise.all(
        sortedVbds().map(async (vbd) => {
          const { store, readOnly } = await describeStore(vbd);
          return {
            key: diskKey({ domid: vbd.frontendDomid, devid: vbd.devid }),
            domid: vbd.frontendDomid,
            devid: vbd.devid,
            vdev: vdevName(vbd.devid),
            state: xenbusStateName(vbd.state),
            store,
            size: vbd.device?.info.size ?? 0,
            readOnly,
            ringPages: vbd.ringPages,
            abi: vbd.abi ?? null,
            dataPath: vbd.dataPath,
            grantsKept: vbd.grantsKept,
            inflight: vbd.inflight,
          };
        }),
      );
    },

    async stats(disk?: string): Promise<DiskStatistics[]> {
      const vbds = disk === undefined ? sortedVbds() : [find(disk)];
      return vbds.map((vbd) => {
        const s = vbd.stats;
        return {
          key: diskKey({ domid: vbd.frontendDomid, devid: vbd.devid }),
          vdev: vdevName(vbd.devid),
          oo_req: s.oo_req,
          rd_req: s.rd_req,
          wr_req: s.wr_req,
          f_req: s.f_req,
          ds_req: s.ds_req,
          rd_sect: s.rd_sect,
          wr_sect: s.wr_sect,
          errors: { ...s.errors },
          rings: vbd.servedRings.map((r) => ({ worker: r.worker < 0 ? null : r.worker, viaMainThread: r.proxied })),
          latency_ns: {
            read: summarizeLatency(s.latency.read),
            write: summarizeLatency(s.latency.write),
            flush: summarizeLatency(s.latency.flush),
            discard: summarizeLatency(s.latency.discard),
          },
        };
      });
    },

    async attach(domid: number, spec: string): Promise<AttachResult> {
      const disk = parseXlDiskSpec(spec, 'attach');
      const key = diskKey({ domid, devid: disk.deviceId });
      if (blkback.vbds.has(key)) {
        throw new ControlError('CTL_ERR_BAD_ARGUMENT', `domain ${domid} already has a disk ${disk.vdev} (${key}); detach it first`);
      }
      if (options.checkStore !== undefined) {
        try {
          await options.checkStore({ type: disk.backendtype, params: disk.target, readOnly: disk.access === 'r' });
        } catch (err) {
          if (!(err instanceof BlockError)) throw err;
          throw new ControlError('CTL_ERR_BAD_ARGUMENT', `attach: ${err.message}`, { cause: err, causeCode: err.code });
        }
      }
      const openFailure = (): string | undefined => blkback.vbds.get(key)?.openFailure;
      try {
        await toolstack.attach(domid, disk);
      } catch (err) {
        // xl gives up waiting for a backend that could not open the disk; blkback knows why.
        const why = openFailure();
        if (why === undefined) throw err;
        throw new ControlError('CTL_ERR_FAILED', `attach: blkback cannot open the disk: ${why}`, { cause: err });
      }
      // Picked up, and the store opened (InitWait, or further if the guest was quick), or failed to
      // open (openFailure is set once the backend shows Closed; Closing or Closed without it is the
      // failure still being recorded).
      await settle(
        `${toolstack.name} attached ${disk.vdev} to domain ${domid}, but blkback did not pick up backend/${blkback.backendKind}/${key} ` +
          '(a disk served by another backend, such as backendtype=qdisk under QEMU, does not show up here)',
        () => {
          const vbd = blkback.vbds.get(key);
          return vbd !== undefined && (vbd.openFailure !== undefined || (vbd.state >= XenbusState.InitWait && vbd.state <= XenbusState.Connected));
        },
      );
      const why = openFailure();
      if (why !== undefined) {
        // As libxl does when a device cannot be added: take its entries away again.
        await toolstack.detach(domid, disk.deviceId, disk.vdev).catch(() => undefined);
        throw new ControlError('CTL_ERR_FAILED', `attach: blkback cannot open the disk: ${why}`);
      }
      return { key, domid, devid: disk.deviceId, vdev: disk.vdev };
    },

    async detach(domid: number, vdev: string): Promise<DetachResult> {
      const devid = vdevToDeviceId(vdev);
      const key = diskKey({ domid, devid });
      if (!blkback.vbds.has(key)) throw unknown(`${domid}/${vdev} (${key})`);
      await toolstack.detach(domid, devid, vdev);
      await settle(`${toolstack.name} detached ${vdev} from domain ${domid}, but blkback still serves ${key}`, () => !blkback.vbds.has(key));
      return { key, vdev: vdevName(devid) };
    },

    async resize(disk: string, newSize: number): Promise<ResizeResult> {
      const vbd = find(disk);
      if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % SECTOR !== 0) {
        throw new ControlError('CTL_ERR_BAD_ARGUMENT', `resize: ${newSize} bytes is not a positive whole number of ${SECTOR}-byte sectors`);
      }
      const key = diskKey({ domid: vbd.frontendDomid, devid: vbd.devid });
      const oldSize = vbd.device?.info.size ?? 0;
      try {
        await vbd.resize(newSize);
      } catch (err) {
        if (err instanceof BlockError && err.code === 'BLK_ERR_UNSUPPORTED') {
          throw new ControlError('CTL_ERR_UNSUPPORTED', err.message, { cause: err, causeCode: err.code });
        }
        throw err;
      }
      return { key, vdev: vdevName(vbd.devid), oldSize, newSize: vbd.device?.info.size ?? newSize };
    },
  };
}
