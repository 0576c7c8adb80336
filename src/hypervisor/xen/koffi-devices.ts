// XenDevices over Xen's own tool libraries through koffi: libxengnttab.so.1 (gntdev) and
// libxenevtchn.so.1 (evtchn), plus libc's mmap for native memory. Prototypes follow
// /usr/include/xengnttab.h and /usr/include/xenevtchn.h (Xen 4.17). Pointers the JS side only
// passes through (mapped addresses, the segment array) are declared uintptr_t, which has the same
// calling convention as a pointer on the LP64 hosts Xen's dom0 runs on.

import fs from 'node:fs';
import { constants } from 'node:os';
import koffi from 'koffi';
import type { LibraryHandle, TypeObject } from 'koffi';
import type { EvtchnDevice, GnttabDevice, NativeMemory, NativeRegion, PendingListener, XenDevices } from './devices.ts';
import {
  checkAllocPagesBytes,
  SEG_DEST,
  SEG_FLAGS,
  SEG_FOREIGN_DOMID,
  SEG_FOREIGN_OFFSET,
  SEG_FOREIGN_REF,
  SEG_LEN,
  SEG_SIZE,
  SEG_SOURCE,
  SEG_STATUS,
} from './devices.ts';
import { XenDeviceError, XenUnavailableError, hostErrnoName } from './errors.ts';
import { startPendingReader } from './evtchn-reader.ts';
import type { PendingReader } from './evtchn-reader.ts';
import { startEpollPendingReader } from './evtchn-epoll-reader.ts';
import type { ArmablePendingReader } from './evtchn-epoll-reader.ts';
import { fdStreamProblem } from '../../internal/fd-stream.ts';
import { XEN_PAGE_SIZE as PAGE_SIZE } from '../../abi/xen.ts';

export const GNTDEV_PATH = '/dev/xen/gntdev';
export const EVTCHN_PATH = '/dev/xen/evtchn';
export const GNTTAB_LIBRARY = 'libxengnttab.so.1';
export const EVTCHN_LIBRARY = 'libxenevtchn.so.1';

export interface KoffiDevicesOptions {
  readonly gntdevPath?: string;
  readonly evtchnPath?: string;
  /**
   * How pending ports are waited for: 'epoll' (the default where Node lets us), the fd read as a
   * stream on libuv's epoll, on the JavaScript thread; 'thread', a reader thread of its own.
   */
  readonly evtchnReader?: 'epoll' | 'thread';
  /** A library file name or path (tests point these at stand-ins). */
  readonly gnttabLibrary?: string;
  readonly evtchnLibrary?: string;
}

// mmap(2) constants for Linux (asm-generic/mman-common.h; the same on x86_64 and arm64).
const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
/**
 * Tries of a gntdev call that a signal interrupted. Mapping fails with EINTR when a signal arrives
 * during gntdev's mmap (seen under --cpu-prof's SIGPROF: the ring of a new guest could not be
 * mapped); a map or a copy can simply be done again.
 */
const EINTR_TRIES = 8;

type Fn = (...args: unknown[]) => unknown;

interface LibcFns {
  readonly mmap: Fn;
  readonly munmap: Fn;
}

interface GnttabFns {
  readonly open: Fn;
  readonly close: Fn;
  readonly mapDomainGrantRefs: Fn;
  readonly unmap: Fn;
  readonly grantCopy: Fn;
}

interface EvtchnFns {
  readonly open: Fn;
  readonly close: Fn;
  readonly fd: Fn;
  readonly notify: Fn;
  readonly bindInterdomain: Fn;
  readonly unbind: Fn;
  readonly unmask: Fn;
}

let libc: LibcFns | undefined;
const gnttabLibs = new Map<string, GnttabFns>();
const evtchnLibs = new Map<string, EvtchnFns>();
let segmentTypes: { readonly segment: TypeObject; readonly foreign: TypeObject } | undefined;

function loadLibc(): LibcFns {
  if (libc !== undefined) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    // intptr_t so MAP_FAILED reads as -1
    mmap: lib.func('intptr_t mmap(uintptr_t addr, size_t length, int prot, int flags, int fd, int64_t offset)') as Fn,
    munmap: lib.func('int munmap(uintptr_t addr, size_t length)') as Fn,
  };
  return libc;
}

function loadLibrary(name: string): LibraryHandle {
  try {
    return koffi.load(name);
  } catch (error) {
    throw new XenUnavailableError(
      `cannot load ${name} (${(error as Error).message}): install Xen's tool libraries ` +
        `(Debian: apt-get install xen-utils, or only libxengnttab1 libxenevtchn1)`,
      { cause: error },
    );
  }
}

function loadGnttab(name: string): GnttabFns {
  let fns = gnttabLibs.get(name);
  if (fns !== undefined) return fns;
  const lib = loadLibrary(name);
  fns = {
    open: lib.func('void *xengnttab_open(void *logger, unsigned int open_flags)') as Fn,
    close: lib.func('int xengnttab_close(void *xgt)') as Fn,
    mapDomainGrantRefs: lib.func('uintptr_t xengnttab_map_domain_grant_refs(void *xgt, uint32_t count, uint32_t domid, uint32_t *refs, int prot)') as Fn,
    unmap: lib.func('int xengnttab_unmap(void *xgt, uintptr_t start_address, uint32_t count)') as Fn,
    grantCopy: lib.func('int xengnttab_grant_copy(void *xgt, uint32_t count, uintptr_t segs)') as Fn,
  };
  gnttabLibs.set(name, fns);
  return fns;
}

function loadEvtchn(name: string): EvtchnFns {
  let fns = evtchnLibs.get(name);
  if (fns !== undefined) return fns;
  const lib = loadLibrary(name);
  fns = {
    open: lib.func('void *xenevtchn_open(void *logger, unsigned int flags)') as Fn,
    close: lib.func('int xenevtchn_close(void *xce)') as Fn,
    fd: lib.func('int xenevtchn_fd(void *xce)') as Fn,
    notify: lib.func('int xenevtchn_notify(void *xce, uint32_t port)') as Fn,
    bindInterdomain: lib.func('int xenevtchn_bind_interdomain(void *xce, uint32_t domid, uint32_t remote_port)') as Fn,
    unbind: lib.func('int xenevtchn_unbind(void *xce, uint32_t port)') as Fn,
    unmask: lib.func('int xenevtchn_unmask(void *xce, uint32_t port)') as Fn,
  };
  evtchnLibs.set(name, fns);
  return fns;
}

/** koffi's description of xengnttab_grant_copy_segment_t (for the layout check; calls pass raw bytes). */
export function grantCopySegmentType(): { readonly segment: TypeObject; readonly foreign: TypeObject } {
  if (segmentTypes !== undefined) return segmentTypes;
  const foreign = koffi.struct('xengnttab_copy_foreign', { ref: 'uint32_t', offset: 'uint16_t', domid: 'uint16_t' });
  const ptr = koffi.union('xengnttab_copy_ptr', { virt: 'void *', foreign });
  const segment = koffi.struct('xengnttab_grant_copy_segment', {
    source: ptr,
    dest: ptr,
    len: 'uint16_t',
    flags: 'uint16_t',
    status: 'int16_t',
  });
  segmentTypes = { segment, foreign };
  return segmentTypes;
}

/** The byte offsets koffi computes for the segment, named as in devices.ts. */
export function koffiSegmentLayout(): Record<string, number> {
  const { segment, foreign } = grantCopySegmentType();
  return {
    size: koffi.sizeof(segment),
    source: koffi.offsetof(segment, 'source'),
    dest: koffi.offsetof(segment, 'dest'),
    len: koffi.offsetof(segment, 'len'),
    flags: koffi.offsetof(segment, 'flags'),
    status: koffi.offsetof(segment, 'status'),
    foreignRef: koffi.offsetof(foreign, 'ref'),
    foreignOffset: koffi.offsetof(foreign, 'offset'),
    foreignDomid: koffi.offsetof(foreign, 'domid'),
  };
}

/** The layout devices.ts packs by hand; must equal koffiSegmentLayout() and the C compiler's. */
export const PACKED_SEGMENT_LAYOUT: Readonly<Record<string, number>> = Object.freeze({
  size: SEG_SIZE,
  source: SEG_SOURCE,
  dest: SEG_DEST,
  len: SEG_LEN,
  flags: SEG_FLAGS,
  status: SEG_STATUS,
  foreignRef: SEG_FOREIGN_REF,
  foreignOffset: SEG_FOREIGN_OFFSET,
  foreignDomid: SEG_FOREIGN_DOMID,
});

function readHypervisorType(): string | undefined {
  try {
    return fs.readFileSync('/sys/hypervisor/type', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Why `path` (a Xen device node) cannot be used, in words that say how to fix it; undefined when it exists. */
function deviceProblem(path: string, module: string): string | undefined {
  if (fs.existsSync(path)) return undefined;
  const others = ['xenfs', 'xen-evtchn', 'xen-gntdev'].filter((name) => name !== module).join(', ');
  const hypervisor = readHypervisorType();
  if (hypervisor !== 'xen') {
    const seen = hypervisor === undefined ? 'no /sys/hypervisor/type' : `/sys/hypervisor/type is '${hypervisor}'`;
    return (
      `not running in a Xen dom0: ${path} is absent (${seen}). Boot this host as a Xen dom0 ` +
      `(or driver domain) and load the drivers: modprobe ${module} (and ${others})`
    );
  }
  return `Xen is running but ${path} is absent: modprobe ${module} (and ${others}), then retry as root`;
}

/** Whether openKoffiDevices() could work here, and if not, why (without opening anything). */
export function probeKoffiDevices(options: KoffiDevicesOptions = {}): { ok: boolean; why?: string } {
  const problem = deviceProblem(options.gntdevPath ?? GNTDEV_PATH, 'xen-gntdev') ?? deviceProblem(options.evtchnPath ?? EVTCHN_PATH, 'xen-evtchn');
  if (problem !== undefined) return { ok: false, why: problem };
  try {
    loadGnttab(options.gnttabLibrary ?? GNTTAB_LIBRARY);
    loadEvtchn(options.evtchnLibrary ?? EVTCHN_LIBRARY);
  } catch (error) {
    return { ok: false, why: (error as Error).message };
  }
  return { ok: true };
}

function openFailed(what: string, path: string): XenUnavailableError {
  const errno = koffi.errno();
  const hint = errno === constants.errno.EACCES || errno === constants.errno.EPERM ? ': run the backend as root' : '';
  return new XenUnavailableError(`${what} could not open ${path} (${hostErrnoName(errno)})${hint}`);
}

/** Anonymous mmap through libc; works on any Linux host, Xen or not. */
export function koffiNativeMemory(): NativeMemory {
  const c = loadLibc();
  return {
    allocPages(bytes: number): NativeRegion {
      checkAllocPagesBytes(bytes);
      const address = c.mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) as number | bigint;
      if (Number(address) === -1) throw new XenDeviceError('mmap', koffi.errno(), `${bytes} bytes`);
      return { address: BigInt(address), view: koffi.view(address, bytes) };
    },
    freePages(address: bigint, bytes: number): void {
      if ((c.munmap(address, bytes) as number) !== 0) throw new XenDeviceError('munmap', koffi.errno());
    },
  };
}

/**
 * Opens gntdev and evtchn through Xen's libraries. Throws XenUnavailableError (saying what is
 * missing and how to fix it) when this is not a Xen dom0 or driver domain set up for backends.
 */
export function openKoffiDevices(options: KoffiDevicesOptions = {}): XenDevices {
  const gntdevPath = options.gntdevPath ?? GNTDEV_PATH;
  const evtchnPath = options.evtchnPath ?? EVTCHN_PATH;
  const problem = deviceProblem(gntdevPath, 'xen-gntdev') ?? deviceProblem(evtchnPath, 'xen-evtchn');
  if (problem !== undefined) throw new XenUnavailableError(problem);
  const gt = loadGnttab(options.gnttabLibrary ?? GNTTAB_LIBRARY);
  const ev = loadEvtchn(options.evtchnLibrary ?? EVTCHN_LIBRARY);
  const layout = koffiSegmentLayout();
  for (const [field, offset] of Object.entries(PACKED_SEGMENT_LAYOUT)) {
    if (layout[field] !== offset)
      throw new XenUnavailableError(`xengnttab_grant_copy_segment_t.${field} is at ${layout[field]} on this host, not ${offset}: unsupported ABI`);
  }
  const memory = koffiNativeMemory();

  const xgt = gt.open(null, 0);
  if (xgt === null) throw openFailed('xengnttab_open', gntdevPath);
  const xce = ev.open(null, 0);
  if (xce === null) {
    const error = openFailed('xenevtchn_open', evtchnPath);
    gt.close(xgt);
    throw error;
  }
  const fd = ev.fd(xce) as number;

  let closed = false;
  const check = (op: string): void => {
    if (closed) throw new XenDeviceError(op, constants.errno.EBADF, 'the Xen devices are closed');
  };

  const gnttab: GnttabDevice = {
    mapDomainGrantRefs(domid, refs, count, writable) {
      check('xengnttab_map_domain_grant_refs');
      const prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
      let address: number | bigint = 0;
      for (let tries = 0; tries < EINTR_TRIES && Number(address) === 0; tries++) {
        address = gt.mapDomainGrantRefs(xgt, count, domid, refs, prot) as number | bigint;
        if (Number(address) === 0 && koffi.errno() !== constants.errno.EINTR) break;
      }
      if (Number(address) === 0) throw new XenDeviceError('xengnttab_map_domain_grant_refs', koffi.errno(), `${count} refs of domain ${domid}`);
      return { address: BigInt(address), view: koffi.view(address, count * PAGE_SIZE) };
    },
    unmap(address, count) {
      check('xengnttab_unmap');
      if ((gt.unmap(xgt, address, count) as number) !== 0) throw new XenDeviceError('xengnttab_unmap', koffi.errno());
    },
    grantCopy(segments, count) {
      check('xengnttab_grant_copy');
      for (let tries = 1; (gt.grantCopy(xgt, count, segments) as number) !== 0; tries++) {
        // Copying again is harmless: the same bytes land in the same places.
        if (koffi.errno() !== constants.errno.EINTR || tries === EINTR_TRIES)
          throw new XenDeviceError('xengnttab_grant_copy', koffi.errno(), `${count} segments`);
      }
    },
  };

  let listener: PendingListener | undefined;
  let reader: PendingReader | undefined;
  let armable: ArmablePendingReader | undefined;
  let boundPorts = 0;
  const evtchn: EvtchnDevice = {
    bindInterdomain(domid, remotePort) {
      check('xenevtchn_bind_interdomain');
      const port = ev.bindInterdomain(xce, domid, remotePort) as number;
      if (port < 0) throw new XenDeviceError('xenevtchn_bind_interdomain', koffi.errno(), `port ${remotePort} of domain ${domid}`);
      if (++boundPorts === 1) armable?.setActive(true);
      return port;
    },
    notify(port) {
      check('xenevtchn_notify');
      if ((ev.notify(xce, port) as number) < 0) throw new XenDeviceError('xenevtchn_notify', koffi.errno(), `port ${port}`);
    },
    unmask(port) {
      check('xenevtchn_unmask');
      if ((ev.unmask(xce, port) as number) < 0) throw new XenDeviceError('xenevtchn_unmask', koffi.errno(), `port ${port}`);
    },
    unbind(port) {
      check('xenevtchn_unbind');
      if ((ev.unbind(xce, port) as number) < 0) throw new XenDeviceError('xenevtchn_unbind', koffi.errno(), `port ${port}`);
      if (--boundPorts === 0) armable?.setActive(false);
    },
    listen(next) {
      check('listen');
      listener = next;
      if (reader !== undefined) return;
      const callbacks = {
        onPorts: (ports: Uint32Array, lost: boolean) => listener?.(ports, lost),
        // A dead reader means no event is ever delivered again: fail loudly rather than hang.
        onError: (error: Error) => {
          process.nextTick(() => {
            throw new XenDeviceError('xenevtchn_pending', constants.errno.EIO, error.message, { cause: error, fatal: true });
          });
        },
      };
      if (options.evtchnReader !== 'thread' && fdStreamProblem() === undefined) {
        armable = startEpollPendingReader(fd, callbacks);
        reader = armable;
        armable.setActive(boundPorts > 0);
      } else {
        reader = startPendingReader(fd, callbacks);
      }
    },
  };

  return {
    gnttab,
    evtchn,
    memory,
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      listener = undefined;
      // The reader polls the evtchn fd: it must be gone before xenevtchn_close frees it.
      if (reader !== undefined) await reader.stop();
      ev.close(xce);
      gt.close(xgt);
    },
  };
}
