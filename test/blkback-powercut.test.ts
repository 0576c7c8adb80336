// The durability promise, end to end: after a power cut, every write acknowledged before a
// completed FLUSH_DISKCACHE or WRITE_BARRIER is on the medium. The store is a volatile-cache disk
// over a RAM disk; a guest writes rounds of self-describing patterns (one generation per round),
// each closed by a flush or a barrier, then more writes it never flushes; the host cuts power
// while the guest is still connected and reads the base RAM disk directly. Every sector must hold
// the generation its last durability point covered, or a later one written to it; never an older
// one, never bytes nobody wrote. A run without flushes shows the check does catch lost writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import type { RamDisk } from '../src/block/ram.ts';
import { createVolatileCache } from '../src/block/volatile-cache.ts';
import type { PowerCutOptions } from '../src/block/volatile-cache.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { checkSector } from '../src/loadgen/pattern.ts';
import type { DurabilityMode, PowerCutParams, PowerCutRecords } from './fixtures/guest2/powercut.ts';
import { releasePath } from './fixtures/guest2/release.ts';

const POWERCUT = new URL('./fixtures/guest2/powercut.js', import.meta.url);
const MiB = 1 << 20;
const SPAN = 8 * MiB;
const MAGIC = 0x424c4b42;

interface Audit {
  /** Sectors holding less than the durability point promised (zeroes or an older generation). */
  lost: number;
  /** Sectors holding bytes no write put there. */
  garbage: number;
  /** Sectors not holding the newest generation written to them (unflushed writes that died). */
  stale: number;
  /** Sectors holding the last generation, which was never flushed. */
  survivorsOfTail: number;
  /** Sectors a durability point covered. */
  covered: number;
  firstProblems: string[];
}

/** Reads the base device and checks every sector of the span against the guest's records. */
async function audit(base: RamDisk, records: PowerCutRecords, seed: number, required: Uint8Array): Promise<Audit> {
  const out: Audit = { lost: 0, garbage: 0, stale: 0, survivorsOfTail: 0, covered: 0, firstProblems: [] };
  const note = (what: string): void => {
    if (out.firstProblems.length < 8) out.firstProblems.push(what);
  };
  const chunk = new Uint8Array(MiB);
  const words = new Uint32Array(chunk.buffer);
  for (let at = 0; at < SPAN; at += MiB) {
    await base.readv(at, [chunk]);
    for (let i = 0; i < MiB / 512; i++) {
      const sector = at / 512 + i;
      const need = required[sector]!;
      const written = records.written[sector]!;
      const newest = written === 0 ? 0 : 31 - Math.clz32(written);
      if (need > 0) out.covered++;
      const w = i * 128;
      let zero = true;
      for (let k = 0; k < 128; k++) {
        if (words[w + k] !== 0) {
          zero = false;
          break;
        }
      }
      if (zero) {
        if (need > 0) {
          out.lost++;
          note(`sector ${sector}: zeroes, but generation ${need} was made durable`);
        }
        if (written !== 0) out.stale++;
        continue;
      }
      const generation = words[w + 2]!;
      const genuine =
        words[w] === MAGIC &&
        words[w + 1] === sector &&
        generation < 32 &&
        ((written >>> generation) & 1) === 1 &&
        checkSector(words, i, seed, sector, generation) === -1;
      if (!genuine) {
        out.garbage++;
        note(`sector ${sector}: bytes no write put there (header ${words[w]?.toString(16)} ${words[w + 1]} ${generation})`);
        continue;
      }
      if (generation < need) {
        out.lost++;
        note(`sector ${sector}: generation ${generation}, but generation ${need} was made durable`);
      }
      if (generation < newest) out.stale++;
      if (generation === records.lastGeneration) out.survivorsOfTail++;
    }
  }
  return out;
}

/**
 * Delays each write's arrival at the device by 0-2 ms (seeded), so writes are really in flight in
 * the backend when a barrier comes: with an instant store every earlier write has already landed
 * by the time the barrier is taken off the ring, and a barrier that forgot to wait would go unseen.
 */
function withWriteLatency(device: BlockDevice, seed: number): BlockDevice {
  let x = seed | 1;
  const delay = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % 3;
  };
  return {
    name: `slow:${device.name}`,
    get info() {
      return device.info;
    },
    readv: (offset, iov) => device.readv(offset, iov),
    writev: (offset, iov, flags) =>
      new Promise<void>((resolve, reject) => {
        setTimeout(() => device.writev(offset, iov, flags).then(resolve, reject), delay());
      }),
    flush: () => device.flush(),
    discard: (offset, length) => device.discard(offset, length),
    writeZeroes: (offset, length) => device.writeZeroes(offset, length),
    close: () => device.close(),
  };
}

interface Run {
  records: PowerCutRecords;
  strict: Audit;
  submitted: Audit;
  dirtyBeforeCut: number;
}

const BASE_PARAMS = { span: SPAN, rounds: 4, writesPerRound: 120, iodepth: 24, maxBlocks: 16, tailWrites: 120 } as const;

async function runAndCut(
  host: SimHost,
  name: string,
  mode: DurabilityMode,
  seed: number,
  cut: PowerCutOptions,
  rounds: number = BASE_PARAMS.rounds,
  writeLatency = false,
): Promise<Run> {
  const base = createRamDisk(16 * MiB, { name: `base-${name}` });
  const cache = createVolatileCache(base);
  host.registerStore(name, writeLatency ? withWriteLatency(cache, seed) : cache);
  let gotRecords!: (r: PowerCutRecords) => void;
  const recordsPromise = new Promise<PowerCutRecords>((resolve) => (gotRecords = resolve));
  const params: PowerCutParams = { ...BASE_PARAMS, rounds, mode, seed };
  const guest = await host.createGuest(
    { name, memoryMiB: 32, disks: [{ target: name, vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
    {
      workload: POWERCUT,
      params,
      onReport: (m) => {
        if ((m as { type?: string }).type === 'records') gotRecords(m as PowerCutRecords);
      },
    },
  );
  // The guest holds its connection open after reporting: the cut happens under a live guest.
  const records = await Promise.race([recordsPromise, guest.result.then(() => Promise.reject(new Error(`${name}: guest finished without reporting`)))]);
  const dirtyBeforeCut = cache.dirtyBytes;
  await cache.powerCut(cut);
  const strict = await audit(base, records, seed, records.required);
  const submitted = await audit(base, records, seed, records.requiredSubmitted);
  await host.xs.write(releasePath(guest.domid), '1');
  const result = (await guest.result) as { released: boolean };
  assert.equal(result.released, true, `${name}: guest was released by the host, not by its timeout`);
  return { records, strict, submitted, dirtyBeforeCut };
}

function assertDurable(run: Run, label: string, audit: Audit = run.strict): void {
  assert.equal(audit.garbage, 0, `${label}: sectors with bytes nobody wrote:\n${audit.firstProblems.join('\n')}`);
  assert.equal(audit.lost, 0, `${label}: acknowledged writes lost despite a completed durability point:\n${audit.firstProblems.join('\n')}`);
  assert.ok(audit.covered > SPAN / 512 / 2, `${label}: the durability points covered most of the span (${audit.covered} sectors)`);
  assert.ok(run.records.durabilityPoints >= BASE_PARAMS.rounds, `${label}: ${run.records.durabilityPoints} durability points completed`);
}

test('power cut after FLUSH_DISKCACHE and after WRITE_BARRIER keeps every acknowledged write', async (t) => {
  const host = await SimHost.start();
  try {
    for (const mode of ['flush', 'barrier'] as const) {
      await t.test(`${mode}, nothing unflushed survives the cut`, async () => {
        const run = await runAndCut(host, `pc-${mode}-0`, mode, 11, { surviveFraction: 0 });
        assertDurable(run, mode);
        // The cache really was volatile: the unflushed tail was in it and died with the cut.
        assert.ok(run.dirtyBeforeCut > 0, `${mode}: unflushed writes were in the cache at the cut`);
        assert.ok(run.strict.stale > 0, `${mode}: unflushed writes were lost (${run.strict.stale} stale sectors)`);
        assert.equal(run.strict.survivorsOfTail, 0, `${mode}: nothing of the never-flushed generation reached the base`);
      });
      await t.test(`${mode}, a seeded half of the unflushed blocks survives`, async () => {
        const run = await runAndCut(host, `pc-${mode}-half`, mode, 12, { surviveFraction: 0.5, seed: 7 });
        assertDurable(run, `${mode} partial`);
        assert.ok(run.strict.survivorsOfTail > 0, `${mode} partial: some never-flushed sectors survived`);
        assert.ok(run.strict.stale > 0, `${mode} partial: some never-flushed sectors died`);
      });
    }
  } finally {
    await host.stop();
  }
});

test('negative control: the same run without flushes loses acknowledged writes at the cut', async () => {
  const host = await SimHost.start();
  try {
    const run = await runAndCut(host, 'pc-none', 'none', 13, { surviveFraction: 0 });
    assert.equal(run.records.durabilityPoints, 0);
    assert.equal(run.strict.garbage, 0);
    // Same records, same checker: without a durability point the "promise" is broken, and seen.
    assert.ok(run.strict.lost > SPAN / 512 / 2, `the check caught lost writes (${run.strict.lost} sectors)`);
    const partial = await runAndCut(host, 'pc-none-half', 'none', 14, { surviveFraction: 0.5, seed: 3 });
    assert.ok(partial.strict.lost > 0, `partial survival still loses acknowledged writes (${partial.strict.lost} sectors)`);
    assert.equal(partial.strict.garbage, 0);
  } finally {
    await host.stop();
  }
});

test('writes in flight around a barrier: it covers every write acknowledged (and submitted) before it', async () => {
  const host = await SimHost.start();
  try {
    for (const [i, cut] of [{ surviveFraction: 0 }, { surviveFraction: 0.5, seed: 5 }].entries()) {
      const run = await runAndCut(host, `pc-concurrent-${i}`, 'concurrent', 20 + i, cut, 3, true);
      assert.equal(run.records.durabilityPoints, 3);
      // The promise as stated: acknowledged before the barrier was issued.
      assert.equal(run.strict.garbage, 0, run.strict.firstProblems.join('\n'));
      assert.equal(run.strict.lost, 0, `acknowledged before the barrier, lost:\n${run.strict.firstProblems.join('\n')}`);
      // blkif's WRITE_BARRIER: everything submitted before it completes and is flushed first.
      assert.equal(run.submitted.lost, 0, `submitted before the barrier, lost:\n${run.submitted.firstProblems.join('\n')}`);
      assert.ok(run.submitted.covered > run.strict.covered, 'writes in flight at the barrier were covered too');
      if (cut.surviveFraction === 0) assert.ok(run.strict.stale > 0, 'writes behind the last barrier were lost');
    }
  } finally {
    await host.stop();
  }
});
