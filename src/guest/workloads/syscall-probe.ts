// Guest workload for the syscall benchmark: reports the worker's thread id first (so the host can
// leave this thread's system calls out of the backend's), then runs the random-I/O load.
import { createRequire } from 'node:module';
import type { GuestContext } from '../context.ts';
import { runRandomIo } from '../../loadgen/random-io.ts';
import type { RandomIoParams } from '../../loadgen/random-io.ts';

const require = createRequire(import.meta.url);

function threadId(): number {
  const koffi = require('koffi') as typeof import('koffi');
  const gettid = koffi.load('libc.so.6').func('int gettid()') as () => number;
  return gettid();
}

export default async function syscallProbe(ctx: GuestContext, params: unknown): Promise<unknown> {
  const p = params as RandomIoParams;
  const disk = ctx.disks.get('xvda');
  if (disk === undefined) throw new Error(`guest ${ctx.name} has no disk xvda`);
  ctx.report({ tid: threadId() });
  return runRandomIo(disk, (bytes) => ctx.allocBuffer(bytes), p);
}
