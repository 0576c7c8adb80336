// Where the control socket lives when no --control-socket is given: /run/blkback/control.sock for
// root (a daemon's place, cleared at boot); for other users their runtime directory.
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT_CONTROL_SOCKET = '/run/blkback/control.sock';

export function defaultControlSocket(env: NodeJS.ProcessEnv = process.env, uid: number = process.getuid?.() ?? 0): string {
  if (uid === 0) return ROOT_CONTROL_SOCKET;
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && runtime !== '') return join(runtime, 'blkback', 'control.sock');
  return join(tmpdir(), `blkback-${uid}`, 'control.sock');
}
