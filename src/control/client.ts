// The client side of the control socket: one connection, requests answered in order, typed results.
import net from 'node:net';
import { BlockError, Errno } from '../internal/errors.ts';
import { ControlError, decodeResponse, encodeRequest, LineDecoder, MAX_RESPONSE_LINE } from './protocol.ts';
import type { ControlCall, ControlResponse } from './protocol.ts';
import type { AttachResult, DetachResult, DiskStatistics, DiskSummary, IscsiTargetStatus, ResizeResult, ServerInfo } from './target.ts';

/** Nobody answers at the socket: the message says how to start a server. */
export class ControlUnavailableError extends BlockError {
  constructor(message: string, cause: unknown) {
    super('CTL_ERR_NO_SERVER', message, { errno: Errno.ENOENT, cause });
    this.name = 'ControlUnavailableError';
  }
}

export interface ControlClientOptions {
  /** Per request (default 30 s; attach and detach wait for the guest, up to the server's own limits). */
  readonly timeoutMs?: number;
}

interface Pending {
  readonly resolve: (response: ControlResponse) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class ControlClient {
  readonly path: string;
  readonly #socket: net.Socket;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #failure: Error | null = null;

  private constructor(path: string, socket: net.Socket, options: ControlClientOptions) {
    this.path = path;
    this.#socket = socket;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    const decoder = new LineDecoder(MAX_RESPONSE_LINE);
    socket.on('data', (chunk: Buffer) => {
      for (const event of decoder.push(chunk)) {
        if ('tooLong' in event) return this.#fail(new ControlError('CTL_ERR_TOO_LONG', `${path}: answer longer than ${MAX_RESPONSE_LINE} bytes`));
        const decoded = decodeResponse(event.line);
        if (!decoded.ok) return this.#fail(new ControlError(decoded.error.code, `${path}: ${decoded.error.message}`));
        this.#settle(decoded.value);
      }
    });
    socket.on('error', (err) => this.#fail(new BlockError('CTL_ERR_IO', `${path}: ${err.message}`, { cause: err })));
    socket.on('close', () => this.#fail(new BlockError('CTL_ERR_IO', `${path}: the server closed the connection`)));
  }

  static connect(path: string, options: ControlClientOptions = {}): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(path);
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(new ControlClient(path, socket, options));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => reject(connectError(path, err)));
    });
  }

  list(): Promise<DiskSummary[]> {
    return this.#call({ op: 'list' }) as Promise<DiskSummary[]>;
  }

  stats(disk?: string): Promise<DiskStatistics[]> {
    return this.#call(disk === undefined ? { op: 'stats' } : { op: 'stats', disk }) as Promise<DiskStatistics[]>;
  }

  attach(domid: number, spec: string): Promise<AttachResult> {
    return this.#call({ op: 'attach', domid, spec }) as Promise<AttachResult>;
  }

  detach(domid: number, vdev: string): Promise<DetachResult> {
    return this.#call({ op: 'detach', domid, vdev }) as Promise<DetachResult>;
  }

  resize(disk: string, size: number): Promise<ResizeResult> {
    return this.#call({ op: 'resize', disk, size }) as Promise<ResizeResult>;
  }

  /** What the server is; a server from before this op existed is a block backend. */
  async info(): Promise<ServerInfo> {
    try {
      return (await this.#call({ op: 'info' })) as ServerInfo;
    } catch (err) {
      if (err instanceof ControlError && err.code === 'CTL_ERR_UNKNOWN_OP') return { service: 'blkback' };
      throw err;
    }
  }

  iscsiStatus(): Promise<IscsiTargetStatus> {
    return this.#call({ op: 'iscsi-status' }) as Promise<IscsiTargetStatus>;
  }

  /** Sends one raw line as is (tests of the server's validation); resolves with the next answer. */
  sendRaw(line: string): Promise<ControlResponse> {
    return this.#expect(0, () => this.#socket.write(line.endsWith('\n') ? line : `${line}\n`));
  }

  close(): void {
    this.#socket.destroy();
  }

  async #call(call: ControlCall): Promise<unknown> {
    const id = this.#nextId++;
    const response = await this.#expect(id, () => this.#socket.write(encodeRequest(id, call)));
    if (response.ok) return response.result;
    const e = response.error;
    throw new ControlError(e.code, e.message, {
      ...(e.known === undefined ? {} : { known: e.known }),
      ...(e.cause === undefined ? {} : { causeCode: e.cause }),
    });
  }

  /** Registers for the answer with `id` (0: the next answer, whatever its id), then sends. */
  #expect(id: number, send: () => void): Promise<ControlResponse> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise<ControlResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new BlockError('BLK_ERR_TIMEOUT', `${this.path}: no answer within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      send();
    });
  }

  #settle(response: ControlResponse): void {
    const id = response.id;
    // An answer with id null (the server could not read the request) goes to a raw send, or to the only request waiting.
    let key: number | undefined;
    if (id !== null && this.#pending.has(id)) key = id;
    else if (this.#pending.has(0)) key = 0;
    else if (id === null && this.#pending.size === 1) key = this.#pending.keys().next().value;
    if (key === undefined) return; // an answer nobody waits for any more (timed out)
    const pending = this.#pending.get(key)!;
    this.#pending.delete(key);
    clearTimeout(pending.timer);
    pending.resolve(response);
  }

  #fail(err: Error): void {
    this.#failure ??= err;
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.#pending.clear();
    this.#socket.destroy();
  }
}

function connectError(path: string, err: NodeJS.ErrnoException): Error {
  const hint = `is blkback serve (or blkback run) running? start it with --control-socket ${path}`;
  switch (err.code) {
    case 'ENOENT':
      return new ControlUnavailableError(`no blkback control socket at ${path} (${hint})`, err);
    case 'ECONNREFUSED':
      return new ControlUnavailableError(`nothing answers at ${path}: a stale socket of a blkback that has exited (${hint})`, err);
    case 'EACCES':
    case 'EPERM':
      return new BlockError(
        'CTL_ERR_ACCESS',
        `permission denied on ${path}: the control socket is mode 0600, run blkback ctl as the user that started blkback (usually root)`,
        {
          errno: Errno.EACCES,
          cause: err,
        },
      );
    default:
      return new BlockError('CTL_ERR_IO', `cannot connect to ${path}: ${err.message}`, { cause: err });
  }
}
