// Who is at the other end of a Unix socket: getsockopt(SO_PEERCRED) (socket(7)), which Node does not
// expose, called through koffi as linux-aio.ts calls libc. The kernel fills in the credentials the
// peer had when it called connect(), so a peer cannot lie about them.
//
// Layout (<sys/socket.h>, <bits/socket.h>):
//   struct ucred {     offset
//     pid_t pid;       0   int32
//     uid_t uid;       4   uint32
//     gid_t gid;       8   uint32
//   };                 12 bytes
// SOL_SOCKET = 1 and SO_PEERCRED = 17 on x86_64 and arm64 (asm-generic/socket.h; only alpha, mips,
// parisc and sparc differ).
//
// The call is synchronous: it copies 12 bytes out of the socket and never blocks (about 1-4 µs
// through koffi here), once per accepted connection. Loaded on first use, not at import: without
// koffi's native part everything else still runs, and callers decide what a missing answer means.
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { BlockError, Errno } from './errors.ts';
import { libcBinding } from './libc-binding.ts';
import type { Koffi } from './libc-binding.ts';

export const SOL_SOCKET = 1;
export const SO_PEERCRED = 17;
const UCRED_SIZE = 12;
const LE = true; // the hosts we run on (x86_64, arm64) are little-endian

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

interface Native {
  readonly koffi: Koffi;
  readonly getsockopt: (fd: number, level: number, name: number, value: Uint8Array, length: number[]) => number;
}

const libc = libcBinding<Native>(
  () =>
    process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')
      ? `SO_PEERCRED is read only on Linux x86_64 and arm64 (this is ${process.platform}/${process.arch})`
      : undefined,
  (koffi, lib) => ({
    koffi,
    getsockopt: lib.func('int getsockopt(int fd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)') as Native['getsockopt'],
  }),
);

/** Why peer credentials cannot be read here, or undefined when they can. */
export function peerCredentialsProblem(): string | undefined {
  return libc.problem();
}

/** Tests: behave as if SO_PEERCRED could not be read (`reason`), or normally again (undefined). */
export function simulatePeerCredentialsUnavailable(reason: string | undefined): void {
  libc.simulate(reason);
}

/** The file descriptor under a connected net.Socket (libuv's Pipe or TCP handle), or -1. */
function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/**
 * The credentials of the process that connected `socket` (an accepted Unix-socket connection).
 * Throws a BlockError when they cannot be read: no koffi, a closed socket, a getsockopt error.
 */
export function readPeerCredentials(socket: net.Socket): PeerCredentials {
  const why = peerCredentialsProblem();
  const n = libc.get();
  if (why !== undefined || n === undefined)
    throw new BlockError('BLK_ERR_UNSUPPORTED', `peer credentials: ${why ?? 'unavailable'}`, { errno: Errno.EOPNOTSUPP });
  const fd = socketFd(socket);
  if (fd < 0) throw new BlockError('BLK_ERR_IO', 'peer credentials: the socket has no file descriptor (already closed?)', { errno: Errno.EINVAL });
  const value = new Uint8Array(UCRED_SIZE);
  const length = [UCRED_SIZE];
  if (n.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, length) !== 0) {
    const errno = n.koffi.errno();
    let name = `errno ${errno}`;
    try {
      name = getSystemErrorName(-errno);
    } catch {
      // not a known errno: keep the number
    }
    throw new BlockError('BLK_ERR_IO', `peer credentials: getsockopt(SO_PEERCRED) failed: ${name}`, { errno });
  }
  if (length[0] !== UCRED_SIZE) throw new BlockError('BLK_ERR_IO', `peer credentials: getsockopt returned ${length[0]} bytes, not ${UCRED_SIZE}`);
  const view = new DataView(value.buffer, value.byteOffset, UCRED_SIZE);
  return { pid: view.getInt32(0, LE), uid: view.getUint32(4, LE), gid: view.getUint32(8, LE) };
}
