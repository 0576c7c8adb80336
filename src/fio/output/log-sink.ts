// fio's per-job log files (write_bw_log, write_lat_log, write_iops_log) in fio 3.33's names and
// columns (init.c gen_log_name, iolog.c flush_samples):
//   <prefix>_<type>.<thread_number>.log   or, with per_job_logs=0, <prefix>_<type>.log shared by all
//   rows "time, value, ddir, bs[, offset], prio"  e.g. "500, 332760, 1, 0, 0"
// fio keeps samples in memory and writes them when the job ends; we stream them to disk as they come
// (buffered, asynchronous) so a long per-I/O log never grows the heap. Works in a worker thread.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FioJob, Ddir } from '../job.ts';
import { BlockError, Errno } from '../../internal/errors.ts';

export type LogKind = 'bw' | 'iops' | 'lat' | 'slat' | 'clat';

/** Where the engine sends log rows; `value` is KiB/s for windowed bw, I/Os (per second) for iops, ns for latencies. */
export interface LogSink {
  row(kind: LogKind, timeMs: number, value: number, ddir: Ddir, bs: number, offset: number): void;
  close(): Promise<void>;
}

/** init.c make_log_name: the option's value, or the job name for a bare key. */
function prefixOf(value: string, job: FioJob): string {
  return value !== '' ? value : job.name;
}

/** File names fio 3.33 gives a job's logs, by kind (only the enabled kinds). */
export function logFileNames(job: FioJob): Partial<Record<LogKind, string>> {
  const name = (prefix: string, type: LogKind) => (job.perJobLogs ? `${prefix}_${type}.${job.threadNumber}.log` : `${prefix}_${type}.log`);
  const out: Partial<Record<LogKind, string>> = {};
  if (job.writeBwLog !== null) out.bw = name(prefixOf(job.writeBwLog, job), 'bw');
  if (job.writeLatLog !== null) {
    const p = prefixOf(job.writeLatLog, job);
    out.lat = name(p, 'lat');
    out.slat = name(p, 'slat');
    out.clat = name(p, 'clat');
  }
  if (job.writeIopsLog !== null) out.iops = name(prefixOf(job.writeIopsLog, job), 'iops');
  return out;
}

/** One row as fio prints it. prio is 0 (not the RT class) or, with log_prio, the raw ioprio in hex. */
export function formatLogRow(timeMs: number, value: number, ddir: Ddir, bs: number, offset: number | null, logPrio: boolean): string {
  const prio = logPrio ? '0x0000' : '0';
  const head = `${Math.max(0, Math.trunc(timeMs))}, ${Math.trunc(value)}, ${ddir}, ${Math.trunc(bs)}`;
  return offset === null ? `${head}, ${prio}\n` : `${head}, ${Math.trunc(offset)}, ${prio}\n`;
}

const FLUSH_BYTES = 64 * 1024;
/** Room for one row past FLUSH_BYTES: five numbers (at most 24 characters each, as String() prints them), separators, prio. */
const ROW_MAX = 256;
/** Past this much data queued for the disk, writes go synchronous: memory stays bounded. */
const MAX_IN_FLIGHT = 8 * 1024 * 1024;

const COMMA_SPACE = 0x2c20; // ", " as a big-endian pair
const ZERO = 0x30;

/**
 * An append-only log file written in the background. Rows are formatted as ASCII straight into a
 * byte buffer: a per-I/O lat log makes three rows per I/O, and building them as strings cost a
 * sixth of the runner's CPU on the seed's iometer job (string concatenation, flattening, garbage).
 */
class BufferedFile {
  readonly path: string;
  readonly #fd: number;
  #buf = Buffer.allocUnsafe(FLUSH_BYTES + ROW_MAX);
  #len = 0;
  #inFlight = 0;
  #pos = 0;
  #chain: Promise<void> = Promise.resolve();
  #error: unknown = null;

  constructor(file: string, flags: string) {
    this.path = file;
    try {
      this.#fd = fs.openSync(file, flags, 0o644);
    } catch (e) {
      throw new BlockError('BLK_ERR_FIO_LOG', `cannot open fio log ${file}: ${(e as Error).message}`, { errno: Errno.EIO, cause: e });
    }
  }

  /** One row, byte for byte what formatLogRow gives. */
  writeRow(timeMs: number, value: number, ddir: number, bs: number, offset: number | null, logPrio: boolean): void {
    this.#int(Math.max(0, Math.trunc(timeMs)));
    this.#sep();
    this.#int(Math.trunc(value));
    this.#sep();
    this.#int(ddir);
    this.#sep();
    this.#int(Math.trunc(bs));
    this.#sep();
    if (offset !== null) {
      this.#int(Math.trunc(offset));
      this.#sep();
    }
    const b = this.#buf;
    if (logPrio) {
      b[this.#len++] = ZERO;
      b[this.#len++] = 0x78; // x
      for (let i = 0; i < 4; i++) b[this.#len++] = ZERO;
    } else b[this.#len++] = ZERO;
    b[this.#len++] = 0x0a;
    if (this.#len >= FLUSH_BYTES) this.#flush();
  }

  #sep(): void {
    this.#buf.writeUInt16BE(COMMA_SPACE, this.#len);
    this.#len += 2;
  }

  /** A whole number in decimal, as `${n}` prints it (a minus sign, no exponent below 2^53). */
  #int(n: number): void {
    const b = this.#buf;
    if (n < 0) {
      b[this.#len++] = 0x2d;
      n = -n;
    }
    if (n < 10) {
      b[this.#len++] = ZERO + n;
      return;
    }
    if (!(n <= Number.MAX_SAFE_INTEGER)) {
      this.#len += b.write(String(n), this.#len, 'latin1'); // exponent form, NaN: as a string would
      return;
    }
    if (n < 0x7fffffff) {
      this.#small(n, 0);
      return;
    }
    // Split where int32 arithmetic is exact: n = hi * 10^9 + lo (the float division may round up).
    let hi = Math.floor(n / 1e9);
    let lo = n - hi * 1e9;
    if (lo < 0) {
      hi--;
      lo += 1e9;
    } else if (lo >= 1e9) {
      hi++;
      lo -= 1e9;
    }
    this.#small(hi, 0);
    this.#small(lo, 9);
  }

  /** 0 <= v < 2^31, at least `width` digits (zero-padded). */
  #small(v: number, width: number): void {
    const b = this.#buf;
    let digits = 1;
    for (let p = 10; p <= v; p *= 10) digits++;
    if (digits < width) digits = width;
    let at = this.#len + digits;
    this.#len = at;
    for (let i = 0; i < digits; i++) {
      const q = (v / 10) | 0;
      b[--at] = ZERO + v - q * 10;
      v = q;
    }
  }

  #flush(): void {
    if (this.#len === 0) return;
    const data = this.#buf.subarray(0, this.#len);
    this.#buf = Buffer.allocUnsafe(FLUSH_BYTES + ROW_MAX);
    this.#len = 0;
    // Every chunk has its own file position, so a synchronous write may overtake queued ones safely.
    const pos = this.#pos;
    this.#pos += data.length;
    if (this.#inFlight + data.length > MAX_IN_FLIGHT) {
      this.#writeSync(data, pos);
      return;
    }
    this.#inFlight += data.length;
    this.#chain = this.#chain.then(async () => {
      await this.#writeAll(data, pos);
      this.#inFlight -= data.length;
    });
  }

  #writeSync(data: Buffer, pos: number): void {
    if (this.#error !== null) return;
    try {
      for (let off = 0; off < data.length; ) off += fs.writeSync(this.#fd, data, off, data.length - off, pos + off);
    } catch (e) {
      this.#error = e;
    }
  }

  async #writeAll(data: Buffer, pos: number): Promise<void> {
    if (this.#error !== null) return;
    try {
      let off = 0;
      while (off < data.length) {
        off += await new Promise<number>((resolve, reject) => {
          fs.write(this.#fd, data, off, data.length - off, pos + off, (err, n) => (err ? reject(err) : resolve(n)));
        });
      }
    } catch (e) {
      this.#error = e;
    }
  }

  async close(): Promise<void> {
    this.#flush();
    await this.#chain;
    await new Promise<void>((resolve) => fs.close(this.#fd, () => resolve()));
    if (this.#error !== null) {
      throw new BlockError('BLK_ERR_FIO_LOG', `cannot write fio log ${this.path}: ${(this.#error as Error).message}`, { errno: Errno.EIO, cause: this.#error });
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Appends a finished temporary log to a shared one under a lock file, so clones in other threads
 * (per_job_logs=0) add whole blocks, as fio's appends at job end do.
 */
async function appendUnderLock(tmp: string, shared: string): Promise<void> {
  const lock = `${shared}.lock`;
  let fd: fs.promises.FileHandle | null = null;
  for (let tries = 0; fd === null; tries++) {
    try {
      fd = await fs.promises.open(lock, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 3000) throw e;
      await sleep(10);
    }
  }
  try {
    const out = await fs.promises.open(shared, 'a');
    try {
      const src = await fs.promises.open(tmp, 'r');
      try {
        const chunk = Buffer.allocUnsafe(FLUSH_BYTES);
        for (;;) {
          const { bytesRead } = await src.read(chunk, 0, chunk.length, null);
          if (bytesRead === 0) break;
          await out.write(chunk, 0, bytesRead);
        }
      } finally {
        await src.close();
      }
    } finally {
      await out.close();
    }
  } finally {
    await fd.close();
    await fs.promises.rm(lock, { force: true });
    await fs.promises.rm(tmp, { force: true });
  }
}

class JobLogs implements LogSink {
  readonly #files = new Map<LogKind, BufferedFile>();
  /** For shared logs: temporary file -> shared file it joins on close. */
  readonly #pending = new Map<string, string>();
  readonly #offset: boolean;
  readonly #prio: boolean;

  constructor(job: FioJob, dir: string, names: Partial<Record<LogKind, string>>) {
    this.#offset = job.logOffset;
    this.#prio = job.logPrio;
    for (const [kind, name] of Object.entries(names) as [LogKind, string][]) {
      const target = path.resolve(dir, name);
      if (job.perJobLogs) {
        this.#files.set(kind, new BufferedFile(target, 'w'));
      } else {
        const tmp = `${target}.${process.pid}.${job.threadNumber}.tmp`;
        this.#files.set(kind, new BufferedFile(tmp, 'w'));
        this.#pending.set(tmp, target);
      }
    }
  }

  row(kind: LogKind, timeMs: number, value: number, ddir: Ddir, bs: number, offset: number): void {
    this.#files.get(kind)?.writeRow(timeMs, value, ddir, bs, this.#offset ? offset : null, this.#prio);
  }

  async close(): Promise<void> {
    const files = [...this.#files.values()];
    this.#files.clear();
    const results = await Promise.allSettled(files.map((f) => f.close()));
    for (const f of files) {
      const shared = this.#pending.get(f.path);
      if (shared !== undefined) await appendUnderLock(f.path, shared);
    }
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}

/** The log files of one job (clone), created in `dir`; null when the job writes no logs. */
export function openJobLogs(job: FioJob, dir: string): LogSink | null {
  const names = logFileNames(job);
  if (Object.keys(names).length === 0) return null;
  return new JobLogs(job, dir, names);
}

export interface FioLogRow {
  readonly timeMs: number;
  readonly value: number;
  readonly ddir: number;
  readonly bs: number;
  /** Offset column, when the log has one (6+ columns, or 5 with `logOffset`). */
  readonly offset: number | null;
  /** Priority column (fio >= 3.18), when present. */
  readonly prio: number | null;
}

/**
 * Reads a fio bw/iops/lat log of any era: 4 columns (fio <= 2.1.10), 5 (offset in 2.1.11-3.17, or prio
 * in 3.18+; say which with `logOffset`), 6 (offset and prio, 3.18+) or 7 (3.37+ extra column, ignored).
 */
export function parseFioLog(text: string, opts: { readonly logOffset?: boolean; readonly file?: string } = {}): FioLogRow[] {
  const rows: FioLogRow[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const cols = line.split(',').map((c) => c.trim());
    const nums = cols.map(Number);
    if (cols.length < 4 || cols.length > 7 || nums.some((n) => !Number.isFinite(n))) {
      throw new BlockError('BLK_ERR_FIO_LOG', `${opts.file ?? 'fio log'}:${i + 1}: expected 4 to 7 numeric columns, got "${line}"`, { errno: Errno.EINVAL });
    }
    const [timeMs, value, ddir, bs, c4, c5] = nums as [number, number, number, number, number?, number?];
    let offset: number | null = null;
    let prio: number | null = null;
    if (cols.length === 5) {
      if (opts.logOffset) offset = c4!;
      else prio = c4!;
    } else if (cols.length >= 6) {
      offset = c4!;
      prio = c5!;
    }
    rows.push({ timeMs, value, ddir, bs, offset, prio });
  }
  return rows;
}
