// Guest workload: the integrity load on one of the guest's disks, plus blkfront's counters.
import type { GuestContext } from '../context.ts';
import { runVerify } from '../../loadgen/verify.ts';
import type { VerifyParams } from '../../loadgen/verify.ts';

export default async function verify(ctx: GuestContext, params: unknown): Promise<unknown> {
  const p = (params ?? {}) as VerifyParams & { disk?: string };
  const name = p.disk ?? 'xvda';
  const disk = ctx.disks.get(name);
  if (disk === undefined) throw new Error(`guest ${ctx.name} has no disk ${name}`);
  const result = await runVerify(disk, (bytes) => ctx.allocBuffer(bytes), p);
  return { ...result, front: { ...disk.stats }, ringSize: disk.ringSize, abi: disk.abi, size: disk.info.size };
}
