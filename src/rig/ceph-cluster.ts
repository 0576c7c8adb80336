// A throwaway Ceph cluster (a test file's, or `reproduce --rig rbd`'s), from Debian's packages (ceph-mon, ceph-osd, ceph-common),
// brought up without systemd and torn down after: the recipe of ../shared/docs/ceph-in-tests.md.
//
//   one OSD:    mon and OSD on a loopback address of their own (127.A.B.1), so two test files
//               running at once never share a port
//   three OSDs: the mon on a bridge in this namespace; each OSD in its own network namespace
//               ("host"), joined to the bridge by a veth pair: OSD to OSD traffic crosses veths
//
//   10.A.B.1 (bridge, mon, this process's librbd)
//      ├── veth ── ns osd0: 10.A.B.10
//      ├── veth ── ns osd1: 10.A.B.11
//      └── veth ── ns osd2: 10.A.B.12
//
// OSDs keep their data in memory (memstore, the default): quick to make, nothing on disk, and the
// tests write little. Or bluestore on a block file in /dev/shm, capped at osdBytes (tmpfs fills it
// as it is written), as a real OSD stores data.
//
// Every daemon is started directly (no wrapper shell), so the recorded PID is the daemon's, and
// teardown kills only those PIDs, OSDs before the mon (an OSD whose mon is gone waits 5 s).
import { execFile, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { accessSync, constants, appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, delimiter, join } from 'node:path';

/** What is missing to bring a cluster up, and how to get it (the tests' Missing). */
export interface CephMissing {
  readonly what: string;
  readonly install: string;
}

function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

function missingTools(tools: readonly string[], packages: string): CephMissing | undefined {
  const missing = tools.filter((t) => !onPath(t));
  return missing.length === 0 ? undefined : { what: `${missing.join(', ')} not installed`, install: `apt-get install ${packages}` };
}

function run(
  tool: string,
  args: readonly string[],
  options: { timeoutMs: number; env: NodeJS.ProcessEnv },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(tool, args as string[], { timeout: options.timeoutMs, maxBuffer: 64 << 20, env: options.env }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

export interface CephClusterOptions {
  /** 1 (pool size 1) or 3 (pool size 3, min_size 2, each OSD in its own network namespace). */
  readonly osds: 1 | 3;
  /** Memory each memstore OSD may hold, or the size of each bluestore block file (bytes). */
  readonly osdBytes?: number;
  /** memstore (default) or bluestore on a /dev/shm block file. */
  readonly objectStore?: 'memstore' | 'bluestore';
}

export interface CephCluster {
  /** ceph.conf with mon_host and the admin keyring: what an rbd: spec's conf= names. */
  readonly conf: string;
  readonly dir: string;
  /** PID of each OSD daemon, by id. */
  readonly osdPids: ReadonlyMap<number, number>;
  /** Runs the `ceph`, `rbd` or other CLI against this cluster; throws with its output on failure. */
  cli(tool: 'ceph' | 'rbd', args: readonly string[], timeoutMs?: number): Promise<string>;
  /** SIGKILLs one OSD (as a crashed host would lose it). */
  killOsd(id: number): void;
  teardown(): Promise<void>;
}

/** What this machine lacks to bring a cluster up (tools, root for namespaces), or undefined. */
export function cephMissing(osds: 1 | 3): CephMissing | undefined {
  const tools = missingTools(['ceph-mon', 'ceph-osd', 'ceph', 'rbd', 'ceph-authtool', 'monmaptool'], 'ceph-mon ceph-osd ceph-common');
  if (tools !== undefined) return tools;
  if (osds === 3) {
    if (process.getuid?.() !== 0) return { what: 'root, for the OSDs network namespaces', install: 'run the tests as root, as CI does' };
    return missingTools(['ip'], 'iproute2');
  }
  return undefined;
}

const MON_V2 = 3300;
const MON_V1 = 6789;

interface ConfParams {
  fsid: string;
  dir: string;
  ip: string;
  size: number;
  minSize: number;
  osdBytes: number;
  objectStore: 'memstore' | 'bluestore';
  /** bluestore: where the block files go ($id is Ceph's metavariable). */
  shm: string;
}

function confText(o: ConfParams): string {
  const d = o.dir;
  return `[global]
fsid = ${o.fsid}
mon_host = [v2:${o.ip}:${MON_V2},v1:${o.ip}:${MON_V1}]
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
osd_pool_default_size = ${o.size}
osd_pool_default_min_size = ${o.minSize}
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_pg_num = 16
osd_pool_default_pgp_num = 16
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_data_avail_warn = 2
mon_mgr_mkfs_grace = 3600
paxos_propose_interval = 0.1
osd_heartbeat_interval = 1
osd_heartbeat_grace = 5
mon_osd_min_down_reporters = 1
osd_memory_target = 939524096
osd_op_num_shards = 2
ms_async_op_threads = 2
osd_objectstore = ${o.objectStore}
memstore_device_bytes = ${o.osdBytes}
bluestore_block_path = ${o.shm}-osd.$id.block
bluestore_block_size = ${o.osdBytes}
bluestore_block_create = true
bluestore_fsck_on_mkfs = false
bluestore_cache_size = 134217728
osd_client_watch_timeout = 5
run_dir = ${d}/run
admin_socket = ${d}/run/$name.asok
log_file = ${d}/log/$name.log
mon_data = ${d}/mon.$id
osd_data = ${d}/osd.$id
keyring = ${d}/$name.keyring
[mon]
mon_cluster_log_file = ${d}/log/cluster.log
`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A /16 of 10.0.0.0/8 or 127.0.0.0/8 picked from the PID and a random part, so concurrent files differ. */
function subnet(): [number, number] {
  return [100 + (process.pid % 100), 1 + Math.floor(Math.random() * 250)];
}

const DIR_PREFIX = 'blkback-ceph-';

/**
 * Clusters of test processes that died without teardown and without their exit hook (a native
 * abort, SIGKILL): their daemons' PIDs are in the directory's `daemons` file; each is killed only if
 * its command line still names that directory (a PID reused since is left alone).
 */
function sweepStaleClusters(): void {
  for (const name of readdirSync('/tmp')) {
    const m = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name);
    if (m === null || pidAlive(Number(m[1]))) continue;
    const dir = join('/tmp', name);
    let pids: number[] = [];
    try {
      pids = readFileSync(join(dir, 'daemons'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      // never got as far as a daemon
    }
    for (const pid of pids) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
    for (const line of ns.split('\n')) {
      const n = line.split(' ')[0] ?? '';
      if (n.startsWith(`bkc${m[1]}-`)) spawnSync('ip', ['netns', 'del', n]);
    }
    try {
      for (const link of readFileSync(join(dir, 'links'), 'utf8').split('\n').filter(Boolean)) spawnSync('ip', ['link', 'del', link]);
    } catch {
      // no links made
    }
    rmSync(dir, { recursive: true, force: true });
    for (const f of readdirSync('/dev/shm')) if (f.startsWith(`${name}-osd.`)) rmSync(join('/dev/shm', f), { force: true });
  }
}

export async function startCephCluster(opts: CephClusterOptions): Promise<CephCluster> {
  sweepStaleClusters();
  const dir = mkdtempSync(`/tmp/${DIR_PREFIX}${process.pid}-`);
  const shm = join('/dev/shm', basename(dir));
  const conf = join(dir, 'ceph.conf');
  const env = { ...process.env, CEPH_CONF: conf };
  const children: ChildProcess[] = [];
  const osdPids = new Map<number, number>();
  const namespaces: string[] = [];
  const links: string[] = [];
  const [a, b] = subnet();
  const multi = opts.osds === 3;
  const monIp = multi ? `10.${a}.${b}.1` : `127.${a}.${b}.1`;
  const bridge = `bkc${process.pid % 100000}${b}`.slice(0, 15);
  let monPid = 0;

  const sh = async (tool: string, args: readonly string[], timeoutMs = 60_000): Promise<string> => {
    const r = await run(tool, args, { timeoutMs, env });
    if (r.code !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join(' | ')}`);
    return r.stdout;
  };
  const daemon = (argv: readonly string[], ns?: string): number => {
    const [cmd, args] = ns === undefined ? [argv[0]!, argv.slice(1)] : ['ip', ['netns', 'exec', ns, ...argv]];
    const child = spawn(cmd, args, { env, stdio: 'ignore' });
    child.on('error', () => undefined);
    children.push(child);
    if (child.pid === undefined) throw new Error(`cannot start ${argv[0]}`);
    appendFileSync(join(dir, 'daemons'), `${child.pid}\n`);
    return child.pid;
  };

  // A test process that dies without teardown (an uncaught error, process.exit) must not leave daemons behind.
  const onExit = (): void => {
    for (const pid of [...osdPids.values(), monPid]) if (pid !== 0 && pidAlive(pid)) process.kill(pid, 'SIGKILL');
    for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
    for (const l of links) spawnSync('ip', ['link', 'del', l]);
  };
  process.once('exit', onExit);

  const teardown = async (): Promise<void> => {
    process.removeListener('exit', onExit);
    const waitGone = async (pids: number[], ms: number): Promise<void> => {
      const end = Date.now() + ms;
      while (pids.some(pidAlive) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      for (const p of pids.filter(pidAlive)) process.kill(p, 'SIGKILL');
    };
    const osds = [...osdPids.values()].filter(pidAlive);
    for (const p of osds) process.kill(p, 'SIGTERM');
    await waitGone(osds, 3000);
    if (monPid !== 0 && pidAlive(monPid)) {
      process.kill(monPid, 'SIGTERM');
      await waitGone([monPid], 3000);
    }
    // Our children are reaped by Node (exit events); wait for them so no zombie is left.
    const exited = (c: ChildProcess): Promise<void> =>
      c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', () => r()));
    await Promise.all(children.map(exited));
    for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns]);
    for (const l of links) spawnSync('ip', ['link', 'del', l]);
    rmSync(dir, { recursive: true, force: true });
    for (const f of readdirSync('/dev/shm')) if (f.startsWith(basename(shm))) rmSync(join('/dev/shm', f), { force: true });
  };

  try {
    for (const sub of ['run', 'log', 'mon.a']) mkdirSync(join(dir, sub), { recursive: true });
    const fsid = randomUUID();
    const size = multi ? 3 : 1;
    writeFileSync(
      conf,
      confText({ fsid, dir, ip: monIp, size, minSize: multi ? 2 : 1, osdBytes: opts.osdBytes ?? 1 << 30, objectStore: opts.objectStore ?? 'memstore', shm }),
    );
    if (multi) {
      await sh('ip', ['link', 'add', bridge, 'type', 'bridge']);
      links.push(bridge);
      appendFileSync(join(dir, 'links'), `${bridge}\n`);
      await sh('ip', ['addr', 'add', `${monIp}/24`, 'dev', bridge]);
      await sh('ip', ['link', 'set', bridge, 'up']);
    }
    // Keys: mon., client.admin (imported into the mon's keyring, so the mon knows the admin).
    const monKeyring = join(dir, 'mon.keyring');
    const adminKeyring = join(dir, 'client.admin.keyring');
    await sh('ceph-authtool', ['--create-keyring', monKeyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await sh('ceph-authtool', [
      '--create-keyring',
      adminKeyring,
      '--gen-key',
      '-n',
      'client.admin',
      '--cap',
      'mon',
      'allow *',
      '--cap',
      'osd',
      'allow *',
      '--cap',
      'mgr',
      'allow *',
      '--cap',
      'mds',
      'allow *',
    ]);
    await sh('ceph-authtool', [monKeyring, '--import-keyring', adminKeyring]);
    const monmap = join(dir, 'monmap');
    await sh('monmaptool', ['--create', '--addv', 'a', `[v2:${monIp}:${MON_V2},v1:${monIp}:${MON_V1}]`, '--fsid', fsid, monmap]);
    await sh('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', monKeyring]);
    monPid = daemon(['ceph-mon', '-c', conf, '-i', 'a', '-f', '--public-addr', monIp]);

    for (let n = 0; n < opts.osds; n++) {
      const uuid = randomUUID();
      const key = (await sh('ceph-authtool', ['--gen-print-key'])).trim();
      const secret = join(dir, `osd-secret-${n}.json`);
      writeFileSync(secret, JSON.stringify({ cephx_secret: key }));
      const id = Number((await sh('ceph', ['-c', conf, 'osd', 'new', uuid, '-i', secret], 30_000)).trim());
      mkdirSync(join(dir, `osd.${id}`), { recursive: true });
      writeFileSync(join(dir, `osd.${id}.keyring`), `[osd.${id}]\n\tkey = ${key}\n`);
      await sh('ceph-osd', ['-c', conf, '-i', String(id), '--mkfs', '--osd-uuid', uuid]);
      const argv = ['ceph-osd', '-c', conf, '-i', String(id), '-f'];
      if (multi) {
        const ns = `bkc${process.pid}-${b}-${id}`;
        const host = `v${process.pid % 10000}${b}o${id}`.slice(0, 13);
        const ip = `10.${a}.${b}.${10 + id}`;
        await sh('ip', ['netns', 'add', ns]);
        namespaces.push(ns);
        await sh('ip', ['link', 'add', `${host}h`, 'type', 'veth', 'peer', 'name', `${host}n`]);
        links.push(`${host}h`);
        appendFileSync(join(dir, 'links'), `${host}h\n`);
        await sh('ip', ['link', 'set', `${host}n`, 'netns', ns]);
        await sh('ip', ['link', 'set', `${host}h`, 'master', bridge, 'up']);
        await sh('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', `${host}n`]);
        await sh('ip', ['-n', ns, 'link', 'set', `${host}n`, 'up']);
        await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
        argv.push('--public-addr', ip, '--cluster-addr', ip, '--crush-location', `root=default host=h${id}`);
        osdPids.set(id, daemon(argv, ns));
      } else {
        argv.push('--public-addr', monIp, '--cluster-addr', monIp);
        osdPids.set(id, daemon(argv));
      }
    }
    const deadline = Date.now() + 60_000;
    for (;;) {
      const stat = JSON.parse(await sh('ceph', ['-c', conf, 'osd', 'stat', '-f', 'json'], 20_000)) as { num_up_osds: number; num_in_osds: number };
      if (stat.num_up_osds === opts.osds && stat.num_in_osds === opts.osds) break;
      for (const [id, pid] of osdPids) if (!pidAlive(pid)) throw new Error(`osd.${id} exited during bring-up (see ${dir}/log/osd.${id}.log)`);
      if (Date.now() > deadline) throw new Error(`OSDs not up after 60 s: ${JSON.stringify(stat)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    await sh('ceph', ['-c', conf, 'osd', 'pool', 'create', 'rbd', '16', '16']);
    await sh('rbd', ['-c', conf, 'pool', 'init', 'rbd'], 60_000);
  } catch (err) {
    await teardown();
    throw err;
  }
  return {
    conf,
    dir,
    osdPids,
    cli: async (tool, args, timeoutMs = 60_000) => sh(tool, ['-c', conf, ...args], timeoutMs),
    killOsd(id) {
      const pid = osdPids.get(id);
      if (pid !== undefined && pidAlive(pid)) process.kill(pid, 'SIGKILL');
    },
    teardown,
  };
}
