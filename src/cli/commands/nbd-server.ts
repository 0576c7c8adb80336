// `blkback nbd-server`: serve block stores as NBD exports (the NBD protocol document, fixed
// newstyle), to qemu, nbdkit's and libnbd's tools, fio's nbd engine, the Linux nbd client and
// blkback's own nbd:// store. Parses the command line, opens the stores under the path policy, and
// runs the server (src/nbd-server) until SIGINT or SIGTERM.
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { defaultControlSocket, prepareSocketDirectory } from '../../control/paths.ts';
import { UsageError } from '../../internal/errors.ts';
import { configureSocketAccess, otherAllowedUids, takeAllowUidOptions } from '../../internal/unix-listener.ts';
import { NBD_DEFAULT_PORT } from '../../nbd/constants.ts';
import type { TlsMode } from '../../nbd-server/option-haggling.ts';
import { startNbdServer, type ExportSpec } from '../../nbd-server/run.ts';
import { formatListenAddress, type NbdListenAddress } from '../../nbd-server/server.ts';
import { loadTlsConfig } from '../../nbd-server/tls.ts';
import { PATH_POLICY_HELP } from '../../stores/path-policy.ts';
import type { Command } from '../command.ts';

export const NBD_SOCKET_NAME = 'nbd.sock';

/** More workers than this only multiply idle threads: each serves many connections. */
const MAX_NBD_WORKERS = 64;

/**
 * One worker per core: the main thread only shakes hands. On a quiet 2-core machine fio's nbd
 * engine on the seed jobs got about 1.2x nbdkit with 2 workers, 1.1x with 1 (docs/nbd.md
 * "Transmission workers").
 */
function defaultWorkers(): number {
  return Math.min(Math.max(1, availableParallelism()), MAX_NBD_WORKERS);
}

const help = `blkback nbd-server — serve block stores as NBD exports

usage: blkback nbd-server --export NAME=SPEC [--read-only] [--export ...]
                          [--listen unix:PATH|HOST:PORT] [--allow-path DIR]... [--allow-uid UID]...
                          [--tls off|on|require [--tls-cert FILE --tls-key FILE [--tls-ca FILE] | --tls-psk FILE]]

Any store blkback can open becomes a disk that NBD clients use over a Unix socket (or TCP when you
ask): qemu ('nbd+unix:///NAME?socket=PATH'), qemu-img and qemu-io, libnbd's nbdinfo, nbdcopy and
nbdsh, fio's nbd engine, the kernel's nbd-client, and blkback's own nbd+unix:// stores. It speaks
fixed newstyle NBD with NBD_OPT_GO and INFO (size, name, description, block sizes), LIST,
structured replies (holes are sent as holes), the base:allocation metadata context (block
status), STARTTLS, and the commands READ, WRITE (with FUA), FLUSH, TRIM, WRITE_ZEROES (NO_HOLE,
FAST_ZERO), CACHE, BLOCK_STATUS and DISC. Connections to one export share its store, so a flush
on any of them covers the writes of all (NBD_FLAG_CAN_MULTI_CONN: clients may open several).
Malformed requests get the protocol's error and are counted and logged; a client whose stream
cannot be followed (bad magic, a write larger than the 32 MiB maximum) is disconnected. Logs go to
stderr; SIGINT or SIGTERM stops it.

Export options:
  --export NAME=SPEC       serve the store SPEC under the export name NAME (clients ask for it by
                           name; the empty name '' picks the first export). SPEC is ram:SIZE,
                           null:SIZE, file:PATH (page cache), phy:PATH (O_DIRECT), a path,
                           iscsi://HOST/IQN/LUN, nbd://..., or rbd:POOL/IMAGE. Repeat for more.
  --read-only              the --export before it refuses writes (EPERM); alone before any
                           --export: every export is read-only
  --allow-path DIR         regular files under DIR may be exported (repeatable)

${PATH_POLICY_HELP}

Where it listens:
  --listen unix:PATH       a Unix socket at PATH, mode 0600 (default: /run/blkback/${NBD_SOCKET_NAME} for
                           root, else $XDG_RUNTIME_DIR/blkback/${NBD_SOCKET_NAME}, in a directory only we may
                           write to). Only root and the user running the server may connect
                           (SO_PEERCRED is checked; others are closed and logged).
  --listen HOST:PORT       TCP instead (port ${NBD_DEFAULT_PORT} is NBD's; [::1]:${NBD_DEFAULT_PORT} for IPv6). Anyone who
                           can reach the port can read and write the exports: use TLS, or bind
                           to 127.0.0.1. Without TLS the server says so when it starts.
  --allow-uid UID          also admit this user on the Unix socket (numeric uid; repeatable; the
                           socket is then 0666 and the credential check alone decides)

Threads:
  --workers N              transmission worker threads (0..${MAX_NBD_WORKERS}; default: one per core,
                           here ${defaultWorkers()}). The handshake stays on the main thread; then each plain
                           connection to an export whose store can be shared (ram:, file:, phy:, a
                           path) is served by the worker with the fewest connections. TLS
                           connections and network stores stay on the main thread. 0: everything
                           on the main thread. A flush on any connection still covers the writes
                           of all (each worker reaches the same memory or file).

TLS (NBD_OPT_STARTTLS):
  --tls off|on|require     off (default): STARTTLS is refused. on: clients may upgrade. require:
                           every option but STARTTLS is answered NBD_REP_ERR_TLS_REQD, so plain
                           clients get nothing.
  --tls-cert FILE --tls-key FILE
                           x509: our certificate chain and private key (PEM)
  --tls-ca FILE            clients must present a certificate signed by this CA (PEM)
  --tls-psk FILE           pre-shared keys instead of x509, in nbdkit's format (psktool makes it):
                           one 'username:hexkey' per line

examples:
  blkback nbd-server --export disk=ram:1G
  nbdinfo 'nbd+unix:///disk?socket=/run/blkback/${NBD_SOCKET_NAME}'
  qemu-img convert -O raw -n guest.img 'nbd+unix:///disk?socket=/run/blkback/${NBD_SOCKET_NAME}'
  fio --ioengine=nbd --uri='nbd+unix:///disk?socket=/run/blkback/${NBD_SOCKET_NAME}' --rw=randread --bs=4k --name=j
  blkback nbd-server --allow-path /srv/disks --export a=file:/srv/disks/a.img --export b=/dev/sdb --read-only \\
      --listen 0.0.0.0:${NBD_DEFAULT_PORT} --tls require --tls-cert server.pem --tls-key server.key --tls-ca ca.pem
  psktool -u alice -p keys.psk && blkback nbd-server --export d=ram:1G --tls require --tls-psk keys.psk
  nbdinfo 'nbds+unix://alice@/d?socket=/run/blkback/${NBD_SOCKET_NAME}&tls-psk-file=keys.psk'
`;

/** Parses --listen: unix:PATH, HOST:PORT or [IPv6]:PORT. */
export function parseListen(text: string): NbdListenAddress {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    if (path === '') throw new UsageError('nbd-server: --listen unix: needs a path (unix:/run/blkback/nbd.sock)');
    return { kind: 'unix', path };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(text);
  const port = m === null ? Number.NaN : Number(m[3]);
  if (m === null || !Number.isInteger(port) || port > 65535) {
    throw new UsageError(`nbd-server: --listen '${text}' is neither unix:PATH nor HOST:PORT (e.g. 127.0.0.1:${NBD_DEFAULT_PORT})`);
  }
  return { kind: 'tcp', host: m[1] ?? m[2]!, port };
}

function parseTlsMode(text: string | undefined): TlsMode {
  const mode = text ?? 'off';
  if (mode !== 'off' && mode !== 'on' && mode !== 'require') throw new UsageError(`nbd-server: --tls '${mode}' is not off, on or require`);
  return mode;
}

export const nbdServerCommand: Command = {
  name: 'nbd-server',
  summary: 'serve stores as NBD exports (Unix socket or TCP, TLS, structured replies, block status)',
  help,
  async run(argv) {
    const access = takeAllowUidOptions(argv, 'nbd-server');
    const log = (line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    configureSocketAccess({ allowUids: access.allowUids, log });
    let tokens;
    let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
    try {
      ({ tokens, values } = parseArgs({
        args: access.rest,
        allowPositionals: false,
        strict: true,
        tokens: true,
        options: {
          export: { type: 'string', multiple: true },
          'read-only': { type: 'boolean', multiple: true },
          'allow-path': { type: 'string', multiple: true },
          listen: { type: 'string' },
          tls: { type: 'string' },
          'tls-cert': { type: 'string' },
          'tls-key': { type: 'string' },
          'tls-ca': { type: 'string' },
          'tls-psk': { type: 'string' },
          workers: { type: 'string' },
        },
      }));
    } catch (err) {
      throw new UsageError(`nbd-server: ${(err as Error).message} (see 'blkback nbd-server --help')`);
    }
    // --read-only belongs to the --export before it; before any export it covers them all.
    const exports: { name: string; spec: string; readOnly: boolean }[] = [];
    let allReadOnly = false;
    for (const t of tokens ?? []) {
      if (t.kind !== 'option') continue;
      if (t.name === 'export') {
        const text = t.value ?? '';
        const eq = text.indexOf('=');
        if (eq < 0 || eq === text.length - 1) throw new UsageError(`nbd-server: --export '${text}' is not NAME=SPEC (e.g. --export disk=ram:1G)`);
        const name = text.slice(0, eq);
        if (Buffer.byteLength(name) > 4096) throw new UsageError('nbd-server: export names are at most 4096 bytes');
        if (exports.some((e) => e.name === name)) throw new UsageError(`nbd-server: export '${name}' is given twice`);
        exports.push({ name, spec: text.slice(eq + 1), readOnly: allReadOnly });
      } else if (t.name === 'read-only') {
        const last = exports[exports.length - 1];
        if (last === undefined) allReadOnly = true;
        else last.readOnly = true;
      }
    }
    if (exports.length === 0) throw new UsageError("nbd-server: nothing to serve: give at least one --export NAME=SPEC (see 'blkback nbd-server --help')");
    const mode = parseTlsMode(values.tls as string | undefined);
    const str = (key: string): string | undefined => values[key] as string | undefined;
    const tls = loadTlsConfig(mode, {
      ...opt('cert', str('tls-cert')),
      ...opt('key', str('tls-key')),
      ...opt('ca', str('tls-ca')),
      ...opt('psk', str('tls-psk')),
    });
    const listenText = str('listen');
    const listen =
      listenText === undefined
        ? { kind: 'unix' as const, path: defaultControlSocket(process.env, process.getuid?.() ?? 0, NBD_SOCKET_NAME) }
        : parseListen(listenText);
    if (listen.kind === 'unix') prepareSocketDirectory(listen.path, { openToOthers: otherAllowedUids(access.allowUids).length > 0 });
    if (listen.kind === 'tcp' && access.allowUids.length > 0) throw new UsageError('nbd-server: --allow-uid applies to Unix sockets; TCP has no user to check');

    const workersText = str('workers');
    const workers = workersText === undefined ? defaultWorkers() : Number(workersText);
    if (workersText !== undefined && (!/^\d+$/.test(workersText) || workers > MAX_NBD_WORKERS)) {
      throw new UsageError(`nbd-server: --workers '${workersText}' is not a whole number in 0..${MAX_NBD_WORKERS}`);
    }
    const specs: ExportSpec[] = exports.map((e) => ({ name: e.name, spec: e.spec, readOnly: e.readOnly }));
    const running = await startNbdServer({
      listen,
      exports: specs,
      allowPaths: (values['allow-path'] as string[] | undefined) ?? [],
      ...(tls === undefined ? {} : { tls }),
      log,
      workers,
    });
    const tlsText = tls === undefined ? 'no TLS' : `TLS ${tls.mode} (${tls.description})`;
    const threadText = workers === 0 ? 'no transmission workers' : `${workers} transmission worker${workers === 1 ? '' : 's'}`;
    log(`nbd-server: listening on ${formatListenAddress(running.address)}; ${tlsText}; ${threadText}; exports ${running.describeExports()}`);
    if (running.address.kind === 'tcp' && tls === undefined) {
      log('nbd-server: WARNING: TCP without TLS: anyone who can reach this port can read and write the exports, and the data crosses the network in clear');
    }
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    log(`nbd-server: ${signal}: closing connections`);
    const force = (): void => {
      log('nbd-server: second signal: exiting at once');
      process.exit(1);
    };
    process.once('SIGINT', force);
    process.once('SIGTERM', force);
    const c = running.server.counters;
    await running.close();
    log(
      `nbd-server: stopped after ${c.connectionsAccepted} connections, ${c.requests} requests ` +
        `(${c.optionErrors + c.unknownCommand + c.badFlags + c.outOfRange + c.unaligned + c.tooLarge + c.readOnlyWrites + c.notNegotiated} refused, ${c.ioErrors} store errors, ${c.framingErrors + c.handshakeErrors} connections dropped for bad input)`,
    );
    return 0;
  },
};

function opt<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: string };
}
