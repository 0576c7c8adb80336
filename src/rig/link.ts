// The seed's storage link: the iSCSI target gets its own network namespace, joined to the host by a
// veth pair on a private /30 and shaped on both ends (host to target for writes, target to host for
// reads) with tc's token bucket filter. Without root there is no namespace: the target runs on the
// host's loopback, unshaped, and `fallback` says so. Teardown always removes what was made: on
// close(), when opening fails half way, at process exit and on SIGINT/SIGTERM; and namespaces left
// by a process that was killed outright are swept by the next open.
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';
import type { LinkSpec } from './link-spec.ts';

const execFileAsync = promisify(execFile);

export interface StorageLink {
  readonly spec: LinkSpec;
  /** Where the target listens: 10.231.x.y inside the namespace, or 127.0.0.1 without one. */
  readonly serverAddress: string;
  /** The host's end of the veth (127.0.0.1 without one). */
  readonly hostAddress: string;
  /** The namespace's name, undefined on the loopback fallback. */
  readonly namespace: string | undefined;
  /** The host's veth, undefined on the loopback fallback. */
  readonly hostInterface: string | undefined;
  /** True when tc shapes the link to spec's rate. */
  readonly shaped: boolean;
  /** Why there is no namespace (not root, ...), undefined when there is one. */
  readonly fallback: string | undefined;
  /** Starts a process on the server's side of the link (`ip netns exec NAME ...`); killed by close(). */
  spawnServer(command: string, args: readonly string[], options?: SpawnOptions): ChildProcess;
  /** Kills the processes spawnServer started, then removes the veth and the namespace. Idempotent. */
  close(): Promise<void>;
}

export interface OpenLinkOptions {
  /** For tests: behave as if not root. */
  readonly forceLoopback?: boolean;
}

// Names carry the owner's pid so a sweep can tell a dead run's namespace from a live one's.
const NS_PREFIX = 'blkback-link-';
// 10.231.0.0/16 cut into /30s: 16384 links; the first one free of addresses in use is taken.
const SUBNET_BASE = [10, 231] as const;
const SUBNETS = 16384;

/** The /30 number `index`: host .1, server .2 of it (network .0, broadcast .3 unused). */
export function subnetAddresses(index: number): { host: string; server: string } {
  const third = index >> 6;
  const fourth = (index & 63) * 4;
  const base = `${SUBNET_BASE[0]}.${SUBNET_BASE[1]}.${third}.`;
  return { host: `${base}${fourth + 1}`, server: `${base}${fourth + 2}` };
}

/** Interface names are at most 15 bytes (IFNAMSIZ - 1): 'bbh' or 'bbn' and the subnet in hex. */
export function vethNames(index: number): { host: string; server: string } {
  const tag = index.toString(16).padStart(4, '0');
  return { host: `bbh${tag}`, server: `bbn${tag}` };
}

/**
 * tc's token bucket on one veth end. burst is 1 ms at the rate but at least 64 KiB: room for one
 * whole GSO segment (veth passes up to 64 KiB per skb) and enough that the bucket is not refilled
 * one timer tick at a time, yet no more than a millisecond ahead of the rate. latency 5 ms bounds
 * the queue at 5 ms of traffic (625 KB at 1 Gbit/s, a switch port's buffer): TCP keeps the link
 * full through it, where a shorter queue drops enough to leave gaps and a longer one only adds delay
 * to reads queued behind writes. Measured here: 1 GiB sequential writes through qemu-img bench move
 * at about 0.95x of 125 MB/s (frames and TCP/iSCSI headers take the rest).
 */
export function tbfArgs(device: string, bitsPerSecond: number): string[] {
  const burstBytes = Math.max(64 * 1024, Math.ceil(bitsPerSecond / 8 / 1000));
  return ['qdisc', 'replace', 'dev', device, 'root', 'tbf', 'rate', `${bitsPerSecond}bit`, 'burst', `${burstBytes}b`, 'latency', '5ms'];
}

interface LiveLink {
  readonly namespace: string;
  /** Set once the veth pair exists. */
  hostInterface: string | undefined;
  readonly children: Set<ChildProcess>;
}

const live = new Set<LiveLink>();
let exitHooksInstalled = false;

async function ip(args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('ip', args as string[], { timeout: 10_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim().split('\n')[0]}`, { cause: err });
  }
}

async function tc(namespace: string | undefined, args: readonly string[]): Promise<void> {
  const [cmd, full] = namespace === undefined ? ['tc', args] : ['ip', ['netns', 'exec', namespace, 'tc', ...args]];
  try {
    await execFileAsync(cmd, full as string[], { timeout: 10_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`tc ${args.join(' ')}: ${(e.stderr ?? e.message).trim().split('\n')[0]}`, { cause: err });
  }
}

/** Synchronous and error-swallowing: it also runs from 'exit' and signal handlers. */
function teardownSync(link: LiveLink): void {
  for (const child of link.children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  const steps = link.hostInterface === undefined ? [] : [['link', 'del', link.hostInterface]];
  for (const args of [...steps, ['netns', 'del', link.namespace]]) {
    try {
      execFileSync('ip', args, { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // already gone (the peer vanishes with the namespace, and close() may have run)
    }
  }
  live.delete(link);
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', () => {
    for (const link of [...live]) teardownSync(link);
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      for (const link of [...live]) teardownSync(link);
      // Only we listened: do what the signal would have done without us.
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces of runs whose process is gone (killed with SIGKILL, a crash of node itself). */
async function sweepStaleNamespaces(): Promise<void> {
  const listing = await ip(['netns', 'list']);
  for (const line of listing.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${NS_PREFIX}(\\d+)-\\d+$`).exec(name);
    if (m === null || pidAlive(Number(m[1]))) continue;
    // The namespace's veth end dies with it, and takes the host's end along.
    await ip(['netns', 'del', name]).catch(() => undefined);
  }
}

async function addressesInUse(): Promise<Set<string>> {
  const out = await ip(['-o', '-4', 'addr', 'show']);
  return new Set([...out.matchAll(/inet (\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1]!));
}

let linksOpened = 0;

function loopbackLink(spec: LinkSpec, why: string): StorageLink {
  const children = new Set<ChildProcess>();
  return {
    spec,
    serverAddress: '127.0.0.1',
    hostAddress: '127.0.0.1',
    namespace: undefined,
    hostInterface: undefined,
    shaped: false,
    fallback: `${why}: the target runs on this host's loopback, unshaped`,
    spawnServer(command, args, options = {}) {
      const child = spawn(command, args as string[], options);
      children.add(child);
      return child;
    },
    async close() {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      children.clear();
    },
  };
}

/** Builds the link (see the module comment). Fails, having removed what it made, when root cannot. */
export async function openStorageLink(spec: LinkSpec, options: OpenLinkOptions = {}): Promise<StorageLink> {
  if (options.forceLoopback === true) return loopbackLink(spec, 'loopback asked for');
  if (process.getuid?.() !== 0) return loopbackLink(spec, 'not root (a network namespace and tc need root)');

  await sweepStaleNamespaces();
  const inUse = await addressesInUse();
  const namespace = `${NS_PREFIX}${process.pid}-${linksOpened++}`;
  // Start where this process's pid points, so parallel runs rarely race for the same /30; a race
  // that does happen fails `ip link add` (the name exists) and moves on to the next.
  const start = (process.pid * 7 + linksOpened * 131) % SUBNETS;
  await ip(['netns', 'add', namespace]);
  const record: LiveLink = { namespace, hostInterface: undefined, children: new Set() };
  live.add(record);
  installExitHooks();
  try {
    let chosen: number | undefined;
    for (let i = 0; i < 64 && chosen === undefined; i++) {
      const index = (start + i) % SUBNETS;
      const addresses = subnetAddresses(index);
      if (inUse.has(addresses.host) || inUse.has(addresses.server)) continue;
      const names = vethNames(index);
      try {
        await ip(['link', 'add', names.host, 'type', 'veth', 'peer', 'name', names.server, 'netns', namespace]);
        chosen = index;
      } catch (err) {
        if (!/exists/i.test((err as Error).message)) throw err;
      }
    }
    if (chosen === undefined) throw new Error('no free veth name or /30 in 10.231.0.0/16 after 64 tries');
    const names = vethNames(chosen);
    const addresses = subnetAddresses(chosen);
    record.hostInterface = names.host;

    await ip(['addr', 'add', `${addresses.host}/30`, 'dev', names.host]);
    await ip(['link', 'set', names.host, 'up']);
    await ip(['-n', namespace, 'addr', 'add', `${addresses.server}/30`, 'dev', names.server]);
    await ip(['-n', namespace, 'link', 'set', names.server, 'up']);
    await ip(['-n', namespace, 'link', 'set', 'lo', 'up']);
    if (spec.kind === 'shaped') {
      await tc(undefined, tbfArgs(names.host, spec.bitsPerSecond));
      await tc(namespace, tbfArgs(names.server, spec.bitsPerSecond));
    }
    return {
      spec,
      serverAddress: addresses.server,
      hostAddress: addresses.host,
      namespace,
      hostInterface: names.host,
      shaped: spec.kind === 'shaped',
      fallback: undefined,
      spawnServer(command, args, spawnOptions = {}) {
        const child = spawn('ip', ['netns', 'exec', namespace, command, ...args], spawnOptions);
        record.children.add(child);
        return child;
      },
      async close() {
        if (!live.has(record)) return;
        const exits = [...record.children]
          .filter((c) => c.exitCode === null && c.signalCode === null)
          .map((c) => new Promise<void>((resolve) => c.once('exit', () => resolve())));
        for (const child of record.children) child.kill('SIGKILL');
        await Promise.race([Promise.all(exits), new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
        teardownSync(record);
      },
    };
  } catch (err) {
    teardownSync(record);
    throw err;
  }
}

/** Namespaces and host veths this module's naming would have made that exist now (for tests). */
export async function leftoverLinkNames(): Promise<{ namespaces: string[]; interfaces: string[] }> {
  const ns = (await ip(['netns', 'list']))
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(NS_PREFIX));
  const links = (await ip(['-o', 'link', 'show']))
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '')
    .filter((n) => /^bbh[0-9a-f]{4}$/.test(n));
  return { namespaces: ns, interfaces: links };
}
