// The simulated hypervisor as the toolstack and dom0 see it, in the main thread: it creates
// domains (guest RAM, grant table and event table, all shared memory), hands their handles to
// guest workers, and gives dom0's backend its grant and event operations. A guest's handles hold
// its own memory, grant table, event table and outbox, and nothing of dom0's or another guest's
// (dom0's event table never leaves this thread: see event-channel.ts).

import { DomainError } from '../errors.ts';
import type { BackendHypervisor, XenstoreClient } from '../types.ts';
import { SimBackendGrants } from './backend-grants.ts';
import { DEFAULT_GRANT_FRAMES, DEFAULT_MAX_EVENT_PORTS, DOM0, GRANT_ENTRIES_PER_FRAME, MAX_MEMORY_BYTES, WASM_PAGE_SIZE } from './constants.ts';
import { Dispatcher } from './dispatcher.ts';
import { SimBackendEvents, closeAllPorts } from './event-channel.ts';
import { OutboxReceiver, evtchnOutboxBytes } from './evtchn-outbox.ts';
import { EvtchnTable, evtchnTableBytes, MAX_VCPUS } from './evtchn-table.ts';
import type { SimDataPlaneSpec, SimDomainDataPlane } from './data-plane.ts';
import { GrantDomain } from './grant-domain.ts';
import { DOMID_MAX, XEN_PAGE_SIZE as PAGE_SIZE } from '../../abi/xen.ts';
import { createSharedMemory } from './wasm-memory.ts';
import type { SharedWasmMemory } from './wasm-memory.ts';

export interface SimHypervisorOptions {
  /** Grant-table frames per domain, 512 entries each (default 64, Xen's max_grant_frames). */
  readonly grantFrames?: number;
  /** Event-channel ports per domain, a multiple of 32 (default 4096, the 2-level ABI's limit). */
  readonly maxEventPorts?: number;
  /**
   * dom0's grant copy refuses buffers allocBuffer did not hand out, as real Xen does (default true;
   * see SimBackendGrantsOptions.strictBuffers).
   */
  readonly strictGrantBuffers?: boolean;
  /**
   * dom0's vCPUs (default 1): the main thread is vCPU 0, and each data-plane worker of blkback one
   * more (data-plane.ts). A worker's event channels are bound to its own vCPU.
   */
  readonly dom0Vcpus?: number;
}

export interface CreateDomainOptions {
  readonly name: string;
  /** Rounded up to whole 64 KiB WebAssembly pages; at most 4 GiB. */
  readonly memoryBytes: number;
}

/** Everything a guest worker needs, as a structured-clonable object for workerData or postMessage. */
export interface GuestDomainHandles {
  readonly domid: number;
  readonly name: string;
  readonly memory: SharedWasmMemory;
  readonly grantTable: SharedArrayBuffer;
  /** The guest's own event table (its pending and mask bits and port states). */
  readonly events: SharedArrayBuffer;
  /** Where its sends go (evtchn-outbox.ts): shared with dom0 only. */
  readonly outbox: SharedArrayBuffer;
  readonly maxEventPorts: number;
  readonly backendDomid: number;
}

export interface SimDomain {
  readonly domid: number;
  readonly name: string;
  readonly memoryBytes: number;
  readonly handles: GuestDomainHandles;
}

interface DomainRecord {
  readonly domain: SimDomain;
  readonly grants: GrantDomain;
  readonly events: EvtchnTable;
  readonly receiver: OutboxReceiver;
  /** What a data-plane worker of dom0 needs of this domain (its memory, tables and dom0's routes). */
  readonly dataPlane: SimDomainDataPlane;
  /** Word 0: 1 while the domain exists; destroyDomain clears it, so dom0's workers see it gone. */
  readonly alive: Int32Array;
}

export class SimHypervisor {
  readonly grantFrames: number;
  readonly maxEventPorts: number;
  readonly #domains = new Map<number, DomainRecord>();
  readonly #dom0Events: EvtchnTable;
  readonly #grants: SimBackendGrants;
  readonly #events: SimBackendEvents;
  readonly #strictBuffers: boolean;
  #nextDomid = 1;

  constructor(options: SimHypervisorOptions = {}) {
    const grantFrames = options.grantFrames ?? DEFAULT_GRANT_FRAMES;
    if (!Number.isInteger(grantFrames) || grantFrames < 1 || grantFrames > 4096) {
      throw new DomainError(`grantFrames ${grantFrames} must be an integer from 1 to 4096`);
    }
    const maxEventPorts = options.maxEventPorts ?? DEFAULT_MAX_EVENT_PORTS;
    if (!Number.isInteger(maxEventPorts) || maxEventPorts < 64 || maxEventPorts > 131072 || maxEventPorts % 32 !== 0) {
      throw new DomainError(`maxEventPorts ${maxEventPorts} must be a multiple of 32 from 64 to 131072`);
    }
    const vcpus = options.dom0Vcpus ?? 1;
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS) throw new DomainError(`dom0Vcpus ${vcpus} must be an integer from 1 to ${MAX_VCPUS}`);
    this.grantFrames = grantFrames;
    this.maxEventPorts = maxEventPorts;
    this.#dom0Events = new EvtchnTable(DOM0, new SharedArrayBuffer(evtchnTableBytes(maxEventPorts, vcpus)), maxEventPorts, vcpus, 0);
    const peers = (domid: number): EvtchnTable | undefined => this.#eventTable(domid);
    const strictBuffers = options.strictGrantBuffers ?? true;
    this.#strictBuffers = strictBuffers;
    this.#grants = new SimBackendGrants(DOM0, (domid) => this.#domains.get(domid)?.grants, { strictBuffers });
    this.#events = new SimBackendEvents(this.#dom0Events, peers, (domid) => this.#domains.get(domid)?.receiver);
  }

  createDomain(options: CreateDomainOptions): SimDomain {
    const { name, memoryBytes } = options;
    if (typeof name !== 'string' || name === '') throw new DomainError('createDomain: a domain needs a name');
    for (const record of this.#domains.values()) {
      if (record.domain.name === name) throw new DomainError(`createDomain: domain name '${name}' is already used by domain ${record.domain.domid}`);
    }
    if (!Number.isSafeInteger(memoryBytes) || memoryBytes < 1) {
      throw new DomainError(`createDomain '${name}': memoryBytes ${memoryBytes} must be a positive integer`);
    }
    if (memoryBytes > MAX_MEMORY_BYTES) {
      throw new DomainError(`createDomain '${name}': memoryBytes ${memoryBytes} exceeds 4 GiB, the most a shared WebAssembly.Memory can hold`);
    }
    if (this.#nextDomid > DOMID_MAX) throw new DomainError('createDomain: no domids left');
    const domid = this.#nextDomid++;
    const wasmPages = Math.ceil(memoryBytes / WASM_PAGE_SIZE);
    const memory = createSharedMemory(wasmPages);
    const grantTable = new SharedArrayBuffer(this.grantFrames * PAGE_SIZE);
    const nrEntries = this.grantFrames * GRANT_ENTRIES_PER_FRAME;
    const active = new SharedArrayBuffer(GrantDomain.activeTableBytes(nrEntries));
    const events = new SharedArrayBuffer(evtchnTableBytes(this.maxEventPorts));
    const outbox = new SharedArrayBuffer(evtchnOutboxBytes(this.maxEventPorts));
    const handles: GuestDomainHandles = {
      domid,
      name,
      memory,
      grantTable,
      events,
      outbox,
      maxEventPorts: this.maxEventPorts,
      backendDomid: DOM0,
    };
    const domain: SimDomain = { domid, name, memoryBytes: wasmPages * WASM_PAGE_SIZE, handles };
    const receiver = new OutboxReceiver(domid, outbox, this.maxEventPorts, this.#dom0Events);
    const alive = new Int32Array(new SharedArrayBuffer(4));
    alive[0] = 1;
    this.#domains.set(domid, {
      domain,
      grants: new GrantDomain(domid, grantTable, active, memory.buffer),
      events: new EvtchnTable(domid, events, this.maxEventPorts),
      receiver,
      dataPlane: {
        domid,
        grantTable,
        active,
        memory: memory.buffer as SharedArrayBuffer,
        events,
        outbox,
        routes: receiver.routes,
        alive: alive.buffer as SharedArrayBuffer,
      },
      alive,
    });
    return domain;
  }

  /**
   * Removes a domain: new grant maps of it fail with GNTST_bad_domain and its event ports close
   * (their peers become unbound). Existing mappings stay valid until unmapped; the guest's worker
   * is the caller's to terminate.
   */
  destroyDomain(domid: number): void {
    const record = this.#domains.get(domid);
    if (record === undefined) throw new DomainError(`destroyDomain: no domain ${domid}`);
    this.#domains.delete(domid);
    Atomics.store(record.alive, 0, 0);
    Dispatcher.for(this.#dom0Events).removeSource(record.receiver);
    closeAllPorts(record.events, (peer) => (peer === domid ? record.events : this.#eventTable(peer)));
  }

  domain(domid: number): SimDomain | undefined {
    return this.#domains.get(domid)?.domain;
  }

  get domains(): SimDomain[] {
    return [...this.#domains.values()].map((record) => record.domain);
  }

  /** dom0's view (main thread). Every call shares the same grant and event state. */
  backend(xenstore: XenstoreClient): BackendHypervisor {
    return { domid: DOM0, grants: this.#grants, events: this.#events, xenstore };
  }

  /** dom0's vCPUs (the main thread is vCPU 0). */
  get dom0Vcpus(): number {
    return this.#dom0Events.vcpus;
  }

  /**
   * How a data-plane worker becomes dom0's vCPU `vcpu` (structured-clonable; data-plane.ts turns it
   * into the worker's grant and event operations). Only dom0's own threads may be given this.
   */
  dataPlaneSpec(vcpu: number): SimDataPlaneSpec {
    if (!Number.isInteger(vcpu) || vcpu < 1 || vcpu >= this.#dom0Events.vcpus) {
      throw new DomainError(`dom0 has no data-plane vCPU ${vcpu} (it has ${this.#dom0Events.vcpus} vCPUs, 0 being the main thread)`);
    }
    return {
      kind: 'sim',
      dom0Events: this.#dom0Events.sab,
      maxEventPorts: this.maxEventPorts,
      vcpus: this.#dom0Events.vcpus,
      vcpu,
      strictGrantBuffers: this.#strictBuffers,
    };
  }

  /** What dom0's data-plane workers need of domain `domid` to map its grants and bind its ports (undefined: no such domain). */
  domainDataPlane(domid: number): SimDomainDataPlane | undefined {
    return this.#domains.get(domid)?.dataPlane;
  }

  #eventTable(domid: number): EvtchnTable | undefined {
    return domid === DOM0 ? this.#dom0Events : this.#domains.get(domid)?.events;
  }
}
