// Compiles a C program that prints "name value" lines (struct offsets, constants from a system
// header) and returns them as numbers: how layouts packed by hand are checked against the headers.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { Missing } from './helpers-tools.ts';

/** What is missing for gcc to be used here, or undefined when it can be. */
export function gccMissing(): Missing | undefined {
  const r = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) return { what: 'gcc not installed', install: 'apt-get install gcc libc6-dev' };
  return undefined;
}

/**
 * Whether gcc can build 32-bit x86 programs with the flags given: a trivial program that includes
 * <stdio.h> (which needs the 32-bit libc headers, gnu/stubs-32.h) and links with them. Only this
 * probe's failure means "gcc-multilib is missing"; a later gcc error is a real failure.
 */
export function gccM32Missing(flags: readonly string[] = ['-m32']): Missing | undefined {
  const missing = gccMissing();
  if (missing !== undefined) return missing;
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'gcc-m32-probe-'));
  try {
    const source = join(dir, 'probe.c');
    fs.writeFileSync(source, '#include <stdio.h>\nint main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n');
    const cc = spawnSync('gcc', [...flags, '-o', join(dir, 'probe'), source], { encoding: 'utf8' });
    if (cc.error !== undefined || cc.status !== 0) {
      return {
        what: `gcc ${flags.join(' ')} cannot build a trivial program (${(cc.stderr || cc.error?.message || '').split('\n')[0]})`,
        install: 'apt-get install gcc-multilib',
      };
    }
    return undefined;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
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
    return Object.fromEntries(
      run.stdout
        .trim()
        .split('\n')
        .map((line) => {
          const [name, value] = line.split(' ');
          return [name!, Number(value)];
        }),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
