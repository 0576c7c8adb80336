// Real Xen's toolstack for the control socket: `xl block-attach DOMID SPEC` and
// `xl block-detach DOMID VDEV`, run without a shell. xl (libxl) writes the xenstore entries, runs
// the hotplug script and waits for the backend itself; its complaint, if any, is passed on.
import { execFile } from 'node:child_process';
import type { XlDisk } from '../config/xl-disk.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import type { Toolstack } from './toolstack.ts';

export interface XlToolstackOptions {
  /** The xl program (default "xl", found on PATH). */
  readonly xl?: string;
  /** Environment for xl (default: ours). */
  readonly env?: NodeJS.ProcessEnv;
  /** xl waits up to 10 s for a device itself; this bounds the whole command (default 60 s). */
  readonly timeoutMs?: number;
}

export function xlToolstack(options: XlToolstackOptions = {}): Toolstack {
  const xl = options.xl ?? 'xl';
  const run = (args: readonly string[]): Promise<void> =>
    new Promise((resolve, reject) => {
      execFile(xl, args, { env: options.env ?? process.env, timeout: options.timeoutMs ?? 60_000, maxBuffer: 1 << 20 }, (err, _stdout, stderr) => {
        if (err === null) return resolve();
        const command = `${xl} ${args.map(quote).join(' ')}`;
        const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null };
        if (e.code === 'ENOENT') {
          return reject(
            new BlockError('BLK_ERR_TOOLSTACK', `cannot run ${xl}: not found on PATH (install the Xen tools, e.g. the xen-utils package)`, {
              errno: Errno.ENOENT,
              cause: err,
            }),
          );
        }
        const said = lastLines(stderr);
        const how =
          e.killed === true
            ? `was stopped after ${options.timeoutMs ?? 60_000} ms`
            : typeof e.code === 'number'
              ? `exited with status ${e.code}`
              : `failed (${e.signal ?? e.message})`;
        reject(new BlockError('BLK_ERR_TOOLSTACK', `${command} ${how}${said === '' ? '' : `: ${said}`}`, { cause: err }));
      });
    });
  return {
    name: 'xl',
    attach: (domid: number, disk: XlDisk) => run(['block-attach', String(domid), disk.spec]),
    detach: (domid: number, _devid: number, vdev: string) => run(['block-detach', String(domid), vdev]),
  };
}

function quote(arg: string): string {
  return /^[\w./:=,@+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** xl's last few stderr lines, on one line: libxl's useful message is at the end. */
function lastLines(stderr: string | Buffer): string {
  const lines = String(stderr)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return lines.slice(-3).join(' / ');
}
