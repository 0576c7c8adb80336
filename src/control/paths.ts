// Where the control socket lives when no --control-socket is given: /run/blkback/control.sock for
// root (a daemon's place, cleared at boot); for other users their runtime directory
// ($XDG_RUNTIME_DIR/blkback), else $TMPDIR/blkback-<uid>.
//
// Anyone can create /tmp/blkback-<uid> before its user first runs blkback, and whoever owns the
// directory (or may write to it) can replace the socket inside with their own and read what `ctl`
// sends. So the default directory is used only if it is ours, a real directory (not a symbolic
// link) and writable by nobody else; otherwise the server refuses to start and says why. A path the
// user names is the user's choice and is not checked this way.
import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { BlockError, Errno } from '../internal/errors.ts';

export const ROOT_CONTROL_SOCKET = '/run/blkback/control.sock';
/** The iSCSI target's own socket name, so a target and a backend can run on one host (as in dom0). */
export const ISCSI_TARGET_SOCKET_NAME = 'iscsi-target.sock';

/** The directory the default sockets of `uid` live in. */
export function defaultSocketDirectory(env: NodeJS.ProcessEnv = process.env, uid: number = process.getuid?.() ?? 0): string {
  if (uid === 0) return '/run/blkback';
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && runtime !== '') return join(runtime, 'blkback');
  return join(tmpdir(), `blkback-${uid}`);
}

export function defaultControlSocket(env: NodeJS.ProcessEnv = process.env, uid: number = process.getuid?.() ?? 0, name = 'control.sock'): string {
  return join(defaultSocketDirectory(env, uid), name);
}

export interface SocketDirectoryOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** The uid the directory must belong to (default: our effective uid). */
  readonly uid?: number;
  /** Other users will connect (--allow-uid): let them search the default directory (mode 0711). */
  readonly openToOthers?: boolean;
}

/**
 * Makes the directory of a socket at `path` ready. For the default directory: creates it 0700 (0711
 * when others may connect), and refuses one that is a symbolic link, not a directory, someone
 * else's, or writable by group or others. For any other path: creates missing directories 0700.
 */
export function prepareSocketDirectory(path: string, options: SocketDirectoryOptions = {}): void {
  const uid = options.uid ?? process.geteuid?.() ?? 0;
  const dir = dirname(resolve(path));
  const defaultDir = resolve(defaultSocketDirectory(options.env ?? process.env, uid));
  const mode = options.openToOthers === true ? 0o711 : 0o700;
  if (dir !== defaultDir) {
    mkdirSync(dir, { recursive: true, mode });
    return;
  }
  mkdirSync(dirname(dir), { recursive: true, mode: 0o700 });
  try {
    mkdirSync(dir, { mode });
    chmodSync(dir, mode); // mkdir's mode passes through the umask
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  checkSocketDirectory(dir, uid);
  if (options.openToOthers === true) {
    const st = lstatSync(dir);
    if ((st.mode & 0o011) !== 0o011) chmodSync(dir, (st.mode & 0o7777) | 0o011);
  }
}

/** Throws, saying why and what to do, unless `dir` is a real directory of `uid` that nobody else may write to. */
export function checkSocketDirectory(dir: string, uid: number = process.geteuid?.() ?? 0, option = '--control-socket'): void {
  const st = lstatSync(dir);
  const refuse = (why: string): never => {
    throw new BlockError(
      'BLK_ERR_UNSAFE_DIRECTORY',
      `socket directory ${dir} ${why}, so someone else could replace the socket in it. ` +
        `Remove it${st.uid === uid ? '' : ' (as its owner or root)'}: rm -r ${dir}, or name another place with ${option} PATH` +
        `${uid === 0 ? '' : ' (or set XDG_RUNTIME_DIR to your own runtime directory)'}`,
      { errno: Errno.EACCES },
    );
  };
  if (st.isSymbolicLink()) refuse('is a symbolic link');
  if (!st.isDirectory()) refuse('is not a directory');
  if (st.uid !== uid) refuse(`belongs to uid ${st.uid}, not to uid ${uid} who runs blkback`);
  if ((st.mode & 0o022) !== 0)
    refuse(`is writable by ${(st.mode & 0o020) !== 0 ? 'its group' : 'others'} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`);
}
