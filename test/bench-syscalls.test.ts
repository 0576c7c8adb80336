// The syscall benchmark's own parts: the perf output it reads and the counter of grant and
// event-channel calls it puts around the backend's hypervisor (checked on a real simulated guest).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePerfPerThread } from '../src/bench/syscall-bench.ts';
import { countXenCalls, emptyXenCallCounts, xenSyscalls, XEN_SYSCALLS_PER_CALL } from '../src/bench/xen-call-counter.ts';
import { createRamDisk } from '../src/block/ram.ts';
import { SimHost } from '../src/sim-host/host.ts';

const PERF_STDERR = `
 Performance counter stats for process id '28234':

            node-28234                  2744      raw_syscalls:sys_enter
            node-28237                 1,053      raw_syscalls:sys_enter
        V8 Worker-28240                   18      raw_syscalls:sys_enter
            node-28236         <not counted>      raw_syscalls:sys_enter

       1.004150643 seconds time elapsed
`;

test('perf stat --per-thread output: counts by thread id (names with spaces, thousands separators, not counted) and the window', () => {
  const { byTid, elapsedSeconds } = parsePerfPerThread(PERF_STDERR);
  assert.deepEqual(
    [...byTid.entries()].sort((a, b) => a[0] - b[0]),
    [
      [28234, 2744],
      [28236, 0],
      [28237, 1053],
      [28240, 18],
    ],
  );
  assert.equal(elapsedSeconds, 1.004150643);
  assert.throws(() => parsePerfPerThread('node-1 5 raw_syscalls:sys_enter\n'), /no elapsed time/);
});

test('real-Xen cost of counted calls', () => {
  const counts = { ...emptyXenCallCounts(), maps: 3, unmaps: 3, copies: 5, copySegments: 40, notifies: 7, events: 11 };
  assert.equal(xenSyscalls(counts), 3 * XEN_SYSCALLS_PER_CALL.maps + 3 * XEN_SYSCALLS_PER_CALL.unmaps + 5 + 7 + 11 * XEN_SYSCALLS_PER_CALL.events);
});

test('the counter sees every grant and event-channel call the backend makes for a guest, and changes nothing it does', async () => {
  const counts = emptyXenCallCounts();
  const host = await SimHost.start({ dataPath: 'copy', instrumentBackend: (hv) => countXenCalls(hv, counts) });
  const ram = createRamDisk(1 << 20, { name: 'ram:count' });
  host.registerStore('counted', ram);
  try {
    const guest = await host.createGuest(
      { name: 'counted', memoryMiB: 16, disks: [{ target: 'counted', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: new URL('../src/guest/workloads/random-io.js', import.meta.url), params: { rw: 'randwrite', bs: 4096, iodepth: 4, seconds: 0.2, seed: 7 } },
    );
    const result = (await guest.result) as { ios: number };
    assert.ok(result.ios > 0);
    // The ring was mapped once; every write's data came in by grant copy; the guest was told.
    assert.equal(counts.maps, 1);
    assert.ok(counts.copies > 0 && counts.copySegments >= result.ios, `copies ${counts.copies}, segments ${counts.copySegments}, writes ${result.ios}`);
    assert.ok(counts.notifies > 0 && counts.events > 0, JSON.stringify(counts));
  } finally {
    await host.stop();
    await ram.close();
  }
  // Stopping the host disconnected the ring: its mapping went through the counter too.
  assert.equal(counts.unmaps, 1);
});
