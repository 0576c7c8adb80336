// The seed's storage side for `reproduce --rig rbd` (and the rbd part of `bench --suite net`): the store
// is an image on a Ceph cluster, opened through librbd (the rbd: store), and the report says what the
// cluster was: how many OSDs, on which objectstore, and the pool's replication, read back from the
// cluster itself (the `ceph` CLI of Debian's ceph-common). The cluster is an existing one, given by its
// ceph.conf, or a throwaway one brought up for the run and torn down after (ceph-cluster.ts).
import { execFile } from 'node:child_process';
import { openBlockDevice } from '../stores/open.ts';
import { UsageError } from '../internal/errors.ts';
import { cephMissing, startCephCluster } from './ceph-cluster.ts';

export interface RbdRigOptions {
  /** ceph.conf of the cluster. */
  readonly conf: string;
  /** POOL/IMAGE */
  readonly image: string;
  /** cephx user without 'client.' (default admin). */
  readonly id?: string;
  /** The image must hold at least this many bytes (the jobs' size=). */
  readonly minBytes: number;
}

export interface ClusterFacts {
  readonly osds: number;
  readonly osdsUp: number;
  /** 'bluestore', 'memstore', ... one entry per kind in use. */
  readonly objectstores: string[];
  readonly pool: string;
  readonly poolSize: number | null;
  readonly poolMinSize: number | null;
  readonly version: string | null;
}

export interface RbdRig {
  /** rbd:POOL/IMAGE:id=NAME:conf=PATH, for both backends. */
  readonly spec: string;
  /** POOL/IMAGE and the cephx user, for fio's rbd engine (pool=, rbdname=, clientname=). */
  readonly pool: string;
  readonly image: string;
  readonly id: string;
  readonly imageBytes: number;
  readonly cluster: ClusterFacts;
  /** One line for the report: 'Ceph 16.2.15, 3 OSDs up of 3 (bluestore), pool rbd size 3 / min_size 2; image ...'. */
  readonly description: string;
  /** Tears a throwaway cluster down; nothing for an existing one. */
  close(): Promise<void>;
}

export interface ThrowawayRbdRigOptions {
  /** 1 (pool size 1) or 3 (size 3 / min_size 2, each OSD in a network namespace of its own: root). */
  readonly osds: 1 | 3;
  /** The image's size (the jobs' size=). */
  readonly imageBytes: number;
  readonly log: (line: string) => void;
}

const THROWAWAY_IMAGE = 'rbd/seed';

/** Why a throwaway cluster cannot be brought up here ('ceph-osd not installed (apt-get install ...)'), or null. */
export function throwawayUnavailable(osds: 1 | 3): string | null {
  const m = cephMissing(osds);
  return m === undefined ? null : `${m.what} (${m.install})`;
}

/**
 * A cluster of its own for one run: one mon, `osds` memstore OSDs (data in their memory, sized for
 * the image), the rbd pool, and one image made with only the layering feature (no exclusive lock:
 * fio's rbd engine opens it once per job). close() tears it all down.
 */
export async function startThrowawayRbdRig(o: ThrowawayRbdRigOptions): Promise<RbdRig> {
  const why = throwawayUnavailable(o.osds);
  if (why !== null) throw new UsageError(`--rig rbd with no --rbd-conf brings up a cluster of its own: ${why}`);
  o.log(`bringing up a throwaway Ceph cluster: one mon, ${o.osds} memstore OSD${o.osds === 1 ? '' : 's'}`);
  const mib = Math.ceil(o.imageBytes / 2 ** 20);
  // memstore keeps every object in the OSD's memory: room for the image, plus Ceph's own.
  const cluster = await startCephCluster({ osds: o.osds, osdBytes: (mib + 512) * 2 ** 20, objectStore: 'memstore' });
  try {
    await cluster.cli('rbd', ['-c', cluster.conf, 'create', '--size', `${mib}M`, '--image-feature', 'layering', THROWAWAY_IMAGE]);
    const rig = await openRbdRig({ conf: cluster.conf, image: THROWAWAY_IMAGE, minBytes: o.imageBytes });
    return {
      ...rig,
      description: `a throwaway cluster brought up for this run and torn down after: ${rig.description}`,
      close: () => cluster.teardown(),
    };
  } catch (err) {
    await cluster.teardown();
    throw err;
  }
}

/** Checks the cluster answers and the image is big enough; reads what the report says about both. */
export async function openRbdRig(o: RbdRigOptions): Promise<RbdRig> {
  const slash = o.image.indexOf('/');
  if (slash <= 0 || slash === o.image.length - 1 || o.image.indexOf('/', slash + 1) >= 0) throw new UsageError(`--rbd-image: '${o.image}' is not POOL/IMAGE`);
  const pool = o.image.slice(0, slash);
  const id = o.id ?? 'admin';
  const spec = `rbd:${o.image}:id=${id}:conf=${o.conf}`;
  const ceph = (args: string[]): Promise<unknown> => cephJson(['--conf', o.conf, '--id', id, ...args]);
  const [dump, metadata, versions] = await Promise.all([ceph(['osd', 'dump']), ceph(['osd', 'metadata']), ceph(['version']).catch(() => null)]);
  const cluster = clusterFacts(dump, metadata, versions, pool);
  const device = await openBlockDevice(spec);
  let imageBytes: number;
  try {
    imageBytes = device.info.size;
  } finally {
    await device.close();
  }
  if (imageBytes < o.minBytes)
    throw new UsageError(
      `--rbd-image ${o.image} holds ${imageBytes} bytes, less than the jobs' ${o.minBytes} (--size): grow it with 'rbd resize' or lower --size`,
    );
  return {
    spec,
    pool,
    image: o.image.slice(slash + 1),
    id,
    imageBytes,
    cluster,
    description: `${describeCluster(cluster)}; image ${o.image} (${imageBytes} bytes) as ${spec}`,
    close: async () => undefined,
  };
}

/** The facts the report gives, from `ceph osd dump`, `ceph osd metadata` and `ceph version` (JSON). */
export function clusterFacts(dump: unknown, metadata: unknown, version: unknown, pool: string): ClusterFacts {
  const d = dump as { osds?: { up?: number }[]; pools?: { pool_name?: string; size?: number; min_size?: number }[] };
  const m = Array.isArray(metadata) ? (metadata as { osd_objectstore?: string }[]) : [];
  const p = d.pools?.find((x) => x.pool_name === pool);
  const v = (version as { version?: string } | null)?.version;
  const short = v === undefined ? null : (/ceph version (\S+)/.exec(v)?.[1] ?? v);
  return {
    osds: d.osds?.length ?? 0,
    osdsUp: d.osds?.filter((o) => o.up === 1).length ?? 0,
    objectstores: [...new Set(m.map((x) => x.osd_objectstore ?? 'unknown'))].sort(),
    pool,
    poolSize: p?.size ?? null,
    poolMinSize: p?.min_size ?? null,
    version: short,
  };
}

export function describeCluster(c: ClusterFacts): string {
  const stores = c.objectstores.length === 0 ? 'objectstore unknown' : c.objectstores.join(', ');
  const replication = c.poolSize === null ? `pool ${c.pool} (not in the OSD map)` : `pool ${c.pool} size ${c.poolSize} / min_size ${c.poolMinSize ?? '?'}`;
  return `Ceph${c.version === null ? '' : ` ${c.version}`}, ${c.osdsUp} OSD${c.osdsUp === 1 ? '' : 's'} up of ${c.osds} (${stores}), ${replication}`;
}

function cephJson(args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    execFile('ceph', [...args, '--format', 'json', '--connect-timeout', '10'], { timeout: 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err !== null) {
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
        reject(
          new UsageError(
            missing ? "--rig rbd: the 'ceph' command is missing (Debian package ceph-common)" : `ceph ${args.join(' ')}: ${stderr.trim() || err.message}`,
          ),
        );
        return;
      }
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`ceph ${args.join(' ')}: no JSON in its answer: ${stdout.slice(0, 200)}`));
      }
    });
  });
}
