// Peers for the NBD client tests: nbdkit and qemu-nbd on Unix sockets in a temporary directory
// (started in the foreground, ready when their pid file appears, killed by the test), and a relay
// between the client and a server that a test can cut, to lose connections on purpose.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingTools, stopIfMissing } from './helpers-tools.ts';
import type { Skippable } from './helpers-tools.ts';

export interface Peer {
  readonly socket: string;
  readonly uri: string;
  /** SIGKILL, and wait until it is gone (its socket file may stay: the next start replaces it). */
  kill(): Promise<void>;
}

export function scratchDir(name: string): { dir: string; drop(): void } {
  const dir = mkdtempSync(join(tmpdir(), `nbd-client-${name}-`));
  return { dir, drop: () => rmSync(dir, { recursive: true, force: true }) };
}

/** nbdkit, or null after skipping `t` (failing under CI) when it is not installed. */
export function nbdkitMissing(t: Skippable): boolean {
  return stopIfMissing(t, missingTools(['nbdkit'], 'nbdkit'));
}

export function qemuNbdMissing(t: Skippable): boolean {
  return stopIfMissing(t, missingTools(['qemu-nbd', 'qemu-img'], 'qemu-utils'));
}

async function started(child: ChildProcess, pidfile: string, what: string): Promise<void> {
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b));
  const deadline = Date.now() + 10_000;
  while (!existsSync(pidfile)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited at start: ${stderr.trim()}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start within 10 s: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

function killer(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  };
}

/** `nbdkit -U SOCKET [args]` in the foreground (args: plugin, its parameters, filters...). */
export async function startNbdkit(socket: string, args: readonly string[], exportName = ''): Promise<Peer> {
  const pidfile = `${socket}.pid`;
  rmSync(pidfile, { force: true });
  rmSync(socket, { force: true }); // left by a killed server
  const child = spawn('nbdkit', ['-f', '--exit-with-parent', '--unix', socket, '--pidfile', pidfile, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  await started(child, pidfile, `nbdkit ${args.join(' ')}`);
  return { socket, uri: `nbd+unix:///${exportName}?socket=${socket}`, kill: killer(child) };
}

/** `qemu-nbd` serving a raw image file on a Unix socket, persistent, with export `name`. */
export async function startQemuNbd(socket: string, image: string, name: string, extra: readonly string[] = []): Promise<Peer> {
  const pidfile = `${socket}.pid`;
  rmSync(pidfile, { force: true });
  rmSync(socket, { force: true });
  const child = spawn('qemu-nbd', ['--socket', socket, '--pid-file', pidfile, '-f', 'raw', '--persistent', '--shared', '8', '-x', name, ...extra, image], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  await started(child, pidfile, 'qemu-nbd');
  return { socket, uri: `nbd+unix:///${name}?socket=${socket}`, kill: killer(child) };
}

/**
 * A Unix socket relay to `upstream`: each client connection gets its own upstream connection.
 * `cut()` drops every pair at once (as a failed link would); `hold` stops forwarding client bytes
 * (requests pile up unanswered until the cut).
 */
export class Relay {
  readonly socket: string;
  readonly #server: net.Server;
  readonly #pairs = new Set<[net.Socket, net.Socket]>();
  hold = false;
  connections = 0;

  private constructor(socket: string, server: net.Server) {
    this.socket = socket;
    this.#server = server;
  }

  static async start(socket: string, upstream: string): Promise<Relay> {
    let relay: Relay | undefined;
    const server = net.createServer((client) => {
      const up = net.createConnection({ path: upstream });
      const pair: [net.Socket, net.Socket] = [client, up];
      relay!.#pairs.add(pair);
      relay!.connections++;
      client.on('data', (b: Buffer) => {
        if (!relay!.hold) up.write(b);
      });
      up.on('data', (b: Buffer) => client.write(b));
      const end = (): void => {
        client.destroy();
        up.destroy();
        relay!.#pairs.delete(pair);
      };
      client.on('close', end);
      up.on('close', end);
      client.on('error', end);
      up.on('error', end);
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    relay = new Relay(socket, server);
    return relay;
  }

  cut(): void {
    for (const [a, b] of this.#pairs) {
      a.destroy();
      b.destroy();
    }
    this.#pairs.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((r) => this.#server.close(r));
  }
}

/**
 * A test CA, a server certificate for "localhost" (nbdkit's --tls-certificates layout: ca-cert.pem,
 * server-cert.pem, server-key.pem in `serverDir`) and a client certificate (libnbd's layout:
 * ca-cert.pem, client-cert.pem, client-key.pem in `clientDir`), made by openssl.
 */
export function makeX509(serverDir: string, clientDir: string): void {
  const ssl = (args: string[]): void => {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = join(serverDir, 'ca-cert.pem');
  const caKey = join(serverDir, 'ca-key.pem');
  ssl(['req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=blkback test CA']);
  const sign = (name: string, keyOut: string, certOut: string, ext: string): void => {
    const csr = `${certOut}.csr`;
    const extFile = `${certOut}.ext`;
    writeFileSync(extFile, ext);
    ssl(['req', ...ec, '-keyout', keyOut, '-out', csr, '-subj', `/CN=${name}`]);
    ssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', certOut, '-days', '2', '-extfile', extFile]);
  };
  sign('localhost', join(serverDir, 'server-key.pem'), join(serverDir, 'server-cert.pem'), 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n');
  sign('blkback-client', join(clientDir, 'client-key.pem'), join(clientDir, 'client-cert.pem'), 'extendedKeyUsage=clientAuth\n');
  copyFileSync(ca, join(clientDir, 'ca-cert.pem'));
}
