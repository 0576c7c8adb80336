// A loop device with direct I/O over a file in /dev/shm, for the O_DIRECT drivers' tests (zram
// corrupts memory on misaligned O_DIRECT on this kernel). Skips the test when not root or without
// losetup (fails it under CI=true: test/helpers-tools.ts).
import { execFile } from 'node:child_process';
import { rm, truncate, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { loopMissing, loopSetupFailed, stopIfMissing } from './helpers-tools.ts';
import type { Skippable } from './helpers-tools.ts';

const run = promisify(execFile);
let made = 0;

export async function withLoopDevice(size: number, t: Skippable, body: (dev: string) => Promise<void>): Promise<void> {
  if (stopIfMissing(t, loopMissing())) return;
  const backing = `/dev/shm/blk-direct-test-${process.pid}-${made++}.img`;
  await writeFile(backing, '');
  await truncate(backing, size);
  let dev: string;
  try {
    dev = (await run('losetup', ['--direct-io=on', '-f', '--show', backing])).stdout.trim();
  } catch (err) {
    await rm(backing, { force: true });
    stopIfMissing(t, loopSetupFailed(err));
    return;
  }
  try {
    await body(dev);
  } finally {
    await run('losetup', ['-d', dev]).catch(() => undefined);
    await rm(backing, { force: true });
  }
}
