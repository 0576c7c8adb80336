// iSCSI targets as child processes, for the conformance gate (test/iscsi-conformance.test.ts) and
// `blkback bench --suite iscsi`: one shape for any target (a start function returning its URL, its
// pid for procfs CPU accounting and a stop that really stops it), Debian's tgtd in ./iscsi-tgt.ts
// and ours (`blkback iscsi-target`) here. One LUN (LUN 1) over a file, on 127.0.0.1, ACL ALL.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * thick: a plain LUN; thin: logical block provisioning (LBPME, UNMAP); readonly: write-protected;
 * thin-ram: thin on a RAM disk instead of the file (ours only). A tmpfs file has 4 KiB physical
 * blocks and a RAM disk 512-byte ones, and libiscsi's thin tests need both: UnmapUnaligned and
 * InvalidDataOutSize run only when a physical block holds several logical ones, while
 * GetLBAStatus.UnmapSingle expects (against SBC-3) the first descriptor at the asked LBA rounded to
 * a physical block, which holds only when a physical block is one logical block.
 */
export const LUN_MODES = ['thick', 'thin', 'readonly', 'thin-ram'] as const;
export type LunMode = (typeof LUN_MODES)[number];

export interface IscsiTargetOptions {
  /** The file backing LUN 1 (it must exist; its size is the LUN's). */
  readonly backingFile: string;
  readonly mode?: LunMode;
  /** TCP port on 127.0.0.1; 0 or absent picks a free one. */
  readonly port?: number;
  readonly targetName?: string;
}

export interface RunningTarget {
  /** 'tgt' or 'blkback': who serves. */
  readonly kind: string;
  readonly host: string;
  readonly port: number;
  readonly targetName: string;
  readonly lun: number;
  readonly mode: LunMode;
  /** iscsi://127.0.0.1:PORT/IQN/1, as libiscsi and qemu take it. */
  readonly url: string;
  /** iscsi://127.0.0.1:PORT/ (discovery). */
  readonly portalUrl: string;
  /** The serving process; its procfs stat counts the CPU time of all its threads. */
  readonly pid: number;
  /** What the process has printed so far (stdout and stderr interleaved). */
  output(): string;
  /** Stops the process and waits for it to exit (SIGKILL as the last resort). Idempotent. */
  stop(): Promise<void>;
}

export type StartTarget = (options: IscsiTargetOptions) => Promise<RunningTarget>;

export const DEFAULT_TARGET_NAME = 'iqn.2026-12.org.blkback:test';

/** IscsiTargetOptions with the defaults filled in. */
export interface TargetSettings {
  readonly port: number;
  readonly targetName: string;
  readonly mode: LunMode;
}

/** The port (a free one unless given), target name and LUN mode a start function serves with. */
export async function targetSettings(options: IscsiTargetOptions): Promise<TargetSettings> {
  const port = options.port !== undefined && options.port > 0 ? options.port : await freePort();
  return { port, targetName: options.targetName ?? DEFAULT_TARGET_NAME, mode: options.mode ?? 'thick' };
}

/** What a start function returns for its process once it serves LUN 1 on 127.0.0.1. */
export function runningTarget<K extends string>(
  kind: K,
  settings: TargetSettings,
  watch: ChildWatch,
  stop: () => Promise<void>,
): RunningTarget & { readonly kind: K } {
  const { port, targetName, mode } = settings;
  return {
    kind,
    host: '127.0.0.1',
    port,
    targetName,
    lun: 1,
    mode,
    url: `iscsi://127.0.0.1:${port}/${targetName}/1`,
    portalUrl: `iscsi://127.0.0.1:${port}/`,
    pid: watch.child.pid!,
    output: () => watch.output(),
    stop,
  };
}

/** The executable `tool` from PATH, or from /usr/sbin and /sbin (tgtd lives there; not every PATH has them); null if none. */
export function findTool(tool: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin']) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return join(dir, tool);
    } catch {
      // next
    }
  }
  return null;
}

export function onPath(tool: string): boolean {
  return findTool(tool) !== null;
}

/**
 * Creates (or replaces) a LUN's backing file of `bytes`. fill: written with zeros, so that every page
 * of a tmpfs file exists and reads never hit holes (benchmarks); otherwise sparse (conformance).
 */
export function createLunFile(path: string, bytes: number, options: { fill: boolean }): void {
  const fd = openSync(path, 'w');
  try {
    if (options.fill) {
      const chunk = Buffer.alloc(1 << 20);
      for (let at = 0; at < bytes; at += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - at), at);
    } else {
      ftruncateSync(fd, bytes);
    }
  } finally {
    closeSync(fd);
  }
}

/** A port that was free a moment ago on 127.0.0.1 (the kernel's pick). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once a TCP connect to host:port succeeds, rejects after `timeoutMs` or when `giveUp()` says so. */
export async function waitForPort(host: string, port: number, timeoutMs: number, giveUp: () => string | null = () => null): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    const why = giveUp();
    if (why !== null) throw new Error(why);
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

let clockTicks: number | null = null;

/** CPU seconds (user + system, all threads, live and exited) a process has used, from /proc/PID/stat. */
export function processCpuSeconds(pid: number): number {
  clockTicks ??= ticksPerSecond();
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // Field 2 (comm) is parenthesised and may hold spaces: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

function ticksPerSecond(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
}

/**
 * A child process, its output (the last 256 KiB) and its exit. It is SIGKILLed if this process exits
 * first (a target left running would keep its port and its tmpfs file).
 */
export class ChildWatch {
  readonly child: ChildProcess;
  #output = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly exited: Promise<void>;
  static readonly #live = new Set<ChildProcess>();
  static #hooked = false;

  constructor(child: ChildProcess) {
    this.child = child;
    const add = (chunk: Buffer): void => {
      // Bounded: a chatty target must not grow this without limit.
      this.#output = (this.#output + chunk.toString('utf8')).slice(-256 * 1024);
    };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    ChildWatch.#live.add(child);
    if (!ChildWatch.#hooked) {
      ChildWatch.#hooked = true;
      process.on('exit', () => {
        for (const c of ChildWatch.#live) c.kill('SIGKILL');
      });
    }
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        ChildWatch.#live.delete(child);
        resolve();
      });
      child.once('error', (err) => {
        this.#output += `\n${err.message}\n`;
        this.#exit ??= { code: null, signal: null };
        ChildWatch.#live.delete(child);
        resolve();
      });
    });
  }

  output(): string {
    return this.#output;
  }

  /** null while running; otherwise how it ended. */
  exitStatus(): string | null {
    if (this.#exit === null) return null;
    return this.#exit.signal !== null ? `killed by ${this.#exit.signal}` : `exit code ${this.#exit.code ?? '?'}`;
  }

  /** Waits up to `ms` for the exit; true if it exited. */
  async waitExit(ms: number): Promise<boolean> {
    if (this.#exit !== null) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    const done = await Promise.race([this.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return done;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async terminate(graceMs = 5000): Promise<void> {
    if (this.#exit !== null) return;
    this.child.kill('SIGTERM');
    if (await this.waitExit(graceMs)) return;
    this.child.kill('SIGKILL');
    await this.waitExit(5000);
  }
}

const MAIN_JS = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/**
 * Our target: `node dist/src/cli/main.js iscsi-target --portal 127.0.0.1:PORT --target-name IQN
 * --allow-path DIR --control-socket SOCK --lun 1=file:PATH [--thin|--read-only] --allow ALL`.
 * --allow-path admits the file's directory (regular files are refused outside one); each instance
 * gets its own control socket (the default path is one per machine). Ready when the port accepts a
 * connection; a stderr line with "listening" only says it is close (the control socket prints one
 * too). `extraArgs` go before --allow (tuning: --digest, --max-recv-data-segment-length, ...).
 */
export function blkbackTarget(extraArgs: readonly string[] = []): StartTarget {
  return async (options) => {
    const settings = await targetSettings(options);
    const { port, targetName, mode } = settings;
    const runDir = mkdtempSync(join(tmpdir(), 'blkback-iscsi-target-'));
    const file = resolve(options.backingFile);
    const store = mode === 'thin-ram' ? `ram:${statSync(file).size}` : `file:${file}`;
    const args = [
      MAIN_JS,
      'iscsi-target',
      '--portal',
      `127.0.0.1:${port}`,
      '--target-name',
      targetName,
      '--allow-path',
      dirname(file),
      '--control-socket',
      join(runDir, 'control.sock'),
      '--lun',
      `1=${store}`,
    ];
    if (mode === 'thin' || mode === 'thin-ram') args.push('--thin');
    if (mode === 'readonly') args.push('--read-only');
    args.push(...extraArgs, '--allow', 'ALL');
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const watch = new ChildWatch(child);
    const command = `node ${args.map((a) => (a.includes(' ') ? `'${a}'` : a)).join(' ')}`;
    const stop = async (): Promise<void> => {
      await watch.terminate(5000);
      rmSync(runDir, { recursive: true, force: true });
    };
    try {
      await waitForPort('127.0.0.1', port, 20_000, () => (watch.exitStatus() === null ? null : `${watch.exitStatus()} before listening`));
    } catch (err) {
      await stop();
      throw new Error(
        `blkback iscsi-target did not start (${err instanceof Error ? err.message : String(err)})\ncommand: ${command}\noutput:\n${watch.output().trim()}`,
      );
    }
    return runningTarget('blkback', settings, watch, stop);
  };
}

export const startBlkbackTarget: StartTarget = blkbackTarget();
