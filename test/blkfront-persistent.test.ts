// Persistent grants end to end: our blkfront offers feature-persistent as Linux's does, and with a
// backend that offers it too the data goes through a pool of pages granted once and reused, which
// the backend maps once and keeps. The guest writes and reads back self-describing sectors through
// it (checked by the guest, and on the store itself by the host), the backend's kept grants grow
// to the pool's size and stay there with no map call after the first round, and every grant is
// given back when the disk closes. A frontend that does not offer it gets the copy path; a backend
// that does not offer it gets the frontend's plain grants.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countXenCalls, emptyXenCallCounts } from '../src/bench/xen-call-counter.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { DataPath } from '../src/blkback/ring-server.ts';
import { checkSector } from '../src/loadgen/pattern.ts';
import type { PersistentIoParams, PersistentIoResult } from './fixtures/guest2/persistent-io.ts';

const MiB = 1 << 20;
const PARAMS: PersistentIoParams = { seed: 0x5eed, rounds: 6, depth: 7, regionSectors: 256 };
/** Pool pages the fixture's seven shapes need at once: 1+1+2+3+9+16+17 segments and two indirect pages. */
const POOL_PAGES = 51;

interface Sample {
  connection: string;
  round: number;
  dataPath: DataPath | null;
  grantsKept: number;
  maps: number;
}

async function runGuest(dataPath: DataPath): Promise<{ result: PersistentIoResult; samples: Sample[]; store: Uint8Array }> {
  const counts = emptyXenCallCounts();
  const host = await SimHost.start({ dataPath, instrumentBackend: (hv) => countXenCalls(hv, counts) });
  const ram = createRamDisk(4 * MiB, { name: 'ram:persistent' });
  host.registerStore('persistent', ram);
  const samples: Sample[] = [];
  try {
    const guest = await host.createGuest(
      { name: 'persistent', memoryMiB: 32, disks: [{ target: 'persistent', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      {
        workload: new URL('./fixtures/guest2/persistent-io.js', import.meta.url),
        params: PARAMS,
        onReport: (m) => {
          const { connection, round } = m as { connection: string; round: number };
          const vbd = [...host.blkback.vbds.values()][0];
          samples.push({ connection, round, dataPath: vbd?.dataPath ?? null, grantsKept: vbd?.grantsKept ?? -1, maps: counts.maps });
        },
      },
    );
    const result = (await guest.result) as PersistentIoResult;
    const store = new Uint8Array(4 * MiB);
    await ram.readv(0, [store]);
    return { result, samples, store };
  } finally {
    await host.stop();
    await ram.close();
  }
}

/** Sectors of the last connection's last round that the store does not hold as written. */
function storeMismatches(store: Uint8Array, result: PersistentIoResult): number {
  let bad = 0;
  for (const w of result.written) {
    const words = new Uint32Array(store.buffer, store.byteOffset + w.sector * 512, w.count * 128);
    for (let s = 0; s < w.count; s++) if (checkSector(words, s, PARAMS.seed, w.sector + s, w.generation) >= 0) bad++;
  }
  return bad;
}

test('persistent grants: byte-exact through the pool, the backend keeps what it mapped and maps nothing more, all grants back on close; no offer, copy', async () => {
  const { result, samples, store } = await runGuest('persistent');
  const { first, again, without } = result;

  assert.equal(first.persistent, true, 'both sides offered feature-persistent');
  assert.equal(first.mismatches, 0, 'every sector read back as written');
  assert.equal(again.mismatches, 0);
  assert.equal(without.mismatches, 0);
  assert.equal(storeMismatches(store, result), 0, 'the store holds what the guest wrote last');
  assert.ok(first.ios > 0 && without.ios > 0);

  const firstSamples = samples.filter((s) => s.connection === 'first');
  assert.equal(firstSamples.length, PARAMS.rounds);
  for (const s of firstSamples) assert.equal(s.dataPath, 'persistent', `round ${s.round}: the ring serves with persistent grants`);
  // The pool grew to what one round needs at once, granted every page once, and no further.
  assert.deepEqual(first.pool, { pages: POOL_PAGES, granted: POOL_PAGES });
  for (const p of first.poolPerRound) assert.deepEqual(p, first.pool, 'the pool does not grow after the first round');
  // The backend kept every grant it mapped: as many as the pool, from the first round on.
  for (const s of firstSamples) assert.equal(s.grantsKept, POOL_PAGES, `round ${s.round}: grants kept`);
  const [r0, last] = [firstSamples[0]!, firstSamples.at(-1)!];
  assert.equal(last.maps, r0.maps, 'no map call after the first round: the kept grants serve');

  // A second connection that offers it again also uses them, and gives back every grant it gave.
  assert.equal(again.persistent, true);
  for (const s of samples.filter((x) => x.connection === 'again')) assert.equal(s.dataPath, 'persistent');
  assert.equal(again.freeAfter, again.freeBefore, 'pool and ring grants all ended once closed');

  // A frontend that does not offer feature-persistent is served by copy, and grants per request.
  assert.equal(without.persistent, false);
  const withoutSamples = samples.filter((s) => s.connection === 'without');
  assert.equal(withoutSamples.length, PARAMS.rounds);
  for (const s of withoutSamples) {
    assert.equal(s.dataPath, 'copy', `round ${s.round}: no offer from the frontend, the ring copies`);
    assert.equal(s.grantsKept, 0);
  }
  assert.deepEqual(without.pool, { pages: 0, granted: 0 });
  assert.equal(without.freeAfter, without.freeBefore);
});

test('a backend that does not offer feature-persistent: the frontend grants its own pages per request', async () => {
  const { result, samples, store } = await runGuest('copy');
  assert.equal(result.first.persistent, false);
  assert.deepEqual(result.first.pool, { pages: 0, granted: 0 });
  assert.equal(result.first.mismatches + result.again.mismatches + result.without.mismatches, 0);
  assert.equal(storeMismatches(store, result), 0);
  for (const s of samples) {
    assert.equal(s.dataPath, 'copy');
    assert.equal(s.grantsKept, 0);
  }
  assert.equal(result.again.freeAfter, result.again.freeBefore);
});
