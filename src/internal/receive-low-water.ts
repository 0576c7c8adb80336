// SO_RCVLOWAT on a connected TCP socket (socket(7)): the kernel reports the socket readable only
// once that many bytes wait (or at end of stream, or on an error), so a reader expecting a large
// message wakes once for it rather than once per arriving piece. Node has no call for it; this sets
// it through libc's setsockopt. Linux only; elsewhere, or without koffi, it is simply not set.
import type net from 'node:net';
import { libcBinding } from './libc-binding.ts';
import { socketFd } from './socket-fd.ts';

/** SOL_SOCKET and SO_RCVLOWAT (asm-generic/socket.h: 1 and 18). */
const SOL_SOCKET = 1;
const SO_RCVLOWAT = 18;

interface SockoptCalls {
  setsockopt(fd: number, level: number, name: number, value: number[], length: number): number;
}

const libc = libcBinding<SockoptCalls>(
  () => (process.platform === 'linux' ? undefined : 'SO_RCVLOWAT is set on Linux only here'),
  (_koffi, lib) => ({
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, _In_ int *value, uint32_t length)') as SockoptCalls['setsockopt'],
  }),
);

/**
 * A setter of the socket's receive low-water mark (bytes; true when set), or undefined when it
 * cannot be set here. The descriptor is looked up at each call: once the socket is closed there is
 * none (and its number may already be another file's), so nothing is set.
 */
export function receiveLowWater(socket: net.Socket): ((bytes: number) => boolean) | undefined {
  const calls = libc.get();
  if (calls === undefined || socketFd(socket) === undefined) return undefined;
  const value = [1];
  return (bytes) => {
    const fd = socketFd(socket);
    if (fd === undefined) return false;
    value[0] = bytes;
    return calls.setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, value, 4) === 0;
  };
}
