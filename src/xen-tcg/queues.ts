// What a disk's frontend and backend negotiated about queues (rings), from dom0's xenstore listing
// (`xenstore-ls -f` of the frontend's and the backend's directories; dom0-init.sh queues_check).
// Pure.
//
// The keys (Linux's blkif.h, "Multiple Hardware Queues"):
//   backend   multi-queue-max-queues = N          the most queues the backend serves
//   frontend  multi-queue-num-queues = n          queues it uses, when more than one; then
//             queue-0/{ring-ref | ring-ref0.., event-channel} .. queue-(n-1)/...
//             one queue: ring-ref (or ring-ref0..) and event-channel at the top, no num-queues key
// Linux 6.1's blkfront uses min(its max_queues parameter, 4 by default; the guest's CPUs; the
// backend's max) queues; xen-blkback's max is dom0's online CPUs.

/** Linux blkfront's default xen_blkif_max_queues. */
export const BLKFRONT_MAX_QUEUES = 4;

export interface QueueFigures {
  /** The backend's multi-queue-max-queues (undefined: the backend did not write one). */
  readonly advertised: number | undefined;
  /** The frontend's multi-queue-num-queues, 1 when the key is absent. */
  readonly numQueues: number;
  readonly numQueuesKey: boolean;
  /** Queues 0..numQueues-1 whose directory (or the top, for one queue) has a ring-ref and an event-channel. */
  readonly complete: number;
  /** queue-N directories seen, whatever numQueues says. */
  readonly queueDirs: number;
  readonly frontendState: string | undefined;
  readonly backendState: string | undefined;
}

/** `path = "value"` lines to a map. */
export function parseXenstoreListing(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\/\S*) = "(.*)"\s*$/.exec(line.replace(/\r$/, ''));
    if (m !== null) out.set(m[1] as string, m[2] as string);
  }
  return out;
}

export function queueFigures(listing: string, frontend: string, backend: string): QueueFigures {
  const keys = parseXenstoreListing(listing);
  const num = (path: string): number | undefined => {
    const v = keys.get(path);
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  };
  const numQueuesKey = keys.has(`${frontend}/multi-queue-num-queues`);
  const numQueues = num(`${frontend}/multi-queue-num-queues`) ?? (numQueuesKey ? 0 : 1);
  const hasRing = (dir: string): boolean => (keys.has(`${dir}/ring-ref`) || keys.has(`${dir}/ring-ref0`)) && keys.has(`${dir}/event-channel`);
  let complete = 0;
  if (numQueuesKey) {
    for (let q = 0; q < numQueues; q++) if (hasRing(`${frontend}/queue-${q}`)) complete++;
  } else if (hasRing(frontend)) {
    complete = 1;
  }
  const dirs = new Set<string>();
  for (const path of keys.keys()) {
    const m = new RegExp(`^${frontend.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(queue-\\d+)/`).exec(path);
    if (m !== null) dirs.add(m[1] as string);
  }
  return {
    advertised: num(`${backend}/multi-queue-max-queues`),
    numQueues,
    numQueuesKey,
    complete,
    queueDirs: dirs.size,
    frontendState: keys.get(`${frontend}/state`),
    backendState: keys.get(`${backend}/state`),
  };
}

/** The queues Linux's blkfront should have asked for: min(its default 4, the guest's vCPUs, the backend's max). */
export function expectedQueues(guestVcpus: number, advertised: number | undefined): number {
  return Math.max(1, Math.min(BLKFRONT_MAX_QUEUES, guestVcpus, advertised ?? 1));
}

export function queueLine(q: QueueFigures): string {
  return (
    `multi-queue-max-queues ${q.advertised ?? 'absent'}, multi-queue-num-queues ${q.numQueuesKey ? q.numQueues : 'absent (1)'}, ` +
    `${q.complete} queue(s) with ring-ref and event-channel, ${q.queueDirs} queue-N directories, state ${q.frontendState ?? '?'}/${q.backendState ?? '?'}`
  );
}
