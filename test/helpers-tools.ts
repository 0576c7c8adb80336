// Finding the real peers the interoperability tests run (Debian's tools), and the one place a test
// decides to skip. Outside CI a missing peer (a tool, the wrong fio version, a header, a loop device)
// skips the test, saying what is missing and how to install it; under CI=true it fails the test:
// CI installs every peer (.ci/run), so a skip there would only hide a failure.
import { accessSync, constants } from 'node:fs';
import { execFile, spawnSync } from 'node:child_process';
import { delimiter, join } from 'node:path';

/** The fio the golden and parity tests were written against: what Debian 12 ships. */
export const FIO_REFERENCE = 'fio-3.33';

/** What a test needs and this machine lacks. */
export interface Missing {
  /** The tool, version, file or facility: 'fio-3.33 needed, found fio-3.35', 'qemu-i386 (...)'. */
  readonly what: string;
  /** How to get it: 'apt-get install fio' (the packages are those .ci/run installs). */
  readonly install: string;
}

/** What node:test's TestContext offers (and what a part of a test can pass: a diagnostic, say). */
export interface Skippable {
  skip(message?: string): void;
}

export function describeMissing(m: Missing): string {
  return `${m.what} (${m.install})`;
}

/** Exactly CI=true: CI systems set it, and .ci/run exports it. */
export function underCi(): boolean {
  return process.env.CI === 'true';
}

/**
 * The one gate for a missing peer. Undefined: nothing is missing, returns false and the test goes
 * on. Otherwise, under CI=true, throws (the test fails, naming what is missing and the package);
 * elsewhere skips `t` with the same words and returns true: the caller returns at once.
 */
export function stopIfMissing(t: Skippable, missing: Missing | undefined): boolean {
  if (missing === undefined) return false;
  const why = describeMissing(missing);
  if (underCi()) throw new Error(`CI=true: ${why}; CI installs every peer (.ci/run), so a missing one is a failure, not a skip`);
  t.skip(why);
  return true;
}

/**
 * A skip for a property of the host that no package changes and that the test cannot run under
 * (this machine is a Xen domain, /dev/shm is not tmpfs here, a real /dev/sdb exists). It skips in
 * CI too: only what .ci/run installs may fail a CI run. Never use it for a tool.
 */
export function skipOnThisHost(t: Skippable, why: string): void {
  t.skip(`not on this host: ${why}`);
}

export function onPath(tool: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The tools that are not on PATH, with the Debian packages that have them; undefined when all are. */
export function missingTools(tools: readonly string[], packages: string): Missing | undefined {
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length === 0) return undefined;
  return { what: `${missing.join(', ')} not installed`, install: `apt-get install ${packages}` };
}

/** fio's `--version` line ('fio-3.33'), or null when there is no fio that answers. */
export function fioVersion(): string | null {
  const r = spawnSync('fio', ['--version'], { encoding: 'utf8' });
  return r.error === undefined && r.status === 0 ? r.stdout.trim() : null;
}

/**
 * fio, and exactly the reference version: the golden and parity tests compare against its bytes and
 * behaviour, and another version (a Debian upgrade) must not pass silently as "skipped" in CI.
 */
export function fioMissing(): Missing | undefined {
  const version = fioVersion();
  if (version === null) return { what: `fio not installed (the tests compare against ${FIO_REFERENCE})`, install: 'apt-get install fio' };
  if (version !== FIO_REFERENCE)
    return { what: `${FIO_REFERENCE} needed, found ${version}`, install: 'apt-get install fio on Debian 12 (bookworm), which ships 3.33' };
  return undefined;
}

/** A libc call made through koffi that cannot be reached (`problem`, from the module's own probe). */
export function ffiMissing(calls: string, problem: string | undefined): Missing | undefined {
  return problem === undefined ? undefined : { what: `${calls} through koffi (${problem})`, install: 'npm ci (koffi), on glibc Linux' };
}

/** Root and losetup, for loop devices with direct I/O; undefined when both are there. */
export function loopMissing(): Missing | undefined {
  if (process.getuid?.() !== 0) return { what: 'root, to make loop devices with losetup', install: 'run the tests as root, as CI does' };
  return missingTools(['losetup'], 'util-linux');
}

/** losetup was there but could not make a device (no /dev/loop*, no loop module). */
export function loopSetupFailed(err: unknown): Missing {
  return {
    what: `a loop device (losetup --direct-io=on failed: ${(err as Error).message.split('\n')[0]})`,
    install: 'modprobe loop; apt-get install util-linux',
  };
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a tool without blocking the event loop (a target in this process answers it). */
export function run(tool: string, args: readonly string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(tool, args as string[], { timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 << 20, env: options.env ?? process.env }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}
