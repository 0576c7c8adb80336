// Counts the grant-table and event-channel calls a backend makes. In the simulation these are
// function calls into shared memory; on real Xen each is a system call on /dev/xen/gntdev or
// /dev/xen/evtchn, so a count of the operating system's calls in the simulation misses them. The
// syscall benchmark adds them back at the price our real-Xen binding pays for each
// (src/hypervisor/xen/koffi-devices.ts and evtchn-epoll-reader.ts, through libxengnttab and
// libxenevtchn):
//   map     IOCTL_GNTDEV_MAP_GRANT_REF + mmap                         2
//   unmap   munmap + IOCTL_GNTDEV_UNMAP_GRANT_REF                     2
//   copy    IOCTL_GNTDEV_GRANT_COPY, any number of segments           1
//   notify  IOCTL_EVTCHN_NOTIFY                                       1
//   event   a read of /dev/xen/evtchn (it may report several ports at once, so at most one a
//           delivered event) and the write that unmasks the port                        2
import type { BackendEvents, BackendGrants, BackendHypervisor, EventChannel, GrantCopyOp, GrantMapping } from '../hypervisor/types.ts';

export interface XenCallCounts {
  maps: number;
  unmaps: number;
  copies: number;
  copySegments: number;
  notifies: number;
  events: number;
}

/** System calls each counted operation costs on real Xen (see the table above). */
export const XEN_SYSCALLS_PER_CALL: Readonly<Record<Exclude<keyof XenCallCounts, 'copySegments'>, number>> = {
  maps: 2,
  unmaps: 2,
  copies: 1,
  notifies: 1,
  events: 2,
};

export function emptyXenCallCounts(): XenCallCounts {
  return { maps: 0, unmaps: 0, copies: 0, copySegments: 0, notifies: 0, events: 0 };
}

/** What the counted calls would cost in system calls on real Xen. */
export function xenSyscalls(counts: XenCallCounts): number {
  let sum = 0;
  for (const [key, cost] of Object.entries(XEN_SYSCALLS_PER_CALL)) sum += counts[key as keyof typeof XEN_SYSCALLS_PER_CALL] * cost;
  return sum;
}

export function diffXenCallCounts(after: XenCallCounts, before: XenCallCounts): XenCallCounts {
  const out = emptyXenCallCounts();
  for (const key of Object.keys(out) as (keyof XenCallCounts)[]) out[key] = after[key] - before[key];
  return out;
}

/** The same hypervisor, with every grant and event-channel call the backend makes counted in `counts`. */
export function countXenCalls(hv: BackendHypervisor, counts: XenCallCounts): BackendHypervisor {
  const grants: BackendGrants = {
    map(domid: number, refs: ArrayLike<number>, count: number, writable: boolean): GrantMapping {
      const mapping = hv.grants.map(domid, refs, count, writable);
      counts.maps++;
      return {
        pages: mapping.pages,
        unmap(): void {
          counts.unmaps++;
          mapping.unmap();
        },
      };
    },
    copy(ops: readonly GrantCopyOp[]): number[] {
      counts.copies++;
      counts.copySegments += ops.length;
      return hv.grants.copy(ops);
    },
    allocBuffer: (bytes: number) => hv.grants.allocBuffer(bytes),
  };
  const events: BackendEvents = {
    bindInterdomain(remoteDomid: number, remotePort: number): EventChannel {
      const channel = hv.events.bindInterdomain(remoteDomid, remotePort);
      return {
        get localPort() {
          return channel.localPort;
        },
        notify(): void {
          counts.notifies++;
          channel.notify();
        },
        onEvent(handler: () => void): void {
          channel.onEvent(() => {
            counts.events++;
            handler();
          });
        },
        mask: () => channel.mask(),
        unmask: () => channel.unmask(),
        close: () => channel.close(),
      };
    },
  };
  return { domid: hv.domid, grants, events, xenstore: hv.xenstore };
}
