// A guest's view of the simulated hypervisor, built in its worker from the handles the toolstack
// posted: its RAM, its grant table and its event channels (whose only peer is the backend domain,
// reached through the guest's outbox: the guest never holds the backend's event table).

import type { GuestHypervisor, XenstoreClient } from '../types.ts';
import { SimGuestEvents } from './event-channel.ts';
import { EvtchnOutbox } from './evtchn-outbox.ts';
import { EvtchnTable } from './evtchn-table.ts';
import { SimGuestGrants } from './guest-grants.ts';
import { SimGuestMemory } from './guest-memory.ts';
import type { GuestDomainHandles } from './hypervisor.ts';

export type { GuestDomainHandles };

export function attachGuest(handles: GuestDomainHandles, xenstore: XenstoreClient): GuestHypervisor {
  const events = new EvtchnTable(handles.domid, handles.events, handles.maxEventPorts);
  const outbox = new EvtchnOutbox(handles.outbox, handles.maxEventPorts);
  const peers = (domid: number): EvtchnTable | undefined => (domid === handles.domid ? events : undefined);
  return {
    domid: handles.domid,
    memory: new SimGuestMemory(handles.memory.buffer),
    grants: new SimGuestGrants(handles.grantTable, handles.domid),
    events: new SimGuestEvents(events, outbox, peers),
    xenstore,
  };
}
