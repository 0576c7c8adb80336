// The per-run payload: a small cpio appended to the cached dom0.cpio (Linux unpacks concatenated
// initramfs archives in order). It holds everything that changes without a package changing:
//   /init                                 dom0-init.sh (the test phases)
//   /etc/xen/scripts/block-fast           the hotplug script
//   /opt/blkback-test/config.sh           MODE and sizes for dom0-init.sh
//   /opt/blkback-test/domu-overlay.cpio.gz  the guests' /init and derived job files
//   /opt/blkback/{package.json,dist/src,node_modules}  the blkback build under test and its runtime deps
//   /opt/blkback/cost-probe.js            what a clock reading, a system call, JS and a loop turn cost
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface PayloadConfig {
  readonly mode: 'kernel' | 'ours' | 'paired' | 'same-guest';
  /** modes paired and same-guest: turns of each backend. */
  readonly pairs: number;
  readonly diskMiB: number;
  readonly disk2MiB: number;
  readonly guestMemMiB: number;
  readonly guests: readonly string[];
  /** Runs of each fio job, by guest tag (1 when absent). */
  readonly runs: Readonly<Partial<Record<string, number>>>;
  readonly midIo: boolean;
  readonly controlSocket: string;
  /** --chain iscsi (mode same-guest): the disks come from our target through dom0's Linux initiator. */
  readonly chain: 'none' | 'iscsi';
  /** Mode same-guest: the twin guest's vCPUs (blkfront asks for a queue per vCPU). */
  readonly twinVcpus?: number;
  /** Mode same-guest: the twin guest's credit2 cap in percent of one pCPU when it has several vCPUs (0: none). */
  readonly twinCap?: number;
  /** Mode same-guest: serve's --max-queues (absent: the option is not passed; a serve without it). */
  readonly serveMaxQueues?: number;
  /**
   * Mode same-guest: the data paths whose system calls per request are counted (strace on serve
   * during a short QD 32 job): persistent on xvdb, copy on xvdd (the frontend declines persistent grants).
   */
  readonly syscalls?: readonly ('persistent' | 'copy')[];
  /** Seconds of each of the counted job's two phases (randread, randwrite). */
  readonly syscallSeconds?: number;
}

export interface PayloadInput {
  /** Where dom0-init.sh, domu-init.sh and block-fast are. */
  readonly scriptsDir: string;
  /** The repository (package.json, node_modules). */
  readonly repoDir: string;
  /** A compiled tree with src/cli/main.js. */
  readonly distDir: string;
  readonly config: PayloadConfig;
  /** Derived job files for the guests: name (without .fio) to text. */
  readonly jobs: ReadonlyMap<string, string>;
}

/** newc cpio of a directory (sorted, so parents come before children). */
export function packCpio(dir: string, out: string, gzip: boolean): void {
  const compress = gzip ? ' | gzip -1' : '';
  execFileSync('sh', ['-c', `cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet${compress} > "$2"`, 'sh', dir, out]);
}

export function configScript(c: PayloadConfig): string {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    '# written by src/xen-tcg/payload.ts for one harness boot',
    `MODE=${c.mode}`,
    `DISK_MIB=${c.diskMiB}`,
    `DISK2_MIB=${c.disk2MiB}`,
    `GUEST_MEM=${c.guestMemMiB}`,
    `GUESTS=${q(c.guests.join(' '))}`,
    ...c.guests.map((g) => `RUNS_${g}=${c.runs[g] ?? 1}`),
    `MIDIO=${c.midIo ? 1 : 0}`,
    `PAIRS=${c.pairs}`,
    `CHAIN=${c.chain}`,
    `TWIN_VCPUS=${c.twinVcpus ?? 1}`,
    `TWIN_CAP=${c.twinCap ?? 0}`,
    `SERVE_MAX_QUEUES=${c.serveMaxQueues ?? ''}`,
    `SYSCALLS=${q((c.syscalls ?? []).join(' '))}`,
    `SYSCALL_SECONDS=${c.syscallSeconds ?? 10}`,
    `CONTROL_SOCKET=${q(c.controlSocket)}`,
    // BLKBACK_XEN_SERVE_ARGS: extra options for `blkback serve` (experiments, e.g. --data-path map)
    `SERVE_ARGS=${q(`--control-socket ${c.controlSocket} ${process.env.BLKBACK_XEN_SERVE_ARGS ?? ''}`.trim())}`,
    `CTL_ARGS=${q(`--socket ${c.controlSocket}`)}`,
    // BLKBACK_XEN_SERVE_ENV: environment for `blkback serve` (experiments, e.g. UV_USE_IO_URING=1)
    `SERVE_ENV=${q(process.env.BLKBACK_XEN_SERVE_ENV ?? '')}`,
    // BLKBACK_XEN_NODE_ARGS: options for the node that runs serve (experiments, e.g. V8's --single-threaded-gc)
    `NODE_FLAGS=${q(process.env.BLKBACK_XEN_NODE_ARGS ?? '')}`,
    // BLKBACK_XEN_PROFILE=1: serve runs under --cpu-prof, and dom0 prints the top of its profile at the end
    `PROFILE=${process.env.BLKBACK_XEN_PROFILE === '1' ? 1 : 0}`,
    // BLKBACK_XEN_DOM0_HOG=1: a busy loop in dom0 beside the backend (does a busy dom0 make PVH guests fault?)
    `DOM0_HOG=${process.env.BLKBACK_XEN_DOM0_HOG === '1' ? 1 : 0}`,
    // BLKBACK_XEN_PVH_PIN=0: the PVH guest shares the pCPUs with dom0 (default: pCPU 1 its own; see dom0-init.sh)
    `PVH_PIN=${process.env.BLKBACK_XEN_PVH_PIN === '0' ? 0 : 1}`,
    // BLKBACK_XEN_STRACE=1: serve runs under 'strace -c -f' (system calls counted, all threads), printed at the end
    `STRACE=${process.env.BLKBACK_XEN_STRACE === '1' ? 1 : 0}`,
    '',
  ].join('\n');
}

/**
 * Where `name` is installed for a package at `from`: its own node_modules or, as npm hoists an
 * installed package's dependencies, the first one above it.
 */
function installedAt(from: string, name: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** The npm packages the build needs at run time, by name, with where they are installed:
 * package.json's dependencies and the platform packages among their optionalDependencies that
 * are installed (koffi's and resvg's binaries). */
export function runtimePackages(repoDir: string): Map<string, string> {
  const pkg = JSON.parse(readFileSync(join(repoDir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  const out = new Map<string, string>();
  for (const name of Object.keys(pkg.dependencies ?? {})) {
    const dir = installedAt(repoDir, name);
    if (dir === undefined) continue;
    out.set(name, dir);
    const own = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { optionalDependencies?: Record<string, string> };
    for (const opt of Object.keys(own.optionalDependencies ?? {})) {
      const optDir = installedAt(dir, opt);
      if (optDir !== undefined) out.set(opt, optDir);
    }
  }
  return new Map([...out].sort(([a], [b]) => a.localeCompare(b)));
}

export function buildPayload(input: PayloadInput, workDir: string): string {
  const root = join(workDir, 'payload');
  const overlay = join(workDir, 'domu-overlay');
  mkdirSync(join(overlay, 'jobs'), { recursive: true });
  cpSync(join(input.scriptsDir, 'domu-init.sh'), join(overlay, 'init'));
  for (const [name, text] of input.jobs) writeFileSync(join(overlay, 'jobs', `${name}.fio`), text);

  const test = join(root, 'opt/blkback-test');
  mkdirSync(test, { recursive: true });
  mkdirSync(join(root, 'etc/xen/scripts'), { recursive: true });
  cpSync(join(input.scriptsDir, 'dom0-init.sh'), join(root, 'init'));
  cpSync(join(input.scriptsDir, 'block-fast'), join(root, 'etc/xen/scripts/block-fast'));
  writeFileSync(join(test, 'config.sh'), configScript(input.config));
  packCpio(overlay, join(test, 'domu-overlay.cpio.gz'), true);

  const app = join(root, 'opt/blkback');
  mkdirSync(app, { recursive: true });
  cpSync(join(input.repoDir, 'package.json'), join(app, 'package.json'));
  // beside package.json, which makes it an ES module as in dist/
  cpSync(join(input.distDir, 'src/xen-tcg/cost-probe.js'), join(app, 'cost-probe.js'));
  // only the runtime tree; source maps and declarations are not needed in dom0
  cpSync(join(input.distDir, 'src'), join(app, 'dist/src'), {
    recursive: true,
    filter: (src) => !src.endsWith('.map') && !src.endsWith('.d.ts'),
  });
  for (const [name, installed] of runtimePackages(input.repoDir)) {
    const dest = join(app, 'node_modules', name);
    mkdirSync(dirname(dest), { recursive: true });
    cpSync(installed, dest, { recursive: true });
  }
  // strace is in the dom0 image (images.sh); gdb only comes this way
  if (process.env.BLKBACK_XEN_DEBUG === '1') addDebugTools(root);
  if (process.env.BLKBACK_XEN_PROFILE === '1') cpSync(join(input.distDir, 'src/xen-tcg/profile-top.js'), join(test, 'profile-top.js'));
  const out = join(workDir, 'payload.cpio');
  packCpio(root, out, false);
  return out;
}

/**
 * BLKBACK_XEN_DEBUG=1: the host's gdb (with its libraries and Python) in dom0's payload, so
 * dom0-init.sh runs `blkback serve` under gdb and a crash leaves every thread's backtrace in the
 * serve log. Off by default: it adds about 60 MB to the boot. The host and dom0 are both Debian
 * bookworm, so the host's binaries run there.
 */
function addDebugTools(root: string): void {
  addHostBinaries(root, ['/usr/bin/gdb', '/usr/bin/strace']);
  const script = [
    'set -e; root=$1',
    'mkdir -p "$root/usr/lib" "$root/usr/share"',
    'cp -a /usr/share/gdb "$root/usr/share/gdb"',
    'tar -C /usr/lib --exclude=test --exclude=tests --exclude=idlelib --exclude=tkinter --exclude=ensurepip -cf - python3.11 | tar -C "$root/usr/lib" -xf -',
  ].join('\n');
  execFileSync('bash', ['-c', script, 'bash', root]);
}

/** Host binaries (those present) and the libraries they link, copied into the payload at the same paths. */
function addHostBinaries(root: string, binaries: readonly string[]): void {
  const script = [
    'set -e; root=$1; shift',
    'for bin in "$@"; do',
    '  [ -x "$bin" ] || continue',
    '  install -D -m755 "$bin" "$root$bin"',
    '  for lib in $(ldd "$bin" | awk \'/=> \\//{print $3}\'); do',
    '    dest=$(readlink -f "$(dirname "$lib")")/$(basename "$lib"); [ -e "$root$dest" ] || install -D -m644 "$(readlink -f "$lib")" "$root$dest"',
    '  done',
    'done',
  ].join('\n');
  execFileSync('bash', ['-c', script, 'bash', root, ...binaries]);
}
