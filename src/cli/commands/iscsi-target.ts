// `blkback iscsi-target`: serve block stores as the LUNs of an iSCSI target (RFC 7143), as LIO does
// in the seed's rig. Parses the command line, opens the stores under the path policy, and runs the
// target (src/iscsi-target) with a control socket for `blkback ctl`.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { UsageError } from '../../internal/errors.ts';
import { configureSocketAccess, takeAllowUidOptions } from '../../internal/unix-listener.ts';
import { parseSize } from '../../config/size.ts';
import { checkMutualSecret, parseChapSecretsFile } from '../../iscsi/chap.ts';
import type { ChapSecrets } from '../../iscsi/chap.ts';
import { startIscsiTarget, IQN_PREFIX } from '../../iscsi-target/run.ts';
import type { LunSpec } from '../../iscsi-target/run.ts';
import { formatPortal, parsePortal } from '../../iscsi-target/server.ts';
import { PATH_POLICY_HELP } from '../../stores/path-policy.ts';
import { defaultControlSocket, ISCSI_TARGET_SOCKET_NAME } from '../../control/paths.ts';
import { serveControl } from '../../control/server.ts';
import { iscsiControlTarget } from '../../control/iscsi-target.ts';
import type { Command } from '../command.ts';

const help = `blkback iscsi-target — serve block stores as the LUNs of an iSCSI target

usage: blkback iscsi-target --lun N=SPEC [--read-only] [--thin] [--lun ...] --allow IQN|ALL
                            [--portal HOST:PORT] [--advertise HOST:PORT] [--target-name IQN]
                            [--chap-file PATH [--mutual-chap-file PATH]] [--allow-path DIR]...
                            [--control-socket PATH] [--allow-uid UID]... [options]

The storage server of the seed's test bed (the mail used LIO): every store blkback knows becomes a
SCSI disk (SBC-3) that iSCSI initiators log in to: Linux's open-iscsi, QEMU and libiscsi tools,
'blkback' itself. Discovery (SendTargets), CHAP, header and data digests, task management,
persistent reservations, UNMAP on thin LUNs. Logs go to stderr; SIGINT or SIGTERM stops it after
the commands in flight have been answered.

LUN options:
  --lun N=SPEC             LUN N (0..16383) from a store spec: ram:SIZE, file:PATH (through the
                           page cache), phy:PATH (O_DIRECT), or a path (phy: for block devices,
                           file: for regular files). Repeat for more LUNs.
  --read-only              the LUN named by the --lun before it is write-protected
  --thin                   the LUN named by the --lun before it is thin-provisioned: UNMAP and
                           WRITE SAME with UNMAP free the store's blocks (punch holes in files,
                           BLKDISCARD on block devices); needs a store that can discard
  --allow-path DIR         files under DIR may be LUNs (repeatable)

${PATH_POLICY_HELP}

Login options (who may log in):
  --allow IQN|ALL          admit this initiator name (repeatable), or every initiator. Nobody is
                           admitted until one is allowed. Discovery answers list the target only
                           to initiators that may log in to it.
  --chap-file PATH         require CHAP (RFC 1994, MD5): the file holds the initiators' accounts,
                           one 'USERNAME SECRET' per line ('#' starts a comment). Secrets are at
                           least 12 bytes and never appear in logs, listings or errors.
  --mutual-chap-file PATH  our own 'USERNAME SECRET' for mutual CHAP (initiators that challenge
                           the target); it must differ from every initiator's secret

Network options:
  --portal HOST:PORT       listen here (default 127.0.0.1:3260; [::1]:3260 for IPv6)
  --advertise HOST:PORT    the address SendTargets reports, when initiators reach us by another
                           one (NAT, a namespace); default: the portal
  --target-name IQN        the target's name (default ${IQN_PREFIX}<hostname>)

Tuning options (the defaults are what the benchmarks use):
  --queue-depth N          commands a session may have in flight (default 128)
  --max-recv-data-segment-length BYTES
                           the largest PDU data we accept (default 256k; initiators send 64 KiB
                           writes in one PDU with it)
  --first-burst-length BYTES  unsolicited data per command (default 256k)
  --max-burst-length BYTES    data per R2T or Data-In sequence (default 16776192, the most
                              the RFC allows: one R2T or one Data-In sequence per command)
  --max-outstanding-r2t N     R2Ts in flight per command (default 16)
  --digest none|crc32c|any    CRC32C digests we accept (default any: the initiator's choice)
  --nop-interval SECS      ping an idle initiator with a NOP-In after SECS (default 15, 0: never);
                           one that does not answer within --nop-timeout SECS (default 15) is
                           disconnected

Control options:
  --control-socket PATH    serve 'blkback ctl --iscsi list' and 'ctl --iscsi stats' here (mode
                           0600; default /run/blkback/${ISCSI_TARGET_SOCKET_NAME} for root, beside
                           'blkback serve's control.sock). Only root and the user running the
                           target are served (SO_PEERCRED is checked; others closed, logged)
  --allow-uid UID          also serve this user on the control socket (numeric uid; repeatable;
                           the socket is then 0666 and the credential check alone decides)

examples:
  truncate -s 1G /srv/disks/lun1.img
  blkback iscsi-target --allow-path /srv/disks --lun 1=file:/srv/disks/lun1.img --thin \\
      --allow iqn.1993-08.org.debian:01:host1
  iscsi-ls -s iscsi://127.0.0.1/                         # libiscsi: discovery and LUNs
  qemu-img info iscsi://127.0.0.1/${IQN_PREFIX}$(hostname)/1
  iscsiadm -m discovery -t st -p 127.0.0.1 && iscsiadm -m node -l   # open-iscsi: /dev/sdX
  blkback iscsi-target --lun 0=ram:1G --allow ALL --portal 0.0.0.0:3260 --advertise 10.0.0.5:3260
  blkback ctl --iscsi list                               # LUNs, sessions, counters
`;

function wholeNumber(text: string, what: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new UsageError(`iscsi-target: ${what} '${text}' is not a whole number in ${min}..${max}`);
  return n;
}

function byteCount(text: string, what: string, min: number, max: number): number {
  const n = parseSize(text, `iscsi-target: ${what}`);
  if (n < min || n > max) throw new UsageError(`iscsi-target: ${what} ${text} must lie in ${min}..${max} bytes`);
  return n;
}

function readSecrets(path: string, mutual: boolean): ChapSecrets {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`iscsi-target: cannot read ${mutual ? '--mutual-chap-file' : '--chap-file'} ${path}: ${(err as Error).message}`);
  }
  return parseChapSecretsFile(text, path, mutual);
}

export const iscsiTargetCommand: Command = {
  name: 'iscsi-target',
  summary: 'serve stores as the LUNs of an iSCSI target (discovery, CHAP, digests, reservations)',
  help,
  async run(argv) {
    const access = takeAllowUidOptions(argv, 'iscsi-target');
    argv = access.rest;
    configureSocketAccess({ allowUids: access.allowUids, log: (line) => void process.stderr.write(`${new Date().toISOString()} ${line}\n`) });
    let tokens;
    let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
    try {
      ({ tokens, values } = parseArgs({
        args: argv,
        allowPositionals: false,
        strict: true,
        tokens: true,
        options: {
          lun: { type: 'string', multiple: true },
          'read-only': { type: 'boolean', multiple: true },
          thin: { type: 'boolean', multiple: true },
          allow: { type: 'string', multiple: true },
          'allow-path': { type: 'string', multiple: true },
          portal: { type: 'string' },
          advertise: { type: 'string' },
          'target-name': { type: 'string' },
          'target-alias': { type: 'string' },
          'chap-file': { type: 'string' },
          'mutual-chap-file': { type: 'string' },
          'control-socket': { type: 'string' },
          'queue-depth': { type: 'string' },
          'max-recv-data-segment-length': { type: 'string' },
          'first-burst-length': { type: 'string' },
          'max-burst-length': { type: 'string' },
          'max-outstanding-r2t': { type: 'string' },
          digest: { type: 'string' },
          'nop-interval': { type: 'string' },
          'nop-timeout': { type: 'string' },
        },
      }));
    } catch (err) {
      throw new UsageError(`iscsi-target: ${(err as Error).message} (see 'blkback iscsi-target --help')`);
    }
    // --read-only and --thin belong to the --lun before them: walk the options in order.
    const luns: { number: number; spec: string; readOnly: boolean; thin: boolean }[] = [];
    for (const t of tokens ?? []) {
      if (t.kind !== 'option') continue;
      if (t.name === 'lun') {
        const text = t.value ?? '';
        const eq = text.indexOf('=');
        if (eq <= 0 || eq === text.length - 1) throw new UsageError(`iscsi-target: --lun '${text}' is not N=SPEC (e.g. --lun 1=file:/srv/disks/a.img)`);
        const number = wholeNumber(text.slice(0, eq), '--lun number', 0, 16383);
        if (luns.some((l) => l.number === number)) throw new UsageError(`iscsi-target: LUN ${number} is given twice`);
        luns.push({ number, spec: text.slice(eq + 1), readOnly: false, thin: false });
      } else if (t.name === 'read-only' || t.name === 'thin') {
        const last = luns[luns.length - 1];
        if (last === undefined) throw new UsageError(`iscsi-target: --${t.name} applies to the --lun before it; give a --lun first`);
        if (t.name === 'read-only') last.readOnly = true;
        else last.thin = true;
      }
    }
    if (luns.length === 0) throw new UsageError("iscsi-target: no LUNs: give at least one --lun N=SPEC (see 'blkback iscsi-target --help')");
    const allowList = (values.allow as string[] | undefined) ?? [];
    if (allowList.length === 0) {
      throw new UsageError('iscsi-target: nobody may log in: give --allow IQN for each initiator (its /etc/iscsi/initiatorname.iscsi), or --allow ALL');
    }
    const allow: ReadonlySet<string> | 'ALL' = allowList.includes('ALL') ? 'ALL' : new Set(allowList);
    const portalText = (values.portal as string | undefined) ?? '127.0.0.1:3260';
    const portal = parsePortal(portalText);
    if (portal === undefined) throw new UsageError(`iscsi-target: --portal '${portalText}' is not HOST:PORT`);
    const advertiseText = values.advertise as string | undefined;
    const advertise = advertiseText === undefined ? undefined : parsePortal(advertiseText);
    if (advertiseText !== undefined && advertise === undefined) throw new UsageError(`iscsi-target: --advertise '${advertiseText}' is not HOST:PORT`);
    const targetName =
      (values['target-name'] as string | undefined) ??
      `${IQN_PREFIX}${hostname()
        .toLowerCase()
        .replace(/[^a-z0-9.-]/g, '-')}`;
    const chapFile = values['chap-file'] as string | undefined;
    const mutualFile = values['mutual-chap-file'] as string | undefined;
    if (mutualFile !== undefined && chapFile === undefined)
      throw new UsageError('iscsi-target: --mutual-chap-file needs --chap-file (mutual CHAP is CHAP both ways)');
    const chap =
      chapFile === undefined
        ? undefined
        : { initiators: readSecrets(chapFile, false), ...(mutualFile === undefined ? {} : { target: readSecrets(mutualFile, true) }) };
    if (chap?.target !== undefined && mutualFile !== undefined) checkMutualSecret(chap.initiators, chap.target, mutualFile);
    const digestText = (values.digest as string | undefined) ?? 'any';
    if (digestText !== 'none' && digestText !== 'crc32c' && digestText !== 'any')
      throw new UsageError(`iscsi-target: --digest '${digestText}' is not none, crc32c or any`);
    const num = (key: string, min: number, max: number): number | undefined => {
      const v = values[key] as string | undefined;
      return v === undefined ? undefined : wholeNumber(v, `--${key}`, min, max);
    };
    const bytes = (key: string, min: number, max: number): number | undefined => {
      const v = values[key] as string | undefined;
      return v === undefined ? undefined : byteCount(v, `--${key}`, min, max);
    };
    const nopInterval = num('nop-interval', 0, 3600);
    const nopTimeout = num('nop-timeout', 1, 3600);
    const lunSpecs: LunSpec[] = luns.map((l) => ({ lun: l.number, spec: l.spec, readOnly: l.readOnly, thin: l.thin }));
    const log = (line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`);

    const running = await startIscsiTarget({
      portal,
      ...(advertise === undefined ? {} : { advertise }),
      targetName,
      ...(values['target-alias'] === undefined ? {} : { targetAlias: values['target-alias'] as string }),
      luns: lunSpecs,
      allow,
      allowPaths: (values['allow-path'] as string[] | undefined) ?? [],
      ...(chap === undefined ? {} : { chap }),
      digest: digestText,
      ...optional('queueDepth', num('queue-depth', 1, 4096)),
      ...optional('maxRecvDataSegmentLength', bytes('max-recv-data-segment-length', 512, (1 << 24) - 1)),
      ...optional('firstBurstLength', bytes('first-burst-length', 512, (1 << 24) - 1)),
      ...optional('maxBurstLength', bytes('max-burst-length', 512, (1 << 24) - 1)),
      ...optional('maxOutstandingR2T', num('max-outstanding-r2t', 1, 65535)),
      ...optional('nopIntervalMs', nopInterval === undefined ? undefined : nopInterval * 1000),
      ...optional('nopTimeoutMs', nopTimeout === undefined ? undefined : nopTimeout * 1000),
      log,
    });
    let control;
    try {
      control = await serveControl(iscsiControlTarget(running.target, running.portal, running.deviceServer, running.luns), {
        path: (values['control-socket'] as string | undefined) ?? defaultControlSocket(process.env, process.getuid?.() ?? 0, ISCSI_TARGET_SOCKET_NAME),
        log,
      });
    } catch (err) {
      await running.close();
      throw err;
    }
    log(
      `iscsi-target: ${targetName} listening on ${formatPortal(running.portal)}${advertise === undefined ? '' : ` (advertised as ${formatPortal(advertise)})`}; ` +
        `${running.describeLuns()}; allowed: ${allow === 'ALL' ? 'ALL' : [...allow].join(', ')}${chap === undefined ? '' : '; CHAP required'}; control socket ${control.path}`,
    );
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    log(`iscsi-target: ${signal}: closing sessions`);
    const force = (): void => {
      log('iscsi-target: second signal: exiting at once');
      process.exit(1);
    };
    process.once('SIGINT', force);
    process.once('SIGTERM', force);
    await control.close();
    await running.close();
    log('iscsi-target: stopped');
    return 0;
  },
};

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
