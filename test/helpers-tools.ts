// Finding the real peers the interoperability tests run (Debian's tools). Outside CI a missing tool
// makes a test skip, saying which; under CI=true it is a failure: CI installs them all (.ci/run).
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { execFile } from 'node:child_process';

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

/**
 * Undefined when every tool is there; otherwise why the test cannot run. Under CI=true it throws
 * instead, so that CI fails rather than skips.
 */
export function missingTools(tools: readonly string[], packages: string): string | undefined {
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length === 0) return undefined;
  const why = `${missing.join(', ')} not installed (apt-get install ${packages})`;
  if (process.env.CI === 'true') throw new Error(`CI=true: ${why}`);
  return why;
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
