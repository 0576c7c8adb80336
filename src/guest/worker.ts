// Entry point of a guest worker thread: attach to the simulated hypervisor, connect blkfront for
// each disk, run the workload, close the disks (Closing/Closed with the backend), report the result.
import { parentPort, workerData } from 'node:worker_threads';
import { Blkfront } from '../blkfront/blkfront.ts';
import { attachGuest } from '../hypervisor/sim/guest.ts';
import type { GuestDomainHandles } from '../hypervisor/sim/guest.ts';
import { clientFromPort } from '../xenstore/client.ts';
import type { GuestContext, GuestMessage, GuestWorkerData, GuestWorkload } from './context.ts';

const data = workerData as GuestWorkerData;
const post = (message: GuestMessage): void => parentPort!.postMessage(message);

async function main(): Promise<void> {
  const xenstore = clientFromPort(data.xenstorePort, data.domid);
  const hv = attachGuest(data.handles as GuestDomainHandles, xenstore);
  const disks = new Map<string, Blkfront>();
  try {
    for (const disk of data.disks) {
      disks.set(disk.vdev, await Blkfront.connect(hv, disk.devid, `${data.name}:${disk.vdev}`, data.front));
    }
    const buffers = new Map<Uint8Array, { frame: number; pages: number }>();
    const ctx: GuestContext = {
      domid: data.domid,
      name: data.name,
      hv,
      disks,
      allocBuffer(bytes) {
        const pages = Math.max(1, Math.ceil(bytes / 4096));
        const frame = hv.memory.allocPages(pages);
        if (frame < 0) throw new Error(`guest ${data.name}: out of guest memory allocating ${bytes} bytes`);
        const view = hv.memory.view(frame, pages);
        buffers.set(view, { frame, pages });
        return view;
      },
      freeBuffer(buffer) {
        const entry = buffers.get(buffer);
        if (entry === undefined) return;
        buffers.delete(buffer);
        hv.memory.freePages(entry.frame, entry.pages);
      },
      report(message) {
        post({ type: 'report', message });
      },
    };
    const mod = (await import(data.workload)) as { default: GuestWorkload };
    const result = await mod.default(ctx, data.params);
    for (const disk of disks.values()) await disk.close();
    post({ type: 'result', result });
  } finally {
    xenstore.close();
  }
}

main().catch((err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err));
  post(e.stack === undefined ? { type: 'error', message: e.message } : { type: 'error', message: e.message, stack: e.stack });
});
