// XsClient: the XenstoreClient interface over any XsTransport. Requests are multiplexed by
// req_id; watch events are dispatched by token.

import net from 'node:net';
import type { MessagePort } from 'node:worker_threads';
import type { XenstoreClient, XsPermission, XsWatchCallback } from './types.ts';
import { XENSTORE_PAYLOAD_MAX, XsType, xsTypeName } from './constants.ts';
import { XsDecoder, bytesText, encodeMessage, nulStrings, pathAndValue, splitNul, textBytes } from './codec.ts';
import type { XsMessage } from './codec.ts';
import { XenstoreError, xsError } from './errors.ts';
import { isChildOf } from './paths.ts';
import { formatPerm, parsePerm } from './store.ts';
import { messagePortTransport, socketTransport, transportPair } from './transport.ts';
import type { XsTransport } from './transport.ts';

export { messagePortTransport };

interface Pending {
  readonly type: number;
  readonly op: string;
  readonly path: string | undefined;
  resolve(payload: Uint8Array): void;
  reject(err: Error): void;
}

interface WatchEntry {
  readonly path: string;
  readonly callback: XsWatchCallback;
}

export interface XsClientOptions {
  /** Attempts transaction() makes before giving up with EAGAIN (default 10). */
  readonly maxTransactionAttempts?: number;
}

export class XsClient implements XenstoreClient {
  readonly domid: number;
  readonly #transport: XsTransport;
  readonly #decoder: XsDecoder;
  readonly #pending = new Map<number, Pending>();
  readonly #watches = new Map<string, WatchEntry[]>();
  readonly #maxAttempts: number;
  #nextReq = 1;
  #closed = false;

  constructor(transport: XsTransport, domid: number, options: XsClientOptions = {}) {
    this.domid = domid;
    this.#transport = transport;
    this.#maxAttempts = options.maxTransactionAttempts ?? 10;
    this.#decoder = new XsDecoder({
      onMessage: (msg) => this.#receive(msg),
      onOversize: (h) => this.#fail(h.reqId, xsError('E2BIG', xsTypeName(h.type), undefined, `reply of ${h.len} bytes`)),
    });
    transport.onData((bytes) => this.#decoder.push(bytes));
    transport.onClose(() => this.#shutdown());
  }

  get closed(): boolean {
    return this.#closed;
  }

  async read(path: string, tx = 0): Promise<string> {
    return bytesText(await this.#request(XsType.XS_READ, nulStrings(path), tx, 'read', path));
  }

  async tryRead(path: string, tx = 0): Promise<string | undefined> {
    try {
      return await this.read(path, tx);
    } catch (err) {
      if (err instanceof XenstoreError && err.code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async write(path: string, value: string, tx = 0): Promise<void> {
    await this.#request(XsType.XS_WRITE, pathAndValue(path, textBytes(value)), tx, 'write', path);
  }

  async mkdir(path: string, tx = 0): Promise<void> {
    await this.#request(XsType.XS_MKDIR, nulStrings(path), tx, 'mkdir', path);
  }

  async rm(path: string, tx = 0): Promise<void> {
    await this.#request(XsType.XS_RM, nulStrings(path), tx, 'rm', path);
  }

  async directory(path: string, tx = 0): Promise<string[]> {
    try {
      return splitNul(await this.#request(XsType.XS_DIRECTORY, nulStrings(path), tx, 'directory', path));
    } catch (err) {
      if (err instanceof XenstoreError && err.code === 'E2BIG') return this.#directoryParts(path, tx);
      throw err;
    }
  }

  async getPerms(path: string, tx = 0): Promise<XsPermission[]> {
    const strs = splitNul(await this.#request(XsType.XS_GET_PERMS, nulStrings(path), tx, 'get_perms', path));
    return strs.map((s) => {
      const p = parsePerm(s);
      if (p === undefined) throw xsError('EIO', 'get_perms', path, `bad permission '${s}' in reply`);
      return p;
    });
  }

  async setPerms(path: string, perms: readonly XsPermission[], tx = 0): Promise<void> {
    await this.#request(XsType.XS_SET_PERMS, nulStrings(path, ...perms.map(formatPerm)), tx, 'set_perms', path);
  }

  async watch(path: string, token: string, callback: XsWatchCallback): Promise<void> {
    // Registered before sending: the initial event follows the reply at once.
    const entry: WatchEntry = { path, callback };
    const list = this.#watches.get(token) ?? [];
    list.push(entry);
    this.#watches.set(token, list);
    try {
      await this.#request(XsType.XS_WATCH, nulStrings(path, token), 0, 'watch', path);
    } catch (err) {
      this.#removeWatch(token, entry);
      throw err;
    }
  }

  async unwatch(path: string, token: string): Promise<void> {
    try {
      await this.#request(XsType.XS_UNWATCH, nulStrings(path, token), 0, 'unwatch', path);
    } finally {
      const entry = this.#watches.get(token)?.find((e) => e.path === path);
      if (entry !== undefined) this.#removeWatch(token, entry);
    }
  }

  async transactionStart(): Promise<number> {
    const reply = splitNul(await this.#request(XsType.XS_TRANSACTION_START, nulStrings(''), 0, 'transaction_start', undefined));
    const id = Number(reply[0]);
    if (!Number.isInteger(id) || id <= 0) throw xsError('EIO', 'transaction_start', undefined, `bad id '${reply[0] ?? ''}'`);
    return id;
  }

  async transactionEnd(tx: number, commit: boolean): Promise<void> {
    await this.#request(XsType.XS_TRANSACTION_END, nulStrings(commit ? 'T' : 'F'), tx, 'transaction_end', undefined);
  }

  async transaction<T>(fn: (tx: number) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const tx = await this.transactionStart();
      let result: T;
      try {
        result = await fn(tx);
      } catch (err) {
        await this.transactionEnd(tx, false).catch(() => undefined);
        throw err;
      }
      try {
        await this.transactionEnd(tx, true);
        return result;
      } catch (err) {
        if (!(err instanceof XenstoreError) || err.code !== 'EAGAIN' || attempt >= this.#maxAttempts) throw err;
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#transport.close();
    this.#shutdown();
  }

  /** Sends a raw request (for operations outside XenstoreClient, e.g. XS_INTRODUCE); resolves with the reply payload. */
  request(type: number, payload: Uint8Array, tx = 0): Promise<Uint8Array> {
    return this.#request(type, payload, tx, xsTypeName(type).slice(3).toLowerCase(), undefined);
  }

  async #directoryParts(path: string, tx: number): Promise<string[]> {
    // DIRECTORY_PART: the reply is <gencnt>|<names>|*, with an extra empty name once complete;
    // a changed gencnt means the list moved under us, so start over.
    for (let attempt = 0; attempt < this.#maxAttempts; attempt++) {
      const names: string[] = [];
      let offset = 0;
      let gen: string | undefined;
      for (;;) {
        const reply = await this.#request(XsType.XS_DIRECTORY_PART, nulStrings(path, String(offset)), tx, 'directory_part', path);
        const nul = reply.indexOf(0);
        const g = bytesText(reply.subarray(0, nul));
        if (gen !== undefined && g !== gen) break;
        gen = g;
        const body = reply.subarray(nul + 1);
        const complete = body.length > 0 && body[body.length - 1] === 0 && (body.length === 1 || body[body.length - 2] === 0);
        const list = complete ? body.subarray(0, body.length - 1) : body;
        names.push(...splitNul(list));
        offset += list.length;
        if (complete) return names;
        if (list.length === 0) throw xsError('EIO', 'directory_part', path, 'no progress');
      }
    }
    throw xsError('EAGAIN', 'directory_part', path, 'directory kept changing');
  }

  #request(type: number, payload: Uint8Array, tx: number, op: string, path: string | undefined): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(xsError('EIO', op, path, 'connection closed'));
    if (payload.length > XENSTORE_PAYLOAD_MAX) {
      return Promise.reject(xsError('E2BIG', op, path, `payload of ${payload.length} bytes > ${XENSTORE_PAYLOAD_MAX}`));
    }
    const reqId = this.#nextReq;
    this.#nextReq = this.#nextReq >= 0xffffffff ? 1 : this.#nextReq + 1;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.#pending.set(reqId, { type, op, path, resolve, reject });
      this.#transport.send(encodeMessage(type, reqId, tx, payload));
    });
  }

  #receive(msg: XsMessage): void {
    if (msg.type === XsType.XS_WATCH_EVENT) {
      this.#dispatchEvent(msg.payload);
      return;
    }
    const pending = this.#pending.get(msg.reqId);
    if (pending === undefined) return; // a reply to nobody: ignore, as libxenstore would
    this.#pending.delete(msg.reqId);
    if (msg.type === XsType.XS_ERROR) {
      pending.reject(xsError(splitNul(msg.payload)[0] ?? 'EIO', pending.op, pending.path));
    } else if (msg.type !== pending.type) {
      pending.reject(xsError('EIO', pending.op, pending.path, `reply of type ${xsTypeName(msg.type)}`));
    } else {
      pending.resolve(msg.payload);
    }
  }

  #dispatchEvent(payload: Uint8Array): void {
    const [path, token] = splitNul(payload);
    if (path === undefined || token === undefined) return;
    const entries = this.#watches.get(token);
    if (entries === undefined) return;
    const matching = entries.filter((e) => isChildOf(path, e.path) || isChildOf(e.path, path));
    for (const e of matching.length > 0 ? matching : entries) e.callback(path, token);
  }

  #removeWatch(token: string, entry: WatchEntry): void {
    const list = this.#watches.get(token);
    if (list === undefined) return;
    const i = list.indexOf(entry);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#watches.delete(token);
  }

  #fail(reqId: number, err: Error): void {
    const pending = this.#pending.get(reqId);
    if (pending === undefined) return;
    this.#pending.delete(reqId);
    pending.reject(err);
  }

  #shutdown(): void {
    if (this.#closed && this.#pending.size === 0) return;
    this.#closed = true;
    this.#watches.clear();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(xsError('EIO', p.op, p.path, 'connection closed'));
  }
}

/** The client end in a worker: `port` is the MessagePort the daemon serves for `domid` (see XenstoreDaemon.createPort). */
export function clientFromPort(port: MessagePort, domid: number): XsClient {
  return new XsClient(messagePortTransport(port), domid);
}

/** Connects to a xenstored Unix socket (ours or the real one); such a connection speaks for dom0. */
export function connectUnix(path: string): Promise<XsClient> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(path);
    socket.once('error', (err) => reject(xsError('EIO', 'connect', path, err.message)));
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(new XsClient(socketTransport(socket), 0));
    });
  });
}

/**
 * What connectInProcess needs of a XenstoreDaemon: its connect(). Named here so the client does not
 * import the daemon (workers load the client alone).
 */
export interface XsServer {
  connect(domid: number, transport: XsTransport): unknown;
}

/** A client speaking for `domid` to `daemon` (a XenstoreDaemon) over an in-process transport pair. */
export function connectInProcess(daemon: XsServer, domid: number): XsClient {
  const [served, mine] = transportPair();
  daemon.connect(domid, served);
  return new XsClient(mine, domid);
}
