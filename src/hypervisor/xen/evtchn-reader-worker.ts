// The thread that waits for event-channel reports so the JS thread never blocks and libuv's pool
// is not tied up: poll() on the evtchn fd and a wake eventfd, read the pending ports (u32 each) and
// post them to the parent. It exits when the wake fd becomes readable or the evtchn fd closes.

import fs from 'node:fs';
import { constants } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import koffi from 'koffi';

export interface ReaderData {
  readonly fd: number;
  readonly wakeFd: number;
}

/** What the reader posts: ports reported pending, or lost = the kernel's ring overflowed. */
export type ReaderMessage = { readonly ports: Uint32Array; readonly lost: boolean } | { readonly error: string };

// struct pollfd { int fd; short events; short revents; } (poll.h)
const POLLFD_SIZE = 8;
const POLLIN = 0x1;
/** IOCTL_EVTCHN_RESET = _IOC(_IOC_NONE, 'E', 5, 0) (xen/sys/evtchn.h): clears the overflow condition. */
const IOCTL_EVTCHN_RESET = 0x4505;
/** Ports read per read(); the kernel hands out as many as fit. */
const BATCH_PORTS = 256;
const LE = true;

function run(port: NonNullable<typeof parentPort>, data: ReaderData): void {
  const libc = koffi.load('libc.so.6');
  const poll = libc.func('int poll(uint8_t *fds, unsigned long nfds, int timeout)');
  const ioctl = libc.func('int ioctl(int fd, unsigned long request, unsigned long arg)');
  const fds = new Uint8Array(2 * POLLFD_SIZE);
  const view = new DataView(fds.buffer);
  view.setInt32(0, data.fd, LE);
  view.setInt16(4, POLLIN, LE);
  view.setInt32(POLLFD_SIZE, data.wakeFd, LE);
  view.setInt16(POLLFD_SIZE + 4, POLLIN, LE);
  const buffer = new Uint32Array(BATCH_PORTS);
  for (;;) {
    const ready = poll(fds, 2, -1) as number;
    if (ready < 0) {
      if (koffi.errno() === constants.errno.EINTR) continue;
      port.postMessage({ error: `poll failed: errno ${koffi.errno()}` } satisfies ReaderMessage);
      return;
    }
    if (view.getInt16(POLLFD_SIZE + 6, LE) !== 0) return; // woken to stop
    if (view.getInt16(6, LE) === 0) continue;
    let bytes: number;
    try {
      bytes = fs.readSync(data.fd, buffer, 0, buffer.byteLength, null);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EINTR' || code === 'EAGAIN') continue;
      if (code === 'EFBIG') {
        ioctl(data.fd, IOCTL_EVTCHN_RESET, 0);
        port.postMessage({ ports: new Uint32Array(0), lost: true } satisfies ReaderMessage);
        continue;
      }
      port.postMessage({ error: `read of the event channel fd failed: ${(error as Error).message}` } satisfies ReaderMessage);
      return;
    }
    if (bytes === 0) return; // the fd was closed under us
    port.postMessage({ ports: buffer.slice(0, bytes >>> 2), lost: false } satisfies ReaderMessage);
  }
}

if (parentPort !== null) run(parentPort, workerData as ReaderData);
