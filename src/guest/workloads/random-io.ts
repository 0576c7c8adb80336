// Guest workload: the benchmark's random-I/O load on one disk.
import type { GuestContext } from '../context.ts';
import { runRandomIo } from '../../loadgen/random-io.ts';
import type { RandomIoParams } from '../../loadgen/random-io.ts';

export default async function randomIo(ctx: GuestContext, params: unknown): Promise<unknown> {
  const p = params as RandomIoParams & { disk?: string };
  const disk = ctx.disks.get(p.disk ?? 'xvda');
  if (disk === undefined) throw new Error(`guest ${ctx.name} has no disk ${p.disk ?? 'xvda'}`);
  const result = await runRandomIo(disk, (bytes) => ctx.allocBuffer(bytes), p);
  return { ...result, front: { ...disk.stats } };
}
