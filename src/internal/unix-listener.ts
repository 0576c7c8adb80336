// A Unix-socket listener that decides who may connect, keeps track of its connections (closing it
// ends them and removes the socket file), and creates the socket file with its final mode.
// Claiming the path (stale socket or live server) is the caller's.
//
// Who may connect. Whoever connects to the xenstore socket speaks for dom0, and to the control
// socket attaches host paths to guests, so:
//  - the file is 0600 (root and the uid running us) whatever the umask, and it never exists with
//    a wider mode: bind() creates it with the umask's mode, so we bind inside a fresh 0700
//    directory of our own beside the final path, chmod the socket there, then link() it into place
//    (atomic, and like bind it fails if the path exists) and remove the private name. Setting the
//    umask around listen() would also work (libuv binds synchronously inside listen()), but the
//    umask is process-wide (a file another thread creates meanwhile would get it) and cannot be
//    set from a worker thread.
//  - every accepted connection's SO_PEERCRED is read (peer-cred.ts): uids other than root, ours and
//    those allowed (--allow-uid) are closed at once and logged with their uid and pid. With allowed
//    uids the file is 0666 instead (connect() needs write permission) and this check is the gate.
//  - where SO_PEERCRED cannot be read (no koffi), the 0600 mode admits exactly root and our uid,
//    the default rule, as the kernel checks it at connect(): we rely on it and say so once in the
//    log; --allow-uid, which needs the check, is refused at start.
//  - a directory anyone may write to without the sticky bit is refused: anyone could replace our
//    socket with theirs (in /tmp, sticky, only its owner may remove it).
import { chmodSync, linkSync, lstatSync, mkdtempSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { BlockError, Errno, UsageError } from './errors.ts';
import { peerCredentialsProblem, readPeerCredentials } from './peer-cred.ts';
import type { PeerCredentials } from './peer-cred.ts';

export interface UnixListener {
  /** Stops listening, destroys open connections and removes the socket file. */
  close(): Promise<void>;
}

/** Who may connect besides root and the uid running us, and where refusals are reported. */
export interface SocketAccess {
  /** Users (uids) also admitted (--allow-uid). Root and our own uid always are. */
  readonly allowUids?: readonly number[];
  /** Where refused connections are reported (default: stderr). */
  readonly log?: (line: string) => void;
}

export interface UnixListenOptions extends SocketAccess {
  /** What the socket serves, in log lines and errors ("control", "xenstore"). */
  readonly name?: string;
  /** Text sent to a refused peer before the connection is closed (a protocol's error line). */
  readonly refusal?: (peer: PeerCredentials, why: string) => string | undefined;
}

/** The longest path a sockaddr_un holds (108 bytes with the terminating NUL). */
export const MAX_SOCKET_PATH = 107;
/** Refusals logged per listener per minute; more are counted and summed up in the next line. */
const REFUSAL_LOG_PER_MINUTE = 20;
/** A refused peer that does not take its refusal line is cut off after this long. */
const REFUSAL_LINGER_MS = 1000;

let processDefaults: SocketAccess = {};

/**
 * Sets, for the whole process, who may connect to the sockets opened afterwards without options of
 * their own (the commands call it once with their --allow-uid values and their log).
 */
export function configureSocketAccess(access: SocketAccess): void {
  processDefaults = access;
}

/** Parses the values of --allow-uid: numeric user ids (as `id -u NAME` prints them). */
export function parseAllowUids(values: readonly string[] | undefined, command: string): number[] {
  return (values ?? []).map((text) => {
    const n = Number(text);
    // (uid_t)-1 is not a user: chown(2) reads it as "leave unchanged".
    if (!/^\d+$/.test(text) || n >= 0xffff_ffff) {
      throw new UsageError(`${command}: --allow-uid wants a numeric user id ('id -u NAME' prints it), got '${text}'`);
    }
    return n;
  });
}

/**
 * Takes every `--allow-uid UID` (or `--allow-uid=UID`) before a `--` out of a command line, so that
 * a command adds the option without its own parser knowing it; returns the rest and the uids.
 */
export function takeAllowUidOptions(argv: readonly string[], command: string): { rest: string[]; allowUids: number[] } {
  const rest: string[] = [];
  const texts: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (arg.startsWith('--allow-uid=')) {
      texts.push(arg.slice('--allow-uid='.length));
    } else if (arg === '--allow-uid') {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) throw new UsageError(`${command}: --allow-uid wants a numeric user id`);
      texts.push(value);
      i++;
    } else {
      rest.push(arg);
    }
  }
  return { rest, allowUids: parseAllowUids(texts, command) };
}

function ownUid(): number {
  return process.geteuid?.() ?? 0;
}

/** The uids admitted besides root and ours: `allowUids`, else the process's configured ones. */
export function otherAllowedUids(allowUids?: readonly number[]): number[] {
  const own = ownUid();
  return [...new Set(allowUids ?? processDefaults.allowUids ?? [])].filter((uid) => uid !== 0 && uid !== own);
}

function admittedText(own: number, others: readonly number[]): string {
  const base = own === 0 ? 'root' : `root and uid ${own}`;
  return others.length === 0 ? base : `${base} and --allow-uid ${others.join(', ')}`;
}

/** A short temporary name beside `path`, for binding in private (same file system, so link works). */
function privateDirectoryPrefix(dir: string): string {
  // mkdtemp adds 6 characters; the socket inside is called "s".
  const base = dir.endsWith('/') ? dir : `${dir}/`; // not join(): it would drop a lone "."
  return Buffer.byteLength(`${base}.blkback-XXXXXX/s`) <= MAX_SOCKET_PATH ? `${base}.blkback-` : `${base}.`;
}

/** Refuses a directory where anyone may replace our socket (writable by all, no sticky bit). */
function checkParent(path: string, name: string): void {
  const dir = dirname(path);
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    throw new BlockError('BLK_ERR_CONFIG', `${name} socket ${path}: cannot use its directory: ${(err as Error).message}`, { errno: Errno.ENOENT, cause: err });
  }
  if ((st.mode & 0o002) !== 0 && (st.mode & 0o1000) === 0) {
    throw new BlockError(
      'BLK_ERR_CONFIG',
      `${name} socket ${path}: its directory ${dir} is writable by everyone and not sticky, so anyone could replace the socket; ` +
        `use a directory only you can write to (or chmod +t ${dir}, as /tmp is)`,
      { errno: Errno.EACCES },
    );
  }
}

function listen(server: net.Server, path: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Binds `server` at `path` with file mode `mode` and no moment at which the file is more open:
 * bound inside a private directory, chmodded there, then linked into place.
 */
async function bindWithMode(server: net.Server, path: string, mode: number, name: string): Promise<void> {
  const prefix = privateDirectoryPrefix(dirname(path));
  if (Buffer.byteLength(`${prefix}XXXXXX/s`) > MAX_SOCKET_PATH || Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new BlockError('BLK_ERR_CONFIG', `${name} socket ${path}: the path is too long for a Unix socket (keep it under ${MAX_SOCKET_PATH - 10} bytes)`, {
      errno: Errno.EINVAL,
    });
  }
  const privateDir = mkdtempSync(prefix);
  try {
    chmodSync(privateDir, 0o700); // mkdtemp's 0700 passes through the umask too
    const inner = join(privateDir, 's');
    await listen(server, inner);
    try {
      chmodSync(inner, mode);
      try {
        linkSync(inner, path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') {
          throw new BlockError('BLK_ERR_BUSY', `${name} socket ${path}: the path was taken while we started (another server?)`, {
            errno: Errno.EBUSY,
            cause: err,
          });
        }
        // A file system without hard links: rename, which would replace a file created since the
        // caller looked, hence the check (a small window, only on such file systems).
        if (lstatOrUndefined(path) !== undefined) throw err;
        renameSync(inner, path);
      }
    } catch (err) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      throw err;
    }
  } finally {
    rmSync(privateDir, { recursive: true, force: true });
  }
}

function lstatOrUndefined(path: string): { dev: number; ino: number } | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** Listens on `path`; `onConnection` gets each admitted socket and how many others are open. */
export async function listenUnixSocket(
  path: string,
  onConnection: (socket: net.Socket, othersOpen: number) => void,
  options: UnixListenOptions = {},
): Promise<UnixListener> {
  const name = options.name ?? 'unix';
  const log = options.log ?? processDefaults.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const own = ownUid();
  const others = otherAllowedUids(options.allowUids);
  const admitted = new Set([0, own, ...others]);
  const admits = admittedText(own, others);
  const credentialsProblem = peerCredentialsProblem();
  if (credentialsProblem !== undefined && others.length > 0) {
    throw new BlockError(
      'BLK_ERR_UNSUPPORTED',
      `${name} socket ${path}: --allow-uid ${others.join(', ')} needs SO_PEERCRED to tell users apart, and it cannot be read here ` +
        `(${credentialsProblem}); without --allow-uid only ${admittedText(own, [])} may connect`,
      { errno: Errno.EOPNOTSUPP },
    );
  }
  checkParent(path, name);

  const sockets = new Set<net.Socket>();
  // Refused peers still taking their refusal line: closed with the listener, but not counted as
  // connections (a flood of them must not use up the slots of those admitted).
  const refused = new Set<net.Socket>();
  let logged = 0;
  let unlogged = 0;
  let windowStart = 0;
  const refuse = (socket: net.Socket, peer: PeerCredentials | undefined, why: string): void => {
    refused.add(socket);
    socket.on('close', () => refused.delete(socket));
    socket.on('error', () => undefined);
    const now = Date.now();
    if (now - windowStart >= 60_000) {
      windowStart = now;
      logged = 0;
    }
    if (logged < REFUSAL_LOG_PER_MINUTE) {
      logged++;
      log(`${name} socket ${path}: refused a connection: ${why}${unlogged > 0 ? ` (and ${unlogged} earlier refusals not logged)` : ''}`);
      unlogged = 0;
    } else {
      unlogged++;
    }
    const text = peer === undefined ? undefined : options.refusal?.(peer, why);
    if (text === undefined) return void socket.destroy();
    socket.setTimeout(REFUSAL_LINGER_MS, () => socket.destroy());
    socket.end(text, () => socket.destroy());
  };

  const server = net.createServer((socket) => {
    if (credentialsProblem === undefined) {
      let peer: PeerCredentials;
      try {
        peer = readPeerCredentials(socket);
      } catch (err) {
        return refuse(socket, undefined, `its credentials cannot be read (${(err as Error).message})`);
      }
      if (!admitted.has(peer.uid)) {
        return refuse(socket, peer, `uid ${peer.uid} (pid ${peer.pid}) may not connect: only ${admits} may (--allow-uid ${peer.uid} would admit it)`);
      }
    }
    const count = sockets.size;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket, count);
  });
  await bindWithMode(server, path, others.length > 0 ? 0o666 : 0o600, name);
  const ours = lstatOrUndefined(path);
  // After listening, an error is an accept that failed (EMFILE...): worth a line, not a crash.
  server.on('error', (err) => log(`${name} socket ${path}: ${err.message}`));
  if (credentialsProblem !== undefined) {
    log(`${name} socket ${path}: peer credentials cannot be read (${credentialsProblem}); relying on the socket's mode 0600, which admits ${admits}`);
  }

  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        for (const s of refused) s.destroy();
        server.close(() => {
          // Remove the file only if it is still ours (a newer server may have replaced a stale one).
          const now = lstatOrUndefined(path);
          if (ours !== undefined && now !== undefined && now.dev === ours.dev && now.ino === ours.ino) {
            try {
              unlinkSync(path);
            } catch {
              // already gone
            }
          }
          resolve();
        });
      });
      return closing;
    },
  };
}
