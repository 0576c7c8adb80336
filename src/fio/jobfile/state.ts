// The mutable per-section option state (fio's struct thread_options, reduced to what the runner
// uses). A job copies the global state when its header is read; options then mutate the copy.
import type { OptionOrigin, PerDdir, RwMode } from '../job.ts';
import type { KbBase } from './numbers.ts';

/** A bssplit / zoned entry as read: perc -1 is a blank share (fio's -1U). */
export interface RawSplit {
  readonly v1: number;
  readonly v2: number;
}

export interface OptState {
  name: string | null;
  filenames: string[];
  rw: RwMode;
  rwRandom: boolean;
  ddirSeqNr: number;
  ddirSeqAdd: number;
  rwmixRead: number;
  bs: PerDdir<number>;
  /** 0 = unset (fio fixup_options falls back to bs). */
  minBs: PerDdir<number>;
  maxBs: PerDdir<number>;
  bssplit: PerDdir<RawSplit[]>;
  ba: PerDdir<number>;
  bsUnaligned: boolean;
  size: number;
  sizePercent: number;
  offset: number;
  offsetPercent: number;
  offsetIncrement: number;
  offsetIncrementPercent: number;
  ioSize: number;
  ioSizePercent: number;
  numberIos: number;
  numjobs: number;
  loops: number;
  ioengine: string;
  direct: boolean;
  iodepth: number;
  iodepthBatch: number;
  iodepthBatchCompleteMin: number;
  iodepthBatchCompleteMax: number;
  iodepthLow: number;
  timeoutUs: number;
  timeBased: boolean;
  rampTimeUs: number;
  startDelayUs: number;
  startDelayHighUs: number;
  randrepeat: boolean;
  randseed: number;
  randseedSet: boolean;
  norandommap: boolean;
  randomGenerator: 'tausworthe' | 'lfsr' | 'tausworthe64';
  randomDistribution: 'random' | 'zipf' | 'pareto' | 'normal' | 'zoned' | 'zoned_abs';
  distValue: number;
  distCenter: number;
  zones: PerDdir<RawSplit[]>;
  verify: string;
  verifySet: boolean;
  verifyPattern: Uint8Array | null;
  doVerify: boolean;
  verifyBacklog: number;
  verifyInterval: number;
  fsync: number;
  fdatasync: number;
  endFsync: boolean;
  rate: PerDdir<number>;
  rateIops: PerDdir<number>;
  rateProcess: 'linear' | 'poisson';
  thinktimeUs: number;
  thinktimeBlocks: number;
  thinktimeSpinUs: number;
  stonewall: boolean;
  newGroup: boolean;
  waitFor: string;
  groupReporting: boolean;
  bwLog: string | null;
  latLog: string | null;
  iopsLog: string | null;
  histLog: string | null;
  logAvgMsec: number;
  logHistMsec: number;
  logOffset: boolean;
  logPrio: boolean;
  perJobLogs: boolean;
  bwAvgTimeMs: number;
  iopsAvgTimeMs: number;
  percentileList: number[];
  description: string;
  kbBase: KbBase;
  /** Where each option was last set (canonical name), for messages. */
  origins: Record<string, OptionOrigin>;
}

/** fio 3.33 defaults (`fio --cmdhelp=OPT`). */
export function defaultState(): OptState {
  return {
    name: null,
    filenames: [],
    rw: 'read',
    rwRandom: false,
    ddirSeqNr: 1,
    ddirSeqAdd: 0,
    rwmixRead: 50,
    bs: [4096, 4096, 4096],
    minBs: [0, 0, 0],
    maxBs: [0, 0, 0],
    bssplit: [[], [], []],
    ba: [0, 0, 0],
    bsUnaligned: false,
    size: 0,
    sizePercent: 0,
    offset: 0,
    offsetPercent: 0,
    offsetIncrement: 0,
    offsetIncrementPercent: 0,
    ioSize: 0,
    ioSizePercent: 0,
    numberIos: 0,
    numjobs: 1,
    loops: 1,
    ioengine: 'psync',
    direct: false,
    iodepth: 1,
    iodepthBatch: 1,
    iodepthBatchCompleteMin: 1,
    iodepthBatchCompleteMax: 0,
    iodepthLow: 0,
    timeoutUs: 0,
    timeBased: false,
    rampTimeUs: 0,
    startDelayUs: 0,
    startDelayHighUs: 0,
    randrepeat: true,
    randseed: 0x89,
    randseedSet: false,
    norandommap: false,
    randomGenerator: 'tausworthe',
    randomDistribution: 'random',
    distValue: 0,
    distCenter: -1,
    zones: [[], [], []],
    verify: '0',
    verifySet: false,
    verifyPattern: null,
    doVerify: true,
    verifyBacklog: 0,
    verifyInterval: 0,
    fsync: 0,
    fdatasync: 0,
    endFsync: false,
    rate: [0, 0, 0],
    rateIops: [0, 0, 0],
    rateProcess: 'linear',
    thinktimeUs: 0,
    thinktimeBlocks: 1,
    thinktimeSpinUs: 0,
    stonewall: false,
    newGroup: false,
    waitFor: '',
    groupReporting: false,
    bwLog: null,
    latLog: null,
    iopsLog: null,
    histLog: null,
    logAvgMsec: 0,
    logHistMsec: 0,
    logOffset: false,
    logPrio: false,
    perJobLogs: true,
    bwAvgTimeMs: 500,
    iopsAvgTimeMs: 500,
    percentileList: [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99],
    description: '',
    kbBase: 1024,
    origins: {},
  };
}

export function cloneState(s: OptState): OptState {
  return structuredClone(s);
}
