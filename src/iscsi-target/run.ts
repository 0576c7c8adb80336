// Starting a whole target from options: open the LUNs' stores (under the path policy), put a SCSI
// device server over them, listen on the portal, serve the control socket. What the CLI, the
// benchmarks and the test rigs call.
import { createHash } from 'node:crypto';
import type { BlockDevice } from '../block/types.ts';
import { openStoreUnderPolicy, resolvePathPolicy } from '../stores/path-policy.ts';
import { ScsiDeviceServer } from '../scsi/device-server.ts';
import type { LogicalUnitOptions } from '../scsi/logical-unit.ts';
import type { ChapSecrets } from '../iscsi/chap.ts';
import { defaultOffer } from '../iscsi/negotiation.ts';
import type { NegotiationOffer } from '../iscsi/negotiation.ts';
import { IscsiTarget, TARGET_DEFAULTS } from './target.ts';
import { listenIscsi, formatPortal } from './server.ts';
import type { Portal } from './server.ts';
import type { ScsiBackend } from './session.ts';
import type { ItNexus } from '../scsi/types.ts';

export const IQN_PREFIX = 'iqn.2026-12.org.blkback:';

export interface LunSpec {
  readonly lun: number;
  /** A store spec (ram:1G, file:PATH, phy:PATH, PATH) or an opened device. */
  readonly spec: string;
  readonly readOnly?: boolean;
  readonly thin?: boolean;
}

export interface StartIscsiTargetOptions {
  readonly portal: Portal;
  readonly advertise?: Portal;
  readonly targetName: string;
  readonly targetAlias?: string;
  readonly luns: readonly LunSpec[];
  readonly allow: ReadonlySet<string> | 'ALL';
  readonly allowPaths: readonly string[];
  readonly chap?: { readonly initiators: ChapSecrets; readonly target?: ChapSecrets };
  readonly digest?: 'none' | 'crc32c' | 'any';
  readonly queueDepth?: number;
  readonly maxRecvDataSegmentLength?: number;
  readonly firstBurstLength?: number;
  readonly maxBurstLength?: number;
  readonly maxOutstandingR2T?: number;
  readonly nopIntervalMs?: number;
  readonly nopTimeoutMs?: number;
  readonly loginTimeoutMs?: number;
  readonly maxConnections?: number;
  readonly log?: (line: string) => void;
  /** Opens a store (tests inject devices); default: openStoreUnderPolicy with allowPaths. */
  readonly openStore?: (spec: LunSpec) => Promise<BlockDevice>;
}

export interface RunningIscsiTarget {
  readonly target: IscsiTarget;
  readonly portal: Portal;
  readonly deviceServer: ScsiDeviceServer;
  readonly devices: ReadonlyMap<number, BlockDevice>;
  readonly luns: ReadonlyMap<number, LunSpec>;
  describeLuns(): string;
  close(): Promise<void>;
}

/** A stable NAA designator and serial per target and LUN (the same every start, so multipath agrees). */
export function lunIdentity(targetName: string, lun: number): { deviceId: Uint8Array; serial: string } {
  const digest = createHash('sha256').update(`${targetName.toLowerCase()}\0${lun}`).digest();
  const id = Buffer.from(digest.subarray(0, 8));
  // NAA 3 (locally assigned, SPC-4 §7.8.6.6.4): the top nibble is the NAA type
  id[0] = 0x30 | ((id[0] as number) & 0x0f);
  return { deviceId: id, serial: digest.subarray(8, 16).toString('hex') };
}

export async function startIscsiTarget(o: StartIscsiTargetOptions): Promise<RunningIscsiTarget> {
  const log = o.log ?? (() => undefined);
  const devices = new Map<number, BlockDevice>();
  const specs = new Map<number, LunSpec>();
  const policy = o.openStore === undefined ? await resolvePathPolicy(o.allowPaths) : undefined;
  const open = o.openStore ?? ((l: LunSpec) => openStoreUnderPolicy(l.spec, policy!, { readOnly: l.readOnly ?? false }));
  const closeDevices = async (): Promise<void> => {
    for (const d of devices.values()) await d.close().catch(() => undefined);
  };
  try {
    for (const l of o.luns) {
      const device = await open(l);
      devices.set(l.lun, device);
      specs.set(l.lun, l);
      if (l.thin === true && !device.info.canDiscard) {
        log(`iscsi-target: LUN ${l.lun} (${l.spec}) is --thin but its store cannot discard: UNMAP will fail`);
      }
    }
  } catch (err) {
    await closeDevices();
    throw err;
  }
  const luns = new Map<number, LogicalUnitOptions>();
  for (const [n, device] of devices) {
    const l = specs.get(n) as LunSpec;
    luns.set(n, { device, readOnly: l.readOnly === true || device.info.readOnly, thin: l.thin === true, ...lunIdentity(o.targetName, n) });
  }
  // PREEMPT AND ABORT ends the preempted nexuses' tasks on that LUN (SPC-4 §5.14.12.3).
  let onPreemptAndAbort = (_lun: number, _nexuses: readonly ItNexus[]): void => undefined;
  const deviceServer = new ScsiDeviceServer({ luns, targetName: o.targetName, onPreemptAndAbort: (lun, nexuses) => onPreemptAndAbort(lun, nexuses) });
  const backend: ScsiBackend = {
    execute: (task) => deviceServer.execute(task),
    hasLun: (lun) => luns.has(lun),
    reset: (kind, lun, by) => deviceServer.reset(kind, lun, by),
    nexusLost: (nexus) => deviceServer.nexusLost(nexus),
  };
  const offer: NegotiationOffer = defaultOffer({
    ...(o.maxRecvDataSegmentLength === undefined ? {} : { maxRecvDataSegmentLength: o.maxRecvDataSegmentLength }),
    ...(o.firstBurstLength === undefined ? {} : { firstBurstLength: o.firstBurstLength }),
    ...(o.maxBurstLength === undefined ? {} : { maxBurstLength: o.maxBurstLength }),
    ...(o.maxOutstandingR2T === undefined ? {} : { maxOutstandingR2T: o.maxOutstandingR2T }),
    digest: o.digest ?? 'any',
    ...(o.targetAlias === undefined ? {} : { targetAlias: o.targetAlias }),
  });
  const target = new IscsiTarget(
    {
      targetName: o.targetName,
      ...(o.targetAlias === undefined ? {} : { targetAlias: o.targetAlias }),
      portalGroupTag: TARGET_DEFAULTS.portalGroupTag,
      advertise: formatPortal(o.advertise ?? o.portal),
      allow: o.allow,
      ...(o.chap === undefined ? {} : { chap: { initiators: o.chap.initiators, ...(o.chap.target === undefined ? {} : { target: o.chap.target }) } }),
      offer,
      queueDepth: o.queueDepth ?? TARGET_DEFAULTS.queueDepth,
      nopIntervalMs: o.nopIntervalMs ?? TARGET_DEFAULTS.nopIntervalMs,
      nopTimeoutMs: o.nopTimeoutMs ?? TARGET_DEFAULTS.nopTimeoutMs,
      loginTimeoutMs: o.loginTimeoutMs ?? TARGET_DEFAULTS.loginTimeoutMs,
      timerTickMs: TARGET_DEFAULTS.timerTickMs,
      maxConnections: o.maxConnections ?? TARGET_DEFAULTS.maxConnections,
      maxSessions: TARGET_DEFAULTS.maxSessions,
    },
    backend,
    log,
  );
  onPreemptAndAbort = (lun, nexuses) => {
    const keys = new Set(nexuses.map((n) => n.key));
    for (const s of target.sessions) if (keys.has(s.nexus.key)) void s.abortTasks((t) => t.lun === lun);
  };
  let server;
  try {
    server = await listenIscsi(target, o.portal);
  } catch (err) {
    await closeDevices();
    const e = err as NodeJS.ErrnoException;
    const hint =
      e.code === 'EADDRINUSE'
        ? ' (another target, tgtd or LIO, is listening there: stop it or give another --portal)'
        : e.code === 'EACCES'
          ? ' (ports below 1024 need root)'
          : '';
    throw Object.assign(new Error(`cannot listen on ${formatPortal(o.portal)}: ${e.message}${hint}`), { code: e.code });
  }
  let closing: Promise<void> | undefined;
  return {
    target,
    portal: server.portal,
    deviceServer,
    devices,
    luns: specs,
    describeLuns() {
      return [...devices.entries()]
        .map(([n, d]) => {
          const l = specs.get(n) as LunSpec;
          const flags = [l.readOnly === true ? 'read-only' : '', l.thin === true ? 'thin' : ''].filter((f) => f !== '').join(',');
          return `LUN ${n} = ${d.name} (${d.info.size} bytes${flags === '' ? '' : `, ${flags}`})`;
        })
        .join(', ');
    },
    close() {
      closing ??= (async () => {
        await server.close();
        await deviceServer.close();
        await closeDevices();
      })();
      return closing;
    },
  };
}
