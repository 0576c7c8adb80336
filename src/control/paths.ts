// Where the control socket lives when no --control-socket is given: /run/blkback/control.sock for
// root (a daemon's place, cleared at boot); for other users their runtime directory.
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT_CONTROL_SOCKET = '/run/blkback/control.sock';
/** The iSCSI target's own socket name, so a target and a backend can run on one host (as in dom0). */
export const ISCSI_TARGET_SOCKET_NAME = 'iscsi-target.sock';

export function defaultControlSocket(env: NodeJS.ProcessEnv = process.env, uid: number = process.getuid?.() ?? 0, name = 'control.sock'): string {
  if (uid === 0) return join('/run/blkback', name);
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && runtime !== '') return join(runtime, 'blkback', name);
  return join(tmpdir(), `blkback-${uid}`, name);
}
