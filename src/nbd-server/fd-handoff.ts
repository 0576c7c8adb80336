// Moving a connected socket from the main thread to a transmission worker. A descriptor belongs to
// the process, not to a thread, so the worker can wrap the very same socket: the main thread dups
// the descriptor (the worker's copy) and then destroys its own socket, which closes only its copy.
// Each copy is closed exactly once, by the thread that holds it; the kernel's socket lives on
// until the last one goes.
import type net from 'node:net';
import { libcBinding } from '../internal/libc-binding.ts';
import { socketFd } from '../internal/socket-fd.ts';

interface FdCalls {
  dup(fd: number): number;
  close(fd: number): number;
}

const libc = libcBinding<FdCalls>(
  () => (process.platform === 'linux' ? undefined : 'descriptor hand-off is Linux only here'),
  (_koffi, lib) => ({
    dup: lib.func('int dup(int fd)') as (fd: number) => number,
    close: lib.func('int close(int fd)') as (fd: number) => number,
  }),
);

/** Why sockets cannot be handed to workers here, or undefined when they can. */
export function handoffProblem(): string | undefined {
  return libc.problem();
}

/** A second descriptor of this socket's kernel socket (for another thread), or undefined when there is none to take. */
export function dupSocketFd(socket: net.Socket): number | undefined {
  const calls = libc.get();
  const fd = socketFd(socket);
  if (calls === undefined || fd === undefined) return undefined;
  const copy = calls.dup(fd);
  return copy >= 0 ? copy : undefined;
}

/** Closes a descriptor that was dup'd but never wrapped in a socket (the hand-off failed). */
export function closeFd(fd: number): void {
  libc.get()?.close(fd);
}
