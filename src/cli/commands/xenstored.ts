// `blkback xenstored`: our xenstore daemon alone on a Unix socket, for the real xenstore tools
// (xenstore-ls, xenstore-write, ...) or any libxenstore program.

import { createWriteStream } from 'node:fs';
import { parseArgs } from 'node:util';
import { UsageError } from '../../internal/errors.ts';
import { configureSocketAccess, parseAllowUids } from '../../internal/unix-listener.ts';
import type { Command } from '../command.ts';
import { XenstoreDaemon } from '../../xenstore/daemon.ts';

const help = `blkback xenstored: run the xenstore daemon on a Unix socket until SIGINT or SIGTERM.

It speaks the real xenstore wire protocol (xen/io/xs_wire.h), so Xen's own tools work against it.
Every socket connection speaks for dom0 (privileged), as with xenstored's socket. The socket file
is removed at exit; a stale one left by a crashed daemon is replaced. Who may connect: the socket
is created 0600, and only root and the user running the daemon are served (each connection's
SO_PEERCRED is checked; others are closed and logged), plus the users of --allow-uid.

usage: blkback xenstored --socket PATH [--quota-nodes N] [--log FILE] [--allow-uid UID]...

options:
  --socket PATH      Unix socket to listen on (required)
  --quota-nodes N    nodes each unprivileged domain may own (default 1000)
  --log FILE         append a trace line per request, reply and watch event to FILE
  --allow-uid UID    also serve this user (numeric uid; repeatable): the socket is then 0666
                     and the credential check alone decides

example:
  blkback xenstored --socket /tmp/xs.sock &
  XENSTORED_PATH=/tmp/xs.sock xenstore-write /local/domain/0/name Domain-0
  XENSTORED_PATH=/tmp/xs.sock xenstore-ls -p /local
  XENSTORED_PATH=/tmp/xs.sock xenstore-watch /local     # prints each change below /local
`;

function positiveInt(name: string, s: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 1) throw new UsageError(`xenstored: ${name} wants a positive integer, got '${s}'`);
  return Number(s);
}

export const xenstoredCommand: Command = {
  name: 'xenstored',
  summary: 'run the xenstore daemon on a Unix socket (for xenstore-ls, xenstore-write, ...)',
  help,
  async run(argv: string[]): Promise<number> {
    let values: { socket?: string | undefined; 'quota-nodes'?: string | undefined; log?: string | undefined; 'allow-uid'?: string[] | undefined };
    try {
      ({ values } = parseArgs({
        args: argv,
        options: { socket: { type: 'string' }, 'quota-nodes': { type: 'string' }, log: { type: 'string' }, 'allow-uid': { type: 'string', multiple: true } },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError(`xenstored: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (values.socket === undefined || values.socket === '') throw new UsageError('xenstored: --socket PATH is required');
    const quotaNodes = values['quota-nodes'] === undefined ? undefined : positiveInt('--quota-nodes', values['quota-nodes']);
    configureSocketAccess({ allowUids: parseAllowUids(values['allow-uid'], 'xenstored'), log: (line) => void process.stderr.write(`xenstored: ${line}\n`) });
    const logStream = values.log === undefined ? undefined : createWriteStream(values.log, { flags: 'a' });
    const daemon = new XenstoreDaemon({
      ...(quotaNodes === undefined ? {} : { quotaNodes }),
      ...(logStream === undefined ? {} : { log: (line: string) => void logStream.write(`${new Date().toISOString()} ${line}\n`) }),
    });
    const server = await daemon.listenUnix(values.socket);
    process.stderr.write(`xenstored: listening on ${server.path} (XENSTORED_PATH=${server.path})\n`);
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      const onSignal = (sig: NodeJS.Signals): void => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        resolve(sig);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
    });
    await daemon.close();
    await server.close();
    if (logStream !== undefined) await new Promise<void>((resolve) => logStream.end(resolve));
    process.stderr.write(`xenstored: ${signal}, socket removed\n`);
    return 0;
  },
};
