// What part of the device a job works on and with which block sizes: fio's file_offset/io_size
// and the per-direction min/max block size and alignment (init.c, filesetup.c). Pure.
import type { Ddir, FioJob, PerDdir } from '../job.ts';

export interface JobGeometry {
  /** First byte of the job's region on the device. */
  readonly start: number;
  /** Bytes in the region (size, clamped to the device end). */
  readonly bytes: number;
  readonly minBs: PerDdir<number>;
  readonly maxBs: PerDdir<number>;
  /** Random offsets are multiples of this (blockalign, default the direction's minimum block size). */
  readonly align: PerDdir<number>;
  /** Directions the workload issues (before any verify phase). */
  readonly ddirs: readonly Ddir[];
  readonly random: boolean;
  /** The random map is kept (random I/O, uniform distribution, no norandommap or blockalign). */
  readonly useMap: boolean;
  /** Unit of the random map: the smallest block size of the directions in use (fio's rw_min_bs). */
  readonly mapUnit: number;
  /** The largest block any direction can use: the size of each depth slot's buffer. */
  readonly bufferBytes: number;
  /** Bytes to transfer per loop: io_size, else the region. */
  readonly target: number;
  /** The region runs to the end of the device (a sequential `:N` stream then wraps instead of ending). */
  readonly toDeviceEnd: boolean;
}

export function modeDirs(rw: FioJob['rw']): readonly Ddir[] {
  switch (rw) {
    case 'read':
    case 'randread':
      return [0];
    case 'write':
    case 'randwrite':
      return [1];
    case 'trim':
    case 'randtrim':
      return [2];
    case 'rw':
    case 'randrw':
      return [0, 1];
    case 'trimwrite':
    case 'randtrimwrite':
      return [2, 1];
  }
}

export function isRandomMode(rw: FioJob['rw']): boolean {
  return rw.startsWith('rand');
}

/** Block size bounds of one direction: bssplit entries, else bsrange, else bs. */
export function bsBounds(job: FioJob, d: Ddir): [number, number] {
  const split = job.bssplit[d];
  if (split.length > 0) {
    let lo = Number.POSITIVE_INFINITY;
    let hi = 0;
    for (const e of split) {
      if (e.perc <= 0) continue;
      lo = Math.min(lo, e.bs);
      hi = Math.max(hi, e.bs);
    }
    if (hi > 0) return [lo, hi];
  }
  const lo = job.bsMin[d];
  const hi = job.bsMax[d];
  if (lo > 0 && hi > 0 && lo !== hi) return [Math.min(lo, hi), Math.max(lo, hi)];
  return [job.bs[d], job.bs[d]];
}

export function jobGeometry(job: FioJob, deviceSize: number): JobGeometry {
  // Byte offsets (with offset_increment x clone index) arrive resolved in job.offset; percentages
  // need the device size, so they are resolved here, aligned down to the smallest block as fio does.
  const alignTo = Math.max(1, Math.min(...[0, 1, 2].map((d) => bsBounds(job, d as Ddir)[0]).filter((b) => b > 0)));
  const pct = (p: number): number => Math.floor((deviceSize * p) / 100 / alignTo) * alignTo;
  let start = job.offset;
  if (job.offsetPercent > 0) start += pct(job.offsetPercent);
  if (job.offsetIncrementPercent > 0) start += job.cloneIndex * pct(job.offsetIncrementPercent);
  if (start > deviceSize) start = deviceSize;
  let bytes = job.size > 0 ? job.size : job.sizePercent > 0 ? Math.floor((deviceSize * job.sizePercent) / 100) : deviceSize - start;
  if (start + bytes > deviceSize) bytes = deviceSize - start;

  const ddirs = modeDirs(job.rw);
  const minBs: [number, number, number] = [0, 0, 0];
  const maxBs: [number, number, number] = [0, 0, 0];
  const align: [number, number, number] = [0, 0, 0];
  for (const d of [0, 1, 2] as const) {
    const [lo, hi] = bsBounds(job, d);
    minBs[d] = lo;
    maxBs[d] = hi;
    align[d] = job.blockalign[d] > 0 ? job.blockalign[d] : lo;
  }
  let mapUnit = Number.POSITIVE_INFINITY;
  for (const d of ddirs) mapUnit = Math.min(mapUnit, minBs[d]);
  let bufferBytes = 0;
  for (const d of ddirs) bufferBytes = Math.max(bufferBytes, maxBs[d]);
  // A verify phase reads back with the write sizes, which the buffer already covers.
  const random = isRandomMode(job.rw);
  // fio turns the map off for any use of blockalign ("Any use of blockalign= turns off randommap").
  const baSet = 'ba' in job.options || 'blockalign' in job.options || ddirs.some((d) => job.blockalign[d] > 0 && job.blockalign[d] !== minBs[d]);
  const useMap = random && !job.norandommap && job.randomDistribution.kind === 'random' && !baSet;
  const target = job.ioSize > 0 ? job.ioSize : job.ioSizePercent > 0 ? pct(job.ioSizePercent) : bytes;
  return { start, bytes, minBs, maxBs, align, ddirs, random, useMap, mapUnit, bufferBytes, target, toDeviceEnd: start + bytes >= deviceSize };
}
