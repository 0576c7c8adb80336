// The real-Xen toolstack runs `xl block-attach` / `xl block-detach` with exactly the user's
// arguments (no shell), and passes xl's complaint on. A fake `xl` on PATH records its arguments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseXlDiskSpec } from '../src/config/xl-disk.ts';
import { xlToolstack } from '../src/control/xl-toolstack.ts';
import { BlockError } from '../src/internal/errors.ts';

function fakeXl(dir: string): { env: NodeJS.ProcessEnv; calls: () => string[][] } {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const log = join(dir, 'calls');
  writeFileSync(log, '');
  // One line per call, arguments separated by a tab; domain 66 does not exist, as xl would say.
  writeFileSync(
    join(bin, 'xl'),
    `#!/bin/sh
printf '%s' "$1" >> '${log}'; shift
for a in "$@"; do printf '\\t%s' "$a" >> '${log}'; done
printf '\\n' >> '${log}'
if [ "$1" = 66 ]; then
  echo "libxl: error: libxl_device.c:1203:device_addrm_aocomplete: unable to add device" >&2
  echo "Domain 66 does not exist." >&2
  exit 1
fi
exit 0
`,
  );
  chmodSync(join(bin, 'xl'), 0o755);
  return {
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` },
    calls: () =>
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => l.split('\t')),
  };
}

test('xl block-attach and block-detach get the spec and vdev verbatim', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-xl-'));
  try {
    const xl = fakeXl(dir);
    const ts = xlToolstack({ env: xl.env });
    const spec = "format=raw, vdev=xvdb, access=rw, backendtype=phy, target=/srv/it's here,really.img";
    await ts.attach(3, parseXlDiskSpec(spec));
    await ts.detach(3, 51728, 'xvdb');
    assert.deepEqual(xl.calls(), [
      ['block-attach', '3', spec],
      ['block-detach', '3', 'xvdb'],
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("xl's failure comes back with its last words; a missing xl says so", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-xl-'));
  try {
    const xl = fakeXl(dir);
    await assert.rejects(xlToolstack({ env: xl.env }).attach(66, parseXlDiskSpec('vdev=xvdb,target=/dev/loop1')), (err: BlockError) => {
      assert.equal(err.code, 'BLK_ERR_TOOLSTACK');
      assert.match(err.message, /^xl block-attach 66 vdev=xvdb,target=\/dev\/loop1 exited with status 1: libxl: error: .* \/ Domain 66 does not exist\.$/);
      return true;
    });
    await assert.rejects(xlToolstack({ xl: 'xl-not-installed-here', env: xl.env }).detach(3, 51728, 'xvdb'), (err: BlockError) => {
      assert.ok(err instanceof BlockError);
      assert.match(err.message, /cannot run xl-not-installed-here: not found on PATH/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
