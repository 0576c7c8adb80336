// A loop device with direct I/O over a file in /dev/shm, for the O_DIRECT drivers' tests (zram
// corrupts memory on misaligned O_DIRECT on this kernel). Skips the test when not root.
import { execFile } from 'node:child_process';
import { rm, truncate, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);
let made = 0;

export async function withLoopDevice(size: number, t: { skip(reason: string): void }, body: (dev: string) => Promise<void>): Promise<void> {
  if (process.getuid?.() !== 0) return t.skip('needs root for losetup');
  const backing = `/dev/shm/blk-direct-test-${process.pid}-${made++}.img`;
  await writeFile(backing, '');
  await truncate(backing, size);
  let dev: string;
  try {
    dev = (await run('losetup', ['--direct-io=on', '-f', '--show', backing])).stdout.trim();
  } catch (err) {
    await rm(backing, { force: true });
    return t.skip(`losetup --direct-io=on failed: ${(err as Error).message.split('\n')[0]}`);
  }
  try {
    await body(dev);
  } finally {
    await run('losetup', ['-d', dev]).catch(() => undefined);
    await rm(backing, { force: true });
  }
}
