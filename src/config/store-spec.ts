// The store specs users type for a disk's backing storage (--store, --map PATH=SPEC). Pure: no I/O;
// src/stores/open.ts turns a parsed spec into a BlockDevice.
//
//   ram:SIZE        RAM disk (sparse, chunked)
//   null:SIZE       reads zeroes, discards writes (benchmarks)
//   file:PATH       regular file or block device through the page cache (QEMU qdisk analog)
//   phy:PATH        O_DIRECT, the caller's buffers straight to the device (xl "phy:" analog)
//   direct:PATH     same as phy:
//   volatile:SPEC   SPEC behind a simulated volatile write cache (power-cut tests)
//   iscsi://[USER@]HOST[:PORT]/IQN/LUN[?OPTIONS]
//                   a LUN of an iSCSI target through our initiator (src/iscsi-initiator). OPTIONS,
//                   '&'-separated: secret-file=PATH (CHAP: "USERNAME SECRET" lines as the target's
//                   --chap-file; the secret never goes in the URL, which xenstore and `ps` show),
//                   mutual-secret-file=PATH (mutual CHAP: one "USERNAME SECRET" line, the target's
//                   name and secret, as the target's --mutual-chap-file), digest=crc32c|none,
//                   initiator-name=IQN, reconnect-timeout=SECONDS
//   nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://..., nbds+unix://...
//                   an NBD export through our client (src/nbd-client); src/config/nbd-uri.ts
//   rbd:POOL/IMAGE[@SNAP][:id=NAME][:conf=PATH]
//                   a Ceph RBD image through librbd (QEMU's syntax; src/config/rbd-spec.ts)
//   PATH            an absolute or ./relative path: phy: if it is a block device, file: otherwise
import { UsageError } from '../internal/errors.ts';
import { parseSize } from './size.ts';
import { parseRbdSpec } from './rbd-spec.ts';
import type { RbdStoreSpec } from './rbd-spec.ts';
import { isNbdUri, parseNbdUri } from './nbd-uri.ts';
import type { NbdStoreSpec } from './nbd-uri.ts';

export type StoreSpec =
  | { readonly kind: 'ram'; readonly size: number }
  | { readonly kind: 'null'; readonly size: number }
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'direct'; readonly path: string }
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'volatile'; readonly inner: StoreSpec }
  | IscsiStoreSpec
  | NbdStoreSpec
  | RbdStoreSpec;

export interface IscsiStoreSpec {
  readonly kind: 'iscsi';
  readonly host: string;
  readonly port: number;
  /** CHAP user name; with no secret file, no CHAP. */
  readonly user: string | undefined;
  readonly targetName: string;
  readonly lun: number;
  /** File holding "USERNAME SECRET" lines (read when the device opens, never here). */
  readonly secretFile: string | undefined;
  /** Mutual CHAP: file holding the target's one "USERNAME SECRET" line (read when the device opens). */
  readonly mutualSecretFile?: string;
  /** Ask for CRC32C header and data digests. */
  readonly digest: boolean;
  readonly initiatorName: string | undefined;
  /** How long to keep logging in again after a lost connection before failing requests. */
  readonly reconnectTimeoutMs: number;
}

const ISCSI_DEFAULT_PORT = 3260;
const ISCSI_DEFAULT_RECONNECT_S = 30;
const ISCSI_OPTIONS = 'secret-file, mutual-secret-file, digest, initiator-name, reconnect-timeout';

const KINDS =
  'ram:SIZE, null:SIZE, file:PATH, phy:PATH, direct:PATH, volatile:SPEC, iscsi://HOST/IQN/LUN, nbd://HOST/EXPORT, nbd+unix:///EXPORT?socket=PATH, rbd:POOL/IMAGE or a path';

export function parseStoreSpec(spec: string): StoreSpec {
  const fail = (why: string): never => {
    throw new UsageError(`store spec '${spec}': ${why}`);
  };
  if (spec === '') return fail(`empty (expected ${KINDS})`);
  if (spec.startsWith('iscsi://')) return parseIscsiSpec(spec, fail);
  if (spec.startsWith('rbd:')) return parseRbdSpec(spec.slice('rbd:'.length), fail);
  if (isNbdUri(spec)) return parseNbdUri(spec, fail);
  if (spec.startsWith('/') || spec.startsWith('./') || spec.startsWith('../')) return { kind: 'path', path: spec };
  const colon = spec.indexOf(':');
  if (colon < 0) return fail(`not a path and no type prefix (expected ${KINDS}; write ./${spec} for a relative path)`);
  const kind = spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  switch (kind) {
    case 'ram':
    case 'null': {
      if (rest === '') return fail(`${kind}: needs a size, e.g. ${kind}:1G`);
      const size = parseSize(rest, `store spec '${spec}'`);
      if (size <= 0 || size % 512 !== 0) return fail(`size ${size} must be a positive multiple of 512 bytes`);
      return { kind, size };
    }
    case 'file':
    case 'phy':
    case 'direct':
      if (rest === '') return fail(`${kind}: needs a path, e.g. ${kind}:/dev/loop0`);
      return { kind: kind === 'file' ? 'file' : 'direct', path: rest };
    case 'volatile':
      if (rest === '') return fail('volatile: needs an inner spec, e.g. volatile:ram:1G');
      try {
        return { kind: 'volatile', inner: parseStoreSpec(rest) };
      } catch (err) {
        if (err instanceof UsageError) return fail(err.message);
        throw err;
      }
    default:
      return fail(`unknown store type '${kind}:' (expected ${KINDS})`);
  }
}

// Parsed by hand rather than with WHATWG URL: an IQN holds ':' and URL would lower-case or
// percent-encode parts of it.
function parseIscsiSpec(spec: string, fail: (why: string) => never): IscsiStoreSpec {
  const usage = 'expected iscsi://[USER@]HOST[:PORT]/IQN/LUN[?secret-file=PATH]';
  const body = spec.slice('iscsi://'.length);
  const q = body.indexOf('?');
  const path = q < 0 ? body : body.slice(0, q);
  const query = q < 0 ? '' : body.slice(q + 1);
  const parts = path.split('/');
  if (parts.length !== 3 || parts.some((x) => x === '')) return fail(usage);
  const [authority, targetName, lunText] = parts as [string, string, string];
  const at = authority.lastIndexOf('@');
  const user = at < 0 ? undefined : authority.slice(0, at);
  if (user !== undefined && (user === '' || user.includes(':'))) {
    return fail('the user part is a CHAP user name only; the secret goes in a file named by ?secret-file=PATH');
  }
  const hostPort = at < 0 ? authority : authority.slice(at + 1);
  let host = hostPort;
  let port = ISCSI_DEFAULT_PORT;
  const bracket = hostPort.startsWith('[') ? hostPort.indexOf(']') : -1;
  const colon = bracket >= 0 ? hostPort.indexOf(':', bracket) : hostPort.lastIndexOf(':');
  if (colon >= 0) {
    host = hostPort.slice(0, colon);
    const p = hostPort.slice(colon + 1);
    port = /^[0-9]{1,5}$/.test(p) ? Number(p) : -1;
    if (port < 1 || port > 65535) return fail(`port '${p}' is not 1..65535`);
  }
  if (bracket >= 0) host = host.slice(1, -1);
  if (host === '') return fail(`no host (${usage})`);
  if (!/^[0-9]{1,5}$/.test(lunText) || Number(lunText) > 16383) return fail(`LUN '${lunText}' is not 0..16383`);
  let secretFile: string | undefined;
  let mutualSecretFile: string | undefined;
  let digest = false;
  let initiatorName: string | undefined;
  let reconnectTimeoutMs = ISCSI_DEFAULT_RECONNECT_S * 1000;
  for (const item of query === '' ? [] : query.split('&')) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    let value = '';
    try {
      value = eq < 0 ? '' : decodeURIComponent(item.slice(eq + 1));
    } catch {
      return fail(`option '${key}': bad %-escape`);
    }
    switch (key) {
      case 'secret-file':
        if (value === '') return fail('secret-file= needs a path');
        secretFile = value;
        break;
      case 'mutual-secret-file':
        if (value === '') return fail('mutual-secret-file= needs a path');
        mutualSecretFile = value;
        break;
      case 'digest':
        if (value !== 'crc32c' && value !== 'none') return fail(`digest=${value}: expected crc32c or none`);
        digest = value === 'crc32c';
        break;
      case 'initiator-name':
        if (value === '') return fail('initiator-name= needs an IQN');
        initiatorName = value;
        break;
      case 'reconnect-timeout': {
        const n = Number(value);
        if (value === '' || !Number.isFinite(n) || n < 0) return fail(`reconnect-timeout=${value}: expected seconds >= 0`);
        reconnectTimeoutMs = Math.round(n * 1000);
        break;
      }
      default:
        return fail(`unknown iscsi option '${key}' (expected ${ISCSI_OPTIONS})`);
    }
  }
  return {
    kind: 'iscsi',
    host,
    port,
    user,
    targetName,
    lun: Number(lunText),
    secretFile,
    digest,
    initiatorName,
    reconnectTimeoutMs,
    ...(mutualSecretFile === undefined ? {} : { mutualSecretFile }),
  };
}
