// A data-plane worker of blkback: serves the rings the main thread hands it (WorkerRingHost). For
// each ring it opens the store (its own descriptor or view, shared-store.ts, else a proxy through
// the main thread), maps the ring and binds its event channel through its own hypervisor handle
// (data-plane.ts), and runs a RingServer, exactly the one the main thread runs with `workers: 0`.
// Its statistics go to the ring's block in shared memory, requests in flight to the backend's
// shared budget, service to the shared fair-share accounts.
//
// Everything the guest wrote is handled here: a hostile frontend meets the same validation, the
// same copy-once rules and the same grant checks as on the main thread.
import { readlinkSync } from 'node:fs';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { SharedRing } from '../../blkif/ring.ts';
import { openSharedStore } from '../../block/shared-store.ts';
import type { SharedRamView } from '../../block/shared-store.ts';
import type { BlockDevice, BlockDeviceInfo } from '../../block/types.ts';
import type { EventChannel, GrantMapping } from '../../hypervisor/types.ts';
import { RateLimitedLog } from '../../stats/rate-limited-log.ts';
import { FairShare, FairShareTable } from '../fair-share.ts';
import { RingServer } from '../ring-server.ts';
import { VbdStats } from '../stats.ts';
import { openWorkerHypervisor } from './data-plane.ts';
import type { WorkerHypervisor } from './data-plane.ts';
import { ProxyRequests, wireError } from './device-proxy.ts';
import type { ProxyDevice } from './device-proxy.ts';
import type { AttachRequest, DeviceRef, FromWorker, ToWorker, WorkerInit } from './protocol.ts';
import { RingBudget } from './ring-host.ts';
import { SharedInflightBudget } from './shared-budget.ts';

/** How often kept persistent grants are published to the rings' statistics blocks. */
const PUBLISH_MS = 250;

interface Ring {
  readonly server: RingServer;
  readonly mapping: GrantMapping;
  readonly events: EventChannel;
  readonly device: BlockDevice;
  /** The worker opened the store itself (not a proxy): it closes it. */
  readonly own: boolean;
  readonly domid: number;
  readonly stats: VbdStats;
}

/**
 * A store this worker opened for itself, described as the main thread's copy last was: a resize
 * happens there (ctl resize), and the ring's checks must see the new size here at once. A RAM view
 * also takes the new chunks.
 */
class TrackedDevice implements BlockDevice {
  readonly name: string;
  readonly #inner: BlockDevice;
  #info: BlockDeviceInfo;

  constructor(inner: BlockDevice, info: BlockDeviceInfo) {
    this.#inner = inner;
    this.name = inner.name;
    this.#info = info;
  }

  get info(): BlockDeviceInfo {
    return this.#info;
  }

  update(ref: Extract<DeviceRef, { kind: 'shared' }>): void {
    if (ref.spec.kind === 'ram') (this.#inner as SharedRamView).update(ref.spec);
    this.#info = ref.info;
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return this.#inner.readv(offset, iov);
  }

  writev(offset: number, iov: readonly Uint8Array[], flags?: number): Promise<void> {
    return this.#inner.writev(offset, iov, flags);
  }

  flush(): Promise<void> {
    return this.#inner.flush();
  }

  discard(offset: number, length: number): Promise<void> {
    return this.#inner.discard(offset, length);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#inner.writeZeroes(offset, length);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

const init = workerData as WorkerInit;
const port = parentPort!;
const post = (message: FromWorker): void => port.postMessage(message);

/** A full collection, where the process runs with --expose-gc (set by a test through v8.setFlagsFromString). */
function collect(): void {
  try {
    const gc = runInNewContext('typeof gc === "function" ? gc : undefined') as (() => void) | undefined;
    gc?.();
  } catch {
    // no gc here: the figure includes garbage
  }
}

function threadId(): number {
  try {
    return Number(readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return -1;
  }
}

async function main(): Promise<void> {
  const hv: WorkerHypervisor = await openWorkerHypervisor(init.hypervisor);
  const budget = new SharedInflightBudget(init.maxInflight, init.budget);
  const fairShare = new FairShare(init.quantum, new FairShareTable(init.fairShare));
  const proxies = new ProxyRequests(post);
  const rings = new Map<number, Ring>();
  // A hostile guest can make a ring log on every request: the main thread limits what is logged,
  // this keeps what is posted to it bounded as well.
  const errors = new RateLimitedLog((line) => post({ t: 'log', line, error: true }), 20, 5000);
  const logError = (message: string): void => errors.log(message);

  const publish = setInterval(() => {
    for (const r of rings.values()) r.stats.grantsKept = r.server.persistentGrants;
  }, PUBLISH_MS);
  publish.unref();

  const openDevice = async (ref: DeviceRef): Promise<{ device: BlockDevice; own: boolean }> => {
    if (ref.kind === 'proxy') return { device: proxies.device(ref.dev, ref.name, ref.info), own: false };
    return { device: new TrackedDevice(await openSharedStore(ref.spec), ref.info), own: true };
  };

  const attach = async (m: AttachRequest): Promise<void> => {
    const { device, own } = await openDevice(m.device);
    hv.addDomain(m.domain, m.frontendDomid);
    let mapping: GrantMapping | undefined;
    let events: EventChannel | undefined;
    try {
      mapping = hv.grants.map(m.frontendDomid, m.refs, m.refs.length, true);
      events = hv.events.bindInterdomain(m.frontendDomid, m.port);
      const stats = new VbdStats(m.stats);
      stats.worker = init.index;
      const server = new RingServer({
        ring: new SharedRing(mapping.pages, m.abi),
        abi: m.abi,
        frontendDomid: m.frontendDomid,
        grants: hv.grants,
        events,
        device,
        readOnly: m.readOnly,
        discard: m.discard,
        maxIndirectSegments: m.maxIndirectSegments,
        dataPath: m.dataPath,
        stats,
        budget: new RingBudget(budget, stats),
        fairShare,
        name: m.name,
        logError,
      });
      rings.set(m.id, { server, mapping, events, device, own, domid: m.frontendDomid, stats });
    } catch (err) {
      events?.close();
      mapping?.unmap();
      hv.dropDomain(m.frontendDomid);
      if (own) await device.close().catch(() => undefined);
      throw err;
    }
  };

  const stop = async (id: number): Promise<void> => {
    const r = rings.get(id);
    if (r === undefined) return;
    rings.delete(id);
    await r.server.stop();
    r.stats.grantsKept = 0;
    r.events.close();
    r.mapping.unmap();
    hv.dropDomain(r.domid);
    if (r.own) await r.device.close().catch(() => undefined);
  };

  const deviceChanged = (ids: readonly number[], ref: DeviceRef): void => {
    for (const id of ids) {
      const device = rings.get(id)?.device;
      if (device === undefined) continue;
      if (ref.kind === 'proxy') (device as ProxyDevice).update(ref.info);
      else (device as TrackedDevice).update(ref);
    }
  };

  port.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'attach':
        attach(m).then(
          () => post({ t: 'attached', id: m.id }),
          (err: unknown) => post({ t: 'attach-failed', id: m.id, error: wireError(err) }),
        );
        return;
      case 'kick':
        rings.get(m.id)?.server.kick();
        return;
      case 'stop':
        stop(m.id).then(
          () => post({ t: 'stopped', id: m.id }),
          (err: unknown) => {
            logError(`stopping ring ${m.id}: ${err instanceof Error ? err.message : String(err)}`);
            post({ t: 'stopped', id: m.id });
          },
        );
        return;
      case 'device':
        deviceChanged(m.ids, m.device);
        post({ t: 'device-done', req: m.req });
        return;
      case 'io-done':
        proxies.done(m.req, m.error);
        return;
      case 'memory': {
        collect();
        const usage = process.memoryUsage();
        post({ t: 'memory', req: m.req, bytes: usage.heapUsed + usage.external });
        return;
      }
      case 'close':
        void (async () => {
          for (const id of [...rings.keys()]) await stop(id).catch(() => undefined);
          proxies.failAll('the backend is stopping');
          clearInterval(publish);
          await hv.close();
          post({ t: 'closed' });
          port.close();
        })();
        return;
    }
  });
  post({ t: 'ready', tid: threadId() });
}

main().catch((err: unknown) => {
  // Nothing can be served without the handle: say why, and let the main thread see the exit.
  post({ t: 'log', line: `data-plane worker ${init.index}: ${err instanceof Error ? err.message : String(err)}`, error: true });
  process.exit(1);
});
