// BackendEvents on a real Xen dom0 through the XenDevices surface (/dev/xen/evtchn).
//
// The kernel masks a port as it reports it pending and leaves it masked until we unmask it, so
// notifies that arrive meanwhile coalesce into one later delivery. A port reported pending is
// "held" here until its handler can run: it has one and the user has not masked it. We run the
// handler and only then unmask in the kernel, so an event raised during the handler is delivered
// again afterwards, never lost. The user's mask() is ours alone (the driver has no mask call):
// a held port simply stays masked in the kernel until the user unmasks it.

import { EventChannelError } from '../errors.ts';
import type { BackendEvents, EventChannel } from '../types.ts';
import type { XenDevices } from './devices.ts';
import { XenDeviceError } from './errors.ts';

const KEEP_ALIVE_MS = 0x7fffffff;

function noop(): void {}
function rethrow(error: unknown): never {
  throw error;
}

interface Port {
  readonly channel: XenEventChannel;
  handler: (() => void) | undefined;
  /** The user called mask(). */
  masked: boolean;
  /** Reported pending by the kernel (so masked there) and not yet handed to the handler. */
  held: boolean;
}

class XenEventChannel implements EventChannel {
  readonly localPort: number;
  readonly remoteDomid: number;
  #owner: XenBackendEvents | undefined;

  constructor(owner: XenBackendEvents, localPort: number, remoteDomid: number) {
    this.localPort = localPort;
    this.remoteDomid = remoteDomid;
    this.#owner = owner;
  }

  notify(): void {
    this.#owner?.notify(this.localPort);
  }

  onEvent(handler: () => void): void {
    const owner = this.#owner;
    if (owner === undefined) {
      throw new EventChannelError(this.remoteDomid, this.localPort, `event channel port ${this.localPort} (to domain ${this.remoteDomid}) is closed`);
    }
    owner.setHandler(this.localPort, handler);
  }

  mask(): void {
    this.#owner?.mask(this.localPort);
  }

  unmask(): void {
    this.#owner?.unmask(this.localPort);
  }

  close(): void {
    const owner = this.#owner;
    if (owner === undefined) return;
    this.#owner = undefined;
    owner.closePort(this.localPort);
  }
}

export class XenBackendEvents implements BackendEvents {
  readonly #devices: XenDevices;
  readonly #ports = new Map<number, Port>();
  /** Held ports whose handler may have become runnable (onEvent or unmask); checked on the next turn. */
  readonly #due = new Set<number>();
  #scheduled = false;
  #keepAlive: ReturnType<typeof setInterval> | undefined;

  constructor(devices: XenDevices) {
    this.#devices = devices;
    devices.evtchn.listen((ports, lost) => this.#onPending(ports, lost));
  }

  /** Ports bound and not yet closed. */
  get openPorts(): number {
    return this.#ports.size;
  }

  bindInterdomain(remoteDomid: number, remotePort: number): EventChannel {
    if (!Number.isInteger(remoteDomid) || remoteDomid < 0 || remoteDomid > 0xffff) {
      throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: not a domid`);
    }
    if (!Number.isInteger(remotePort) || remotePort < 1 || remotePort > 0x7fffffff) {
      throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: not a port`);
    }
    let localPort: number;
    try {
      localPort = this.#devices.evtchn.bindInterdomain(remoteDomid, remotePort);
    } catch (error) {
      if (!(error instanceof XenDeviceError)) throw error;
      throw new EventChannelError(remoteDomid, remotePort, `cannot bind to port ${remotePort} of domain ${remoteDomid}: ${error.message}`, { cause: error });
    }
    const channel = new XenEventChannel(this, localPort, remoteDomid);
    // A report for this port may already be queued (Xen marks a new port pending): keep what is there.
    const earlier = this.#ports.get(localPort);
    this.#ports.set(localPort, { channel, handler: undefined, masked: false, held: earlier?.held ?? false });
    if (this.#keepAlive === undefined) this.#keepAlive = setInterval(noop, KEEP_ALIVE_MS);
    return channel;
  }

  // ---- called by XenEventChannel

  notify(port: number): void {
    this.#devices.evtchn.notify(port);
  }

  setHandler(port: number, handler: () => void): void {
    const state = this.#ports.get(port)!;
    state.handler = handler;
    if (state.held) this.#schedule(port);
  }

  mask(port: number): void {
    this.#ports.get(port)!.masked = true;
  }

  unmask(port: number): void {
    const state = this.#ports.get(port)!;
    state.masked = false;
    if (state.held) this.#schedule(port);
  }

  closePort(port: number): void {
    this.#ports.delete(port);
    this.#due.delete(port);
    if (this.#ports.size === 0 && this.#keepAlive !== undefined) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = undefined;
    }
    try {
      this.#devices.evtchn.unbind(port);
    } catch (error) {
      // The port is gone from our side either way (the handle may already be closed).
      if (!(error instanceof XenDeviceError)) throw error;
    }
  }

  // ---- delivery

  #onPending(ports: ArrayLike<number>, lost: boolean): void {
    if (lost) {
      // The kernel's ring overflowed: some reported ports were dropped but stay masked there.
      for (const state of this.#ports.values()) state.held = true;
      for (const port of [...this.#ports.keys()]) this.#deliver(port);
      return;
    }
    for (let i = 0; i < ports.length; i++) {
      const state = this.#ports.get(ports[i]!);
      if (state !== undefined) state.held = true; // else closed meanwhile (or never ours): nothing to unmask
    }
    for (let i = 0; i < ports.length; i++) this.#deliver(ports[i]!);
  }

  /** Runs the handler of a held, unmasked port with a handler, then unmasks it in the kernel. */
  #deliver(port: number): void {
    const state = this.#ports.get(port);
    if (state === undefined || !state.held || state.masked || state.handler === undefined) return;
    state.held = false;
    try {
      state.handler();
    } catch (error) {
      process.nextTick(rethrow, error);
    }
    if (this.#ports.get(port) !== state) return; // the handler closed it
    try {
      this.#devices.evtchn.unmask(port);
    } catch (error) {
      if (!(error instanceof XenDeviceError)) throw error;
      process.nextTick(rethrow, error);
    }
  }

  #schedule(port: number): void {
    this.#due.add(port);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#runDue);
  }

  readonly #runDue = (): void => {
    this.#scheduled = false;
    const due = [...this.#due];
    this.#due.clear();
    for (const port of due) this.#deliver(port);
  };
}
