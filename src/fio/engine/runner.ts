// Runs one job (one clone) against a BlockDevice: fio's do_io/do_verify loop (backend.c) as an
// async pump. Up to iodepth I/Os are in flight; submissions go out in iodepth_batch_submit groups;
// when the queue is full it reaps at least iodepth_batch_complete_min completions and, with
// iodepth_low, keeps reaping down to that depth before submitting again. Every wait is a promise
// (with a coarse ticker for runtime/ramp/log windows), so timers keep running while the device is
// slow and a fast in-process device cannot starve the event loop (the pump yields every few ms).
// The pump waits only when no completion is at hand: completions that arrived together are reaped
// and their slots refilled in one synchronous stretch, so a device that batches (Linux AIO's
// io_submit, blkfront's ring) gets the whole stretch at once rather than one I/O per microtask.
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Ddir, FioJob, PerDdir } from '../job.ts';
import type { JobResult, VerifyFailure } from '../stats.ts';
import { LatencyHistogram } from '../../stats/latency-histogram.ts';
import { BlockError, Errno } from '../../internal/errors.ts';
import { WorkloadPattern, type IoDesc } from './pattern.ts';
import { STREAM, streamSeed, Taus88 } from './rand.ts';
import { jobGeometry, type JobGeometry } from './region.ts';
import { StatsCollector } from './stats-collector.ts';
import type { EngineContext, JobProgress, LogSink, RunControl } from './types.ts';
import { checkVerifyRead, EILSEQ, prepareVerifyWrite, verifyContext, type VerifyContext } from './verify.ts';
import { ioErrorReport, strerror } from './io-error.ts';

/** fio's default randseed (options.c: 0x89). */
export const FIO_DEFAULT_RANDSEED = 0x89;
/** Engines fio runs synchronously: "queue depth will be capped at 1". */
const SYNC_ENGINES = new Set(['sync', 'psync', 'vsync', 'pvsync', 'pvsync2', 'mmap']);
const TICK_MS = 5;
const YIELD_EVERY_MS = 2;

interface Slot {
  readonly buf: Uint8Array;
  readonly words: Uint32Array;
  readonly view: DataView;
  readonly iovs: Map<number, Uint8Array[]>;
  readonly iovBySector: (Uint8Array[] | undefined)[];
  /** The last iov handed out, and its length (bssplit jobs change length often, the rest never). */
  iov: Uint8Array[];
  iovLen: number;
  ddir: Ddir;
  offset: number;
  len: number;
  prepMs: number;
  issueMs: number;
  /** Check the data when the read completes (verify phase, or a read job with verify=). */
  check: boolean;
  onDone: () => void;
  onErr: (e: unknown) => void;
}

export function effectiveDepth(job: FioJob): number {
  return SYNC_ENGINES.has(job.ioengine) ? 1 : Math.max(1, job.iodepth);
}

export function jobBaseSeed(job: FioJob): number {
  if ('randseed' in job.options || job.randrepeat) return job.randseed;
  return randomInt(0, 2 ** 32);
}

export class JobRunner {
  readonly job: FioJob;
  readonly geo: JobGeometry;
  private readonly ctx: EngineContext;
  private readonly now: () => number;
  /** The real clock (the pump's yields must happen even when tests inject a frozen `now`). */
  private readonly wallClock: () => number;
  private readonly depth: number;
  private readonly stats: StatsCollector;
  private readonly slots: Slot[] = [];
  private readonly free: Slot[] = [];
  private readonly done: Slot[] = [];
  /** Prepared, not yet handed to the device: batch[0..batchN). */
  private readonly batch: Slot[] = [];
  private batchN = 0;
  /** Handed to the device in this pass of the pump, not yet given their issue time: issuing[0..issuingN). */
  private readonly issuing: Slot[] = [];
  private issuingN = 0;
  /**
   * Stamp each I/O's issue time as its device call returns: devices that do the work in the call (RAM,
   * null) or hand it on at once, and verify jobs (preparing one I/O is slow). Only a device that sends
   * a turn's requests together (Linux AIO's io_submit, batchedSubmission) has its I/Os stamped once
   * per stretch, when they really go out.
   */
  private readonly stampEach: boolean;
  /** The latest clock reading: the prepare time of the next I/O. */
  private lastClock = 0;
  /**
   * Completion time shared by the completions that arrive together (fio's one fio_gettime per reap):
   * valid until `invalidateClock`, queued as a microtask when it is read, runs. Any I/O issued after
   * the read has its completion queued after that microtask, so it never sees the older time.
   */
  private clockValid = false;
  private clockMs = 0;
  private readonly invalidateClock = (): void => {
    this.clockValid = false;
  };
  private readonly desc: IoDesc = { ddir: 0, offset: 0, len: 0 };
  private hasPending = false;
  private waiter: (() => void) | null = null;
  private waitNeed = 0;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private readonly totalBytes: [number, number, number] = [0, 0, 0];
  private readonly totalIos: [number, number, number] = [0, 0, 0];
  private readonly paceBytes: [number, number, number] = [0, 0, 0];
  private readonly paceIos: [number, number, number] = [0, 0, 0];
  private paceStart = 0;
  private startMs = 0;
  private rampEnd = 0;
  private measuring = false;
  private measureStart = 0;
  /** First issue and last completion of each direction in the measured period (ms). */
  private readonly dirFirstMs = [Infinity, Infinity, Infinity];
  private readonly dirLastMs = [0, 0, 0];
  private measureEpoch = 0;
  private cpu0: NodeJS.CpuUsage = { user: 0, system: 0 };
  private ru0: NodeJS.ResourceUsage | null = null;
  private phaseOver = false;
  private stopped = false;
  private finished = false;
  private drainToLow = false;
  private thinkCount = 0;
  private writesSinceSync = 0;
  private numberio = 0;
  private error = 0;
  private errorMessage = '';
  private errorReport: string[] = [];
  private readonly failures: VerifyFailure[] = [];
  private readonly syncLat = new LatencyHistogram();
  private syncIos = 0;
  private readonly verify: VerifyContext | null;
  private readonly dataRand: Taus88;
  private readonly dataFill: () => number;
  /** Written blocks (offset, length, order) for the verify phase. */
  private readonly written: number[] = [];
  private readonly baseSeed: number;
  private readonly sink: LogSink | null;

  constructor(job: FioJob, ctx: EngineContext) {
    this.job = job;
    this.ctx = ctx;
    this.now = ctx.now ?? (() => performance.now());
    this.wallClock = ctx.now === undefined ? this.now : () => performance.now();
    this.geo = jobGeometry(job, ctx.device.info.size);
    this.depth = effectiveDepth(job);
    this.baseSeed = jobBaseSeed(job);
    this.sink = ctx.logs?.(job) ?? null;
    this.stats = new StatsCollector(job, this.geo.ddirs, this.sink);
    this.verify = job.verify !== 'none' ? verifyContext(job, ctx.device.name) : null;
    this.stampEach = this.verify !== null || ctx.device.info.batchedSubmission !== true;
    this.dataRand = new Taus88(streamSeed(this.baseSeed, job.threadNumber, STREAM.DATA));
    const r = this.dataRand;
    this.dataFill = () => r.next();
  }

  progress(): JobProgress {
    return {
      bytes: [...this.totalBytes] as PerDdir<number>,
      ios: [...this.totalIos] as PerDdir<number>,
      elapsedMs: this.startMs === 0 ? 0 : this.now() - this.startMs,
      done: this.finished,
    };
  }

  /** Stops early: nothing new is issued; in-flight I/O completes and run() returns the results. */
  stop(): void {
    this.stopped = true;
    this.kick();
  }

  async run(control: RunControl = {}): Promise<JobResult> {
    const job = this.job;
    const signal = control.signal;
    const onAbort = (): void => this.stop();
    signal?.addEventListener('abort', onAbort);
    if (signal?.aborted === true) this.stopped = true;
    try {
      const delayMs = startDelayMs(job, this.baseSeed);
      if (delayMs > 0 && !this.stopped) await abortableSleep(delayMs, signal);
      this.setup();
      // Jobs that start together all set up (buffers allocated, page-faulted and filled) before any
      // starts its clock, as fio releases a group's jobs only once all have initialised: otherwise
      // the first job's measured time would include the others' setup, with its completions unread.
      await new Promise<void>(setImmediate);
      this.startMs = this.now();
      this.paceStart = this.startMs;
      this.rampEnd = this.startMs + job.rampTimeUs / 1000;
      if (job.rampTimeUs <= 0) this.beginMeasure(this.startMs);
      this.ticker = setInterval(() => this.kick(), TICK_MS);
      const pattern = new WorkloadPattern(job, this.geo, this.baseSeed);
      this.patternRef = pattern;
      if (job.rate[0] + job.rate[1] + job.rateIops[0] + job.rateIops[1] > 0) {
        // A direction over its rate gives way to the other if that one is due sooner (fio's rate_ddir),
        // so one capped direction does not hold back the other.
        pattern.rateGate = (d) => {
          const other = (d ^ 1) as Ddir;
          return this.dueMs(d) > this.dueMs(other) ? other : d;
        };
      }
      const doesWrite = this.geo.ddirs.includes(1);
      await this.pump((out) => pattern.next(out), true);
      if (this.verify !== null && job.doVerify && doesWrite && !this.stopped && this.error === 0) {
        this.stats.activate(0);
        this.phaseOver = false;
        await this.pump(this.verifySource(), false);
      }
      if (job.endFsync && doesWrite && this.error === 0) await this.sync();
      const end = this.now();
      if (!this.measuring) this.beginMeasure(end);
      this.stats.finish(end);
      // The job's rows are complete: the sink may flush its file (shared sinks count their closes).
      await this.sink?.close();
      return this.result(end, control.groupId ?? 0);
    } finally {
      if (this.ticker !== null) clearInterval(this.ticker);
      this.ticker = null;
      signal?.removeEventListener('abort', onAbort);
      this.finished = true;
    }
  }

  private patternRef: WorkloadPattern | null = null;

  private setup(): void {
    const bytes = Math.max(this.geo.bufferBytes, 512);
    const fillData = this.geo.ddirs.includes(1) && this.verify === null;
    for (let i = 0; i < this.depth; i++) {
      const buf = this.ctx.allocBuffer(bytes);
      const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
      // fio fills write buffers with random data once (refill_buffers is off by default).
      if (fillData) this.dataRand.fill(words);
      const slot: Slot = {
        buf,
        words,
        view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength),
        iovs: new Map(),
        iovBySector: [],
        iov: [],
        iovLen: -1,
        ddir: 0,
        offset: 0,
        len: 0,
        prepMs: 0,
        issueMs: 0,
        check: false,
        onDone: () => {},
        onErr: () => {},
      };
      slot.onDone = () => this.complete(slot);
      slot.onErr = (e: unknown) => this.failed(slot, e);
      this.slots.push(slot);
      this.free.push(slot);
    }
  }

  private beginMeasure(now: number): void {
    this.measuring = true;
    this.measureStart = now;
    this.measureEpoch = Date.now();
    this.stats.begin(now);
    this.patternRef?.resetCounters();
    this.cpu0 = process.cpuUsage();
    this.ru0 = process.resourceUsage();
  }

  private timeCheck(now: number): void {
    if (!this.measuring) {
      if (now >= this.rampEnd) this.beginMeasure(now);
    } else {
      this.stats.tick(now);
      const rt = this.job.runtimeUs;
      if (rt > 0 && now - this.measureStart >= rt / 1000) this.phaseOver = true;
    }
  }

  private kick(): void {
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w();
    }
  }

  private waitDone(n: number, untilMs = 0): Promise<void> | null {
    if (this.done.length >= n) return null;
    return new Promise<void>((resolve) => {
      this.waitNeed = n;
      this.waiter = resolve;
      if (untilMs > 0) {
        const ms = untilMs - this.now();
        if (ms >= 1) setTimeout(() => this.kick(), ms);
        else setImmediate(() => this.kick());
      }
    });
  }

  private reap(): void {
    const max = this.job.iodepthBatchCompleteMax > 0 ? this.job.iodepthBatchCompleteMax : this.depth;
    let n = 0;
    while (this.done.length > 0 && n < max) {
      this.free.push(this.done.pop()!);
      n++;
    }
  }

  private dueMs(d: Ddir): number {
    const job = this.job;
    let due = 0;
    const rate = job.rate[d];
    if (rate > 0) due = this.paceStart + (this.paceBytes[d] * 1000) / rate;
    const iops = job.rateIops[d];
    if (iops > 0) due = Math.max(due, this.paceStart + (this.paceIos[d] * 1000) / iops);
    return due;
  }

  /**
   * The main loop for one phase: `next` supplies I/Os until it returns false.
   *
   * Clock reads (a few hundred nanoseconds each under kvm-clock; three per I/O were a third of the
   * runner's cost): one when the loop comes back from a wait, one every 64 I/Os in between, one per
   * I/O as its device call returns (its issue time, and the next I/O's prepare time; see stampEach),
   * and one per batch of completions (completionNow). fio itself reads the clock at prepare and at
   * submit, and once per reap.
   */
  private async pump(next: (out: IoDesc) => boolean, paced: boolean): Promise<void> {
    const job = this.job;
    const depth = this.depth;
    const batchSize = job.iodepthBatchSubmit > 0 ? Math.min(job.iodepthBatchSubmit, depth) : depth;
    const low = job.iodepthLow > 0 ? Math.min(job.iodepthLow, depth) : depth;
    const minEvents = Math.max(1, job.iodepthBatchCompleteMin);
    const thinkEvery = job.thinktimeUs > 0 ? Math.max(1, job.thinktimeBlocks) : 0;
    const syncEvery = job.fsync > 0 ? job.fsync : job.fdatasync;
    const desc = this.desc;
    const rated = paced && job.rate[0] + job.rate[1] + job.rate[2] + job.rateIops[0] + job.rateIops[1] + job.rateIops[2] > 0;
    const realClock = this.wallClock === this.now;
    let exhausted = false;
    let lastYield = this.wallClock();
    let now = 0;
    let fresh = true;
    let sinceClock = 0;
    this.hasPending = false;
    for (;;) {
      if (fresh || sinceClock >= 64) {
        now = this.now();
        this.lastClock = now;
        this.stampIssued(now);
        sinceClock = 0;
        fresh = false;
        if ((realClock ? now : this.wallClock()) - lastYield > YIELD_EVERY_MS) {
          // A device that completes in-process would otherwise keep timers and other jobs waiting.
          await new Promise<void>(setImmediate);
          lastYield = this.wallClock();
          now = this.now();
          this.lastClock = now;
        }
        this.timeCheck(now);
      }
      if (this.stopped || this.phaseOver) break;
      this.reap();
      if (this.drainToLow && depth - this.free.length <= low) this.drainToLow = false;
      let waitUntil = 0;
      let think = false;
      let syncNow = false;
      while (!exhausted && !this.drainToLow && this.free.length > 0) {
        if (!this.hasPending) {
          if (!next(desc)) {
            exhausted = true;
            break;
          }
          this.hasPending = true;
        }
        if (rated) {
          const due = this.dueMs(desc.ddir);
          if (due > now) {
            waitUntil = due;
            break;
          }
        }
        this.hasPending = false;
        this.prepare(desc, !paced);
        if (this.batchN >= batchSize) this.commit();
        if (thinkEvery > 0 && ++this.thinkCount >= thinkEvery) {
          this.thinkCount = 0;
          think = true;
          break;
        }
        if (syncEvery > 0 && desc.ddir === 1 && ++this.writesSinceSync >= syncEvery) {
          this.writesSinceSync = 0;
          syncNow = true;
          break;
        }
        if (++sinceClock >= 64) {
          now = this.now();
          this.lastClock = now;
          this.stampIssued(now);
          sinceClock = 0;
          this.timeCheck(now);
          if (this.phaseOver || this.stopped) break;
        }
      }
      if (this.batchN > 0) this.commit();
      if (think || syncNow) {
        // thinktime (and fsync=N) first let everything in flight complete, as fio's io_u_quiesce.
        this.stampPending();
        await this.quiesce();
        if (syncNow) await this.sync();
        if (think) await sleep(job.thinktimeUs / 1000);
        fresh = true;
        continue;
      }
      // Completions already reaped are taken at once, as fio's getevents returns at once when events
      // are waiting: only an empty `done` costs a turn of the event loop. Awaiting anyway would let the
      // device's submission (a microtask) go out after every single I/O instead of once per turn.
      const inflight = depth - this.free.length;
      let wait: Promise<void> | null = null;
      if (inflight === 0) {
        if (exhausted) break;
        if (waitUntil > 0) wait = this.waitDone(1, waitUntil);
      } else if (this.free.length === 0 || this.drainToLow) {
        if (this.free.length === 0 && low < depth) this.drainToLow = true;
        wait = this.waitDone(this.drainToLow ? 1 : Math.min(minEvents, inflight));
      } else if (waitUntil > 0) {
        wait = this.waitDone(1, waitUntil);
      } else if (exhausted) {
        wait = this.waitDone(1);
      }
      if (wait !== null) {
        this.stampPending();
        await wait;
        fresh = true;
      } else if (waitUntil > 0 || (inflight === 0 && !exhausted)) {
        // Paced and due later, or nothing in flight: the clock must move for the next look.
        fresh = true;
      }
    }
    this.stampPending();
    await this.quiesce();
  }

  /** Waits for every in-flight I/O (fio's io_u_quiesce), the clock still ticking. */
  private async quiesce(): Promise<void> {
    this.reap();
    while (this.free.length + this.done.length < this.depth) {
      await this.waitDone(this.depth - this.free.length);
      this.timeCheck(this.now());
      this.reap();
    }
    this.reap();
  }

  private prepare(desc: IoDesc, verifyRead: boolean): void {
    const slot = this.free.pop()!;
    const d = desc.ddir;
    slot.ddir = d;
    slot.offset = desc.offset;
    slot.len = desc.len;
    slot.check = false;
    const v = this.verify;
    if (v !== null) {
      if (d === 1) {
        prepareVerifyWrite(v, slot.buf, slot.words, slot.view, desc.offset, desc.len, this.baseSeed, this.numberio++, this.dataFill);
        if (this.job.doVerify) this.written.push(desc.offset, desc.len);
      } else if (d === 0 && (verifyRead || !this.geo.ddirs.includes(1))) {
        slot.check = true;
      }
    }
    slot.prepMs = this.lastClock;
    this.batch[this.batchN++] = slot;
  }

  private commit(): void {
    const dev = this.ctx.device;
    const batch = this.batch;
    const n = this.batchN;
    this.batchN = 0;
    for (let i = 0; i < n; i++) {
      const slot = batch[i]!;
      const d = slot.ddir;
      this.paceBytes[d] += slot.len;
      this.paceIos[d]++;
      // The depth after this one is queued, as fio's cur_depth: completed I/Os count until reaped.
      if (this.measuring) this.stats.markIssue(d, this.depth - this.free.length - (n - 1 - i));
      let p: Promise<void>;
      try {
        if (d === 0) p = dev.readv(slot.offset, this.iov(slot));
        else if (d === 1) p = dev.writev(slot.offset, this.iov(slot));
        else p = dev.discard(slot.offset, slot.len);
      } catch (e) {
        p = Promise.reject(e);
      }
      if (this.stampEach) {
        const t = this.now();
        slot.issueMs = t;
        this.lastClock = t;
      } else {
        this.issuing[this.issuingN++] = slot;
      }
      p.then(slot.onDone, slot.onErr);
    }
  }

  /** Before the pump waits: I/Os still unstamped go out now (the device submits them in a microtask). */
  private stampPending(): void {
    if (this.issuingN > 0) this.stampIssued(this.now());
  }

  /**
   * Gives the I/Os handed to a batchedSubmission device since the last stamp their issue time: one
   * clock read for all of them, as fio's libaio engine stamps every io_u of one io_submit alike. The
   * device sends them together at the end of the stretch, so that is when they are issued.
   */
  private stampIssued(t: number): void {
    if (this.issuingN === 0) return;
    const issuing = this.issuing;
    for (let i = 0; i < this.issuingN; i++) issuing[i]!.issueMs = t;
    this.issuingN = 0;
  }

  private iov(slot: Slot): Uint8Array[] {
    const len = slot.len;
    if (len === slot.iovLen) return slot.iov;
    // Lengths in whole sectors (all but bs_unaligned jobs) index an array; others go to a map.
    const k = len >>> 9;
    let v = k << 9 === len ? slot.iovBySector[k] : slot.iovs.get(len);
    if (v === undefined) {
      v = [slot.buf.subarray(0, len)];
      if (k << 9 === len) slot.iovBySector[k] = v;
      else slot.iovs.set(len, v);
    }
    slot.iovLen = len;
    slot.iov = v;
    return v;
  }

  /** The completion time of I/Os completing now (see clockValid). */
  private completionNow(): number {
    if (this.clockValid) return this.clockMs;
    this.clockMs = this.now();
    this.clockValid = true;
    queueMicrotask(this.invalidateClock);
    return this.clockMs;
  }

  private complete(slot: Slot): void {
    const t = this.completionNow();
    const d = slot.ddir;
    this.totalBytes[d] += slot.len;
    this.totalIos[d]++;
    if (slot.check && this.verify !== null && this.error === 0) {
      const msg = checkVerifyRead(this.verify, slot.buf, slot.view, slot.offset, slot.len);
      if (msg !== null) {
        this.failures.push({ offset: slot.offset, length: slot.len, message: `${this.job.name}: ${msg}` });
        this.error = EILSEQ;
        this.errorMessage = `${this.job.name}: ${msg}`;
        this.errorReport = [msg, `fio: ${this.job.name}: err=${EILSEQ} (${strerror(EILSEQ)}): the data read back is not what was written`];
        this.stopped = true;
      }
    }
    if (this.measuring) {
      this.stats.complete(d, slot.len, slot.offset, (slot.issueMs - slot.prepMs) * 1e6, (t - slot.issueMs) * 1e6, t);
      // A direction's runtime spans its own I/O: a write job's verify reads get the verify phase's time.
      const issued = Math.max(slot.issueMs, this.measureStart);
      if (issued < this.dirFirstMs[d]!) this.dirFirstMs[d] = issued;
      if (t > this.dirLastMs[d]!) this.dirLastMs[d] = t;
    }
    this.done.push(slot);
    if (this.waiter !== null && this.done.length >= this.waitNeed) this.kick();
  }

  private failed(slot: Slot, e: unknown): void {
    if (this.error === 0) {
      this.error = e instanceof BlockError ? e.errno : Errno.EIO;
      const what = slot.ddir === 0 ? 'read' : slot.ddir === 1 ? 'write' : 'trim';
      const message = e instanceof Error ? e.message : String(e);
      this.errorMessage = `${this.job.name}: ${what} offset=${slot.offset}, buflen=${slot.len}: ${message}`;
      this.errorReport = ioErrorReport(this.job, {
        ddir: slot.ddir,
        offset: slot.offset,
        length: slot.len,
        errno: this.error,
        message,
        blockSize: this.ctx.device.info.logicalBlockSize,
      });
    }
    this.stopped = true;
    this.done.push(slot);
    if (this.waiter !== null && this.done.length >= this.waitNeed) this.kick();
  }

  private async sync(): Promise<void> {
    const t0 = this.now();
    try {
      await this.ctx.device.flush();
    } catch (e) {
      if (this.error === 0) {
        this.error = e instanceof BlockError ? e.errno : Errno.EIO;
        this.errorMessage = `${this.job.name}: fsync: ${e instanceof Error ? e.message : String(e)}`;
        this.errorReport = [`fio: ${this.errorMessage} (${strerror(this.error)})`];
      }
      this.stopped = true;
      return;
    }
    if (this.measuring) {
      this.syncLat.record((this.now() - t0) * 1e6);
      this.syncIos++;
    }
  }

  /** The verify phase reads back every written block (the newest write where blocks overlap). */
  private verifySource(): (out: IoDesc) => boolean {
    const w = this.written;
    const n = w.length / 2;
    const order = new Array<number>(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => w[2 * a]! - w[2 * b]! || a - b);
    // Keep only blocks no later write overlapped (norandommap can overwrite; fio's rb-tree log drops those).
    const kept: number[] = [];
    for (const i of order) {
      let drop = false;
      while (kept.length > 0) {
        const j = kept[kept.length - 1]!;
        if (w[2 * j]! + w[2 * j + 1]! <= w[2 * i]!) break;
        if (j > i) {
          drop = true;
          break;
        }
        kept.pop();
      }
      if (!drop) kept.push(i);
    }
    let k = 0;
    return (out) => {
      if (k >= kept.length) return false;
      const i = kept[k++]!;
      out.ddir = 0;
      out.offset = w[2 * i]!;
      out.len = w[2 * i + 1]!;
      return true;
    };
  }

  private result(end: number, groupId: number): JobResult {
    const runtimeMs = Math.max(0, Math.round(end - this.measureStart));
    const dirs = this.stats.dirs;
    dirs.forEach((s, d) => {
      if (s.totalIos > 0) s.runtimeMs = Math.max(1, Math.round(this.dirLastMs[d]! - this.dirFirstMs[d]!));
    });
    const cpu = process.cpuUsage(this.cpu0);
    const ru = process.resourceUsage();
    const ru0 = this.ru0 ?? ru;
    const wallUs = Math.max(1, (end - this.measureStart) * 1000);
    const depthTotal = this.stats.depthCounts.reduce((a, b) => a + b, 0);
    return {
      job: this.job,
      groupId,
      error: this.error,
      errorMessage: this.errorMessage,
      ...(this.error === 0 ? {} : { errorReport: this.errorReport }),
      dirs,
      sync: { totalIos: this.syncIos, lat: this.syncLat },
      runtimeMs,
      startedAt: this.measureEpoch,
      usrCpu: (cpu.user / wallUs) * 100,
      sysCpu: (cpu.system / wallUs) * 100,
      ctx: ru.voluntaryContextSwitches + ru.involuntaryContextSwitches - (ru0.voluntaryContextSwitches + ru0.involuntaryContextSwitches),
      majf: ru.majorPageFault - ru0.majorPageFault,
      minf: ru.minorPageFault - ru0.minorPageFault,
      iodepthLevels: Array.from(this.stats.depthCounts, (c) => (depthTotal > 0 ? (c * 100) / depthTotal : 0)),
      issued: [...this.stats.issued] as PerDdir<number>,
      verifyFailures: this.failures,
    };
  }
}

/** startdelay: a fixed time, or a random point in its range drawn per clone (repeatable with the job's seed). */
export function startDelayMs(job: FioJob, baseSeed: number): number {
  const [lo, hi] = job.startDelayUs;
  if (hi <= lo) return lo / 1000;
  const r = new Taus88(streamSeed(baseSeed, job.threadNumber, STREAM.STARTDELAY));
  return (lo + r.frand() * (hi - lo)) / 1000;
}

function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
