// The fallback where the fd cannot be read on libuv's epoll (the default: evtchn-epoll-reader.ts).
// Starts and stops the thread that waits on the event-channel fd (evtchn-reader-worker.ts). The
// blocking poll sits in a thread of its own: never on the JS thread, never in libuv's pool (whose
// few threads serve file I/O). Stopping writes to an eventfd the thread also polls; a process that
// exits without stopping it is covered too, since Node joins worker threads at exit.

import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import koffi from 'koffi';
import type { ReaderData, ReaderMessage } from './evtchn-reader-worker.ts';

export interface PendingReader {
  /** Wakes the thread and resolves once it has exited; the fd may then be closed. */
  stop(): Promise<void>;
}

export interface PendingReaderCallbacks {
  onPorts(ports: Uint32Array, lost: boolean): void;
  onError(error: Error): void;
}

const EFD_CLOEXEC = 0o2000000;
let eventfd: ((initval: number, flags: number) => number) | undefined;

function openWakeFd(): number {
  eventfd ??= koffi.load('libc.so.6').func('int eventfd(unsigned int initval, int flags)') as (initval: number, flags: number) => number;
  const fd = eventfd(0, EFD_CLOEXEC);
  if (fd < 0) throw new Error(`eventfd failed: errno ${koffi.errno()}`);
  return fd;
}

/** Reads pending ports (u32 each) from `fd` on a thread of its own and hands them to `callbacks` on this thread. */
export function startPendingReader(fd: number, callbacks: PendingReaderCallbacks): PendingReader {
  const wakeFd = openWakeFd();
  const one = new BigUint64Array([1n]);
  const wake = (): void => {
    fs.writeSync(wakeFd, one);
  };
  const worker = new Worker(new URL('./evtchn-reader-worker.js', import.meta.url), {
    workerData: { fd, wakeFd } satisfies ReaderData,
  });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  worker.on('message', (message: ReaderMessage) => {
    if ('error' in message) callbacks.onError(new Error(message.error));
    else callbacks.onPorts(message.ports, message.lost);
  });
  worker.on('error', (error) => callbacks.onError(error));
  // After the listeners, which would re-ref its port: the event adapter keeps the process alive
  // while a port is bound.
  worker.unref();
  process.once('exit', wake);
  let stopping: Promise<void> | undefined;
  return {
    stop(): Promise<void> {
      stopping ??= (async () => {
        process.removeListener('exit', wake);
        worker.ref(); // waiting for its exit must keep the loop alive
        wake();
        await exited;
        fs.closeSync(wakeFd);
      })();
      return stopping;
    },
  };
}
