// The library's public surface: factories, types and errors. Everything else is internal.
export { BlockError, UsageError, Errno } from './internal/errors.ts';
export type { BlockDevice, BlockDeviceInfo } from './block/types.ts';
export { WRITE_FUA } from './block/types.ts';
export { createRamDisk } from './block/ram.ts';
export { createNullDisk } from './block/null.ts';
export { openFileDisk } from './block/file.ts';
export { openDirectDisk } from './block/direct.ts';
export { createVolatileCache } from './block/volatile-cache.ts';
export { openBlockDevice } from './stores/open.ts';

export type * from './hypervisor/types.ts';
export { SimHypervisor, attachGuest } from './hypervisor/sim/index.ts';
export { XenstoreDaemon, XsClient, connectInProcess, connectUnix, clientFromPort } from './xenstore/index.ts';

export { Blkback } from './blkback/blkback.ts';
export type { BlkbackOptions } from './blkback/blkback.ts';
export type { DeviceOpener, OpenedDevice } from './blkback/vbd.ts';
export { Blkfront } from './blkfront/blkfront.ts';
export type { BlkfrontOptions } from './blkfront/blkfront.ts';
export { SimHost } from './sim-host/host.ts';
export type { GuestConfig, GuestDisk, GuestRun, HostOptions } from './sim-host/host.ts';
export type { GuestContext, GuestWorkload } from './guest/context.ts';

export { parseXlConfig } from './config/xl-cfg.ts';
export { parseXlDiskSpec, vdevToDeviceId, deviceIdToVdev } from './config/xl-disk.ts';

export { parseJobFiles, expandClones } from './fio/jobfile/index.ts';
export { runJobs } from './fio/engine/index.ts';
export { formatNormal, formatJson, formatTerse, stringifyFioJson } from './fio/output/index.ts';
export { runFio } from './fio/session.ts';
export type { FioJob, ParsedJobs } from './fio/job.ts';
export type { JobResult } from './fio/stats.ts';
