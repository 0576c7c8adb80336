// Debian's tgtd as a reference target for the iSCSI tests. The runner itself lives in
// src/bench/iscsi-tgt.ts, because `blkback bench --suite iscsi` starts it too (src never imports test).
export { startTgt, tgtUnavailable } from '../../src/bench/iscsi-tgt.ts';
export type { TgtTarget } from '../../src/bench/iscsi-tgt.ts';
export { createLunFile, freePort, processCpuSeconds, startBlkbackTarget } from '../../src/bench/iscsi-target.ts';
export type { IscsiTargetOptions, LunMode, RunningTarget, StartTarget } from '../../src/bench/iscsi-target.ts';
