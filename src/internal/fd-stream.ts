// Reads a descriptor that is neither a pipe nor a socket (an eventfd, Xen's event-channel device)
// from libuv's own epoll, on the JavaScript thread. The alternative, a read waiting on libuv's
// pool, costs every wake-up a thread hand-off both ways (a futex wake to queue the read, an eventfd
// write to report it), which under a Xen PV dom0 are system calls through the hypervisor.
//
// Node's net.Socket opens a descriptor only if libuv guesses it to be a pipe or a TCP socket, but
// libuv's pipe handle itself streams from any descriptor epoll accepts (it sets O_NONBLOCK and
// reads). So the handle is made through the pipe_wrap binding and given to net.Socket, which
// then does the rest as for any socket. The binding is on process.binding's allow-list; where it
// is missing, fdStreamProblem() says so and callers keep their pool or thread fallback.
import net from 'node:net';

interface PipeHandle {
  open(fd: number): number;
}
type PipeConstructor = new (type: number) => PipeHandle;

let pipe: { Pipe: PipeConstructor; socketType: number } | undefined;
let problem: string | undefined;

function pipeBinding(): typeof pipe {
  if (pipe !== undefined || problem !== undefined) return pipe;
  try {
    const binding = (process as unknown as { binding(name: string): { Pipe: PipeConstructor; constants: { SOCKET: number } } }).binding('pipe_wrap');
    pipe = { Pipe: binding.Pipe, socketType: binding.constants.SOCKET };
  } catch (error) {
    problem = `libuv's pipe handle is not reachable (process.binding('pipe_wrap'): ${(error as Error).message})`;
  }
  return pipe;
}

/** Why fdStream() cannot work in this Node, or undefined when it can. */
export function fdStreamProblem(): string | undefined {
  pipeBinding();
  return problem;
}

/**
 * A read-only stream over `fd`, which it then owns: destroying the stream closes it. The descriptor's
 * open file description becomes non-blocking (shared by any dup of it). Each read goes into `buffer`
 * and is handed to `onData` (net.Socket's `onread`: no allocation and no stream machinery per
 * read); the bytes are valid only during the call. A read shorter than the buffer ends a wake-up,
 * so a buffer larger than any one read saves a read that would only find nothing more. A read
 * error (EFBIG from an overflowed event channel, say) arrives as 'error' and ends the stream.
 */
export function fdStream(fd: number, buffer: Uint8Array, onData: (bytes: Uint8Array) => void): net.Socket {
  const binding = pipeBinding();
  if (binding === undefined) throw new Error(problem);
  const handle = new binding.Pipe(binding.socketType);
  const status = handle.open(fd);
  if (status !== 0) throw new Error(`cannot stream from fd ${fd}: libuv error ${status}`);
  const onread = {
    buffer,
    callback: (n: number, buf: Uint8Array): boolean => {
      onData(buf.subarray(0, n));
      return true;
    },
  };
  return new net.Socket({ handle, readable: true, writable: false, onread } as net.SocketConstructorOpts);
}
