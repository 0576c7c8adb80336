// The seed's job files derived for fio's network engines (nbd, rbd). Pure: seed text in, job text out.
//
// fio 3.33 cannot run the seed's files against a network store as written:
//   ioengine=libaio   sits in the job section, where it beats anything on fio's command line: the line
//                     itself is rewritten to the engine, and the engine's options follow it
//   rw=randw          not a value fio >= 2.0.12 knows: randwrite, which the seed meant
//   write_*_log       per-I/O logging would distort the figures: dropped
//   size=             the seed's 4g becomes the bench's size, in place; runtime= and time_based=1
//                     are appended to the last section
//   description=      dropped: a label only, and it would put spaces in the printed command
// The rest (numjobs, bs, bssplit, rwmixread, iodepth, direct) stays as the seed has it.
import { fioRuntime } from '../reproduce/fio-runtime.ts';

export type NetFioEngine =
  /** fio's nbd engine (libnbd): one connection per job to `uri` (nbd+unix:///EXPORT?socket=PATH). */
  | { readonly ioengine: 'nbd'; readonly uri: string }
  /** fio's rbd engine (librbd); the cluster comes from $CEPH_CONF. */
  | { readonly ioengine: 'rbd'; readonly pool: string; readonly image: string; readonly clientname: string };

export interface NetFioJobOptions {
  readonly engine: NetFioEngine;
  /** size= of every job, bytes. */
  readonly size: number;
  readonly seconds: number;
}

function engineLines(e: NetFioEngine): string[] {
  return e.ioengine === 'nbd' ? ['ioengine=nbd', `uri=${e.uri}`] : ['ioengine=rbd', `pool=${e.pool}`, `rbdname=${e.image}`, `clientname=${e.clientname}`];
}

export function deriveNetFioJob(seed: string, o: NetFioJobOptions): string {
  const out: string[] = [];
  let sawEngine = false;
  let sawSize = false;
  for (const raw of seed.split('\n')) {
    const line = raw.trim();
    const eq = line.indexOf('=');
    const key = eq < 0 || line.startsWith('#') || line.startsWith(';') ? '' : line.slice(0, eq).trim();
    if (/^write_(bw|lat|iops|hist)_log$/.test(key) || key === 'description') continue;
    if (key === 'size') {
      out.push(`size=${o.size}`);
      sawSize = true;
      continue;
    }
    if (key === 'rw' || key === 'readwrite') out.push(line.slice(eq + 1).trim() === 'randw' ? 'rw=randwrite' : line);
    else if (key === 'ioengine') {
      out.push(...engineLines(o.engine));
      sawEngine = true;
    } else out.push(raw);
  }
  while (out.length > 0 && out[out.length - 1]!.trim() === '') out.pop();
  if (!sawEngine) out.push(...engineLines(o.engine));
  if (!sawSize) out.push(`size=${o.size}`);
  out.push(`runtime=${fioRuntime(o.seconds)}`, 'time_based=1', '');
  return out.join('\n');
}

/**
 * A job file as fio's own command line: [global] options first, then `--name=SECTION` and that
 * section's options, which is how fio reads its arguments. The printed command then is the whole run,
 * with no temporary file to keep.
 */
export function fioJobArgs(jobText: string): string[] {
  const args: string[] = [];
  let section: string | null = null;
  for (const raw of jobText.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      section = header[1]!;
      if (section !== 'global') args.push(`--name=${section}`);
      continue;
    }
    const eq = line.indexOf('=');
    args.push(eq < 0 ? `--${line}` : `--${line.slice(0, eq).trim()}=${line.slice(eq + 1).trim()}`);
  }
  return args;
}

/** argv as a shell would need it typed: arguments with spaces or quotes in single quotes. */
export function shellLine(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
