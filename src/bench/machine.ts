// What machine a benchmark ran on, so its figures can be read (and compared only with care).
import { cpus, freemem, loadavg, release, totalmem } from 'node:os';

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  loadAverage: number[];
  freeMemoryGiB: number;
}

export function machineInfo(): MachineInfo {
  const list = cpus();
  return {
    cpu: list[0]?.model.trim() ?? 'unknown',
    cores: list.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
    freeMemoryGiB: Math.round((freemem() / 2 ** 30) * 10) / 10,
  };
}
