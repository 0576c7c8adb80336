// TLS for the NBD server: x509 (a certificate and key, and client certificates checked against a
// CA when one is given) or a pre-shared key file in nbdkit's psktool format, one "username:hexkey"
// per line. The connection upgrades a plain socket with these options after NBD_OPT_STARTTLS.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { UsageError } from '../internal/errors.ts';
import type { TlsMode } from './option-haggling.ts';

export interface NbdTlsConfig {
  readonly mode: Exclude<TlsMode, 'off'>;
  /** Options for `new tls.TLSSocket(socket, { isServer: true, ...options })`. */
  readonly options: tls.TLSSocketOptions;
  /** For the start-up line: "x509, client certificates checked" or "PSK (3 users)". */
  readonly description: string;
}

export interface TlsFiles {
  readonly cert?: string;
  readonly key?: string;
  readonly ca?: string;
  readonly psk?: string;
}

/** PSK ciphers OpenSSL and GnuTLS (libnbd, qemu) both speak, with TLS 1.2. */
const PSK_CIPHERS =
  'ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256';

function readFile(path: string, option: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`nbd-server: cannot read ${option} ${path}: ${(err as Error).message}`);
  }
}

/** Parses a psktool-format file: "username:hexkey" lines; blank lines and '#' comments skipped. */
export function parsePskFile(text: string, path: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const where = `${path} line ${i + 1}`;
    if (colon <= 0) throw new UsageError(`nbd-server: ${where} is not 'username:hexkey' (psktool's format)`);
    const hex = line.slice(colon + 1);
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new UsageError(`nbd-server: ${where}: the key is not an even number of hex digits`);
    keys.set(line.slice(0, colon), Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new UsageError(`nbd-server: ${path} holds no 'username:hexkey' line`);
  return keys;
}

export function loadTlsConfig(mode: TlsMode, files: TlsFiles): NbdTlsConfig | undefined {
  const x509 = files.cert !== undefined || files.key !== undefined || files.ca !== undefined;
  if (mode === 'off') {
    if (x509 || files.psk !== undefined) throw new UsageError('nbd-server: TLS files given with --tls off: give --tls on or --tls require');
    return undefined;
  }
  if (x509 && files.psk !== undefined) throw new UsageError('nbd-server: give either x509 files (--tls-cert/--tls-key) or --tls-psk, not both');
  if (files.psk !== undefined) {
    const keys = parsePskFile(readFile(files.psk, '--tls-psk').toString('utf8'), files.psk);
    return {
      mode,
      description: `PSK (${keys.size} user${keys.size === 1 ? '' : 's'})`,
      options: {
        ciphers: PSK_CIPHERS,
        maxVersion: 'TLSv1.2',
        pskCallback: (_socket: tls.TLSSocket, identity: string) => keys.get(identity) ?? null,
      } as tls.TLSSocketOptions,
    };
  }
  if (files.cert === undefined || files.key === undefined) {
    throw new UsageError(`nbd-server: --tls ${mode} needs --tls-cert and --tls-key (x509), or --tls-psk FILE`);
  }
  const ca = files.ca === undefined ? undefined : readFile(files.ca, '--tls-ca');
  let secureContext: tls.SecureContext;
  try {
    secureContext = tls.createSecureContext({
      cert: readFile(files.cert, '--tls-cert'),
      key: readFile(files.key, '--tls-key'),
      ...(ca === undefined ? {} : { ca }),
    });
  } catch (err) {
    throw new UsageError(`nbd-server: the TLS certificate or key cannot be used: ${(err as Error).message}`);
  }
  return {
    mode,
    description: ca === undefined ? 'x509' : 'x509, client certificates checked against --tls-ca',
    options: { secureContext, requestCert: ca !== undefined, rejectUnauthorized: ca !== undefined },
  };
}
