// Compiles a C program that prints "name value" lines (struct offsets, constants from a system
// header) and returns them as numbers: how layouts packed by hand are checked against the headers.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';

/** Why gcc cannot be used here, or undefined when it can. */
export function gccMissing(): string | undefined {
  const r = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) return 'gcc not found';
  return undefined;
}

/** Builds `source` with gcc -Wall -Werror, runs it, and parses its "name value" lines. */
export function compileAndReadValues(source: string): Record<string, number> {
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'c-values-'));
  try {
    const bin = join(dir, 'values');
    const cc = spawnSync('gcc', ['-Wall', '-Werror', '-o', bin, source], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    const run = spawnSync(bin, { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    return Object.fromEntries(run.stdout.trim().split('\n').map((line) => {
      const [name, value] = line.split(' ');
      return [name!, Number(value)];
    }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
