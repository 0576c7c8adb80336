// The real-Xen BackendHypervisor for a Linux dom0 (or driver domain): grants and event channels
// through Xen's tool libraries (or any XenDevices), xenstore through xenstored's Unix socket.

import fs from 'node:fs';
import { connectUnix } from '../../xenstore/client.ts';
import { DOMID_MAX } from '../../abi/xen.ts';
import type { BackendHypervisor, XenstoreClient } from '../types.ts';
import { XenBackendEvents } from './backend-events.ts';
import { XenBackendGrants } from './backend-grants.ts';
import type { XenDevices } from './devices.ts';
import { XenUnavailableError } from './errors.ts';
import { openKoffiDevices, probeKoffiDevices } from './koffi-devices.ts';

export { XenUnavailableError, XenDeviceError } from './errors.ts';
export { XenBackendGrants } from './backend-grants.ts';
export { XenBackendEvents } from './backend-events.ts';
export type { XenDevices, GnttabDevice, EvtchnDevice, NativeMemory, NativeRegion, PendingListener } from './devices.ts';

export const XENSTORED_SOCKET = '/run/xenstored/socket';

export interface XenHypervisor extends BackendHypervisor {
  readonly grants: XenBackendGrants;
  readonly events: XenBackendEvents;
  /** Closes xenstore and the devices. Close event channels and unmap grants first. */
  close(): Promise<void>;
}

export interface OpenXenOptions {
  /** xenstored's Unix socket (default /run/xenstored/socket). */
  readonly xenstoreSocket?: string;
  /** The grant and event devices (default: Xen's libraries through koffi). */
  readonly devices?: XenDevices;
}

/** Whether this host can run a Xen backend, and if not, why (nothing is opened). */
export function xenAvailable(options: { xenstoreSocket?: string } = {}): { ok: boolean; why?: string } {
  const probe = probeKoffiDevices();
  if (!probe.ok) return probe;
  const socket = options.xenstoreSocket ?? XENSTORED_SOCKET;
  if (!fs.existsSync(socket)) return { ok: false, why: noXenstored(socket) };
  return { ok: true };
}

function noXenstored(socket: string): string {
  return `xenstored's socket ${socket} is absent: start xenstored (systemctl start xenstored, from xen-utils) or pass the socket's path`;
}

/** The domain this connection speaks for: xenstore's relative key `domid`, else 0 (dom0). */
async function readOwnDomid(xenstore: XenstoreClient): Promise<number> {
  const text = await xenstore.tryRead('domid').catch(() => undefined);
  const domid = text === undefined ? Number.NaN : Number(text.trim());
  return Number.isInteger(domid) && domid >= 0 && domid <= DOMID_MAX ? domid : 0;
}

/**
 * Opens the real-Xen backend hypervisor. Throws XenUnavailableError (naming what is missing and
 * how to fix it) when the devices, libraries or xenstored are not there.
 */
export async function openXenHypervisor(options: OpenXenOptions = {}): Promise<XenHypervisor> {
  const socket = options.xenstoreSocket ?? XENSTORED_SOCKET;
  const devices = options.devices ?? openKoffiDevices();
  let xenstore: XenstoreClient;
  try {
    if (!fs.existsSync(socket)) throw new XenUnavailableError(noXenstored(socket));
    try {
      xenstore = await connectUnix(socket);
    } catch (error) {
      throw new XenUnavailableError(`cannot connect to xenstored at ${socket}: ${(error as Error).message}`, { cause: error });
    }
  } catch (error) {
    if (options.devices === undefined) await devices.close();
    throw error;
  }
  const domid = await readOwnDomid(xenstore);
  const grants = new XenBackendGrants(devices);
  const events = new XenBackendEvents(devices);
  let closed = false;
  return {
    domid,
    grants,
    events,
    xenstore,
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      xenstore.close();
      await devices.close();
    },
  };
}
