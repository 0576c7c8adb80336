// Which host paths a command may open as a disk for someone else (an iSCSI initiator now; serve, run,
// ctl attach and the NBD server later). The rule: block devices under /dev; regular files under a
// directory given with --allow-path; ram: and null: always; anything else refused, with a message
// naming the path and the rule.
//
// Checking a path and then opening it by name would race with anyone who can rename files in
// between (a symlink swapped in after the check). So the path is resolved (realpath: symlinks and
// `..`), then opened with O_PATH|O_NOFOLLOW, which neither follows a last-moment symlink nor blocks
// on a FIFO nor needs read permission; the check runs on what that descriptor is (fstat, and its
// /proc/self/fd link, the kernel's own name for the file). The driver then opens /proc/self/fd/N:
// the same inode, whatever the directory says by then, and checks st_dev/st_ino once more.
import fs from 'node:fs';
import path from 'node:path';
import type { BlockDevice } from '../block/types.ts';
import { Errno, UsageError } from '../internal/errors.ts';
import { parseStoreSpec } from '../config/store-spec.ts';
import type { StoreSpec } from '../config/store-spec.ts';
import type { RbdStoreSpec } from '../config/rbd-spec.ts';
import type { OpenBlockDeviceOptions } from './open.ts';
import { createRamDisk } from '../block/ram.ts';
import { createNullDisk } from '../block/null.ts';
import { openIscsiDevice } from '../iscsi-initiator/device.ts';
import { openRbdDevice } from '../rbd/rbd-image.ts';
import { openNbdDevice } from '../nbd-client/device.ts';
import { X509_FILES } from '../nbd-client/tls-credentials.ts';
import type { NbdStoreSpec } from '../config/nbd-uri.ts';
import { openFileDisk } from '../block/file.ts';
import { openDirectDisk } from '../block/direct.ts';
import { createVolatileCache } from '../block/volatile-cache.ts';
import type { CheckedTarget } from '../block/host-target.ts';

export interface PathPolicy {
  /** Directories under which regular files may be opened (each resolved with realpath when checked). */
  readonly allowPaths: readonly string[];
  /** Block devices under /dev may be opened (default true). */
  readonly allowBlockDevices?: boolean;
}

/** The option line for a command's --help (options are listed with this indentation). */
export const ALLOW_PATH_OPTION_HELP = '  --allow-path DIR         regular files under DIR may be opened as stores (repeatable)';

/** A paragraph a command's --help can reuse to explain which stores it will open. */
export const PATH_POLICY_HELP = `Which stores may be opened: block devices under /dev, regular files under a directory given with
--allow-path DIR (repeatable), and ram: and null: stores. Paths are resolved first (symbolic links
and '..'), and the file that is opened is the one that was checked. Everything else is refused with
the path and the rule: files outside every --allow-path directory, block device nodes outside /dev,
character devices such as /dev/null, directories, FIFOs and sockets.`;

/** What a store spec resolves to under a policy. */
export type CheckedStore =
  | { readonly kind: 'memory' }
  /** A remote LUN (iscsi://) or export (nbd://, nbd+unix://); key files named in it passed the policy like a disk file. */
  | { readonly kind: 'remote' }
  | {
      readonly kind: 'block-device' | 'file';
      /** The path the kernel reports for the checked file (symlinks and '..' resolved). */
      readonly path: string;
      readonly dev: number;
      readonly ino: number;
    };

// O_PATH is not in fs.constants: 010000000 in <asm-generic/fcntl.h> (x86_64 and arm64).
const O_PATH = 0o10000000;

function openPathFd(p: string): Promise<number> {
  const flags = O_PATH | fs.constants.O_NOFOLLOW;
  return new Promise((resolve, reject) => fs.open(p, flags, (err, fd) => (err === null ? resolve(fd) : reject(err))));
}

function fstat(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err === null ? resolve(st) : reject(err))));
}

function closeQuietly(fd: number): Promise<void> {
  return new Promise((resolve) => fs.close(fd, () => resolve()));
}

/** `p` is `dir` itself or inside it (both resolved). */
function isUnder(dir: string, p: string): boolean {
  if (dir === '/') return true;
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

function kindOf(st: fs.Stats): string {
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link (it was replaced while being checked)';
  return 'not a regular file or block device';
}

async function resolvedAllowPaths(policy: PathPolicy): Promise<string[]> {
  const out: string[] = [];
  for (const dir of policy.allowPaths) {
    try {
      out.push(await fs.promises.realpath(path.resolve(dir)));
    } catch {
      // a directory that does not exist allows nothing
    }
  }
  return out;
}

/**
 * Checks the directories given with --allow-path: each must be an existing directory. Returns the
 * policy with them resolved. For a CLI to call once while parsing its arguments.
 */
export async function resolvePathPolicy(allowPaths: readonly string[], opts: { readonly allowBlockDevices?: boolean } = {}): Promise<PathPolicy> {
  const resolved: string[] = [];
  for (const dir of allowPaths) {
    let real: string;
    try {
      real = await fs.promises.realpath(path.resolve(dir));
    } catch (err) {
      throw new UsageError(`--allow-path ${dir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`, {
        cause: err,
      });
    }
    if (!(await fs.promises.stat(real)).isDirectory()) throw new UsageError(`--allow-path ${dir}: not a directory`);
    resolved.push(real);
  }
  return { allowPaths: resolved, ...(opts.allowBlockDevices === undefined ? {} : { allowBlockDevices: opts.allowBlockDevices }) };
}

interface Placed {
  readonly pathFd: number;
  readonly real: string;
  readonly stat: fs.Stats;
}

/** Resolves and checks one path; the caller closes the returned O_PATH descriptor. */
async function place(spec: string, given: string, policy: PathPolicy): Promise<Placed> {
  const refuse = (why: string, errno: number = Errno.EACCES): never => {
    throw new UsageError(`store spec '${spec}': ${why}`, { errno });
  };
  const absolute = path.resolve(given);
  let real: string;
  try {
    real = await fs.promises.realpath(absolute);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return refuse(e.code === 'ENOENT' ? `${given} does not exist` : `cannot resolve ${given}: ${e.message}`, e.code === 'ENOENT' ? Errno.ENOENT : Errno.EACCES);
  }
  let pathFd: number;
  try {
    pathFd = await openPathFd(real);
  } catch (err) {
    return refuse(`cannot open ${real}: ${(err as Error).message}`);
  }
  try {
    const stat = await fstat(pathFd);
    let actual: string;
    try {
      actual = await fs.promises.readlink(`/proc/self/fd/${pathFd}`);
    } catch (err) {
      return refuse(`cannot check ${given}: /proc/self/fd is not readable (${(err as Error).message}); is /proc mounted?`);
    }
    const shown = actual === given ? given : `${given} (${actual})`;
    if (stat.isBlockDevice()) {
      if (policy.allowBlockDevices === false) refuse(`${shown} is a block device, and block devices are not allowed here`);
      if (!isUnder('/dev', actual)) refuse(`${shown} is a block device outside /dev (only device nodes under /dev are allowed)`);
    } else if (stat.isFile()) {
      const allowed = await resolvedAllowPaths(policy);
      if (!allowed.some((dir) => isUnder(dir, actual))) {
        refuse(
          allowed.length === 0
            ? `${shown} is a regular file, and no --allow-path directory was given (regular files must be under one)`
            : `${shown} is not under an --allow-path directory (allowed: ${allowed.join(', ')})`,
        );
      }
    } else {
      refuse(`${shown} is ${kindOf(stat)}; only block devices under /dev and regular files under an --allow-path directory can be stores`);
    }
    return { pathFd, real: actual, stat };
  } catch (err) {
    await closeQuietly(pathFd);
    throw err;
  }
}

function checkedTarget(p: Placed): CheckedTarget {
  return { pathFd: p.pathFd, dev: p.stat.dev, ino: p.stat.ino };
}

/** An iscsi:// secret file is read by us for whoever wrote the spec: it must pass the policy too. */
async function checkSecretFile(file: string | undefined, spec: string, policy: PathPolicy): Promise<void> {
  if (file === undefined) return;
  const p = await place(spec, file, policy);
  await closeQuietly(p.pathFd);
  if (!p.stat.isFile()) throw new UsageError(`store spec '${spec}': secret file ${file} is not a regular file`, { errno: Errno.EACCES });
}

/** An rbd: spec's conf and keyring files are read by librados for whoever wrote the spec: they pass the policy too. */
async function checkRbdFiles(s: RbdStoreSpec, spec: string, policy: PathPolicy): Promise<void> {
  await checkSecretFile(s.conf, spec, policy);
  await checkSecretFile(s.options.find(([k]) => k === 'keyring')?.[1], spec, policy);
}

/**
 * An NBD URI's TLS files (a PSK file, the x509 directory's PEM files) are read by us for whoever
 * wrote the spec: they pass the policy too. The server itself, over TCP or a Unix socket, is a
 * remote peer, as an iSCSI target is.
 */
async function checkNbdFiles(s: NbdStoreSpec, spec: string, policy: PathPolicy): Promise<void> {
  await checkSecretFile(s.tls?.pskFile, spec, policy);
  const dir = s.tls?.certificates;
  if (dir === undefined) return;
  for (const name of X509_FILES) {
    const file = path.join(dir, name);
    const exists = await fs.promises.lstat(file).then(
      () => true,
      () => false,
    );
    if (exists) await checkSecretFile(file, spec, policy);
  }
}

/**
 * Checks a store spec against the policy without keeping anything open: for early errors while
 * parsing a command line. (Only openStoreUnderPolicy is safe against files replaced meanwhile.)
 */
export async function checkStoreSpec(spec: string, policy: PathPolicy): Promise<CheckedStore> {
  return checkParsed(parseStoreSpec(spec), spec, policy);
}

async function checkParsed(s: StoreSpec, spec: string, policy: PathPolicy): Promise<CheckedStore> {
  switch (s.kind) {
    case 'ram':
    case 'null':
      return { kind: 'memory' };
    case 'volatile':
      return checkParsed(s.inner, spec, policy);
    case 'iscsi':
      await checkSecretFile(s.secretFile, spec, policy);
      await checkSecretFile(s.mutualSecretFile, spec, policy);
      return { kind: 'remote' };
    case 'rbd':
      await checkRbdFiles(s, spec, policy);
      return { kind: 'remote' };
    case 'nbd':
      await checkNbdFiles(s, spec, policy);
      return { kind: 'remote' };
    case 'file':
    case 'direct':
    case 'path': {
      const p = await place(spec, s.path, policy);
      await closeQuietly(p.pathFd);
      return { kind: p.stat.isBlockDevice() ? 'block-device' : 'file', path: p.real, dev: p.stat.dev, ino: p.stat.ino };
    }
  }
}

/**
 * Opens a store spec (as openBlockDevice does) if the policy allows it; otherwise a UsageError
 * naming the path and the rule that refused it.
 */
export async function openStoreUnderPolicy(spec: string, policy: PathPolicy, opts: OpenBlockDeviceOptions = {}): Promise<BlockDevice> {
  return openParsed(parseStoreSpec(spec), spec, policy, opts);
}

async function openParsed(s: StoreSpec, spec: string, policy: PathPolicy, opts: OpenBlockDeviceOptions): Promise<BlockDevice> {
  const readOnly = opts.readOnly ?? false;
  const engine = opts.ioEngine === undefined ? {} : { ioEngine: opts.ioEngine };
  switch (s.kind) {
    case 'ram':
      return createRamDisk(s.size, { name: spec, readOnly, ...(opts.ramChunkSize === undefined ? {} : { chunkSize: opts.ramChunkSize }) });
    case 'null':
      return createNullDisk(s.size, { name: spec, readOnly });
    case 'volatile':
      return createVolatileCache(await openParsed(s.inner, spec, policy, opts), { name: spec });
    case 'iscsi':
      await checkSecretFile(s.secretFile, spec, policy);
      await checkSecretFile(s.mutualSecretFile, spec, policy);
      return openIscsiDevice(s, { name: spec, readOnly });
    case 'rbd':
      await checkRbdFiles(s, spec, policy);
      return openRbdDevice(s, { name: spec, readOnly });
    case 'nbd':
      await checkNbdFiles(s, spec, policy);
      return openNbdDevice(s, { name: spec, readOnly });
    case 'file':
    case 'direct':
    case 'path': {
      const p = await place(spec, s.path, policy);
      try {
        const checked = checkedTarget(p);
        // A bare path: O_DIRECT for block devices, the page cache for files (as open.ts does).
        const direct = s.kind === 'direct' || (s.kind === 'path' && p.stat.isBlockDevice());
        const name = `store spec '${spec}'`;
        try {
          return direct
            ? await openDirectDisk(p.real, { readOnly, name: spec, checked, ...engine })
            : await openFileDisk(p.real, { readOnly, name: spec, checked });
        } catch (err) {
          if (err instanceof UsageError && !err.message.includes(spec)) throw new UsageError(`${name}: ${err.message}`, { cause: err, errno: err.errno });
          throw err;
        }
      } finally {
        await closeQuietly(p.pathFd);
      }
    }
  }
}
