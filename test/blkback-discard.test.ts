// A guest's discard through the whole path — blkfront -> blkif ring (BLKIF_OP_DISCARD) -> blkback ->
// file or phy store: blkback advertises feature-discard for stores that can discard, and the host
// file ends up with a hole that reads back as zeroes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openFileDisk } from '../src/block/file.ts';
import { fsExtraProblem } from '../src/internal/fs-extra-ffi.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { GuestDisk } from '../src/sim-host/host.ts';
import { scratchLoop } from './helpers-guest.ts';
import { ffiMissing, stopIfMissing } from './helpers-tools.ts';

const MiB = 1 << 20;

interface DiscardResult {
  readonly canDiscard: boolean;
  readonly granularity: number;
  readonly holeIsZero: boolean;
  readonly restKept: boolean;
}

// The guest's workload: write a pattern, flush, discard a range, read everything back.
const DISCARD_WORKLOAD = `data:text/javascript,${encodeURIComponent(`
export default async function discardWorkload(ctx, p) {
  const disk = ctx.disks.get('xvda');
  const result = { canDiscard: disk.info.canDiscard, granularity: disk.info.discardGranularity, holeIsZero: false, restKept: false };
  const buf = ctx.allocBuffer(p.length).subarray(0, p.length);
  buf.fill(0x5a);
  await disk.writev(0, [buf]);
  await disk.flush();
  if (!disk.info.canDiscard) return result;
  await disk.discard(p.hole, p.holeLength);
  await disk.flush();
  buf.fill(0xff);
  await disk.readv(0, [buf]);
  result.holeIsZero = buf.subarray(p.hole, p.hole + p.holeLength).every((x) => x === 0);
  result.restKept = buf.subarray(0, p.hole).every((x) => x === 0x5a) && buf.subarray(p.hole + p.holeLength).every((x) => x === 0x5a);
  return result;
}
`)}`;

function disk(target: string, backendtype: 'phy' | 'qdisk'): GuestDisk {
  return { target, vdev: 'xvda', readOnly: false, backendtype };
}

async function guestDiscards(host: SimHost, name: string, d: GuestDisk): Promise<DiscardResult> {
  const g = await host.createGuest(
    { name, memoryMiB: 32, disks: [d] },
    { workload: DISCARD_WORKLOAD, params: { length: 4 * MiB, hole: MiB, holeLength: 2 * MiB } },
  );
  return (await g.result) as DiscardResult;
}

for (const [label, dir, backendtype] of [
  ['file: (qdisk) store on tmpfs', '/dev/shm', 'qdisk'],
  ['phy: (O_DIRECT) store on a regular file in /tmp', '/tmp', 'phy'],
] as const) {
  test(`${label}: feature-discard is advertised, and the guest's discard punches a hole in the host file`, async (t) => {
    if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
    const tmp = mkdtempSync(join(dir, 'blkback-discard-'));
    const image = join(tmp, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, 8 * MiB);
    const host = await SimHost.start();
    try {
      const r = await guestDiscards(host, `discard-${backendtype}`, disk(image, backendtype));
      assert.equal(r.canDiscard, true, 'blkfront saw feature-discard');
      assert.equal(r.granularity, 4096, 'discard-granularity is the filesystem block');
      assert.ok(r.holeIsZero, 'the guest reads zeroes back from the discarded range');
      assert.ok(r.restKept, 'and its data around it');
      assert.equal(statSync(image).blocks, (2 * MiB) / 512, 'the host file holds only the 2 MiB not discarded');
      const bytes = await readFile(image);
      assert.ok(bytes.subarray(MiB, 3 * MiB).every((x) => x === 0) && bytes.subarray(0, MiB).every((x) => x === 0x5a));
      const check = await openFileDisk(image, { readOnly: true });
      try {
        assert.deepEqual(await check.blockStatus!(0, 8 * MiB), [
          { offset: 0, length: MiB, allocated: true },
          { offset: MiB, length: 2 * MiB, allocated: false },
          { offset: 3 * MiB, length: MiB, allocated: true },
          { offset: 4 * MiB, length: 4 * MiB, allocated: false },
        ]);
      } finally {
        await check.close();
      }
    } finally {
      await host.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}

test("phy: store on a loop device: the guest's discard becomes BLKDISCARD and punches the backing file", async (t) => {
  if (stopIfMissing(t, ffiMissing('fallocate and the block ioctls', fsExtraProblem()))) return;
  const scratch = scratchLoop(t, 'discard', 8 * MiB);
  if (scratch === null) return;
  const host = await SimHost.start();
  try {
    const r = await guestDiscards(host, 'discard-loop', disk(scratch.device, 'phy'));
    assert.deepEqual(r, { canDiscard: true, granularity: 4096, holeIsZero: true, restKept: true });
    assert.equal(statSync(scratch.image).blocks, (2 * MiB) / 512, 'the backing file has the hole');
  } finally {
    await host.stop();
    scratch.drop();
  }
});
