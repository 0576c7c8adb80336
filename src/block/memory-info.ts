// The description of a disk that lives in this process's memory (RAM, null): no volatile cache,
// every operation supported, any buffer alignment.
import type { BlockDeviceInfo } from './types.ts';

export function memoryDiskInfo(size: number, logicalBlockSize: number, readOnly: boolean): BlockDeviceInfo {
  return {
    size,
    logicalBlockSize,
    physicalBlockSize: logicalBlockSize,
    readOnly,
    volatileCache: false,
    canFlush: true,
    canFua: true,
    canDiscard: true,
    canWriteZeroes: true,
    discardGranularity: logicalBlockSize,
    bufferAlignment: 1,
    discardZeroes: true,
  };
}
