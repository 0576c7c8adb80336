// How a data-plane worker gets a hypervisor handle of its own. The control plane (xenstore, the
// handshake, ctl) stays on the main thread; a worker needs only grant and event-channel operations,
// and it must own them: the mappings of its rings and their event channels are made and closed on
// its thread, through its own handles.
//
//   simulator   the worker is one of dom0's vCPUs over the same shared tables
//               (hypervisor/sim/data-plane.ts); each guest it serves a ring of is added with what
//               the hypervisor hands dom0's threads of it (its memory, grant and event tables)
//   real Xen    the worker opens /dev/xen/gntdev and /dev/xen/evtchn itself (koffi works in worker
//               threads): the kernel then delivers, notifies and unbinds only ports bound through
//               that handle, and the grant mappings are the worker's own address space's anyway
//
// The main thread describes the handle (DataPlaneProvider, structured-clonable specs); the worker
// opens it (openWorkerHypervisor).

import type { SimHypervisor } from '../../hypervisor/sim/hypervisor.ts';
import type { SimDataPlaneSpec, SimDomainDataPlane } from '../../hypervisor/sim/data-plane.ts';
import type { BackendEvents, BackendGrants } from '../../hypervisor/types.ts';
import type { KoffiDevicesOptions } from '../../hypervisor/xen/koffi-devices.ts';

export interface XenDataPlaneSpec {
  readonly kind: 'xen';
  /** How the worker opens the devices (koffi-devices.ts; default the real ones and Xen's libraries). */
  readonly devices?: KoffiDevicesOptions;
}

export type DataPlaneSpec = SimDataPlaneSpec | XenDataPlaneSpec;

/** The main thread's side: what to hand a worker so it can open its own handle. */
export interface DataPlaneProvider {
  /** How many data-plane workers this hypervisor can have (the simulator's dom0 vCPUs less the main thread's). */
  readonly maxWorkers: number;
  /** The handle spec of worker `index` (0-based). */
  spec(index: number): DataPlaneSpec;
  /** What a worker needs of domain `domid` to serve a ring of it (null: nothing, real Xen). Throws for an unknown domain. */
  domain(domid: number): SimDomainDataPlane | null;
}

/** The worker's side: its grant and event operations, and the domains it holds. */
export interface WorkerHypervisor {
  readonly grants: BackendGrants;
  readonly events: BackendEvents;
  /** A ring of this domain is served here from now on (counted). */
  addDomain(handles: SimDomainDataPlane | null, domid: number): void;
  /** ...no longer (once its mapping is unmapped and its channel closed). */
  dropDomain(domid: number): void;
  close(): Promise<void>;
}

/** The simulator's provider: worker k is dom0's vCPU k + 1. */
export function simDataPlaneProvider(hv: SimHypervisor): DataPlaneProvider {
  return {
    maxWorkers: hv.dom0Vcpus - 1,
    spec: (index) => hv.dataPlaneSpec(index + 1),
    domain: (domid) => {
      const handles = hv.domainDataPlane(domid);
      if (handles === undefined) throw new Error(`domain ${domid} does not exist (destroyed?)`);
      return handles;
    },
  };
}

/** Real Xen's provider: every worker opens the devices itself; nothing per domain. */
export function xenDataPlaneProvider(spec: Omit<XenDataPlaneSpec, 'kind'> = {}): DataPlaneProvider {
  return {
    maxWorkers: Number.POSITIVE_INFINITY,
    spec: () => ({ kind: 'xen', ...spec }),
    domain: () => null,
  };
}

/** Opens the worker's own handle (in the worker). */
export async function openWorkerHypervisor(spec: DataPlaneSpec): Promise<WorkerHypervisor> {
  if (spec.kind === 'sim') {
    const { SimDataPlane } = await import('../../hypervisor/sim/data-plane.ts');
    const plane = new SimDataPlane(spec);
    return {
      grants: plane.grants,
      events: plane.events,
      addDomain: (handles, domid) => {
        if (handles === null) throw new Error(`the simulator's worker needs domain ${domid}'s handles`);
        plane.addDomain(handles);
      },
      dropDomain: (domid) => plane.dropDomain(domid),
      close: async () => undefined,
    };
  }
  // Loaded only here: the FFI binding is no business of a simulated backend.
  const { openKoffiDevices } = await import('../../hypervisor/xen/koffi-devices.ts');
  const { XenBackendGrants, XenBackendEvents } = await import('../../hypervisor/xen/index.ts');
  const devices = openKoffiDevices(spec.devices ?? {});
  return {
    grants: new XenBackendGrants(devices),
    events: new XenBackendEvents(devices),
    addDomain: () => undefined,
    dropDomain: () => undefined,
    close: () => devices.close(),
  };
}
