// Guest workload of the scale benchmark (src/bench/scale-bench.ts): boots with no disk, connects
// blkfront to the one the host hot-plugs when told (so the host can weigh the backend's memory
// before and after the rings connect), then keeps `iodepth` random reads of `bs` bytes in flight
// until told to stop, counting each read and checking its stamp in the shared control block.
import { Blkfront } from '../../blkfront/blkfront.ts';
import { Rng } from '../../loadgen/pattern.ts';
import { hasStamp, ScaleControl, ScalePhase, STAMP_BLOCK } from '../../loadgen/scale-control.ts';
import type { GuestContext } from '../context.ts';

export interface ScaleReaderParams {
  readonly control: SharedArrayBuffer;
  readonly guests: number;
  /** This guest's slot in the control block, 0-based. */
  readonly index: number;
  readonly devid: number;
  readonly bs: number;
  readonly iodepth: number;
  readonly seed: number;
  /** Rings to ask for (multi-queue), capped by the backend's multi-queue-max-queues. */
  readonly queues: number;
}

export type ScaleReaderStep = 'booted' | 'connected' | 'idle';

export interface ScaleReaderResult {
  readonly reads: number;
  readonly bad: number;
  readonly ringPages: number;
  readonly ringSlots: number;
  /** blkfront's counters over the whole run: how much each wake-up and each notify carried. */
  readonly responses: number;
  readonly events: number;
  readonly requests: number;
  readonly notifies: number;
}

export default async function scaleReader(ctx: GuestContext, params: unknown): Promise<ScaleReaderResult> {
  const p = params as ScaleReaderParams;
  const control = new ScaleControl(p.control, p.guests);
  // A pending Atomics.waitAsync does not keep a thread alive, and nothing else may while we wait.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  try {
    ctx.report('booted' satisfies ScaleReaderStep);
    await control.reach(ScalePhase.Connect);
    const disk = await Blkfront.connect(ctx.hv, p.devid, `${ctx.name}:scale`, { queues: p.queues });
    try {
      ctx.report('connected' satisfies ScaleReaderStep);
      await control.reach(ScalePhase.Run);
      const blocks = Math.floor(disk.info.size / p.bs);
      const stampsPerRead = p.bs / STAMP_BLOCK;
      const rng = new Rng(p.seed);
      const lane = async (): Promise<void> => {
        const buffer = ctx.allocBuffer(p.bs).subarray(0, p.bs);
        const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
        const iov = [buffer];
        while (control.phase === ScalePhase.Run) {
          const block = rng.below(blocks);
          await disk.readv(block * p.bs, iov);
          if (!hasStamp(view, 0, block * stampsPerRead)) control.countBad(p.index);
          control.countRead(p.index);
        }
      };
      await Promise.all(Array.from({ length: p.iodepth }, lane));
      ctx.report('idle' satisfies ScaleReaderStep);
      await control.reach(ScalePhase.Done);
      const { responses, events, requests, notifies } = disk.stats;
      return {
        reads: control.reads(p.index),
        bad: control.bad(p.index),
        ringPages: disk.ringPages,
        ringSlots: disk.ringSize,
        responses,
        events,
        requests,
        notifies,
      };
    } finally {
      await disk.close();
    }
  } finally {
    clearInterval(keepAlive);
  }
}
