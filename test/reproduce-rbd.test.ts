// `reproduce` on network stores: --storage takes any store spec (here an NBD export of nbdkit's, over a
// Unix socket) and the report names it; --rig rbd puts both guests' disk on a Ceph image and the
// report says what the cluster was. Both check that the runs' writes reached the remote store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clusterFacts, describeCluster } from '../src/rig/rbd-rig.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';
import { cephMissing, startCephCluster } from './support/ceph-cluster.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface Results {
  rig: string;
  cluster?: string;
  ceph_osds?: number;
  objectstore?: string;
  pool_size?: number;
  storage: { phy: string; file: string };
  summary: { job: string; backend: string; mibps: number }[];
}

test('reproduce: rbd and storage arguments are checked before anything runs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-reproduce-args-'));
  try {
    const cases: [string[], RegExp][] = [
      [['--rig', 'rbd', '--rbd-conf', '/nonexistent.conf'], /--rbd-conf and --rbd-image go together/],
      [['--rig', 'rbd', '--ceph-osds', '2'], /--ceph-osds: '2' is not 1 or 3/],
      [['--rig', 'rbd', '--rbd-conf', '/c', '--rbd-image', 'a/b', '--ceph-osds', '1'], /--ceph-osds sizes the throwaway cluster/],
      [['--rig', 'rbd', '--rbd-id', 'x'], /--rbd-id is the user of an existing cluster/],
      [['--rbd-image', 'rbd/x', '--rig', 'local'], /go with --rig rbd/],
      [['--rig', 'rbd', '--storage', 'ram:64M'], /--storage gives the store itself: it goes with --rig local, not --rig rbd/],
      [['--storage', 'nbd+unix:///x'], /store spec 'nbd\+unix:\/\/\/x'/],
      [['--rig', 'ceph'], /expected local, iscsi or rbd/],
    ];
    for (const [args, message] of cases) {
      const r = await run(process.execPath, [MAIN, 'reproduce', '--quick', '--out', join(dir, 'out'), ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the cluster line says OSDs, objectstore and the pool replication, from ceph JSON', () => {
  // Shapes of `ceph osd dump`, `ceph osd metadata` and `ceph version` (--format json), trimmed by hand.
  const dump = {
    osds: [
      { osd: 0, up: 1 },
      { osd: 1, up: 1 },
      { osd: 2, up: 0 },
    ],
    pools: [
      { pool_name: 'device_health_metrics', size: 1, min_size: 1 },
      { pool_name: 'rbd', size: 3, min_size: 2 },
    ],
  };
  const metadata = [
    { id: 0, osd_objectstore: 'bluestore' },
    { id: 1, osd_objectstore: 'bluestore' },
    { id: 2, osd_objectstore: 'memstore' },
  ];
  const version = { version: 'ceph version 16.2.15 (618f440892089921c3e944a991122ddc44e60516) pacific (stable)' };
  const facts = clusterFacts(dump, metadata, version, 'rbd');
  assert.deepEqual(facts, { osds: 3, osdsUp: 2, objectstores: ['bluestore', 'memstore'], pool: 'rbd', poolSize: 3, poolMinSize: 2, version: '16.2.15' });
  assert.equal(describeCluster(facts), 'Ceph 16.2.15, 2 OSDs up of 3 (bluestore, memstore), pool rbd size 3 / min_size 2');
  assert.equal(describeCluster(clusterFacts(dump, [], null, 'nope')), 'Ceph, 2 OSDs up of 3 (objectstore unknown), pool nope (not in the OSD map)');
});

/** nbdinfo --map of an export: the extents' types (0 data, 3 hole and zero). */
async function mapTypes(uri: string): Promise<number[]> {
  const r = await run('nbdinfo', ['--map', '--json', uri]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { type: number }[]).map((e) => e.type);
}

function waitForSocket(path: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const s = createConnection(path);
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => (Date.now() > deadline ? reject(new Error(`no socket at ${path}`)) : setTimeout(attempt, 50)));
    };
    attempt();
  });
}

test('reproduce --storage nbd+unix:// (nbdkit memory) --quick: both backends run on the export and the report names it', { timeout: 90_000 }, async (t) => {
  if (stopIfMissing(t, missingTools(['nbdkit', 'nbdinfo'], 'nbdkit libnbd-bin'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-reproduce-nbd-'));
  const socket = join(dir, 'nbdkit.sock');
  const nbdkit = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', socket, 'memory', 'size=64M'], { stdio: 'ignore' });
  try {
    await waitForSocket(socket);
    const spec = `nbd+unix:///?socket=${socket}`;
    assert.deepEqual([...new Set(await mapTypes(spec))], [3], 'nbdkit starts with nothing written');
    const out = join(dir, 'out');
    // Heavy part: 4 runs of 1 s (two jobs, two backends) through blkfront, blkback and our NBD client.
    const r = await run(process.execPath, [MAIN, 'reproduce', '--quick', '--runtime', '1', '--size', '64M', '--storage', spec, '--out', out], {
      timeoutMs: 80_000,
    });
    assert.equal(r.code, 0, r.stderr);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Results;
    assert.equal(results.rig, 'local');
    assert.deepEqual(results.storage, { phy: spec, file: spec });
    assert.deepEqual(results.summary.map((s) => `${s.job}/${s.backend}`).sort(), ['iometer/file', 'iometer/phy', 'randw/file', 'randw/phy']);
    for (const s of results.summary) assert.ok(s.mibps > 0, `${s.job}/${s.backend} moved data`);
    assert.ok(readFileSync(join(out, 'report.html'), 'utf8').includes(`both backends use the store given with --storage: ${spec}`));
    assert.ok((await mapTypes(spec)).includes(0), "the guests' writes reached nbdkit");
  } finally {
    nbdkit.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reproduce --rig rbd --quick on an existing cluster (as root, with Ceph): both guests on its image; the report says what the cluster was', {
  timeout: 150_000,
}, async (t) => {
  if (stopIfMissing(t, process.getuid?.() === 0 ? cephMissing(1) : { what: 'root, for a Ceph cluster', install: 'run the tests as root, as CI does' })) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-reproduce-rbd-'));
  // Heavy part: a one-OSD memstore cluster (about 10 s), then 4 runs of 1 s on the image.
  const cluster = await startCephCluster({ osds: 1, osdBytes: 512 << 20 });
  try {
    await cluster.cli('rbd', ['-c', cluster.conf, 'create', '--size', '64M', '--image-feature', 'layering', 'rbd/seed']);
    const out = join(dir, 'out');
    const args = [
      'reproduce',
      '--rig',
      'rbd',
      '--rbd-conf',
      cluster.conf,
      '--rbd-image',
      'rbd/seed',
      '--quick',
      '--runtime',
      '1',
      '--size',
      '64M',
      '--out',
      out,
    ];
    const r = await run(process.execPath, [MAIN, ...args], { timeoutMs: 100_000 });
    assert.equal(r.code, 0, r.stderr);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Results;
    assert.equal(results.rig, 'rbd');
    assert.equal(results.ceph_osds, 1);
    assert.equal(results.objectstore, 'memstore');
    assert.equal(results.pool_size, 1);
    assert.match(results.cluster ?? '', /^Ceph [\d.]+, 1 OSD up of 1 \(memstore\), pool rbd size 1 \/ min_size 1; image rbd\/seed \(67108864 bytes\)/);
    const spec = `rbd:rbd/seed:id=admin:conf=${cluster.conf}`;
    assert.deepEqual(results.storage, { phy: spec, file: spec });
    for (const s of results.summary) assert.ok(s.mibps > 0, `${s.job}/${s.backend} moved data`);
    assert.equal(results.summary.length, 4);
    assert.match(readFileSync(join(out, 'report.html'), 'utf8'), /the seed&#39;s rig on Ceph|the seed's rig on Ceph/);
    // Extents written since the image was made: the guests' writes are on the OSD.
    const diff = JSON.parse(await cluster.cli('rbd', ['-c', cluster.conf, 'diff', '--format', 'json', 'rbd/seed'])) as { length: number }[];
    assert.ok(diff.reduce((n, e) => n + e.length, 0) > 0, 'the image holds written extents');
  } finally {
    await cluster.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reproduce --rig rbd --quick with no cluster given (as root, with Ceph): it brings up its own, says what it was, and tears it down', {
  timeout: 150_000,
}, async (t) => {
  if (stopIfMissing(t, process.getuid?.() === 0 ? cephMissing(1) : { what: 'root, for a Ceph cluster', install: 'run the tests as root, as CI does' })) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-reproduce-rbd-own-'));
  try {
    const out = join(dir, 'out');
    // Heavy part: the cluster's bring-up (about 10 s) and teardown, and 4 runs of 1 s.
    const r = await run(process.execPath, [MAIN, 'reproduce', '--rig', 'rbd', '--ceph-osds', '1', '--quick', '--runtime', '1', '--size', '32M', '--out', out], {
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, r.stderr);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Results;
    assert.equal(results.rig, 'rbd');
    assert.equal(results.ceph_osds, 1);
    assert.equal(results.objectstore, 'memstore');
    assert.equal(results.pool_size, 1);
    assert.match(
      results.cluster ?? '',
      /^a throwaway cluster brought up for this run and torn down after: Ceph [\d.]+, 1 OSD up of 1 \(memstore\), pool rbd size 1/,
    );
    assert.equal(results.summary.length, 4);
    for (const s of results.summary) assert.ok(s.mibps > 0, `${s.job}/${s.backend} moved data`);
    const conf = /conf=(\S+ceph\.conf)/.exec(results.storage.phy)?.[1];
    assert.ok(conf !== undefined, results.storage.phy);
    assert.ok(!existsSync(dirname(conf)), 'the cluster directory is gone');
    const left = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dirname(conf));
        } catch {
          return false;
        }
      });
    assert.deepEqual(left, [], 'no daemon of the cluster is left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
