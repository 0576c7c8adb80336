// Shared helpers for tests that run simulated guests.
import { execFileSync } from 'node:child_process';
import { rmSync, truncateSync, writeFileSync } from 'node:fs';
import type { BlockDevice } from '../src/block/types.ts';
import { allocAlignedShared } from '../src/block/aligned-memory.ts';
import { checkSector } from '../src/loadgen/pattern.ts';
import { describeMissing, loopMissing, loopSetupFailed, stopIfMissing } from './helpers-tools.ts';
import type { Skippable } from './helpers-tools.ts';

export const VERIFY = new URL('../src/guest/workloads/verify.js', import.meta.url);
export const WRITE_PATTERN = new URL('./fixtures/guest/write-pattern.js', import.meta.url);

/** Reads [offset, offset+length) of a store straight from the host and counts sectors that do not carry generation `generation`. */
export async function countBadSectors(device: BlockDevice, offset: number, length: number, seed: number, generation: number): Promise<number> {
  const chunk = 1 << 20;
  const buf = allocAlignedShared(chunk);
  let bad = 0;
  for (let at = offset; at < offset + length; at += chunk) {
    const n = Math.min(chunk, offset + length - at);
    await device.readv(at, [buf.subarray(0, n)]);
    const words = new Uint32Array(buf.buffer, buf.byteOffset, n / 4);
    for (let s = 0; s < n / 512; s++) if (checkSector(words, s, seed, at / 512 + s, generation) >= 0) bad++;
  }
  return bad;
}

/** Why a loop device cannot be made here (root, losetup), or null. */
export function loopUnavailable(): string | null {
  const missing = loopMissing();
  return missing === undefined ? null : describeMissing(missing);
}

export function makeLoop(image: string): string {
  return execFileSync('losetup', ['--direct-io=on', '-f', '--show', image], { encoding: 'utf8' }).trim();
}

export function dropLoop(device: string): void {
  try {
    execFileSync('losetup', ['-d', device]);
  } catch {
    // already gone
  }
}

export interface ScratchLoop {
  /** The loop device, e.g. /dev/loop3, with direct I/O on. */
  readonly device: string;
  /** Its backing file in /dev/shm. */
  readonly image: string;
  /** Detaches the loop device and removes the file. */
  drop(): void;
}

/**
 * A `bytes`-long /dev/shm file behind a `losetup --direct-io=on` loop device, or null after
 * skipping the test with the reason when that cannot be made here (not root, no losetup).
 */
export function scratchLoop(t: Skippable, name: string, bytes: number): ScratchLoop | null {
  if (stopIfMissing(t, loopMissing())) return null;
  const image = `/dev/shm/blkback-${name}-${process.pid}.img`;
  writeFileSync(image, '');
  truncateSync(image, bytes);
  let device: string;
  try {
    device = makeLoop(image);
  } catch (err) {
    rmSync(image, { force: true });
    stopIfMissing(t, loopSetupFailed(err));
    return null;
  }
  return {
    device,
    image,
    drop() {
      dropLoop(device);
      rmSync(image, { force: true });
    },
  };
}
