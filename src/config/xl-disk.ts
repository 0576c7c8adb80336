// One xl DISKSPEC string (Xen docs/misc/xl-disk-configuration.txt), e.g.
//   'phy:/dev/sdb,xvda,w'                                   deprecated prefix form: target,vdev,access
//   '/dev/vg/guest,raw,xvda,rw'                             positional: target,format,vdev,access
//   'format=raw, vdev=xvda, access=rw, target=/a,b'         keyword form; target= eats the rest
// The token rules follow xl's own lexer (tools/libs/util/libxlu_disk_l.l): whitespace before a
// parameter is skipped; key=value and flags may appear anywhere; other tokens fill the positional
// slots not yet given; after a deprecated prefix ("phy:", "file:", "tap:aio:", …) the format slot
// is skipped, which is what makes 'phy:/dev/sdb,xvda,w' mean target,vdev,access.
//
// Divergence from xl, on purpose: xl strips and ignores the phy:/file:/tap:/aio: prefixes and lets
// libxl pick the backend. Here the backend type decides how we serve the disk (phy = O_DIRECT,
// qdisk = page cache, as QEMU's qdisk does), so a prefix is kept as a hint: phy: -> phy;
// file:, aio:, ioemu: -> qdisk; tap:, tap2:, tapdisk: -> tap. backendtype= always wins. With neither,
// the type is 'phy', libxl's choice for raw images on Linux (libxl__try_phy_backend).
//
// Remote targets: a target starting "iscsi://" ([USER@]HOST[:PORT]/IQN/LUN[?OPTIONS], the store spec
// of src/config/store-spec.ts) is kept as written, not made a /dev path, and blkback opens it with its
// own iSCSI initiator. Give it last, as target=: a URL with a query (?a=b&c=d) holds '=' and maybe ','.
// The form that also works with real xl:
//   disk = ['vdev=xvda, access=rw, backendtype=phy, script=/bin/true, target=iscsi://10.0.0.2/iqn.2026-12.org.x:d/0']
// Why script=: libxl stat()s the target of a phy (or unset) backend in dom0 and gives up ("failed to
// stat") unless script= is set; with a script it skips the stat and keeps phy ("uses script=...
// assuming phy backend"; libxl_device.c libxl__device_disk_set_backend and disk_try_backend), and
// xl-disk-configuration says script= makes the target "not a normal host path" but data for the
// script. /bin/true (an absolute path, so not looked up in /etc/xen/scripts) does nothing and exits 0;
// blkback (`blkback serve`, in place of the kernel's blkback, which cannot use a URL) reads
// params=iscsi://... from the backend directory and logs in itself. Positional
// 'iscsi://h/iqn/0,xvda,w' also works here, but real xl would strip "iscsi:" as the deprecated
// prefix (script=block-iscsi) and pass '//h/iqn/0': write target= for configs real xl reads too.
// NBD URIs (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://, nbds+unix://: see
// src/config/nbd-uri.ts) are remote targets the same way, opened by our NBD client; real xl strips
// a positional "nbd:" as the deprecated prefix too (script=block-nbd), so write target=nbd://....
import { UsageError } from '../internal/errors.ts';
import { parseStoreSpec } from './store-spec.ts';
import { vdevToDeviceId } from './vdev.ts';

export { deviceIdToVdev, vdevToDeviceId } from './vdev.ts';

export type XlBackendType = 'phy' | 'qdisk' | 'tap';

export interface XlDisk {
  /** The spec as written, for messages. */
  readonly spec: string;
  /**
   * Host path ("/dev/" is prepended when the spec's target does not start with "/"), or a remote
   * store URL (iscsi://...) kept as written: see isRemoteTarget.
   */
  readonly target: string;
  readonly vdev: string;
  /** The xenstore virtual-device number of vdev (vbd-interface.txt). */
  readonly deviceId: number;
  readonly access: 'r' | 'w';
  readonly format: 'raw';
  readonly backendtype: XlBackendType;
  /** Where backendtype came from: the backendtype= key, a deprecated prefix, or the default. */
  readonly backendtypeFrom: 'key' | 'prefix' | 'default';
  readonly devtype: 'disk';
  /** Advertise discard to the frontend (xl default: true; "no-discard" turns it off). */
  readonly discard: boolean;
  readonly directIoSafe: boolean;
  /** script= or a deprecated iscsi:/nbd:/enbd:/drbd: prefix (as "block-<name>"). */
  readonly script?: string;
  /** backend=<domain-name>: the driver domain, when not dom0. */
  readonly backendDomain?: string;
  /** trusted / untrusted flag, when given. */
  readonly trusted?: boolean;
}

const PREFIX_BACKEND: Readonly<Record<string, XlBackendType>> = {
  phy: 'phy',
  file: 'qdisk',
  aio: 'qdisk',
  ioemu: 'qdisk',
  tap: 'tap',
  tap2: 'tap',
  tapdisk: 'tap',
};
const PREFIX_FORMAT = new Set(['raw', 'qcow', 'qcow2', 'vhd']);
const PREFIX_SCRIPT = new Set(['iscsi', 'nbd', 'enbd', 'drbd']);
const KNOWN_FORMATS = new Set(['raw', 'qcow', 'qcow2', 'vhd', 'qed', 'empty']);
/** A target naming a remote LUN, NBD export or Ceph RBD image (QEMU's rbd:POOL/IMAGE) rather than a host path. */
const REMOTE_TARGET = /^(?:(?:iscsi|nbds?|nbds?\+unix):\/\/|rbd:)/;

/** Does this XlDisk target name a remote store (kept as written) rather than a host path? */
export function isRemoteTarget(target: string): boolean {
  return REMOTE_TARGET.test(target);
}

const UNSUPPORTED_KEYS = new Set(['colo-host', 'colo-port', 'colo-export', 'active-disk', 'hidden-disk']);

interface Draft {
  target?: string;
  format?: string;
  vdev?: string;
  access?: string;
  backendtype?: string;
  prefixBackend?: XlBackendType;
  script?: string;
  backendDomain?: string;
  specification?: string;
  cdrom: boolean;
  discard: boolean;
  directIoSafe: boolean;
  trusted?: boolean;
  hadPrefix: boolean;
}

/**
 * Parses one DISKSPEC. `where` ("guest.cfg:11") is added to error messages. Throws UsageError
 * naming the spec and the key for anything invalid or not supported here (formats other than raw,
 * cdrom, COLO, virtio).
 */
export function parseXlDiskSpec(spec: string, where?: string): XlDisk {
  const fail = (why: string): never => {
    throw new UsageError(`${where === undefined ? '' : `${where}: `}disk spec '${spec}': ${why}`);
  };
  const d: Draft = { cdrom: false, discard: true, directIoSafe: false, hadPrefix: false };

  const setOnce = (
    slot: 'target' | 'format' | 'vdev' | 'access' | 'backendtype' | 'script' | 'backendDomain' | 'specification',
    key: string,
    value: string,
  ): void => {
    const old = d[slot];
    // xl allows an empty value to be given again (target= after an empty positional target).
    if (old !== undefined && old !== '' && value !== old) fail(`${key} given twice ('${old}' and '${value}')`);
    if (old !== undefined && old !== '' && value === old && slot !== 'format') fail(`${key} given twice`);
    d[slot] = value;
  };

  const setVdevMaybeDevtype = (tok: string): void => {
    const colon = tok.lastIndexOf(':');
    if (colon < 0) return setOnce('vdev', 'vdev', tok);
    const devtype = tok.slice(colon + 1);
    setOnce('vdev', 'vdev', tok.slice(0, colon));
    if (devtype === 'cdrom') d.cdrom = true;
    else if (devtype !== 'disk') fail(`unknown device type ':${devtype}' after the vdev (expected :disk or :cdrom)`);
  };

  const positional = (tok: string): void => {
    if (d.target === undefined) return void (d.target = tok);
    if (!d.hadPrefix && d.format === undefined) {
      if (tok !== '' && !KNOWN_FORMATS.has(tok)) {
        const hint = /^(xvd|sd|hd)[a-z]/.test(tok)
          ? ` (the old 'target,vdev,access' order needs a prefix such as phy: or file:, else the second field is the format)`
          : '';
        fail(`unknown format '${tok}'${hint}`);
      }
      return void (d.format = tok);
    }
    if (d.vdev === undefined) return setVdevMaybeDevtype(tok);
    if (d.access === undefined) return void (d.access = tok);
    fail(`too many positional parameters at '${tok}' (expected at most target, format, vdev, access)`);
  };

  const keyValue = (key: string, value: string): void => {
    switch (key) {
      case 'format':
        return setOnce('format', key, value);
      case 'vdev':
        return setOnce('vdev', key, value);
      case 'access':
        return setOnce('access', key, value);
      case 'backendtype':
        return setOnce('backendtype', key, value);
      case 'backend':
        return setOnce('backendDomain', key, value);
      case 'script':
        return setOnce('script', key, value);
      case 'specification':
        return setOnce('specification', key, value);
      case 'devtype':
        if (value === 'cdrom') d.cdrom = true;
        else if (value !== 'disk') fail(`unknown value for devtype: 'devtype=${value}' (expected disk or cdrom)`);
        return;
      case 'grant_usage':
        if (value !== '0' && value !== '1') fail(`grant_usage=${value}: expected 0 or 1`);
        return;
      default:
        if (UNSUPPORTED_KEYS.has(key)) fail(`${key}= (COLO) is not supported here`);
        fail(`unknown parameter '${key}='`);
    }
  };

  const flag = (name: string): boolean => {
    switch (name) {
      case 'cdrom':
        d.cdrom = true;
        return true;
      case 'discard':
        d.discard = true;
        return true;
      case 'no-discard':
        d.discard = false;
        return true;
      case 'direct-io-safe':
        d.directIoSafe = true;
        return true;
      case 'trusted':
        d.trusted = true;
        return true;
      case 'untrusted':
        d.trusted = false;
        return true;
      case 'colo':
        return fail(`'colo' (COLO replication) is not supported here`);
      case 'no-colo':
        return true;
      default:
        return false;
    }
  };

  // Deprecated prefixes are only stripped at the start of a positional token (xl's lexer matches
  // them at a token start); several may be chained, as in "tap:aio:/path".
  const stripPrefixes = (tok: string): string => {
    if (REMOTE_TARGET.test(tok)) return tok; // a URL, not the deprecated "iscsi:" prefix
    for (;;) {
      const m = /^([a-z][a-z0-9]*):/.exec(tok);
      if (m === null) return tok;
      const name = m[1] ?? '';
      const rest = tok.slice(name.length + 1);
      const backend = PREFIX_BACKEND[name];
      if (backend !== undefined) {
        d.prefixBackend ??= backend;
      } else if (PREFIX_FORMAT.has(name)) {
        setOnce('format', `format (from prefix '${name}:')`, name);
      } else if (PREFIX_SCRIPT.has(name)) {
        setOnce('script', `script (from prefix '${name}:')`, `block-${name}`);
      } else if (rest === '' || /^[^a-z0-9]/.test(rest)) {
        fail(`unknown deprecated disk prefix '${name}:'`);
      } else {
        return tok; // "xvda:cdrom" and the like: not a prefix
      }
      d.hadPrefix = true;
      tok = rest;
    }
  };

  let i = 0;
  while (i < spec.length) {
    while (i < spec.length && (spec[i] === ' ' || spec[i] === '\t' || spec[i] === '\n')) i++;
    if (i >= spec.length) break;
    if (spec.startsWith('target=', i)) {
      // Eats the rest of the spec, commas and trailing whitespace included; one trailing comma goes.
      let value = spec.slice(i + 'target='.length);
      if (value.endsWith(',')) value = value.slice(0, -1);
      setOnce('target', 'target', value);
      break;
    }
    let end = spec.indexOf(',', i);
    if (end < 0) end = spec.length;
    const tok = spec.slice(i, end).trimEnd();
    i = end + 1;
    const kv = /^([a-z][-a-z0-9_]*)=/.exec(tok);
    if (kv !== null) {
      const key = kv[1] ?? '';
      keyValue(key, tok.slice(key.length + 1));
      continue;
    }
    if (flag(tok)) continue;
    const value = stripPrefixes(tok);
    if (value.includes('=')) fail(`bad disk syntax at '${tok}' (a target containing '=' or ',' must be given last as target=...)`);
    positional(value);
    // A spec ending in "," leaves an empty final parameter (as in '/img,,hdc'): nothing to do.
  }

  if (d.cdrom) fail(`devtype cdrom is not supported here (only disk)`);
  const format = d.format === undefined || d.format === '' ? 'raw' : d.format;
  if (format !== 'raw') {
    if (KNOWN_FORMATS.has(format)) fail(`format=${format} is not supported here (only raw)`);
    fail(`unknown value for format: 'format=${format}' (expected raw)`);
  }
  let access: 'r' | 'w';
  const a = d.access ?? '';
  if (a === '' || a === 'rw' || a === 'w') access = 'w';
  else if (a === 'r' || a === 'ro') access = 'r';
  else return fail(`unknown value for access: 'access=${a}' (expected r, ro, w or rw)`);

  let backendtype: XlBackendType = 'phy';
  let backendtypeFrom: XlDisk['backendtypeFrom'] = 'default';
  if (d.backendtype !== undefined && d.backendtype !== '') {
    const b = d.backendtype;
    if (b !== 'phy' && b !== 'qdisk' && b !== 'tap') {
      if (b === 'standalone') fail(`backendtype=standalone is not supported here (expected phy, qdisk or tap)`);
      fail(`unknown value for backendtype: 'backendtype=${b}' (expected phy, qdisk or tap)`);
    }
    backendtype = b as XlBackendType;
    backendtypeFrom = 'key';
  } else if (d.prefixBackend !== undefined) {
    backendtype = d.prefixBackend;
    backendtypeFrom = 'prefix';
  }
  if (d.specification !== undefined && d.specification !== '' && d.specification !== 'xen') {
    if (d.specification === 'virtio') fail(`specification=virtio is not supported here (only xen)`);
    fail(`unknown value for specification: 'specification=${d.specification}' (expected xen)`);
  }

  if (d.target === undefined || d.target === '') fail('no target (the disk image or device path) given');
  if (d.vdev === undefined || d.vdev === '') fail('no vdev given (it is mandatory, e.g. xvda)');
  const vdev = d.vdev as string;
  let deviceId: number;
  try {
    deviceId = vdevToDeviceId(vdev);
  } catch (err) {
    return fail(err instanceof Error ? err.message : String(err));
  }
  const rawTarget = d.target as string;
  const remote = REMOTE_TARGET.test(rawTarget);
  if (remote) {
    // A malformed URL is the user's typo: say so now, naming the disk, not at attach time.
    try {
      parseStoreSpec(rawTarget);
    } catch (err) {
      return fail(err instanceof Error ? err.message : String(err));
    }
  }
  const target = remote || rawTarget.startsWith('/') ? rawTarget : `/dev/${rawTarget}`;

  const disk: XlDisk = {
    spec,
    target,
    vdev,
    deviceId,
    access,
    format: 'raw',
    backendtype,
    backendtypeFrom,
    devtype: 'disk',
    discard: d.discard,
    directIoSafe: d.directIoSafe,
    ...(d.script !== undefined && d.script !== '' ? { script: d.script } : {}),
    ...(d.backendDomain !== undefined && d.backendDomain !== '' ? { backendDomain: d.backendDomain } : {}),
    ...(d.trusted !== undefined ? { trusted: d.trusted } : {}),
  };
  return disk;
}
