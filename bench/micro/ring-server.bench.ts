// RingServer's own cost per request, on each data path, with no guest thread: a frontend in this
// thread keeps 32 requests in flight on a one-page ring over a RAM disk, through a minimal grant
// table (each ref is one frame of a SharedArrayBuffer). Reports requests/s and CPU microseconds per
// request (process.cpuUsage, this thread doing both sides), median of a few windows per case. The
// frontend and the fake grant table cost the same whatever the ring server does, so differences
// between two builds of RingServer show here far more steadily than through `bench --suite blkif`.
//
//   npx tsc -p . && node dist/bench/micro/ring-server.bench.js [--seconds 0.5] [--windows 5] [--path map,persistent,copy] [--json]
import { parseArgs } from 'node:util';
import { BlkifRequest, BlkifResponse, decodeResponse, encodeIndirectSegments, encodeRequest } from '../../src/blkif/codec.ts';
import { BLKIF_OP, BLKIF_RSP } from '../../src/blkif/constants.ts';
import { FrontRing, SharedRing, frontRingInit } from '../../src/blkif/ring.ts';
import { createRamDisk } from '../../src/block/ram.ts';
import { InflightBudget } from '../../src/blkback/inflight-budget.ts';
import { RingServer } from '../../src/blkback/ring-server.ts';
import type { DataPath } from '../../src/blkback/ring-server.ts';
import { VbdStats } from '../../src/blkback/stats.ts';
import { GNTST, PAGE_SIZE } from '../../src/hypervisor/types.ts';
import type { BackendGrants, EventChannel, GrantCopyEnd, GrantCopyOp, GrantMapping } from '../../src/hypervisor/types.ts';

const GUEST = 5;
const ABI = 'x86_64' as const;
const QD = 32;
const MAX_SEGS = 16;

/** A grant table where ref n is frame n of guest memory, every grant valid and writable. */
class FlatGrants implements BackendGrants {
  readonly memory: Uint8Array;
  readonly #ours = new Set<ArrayBufferLike>();
  constructor(frames: number) {
    this.memory = new Uint8Array(new SharedArrayBuffer(frames * PAGE_SIZE));
  }
  map(_domid: number, refs: ArrayLike<number>, count: number): GrantMapping {
    const pages: Uint8Array[] = [];
    for (let i = 0; i < count; i++) pages.push(this.memory.subarray(refs[i]! * PAGE_SIZE, (refs[i]! + 1) * PAGE_SIZE));
    return { pages, unmap: () => undefined };
  }
  copy(ops: readonly GrantCopyOp[]): number[] {
    const status: number[] = [];
    for (const op of ops) {
      this.#view(op.dest, op.length).set(this.#view(op.source, op.length));
      status.push(GNTST.okay);
    }
    return status;
  }
  allocBuffer(bytes: number): Uint8Array {
    const b = new Uint8Array(new SharedArrayBuffer(bytes));
    this.#ours.add(b.buffer);
    return b;
  }
  #view(end: GrantCopyEnd, length: number): Uint8Array {
    if ('buffer' in end) return end.buffer;
    const at = end.ref * PAGE_SIZE + end.offset;
    return this.memory.subarray(at, at + length);
  }
}

/** Both ends of an event channel in one thread: a notify runs the other side's handler from setImmediate. */
class LocalEvents implements EventChannel {
  readonly localPort = 1;
  #handler: () => void = () => undefined;
  #pending = false;
  peer: LocalEvents | null = null;
  notify(): void {
    const peer = this.peer!;
    if (peer.#pending) return;
    peer.#pending = true;
    setImmediate(() => {
      peer.#pending = false;
      peer.#handler();
    });
  }
  onEvent(handler: () => void): void {
    this.#handler = handler;
  }
  mask(): void {}
  unmask(): void {}
  close(): void {}
}

interface Case {
  readonly path: DataPath;
  readonly write: boolean;
  readonly segments: number;
}

interface Result {
  readonly path: DataPath;
  readonly rw: string;
  readonly kib: number;
  readonly requestsPerSecond: number;
  readonly cpuUsPerRequest: number;
}

async function runCase(c: Case, seconds: number, windows: number): Promise<Result> {
  // Frame 0: the ring; then per slot MAX_SEGS data frames and one indirect page.
  const perSlot = MAX_SEGS + 1;
  const grants = new FlatGrants(1 + QD * perSlot);
  const ring = new SharedRing([grants.memory.subarray(0, PAGE_SIZE)], ABI);
  frontRingInit(ring);
  const front = new FrontRing(ring);
  const back = new LocalEvents();
  const fe = new LocalEvents();
  back.peer = fe;
  fe.peer = back;
  const disk = createRamDisk(256 << 20);
  const server = new RingServer({
    ring,
    abi: ABI,
    frontendDomid: GUEST,
    grants,
    events: back,
    device: disk,
    readOnly: false,
    discard: false,
    maxIndirectSegments: 256,
    dataPath: c.path,
    stats: new VbdStats(),
    budget: new InflightBudget(1024),
    name: 'bench',
    logError: (m) => {
      throw new Error(m);
    },
  });
  // One encoded request per slot, reused: slot i reads or writes its own frames at its own sectors.
  const slots: Uint8Array[] = [];
  const req = new BlkifRequest();
  for (let i = 0; i < QD; i++) {
    const base = 1 + i * perSlot;
    const bytes = new Uint8Array(ring.stride);
    req.idLo = i;
    req.idHi = 0;
    req.sectorNumber = i * 4096 + 8;
    req.handle = 0;
    const op = c.write ? BLKIF_OP.WRITE : BLKIF_OP.READ;
    if (c.segments <= 11) {
      req.operation = op;
      req.nrSegments = c.segments;
      for (let s = 0; s < c.segments; s++) {
        req.segGref[s] = base + s;
        req.segFirst[s] = 0;
        req.segLast[s] = 7;
      }
    } else {
      req.operation = BLKIF_OP.INDIRECT;
      req.indirectOp = op;
      req.indirectNrSegments = c.segments;
      req.indirectGrefs.fill(0);
      req.indirectGrefs[0] = base + MAX_SEGS;
      const gref = new Uint32Array(c.segments);
      for (let s = 0; s < c.segments; s++) gref[s] = base + s;
      const page = grants.memory.subarray((base + MAX_SEGS) * PAGE_SIZE, (base + MAX_SEGS + 1) * PAGE_SIZE);
      encodeIndirectSegments(page, c.segments, gref, new Uint8Array(c.segments), new Uint8Array(c.segments).fill(7), 0);
    }
    encodeRequest(ABI, req, bytes);
    slots.push(bytes);
  }
  const rsp = new Uint8Array(ring.stride);
  const decoded = new BlkifResponse();
  let answered = 0;
  let stopping = false;
  let drained: () => void = () => undefined;
  let outstanding = 0;
  const submit = (slot: number): void => {
    front.putRequest(slots[slot]!);
    outstanding++;
  };
  fe.onEvent(() => {
    let more = true;
    while (more) {
      while (front.takeResponse(rsp)) {
        decodeResponse(ABI, rsp, decoded);
        if (decoded.status !== BLKIF_RSP.OKAY) throw new Error(`request ${decoded.idLo}: status ${decoded.status}`);
        answered++;
        outstanding--;
        if (!stopping) submit(decoded.idLo);
      }
      more = front.finalCheckForResponses();
    }
    if (front.pushRequestsAndCheckNotify()) fe.notify();
    if (stopping && outstanding === 0) drained();
  });
  for (let i = 0; i < QD; i++) submit(i);
  if (front.pushRequestsAndCheckNotify()) fe.notify();

  const sample = async (): Promise<{ rate: number; cpu: number }> => {
    const a0 = answered;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const cpu = process.cpuUsage(c0);
    const n = answered - a0;
    return { rate: n / ((performance.now() - t0) / 1000), cpu: (cpu.user + cpu.system) / n };
  };
  await sample(); // warm-up window
  const rates: number[] = [];
  const cpus: number[] = [];
  for (let w = 0; w < windows; w++) {
    const s = await sample();
    rates.push(s.rate);
    cpus.push(s.cpu);
  }
  stopping = true;
  await new Promise<void>((resolve) => {
    drained = resolve;
    if (outstanding === 0) resolve();
  });
  await server.stop();
  await disk.close();
  return { path: c.path, rw: c.write ? 'write' : 'read', kib: c.segments * 4, requestsPerSecond: median(rates), cpuUsPerRequest: median(cpus) };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '0.5' },
    windows: { type: 'string', default: '5' },
    path: { type: 'string', default: 'map,persistent,copy' },
    json: { type: 'boolean', default: false },
  },
});
const paths = values.path.split(',') as DataPath[];
const seconds = Number(values.seconds);
const windows = Number(values.windows);
// Warm-up, not reported: every path's code compiled before the first measured case.
for (const path of paths) for (const write of [false, true]) await runCase({ path, write, segments: 16 }, 0.1, 1);
const results: Result[] = [];
for (const path of paths) {
  for (const segments of [1, 11, 16]) {
    for (const write of [false, true]) {
      const r = await runCase({ path, write, segments }, seconds, windows);
      results.push(r);
      if (!values.json) {
        console.log(
          `${r.path.padEnd(10)} ${r.rw.padEnd(5)} ${String(r.kib).padStart(3)} KiB QD${QD}: ${Math.round(r.requestsPerSecond).toLocaleString('en-US').padStart(9)} req/s, ${r.cpuUsPerRequest.toFixed(2)} CPU us/req`,
        );
      }
    }
  }
}
if (values.json) console.log(JSON.stringify({ results }));
