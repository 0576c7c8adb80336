// The seed's job files, derived for a guest under emulation. Pure: seed text in, job text out.
//
// The seed jobs (jobs/randw.fio, jobs/iometer.fio) stay byte for byte as the mail gave them; what the
// guest runs is a copy that fio 3.33 accepts and that can check its own data:
//   rw=randwrite      randw is not an fio >= 2.0.12 value, and a verify needs every block written once
//   verify=crc32c     each block carries a checksum fio reads back after the write phase
//   size=<scaled>     per job, sized for the emulator; offset_increment=<size> gives job N its own
//                     region [N*size, (N+1)*size), so the jobs never overwrite each other's blocks
//   filename=/dev/xvda, direct=1, ioengine=libaio (psync where the guest's fio lacks it)
//   runtime=<cap>     a bound on a slow emulator: fio verifies what it wrote by then
//   log_avg_msec=500  bandwidth logs as 500 ms averages, small enough for the serial console; the
//                     per-I/O latency log is dropped for the same reason

export interface GuestJobOptions {
  /** Bytes per job (each job's region); a multiple of 1 MiB keeps every block size aligned. */
  readonly bytesPerJob: number;
  readonly runtimeSeconds: number;
  readonly ioengine: 'libaio' | 'psync';
  /** Where the seed came from, for the header comment. */
  readonly source: string;
}

const DROPPED = new Set(['write_lat_log', 'rwmixread', 'rwmixwrite', 'filename', 'offset_increment', 'verify', 'runtime', 'time_based', 'log_avg_msec']);

/** numjobs of the seed (1 when it does not say). */
export function seedNumjobs(seed: string): number {
  const m = /^\s*numjobs\s*=\s*(\d+)\s*$/m.exec(seed);
  return m === null ? 1 : Number(m[1]);
}

export function deriveGuestJob(seed: string, opts: GuestJobOptions): string {
  if (!(opts.bytesPerJob > 0) || opts.bytesPerJob % 1048576 !== 0) {
    throw new RangeError(`deriveGuestJob: bytesPerJob ${opts.bytesPerJob} is not a positive multiple of 1 MiB`);
  }
  const size = `${opts.bytesPerJob / 1048576}m`;
  const out = [`# Derived from ${opts.source} by src/xen-tcg/fio-jobs.ts for a guest under emulation (see docs/xen-tcg.md).`];
  let section = '';
  const closeSection = (): void => {
    if (section === '' || section === 'global') return;
    while (out[out.length - 1] === '') out.pop();
    out.push('filename=/dev/xvda', `offset_increment=${size}`, 'verify=crc32c', `runtime=${opts.runtimeSeconds}`, 'log_avg_msec=500');
  };
  for (const raw of seed.split('\n')) {
    const line = raw.trim();
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      closeSection();
      section = header[1] as string;
      out.push(line);
      continue;
    }
    const eq = line.indexOf('=');
    if (line === '' || line.startsWith('#') || line.startsWith(';') || eq < 0) {
      out.push(line);
      continue;
    }
    const key = line.slice(0, eq).trim();
    if (DROPPED.has(key)) continue;
    if (key === 'rw' || key === 'readwrite') out.push('rw=randwrite');
    else if (key === 'size') out.push(`size=${size}`);
    else if (key === 'ioengine') out.push(`ioengine=${opts.ioengine}`);
    else out.push(line);
  }
  closeSection();
  while (out[out.length - 1] === '') out.pop();
  return `${out.join('\n')}\n`;
}
