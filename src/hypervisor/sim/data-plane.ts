// dom0's data plane on a thread of its own: what one of blkback's data-plane workers gets of the
// simulated hypervisor. The worker is one of dom0's vCPUs (SimHypervisorOptions.dom0Vcpus): it binds
// event channels on dom0's one port space, and every port it binds is bound to its vCPU
// (EVTCHNOP_bind_vcpu), so their events raise its upcall word alone and its dispatcher scans its
// own selector only (evtchn-table.ts). It maps grants with the same checks as the main thread
// (SimBackendGrants over the guest's grant table and the shared active-pin table, whose entries
// are locked with atomics), and drains the outboxes of the guests it has ports of (dom0's routes
// are shared by dom0's threads, never by a guest).
//
// What it may touch is what the main thread handed it: dom0's event table (it is dom0), and of each
// guest it serves a ring of, the memory, grant table, event table and outbox, plus dom0's routes of
// that outbox and the word saying the domain still exists (SimHypervisor.domainDataPlane). A
// guest's handles never include any of dom0's.
//
// As on real Xen, where each worker opens /dev/xen/evtchn for itself and the kernel refuses to
// notify, unmask or unbind a port through another handle, a worker acts only on ports it bound: the
// channels it holds are the only way to a port, and its dispatcher delivers only ports bound to its
// vCPU.

import { EventChannelError } from '../errors.ts';
import type { BackendEvents, BackendGrants, EventChannel } from '../types.ts';
import { SimBackendGrants } from './backend-grants.ts';
import { DOM0 } from './constants.ts';
import { Dispatcher } from './dispatcher.ts';
import { bindInterdomain } from './event-channel.ts';
import { OutboxReceiver } from './evtchn-outbox.ts';
import { EvtchnTable } from './evtchn-table.ts';
import { GrantDomain } from './grant-domain.ts';

/** How a worker becomes one of dom0's vCPUs (SimHypervisor.dataPlaneSpec); structured-clonable. */
export interface SimDataPlaneSpec {
  readonly kind: 'sim';
  readonly dom0Events: SharedArrayBuffer;
  readonly maxEventPorts: number;
  readonly vcpus: number;
  readonly vcpu: number;
  readonly strictGrantBuffers: boolean;
}

/** What a worker needs of one guest (SimHypervisor.domainDataPlane); structured-clonable. */
export interface SimDomainDataPlane {
  readonly domid: number;
  readonly grantTable: SharedArrayBuffer;
  /** The active-pin table every mapper of this guest's grants shares (grant-domain.ts). */
  readonly active: SharedArrayBuffer;
  readonly memory: SharedArrayBuffer;
  readonly events: SharedArrayBuffer;
  readonly outbox: SharedArrayBuffer;
  /** dom0's routes of the guest's outbox (evtchn-outbox.ts). */
  readonly routes: SharedArrayBuffer;
  /** One i32: 1 while the domain exists. */
  readonly alive: SharedArrayBuffer;
}

interface DomainState {
  readonly grants: GrantDomain;
  readonly events: EvtchnTable;
  readonly receiver: OutboxReceiver;
  readonly alive: Int32Array;
  /** Rings (users) of this worker that hold the domain. */
  users: number;
  /** Ports this worker has bound to the domain: while any, its dispatcher waits on the outbox. */
  ports: number;
}

class WorkerEventChannel implements EventChannel {
  readonly localPort: number;
  readonly #inner: EventChannel;
  #onClose: (() => void) | undefined;

  constructor(inner: EventChannel, onClose: () => void) {
    this.localPort = inner.localPort;
    this.#inner = inner;
    this.#onClose = onClose;
  }

  notify(): void {
    this.#inner.notify();
  }

  onEvent(handler: () => void): void {
    this.#inner.onEvent(handler);
  }

  mask(): void {
    this.#inner.mask();
  }

  unmask(): void {
    this.#inner.unmask();
  }

  close(): void {
    const done = this.#onClose;
    if (done === undefined) return;
    this.#onClose = undefined;
    this.#inner.close();
    done();
  }
}

/** dom0's grant and event operations on a data-plane worker (the worker's own "handles"). */
export class SimDataPlane {
  readonly domid = DOM0;
  readonly vcpu: number;
  readonly grants: BackendGrants;
  readonly events: BackendEvents;
  readonly #table: EvtchnTable;
  readonly #domains = new Map<number, DomainState>();
  readonly #spec: SimDataPlaneSpec;

  constructor(spec: SimDataPlaneSpec) {
    this.#spec = spec;
    this.vcpu = spec.vcpu;
    this.#table = new EvtchnTable(DOM0, spec.dom0Events, spec.maxEventPorts, spec.vcpus, spec.vcpu);
    this.grants = new SimBackendGrants(DOM0, (domid) => this.#live(domid)?.grants, { strictBuffers: spec.strictGrantBuffers });
    this.events = { bindInterdomain: (remoteDomid, remotePort) => this.#bind(remoteDomid, remotePort) };
  }

  /** Holds a guest's handles for a ring of it (counted: dropDomain once per addDomain). */
  addDomain(handles: SimDomainDataPlane): void {
    const known = this.#domains.get(handles.domid);
    if (known !== undefined) {
      known.users++;
      return;
    }
    const ports = this.#spec.maxEventPorts;
    this.#domains.set(handles.domid, {
      grants: new GrantDomain(handles.domid, handles.grantTable, handles.active, handles.memory),
      events: new EvtchnTable(handles.domid, handles.events, ports),
      receiver: new OutboxReceiver(handles.domid, handles.outbox, ports, this.#table, handles.routes),
      alive: new Int32Array(handles.alive),
      users: 1,
      ports: 0,
    });
  }

  /** A ring of the guest let go (its mapping and port closed first); the last lets go of the guest's memory. */
  dropDomain(domid: number): void {
    const state = this.#domains.get(domid);
    if (state === undefined) return;
    if (--state.users > 0) return;
    if (state.ports > 0) return; // its last port's close drops it
    this.#domains.delete(domid);
  }

  /** The domain, while it exists: a destroyed guest's grants fail with GNTST_bad_domain, as on the main thread. */
  #live(domid: number): DomainState | undefined {
    const state = this.#domains.get(domid);
    return state !== undefined && Atomics.load(state.alive, 0) === 1 ? state : undefined;
  }

  #bind(remoteDomid: number, remotePort: number): EventChannel {
    const state = this.#live(remoteDomid);
    if (state === undefined) {
      throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: no such domain`);
    }
    const peers = (domid: number): EvtchnTable | undefined => (domid === DOM0 ? this.#table : this.#domains.get(domid)?.events);
    const receivers = (domid: number): OutboxReceiver | undefined => this.#domains.get(domid)?.receiver;
    // reservePort binds the new port to this thread's vCPU before it can be made pending.
    const inner = bindInterdomain(this.#table, state.events, remoteDomid, remotePort, peers, receivers);
    state.ports++;
    return new WorkerEventChannel(inner, () => {
      if (--state.ports > 0) return;
      // No port of ours names this guest any more: stop waiting on its outbox.
      Dispatcher.for(this.#table).removeSource(state.receiver);
      if (state.users === 0) this.#domains.delete(remoteDomid);
    });
  }
}
