// Serves a ControlTarget on a Unix socket (mode 0600: only the user running blkback, normally root,
// may drive it). Each connection's requests are answered in order; a bad request gets an error
// answer and the connection stays open. A stale socket file left by a dead server is replaced; a
// live server at the path is never displaced.
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { BlockError, Errno, UsageError } from '../internal/errors.ts';
import { listenUnixSocket } from '../internal/unix-listener.ts';
import { ControlError, decodeRequest, encodeError, encodeResult, LineDecoder, MAX_REQUEST_LINE } from './protocol.ts';
import type { ControlErrorBody, ControlRequest } from './protocol.ts';
import type { ControlTarget } from './target.ts';

export interface ControlServerOptions {
  readonly path: string;
  readonly log?: (line: string) => void;
  /** Connections open at once; more are closed at accept (default 32). */
  readonly maxConnections?: number;
  /** A connection silent this long is closed (default 10 minutes). */
  readonly idleMs?: number;
}

export interface ControlServer {
  readonly path: string;
  /** Stops listening, closes connections and removes the socket file. */
  close(): Promise<void>;
}

/** Requests read but not yet answered, per connection, before we stop reading from it. */
const MAX_QUEUED = 16;
/** Bytes of answers a client has not read before we hang up on it. */
const MAX_UNREAD_ANSWERS = 8 << 20;

export async function serveControl(target: ControlTarget, options: ControlServerOptions): Promise<ControlServer> {
  const path = options.path;
  const log = options.log ?? (() => undefined);
  const maxConnections = options.maxConnections ?? 32;
  const idleMs = options.idleMs ?? 10 * 60_000;
  await claimPath(path);

  const listener = await listenUnixSocket(path, (socket, othersOpen) => {
    if (othersOpen >= maxConnections) {
      socket.end(encodeError(null, { code: 'CTL_ERR_FAILED', message: `too many control connections (${maxConnections})` }));
      return;
    }
    socket.on('error', () => undefined); // a client that vanishes mid-answer is not our error
    socket.setTimeout(idleMs, () => socket.destroy());
    serveConnection(socket, target, log);
  });
  // The socket is created with the umask's mode (0755 under the usual 022, which already keeps other
  // users from connecting: connect needs write permission); narrow it to the owner.
  chmodSync(path, 0o600);
  log(`control: listening on ${path}`);

  return { path, close: () => listener.close() };
}

function serveConnection(socket: net.Socket, target: ControlTarget, log: (line: string) => void): void {
  const decoder = new LineDecoder(MAX_REQUEST_LINE);
  let queue: Promise<void> = Promise.resolve();
  let queued = 0;
  const send = (text: string): void => {
    if (socket.destroyed || !socket.writable) return;
    // A client that writes requests but never reads its answers would grow our buffer without bound.
    if (socket.writableLength > MAX_UNREAD_ANSWERS) return void socket.destroy();
    socket.write(text);
  };
  socket.on('data', (chunk: Buffer) => {
    for (const event of decoder.push(chunk)) {
      if ('tooLong' in event) {
        send(encodeError(null, { code: 'CTL_ERR_TOO_LONG', message: `request line longer than ${MAX_REQUEST_LINE} bytes; skipped` }));
        continue;
      }
      const decoded = decodeRequest(event.line);
      if (!decoded.ok) {
        send(encodeError(decoded.id, decoded.error));
        continue;
      }
      const request = decoded.value;
      queued++;
      if (queued >= MAX_QUEUED) socket.pause();
      queue = queue.then(async () => {
        send(await answer(target, request, log));
        queued--;
        if (queued < MAX_QUEUED && socket.isPaused()) socket.resume();
      });
    }
  });
}

async function answer(target: ControlTarget, request: ControlRequest, log: (line: string) => void): Promise<string> {
  try {
    const result = await dispatch(target, request);
    // Changes to what is served are worth a line in the daemon's log; reads are not.
    if (request.op === 'attach' || request.op === 'detach' || request.op === 'resize') log(`control: ${request.op}: ${JSON.stringify(result)}`);
    return encodeResult(request.id, result);
  } catch (err) {
    const body = errorBody(err);
    if (body.code === 'CTL_ERR_INTERNAL') log(`control: ${request.op} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    else if (request.op === 'attach' || request.op === 'detach' || request.op === 'resize') log(`control: ${request.op}: ${body.message}`);
    return encodeError(request.id, body);
  }
}

async function dispatch(target: ControlTarget, r: ControlRequest): Promise<unknown> {
  switch (r.op) {
    case 'list':
      return target.list();
    case 'stats':
      return target.stats(r.disk);
    case 'attach':
      return target.attach(r.domid, r.spec);
    case 'detach':
      return target.detach(r.domid, r.vdev);
    case 'resize':
      return target.resize(r.disk, r.size);
    case 'info':
      return target.info?.() ?? { service: 'blkback' };
    case 'iscsi-status':
      if (target.iscsiStatus === undefined) throw new ControlError('CTL_ERR_UNSUPPORTED', 'this server is not an iSCSI target');
      return target.iscsiStatus();
  }
}

/** What a thrown error says on the wire: our codes kept, a user's mistake as BAD_ARGUMENT, the rest FAILED or INTERNAL. */
export function errorBody(err: unknown): ControlErrorBody {
  if (err instanceof ControlError) return err.toBody();
  if (err instanceof UsageError) return { code: 'CTL_ERR_BAD_ARGUMENT', message: err.message };
  if (err instanceof BlockError) {
    const code = err.code === 'BLK_ERR_UNSUPPORTED' ? 'CTL_ERR_UNSUPPORTED' : 'CTL_ERR_FAILED';
    return { code, message: err.message, cause: err.code };
  }
  return { code: 'CTL_ERR_INTERNAL', message: `internal error: ${err instanceof Error ? err.message : String(err)}` };
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Makes `path` ours to listen on: creates its directory, removes a dead server's socket, refuses a live one's. */
async function claimPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) {
    throw new BlockError('BLK_ERR_BUSY', `control socket ${path}: the path exists and is not a socket; not touching it`, { errno: Errno.EEXIST });
  }
  if (await probe(path)) {
    throw new BlockError('BLK_ERR_BUSY', `control socket ${path}: another blkback is serving it (stop it first, or give another --control-socket)`, {
      errno: Errno.EBUSY,
    });
  }
  unlinkSync(path);
}
