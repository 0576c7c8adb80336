// A ring whose domain is alone and has requests in flight does not ask its frontend to notify it
// (req_event unarmed): new requests are looked for when answers go out, which is when a frontend
// refills. A frontend that submits without waiting for answers must not then wait behind slow I/O:
// within UNARMED_MAX_MS the ring arms req_event again. Here one read is held by the store for
// 400 ms while the guest issues quick reads one after another; each must be served before the slow
// one ends (an order, not a time: it holds on a loaded host).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { OvertakeParams, OvertakeResult } from './fixtures/guest2/overtake.ts';

const SLOW_OFFSET = 1 << 20;
const SLOW_MS = 400;

/** The RAM disk, with reads at SLOW_OFFSET held for SLOW_MS. */
function oneSlowRead(inner: BlockDevice): BlockDevice {
  return {
    name: `one-slow(${inner.name})`,
    get info() {
      return inner.info;
    },
    readv: (offset, iov) =>
      offset === SLOW_OFFSET ? new Promise<void>((resolve) => setTimeout(resolve, SLOW_MS)).then(() => inner.readv(offset, iov)) : inner.readv(offset, iov),
    writev: (offset, iov, flags) => inner.writev(offset, iov, flags),
    flush: () => inner.flush(),
    discard: (offset, length) => inner.discard(offset, length),
    writeZeroes: (offset, length) => inner.writeZeroes(offset, length),
    close: () => inner.close(),
  };
}

for (const dataPath of ['persistent', 'copy'] as const) {
  test(`${dataPath}: requests issued while a slow one is in flight are served without waiting for it`, async () => {
    const host = await SimHost.start({ dataPath });
    const ram = createRamDisk(4 << 20);
    host.registerStore('overtake', oneSlowRead(ram));
    try {
      const params: OvertakeParams = { slowOffset: SLOW_OFFSET, quickReads: 12, gapMs: 5 };
      const guest = await host.createGuest(
        { name: 'overtake', memoryMiB: 16, disks: [{ target: 'overtake', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
        { workload: new URL('./fixtures/guest2/overtake.js', import.meta.url), params },
      );
      const r = (await guest.result) as OvertakeResult;
      assert.ok(r.slowMs >= SLOW_MS - 5, `the slow read was held (${r.slowMs.toFixed(1)} ms)`);
      assert.equal(r.finishedFirst, params.quickReads, `every quick read finished before the slow one: ${r.quickMs.map((ms) => ms.toFixed(1)).join(' ')}`);
    } finally {
      await host.stop();
      await ram.close();
    }
  });
}
