// The control target of a running iSCSI target: `blkback ctl list` and `ctl stats` show its LUNs,
// sessions and counters; attach, detach and resize belong to the block backend and are refused.
import type { IscsiTarget } from '../iscsi-target/target.ts';
import type { Portal } from '../iscsi-target/server.ts';
import { formatPortal } from '../iscsi-target/server.ts';
import type { LunSpec } from '../iscsi-target/run.ts';
import type { ScsiDeviceServer } from '../scsi/device-server.ts';
import { ControlError } from './protocol.ts';
import type { ControlTarget, IscsiTargetStatus } from './target.ts';

export function iscsiControlTarget(target: IscsiTarget, portal: Portal, deviceServer: ScsiDeviceServer, luns: ReadonlyMap<number, LunSpec>): ControlTarget {
  const refuse = (op: string): Promise<never> =>
    Promise.reject(
      new ControlError(
        'CTL_ERR_UNSUPPORTED',
        `${op} is for a block backend (blkback serve or run); this is an iSCSI target: use 'blkback ctl list' or 'ctl stats'`,
      ),
    );
  const status = async (): Promise<IscsiTargetStatus> => {
    const cfg = target.config;
    const lunCounters = new Map(deviceServer.stats().map((st) => [st.lun, st]));
    return {
      targetName: cfg.targetName,
      portal: formatPortal(portal),
      advertise: cfg.advertise,
      allow: cfg.allow === 'ALL' ? 'ALL' : [...cfg.allow].sort(),
      chap: cfg.chap === undefined ? 'none' : cfg.chap.target === undefined ? 'one-way' : 'mutual',
      luns: [...luns.values()]
        .sort((a, b) => a.lun - b.lun)
        .map((l) => {
          const device = deviceServer.unit(l.lun)?.device;
          const st = lunCounters.get(l.lun);
          const counters: Record<string, number> = {};
          if (st !== undefined) {
            for (const [k, v] of Object.entries(st)) if (typeof v === 'number' && k !== 'lun') counters[k] = v;
            for (const [k, v] of Object.entries(st.errors)) counters[`errors.${k}`] = v;
          }
          return {
            lun: l.lun,
            store: device?.name ?? l.spec,
            size: device?.info.size ?? 0,
            blockSize: device?.info.logicalBlockSize ?? 512,
            readOnly: l.readOnly === true || device?.info.readOnly === true,
            thin: l.thin === true,
            counters,
          };
        }),
      sessions: target.sessions.map((s) => ({
        tsih: s.tsih,
        initiatorName: s.nexus.initiatorName,
        isid: Buffer.from(s.isid).toString('hex'),
        type: s.sessionType,
        since: new Date(s.startedAt).toISOString(),
        commands: s.commands,
        bytesRead: s.bytesRead,
        bytesWritten: s.bytesWritten,
        tasksInFlight: s.tasksInFlight,
        parameters: {
          MaxRecvDataSegmentLength: s.params.maxRecvDataSegmentLength,
          MaxXmitDataSegmentLength: s.params.maxXmitDataSegmentLength,
          FirstBurstLength: s.params.firstBurstLength,
          MaxBurstLength: s.params.maxBurstLength,
          MaxOutstandingR2T: s.params.maxOutstandingR2T,
          ImmediateData: s.params.immediateData ? 'Yes' : 'No',
          InitialR2T: s.params.initialR2T ? 'Yes' : 'No',
        },
      })),
      connections: target.connectionCount,
      counters: { ...target.counters },
    };
  };
  return {
    list: () => refuse('list of disks'),
    stats: () => refuse('disk statistics'),
    attach: () => refuse('attach'),
    detach: () => refuse('detach'),
    resize: () => refuse('resize'),
    info: () => Promise.resolve({ service: 'iscsi-target' }),
    iscsiStatus: status,
  };
}
