// Event-channel operations on the shared tables (EVTCHNOP_alloc_unbound, bind_interdomain, send,
// close, unmask) and the EventChannel object a thread holds for one of its ports.

import { EventChannelError } from '../errors.ts';
import { DOMID_SELF } from '../types.ts';
import type { BackendEvents, EventChannel, GuestEvents } from '../types.ts';
import { ECS_FREE, ECS_INTERDOMAIN, ECS_RESERVED, ECS_UNBOUND } from './constants.ts';
import { Dispatcher } from './dispatcher.ts';
import { portKind, portRemoteDomid, portState } from './evtchn-table.ts';
import type { EvtchnTable } from './evtchn-table.ts';

/** Finds another domain's event table (undefined once it is destroyed or unknown to this thread). */
export type PeerLookup = (domid: number) => EvtchnTable | undefined;

/** Bounded spin while a port sits in ECS_RESERVED because another thread is half-way through binding it. */
const RESERVED_SPIN_LIMIT = 10_000_000;

function describeState(state: number): string {
  switch (portKind(state)) {
    case ECS_FREE:
      return 'it is closed';
    case ECS_RESERVED:
      return 'it is being bound';
    case ECS_UNBOUND:
      return `it is unbound for domain ${portRemoteDomid(state)}`;
    case ECS_INTERDOMAIN:
      return `it is already bound to domain ${portRemoteDomid(state)}`;
    default:
      return `its state is 0x${state.toString(16)}`;
  }
}

export class SimEventChannel implements EventChannel {
  readonly localPort: number;
  readonly #table: EvtchnTable;
  readonly #dispatcher: Dispatcher;
  readonly #peers: PeerLookup;
  #peerDomid = -1;
  #peer: EvtchnTable | undefined;
  #closed = false;

  constructor(table: EvtchnTable, port: number, peers: PeerLookup) {
    this.localPort = port;
    this.#table = table;
    this.#peers = peers;
    this.#dispatcher = Dispatcher.for(table);
    this.#dispatcher.portOpened();
  }

  notify(): void {
    if (this.#closed) return;
    const table = this.#table;
    const state = table.state(this.localPort);
    if (portKind(state) !== ECS_INTERDOMAIN) return; // unbound or closed by the peer: dropped, as Xen does
    const domid = portRemoteDomid(state);
    let peer = this.#peer;
    if (domid !== this.#peerDomid) {
      peer = this.#peers(domid);
      this.#peer = peer;
      this.#peerDomid = domid;
    }
    if (peer !== undefined) peer.setPending(table.remotePort(this.localPort));
  }

  onEvent(handler: () => void): void {
    if (this.#closed) throw new EventChannelError(this.#table.domid, this.localPort, `event channel port ${this.localPort} of domain ${this.#table.domid} is closed`);
    this.#dispatcher.setHandler(this.localPort, handler);
  }

  mask(): void {
    if (!this.#closed) this.#table.mask(this.localPort);
  }

  unmask(): void {
    if (!this.#closed) this.#table.unmask(this.localPort);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closePort(this.#table, this.localPort, this.#peers);
    this.#dispatcher.portClosed(this.localPort);
  }
}

/** EVTCHNOP_close: an interdomain peer goes back to unbound (for us), then our port is freed. */
export function closePort(table: EvtchnTable, port: number, peers: PeerLookup): void {
  for (let spins = 0; ; spins++) {
    const state = table.state(port);
    const kind = portKind(state);
    if (kind === ECS_FREE) return;
    if (kind === ECS_RESERVED) {
      if (spins < RESERVED_SPIN_LIMIT) continue;
      break; // the binding thread died half-way: take the port back anyway
    }
    if (kind === ECS_INTERDOMAIN) {
      const peer = peers(portRemoteDomid(state));
      const remotePort = table.remotePort(port);
      if (peer !== undefined && peer.remotePort(remotePort) === port) {
        peer.casState(remotePort, portState(ECS_INTERDOMAIN, table.domid), portState(ECS_UNBOUND, table.domid));
      }
    }
    if (table.casState(port, state, ECS_RESERVED)) break;
  }
  table.freePort(port);
}

/** EVTCHNOP_alloc_unbound in `table`'s domain for `remoteDomid`. */
export function allocUnbound(table: EvtchnTable, remoteDomid: number, peers: PeerLookup): SimEventChannel {
  if (remoteDomid === DOMID_SELF) remoteDomid = table.domid;
  if (!Number.isInteger(remoteDomid) || remoteDomid < 0 || remoteDomid > 0xffff) {
    throw new EventChannelError(table.domid, -1, `allocUnbound: ${remoteDomid} is not a domid`);
  }
  const port = table.reservePort();
  if (port < 0) throw new EventChannelError(table.domid, -1, `domain ${table.domid} has no free event channel port (${table.ports} ports)`);
  table.setState(port, portState(ECS_UNBOUND, remoteDomid));
  return new SimEventChannel(table, port, peers);
}

/**
 * EVTCHNOP_bind_interdomain from `table`'s domain to (remote, remotePort). The remote port is
 * claimed with a compare-and-swap from "unbound for us" so a racing close or second binder loses
 * cleanly; like Xen, the new local port starts pending.
 */
export function bindInterdomain(table: EvtchnTable, remote: EvtchnTable | undefined, remoteDomid: number, remotePort: number, peers: PeerLookup): SimEventChannel {
  const self = table.domid;
  if (remote === undefined) {
    throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: no such domain`);
  }
  if (!Number.isInteger(remotePort) || remotePort < 1 || remotePort >= remote.ports) {
    throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: no such port (1..${remote.ports - 1})`);
  }
  const expected = portState(ECS_UNBOUND, self);
  const seen = remote.state(remotePort);
  if (seen !== expected) {
    throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: not unbound for domain ${self} (${describeState(seen)})`);
  }
  const port = table.reservePort();
  if (port < 0) throw new EventChannelError(self, -1, `domain ${self} has no free event channel port (${table.ports} ports)`);
  table.setRemotePort(port, remotePort);
  table.setState(port, portState(ECS_INTERDOMAIN, remoteDomid));
  if (!remote.casState(remotePort, expected, ECS_RESERVED)) {
    table.setState(port, ECS_RESERVED);
    table.freePort(port);
    throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: it changed while binding (${describeState(remote.state(remotePort))})`);
  }
  remote.setRemotePort(remotePort, port);
  remote.setState(remotePort, portState(ECS_INTERDOMAIN, self));
  table.setPending(port);
  return new SimEventChannel(table, port, peers);
}

/** Closes every port of a domain that is going away; their peers become unbound. */
export function closeAllPorts(table: EvtchnTable, peers: PeerLookup): void {
  for (let port = 1; port < table.ports; port++) {
    if (portKind(table.state(port)) !== ECS_FREE) closePort(table, port, peers);
  }
}

export class SimGuestEvents implements GuestEvents {
  readonly #table: EvtchnTable;
  readonly #peers: PeerLookup;

  constructor(table: EvtchnTable, peers: PeerLookup) {
    this.#table = table;
    this.#peers = peers;
  }

  allocUnbound(remoteDomid: number): EventChannel {
    return allocUnbound(this.#table, remoteDomid, this.#peers);
  }
}

export class SimBackendEvents implements BackendEvents {
  readonly #table: EvtchnTable;
  readonly #peers: PeerLookup;

  constructor(table: EvtchnTable, peers: PeerLookup) {
    this.#table = table;
    this.#peers = peers;
  }

  bindInterdomain(remoteDomid: number, remotePort: number): EventChannel {
    return bindInterdomain(this.#table, this.#peers(remoteDomid), remoteDomid, remotePort, this.#peers);
  }
}
