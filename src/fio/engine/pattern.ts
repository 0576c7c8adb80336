// The I/O pattern of one job: which direction, offset and length comes next (fio's io_u.c
// get_rw_ddir / get_next_offset / get_next_buflen / mark_random_map, and backend.c keep_running for
// loops, io_size and time_based). Pure: no device, no clock, so tests can read it I/O by I/O.
import type { Ddir, FioJob } from '../job.ts';
import { createPicker, type BlockPicker } from './distribution.ts';
import { RandomMap } from './random-map.ts';
import { STREAM, streamSeed, Taus88 } from './rand.ts';
import type { JobGeometry } from './region.ts';

export interface IoDesc {
  ddir: Ddir;
  /** Absolute byte offset on the device. */
  offset: number;
  len: number;
}

/** 2^32 / 100: a 32-bit random value below `cum * PERC_SCALE` falls in the first `cum` percent. */
const PERC_SCALE = 4294967296 / 100;

export class WorkloadPattern {
  readonly geo: JobGeometry;
  private readonly job: FioJob;
  private readonly offRand: Taus88;
  private readonly mixRand: Taus88;
  private readonly bsRand: Taus88;
  readonly map: RandomMap | null;
  private readonly pickers: (BlockPicker | null)[];
  private readonly lastBlock: [number, number, number];
  private readonly lastEnd: [number, number, number] = [0, 0, 0];
  private readonly started: [boolean, boolean, boolean] = [false, false, false];
  private readonly maxBsAll: number;
  /** rw=rw or randrw: the direction is drawn per I/O. */
  private readonly mixed: boolean;
  /** trimwrite or randtrimwrite: each trim is followed by a write of the same blocks. */
  private readonly trimWrite: boolean;
  private readonly rwmixread: number;
  private readonly firstDdir: Ddir;
  /** bssplit per direction as parallel arrays: sizes, and cumulative thresholds on a 32-bit draw. */
  private readonly splitBs: Float64Array[];
  private readonly splitCut: Float64Array[];
  private seqCounter = 0;
  private loopsLeft: number;
  private loopBytes = 0;
  private ios = 0;
  private trimWritePending = false;
  private readonly pendingWrite: IoDesc = { ddir: 1, offset: 0, len: 0 };
  /** Passes started (1 for the first); tests read it. */
  passes = 1;
  /** The runner's rate limiter: may swap a mixed job's direction for one that is due (fio's rate_ddir). */
  rateGate: ((d: Ddir) => Ddir) | null = null;

  constructor(job: FioJob, geo: JobGeometry, baseSeed: number) {
    this.job = job;
    this.geo = geo;
    const tn = job.threadNumber;
    this.offRand = new Taus88(streamSeed(baseSeed, tn, STREAM.OFFSET));
    this.mixRand = new Taus88(streamSeed(baseSeed, tn, STREAM.RWMIX));
    this.bsRand = new Taus88(streamSeed(baseSeed, tn, STREAM.BS));
    this.loopsLeft = Math.max(1, job.loops);
    this.map = geo.useMap && geo.bytes >= geo.mapUnit ? new RandomMap(Math.floor(geo.bytes / geo.mapUnit)) : null;
    const lb: [number, number, number] = [0, 0, 0];
    for (const d of [0, 1, 2] as const) {
      const a = geo.align[d];
      const slack = Math.max(0, geo.minBs[d] - a);
      lb[d] = a > 0 && geo.bytes > slack ? Math.floor((geo.bytes - slack) / a) : 0;
    }
    this.lastBlock = lb;
    this.maxBsAll = Math.max(...geo.ddirs.map((d) => geo.maxBs[d]));
    this.mixed = job.rw === 'rw' || job.rw === 'randrw';
    this.trimWrite = job.rw === 'trimwrite' || job.rw === 'randtrimwrite';
    this.rwmixread = job.rwmixread;
    this.firstDdir = geo.ddirs[0]!;
    // Entries with no share never win; `r < cum * PERC_SCALE` is kept as a product so the
    // comparison rounds exactly as it did when computed per I/O.
    this.splitBs = [];
    this.splitCut = [];
    for (const d of [0, 1, 2] as const) {
      const kept = job.bssplit[d].filter((e) => e.perc > 0);
      const bs = new Float64Array(kept.length);
      const cut = new Float64Array(kept.length);
      let cum = 0;
      kept.forEach((e, i) => {
        cum += e.perc;
        bs[i] = e.bs;
        cut[i] = cum * PERC_SCALE;
      });
      this.splitBs.push(bs);
      this.splitCut.push(cut);
    }
    const dist = job.randomDistribution;
    if (geo.random && dist.kind !== 'random') {
      // zipf's zeta sum is costly: share one picker between directions with the same block count.
      const distRand = new Taus88(streamSeed(baseSeed, tn, STREAM.DIST));
      const byBlocks = new Map<number, BlockPicker>();
      this.pickers = lb.map((n, d) => {
        if (n === 0) return null;
        let p = byBlocks.get(n * 1e6 + geo.align[d as Ddir]);
        if (p === undefined) {
          p = createPicker(dist, n, distRand, geo.align[d as Ddir], geo.bytes);
          byBlocks.set(n * 1e6 + geo.align[d as Ddir], p);
        }
        return p;
      });
    } else {
      this.pickers = [null, null, null];
    }
  }

  /** Bytes issued in the current loop and I/Os issued overall (after the last resetCounters). */
  get issuedBytes(): number {
    return this.loopBytes;
  }

  get issuedIos(): number {
    return this.ios;
  }

  /** ramp_time is over: fio zeroes its byte and I/O counts (reset_all_stats), not the map. */
  resetCounters(): void {
    this.loopBytes = 0;
    this.ios = 0;
  }

  /** Fills `out` with the next I/O; false when the workload is finished. */
  next(out: IoDesc): boolean {
    const job = this.job;
    for (let guard = 0; guard < 4; ) {
      if (job.numberIos > 0 && this.ios >= job.numberIos) return false;
      if (this.trimWritePending) {
        this.trimWritePending = false;
        out.ddir = 1;
        out.offset = this.pendingWrite.offset;
        out.len = this.pendingWrite.len;
        return this.count(out);
      }
      if (!job.timeBased && this.loopBytes >= this.geo.target) {
        if (!this.endLoop()) return false;
        continue;
      }
      let d = this.chooseDdir();
      if (this.rateGate !== null && this.mixed) d = this.rateGate(d);
      if (this.place(d, out)) {
        if (this.trimWrite) {
          this.trimWritePending = true;
          this.pendingWrite.offset = out.offset;
          this.pendingWrite.len = out.len;
        }
        return this.count(out);
      }
      // The pass is exhausted (map full, or a sequential stream reached the end).
      guard++;
      if (job.timeBased || ((job.ioSize > 0 || job.ioSizePercent > 0) && this.geo.target - this.loopBytes >= this.maxBsAll)) {
        this.newPass();
        continue;
      }
      if (!this.endLoop()) return false;
    }
    return false;
  }

  /** Back to the start of the region with an empty map (a new loop, or a time_based wrap). */
  newPass(): void {
    this.map?.reset();
    this.lastEnd.fill(0);
    this.started.fill(false);
    this.seqCounter = 0;
    this.trimWritePending = false;
    this.passes++;
  }

  private count(out: IoDesc): boolean {
    // trimwrite: "io_size=64K trims 64K and also writes 64K on the same blocks" (HOWTO), so the
    // trims do not count towards io_size or number_ios.
    if (out.ddir === 2 && this.trimWrite) return true;
    this.loopBytes += out.len;
    this.ios++;
    return true;
  }

  private endLoop(): boolean {
    this.loopsLeft--;
    if (this.loopsLeft <= 0) return false;
    this.newPass();
    this.loopBytes = 0;
    return true;
  }

  private chooseDdir(): Ddir {
    if (this.mixed) {
      // fio draws 1..100 and compares with rwmixread, so the mix counts I/Os, not bytes.
      return (this.mixRand.next() % 100) + 1 <= this.rwmixread ? 0 : 1;
    }
    return this.firstDdir;
  }

  private place(d: Ddir, out: IoDesc): boolean {
    const geo = this.geo;
    const suffix = this.job.rwSuffix;
    let rel: number;
    let mapIdx = -1;
    if (!geo.random) {
      rel = this.lastEnd[d];
      if (this.started[d] && suffix !== 0) {
        // rw=write:4k adds 4k after each I/O; a negative add walks backwards and wraps to the end.
        rel += suffix;
        if (rel < 0) rel = Math.max(0, geo.bytes + suffix);
        // Past the end: fio wraps to the start when the region ends at the end of the file
        // (measured: write:4k on a 64k file does 16 I/Os), and stops when it ends inside it (8 I/Os).
        if (rel >= geo.bytes) {
          if (!geo.toDeviceEnd && !this.job.timeBased) return false;
          rel = 0;
        }
      }
    } else if (suffix > 0 && this.seqCounter++ % suffix !== 0) {
      // rw=randread:N: N-1 sequential I/Os follow each random one.
      rel = this.lastEnd[d];
    } else {
      const lastb = this.lastBlock[d];
      if (lastb === 0) return false;
      const picker = this.pickers[d];
      const map = this.map;
      if (picker !== null && picker !== undefined) {
        rel = picker.pick(d) * geo.align[d];
      } else if (map !== null) {
        if (map.isFull) return false;
        rel = this.offRand.below(lastb) * geo.align[d];
        mapIdx = Math.floor(rel / geo.mapUnit);
        if (!map.isFree(mapIdx)) {
          mapIdx = map.nextFree(mapIdx);
          if (mapIdx < 0) return false;
          rel = mapIdx * geo.mapUnit;
          const a = geo.align[d];
          if (rel % a !== 0) {
            rel += a - (rel % a);
            mapIdx = Math.floor(rel / geo.mapUnit);
          }
        }
      } else {
        rel = this.offRand.below(lastb) * geo.align[d];
      }
    }
    let len = this.pickLen(d, geo.bytes - rel);
    if (len === 0) return false;
    if (this.map !== null) {
      // mark_random_map: trim the I/O to the free run at its start (sequential `:N` I/Os are
      // allowed onto used blocks, as fio's IO_U_F_BUSY_OK).
      const unit = geo.mapUnit;
      const idx = mapIdx >= 0 ? mapIdx : Math.floor(rel / unit);
      const n = this.map.setRun(idx, Math.ceil(len / unit));
      if (mapIdx >= 0 && n > 0 && n * unit < len) len = n * unit;
    }
    this.started[d] = true;
    this.lastEnd[d] = rel + len;
    out.ddir = d;
    out.offset = geo.start + rel;
    out.len = len;
    return true;
  }

  /** get_next_buflen: a block size for an I/O with `remaining` bytes of region after its offset. */
  private pickLen(d: Ddir, remaining: number): number {
    const geo = this.geo;
    const minBs = geo.minBs[d];
    const maxBs = geo.maxBs[d];
    if (remaining < minBs || minBs <= 0) return 0;
    if (minBs === maxBs) return minBs;
    const splitBs = this.splitBs[d]!;
    const splitCut = this.splitCut[d]!;
    const entries = splitBs.length;
    for (let tries = 0; tries < 1000; tries++) {
      const r = this.bsRand.next();
      let len = 0;
      if (this.job.bssplit[d].length > 0) {
        for (let i = 0; i < entries; i++) {
          len = splitBs[i]!;
          if (r < splitCut[i]! && len <= remaining) break;
        }
      } else {
        // bsrange: fio draws min + max * u, aligns down to min and caps at max, which makes the
        // multiples of the low end uniform (measured with fio 3.33: 1k-4k gives 25% each).
        len = minBs + Math.floor((maxBs * r) / 4294967296);
      }
      if (!this.job.bsUnaligned) len -= len % minBs;
      if (len > maxBs) len = maxBs;
      if (len <= remaining && len > 0) return len;
    }
    return minBs;
  }
}
