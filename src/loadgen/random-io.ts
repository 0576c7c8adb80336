// A fixed random-I/O load for the benchmark: `iodepth` I/Os of `bs` bytes kept in flight at random
// block-aligned offsets for `seconds`, counting completions. Runs on any BlockDevice.
import type { BlockDevice } from '../block/types.ts';
import { Rng } from './pattern.ts';
import type { BufferAllocator } from './verify.ts';

export interface RandomIoParams {
  readonly rw: 'randread' | 'randwrite';
  readonly bs: number;
  readonly iodepth: number;
  readonly seconds: number;
  /** Bytes of the disk to spread I/O over (default: all of it). */
  readonly span?: number;
  readonly seed?: number;
}

export interface RandomIoResult {
  ios: number;
  bytes: number;
  elapsedMs: number;
  iops: number;
  mbps: number;
}

export async function runRandomIo(device: BlockDevice, allocate: BufferAllocator, params: RandomIoParams): Promise<RandomIoResult> {
  const span = Math.min(params.span ?? device.info.size, device.info.size);
  const slots = Math.floor(span / params.bs);
  if (slots < 1) throw new Error(`random I/O: ${params.bs}-byte blocks do not fit in ${span} bytes`);
  const rng = new Rng(params.seed ?? 7);
  const write = params.rw === 'randwrite';
  const deadline = performance.now() + params.seconds * 1000;
  let ios = 0;
  const started = performance.now();
  const lane = async (): Promise<void> => {
    const iov = [allocate(params.bs).subarray(0, params.bs)];
    if (write) iov[0]!.fill(0x5a);
    while (performance.now() < deadline) {
      const offset = rng.below(slots) * params.bs;
      await (write ? device.writev(offset, iov) : device.readv(offset, iov));
      ios++;
    }
  };
  await Promise.all(Array.from({ length: params.iodepth }, () => lane()));
  const elapsedMs = performance.now() - started;
  const bytes = ios * params.bs;
  return { ios, bytes, elapsedMs, iops: (ios * 1000) / elapsedMs, mbps: bytes / 1e6 / (elapsedMs / 1000) };
}
