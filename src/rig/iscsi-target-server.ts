// Our iSCSI target (`blkback iscsi-target`, the same build `serve` uses) started on the server's
// side of a storage link, ready once it logs "listening on".
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { StorageLink } from './link.ts';

const MAIN_JS = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const ISCSI_PORT = 3260;

export interface LinkTargetOptions {
  /** `--lun` values: '1=ram:256M'. */
  readonly luns: readonly string[];
  readonly targetName: string;
  /** Default 3260 in a namespace (the target has the namespace to itself); pick one on loopback. */
  readonly port?: number;
  readonly extraArgs?: readonly string[];
  readonly startTimeoutMs?: number;
}

export interface LinkTarget {
  readonly process: ChildProcess;
  /** HOST:PORT as initiators on the host reach it. */
  readonly portal: string;
  readonly targetName: string;
  /** QEMU's and libiscsi's form: iscsi://HOST:PORT/IQN/LUN. */
  url(lun: number): string;
  /** Everything the target wrote to stderr so far (its log). */
  log(): string;
  /** SIGTERM (it answers the commands in flight), SIGKILL after 5 s. */
  stop(): Promise<void>;
}

export async function startTargetBehindLink(link: StorageLink, o: LinkTargetOptions): Promise<LinkTarget> {
  const port = o.port ?? ISCSI_PORT;
  const portal = `${link.serverAddress}:${port}`;
  const args = [
    MAIN_JS,
    'iscsi-target',
    '--portal',
    portal,
    '--target-name',
    o.targetName,
    '--allow',
    'ALL',
    ...o.luns.flatMap((l) => ['--lun', l]),
    ...(o.extraArgs ?? []),
  ];
  // Its own control socket beside nobody else's: the default /run/blkback path is shared by all.
  if (!args.includes('--control-socket')) args.push('--control-socket', `/tmp/blkback-rig-${process.pid}-${port}-${link.serverAddress}.sock`);
  const child = link.spawnServer(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-64 * 1024);
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => finish(new Error(`iscsi-target did not listen on ${portal} within ${o.startTimeoutMs ?? 15_000} ms: ${stderr.trim()}`)),
      o.startTimeoutMs ?? 15_000,
    );
    const onData = (): void => {
      if (/listening on/.test(stderr)) finish();
    };
    const onExit = (code: number | null, signal: string | null): void =>
      finish(new Error(`iscsi-target exited (${signal ?? code}) before listening on ${portal}: ${stderr.trim()}`));
    function finish(err?: Error): void {
      clearTimeout(timer);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      if (err === undefined) resolve();
      else {
        child.kill('SIGKILL');
        reject(err);
      }
    }
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
  return {
    process: child,
    portal,
    targetName: o.targetName,
    url: (lun) => `iscsi://${portal}/${o.targetName}/${lun}`,
    log: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
