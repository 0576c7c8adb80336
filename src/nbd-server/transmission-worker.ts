// A transmission worker: serves the transmission phase of the connections the main thread hands
// it (worker-pool.ts), each on its own duplicate of the socket's descriptor. It opens each export's
// store for itself (shared-store.ts: the same RAM chunks, or the same file through its own
// descriptor), so a flush here reaches the same memory or kernel file as a flush on any other
// thread: multi-conn's promise holds across workers. Counters live in memory the main thread
// reads; log lines go to it as they come (rate-limited here as on the main thread).
import { parentPort, workerData } from 'node:worker_threads';
import { openSharedStore } from '../block/shared-store.ts';
import type { BlockDevice } from '../block/types.ts';
import { NbdConnection } from './connection.ts';
import { countersIn, ProblemLog } from './counters.ts';
import { closeFd } from './fd-handoff.ts';
import { withZeroScanStatus } from './zero-scan.ts';
import type { FromTransmissionWorker, ToTransmissionWorker, TransmissionWorkerData, WorkerExport } from './worker-messages.ts';

const port = parentPort!;
const post = (m: FromTransmissionWorker): void => port.postMessage(m);

const counters = countersIn((workerData as TransmissionWorkerData).counters);
const problems = new ProblemLog((line) => post({ type: 'log', line }));
const devices = new Map<number, Promise<BlockDevice>>();
const connections = new Map<number, NbdConnection>();
const adopting = new Set<Promise<void>>();
let stopping = false;
let allClosed: (() => void) | undefined;

function deviceOf(e: WorkerExport): Promise<BlockDevice> {
  let device = devices.get(e.index);
  if (device === undefined) {
    if (e.store === undefined) return Promise.reject(new Error(`export '${e.name}': no store description came with it`));
    const store = e.store;
    device = openSharedStore(store).then((d) => (store.kind === 'ram' ? withZeroScanStatus(d, store) : d));
    devices.set(e.index, device);
  }
  return device;
}

async function adopt(m: Extract<ToTransmissionWorker, { type: 'connection' }>): Promise<void> {
  let device: BlockDevice;
  try {
    device = await deviceOf(m.export);
  } catch (err) {
    closeFd(m.fd);
    problems.report('worker-store', `nbd-server: ${m.label}: cannot open export '${m.export.name}' on a worker: ${(err as Error).message}; closing`);
    post({ type: 'closed', id: m.id });
    return;
  }
  if (stopping) {
    closeFd(m.fd);
    post({ type: 'closed', id: m.id });
    return;
  }
  const exp = { name: m.export.name, description: m.export.description, device, readOnly: m.export.readOnly };
  let connection: NbdConnection;
  try {
    connection = new NbdConnection(
      { fd: m.fd, leftover: m.leftover, negotiated: { export: exp, structuredReplies: m.structuredReplies, metaContext: m.metaContext } },
      {
        findExport: () => undefined,
        listExports: () => [],
        tlsMode: 'off',
        tls: undefined,
        counters,
        problems,
      },
      m.label,
      () => {
        connections.delete(m.id);
        post({ type: 'closed', id: m.id });
        if (connections.size === 0) allClosed?.();
      },
    );
  } catch (err) {
    // The descriptor was not wrapped (net.Socket refused it): ours to close.
    closeFd(m.fd);
    problems.report('internal', `nbd-server: ${m.label}: cannot adopt the socket on a worker: ${(err as Error).message}`);
    post({ type: 'closed', id: m.id });
    return;
  }
  connections.set(m.id, connection);
}

async function stop(): Promise<void> {
  stopping = true;
  await Promise.all(adopting);
  if (connections.size > 0) {
    const closed = new Promise<void>((resolve) => {
      allClosed = resolve;
    });
    for (const c of connections.values()) c.destroy();
    await closed;
  }
  for (const device of devices.values()) await (await device.catch(() => undefined))?.close().catch(() => undefined);
  post({ type: 'stopped' });
}

port.on('message', (m: ToTransmissionWorker) => {
  switch (m.type) {
    case 'connection':
      {
        const adopted = adopt(m).finally(() => adopting.delete(adopted));
        adopting.add(adopted);
      }
      break;
    case 'stop':
      void stop();
      break;
  }
});
post({ type: 'ready' });
