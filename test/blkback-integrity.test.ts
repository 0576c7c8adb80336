// Data integrity through the whole path — guest workload -> blkfront -> blkif ring -> blkback ->
// store — on RAM, file (page cache) and phy (O_DIRECT on a loop device), both ABIs, deep queues,
// several guests at once. Every read is checked in the guest; the store is also read from the host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRamDisk } from '../src/block/ram.ts';
import { openFileDisk } from '../src/block/file.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { GuestDisk } from '../src/sim-host/host.ts';
import type { VerifyResult } from '../src/loadgen/verify.ts';
import { countBadSectors, scratchLoop, VERIFY, WRITE_PATTERN } from './helpers-guest.ts';

type VerifyOutput = VerifyResult & { front: { requests: number; maxQueued: number; queued: number }; ringSize: number; abi: string };

function disk(target: string, backendtype: 'phy' | 'qdisk' = 'phy', vdev = 'xvda'): GuestDisk {
  return { target, vdev, readOnly: false, backendtype };
}

function assertClean(r: VerifyOutput, label: string): void {
  assert.equal(r.mismatches, 0, `${label}: ${r.firstMismatches.join('\n')}`);
  assert.ok(r.reads > 0 && r.writes > 0, `${label}: did both reads and writes`);
}

test('RAM disk, both ABIs, single-page and multi-page rings, queue deeper than the ring', async () => {
  const host = await SimHost.start();
  try {
    for (const abi of ['x86_64', 'x86_32'] as const) {
      for (const ringPageOrder of [0, 2]) {
        const ram = createRamDisk(32 << 20);
        host.registerStore(`ram-${abi}-${ringPageOrder}`, ram);
        const g = await host.createGuest(
          { name: `g-${abi}-${ringPageOrder}`, memoryMiB: 64, disks: [disk(`ram-${abi}-${ringPageOrder}`)] },
          { workload: VERIFY, params: { operations: 1500, iodepth: 96, maxBytes: 160 << 10, seed: 3 }, front: { abi, ringPageOrder } },
        );
        const r = (await g.result) as VerifyOutput;
        assertClean(r, `${abi} order ${ringPageOrder}`);
        assert.equal(r.abi, abi);
        assert.equal(r.ringSize, ringPageOrder === 0 ? 32 : 128);
        // 96 I/Os of up to 4 requests each on a 32-slot ring: blkfront must have queued some.
        if (ringPageOrder === 0) assert.ok(r.front.maxQueued > 0, 'requests queued in blkfront beyond the ring');
        assert.ok(r.front.requests > r.operations, 'I/Os above 44 KiB were split into several requests');
      }
    }
  } finally {
    await host.stop();
  }
});

test('several guests at once, each on its own disk, plus two guests sharing one store', async () => {
  const host = await SimHost.start();
  try {
    const guests = [];
    for (let i = 0; i < 3; i++) {
      host.registerStore(`own${i}`, createRamDisk(16 << 20));
      guests.push(
        host.createGuest(
          { name: `own${i}`, memoryMiB: 32, disks: [disk(`own${i}`)] },
          { workload: VERIFY, params: { operations: 800, iodepth: 24, seed: 10 + i } },
        ),
      );
    }
    host.registerStore('shared', createRamDisk(32 << 20));
    for (let i = 0; i < 2; i++) {
      guests.push(
        host.createGuest(
          { name: `shared${i}`, memoryMiB: 32, disks: [disk('shared', i === 0 ? 'phy' : 'qdisk')] },
          { workload: VERIFY, params: { operations: 800, iodepth: 24, seed: 20 + i, slice: [i, 2] } },
        ),
      );
    }
    const results = await Promise.all((await Promise.all(guests)).map((g) => g.result));
    results.forEach((r, i) => assertClean(r as VerifyOutput, `guest ${i}`));
  } finally {
    await host.stop();
  }
});

test('what the guest writes is what the store holds (checked from the host), and reads see the store', async () => {
  const host = await SimHost.start();
  try {
    const ram = createRamDisk(8 << 20);
    host.registerStore('ram', ram);
    const g = await host.createGuest(
      { name: 'writer', memoryMiB: 32, disks: [disk('ram')] },
      { workload: WRITE_PATTERN, params: { offset: 1 << 20, length: 5 << 20, bs: 96 << 10, iodepth: 8, seed: 77, generation: 5 } },
    );
    await g.result;
    assert.equal(await countBadSectors(ram, 1 << 20, 5 << 20, 77, 5), 0);
    // Outside the written range the store is untouched (all zero): nothing was written out of bounds.
    assert.equal(await countBadSectors(ram, 0, 1 << 20, 77, 5), 2048);
    const zero = new Uint8Array(1 << 20);
    await ram.readv(0, [zero]);
    assert.ok(zero.every((b) => b === 0));
  } finally {
    await host.stop();
  }
});

test('file: store through the page cache (qdisk analog)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-file-'));
  const image = join(dir, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, 24 << 20);
  const host = await SimHost.start();
  try {
    const g = await host.createGuest(
      { name: 'filer', memoryMiB: 32, disks: [disk(image, 'qdisk')] },
      { workload: VERIFY, params: { operations: 1200, iodepth: 32, flushEvery: 200, seed: 5 } },
    );
    assertClean((await g.result) as VerifyOutput, 'file');
    const w = await host.createGuest(
      { name: 'filer2', memoryMiB: 32, disks: [disk(image, 'qdisk')] },
      { workload: WRITE_PATTERN, params: { offset: 0, length: 4 << 20, bs: 64 << 10, iodepth: 4, seed: 9, generation: 2 } },
    );
    await w.result;
    const check = await openFileDisk(image);
    try {
      assert.equal(await countBadSectors(check, 0, 4 << 20, 9, 2), 0);
    } finally {
      await check.close();
    }
  } finally {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('phy: store with O_DIRECT on a loop device (kernel blkback analog)', async (t) => {
  const scratch = scratchLoop(t, 'test', 24 << 20);
  if (scratch === null) return;
  const { device: loop, image } = scratch;
  const host = await SimHost.start();
  try {
    for (const abi of ['x86_64', 'x86_32'] as const) {
      const g = await host.createGuest(
        { name: `phy-${abi}`, memoryMiB: 64, disks: [disk(loop, 'phy')] },
        { workload: VERIFY, params: { operations: 1200, iodepth: 64, seed: abi === 'x86_64' ? 1 : 2, bounceFraction: 0.1 }, front: { abi } },
      );
      assertClean((await g.result) as VerifyOutput, `phy ${abi}`);
    }
    const w = await host.createGuest(
      { name: 'phy-writer', memoryMiB: 32, disks: [disk(loop, 'phy')] },
      { workload: WRITE_PATTERN, params: { offset: 2 << 20, length: 6 << 20, bs: 128 << 10, iodepth: 6, seed: 4, generation: 8, flush: true } },
    );
    await w.result;
    // Read the backing file itself: the bytes went through O_DIRECT into the file.
    const check = await openFileDisk(image);
    try {
      assert.equal(await countBadSectors(check, 2 << 20, 6 << 20, 4, 8), 0);
    } finally {
      await check.close();
    }
  } finally {
    await host.stop();
    scratch.drop();
  }
});
