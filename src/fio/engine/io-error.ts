// What fio prints on stderr when a job's I/O fails (io_u.c __io_u_log_error), and why ours failed:
// the device's own message, and when the I/O was not a whole number of the device's blocks, the job
// option that made it so, with the file and line it came from.
import type { Ddir, FioJob } from '../job.ts';

/** glibc's strerror text for the errnos a BlockDevice reports. */
const STRERROR: Readonly<Record<number, string>> = {
  1: 'Operation not permitted',
  2: 'No such file or directory',
  5: 'Input/output error',
  11: 'Resource temporarily unavailable',
  12: 'Cannot allocate memory',
  13: 'Permission denied',
  16: 'Device or resource busy',
  22: 'Invalid argument',
  28: 'No space left on device',
  30: 'Read-only file system',
  84: 'Invalid or incomplete multibyte or wide character',
  95: 'Operation not supported',
};

export function strerror(errno: number): string {
  return STRERROR[errno] ?? `Unknown error ${errno}`;
}

const DDIR_NAME = ['read', 'write', 'trim'] as const;

/** The option a block size or offset came from: "bs=8 ('bs = 8k' at jobs/x.fio:6: ' 8k' is 8 bytes ...)". */
function blame(job: FioJob, options: readonly string[], value: string): string | undefined {
  for (const name of options) {
    const o = job.origins?.[name];
    if (o !== undefined) return `${name}=${value} ('${o.text}' at ${o.where}${o.note === undefined ? '' : `: ${o.note}`})`;
  }
  return undefined;
}

export interface FailedIo {
  readonly ddir: Ddir;
  readonly offset: number;
  readonly length: number;
  readonly errno: number;
  /** The device's message. */
  readonly message: string;
  /** The device's logical block size. */
  readonly blockSize: number;
}

/** fio's lines for a failed I/O, then ours saying why. */
export function ioErrorReport(job: FioJob, io: FailedIo): string[] {
  const file = job.filename[0] ?? job.name;
  const lines = [
    `fio: io_u error on file ${file}: ${strerror(io.errno)}: ${DDIR_NAME[io.ddir]} offset=${io.offset}, buflen=${io.length}`,
    `fio: ${job.name}: ${io.message}`,
  ];
  const bs = io.blockSize;
  if (bs > 1 && (io.length % bs !== 0 || io.offset % bs !== 0)) {
    const sizeOptions = ['bssplit', 'bsrange', 'bs'];
    const cause =
      io.length % bs !== 0
        ? (blame(job, sizeOptions, String(io.length)) ?? `buflen=${io.length}`)
        : (blame(job, ['offset', 'ba', 'offset_increment'], String(io.offset)) ?? blame(job, sizeOptions, String(job.bsMin[io.ddir])) ?? `offset=${io.offset}`);
    lines.push(`fio: ${job.name}: ${file} takes I/O in whole ${bs}-byte blocks, and ${cause} is not a multiple of ${bs}`);
  }
  return lines;
}
