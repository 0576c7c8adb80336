// BLKBACK_TEST_WORKERS=N runs blkback's data plane on N worker threads (BlkbackOptions.workers) in
// the suites that pass testWorkers() to SimHost.start: the hostile-guest, fairness and
// event-channel isolation suites, which must hold whatever thread serves a ring. Unset or 0: the
// main thread serves every ring, as by default.
import type { HostOptions } from '../src/sim-host/host.ts';

function fromEnv(): number {
  const text = process.env.BLKBACK_TEST_WORKERS;
  if (text === undefined || text === '') return 0;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new Error(`BLKBACK_TEST_WORKERS='${text}' is not a number of workers (0..64)`);
  return n;
}

export const TEST_WORKERS = fromEnv();

/** The host options that select the data-plane workers this run asked for. */
export function testWorkers(): Pick<HostOptions, 'workers'> {
  return TEST_WORKERS === 0 ? {} : { workers: TEST_WORKERS };
}

/**
 * As testWorkers(), with every ring on the last worker. For the suites that measure how the
 * backend shares one thread's time between domains (blkback-fairness, and the neighbour's share in
 * blkback-hostile): domains whose rings are on different workers do not share a thread at all, each
 * has one of its own (fair-share.ts), so only rings put together are a test of the fair share (its
 * accounts shared between workers, the rings served and counted on a worker, the budget shared).
 * The suites that check what must hold wherever a ring is served (races, storm, event-channel
 * isolation, blkback-workers) spread the rings instead. With one worker, or none, nothing changes.
 */
export function testWorkersSharingOne(): Pick<HostOptions, 'workers' | 'placeRing'> {
  if (TEST_WORKERS < 2) return testWorkers();
  const last = TEST_WORKERS - 1;
  return { workers: TEST_WORKERS, placeRing: () => last };
}
