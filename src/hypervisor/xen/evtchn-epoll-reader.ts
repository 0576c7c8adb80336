// Waits for event-channel reports on libuv's own epoll, on the JavaScript thread: the evtchn fd is
// read as a stream (src/internal/fd-stream.ts), so a report costs one epoll wake-up and one read,
// with no thread hand-off. (A reader thread of its own took a tenth of serve's CPU under emulated
// Xen; a poll in the Linux AIO context then cost a re-arming io_submit and a pool hand-off per
// report.) The stream keeps the process alive only while ports are bound, so an idle process exits.
//
// The stream owns a duplicate of the fd, not the fd itself: closing it (at stop, or when a read
// fails) must not close the device, which the caller still needs for notify, unmask and unbind.
// Both share one open file description, and with it the bound ports and O_NONBLOCK.

import { constants } from 'node:os';
import type net from 'node:net';
import koffi from 'koffi';
import { fdStream } from '../../internal/fd-stream.ts';
import type { PendingReader, PendingReaderCallbacks } from './evtchn-reader.ts';

/** IOCTL_EVTCHN_RESET = _IOC(_IOC_NONE, 'E', 5, 0) (xen/sys/evtchn.h): clears the overflow condition. */
const IOCTL_EVTCHN_RESET = 0x4505;
const F_DUPFD_CLOEXEC = 1030;
/** The most a read of the device returns (evtchn_read caps a read at PAGE_SIZE). */
const BATCH_BYTES = 4096;

let libc: { ioctl: (fd: number, request: number, arg: number) => number; fcntl: (fd: number, cmd: number, arg: number) => number } | undefined;

function native(): NonNullable<typeof libc> {
  if (libc === undefined) {
    const lib = koffi.load('libc.so.6');
    // Variadic in C; with integer arguments the fixed prototypes pass them the same way.
    libc = {
      ioctl: lib.func('int ioctl(int fd, unsigned long request, unsigned long arg)') as NonNullable<typeof libc>['ioctl'],
      fcntl: lib.func('int fcntl(int fd, int cmd, int arg)') as NonNullable<typeof libc>['fcntl'],
    };
  }
  return libc;
}

export interface ArmablePendingReader extends PendingReader {
  /** Whether reports are expected (ports are bound): only then does the reader keep the process alive. */
  setActive(active: boolean): void;
}

export function startEpollPendingReader(fd: number, callbacks: PendingReaderCallbacks): ArmablePendingReader {
  let active = false;
  let stopped = false;
  let stream: net.Socket | null = null;
  let closed: Promise<void> = Promise.resolve();
  // Reads land here. The device hands out whole ports, at most a page of them per read; a larger
  // buffer lets a read that empties the device end the wake-up (see fdStream).
  const buffer = new Uint8Array(2 * BATCH_BYTES);
  const ports = new Uint32Array(buffer.buffer);
  const onData = (bytes: Uint8Array): void => {
    // A copy: the owner may keep the array, and the next read reuses the buffer.
    if (bytes.length >= 4) callbacks.onPorts(ports.slice(0, bytes.length >>> 2), false);
  };

  const open = (): void => {
    const dup = native().fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw new Error(`cannot duplicate the event channel fd ${fd}: errno ${koffi.errno()}`);
    const s = fdStream(dup, buffer, onData);
    stream = s;
    closed = new Promise((resolve) => s.once('close', () => resolve()));
    s.on('error', (error: NodeJS.ErrnoException) => {
      if (stream === s) stream = null;
      if (stopped) return;
      if (error.errno === -constants.errno.EFBIG) {
        // The kernel's ring of pending ports overflowed: reset it, tell the owner that reports were
        // lost (it then looks at every port), and read on through a fresh duplicate.
        if (native().ioctl(fd, IOCTL_EVTCHN_RESET, 0) < 0) {
          callbacks.onError(new Error(`event channel fd ${fd} overflowed, and IOCTL_EVTCHN_RESET failed: errno ${koffi.errno()}`));
          return;
        }
        callbacks.onPorts(new Uint32Array(0), true);
        try {
          open();
        } catch (reopen) {
          callbacks.onError(reopen as Error); // here, not thrown out of a stream's event
        }
        return;
      }
      callbacks.onError(new Error(`read of the event channel fd ${fd} failed: ${error.message}`));
    });
    s.on('end', () => {
      if (stream === s) stream = null;
      if (!stopped) callbacks.onError(new Error(`the event channel fd ${fd} reported end of file`));
    });
    if (!active) s.unref();
  };

  open();
  return {
    setActive(next: boolean): void {
      active = next;
      if (stream === null) return;
      if (active) stream.ref();
      else stream.unref();
    },
    async stop(): Promise<void> {
      stopped = true;
      active = false;
      stream?.destroy();
      stream = null;
      await closed;
    },
  };
}
