// Serves a ControlTarget on a Unix socket. The socket is created 0600 and each connection's
// credentials are checked (internal/unix-listener.ts): only root, the user running blkback and the
// uids of `allowUids` (--allow-uid) may drive it; anyone else gets one error line and is cut off.
// Each connection's requests are answered in order; a bad request gets an error answer and the
// connection stays open. A stale socket file left by a dead server is replaced; a live server at the
// path is never displaced.
//
// Memory per connection is bounded whatever the client does: lines are read one socket read at a
// time (the decoder holds at most MAX_REQUEST_LINE of an unfinished line), and no further read is
// taken until every line of the last one is answered and the answers have left our buffer (the
// socket drained). A client that pipelines but reads slowly is slowed down, not cut off; one that
// takes none of our answers for WRITE_STALL_MS is cut off.
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { BlockError, Errno, UsageError } from '../internal/errors.ts';
import { listenUnixSocket, otherAllowedUids } from '../internal/unix-listener.ts';
import { prepareSocketDirectory } from './paths.ts';
import { ControlError, decodeRequest, encodeError, encodeResult, LineDecoder, MAX_REQUEST_LINE } from './protocol.ts';
import type { ControlErrorBody, ControlRequest, LineEvent } from './protocol.ts';
import type { ControlTarget } from './target.ts';

export interface ControlServerOptions {
  readonly path: string;
  readonly log?: (line: string) => void;
  /** Connections open at once; more are closed at accept (default 32). */
  readonly maxConnections?: number;
  /** A connection silent this long is closed (default 10 minutes). */
  readonly idleMs?: number;
  /**
   * Users (uids) also admitted, besides root and the uid running us (--allow-uid; default: what
   * configureSocketAccess set for the process, else none). With any, the socket is 0666 and the
   * credential check is the gate.
   */
  readonly allowUids?: readonly number[];
}

export interface ControlServer {
  readonly path: string;
  /** Stops listening, closes connections and removes the socket file. */
  close(): Promise<void>;
}

/** A client that takes none of our answers for this long is cut off (its slot is worth more). */
const WRITE_STALL_MS = 60_000;

export async function serveControl(target: ControlTarget, options: ControlServerOptions): Promise<ControlServer> {
  const path = options.path;
  const log = options.log ?? (() => undefined);
  const maxConnections = options.maxConnections ?? 32;
  const idleMs = options.idleMs ?? 10 * 60_000;
  await claimPath(path, otherAllowedUids(options.allowUids).length > 0);

  const listener = await listenUnixSocket(
    path,
    (socket, othersOpen) => {
      socket.on('error', () => undefined); // a client that vanishes mid-answer is not our error
      if (othersOpen >= maxConnections) {
        socket.end(encodeError(null, { code: 'CTL_ERR_FAILED', message: `too many control connections (${maxConnections})` }));
        return;
      }
      socket.setTimeout(idleMs, () => socket.destroy());
      serveConnection(socket, target, log);
    },
    {
      name: 'control',
      ...(options.log === undefined ? {} : { log: options.log }),
      ...(options.allowUids === undefined ? {} : { allowUids: options.allowUids }),
      refusal: (_peer, why) => encodeError(null, { code: 'CTL_ERR_FAILED', message: `${path}: refused: ${why}` }),
    },
  );
  log(`control: listening on ${path}`);

  return { path, close: () => listener.close() };
}

function serveConnection(socket: net.Socket, target: ControlTarget, log: (line: string) => void): void {
  const decoder = new LineDecoder(MAX_REQUEST_LINE);
  // The lines of the last read, answered in order before the next read is taken.
  let lines: LineEvent[] = [];
  let next = 0;
  let pumping = false;
  const pump = async (): Promise<void> => {
    pumping = true;
    while (next < lines.length) {
      const text = await answerLine(target, lines[next++]!, log);
      if (socket.destroyed || !socket.writable) return;
      // Wait for the client to take what we wrote before answering more: a client that writes
      // requests but never reads would otherwise grow our buffer without bound.
      if (!socket.write(text)) await drained(socket, WRITE_STALL_MS);
      if (socket.destroyed) return;
    }
    lines = [];
    next = 0;
    pumping = false;
    socket.resume();
  };
  socket.on('data', (chunk: Buffer) => {
    const events = decoder.push(chunk);
    if (events.length === 0) return;
    for (const event of events) lines.push(event);
    socket.pause();
    if (!pumping) {
      pump().catch((err: unknown) => {
        log(`control: connection dropped: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        socket.destroy();
      });
    }
  });
}

/** Resolves when `socket` has drained or closed; destroys it if it does neither within `stallMs`. */
function drained(socket: net.Socket, stallMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => socket.destroy(), stallMs);
    const done = (): void => {
      clearTimeout(timer);
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

async function answerLine(target: ControlTarget, event: LineEvent, log: (line: string) => void): Promise<string> {
  if ('tooLong' in event) return encodeError(null, { code: 'CTL_ERR_TOO_LONG', message: `request line longer than ${MAX_REQUEST_LINE} bytes; skipped` });
  const decoded = decodeRequest(event.line);
  if (!decoded.ok) return encodeError(decoded.id, decoded.error);
  return answer(target, decoded.value, log);
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

/** Makes `path` ours to listen on: readies its directory, removes a dead server's socket, refuses a live one's. */
async function claimPath(path: string, openToOthers: boolean): Promise<void> {
  prepareSocketDirectory(path, { openToOthers });
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
