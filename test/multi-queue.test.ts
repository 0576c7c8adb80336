// Multi-queue, as Linux xen-blkback and xen-blkfront do it (xenbus.c connect_ring /
// read_per_ring_refs; xen-blkfront.c talk_to_blkback / negotiate_mq; blkif.h "Multiple Queues"):
//
//   backend dir    multi-queue-max-queues (before InitWait)
//   frontend dir   multi-queue-num-queues (only with more than one queue), ring-page-order,
//                  protocol, and per queue ring-ref* + event-channel: in the frontend dir itself
//                  with one queue, under queue-0 .. queue-(N-1) with several.
//
// First the test is the frontend: it writes those keys by hand, lays the rings out itself (header
// and request bytes at the offsets of protocol-notes §1.2/§1.4, not through our codec) and checks
// that blkback serves every queue of 1, 2 and 4, on both ABIs: each ring answers on its own event
// channel, and data written through one queue reads back through another and is in the store.
// Then bad multi-queue-num-queues values, and a real guest (blkfront in a worker) with vcpus = 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { attachGuest } from '../src/hypervisor/sim/guest.ts';
import type { EventChannel, GuestHypervisor } from '../src/hypervisor/types.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { HostOptions } from '../src/sim-host/host.ts';
import { connectInProcess } from '../src/xenstore/client.ts';
import type { MultiQueueReport } from './fixtures/multi-queue-guest.ts';
import { releasePath } from './fixtures/guest2/release.ts';
import { countBadSectors } from './helpers-guest.ts';

const MQ_GUEST = new URL('./fixtures/multi-queue-guest.js', import.meta.url);
const PAGE = 4096;
const MiB = 1 << 20;
const LE = true;
const XVDA = 51712;
const STATE = { InitWait: 2, Initialised: 3, Connected: 4, Closing: 5, Closed: 6 } as const;
const OP_READ = 0;
const OP_WRITE = 1;

type Abi = 'x86_64' | 'x86_32';
/** Where the fields of a read/write request sit (protocol-notes §1.2), and the ring entry stride. */
const LAYOUT: Record<Abi, { protocol: string; stride: number; id: number; sector: number; seg: number }> = {
  x86_64: { protocol: 'x86_64-abi', stride: 112, id: 8, sector: 16, seg: 24 },
  x86_32: { protocol: 'x86_32-abi', stride: 108, id: 4, sector: 12, seg: 20 },
};

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) assert.fail(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** One queue of the hand-made frontend: a ring in guest memory, its grants and its event channel. */
interface HandQueue {
  readonly frame: number;
  readonly pages: number;
  readonly refs: number[];
  readonly view: DataView;
  readonly words: Uint32Array;
  readonly size: number;
  readonly events: EventChannel;
  eventsSeen: number;
  reqProd: number;
  rspCons: number;
}

/** A guest domain on `host`, driven from this thread, with one disk whose frontend the test plays. */
class HandFront {
  readonly host: SimHost;
  readonly hv: GuestHypervisor;
  readonly domid: number;
  readonly abi: Abi;
  readonly fe: string;
  readonly be: string;
  readonly queues: HandQueue[] = [];

  private constructor(host: SimHost, hv: GuestHypervisor, abi: Abi) {
    this.host = host;
    this.hv = hv;
    this.domid = hv.domid;
    this.abi = abi;
    this.fe = `/local/domain/${hv.domid}/device/vbd/${XVDA}`;
    this.be = `/local/domain/0/backend/vbd/${hv.domid}/${XVDA}`;
  }

  /** A new domain with xvda on store `target`; resolves once blkback is in InitWait. */
  static async create(host: SimHost, name: string, target: string, abi: Abi): Promise<HandFront> {
    const domain = host.hypervisor.createDomain({ name, memoryBytes: 4 * MiB });
    const hv = attachGuest(domain.handles, connectInProcess(host.daemon, domain.domid));
    const front = new HandFront(host, hv, abi);
    await host.attachDisk(domain.domid, { target, vdev: 'xvda', readOnly: false, backendtype: 'phy' });
    await until('the backend is in InitWait', async () => (await host.xs.tryRead(`${front.be}/state`)) === String(STATE.InitWait));
    return front;
  }

  backendKey(key: string): Promise<string | undefined> {
    return this.host.xs.tryRead(`${this.be}/${key}`);
  }

  /** Allocates, zeroes and grants `count` rings of 2^order pages, each with an unbound event channel. */
  makeRings(count: number, order: number): void {
    const pages = 1 << order;
    const stride = LAYOUT[this.abi].stride;
    let size = 1;
    while (size * 2 <= Math.floor((pages * PAGE - 64) / stride)) size *= 2;
    for (let q = 0; q < count; q++) {
      const frame = this.hv.memory.allocPages(pages);
      assert.ok(frame >= 0, 'guest memory for the ring');
      const bytes = this.hv.memory.view(frame, pages).fill(0);
      const refs: number[] = [];
      for (let i = 0; i < pages; i++) refs.push(this.hv.grants.grantAccess(0, frame + i, false));
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const words = new Uint32Array(bytes.buffer, bytes.byteOffset, 4);
      // The frontend initialises the shared header: producers 0, both event thresholds 1.
      view.setUint32(4, 1, LE); // req_event
      view.setUint32(12, 1, LE); // rsp_event
      const queue: HandQueue = { frame, pages, refs, view, words, size, events: this.hv.events.allocUnbound(0), eventsSeen: 0, reqProd: 0, rspCons: 0 };
      queue.events.onEvent(() => void queue.eventsSeen++);
      this.queues.push(queue);
    }
  }

  /**
   * Writes the keys as Linux blkfront's talk_to_blkback lays them out, in one transaction, then
   * Initialised. `numQueues` overrides multi-queue-num-queues (a bad value); null writes none.
   */
  async publish(order: number, numQueues?: string | null): Promise<void> {
    const xs = this.hv.xenstore;
    const n = this.queues.length;
    await xs.transaction(async (tx) => {
      if (order > 0) await xs.write(`${this.fe}/ring-page-order`, String(order), tx);
      const num = numQueues === undefined ? (n > 1 ? String(n) : null) : numQueues;
      if (num !== null) await xs.write(`${this.fe}/multi-queue-num-queues`, num, tx);
      for (const [q, queue] of this.queues.entries()) {
        const dir = n > 1 || (numQueues !== undefined && numQueues !== null) ? `${this.fe}/queue-${q}` : this.fe;
        if (order === 0) await xs.write(`${dir}/ring-ref`, String(queue.refs[0]), tx);
        else for (let i = 0; i < queue.pages; i++) await xs.write(`${dir}/ring-ref${i}`, String(queue.refs[i]), tx);
        await xs.write(`${dir}/event-channel`, String(queue.events.localPort), tx);
      }
      await xs.write(`${this.fe}/protocol`, LAYOUT[this.abi].protocol, tx);
    });
    await xs.write(`${this.fe}/state`, String(STATE.Initialised));
  }

  /** A guest page filled with `fill`, granted to the backend (read-only for data it only reads). */
  dataPage(fill: (i: number) => number, readOnly: boolean): { frame: number; ref: number; bytes: Uint8Array } {
    const frame = this.hv.memory.allocPages(1);
    assert.ok(frame >= 0);
    const bytes = this.hv.memory.view(frame, 1);
    for (let i = 0; i < PAGE; i++) bytes[i] = fill(i);
    return { frame, ref: this.hv.grants.grantAccess(0, frame, readOnly), bytes };
  }

  /**
   * Puts one read or write of whole pages (one segment each, sectors 0..7) on queue `q`, publishes
   * it, notifies, and resolves with the response's status once it is answered on that ring.
   */
  async io(q: number, op: number, id: number, sector: number, refs: readonly number[]): Promise<number> {
    const queue = this.queues[q]!;
    const L = LAYOUT[this.abi];
    const at = 64 + (queue.reqProd & (queue.size - 1)) * L.stride;
    const v = queue.view;
    for (let i = 0; i < L.stride; i++) v.setUint8(at + i, 0);
    v.setUint8(at, op);
    v.setUint8(at + 1, refs.length); // nr_segments
    v.setUint16(at + 2, XVDA, LE); // handle
    v.setUint32(at + L.id, id, LE);
    v.setUint32(at + L.sector, sector, LE);
    for (const [i, ref] of refs.entries()) {
      const seg = at + L.seg + i * 8;
      v.setUint32(seg, ref, LE);
      v.setUint8(seg + 4, 0); // first_sect
      v.setUint8(seg + 5, 7); // last_sect
    }
    queue.reqProd++;
    Atomics.store(queue.words, 0, queue.reqProd); // req_prod, after the slot
    queue.events.notify();
    await until(`queue ${q} answers request ${id}`, () => Atomics.load(queue.words, 2) !== queue.rspCons);
    const rsp = 64 + (queue.rspCons & (queue.size - 1)) * L.stride;
    queue.rspCons++;
    v.setUint32(12, queue.rspCons + 1, LE); // rsp_event: tell us about the next one
    assert.equal(v.getUint32(rsp, LE), id, 'the response echoes the id');
    assert.equal(v.getUint32(rsp + 4, LE), 0);
    assert.equal(v.getUint8(rsp + 8), op, 'the response echoes the operation');
    return v.getInt16(rsp + 10, LE);
  }

  /** Closing, then Closed, each once the backend follows (it drains and unmaps every ring first). */
  async close(): Promise<void> {
    const xs = this.hv.xenstore;
    await xs.write(`${this.fe}/state`, String(STATE.Closing));
    await until('the backend is Closing', async () => Number(await this.backendKey('state')) >= STATE.Closing);
    await xs.write(`${this.fe}/state`, String(STATE.Closed));
    await until('the backend is Closed', async () => (await this.backendKey('state')) === String(STATE.Closed));
  }

  /** Whether every ring page's grant can be revoked: Xen refuses while the backend maps it. */
  ringsUnmapped(): boolean {
    let all = true;
    for (const queue of this.queues) for (const ref of queue.refs) all = this.hv.grants.endAccess(ref) && all;
    return all;
  }

  async destroy(): Promise<void> {
    await this.host.xs.rm(`/local/domain/0/backend/vbd/${this.domid}`).catch(() => undefined);
    await until('blkback dropped the device', () => !this.host.blkback.vbds.has(`${this.domid}/${XVDA}`));
    await this.host.xs.rm(`/local/domain/0/error/backend/vbd/${this.domid}`).catch(() => undefined);
    await this.host.xs.rm(`/local/domain/${this.domid}`).catch(() => undefined);
    // An open port keeps this thread's event dispatcher (and so the test process) alive.
    for (const queue of this.queues) queue.events.close();
    this.hv.xenstore.close();
    this.host.hypervisor.destroyDomain(this.domid);
  }
}

async function withHost(options: HostOptions, body: (host: SimHost, ram: BlockDevice) => Promise<void>): Promise<void> {
  const host = await SimHost.start(options);
  try {
    const ram = createRamDisk(4 * MiB);
    host.registerStore('mq', ram);
    await body(host, ram);
  } finally {
    await host.stop();
  }
}

for (const abi of ['x86_64', 'x86_32'] as const) {
  test(`${abi}: blkback serves 1, 2 and 4 queues laid out as Linux blkfront writes them; data crosses queues byte-exact`, async () => {
    await withHost({ maxQueues: 4 }, async (host, ram) => {
      for (const [n, order] of [
        [1, 0],
        [2, 1],
        [4, 2],
      ] as const) {
        const what = `${abi}, ${n} queue(s) of ${1 << order}-page rings`;
        const front = await HandFront.create(host, `mq-${abi}-${n}`, 'mq', abi);
        try {
          assert.equal(await front.backendKey('multi-queue-max-queues'), '4', `${what}: advertised before InitWait`);
          front.makeRings(n, order);
          await front.publish(order);
          await until(`${what}: Connected`, async () => (await front.backendKey('state')) === String(STATE.Connected));
          const vbd = host.blkback.vbds.get(`${front.domid}/${XVDA}`)!;
          assert.equal(vbd.queues, n, `${what}: one ring per queue`);
          assert.equal(vbd.ringPages, 1 << order);
          const stats = host.blkback.stats()[`${front.domid}/${XVDA}`] as { queues: number };
          assert.equal(stats.queues, n, 'blkback.stats() shows the queue count');

          // Each queue writes two pages of its own; the next queue reads them back.
          for (let q = 0; q < n; q++) {
            const seed = q * 37 + n * 11 + (abi === 'x86_32' ? 5 : 0);
            const src = [0, 1].map((p) => front.dataPage((i) => (i * 7 + p * 13 + seed) & 0xff, true));
            const sector = 16 * q + 8 * n;
            assert.equal(
              await front.io(
                q,
                OP_WRITE,
                1000 + q,
                sector,
                src.map((s) => s.ref),
              ),
              0,
              `${what}: write on queue ${q} answered OKAY`,
            );
            const dst = [0, 1].map(() => front.dataPage(() => 0xee, false));
            const r = (q + 1) % n;
            assert.equal(
              await front.io(
                r,
                OP_READ,
                2000 + q,
                sector,
                dst.map((d) => d.ref),
              ),
              0,
              `${what}: read on queue ${r} answered OKAY`,
            );
            for (const p of [0, 1])
              assert.equal(Buffer.compare(dst[p]!.bytes, src[p]!.bytes), 0, `${what}: page ${p} written on queue ${q} reads back on queue ${r}`);
            const stored = new Uint8Array(2 * PAGE);
            await ram.readv(sector * 512, [stored]);
            assert.equal(Buffer.compare(stored, Buffer.concat(src.map((s) => s.bytes))), 0, `${what}: the store holds what queue ${q} wrote`);
            for (const page of [...src, ...dst]) {
              assert.ok(front.hv.grants.endAccess(page.ref), 'the backend let go of the data grant');
              front.hv.memory.freePages(page.frame, 1);
            }
          }
          for (const [q, queue] of front.queues.entries()) {
            assert.equal(queue.rspCons, 2, `${what}: queue ${q} answered its write and its read`);
            assert.ok(queue.eventsSeen >= 1, `${what}: queue ${q}'s answers came on its own event channel`);
          }
          assert.equal(vbd.stats.wr_req, n, `${what}: every queue counts into the one VbdStats`);
          assert.equal(vbd.stats.rd_req, n);
          assert.equal(vbd.stats.wr_sect, 16 * n);
          assert.equal(front.ringsUnmapped(), false, `${what}: the rings are mapped while connected`);
          await front.close();
          assert.equal(vbd.queues, n);
          assert.equal(vbd.inflight, 0);
          assert.equal(front.ringsUnmapped(), true, `${what}: Closed unmapped every queue's ring`);
        } finally {
          await front.destroy();
        }
      }
    });
  });
}

test('bad multi-queue-num-queues: 0, above the maximum, not a number; each a xenbus error naming the key, nothing mapped', async () => {
  await withHost({ maxQueues: 4 }, async (host) => {
    for (const [value, why] of [
      ['0', /multi-queue-num-queues: the frontend asked for 0 queues; this backend serves 1 to 4/],
      ['5', /multi-queue-num-queues: the frontend asked for 5 queues; this backend serves 1 to 4/],
      ['two', /multi-queue-num-queues: the frontend asked for 'two', which is not a number of queues/],
      ['2x', /multi-queue-num-queues: the frontend asked for '2x'/],
      ['-1', /multi-queue-num-queues: the frontend asked for '-1'/],
    ] as const) {
      const front = await HandFront.create(host, `mq-bad-${value}`, 'mq', 'x86_64');
      try {
        // Well-formed rings under queue-0 and queue-1: only the count is wrong.
        front.makeRings(2, 0);
        await front.publish(0, value);
        const error = `/local/domain/0/error/backend/vbd/${front.domid}/${XVDA}/error`;
        await until(`num-queues '${value}': the error is recorded`, async () => (await host.xs.tryRead(error)) !== undefined);
        assert.match((await host.xs.tryRead(error))!, why);
        assert.match(
          (await host.xs.tryRead(error))!,
          new RegExp(`/local/domain/${front.domid}/device/vbd/${XVDA}/multi-queue-num-queues`),
          'the message names the full key',
        );
        await until(`num-queues '${value}': the backend gives up (Closing)`, async () => (await front.backendKey('state')) === String(STATE.Closing));
        const vbd = host.blkback.vbds.get(`${front.domid}/${XVDA}`)!;
        assert.equal(vbd.queues, 0, 'no queue was set up');
        assert.equal(front.ringsUnmapped(), true, 'no ring was mapped');
      } finally {
        await front.destroy();
      }
    }
  });
});

test('maxQueues 1: multi-queue-max-queues says 1, and a frontend asking for 2 queues is refused', async () => {
  await withHost({ maxQueues: 1 }, async (host) => {
    const front = await HandFront.create(host, 'mq-one', 'mq', 'x86_32');
    try {
      assert.equal(await front.backendKey('multi-queue-max-queues'), '1', 'Linux writes the key even for 1');
      front.makeRings(2, 0);
      await front.publish(0);
      const error = `/local/domain/0/error/backend/vbd/${front.domid}/${XVDA}/error`;
      await until('the error is recorded', async () => (await host.xs.tryRead(error)) !== undefined);
      assert.match((await host.xs.tryRead(error))!, /multi-queue-num-queues: the frontend asked for 2 queues; this backend serves 1 to 1/);
      await until('Closing', async () => (await front.backendKey('state')) === String(STATE.Closing));
      assert.equal(front.ringsUnmapped(), true);
    } finally {
      await front.destroy();
    }
  });
});

async function readTree(host: SimHost, dir: string, prefix = ''): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await host.xs.directory(dir)) {
    const path = `${dir}/${name}`;
    const value = await host.xs.tryRead(path);
    if (value !== undefined && value !== '') out.set(`${prefix}${name}`, value);
    for (const [k, v] of await readTree(host, path, `${prefix}${name}/`)) out.set(k, v);
  }
  return out;
}

/** Runs the multi-queue guest with `vcpus` against a host advertising `maxQueues`; checks its data; returns its report and frontend keys. */
async function runGuest(
  maxQueues: number,
  vcpus: number,
  seed: number,
): Promise<{ report: MultiQueueReport; fe: Map<string, string>; vbdQueues: number; barriers: number }> {
  const host = await SimHost.start({ maxQueues });
  try {
    const ram = createRamDisk(8 * MiB);
    host.registerStore('mq', ram);
    let got!: (r: MultiQueueReport) => void;
    const ready = new Promise<MultiQueueReport>((resolve) => (got = resolve));
    const params = { seed, generation: 3, chunk: 64 << 10, ops: 16 };
    const guest = await host.createGuest(
      { name: `mq-guest-${vcpus}`, memoryMiB: 32, vcpus, disks: [{ target: 'mq', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: MQ_GUEST, params, onReport: (m) => got(m as MultiQueueReport) },
    );
    const report = await Promise.race([ready, guest.result.then((r) => Promise.reject(new Error(`the guest ended before reporting: ${JSON.stringify(r)}`)))]);
    const fe = await readTree(host, `/local/domain/${guest.domid}/device/vbd/${XVDA}`);
    const vbd = host.blkback.vbds.get(`${guest.domid}/${XVDA}`)!;
    const vbdQueues = vbd.queues;
    const barriers = vbd.stats.f_req;
    await host.xs.write(releasePath(guest.domid), '1');
    await guest.result;
    assert.equal(report.badSectors, 0, 'every sector read back in the guest is what it wrote');
    assert.equal(await countBadSectors(ram, 0, report.bytes, seed, 3), 0, 'the store holds every sector the guest wrote');
    return { report, fe, vbdQueues, barriers };
  } finally {
    await host.stop();
  }
}

test('a simulated guest with vcpus = 2 negotiates 2 queues (keys under queue-0, queue-1), its I/O through both is byte-exact, a barrier goes down both', async () => {
  const { report, fe, vbdQueues, barriers } = await runGuest(4, 2, 71);
  assert.equal(report.queues, 2);
  assert.equal(vbdQueues, 2, 'blkback serves two rings');
  assert.equal(barriers, 2, "the guest's one barrier went down both rings (a backend drains only the ring it came on)");
  assert.equal(report.queueResponses.length, 2);
  for (const [q, n] of report.queueResponses.entries())
    assert.ok(n >= 8, `queue ${q} carried a share of the I/O (${report.queueResponses.join(' / ')} responses)`);
  assert.equal(fe.get('multi-queue-num-queues'), '2');
  assert.equal(fe.get('ring-page-order'), '4', 'ring-page-order is the device’s, in the frontend directory');
  assert.equal(fe.get('protocol'), 'x86_64-abi');
  for (const q of [0, 1]) {
    assert.match(fe.get(`queue-${q}/event-channel`) ?? '', /^\d+$/, `queue-${q}/event-channel`);
    for (let i = 0; i < 16; i++) assert.match(fe.get(`queue-${q}/ring-ref${i}`) ?? '', /^\d+$/, `queue-${q}/ring-ref${i}`);
  }
  assert.notEqual(fe.get('queue-0/event-channel'), fe.get('queue-1/event-channel'), 'each queue has its own event channel');
  const refs = [...fe].filter(([k]) => /^queue-\d\/ring-ref/.test(k)).map(([, v]) => v);
  assert.equal(new Set(refs).size, 32, 'every ring page of both queues has its own grant');
  for (const key of fe.keys()) assert.doesNotMatch(key, /^(ring-ref|event-channel)/, `no per-queue key at the top: ${key}`);
});

test('a guest with vcpus = 2 and a backend offering 1 queue: one ring, keys in the frontend directory, no multi-queue-num-queues', async () => {
  const { report, fe, vbdQueues, barriers } = await runGuest(1, 2, 72);
  assert.equal(report.queues, 1);
  assert.equal(vbdQueues, 1);
  assert.equal(barriers, 1);
  assert.equal(fe.has('multi-queue-num-queues'), false);
  assert.match(fe.get('event-channel') ?? '', /^\d+$/);
  assert.match(fe.get('ring-ref0') ?? '', /^\d+$/);
  for (const key of fe.keys()) assert.doesNotMatch(key, /^queue-/, `no queue directory: ${key}`);
});
