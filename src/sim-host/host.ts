// A simulated Xen host: a xenstore daemon, the hypervisor, dom0's xenstore connection and our
// blkback, plus the toolstack's part of creating a guest (what `xl create` and libxl write into
// xenstore, protocol-notes §2) with the guest itself running as a worker thread.
import { MessageChannel, Worker } from 'node:worker_threads';
import { Blkback } from '../blkback/blkback.ts';
import type { BlkbackOptions } from '../blkback/blkback.ts';
import type { DataPath } from '../blkback/ring-server.ts';
import { vdevToDeviceId } from '../config/xl-disk.ts';
import type { BlockDevice } from '../block/types.ts';
import type { PathPolicy } from '../stores/path-policy.ts';
import type { DeviceOpener } from '../blkback/vbd.ts';
import { SimHypervisor } from '../hypervisor/sim/hypervisor.ts';
import { simDataPlaneProvider } from '../blkback/workers/data-plane.ts';
import type { BackendHypervisor } from '../hypervisor/types.ts';
import { BlockError } from '../internal/errors.ts';
import { XenstoreDaemon } from '../xenstore/daemon.ts';
import { connectInProcess } from '../xenstore/client.ts';
import type { XsClient } from '../xenstore/client.ts';
import type { GuestMessage, GuestWorkerData } from '../guest/context.ts';
import { backendGuestDir, DEFAULT_BACKEND_KIND, domainDir, DomainKey, DOM0, errorGuestDir } from '../xenbus/device-paths.ts';
import { removeDiskEntries, writeDiskEntries } from './disk-entries.ts';
import { StoreRegistry } from './stores.ts';

export interface GuestDisk {
  /** What `params` says: a path, a store spec (ram:1G) or a registered store name. */
  readonly target: string;
  readonly vdev: string;
  readonly readOnly: boolean;
  /** phy: direct I/O (kernel blkback analog); qdisk: page cache (QEMU qdisk analog). */
  readonly backendtype: 'phy' | 'qdisk';
}

export interface GuestConfig {
  readonly name: string;
  readonly memoryMiB: number;
  /** The guest's vCPUs (xl's vcpus): its blkfront asks for this many queues per disk (default 1). */
  readonly vcpus?: number;
  readonly disks: readonly GuestDisk[];
}

export interface GuestRun {
  /** URL of the workload module (default export: GuestWorkload). */
  readonly workload: string | URL;
  readonly params?: unknown;
  readonly front?: GuestWorkerData['front'];
  readonly onReport?: (message: unknown) => void;
}

export interface HostOptions {
  /** --map PATH=SPEC: targets served from the stores the user named. */
  readonly maps?: ReadonlyMap<string, string>;
  /**
   * Which host paths a disk may name when nobody here vouched for it: one hot-plugged through the
   * control socket (ctl attach) or written into the xenstore by another client. The guests' own
   * disks (createGuest) and mapped targets are the caller's words and are opened as written.
   * Default: block devices under /dev, no regular file.
   */
  readonly policy?: PathPolicy;
  readonly xenstoreSocket?: string;
  readonly maxRingPageOrder?: number;
  /** multi-queue-max-queues blkback advertises (default: the CPU count, as Linux; 1: one ring per disk). */
  readonly maxQueues?: number;
  readonly maxInflight?: number;
  readonly maxIndirectSegments?: number;
  readonly dataPath?: DataPath;
  /**
   * The backend directory the host's blkback owns and its toolstack writes disks under (default
   * "vbd"), as `blkback serve --backend-kind` on real Xen.
   */
  readonly backendKind?: string;
  /**
   * blkback's data-plane worker threads (BlkbackOptions.workers; default 0, the main thread serves
   * every ring). Each worker is one more vCPU of the simulated dom0.
   */
  readonly workers?: number;
  /** With workers: which worker serves a ring (BlkbackOptions.placeRing; default the least loaded). */
  readonly placeRing?: BlkbackOptions['placeRing'];
  /** Wraps what blkback gets of the hypervisor (a benchmark counting grant and event-channel calls). */
  readonly instrumentBackend?: (hv: BackendHypervisor) => BackendHypervisor;
  readonly log?: (line: string) => void;
}

export class GuestHandle {
  readonly domid: number;
  readonly name: string;
  readonly worker: Worker;
  readonly result: Promise<unknown>;

  constructor(domid: number, name: string, worker: Worker, result: Promise<unknown>) {
    this.domid = domid;
    this.name = name;
    this.worker = worker;
    this.result = result;
  }
}

export class SimHost {
  readonly daemon: XenstoreDaemon;
  readonly hypervisor: SimHypervisor;
  readonly xs: XsClient;
  readonly blkback: Blkback;
  readonly stores: StoreRegistry;
  /** Where this host's disks go: backend/<backendKind> (the directory blkback serves). */
  readonly backendKind: string;
  readonly #guests = new Map<number, GuestHandle>();
  /** Boot disks of guests being created that blkback has not opened yet, and how to fail their guest. */
  readonly #booting = new Map<number, BootDisks>();
  readonly #log: (line: string) => void;

  private constructor(options: HostOptions) {
    this.#log = options.log ?? (() => undefined);
    this.daemon = new XenstoreDaemon();
    const workers = options.workers ?? 0;
    this.hypervisor = new SimHypervisor(workers > 0 ? { dom0Vcpus: workers + 1 } : {});
    this.xs = connectInProcess(this.daemon, 0);
    this.stores = new StoreRegistry(options.maps, options.policy === undefined ? {} : { policy: options.policy });
    this.backendKind = options.backendKind ?? DEFAULT_BACKEND_KIND;
    const blkbackOptions = {
      open: this.#open,
      log: this.#log,
      ...(options.maxRingPageOrder === undefined ? {} : { maxRingPageOrder: options.maxRingPageOrder }),
      ...(options.maxQueues === undefined ? {} : { maxQueues: options.maxQueues }),
      ...(options.maxInflight === undefined ? {} : { maxInflight: options.maxInflight }),
      ...(options.maxIndirectSegments === undefined ? {} : { maxIndirectSegments: options.maxIndirectSegments }),
      ...(options.dataPath === undefined ? {} : { dataPath: options.dataPath }),
      ...(workers > 0 ? { workers, dataPlane: simDataPlaneProvider(this.hypervisor) } : {}),
      ...(options.placeRing === undefined ? {} : { placeRing: options.placeRing }),
      backendKind: this.backendKind,
    };
    const backend = this.hypervisor.backend(this.xs);
    this.blkback = new Blkback(options.instrumentBackend?.(backend) ?? backend, blkbackOptions);
  }

  static async start(options: HostOptions = {}): Promise<SimHost> {
    const host = new SimHost(options);
    if (options.xenstoreSocket !== undefined) await host.daemon.listenUnix(options.xenstoreSocket);
    await host.xs.write(`${domainDir(DOM0)}/${DomainKey.name}`, 'Domain-0');
    await host.xs.write(`${domainDir(DOM0)}/${DomainKey.domid}`, String(DOM0));
    await host.blkback.start();
    return host;
  }

  registerStore(name: string, device: BlockDevice): void {
    this.stores.register(name, device);
  }

  /**
   * blkback's opener. A boot disk blkback cannot open (a target that does not exist here, one the
   * path policy refuses) would leave the guest's blkfront waiting for InitWait until its timeout:
   * the toolstack knows at once, so the guest ends at once, with the cause.
   */
  readonly #open: DeviceOpener = async (request) => {
    const boot = this.#booting.get(request.frontendDomid);
    const vdev = boot?.disks.get(request.devid);
    try {
      const opened = await this.stores.open(request);
      if (vdev !== undefined) boot!.disks.delete(request.devid);
      return opened;
    } catch (err) {
      if (boot !== undefined && vdev !== undefined) {
        boot.disks.delete(request.devid);
        boot.fail(
          new BlockError(
            'BLK_ERR_GUEST',
            `guest ${boot.name} (domain ${request.frontendDomid}): disk ${vdev}: ${err instanceof Error ? err.message : String(err)}`,
            { cause: err },
          ),
        );
      }
      throw err;
    }
  };

  async createGuest(config: GuestConfig, run: GuestRun): Promise<GuestHandle> {
    const disks = config.disks.map((d) => ({ ...d, devid: vdevToDeviceId(d.vdev) }));
    const seen = new Set<number>();
    for (const d of disks) {
      if (seen.has(d.devid)) throw new BlockError('BLK_ERR_CONFIG', `guest ${config.name}: vdev ${d.vdev} given twice`);
      seen.add(d.devid);
    }
    const domain = this.hypervisor.createDomain({ name: config.name, memoryBytes: config.memoryMiB * 1024 * 1024 });
    const id = domain.domid;
    // The guest's disks are named by whoever creates it (a config on our command line): its own words.
    for (const d of disks) this.stores.trust(d.target);
    // Until the guest's promise exists, a failure to open a boot disk is kept for it.
    let early: BlockError | undefined;
    const boot: BootDisks = { name: config.name, disks: new Map(disks.map((d) => [d.devid, d.vdev])), fail: (err) => (early ??= err) };
    this.#booting.set(id, boot);
    const xs = this.xs;
    const dom = domainDir(id);
    await xs.transaction(async (tx) => {
      // libxl: the domain's directory is dom0's, readable by the guest; device/ is the guest's own.
      await xs.write(`${dom}/${DomainKey.name}`, config.name, tx);
      await xs.write(`${dom}/${DomainKey.domid}`, String(id), tx);
      await xs.setPerms(
        dom,
        [
          { domid: DOM0, perm: 'n' },
          { domid: id, perm: 'r' },
        ],
        tx,
      );
      await xs.mkdir(`${dom}/${DomainKey.device}`, tx);
      await xs.setPerms(`${dom}/${DomainKey.device}`, [{ domid: id, perm: 'n' }], tx);
      await xs.mkdir(`${dom}/${DomainKey.data}`, tx);
      await xs.setPerms(`${dom}/${DomainKey.data}`, [{ domid: id, perm: 'n' }], tx);
      for (const d of disks) await this.#writeDiskEntries(tx, id, d, d.devid);
    });

    const { port1, port2 } = new MessageChannel();
    this.daemon.connectPort(id, port1);
    const data: GuestWorkerData = {
      domid: id,
      name: config.name,
      handles: domain.handles,
      xenstorePort: port2,
      disks: disks.map((d) => ({ vdev: d.vdev, devid: d.devid })),
      workload: String(run.workload),
      params: run.params,
      // Linux blkfront asks for one queue per vCPU (its max_queues is capped by the CPU count); an
      // explicit front.queues overrides what the config's vcpus implies.
      front: { queues: config.vcpus ?? 1, ...run.front },
    };
    const worker = new Worker(new URL('../guest/worker.js', import.meta.url), { workerData: data, transferList: [port2] });
    const result = new Promise<unknown>((resolve, reject) => {
      let settled = false;
      boot.fail = (err) => {
        if (settled) return;
        settled = true;
        reject(err);
        void worker.terminate();
      };
      if (early !== undefined) boot.fail(early);
      worker.on('message', (m: GuestMessage) => {
        if (m.type === 'report') run.onReport?.(m.message);
        else if (m.type === 'result') {
          settled = true;
          resolve(m.result);
        } else if (m.type === 'error') {
          settled = true;
          reject(new BlockError('BLK_ERR_GUEST', `guest ${config.name} (domain ${id}): ${m.message}`));
        }
      });
      worker.on('error', (err) => {
        settled = true;
        reject(new BlockError('BLK_ERR_GUEST', `guest ${config.name} (domain ${id}) crashed: ${err.message}`, { cause: err }));
      });
      worker.on('exit', (code) => {
        if (!settled) reject(new BlockError('BLK_ERR_GUEST', `guest ${config.name} (domain ${id}) exited with code ${code} before finishing`));
      });
    });
    const handle = new GuestHandle(id, config.name, worker, result);
    this.#guests.set(id, handle);
    // Whatever the outcome, the toolstack destroys the domain once its worker is gone.
    worker.once('exit', () => void this.destroyGuest(id));
    this.#log(`created guest ${config.name} as domain ${id} with ${disks.map((d) => d.vdev).join(', ') || 'no disks'}`);
    return handle;
  }

  /**
   * xl block-attach: add a disk to a running domain (backend and frontend entries). The guest's
   * worker is not told; code in the guest connects it itself (Blkfront.connect with the device id).
   */
  async attachDisk(domid: number, disk: GuestDisk): Promise<number> {
    const devid = vdevToDeviceId(disk.vdev);
    await this.xs.transaction((tx) => this.#writeDiskEntries(tx, domid, disk, devid));
    return devid;
  }

  /** xl block-detach, as libxl does it (disk-entries.ts removeDiskEntries). Resolves with whether it had to force. */
  async detachDisk(domid: number, devid: number, timeoutMs = 10_000): Promise<{ forced: boolean }> {
    return removeDiskEntries(this.xs, this.backendKind, domid, devid, { timeoutMs, log: this.#log });
  }

  /** xl destroy: stop the worker, remove its xenstore entries (blkback tears its devices down), free the domain. */
  async destroyGuest(domid: number): Promise<void> {
    const handle = this.#guests.get(domid);
    if (handle === undefined) return;
    this.#guests.delete(domid);
    this.#booting.delete(domid);
    await handle.worker.terminate();
    await this.xs.rm(backendGuestDir(this.backendKind, domid)).catch(() => undefined);
    await this.xs.rm(errorGuestDir(this.backendKind, domid)).catch(() => undefined);
    await this.xs.rm(domainDir(domid)).catch(() => undefined);
    this.hypervisor.destroyDomain(domid);
  }

  /** What libxl writes for one disk (protocol-notes §2), under backend/<backendKind>. */
  #writeDiskEntries(tx: number, domid: number, d: GuestDisk, devid: number): Promise<void> {
    return writeDiskEntries(this.xs, tx, { kind: this.backendKind, domid, devid, vdev: d.vdev, target: d.target, type: d.backendtype, readOnly: d.readOnly });
  }

  async stop(): Promise<void> {
    for (const id of [...this.#guests.keys()]) await this.destroyGuest(id);
    await this.blkback.stop();
    await this.stores.close();
    this.xs.close();
    await this.daemon.close();
  }
}

interface BootDisks {
  readonly name: string;
  /** devid -> vdev of the disks blkback has yet to open. */
  readonly disks: Map<number, string>;
  fail: (err: BlockError) => void;
}
