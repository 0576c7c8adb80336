// The file descriptor under a connected net.Socket, for the calls Node does not offer (dup,
// setsockopt). Node keeps it on the socket's private handle: present while the socket is open,
// gone (or -1) once it is closed, when the number may already belong to another file.
import type net from 'node:net';

/** The socket's descriptor now, or undefined when it has none (closed, or not an fd-backed handle). */
export function socketFd(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
