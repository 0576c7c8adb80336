// A job as fio resolves it from a job file: every option the runner implements, typed, with fio's
// defaults applied (fio 3.33, docs/fio-compat.md). Produced by the job-file parser (src/fio/jobfile/),
// consumed by the engine (src/fio/engine/) and the output writers (src/fio/output/). Pure data.

/** fio's data directions: index into the per-direction arrays below. */
export const DDIR = { READ: 0, WRITE: 1, TRIM: 2 } as const;
export type Ddir = 0 | 1 | 2;
export type PerDdir<T> = [read: T, write: T, trim: T];

export const RW_MODES = ['read', 'write', 'trim', 'randread', 'randwrite', 'randtrim', 'rw', 'randrw', 'trimwrite', 'randtrimwrite'] as const;
export type RwMode = (typeof RW_MODES)[number];

export interface BsSplitEntry {
  readonly bs: number;
  /** Share in percent after fio's normalisation (blanks shared, remainder to the largest). */
  readonly perc: number;
}

export type RandomDistribution =
  | { readonly kind: 'random' }
  | { readonly kind: 'zipf'; readonly theta: number; readonly center: number }
  | { readonly kind: 'pareto'; readonly h: number; readonly center: number }
  | { readonly kind: 'normal'; readonly dev: number; readonly center: number }
  /** zoned: sizes in percent of the region; zoned_abs: sizes in bytes. One zone list per direction. */
  | { readonly kind: 'zoned' | 'zoned_abs'; readonly zones: PerDdir<readonly { readonly accessPerc: number; readonly size: number }[]> };

export type VerifyKind = 'none' | 'md5' | 'crc32c' | 'crc32' | 'pattern' | 'meta' | 'null';

/** Where an option's value came from, for messages that blame it. */
export interface OptionOrigin {
  /** "jobs/x.fio:7", or "--set #1 (bs=8k)". */
  readonly where: string;
  /** The line as written: "bs = 8k". */
  readonly text: string;
  /** How fio read it, when that differs from what it seems to say: "' 8k' is 8 bytes, not 8192 bytes". */
  readonly note?: string;
}

export interface FioJob {
  /** Job name (the section name, or name=). */
  readonly name: string;
  /** Where the section starts, for messages: "jobs/randw.fio:6". */
  readonly where: string;
  /** 1-based index over all jobs and clones in the run, as fio's thread_number (log file suffix). Set by expandClones. */
  readonly threadNumber: number;
  /** Clone index within its numjobs set (0-based). */
  readonly cloneIndex: number;
  /** Index of the job file in the command line (0-based): the first job of each later file gets an implicit stonewall. */
  readonly fileIndex: number;

  readonly filename: readonly string[];
  readonly rw: RwMode;
  /** The `:N` suffix of rw: for random modes a new offset every N I/Os; for sequential modes N bytes are skipped after each I/O (may be negative). 0 when absent. */
  readonly rwSuffix: number;
  readonly rwmixread: number;
  readonly bs: PerDdir<number>;
  /** bsrange (min, max) per direction; min == max == bs when not given. */
  readonly bsMin: PerDdir<number>;
  readonly bsMax: PerDdir<number>;
  /** Empty lists when bssplit was not given for that direction. */
  readonly bssplit: PerDdir<readonly BsSplitEntry[]>;
  readonly blockalign: PerDdir<number>;
  readonly bsUnaligned: boolean;
  /** Bytes of the file/device to use per clone; 0 = all of it. `sizePercent` (1..100) when given as N%. */
  readonly size: number;
  readonly sizePercent: number;
  readonly offset: number;
  readonly offsetPercent: number;
  readonly offsetIncrement: number;
  /** Total bytes to transfer (0 = size). */
  readonly ioSize: number;
  /** Stop after this many I/Os (0 = no limit). */
  readonly numberIos: number;
  readonly numjobs: number;
  readonly loops: number;

  readonly ioengine: string;
  readonly direct: boolean;
  readonly iodepth: number;
  readonly iodepthBatchSubmit: number;
  readonly iodepthBatchCompleteMin: number;
  readonly iodepthBatchCompleteMax: number;
  readonly iodepthLow: number;

  /** Microseconds; 0 = unlimited. */
  readonly runtimeUs: number;
  readonly timeBased: boolean;
  readonly rampTimeUs: number;
  /** startdelay as a range in microseconds (equal bounds when a single value). */
  readonly startDelayUs: readonly [number, number];

  readonly randrepeat: boolean;
  readonly randseed: number;
  readonly norandommap: boolean;
  readonly randomGenerator: 'tausworthe' | 'lfsr' | 'tausworthe64';
  readonly randomDistribution: RandomDistribution;

  readonly verify: VerifyKind;
  readonly verifyPattern: Uint8Array | null;
  readonly doVerify: boolean;
  readonly verifyBacklog: number;
  readonly verifyInterval: number;

  readonly fsync: number;
  readonly fdatasync: number;
  readonly endFsync: boolean;

  /** Bytes/s per direction; 0 = unlimited. */
  readonly rate: PerDdir<number>;
  readonly rateIops: PerDdir<number>;
  readonly rateProcess: 'linear' | 'poisson';
  readonly thinktimeUs: number;
  readonly thinktimeBlocks: number;
  readonly thinktimeSpin: number;

  readonly stonewall: boolean;
  readonly newGroup: boolean;
  readonly waitFor: string;
  readonly groupReporting: boolean;

  /** Log file prefixes (null: not logging); a bare key logs under the job name. */
  readonly writeBwLog: string | null;
  readonly writeLatLog: string | null;
  readonly writeIopsLog: string | null;
  readonly writeHistLog: string | null;
  readonly logAvgMsec: number;
  readonly logHistMsec: number;
  readonly logOffset: boolean;
  readonly logPrio: boolean;
  readonly perJobLogs: boolean;
  readonly bwAvgTimeMs: number;
  readonly iopsAvgTimeMs: number;
  readonly percentileList: readonly number[];

  readonly description: string;
  readonly kbBase: 1024 | 1000;
  /** The options as written for this job (after inheritance), in fio's `job options` JSON form: name -> value string. */
  readonly options: Readonly<Record<string, string>>;
  /** Where each option set for this job was written (canonical name -> origin), the last one winning. */
  readonly origins?: Readonly<Record<string, OptionOrigin>>;
  /** Added by the job-file parser: offset_increment given as N% of the file (1..100; 0 = given in bytes, see offsetIncrement). */
  readonly offsetIncrementPercent: number;
  /** Added by the job-file parser: io_size given as N% (1..100; 0 = given in bytes, see ioSize). */
  readonly ioSizePercent: number;
}

/** Result of parsing one or more job files. */
export interface ParsedJobs {
  /** Jobs before numjobs expansion (one per section), in file order. */
  readonly jobs: readonly FioJob[];
  /** The final merged [global] options, as fio's JSON "global options". */
  readonly globalOptions: Readonly<Record<string, string>>;
  /** One-line notes (options ignored because they cannot change the I/O pattern, legacy readings). */
  readonly warnings: readonly string[];
}
