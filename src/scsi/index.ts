// The SCSI device server's public surface for transports (the iSCSI target today).
export { ScsiDeviceServer } from './device-server.ts';
export type { ScsiDeviceServerOptions, LogicalUnitOptions, LogicalUnitStats } from './device-server.ts';
export { encodeLun, decodeLun, MAX_LUN } from './lun.ts';
export { ScsiStatus, SenseKey, Asc } from './constants.ts';
export { TaskAttribute } from './types.ts';
export type { ItNexus, ScsiTask, ScsiResult, ResetKind } from './types.ts';
