// The TLS material an nbds:// URI names, read when the device opens: an x509 directory in libnbd's
// layout (ca-cert.pem; client-cert.pem and client-key.pem when the server wants our certificate) or
// a PSK file in nbdkit's and psktool's format ("USERNAME:HEXKEY" lines). Messages name files and
// users, never a key.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NbdTlsSpec } from '../config/nbd-uri.ts';
import { UsageError } from '../internal/errors.ts';
import type { TlsCredentials } from './transport.ts';

/** The files of an x509 directory that we read, for the path policy to check first. */
export const X509_FILES = ['ca-cert.pem', 'client-cert.pem', 'client-key.pem'] as const;

export async function loadTlsCredentials(tls: NbdTlsSpec, where: string): Promise<TlsCredentials> {
  if (tls.pskFile !== undefined) return loadPsk(tls.pskFile, tls.username, where);
  const dir = tls.certificates;
  const read = async (name: string): Promise<Buffer | undefined> => {
    if (dir === undefined) return undefined;
    try {
      return await readFile(join(dir, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new UsageError(`${where}: cannot read ${join(dir, name)}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  const [ca, cert, key] = await Promise.all(X509_FILES.map(read));
  if (dir !== undefined && ca === undefined && tls.verifyPeer)
    throw new UsageError(`${where}: ${join(dir, 'ca-cert.pem')} is missing: it is needed to verify the server (or tls-verify-peer=0)`);
  if ((cert === undefined) !== (key === undefined))
    throw new UsageError(`${where}: ${dir}: client-cert.pem and client-key.pem go together (one of them is missing)`);
  return { kind: 'x509', ca, cert, key, hostname: tls.hostname, verifyPeer: tls.verifyPeer };
}

/** nbdkit's --tls-psk file: "USERNAME:HEXKEY" per line. */
async function loadPsk(file: string, username: string | undefined, where: string): Promise<TlsCredentials> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`${where}: cannot read PSK file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const keys = new Map<string, Buffer>();
  let lineNo = 0;
  for (const raw of text.split('\n')) {
    lineNo++;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    const hex = colon < 0 ? '' : line.slice(colon + 1);
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) throw new UsageError(`${where}: ${file} line ${lineNo}: expected USERNAME:HEXKEY`);
    keys.set(line.slice(0, colon), Buffer.from(hex, 'hex'));
  }
  if (username !== undefined) {
    const key = keys.get(username);
    if (key === undefined) throw new UsageError(`${where}: no key for PSK user ${username} in ${file}`);
    return { kind: 'psk', identity: username, key };
  }
  if (keys.size !== 1) throw new UsageError(`${where}: ${file} has ${keys.size} users; name one with tls-username= or as nbds://USER@HOST/...`);
  const [identity, key] = [...keys][0]!;
  return { kind: 'psk', identity, key };
}
