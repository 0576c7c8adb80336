// The one skip gate (test/helpers-tools.ts): outside CI a missing peer skips, naming it and its
// package; under CI=true it fails. Checked on the helper itself, then end to end on two suites run
// with stand-in tools first on PATH: a fio that says it is another version, and a gcc whose -m32
// is broken (the x86_32 golden test may skip only on its probe; a later gcc error fails it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FIO_REFERENCE, fioMissing, stopIfMissing } from './helpers-tools.ts';

/** Runs `body` with CI set to `value` (or unset), restoring it after. */
function withCi<T>(value: string | undefined, body: () => T): T {
  const saved = process.env.CI;
  if (value === undefined) delete process.env.CI;
  else process.env.CI = value;
  try {
    return body();
  } finally {
    if (saved === undefined) delete process.env.CI;
    else process.env.CI = saved;
  }
}

/** A directory with executable stand-ins `name -> shell script body`, to put first on PATH. */
function standIns(t: { after(fn: () => void): void }, scripts: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'skip-gate-bin-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, body] of Object.entries(scripts)) {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
  }
  return dir;
}

function realPath(tool: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

/** Runs one compiled test file under node --test with PATH and CI as given. */
function runSuite(file: string, pathFirst: string, ci: string | undefined): { status: number | null; out: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${pathFirst}${delimiter}${process.env.PATH ?? ''}` };
  delete env.CI;
  delete env.NODE_TEST_CONTEXT; // a child of node --test would otherwise report to this run
  if (ci !== undefined) env.CI = ci;
  const r = spawnSync(process.execPath, ['--test', fileURLToPath(new URL(file, import.meta.url))], { env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('stopIfMissing: nothing missing goes on; outside CI a skip naming the tool and package; under CI=true a failure', () => {
  const skips: (string | undefined)[] = [];
  const t = { skip: (m?: string) => void skips.push(m) };
  const missing = { what: 'frobnicate not installed', install: 'apt-get install frob-utils' };
  for (const ci of [undefined, 'true'])
    assert.equal(
      withCi(ci, () => stopIfMissing(t, undefined)),
      false,
    );
  assert.deepEqual(skips, []);

  for (const ci of [undefined, 'false', '1'])
    assert.equal(
      withCi(ci, () => stopIfMissing(t, missing)),
      true,
      `CI=${ci}`,
    );
  assert.equal(skips.length, 3);
  for (const m of skips) assert.equal(m, 'frobnicate not installed (apt-get install frob-utils)');

  skips.length = 0;
  withCi('true', () =>
    assert.throws(
      () => stopIfMissing(t, missing),
      (e: Error) => /^CI=true: frobnicate not installed \(apt-get install frob-utils\)/.test(e.message),
    ),
  );
  assert.deepEqual(skips, [], 'under CI=true nothing is skipped');
});

test(`fioMissing: no fio, or any version but ${FIO_REFERENCE}, is missing; the reference version is not`, (t) => {
  const path = process.env.PATH;
  const fake = (version: string): string => standIns(t, { fio: `echo ${version}` });
  try {
    process.env.PATH = fake('fio-3.35');
    assert.deepEqual(fioMissing(), {
      what: `${FIO_REFERENCE} needed, found fio-3.35`,
      install: 'apt-get install fio on Debian 12 (bookworm), which ships 3.33',
    });
    process.env.PATH = fake(FIO_REFERENCE);
    assert.equal(fioMissing(), undefined);
    const empty = mkdtempSync(join(tmpdir(), 'skip-gate-empty-'));
    t.after(() => rmSync(empty, { recursive: true, force: true }));
    process.env.PATH = empty;
    assert.match(fioMissing()?.what ?? '', /^fio not installed/);
  } finally {
    process.env.PATH = path;
  }
});

test('a Debian fio upgrade: the golden suite skips every test outside CI, and fails under CI=true', (t) => {
  const bin = standIns(t, { fio: 'echo fio-3.35' });
  const outside = runSuite('./fio-output-golden.test.js', bin, undefined);
  assert.equal(outside.status, 0, outside.out);
  assert.match(outside.out, /# skipped 3\b/);
  assert.match(outside.out, /fio-3\.33 needed, found fio-3\.35/);

  const ci = runSuite('./fio-output-golden.test.js', bin, 'true');
  assert.notEqual(ci.status, 0, 'CI=true with the wrong fio must fail');
  assert.match(ci.out, /# fail 3\b/);
  assert.match(ci.out, /CI=true: fio-3\.33 needed, found fio-3\.35 \(apt-get install fio/);
});

test('blkif golden x86_32: only the gcc -m32 probe may skip (a failure under CI=true); a later gcc error fails', (t) => {
  const gcc = realPath('gcc');
  if (stopIfMissing(t, gcc === '' ? { what: 'gcc not installed', install: 'apt-get install gcc' } : undefined)) return;
  // -m32 broken everywhere, as without gcc-multilib: the probe fails.
  const noMultilib = standIns(t, {
    gcc: `for a in "$@"; do [ "$a" = -m32 ] && { echo 'fatal error: gnu/stubs-32.h: No such file or directory' >&2; exit 1; }; done\nexec ${gcc} "$@"`,
  });
  const outside = runSuite('./blkif-golden.test.js', noMultilib, undefined);
  assert.equal(outside.status, 0, outside.out);
  assert.match(outside.out, /# skipped 1\b/);
  assert.match(outside.out, /gcc -m32 -static cannot build a trivial program.*apt-get install gcc-multilib/);
  const ci = runSuite('./blkif-golden.test.js', noMultilib, 'true');
  assert.notEqual(ci.status, 0, ci.out);
  assert.match(ci.out, /CI=true: gcc -m32 -static cannot build a trivial program/);

  // The probe builds, but the real program does not: a failure, CI or not, never a skip.
  const laterError = standIns(t, { gcc: `case "$*" in *-m32*ring-golden.c*) echo 'ring-golden.c: error: simulated' >&2; exit 1;; esac\nexec ${gcc} "$@"` });
  const broken = runSuite('./blkif-golden.test.js', laterError, undefined);
  assert.notEqual(broken.status, 0, broken.out);
  assert.match(broken.out, /# skipped 0\b/);
  assert.match(broken.out, /error: simulated/);
});
