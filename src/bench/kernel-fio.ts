// The yardstick: the kernel block path, measured by real fio (libaio, O_DIRECT) on a loop device
// with direct I/O over a file in /dev/shm (docs/benchmarks.md §3). Needs root and fio;
// `unavailable()` says why not otherwise.
//
// Equal accounting: the paths it is set against (runRandomIo: the blkif suite's guest and bare, the
// aio suite's engines) count completions and read the clock only to see the deadline. fio by default
// reads it two or three times per I/O to keep slat, clat and lat histograms; --gtod_reduce=1 turns
// all of that off (fio then reports IOPS and bandwidth only), so neither side pays for bookkeeping
// the other does not do.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { fioRuntime } from '../reproduce/fio-runtime.ts';
import type { Spawner } from './spawner.ts';

export interface KernelResult {
  iops: number;
  mbps: number;
  /** Completion latencies fio recorded: 0 under --gtod_reduce=1, which the bench reports check. */
  latencySamples: number;
}

/** What the kernel path's fio accounts for, for the bench reports. */
export const KERNEL_FIO_ACCOUNTING = 'fio --gtod_reduce=1: completions counted, no per-I/O latency (as our runRandomIo paths)';

/** fio's arguments for one run on `device`. */
export function kernelFioArgs(device: string, rw: string, bs: number, iodepth: number, seconds: number): string[] {
  return [
    '--name=kernel',
    `--filename=${device}`,
    '--ioengine=libaio',
    '--direct=1',
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--iodepth=${iodepth}`,
    `--runtime=${fioRuntime(seconds)}`,
    '--time_based=1',
    '--randrepeat=0',
    '--norandommap=1',
    '--gtod_reduce=1',
    '--output-format=json',
  ];
}

export class KernelPath {
  readonly device: string;
  readonly #image: string;
  readonly #spawner: Spawner;

  private constructor(device: string, image: string, spawner: Spawner) {
    this.device = device;
    this.#image = image;
    this.#spawner = spawner;
  }

  /** Why the kernel path cannot be measured here, or null when it can. */
  static unavailable(): string | null {
    if (process.getuid?.() !== 0) return 'not root (a loop device is needed)';
    try {
      execFileSync('fio', ['--version'], { stdio: 'ignore' });
    } catch {
      return 'fio is not installed';
    }
    try {
      execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    } catch {
      return 'losetup is not installed';
    }
    return null;
  }

  /** Creates a /dev/shm file of `bytes` random bytes and a direct-I/O loop device over it. */
  static async create(bytes: number, spawner: Spawner): Promise<KernelPath> {
    const image = `/dev/shm/blkback-bench-${process.pid}.img`;
    const fd = openSync(image, 'w');
    try {
      const chunk = Buffer.alloc(1 << 20);
      for (let at = 0; at < bytes; at += chunk.length) {
        randomFillSync(chunk);
        writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - at));
      }
    } finally {
      closeSync(fd);
    }
    try {
      const stdout = await spawner.check('losetup', ['--direct-io=on', '-f', '--show', image]);
      return new KernelPath(stdout.trim(), image, spawner);
    } catch (err) {
      rmSync(image, { force: true });
      throw err;
    }
  }

  async measure(rw: string, bs: number, iodepth: number, seconds: number): Promise<KernelResult> {
    const stdout = await this.#spawner.check('fio', kernelFioArgs(this.device, rw, bs, iodepth, seconds));
    const json = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { read: FioDir; write: FioDir }[] };
    const job = json.jobs[0]!;
    const dir = rw.includes('read') ? job.read : job.write;
    return { iops: dir.iops, mbps: dir.bw_bytes / 1e6, latencySamples: dir.clat_ns?.N ?? 0 };
  }

  async close(): Promise<void> {
    await this.#spawner.run('losetup', ['-d', this.device]);
    rmSync(this.#image, { force: true });
  }
}

interface FioDir {
  iops: number;
  bw_bytes: number;
  clat_ns?: { N: number };
}
