// Waits for event-channel reports without a thread of our own: an IOCB_CMD_POLL on the evtchn fd
// goes into the process's Linux AIO context (src/internal/linux-aio.ts), whose completions the disk
// I/O already waits for. One wait then covers guest events and disk completions, and a report costs
// no hop from a reader thread (under emulated Xen that thread took a tenth of serve's CPU). When it
// fires, the pending ports are read here, on the JavaScript thread: the fd is readable, so the read
// does not block. The poll is armed only while ports are bound, so an idle process can exit.

import fs from 'node:fs';
import { constants } from 'node:os';
import koffi from 'koffi';
import type { LinuxAio } from '../../internal/linux-aio.ts';
import type { PendingReader, PendingReaderCallbacks } from './evtchn-reader.ts';

const POLLIN = 0x1;
/** IOCTL_EVTCHN_RESET = _IOC(_IOC_NONE, 'E', 5, 0) (xen/sys/evtchn.h): clears the overflow condition. */
const IOCTL_EVTCHN_RESET = 0x4505;
/** Ports read per read(); the kernel hands out as many as fit. */
const BATCH_PORTS = 256;

let ioctl: ((fd: number, request: number, arg: number) => number) | undefined;

export interface ArmablePendingReader extends PendingReader {
  /** Whether to wait for reports (ports are bound); the poll is cancelled when not. */
  setActive(active: boolean): void;
}

export function startAioPendingReader(fd: number, aio: LinuxAio, callbacks: PendingReaderCallbacks): ArmablePendingReader {
  const buffer = new Uint32Array(BATCH_PORTS);
  let active = false;
  let stopped = false;
  let waiting: { readonly done: Promise<number>; cancel(): void } | null = null;

  const readPorts = (): boolean => {
    let bytes: number;
    try {
      bytes = fs.readSync(fd, buffer, 0, buffer.byteLength, null);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EINTR' || code === 'EAGAIN') return true;
      if (code === 'EFBIG') {
        ioctl ??= koffi.load('libc.so.6').func('int ioctl(int fd, unsigned long request, unsigned long arg)') as (fd: number, request: number, arg: number) => number;
        ioctl(fd, IOCTL_EVTCHN_RESET, 0);
        callbacks.onPorts(new Uint32Array(0), true);
        return true;
      }
      callbacks.onError(new Error(`read of the event channel fd failed: ${(error as Error).message}`));
      return false;
    }
    if (bytes === 0) return false; // the fd was closed under us
    callbacks.onPorts(buffer.slice(0, bytes >>> 2), false);
    return true;
  };

  const arm = (): void => {
    if (waiting !== null || !active || stopped) return;
    const poll = aio.poll(fd, POLLIN);
    waiting = poll;
    poll.done.then(
      (mask) => {
        waiting = null;
        if (stopped) return;
        if ((mask & POLLIN) !== 0 && !readPorts()) {
          stopped = true;
          return;
        }
        arm();
      },
      (error: unknown) => {
        waiting = null;
        if (!stopped) callbacks.onError(error instanceof Error ? error : new Error(String(error)));
      },
    );
  };

  return {
    setActive(next: boolean): void {
      active = next;
      if (active) arm();
      else waiting?.cancel();
    },
    async stop(): Promise<void> {
      stopped = true;
      active = false;
      const pending = waiting;
      if (pending === null) return;
      pending.cancel();
      await pending.done.catch(() => undefined);
    },
  };
}
