// The NBD servers `bench --suite net` drives: ours (`blkback nbd-server`, a RAM disk), nbdkit's memory
// plugin and qemu-nbd on a /dev/shm raw file, each a child process on a Unix socket in a directory of
// its own. Each is started in the foreground so the PID we keep is the server's (its CPU time is read
// from /proc), and is known ready once its socket accepts a connection.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, ftruncateSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onPath } from './iscsi-target.ts';

export const NBD_SERVERS = ['blkback', 'nbdkit', 'qemu-nbd'] as const;
export type NbdServerKind = (typeof NBD_SERVERS)[number];

export interface RunningNbdServer {
  readonly kind: NbdServerKind;
  /** nbd+unix:///EXPORT?socket=PATH */
  readonly uri: string;
  readonly pid: number;
  /** The command line that started it, for the report. */
  readonly command: string;
  stop(): Promise<void>;
}

const EXPORT = 'bench';
const READY_TIMEOUT_MS = 15_000;

/** The tool each server needs on PATH (ours needs none: it is this program). */
const TOOL: Record<NbdServerKind, string | null> = { blkback: null, nbdkit: 'nbdkit', 'qemu-nbd': 'qemu-nbd' };

/** Why `kind` cannot start here, or null. */
export function nbdServerUnavailable(kind: NbdServerKind): string | null {
  const tool = TOOL[kind];
  if (tool === null || onPath(tool)) return null;
  return `${tool} not found (Debian package ${kind === 'nbdkit' ? 'nbdkit' : 'qemu-utils'})`;
}

/** Starts `kind` serving `bytes` of RAM as one export. */
export async function startNbdServer(kind: NbdServerKind, bytes: number): Promise<RunningNbdServer> {
  const dir = mkdtempSync(join(tmpdir(), `blkback-net-bench-${kind}-`));
  const socket = join(dir, 'nbd.sock');
  let image: string | null = null;
  let cmd: string;
  let args: string[];
  let exportName = EXPORT;
  if (kind === 'nbdkit') {
    // nbdkit serves every export name; '' keeps its URI the plain one.
    exportName = '';
    cmd = 'nbdkit';
    args = ['-f', '--exit-with-parent', '-U', socket, 'memory', `size=${bytes}`];
  } else if (kind === 'qemu-nbd') {
    // tmpfs refuses O_DIRECT: the page cache is the RAM here. -e: fio opens one connection per job;
    // -t: keep serving after a client leaves (the readiness probe is one).
    image = `/dev/shm/blkback-net-bench-${process.pid}.raw`;
    const fd = openSync(image, 'w');
    ftruncateSync(fd, bytes);
    closeSync(fd);
    cmd = 'qemu-nbd';
    args = ['-k', socket, '-x', EXPORT, '-f', 'raw', '-t', '-e', '64', '--cache=writeback', '--aio=threads', image];
  } else {
    cmd = process.execPath;
    args = [new URL('../cli/main.js', import.meta.url).pathname, 'nbd-server', '--listen', `unix:${socket}`, '--export', `${EXPORT}=ram:${bytes}`];
  }
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-4000);
  });
  const cleanup = (): void => {
    rmSync(dir, { recursive: true, force: true });
    if (image !== null) rmSync(image, { force: true });
  };
  const command = `${kind === 'blkback' ? 'blkback' : cmd} ${args.slice(kind === 'blkback' ? 1 : 0).join(' ')}`;
  try {
    await waitForSocket(socket, child, () => stderr);
  } catch (err) {
    await stopChild(child);
    cleanup();
    throw new Error(`${command}: ${(err as Error).message}`);
  }
  return {
    kind,
    uri: `nbd+unix:///${exportName}?socket=${socket}`,
    pid: child.pid!,
    command,
    async stop() {
      await stopChild(child);
      cleanup();
    },
  };
}

/** Resolves once `path` accepts a connection; rejects when the child exits first or on timeout. */
async function waitForSocket(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`exited (${child.exitCode ?? child.signalCode}) before serving: ${stderr().trim()}`);
    if (await connects(path)) return;
    if (Date.now() > deadline) throw new Error(`no socket at ${path} after ${READY_TIMEOUT_MS / 1000} s: ${stderr().trim()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function connects(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** SIGTERM, then SIGKILL after 5 s; resolves when the child is gone. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
