// The yardstick: the kernel block path, measured by real fio (libaio, O_DIRECT) on a loop device
// with direct I/O over a file in /dev/shm, as in docs/perf-baselines.md §1. Needs root and fio;
// `available()` says why not otherwise.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import type { Spawner } from './spawner.ts';

export interface KernelResult {
  iops: number;
  mbps: number;
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
    const args = [
      '--name=kernel',
      `--filename=${this.device}`,
      '--ioengine=libaio',
      '--direct=1',
      `--rw=${rw}`,
      `--bs=${bs}`,
      `--iodepth=${iodepth}`,
      `--runtime=${seconds}`,
      '--time_based=1',
      '--randrepeat=0',
      '--norandommap=1',
      '--output-format=json',
    ];
    const stdout = await this.#spawner.check('fio', args);
    const json = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { read: FioDir; write: FioDir }[] };
    const job = json.jobs[0]!;
    const dir = rw.includes('read') ? job.read : job.write;
    return { iops: dir.iops, mbps: dir.bw_bytes / 1e6 };
  }

  async close(): Promise<void> {
    await this.#spawner.run('losetup', ['-d', this.device]);
    rmSync(this.#image, { force: true });
  }
}

interface FioDir {
  iops: number;
  bw_bytes: number;
}
