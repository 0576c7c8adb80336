// Event-channel operations on the shared tables (EVTCHNOP_alloc_unbound, bind_interdomain, send,
// close, unmask) and the EventChannel object a thread holds for one of its ports.
//
// Who may touch what, as in Xen: a domain's own table (its pending and mask bits, and the port
// states its hypercalls keep) is in memory it holds. dom0's thread also plays the hypervisor, so it
// reaches the guests' tables: it binds their ports, sets their pending bits and reads their port
// states. A guest holds only its own table and its outbox: its sends are posts that dom0's
// dispatcher delivers through routes only dom0 keeps (evtchn-outbox.ts), and when it closes a port
// dom0's end is found unbound at dom0's next send, not written by the guest.

import { EventChannelError } from '../errors.ts';
import { DOMID_SELF } from '../types.ts';
import type { BackendEvents, EventChannel, GuestEvents } from '../types.ts';
import { ECS_FREE, ECS_INTERDOMAIN, ECS_RESERVED, ECS_UNBOUND } from './constants.ts';
import { Dispatcher } from './dispatcher.ts';
import type { EvtchnOutbox, OutboxReceiver } from './evtchn-outbox.ts';
import { portKind, portRemoteDomid, portState } from './evtchn-table.ts';
import type { EvtchnTable } from './evtchn-table.ts';

/** Finds another domain's event table (undefined once it is destroyed or unknown to this thread). */
export type PeerLookup = (domid: number) => EvtchnTable | undefined;
/** dom0: the receiver of a guest's outbox (undefined once the guest is destroyed). */
export type ReceiverLookup = (domid: number) => OutboxReceiver | undefined;

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
  /** A guest's channel: sends go through its outbox. null: dom0's, which sets the peer's bit itself. */
  readonly #outbox: EvtchnOutbox | null;
  readonly #receivers: ReceiverLookup | null;
  #peerDomid = -1;
  #peer: EvtchnTable | undefined;
  #closed = false;

  constructor(table: EvtchnTable, port: number, peers: PeerLookup, outbox: EvtchnOutbox | null = null, receivers: ReceiverLookup | null = null) {
    this.localPort = port;
    this.#table = table;
    this.#peers = peers;
    this.#outbox = outbox;
    this.#receivers = receivers;
    this.#dispatcher = Dispatcher.for(table);
    this.#dispatcher.portOpened();
  }

  notify(): void {
    if (this.#closed) return;
    const table = this.#table;
    const port = this.localPort;
    const state = table.state(port);
    if (portKind(state) !== ECS_INTERDOMAIN) return; // unbound or closed by the peer: dropped, as Xen does
    const outbox = this.#outbox;
    if (outbox !== null) {
      outbox.post(port);
      return;
    }
    const domid = portRemoteDomid(state);
    let peer = this.#peer;
    if (domid !== this.#peerDomid) {
      peer = this.#peers(domid);
      this.#peer = peer;
      this.#peerDomid = domid;
    }
    if (peer === undefined) return;
    const remotePort = table.remotePort(port);
    // The peer's end lives in memory its guest writes: deliver only while it still names us. A guest
    // that closed its end left ours bound (it cannot reach our table); Xen would have made it unbound.
    if (peer.state(remotePort) !== portState(ECS_INTERDOMAIN, table.domid) || peer.remotePort(remotePort) !== port) {
      if (table.casState(port, state, portState(ECS_UNBOUND, domid))) this.#receivers?.(domid)?.unroute(remotePort, port);
      return;
    }
    peer.setPending(remotePort);
  }

  onEvent(handler: () => void): void {
    if (this.#closed)
      throw new EventChannelError(this.#table.domid, this.localPort, `event channel port ${this.localPort} of domain ${this.#table.domid} is closed`);
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
    closePort(this.#table, this.localPort, this.#peers, this.#receivers);
    this.#dispatcher.portClosed(this.localPort);
  }
}

/**
 * EVTCHNOP_close: an interdomain peer goes back to unbound (for us), if this thread can reach its
 * table, then our port is freed. dom0 also drops the route of the guest's posts to this port.
 */
export function closePort(table: EvtchnTable, port: number, peers: PeerLookup, receivers: ReceiverLookup | null = null): void {
  for (let spins = 0; ; spins++) {
    const state = table.state(port);
    const kind = portKind(state);
    if (kind === ECS_FREE) return;
    if (kind === ECS_RESERVED) {
      if (spins < RESERVED_SPIN_LIMIT) continue;
      break; // the binding thread died half-way: take the port back anyway
    }
    if (kind === ECS_INTERDOMAIN || kind === ECS_UNBOUND) {
      const remotePort = table.remotePort(port);
      receivers?.(portRemoteDomid(state))?.unroute(remotePort, port);
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

/** EVTCHNOP_alloc_unbound in `table`'s domain for `remoteDomid` (a guest passes its outbox). */
export function allocUnbound(table: EvtchnTable, remoteDomid: number, peers: PeerLookup, outbox: EvtchnOutbox | null = null): SimEventChannel {
  if (remoteDomid === DOMID_SELF) remoteDomid = table.domid;
  if (!Number.isInteger(remoteDomid) || remoteDomid < 0 || remoteDomid > 0xffff) {
    throw new EventChannelError(table.domid, -1, `allocUnbound: ${remoteDomid} is not a domid`);
  }
  const port = table.reservePort();
  if (port < 0) throw new EventChannelError(table.domid, -1, `domain ${table.domid} has no free event channel port (${table.ports} ports)`);
  table.setState(port, portState(ECS_UNBOUND, remoteDomid));
  return new SimEventChannel(table, port, peers, outbox);
}

/**
 * EVTCHNOP_bind_interdomain from `table`'s domain to (remote, remotePort). The remote port is
 * claimed with a compare-and-swap from "unbound for us" so a racing close or second binder loses
 * cleanly; like Xen, the new local port starts pending.
 */
export function bindInterdomain(
  table: EvtchnTable,
  remote: EvtchnTable | undefined,
  remoteDomid: number,
  remotePort: number,
  peers: PeerLookup,
  receivers: ReceiverLookup | null = null,
): SimEventChannel {
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
    throw new EventChannelError(
      remoteDomid,
      remotePort,
      `cannot bind to port ${remotePort} of domain ${remoteDomid}: not unbound for domain ${self} (${describeState(seen)})`,
    );
  }
  const port = table.reservePort();
  if (port < 0) throw new EventChannelError(self, -1, `domain ${self} has no free event channel port (${table.ports} ports)`);
  table.setRemotePort(port, remotePort);
  table.setState(port, portState(ECS_INTERDOMAIN, remoteDomid));
  if (!remote.casState(remotePort, expected, ECS_RESERVED)) {
    table.setState(port, ECS_RESERVED);
    table.freePort(port);
    throw new EventChannelError(
      remoteDomid,
      remotePort,
      `cannot bind to port ${remotePort} of domain ${remoteDomid}: it changed while binding (${describeState(remote.state(remotePort))})`,
    );
  }
  remote.setRemotePort(remotePort, port);
  remote.setState(remotePort, portState(ECS_INTERDOMAIN, self));
  const receiver = receivers?.(remoteDomid);
  if (receiver !== undefined) {
    receiver.route(remotePort, port);
    Dispatcher.for(table).addSource(receiver);
  }
  table.setPending(port);
  return new SimEventChannel(table, port, peers, null, receivers);
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
  readonly #outbox: EvtchnOutbox;

  constructor(table: EvtchnTable, outbox: EvtchnOutbox, peers: PeerLookup) {
    this.#table = table;
    this.#outbox = outbox;
    this.#peers = peers;
  }

  allocUnbound(remoteDomid: number): EventChannel {
    return allocUnbound(this.#table, remoteDomid, this.#peers, this.#outbox);
  }
}

export class SimBackendEvents implements BackendEvents {
  readonly #table: EvtchnTable;
  readonly #peers: PeerLookup;
  readonly #receivers: ReceiverLookup;

  constructor(table: EvtchnTable, peers: PeerLookup, receivers: ReceiverLookup) {
    this.#table = table;
    this.#peers = peers;
    this.#receivers = receivers;
  }

  bindInterdomain(remoteDomid: number, remotePort: number): EventChannel {
    return bindInterdomain(this.#table, this.#peers(remoteDomid), remoteDomid, remotePort, this.#peers, this.#receivers);
  }
}
