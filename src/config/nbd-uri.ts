// NBD URIs as store specs (the NBD URI specification, doc/uri.md in NetworkBlockDevice/nbd, with the
// query parameters libnbd's nbd_connect_uri accepts). Pure: no I/O; files named here are read when
// the device opens (src/nbd-client/device.ts), never while parsing.
//
//   nbd://HOST[:PORT]/[EXPORT][?OPTIONS]           TCP, no TLS (port 10809 when not given)
//   nbds://[USER@]HOST[:PORT]/[EXPORT][?OPTIONS]   TCP, TLS required
//   nbd+unix:///[EXPORT]?socket=PATH[&OPTIONS]     a Unix socket, no TLS
//   nbds+unix://[USER@]/[EXPORT]?socket=PATH[&OPTIONS]
//
// The export name is the path without its first '/', %-decoded: "nbd://h//x" names "/x", "nbd://h"
// and "nbd://h/" the default export "". OPTIONS, '&'-separated:
//   socket=PATH               the Unix socket (nbd+unix and nbds+unix only; %00 starts an abstract name)
//   tls-certificates=DIR      x509: DIR/ca-cert.pem verifies the server; DIR/client-cert.pem and
//                             DIR/client-key.pem, when there, are our certificate (libnbd's layout)
//   tls-psk-file=FILE         a pre-shared key: "USERNAME:HEXKEY" lines (nbdkit's and psktool's format)
//   tls-username=NAME         the PSK identity (default: the URI's user, else the file's only line)
//   tls-hostname=NAME         the name the server's certificate must carry (default: HOST)
//   tls-verify-peer=0|1       verify the server's certificate (default 1)
//   reconnect-timeout=SECONDS how long to keep connecting again after a lost connection (default 30)
// TLS options need nbds:// or nbds+unix://: a plain nbd:// URI never negotiates TLS, so a key given
// with it would be silently unused.

export type NbdTransport = 'tcp' | 'unix';

export interface NbdTlsSpec {
  /** x509 directory (libnbd's layout), or undefined. */
  readonly certificates: string | undefined;
  /** PSK file ("USERNAME:HEXKEY" lines), or undefined. */
  readonly pskFile: string | undefined;
  /** PSK identity, or undefined for the file's only line. */
  readonly username: string | undefined;
  /** Name to verify the server's certificate against (default: the host). */
  readonly hostname: string | undefined;
  readonly verifyPeer: boolean;
}

export interface NbdStoreSpec {
  readonly kind: 'nbd';
  readonly transport: NbdTransport;
  /** TCP host (brackets of an IPv6 literal removed); '' for a Unix socket. */
  readonly host: string;
  readonly port: number;
  /** Unix socket path; '' for TCP. */
  readonly socket: string;
  readonly exportName: string;
  /** TLS is required (nbds schemes); undefined: no TLS. */
  readonly tls: NbdTlsSpec | undefined;
  readonly reconnectTimeoutMs: number;
}

export const NBD_DEFAULT_PORT = 10809;
const DEFAULT_RECONNECT_S = 30;
/** The NBD protocol caps option strings (an export name) at 4096 bytes. */
const MAX_EXPORT_NAME_BYTES = 4096;
const SCHEMES = ['nbd://', 'nbds://', 'nbd+unix://', 'nbds+unix://'] as const;
const OPTIONS = 'socket, tls-certificates, tls-psk-file, tls-username, tls-hostname, tls-verify-peer, reconnect-timeout';

/** Is this spec an NBD URI (one of our four schemes)? */
export function isNbdUri(spec: string): boolean {
  return SCHEMES.some((s) => spec.startsWith(s));
}

/** Parses an NBD URI; `fail` throws with the reason (the caller adds which spec). */
export function parseNbdUri(uri: string, fail: (why: string) => never): NbdStoreSpec {
  const scheme = SCHEMES.find((s) => uri.startsWith(s));
  if (scheme === undefined) return fail(`not an NBD URI (expected ${SCHEMES.join(', ')})`);
  const tlsScheme = scheme.startsWith('nbds');
  const transport: NbdTransport = scheme.includes('+unix') ? 'unix' : 'tcp';
  let body = uri.slice(scheme.length);
  if (body.includes('#')) return fail('a fragment (#...) has no meaning in an NBD URI');
  const q = body.indexOf('?');
  const query = q < 0 ? '' : body.slice(q + 1);
  body = q < 0 ? body : body.slice(0, q);
  const slash = body.indexOf('/');
  const authority = slash < 0 ? body : body.slice(0, slash);
  const rawPath = slash < 0 ? '' : body.slice(slash + 1);
  const exportName = decode(rawPath, 'export name', fail);
  if (exportName.includes('\0')) return fail('the export name contains NUL');
  if (Buffer.byteLength(exportName) > MAX_EXPORT_NAME_BYTES) return fail(`the export name is longer than ${MAX_EXPORT_NAME_BYTES} bytes`);

  const at = authority.lastIndexOf('@');
  const user = at < 0 ? undefined : decode(authority.slice(0, at), 'user', fail);
  if (user !== undefined && (user === '' || user.includes(':')))
    return fail('the user part is a TLS PSK identity only; the key goes in a file named by ?tls-psk-file=PATH');
  if (user !== undefined && !tlsScheme) return fail(`a user (${user}@) is a TLS identity: it needs nbds:// or nbds+unix://`);
  const hostPort = at < 0 ? authority : authority.slice(at + 1);

  let host = '';
  let port = NBD_DEFAULT_PORT;
  if (transport === 'unix') {
    if (hostPort !== '') return fail(`a Unix socket URI has no host ('${hostPort}'): write ${scheme}/EXPORT?socket=PATH`);
  } else {
    const bracket = hostPort.startsWith('[') ? hostPort.indexOf(']') : -1;
    if (hostPort.startsWith('[') && bracket < 0) return fail(`unclosed '[' in host '${hostPort}'`);
    const colon = bracket >= 0 ? hostPort.indexOf(':', bracket) : hostPort.indexOf(':');
    host = colon >= 0 ? hostPort.slice(0, colon) : hostPort;
    if (bracket >= 0) {
      if (colon >= 0 ? colon !== bracket + 1 : bracket !== hostPort.length - 1) return fail(`junk after ']' in '${hostPort}'`);
      host = host.slice(1, -1);
    } else if (colon >= 0 && hostPort.indexOf(':', colon + 1) >= 0) {
      return fail(`'${hostPort}': an IPv6 address goes in brackets, as [::1]:10809`);
    }
    if (colon >= 0) {
      const p = hostPort.slice(colon + 1);
      port = /^[0-9]{1,5}$/.test(p) ? Number(p) : -1;
      if (port < 1 || port > 65535) return fail(`port '${p}' is not 1..65535`);
    }
    if (host === '') return fail(`no host (expected ${scheme}HOST[:PORT]/EXPORT)`);
  }

  let socket = '';
  let certificates: string | undefined;
  let pskFile: string | undefined;
  let username: string | undefined;
  let hostname: string | undefined;
  let verifyPeer = true;
  let reconnectTimeoutMs = DEFAULT_RECONNECT_S * 1000;
  const seen = new Set<string>();
  for (const item of query === '' ? [] : query.split('&')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? '' : decode(item.slice(eq + 1), `option '${key}'`, fail);
    if (seen.has(key)) return fail(`option '${key}' given twice`);
    seen.add(key);
    const needs = (what: string): string => (value === '' ? fail(`${key}= needs ${what}`) : value);
    const tlsOnly = (): void => {
      if (!tlsScheme) fail(`${key}= is a TLS option: it needs ${transport === 'unix' ? 'nbds+unix://' : 'nbds://'} (${scheme} never uses TLS)`);
    };
    switch (key) {
      case 'socket':
        if (transport !== 'unix') return fail(`socket= is for nbd+unix:// and nbds+unix:// (this is ${scheme})`);
        socket = needs('a path');
        break;
      case 'tls-certificates':
        tlsOnly();
        certificates = needs('a directory');
        break;
      case 'tls-psk-file':
        tlsOnly();
        pskFile = needs('a path');
        break;
      case 'tls-username':
        tlsOnly();
        username = needs('a name');
        break;
      case 'tls-hostname':
        tlsOnly();
        hostname = needs('a name');
        break;
      case 'tls-verify-peer':
        tlsOnly();
        if (value !== '0' && value !== '1' && value !== 'true' && value !== 'false') return fail(`tls-verify-peer=${value}: expected 0 or 1`);
        verifyPeer = value === '1' || value === 'true';
        break;
      case 'reconnect-timeout': {
        const n = Number(value);
        if (value === '' || !Number.isFinite(n) || n < 0) return fail(`reconnect-timeout=${value}: expected seconds >= 0`);
        reconnectTimeoutMs = Math.round(n * 1000);
        break;
      }
      default:
        return fail(`unknown NBD URI option '${key}' (expected ${OPTIONS})`);
    }
  }
  if (transport === 'unix' && socket === '') return fail(`${scheme} needs ?socket=PATH`);
  if (certificates !== undefined && pskFile !== undefined) return fail('tls-certificates= and tls-psk-file= are two ways of TLS: give one');
  if (user !== undefined && username !== undefined && user !== username) return fail(`user ${user}@ and tls-username=${username} disagree`);
  const tls: NbdTlsSpec | undefined = tlsScheme ? { certificates, pskFile, username: username ?? user, hostname, verifyPeer } : undefined;
  return { kind: 'nbd', transport, host, port, socket, exportName, tls, reconnectTimeoutMs };
}

/** Where a spec points, for messages: no query (which may name key files), nothing secret. */
export function describeNbdTarget(s: NbdStoreSpec): string {
  const scheme = `${s.tls === undefined ? 'nbd' : 'nbds'}${s.transport === 'unix' ? '+unix' : ''}://`;
  const name = encodeURIComponent(s.exportName).replace(/%2F/g, '/');
  if (s.transport === 'unix') return `${scheme}/${name}?socket=${s.socket.replace(/\0/g, '%00')}`;
  const host = s.host.includes(':') ? `[${s.host}]` : s.host;
  return `${scheme}${host}:${s.port}/${name}`;
}

function decode(text: string, what: string, fail: (why: string) => never): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return fail(`${what}: bad %-escape in '${text}'`);
  }
}
