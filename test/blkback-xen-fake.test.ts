// The unchanged Blkback over the real-Xen adapter stack: openXenHypervisor with FakeXenDevices
// standing in for /dev/xen/gntdev and /dev/xen/evtchn, and our xenstored on a Unix socket. The guest
// is a FakeForeignDomain (its frames are the guest's memory, its grant table and ports are the
// fake's) driven by a minimal frontend written here the way Linux xen-blkfront behaves: the toolstack's
// nodes as libxl writes them (protocol-notes §2), then InitWait, a granted one-page ring (blkfront's
// default max_ring_page_order is 0, so `ring-ref`), an unbound port, Initialised, Connected, I/O with
// the project's codec and ring, and responses taken when the backend's event arrives.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { Blkback } from '../src/blkback/blkback.ts';
import type { DataPath } from '../src/blkback/ring-server.ts';
import { BlkifRequest, BlkifResponse, decodeResponse, encodeIndirectSegments, encodeRequest } from '../src/blkif/codec.ts';
import { BLKIF_OP, BLKIF_RSP, SECTOR_SIZE } from '../src/blkif/constants.ts';
import { FrontRing, frontRingInit, SharedRing } from '../src/blkif/ring.ts';
import { createRamDisk } from '../src/block/ram.ts';
import type { RamDisk } from '../src/block/ram.ts';
import { PAGE_SIZE } from '../src/hypervisor/types.ts';
import type { XenstoreClient } from '../src/hypervisor/types.ts';
import { FakeXenDevices } from './support/fake-xen-devices.ts';
import type { FakeForeignDomain } from './support/fake-xen-devices.ts';
import { openXenHypervisor } from '../src/hypervisor/xen/index.ts';
import type { XenHypervisor } from '../src/hypervisor/xen/index.ts';
import { mulberry32 } from '../src/internal/prng.ts';
import { StoreRegistry } from '../src/sim-host/stores.ts';
import { connectInProcess, connectUnix } from '../src/xenstore/client.ts';
import { XenstoreDaemon } from '../src/xenstore/daemon.ts';
import { XenbusState } from '../src/xenbus/state.ts';

const GUEST = 7;
const XVDA = 51712;
const DISK_BYTES = 16 << 20;
const GUEST_FRAMES = 512;
/** Linux keeps grant refs 0..7 for the toolstack (GNTTAB_NR_RESERVED_ENTRIES). */
const FIRST_REF = 8;
const BE = `/local/domain/0/backend/vbd/${GUEST}/${XVDA}`;
const FE = `/local/domain/${GUEST}/device/vbd/${XVDA}`;
/** A ref this guest never granted. */
const UNGRANTED_REF = 4000;
/** The canary byte left in guest pages outside a segment's sectors. */
const CANARY = 0xee;
const TIMEOUT_MS = 5000;

// ------------------------------------------------------------------------------- gntdev's sharing

// ------------------------------------------------------------------------------- the guest

let waitTokens = 0;

async function waitForNode(xs: XenstoreClient, path: string, want: string, what: string): Promise<void> {
  const token = `wait-${++waitTokens}`;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what} (${path} = ${want})`)), TIMEOUT_MS);
      void xs.watch(path, token, () => {
        void xs.tryRead(path).then((value) => {
          if (value === want) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
    });
  } finally {
    await xs.unwatch(path, token).catch(() => undefined);
  }
}

/** The guest's memory and grant table: frames of the fake domain, refs in its table. */
class GuestKernel {
  readonly domain: FakeForeignDomain;
  readonly #freeFrames: number[] = [];
  #nextRef = FIRST_REF;

  constructor(domain: FakeForeignDomain, frames: number) {
    this.domain = domain;
    for (let f = frames - 1; f >= 0; f--) this.#freeFrames.push(f);
  }

  allocFrame(): number {
    const frame = this.#freeFrames.pop();
    if (frame === undefined) throw new Error('guest out of frames');
    return frame;
  }

  freeFrame(frame: number): void {
    this.#freeFrames.push(frame);
  }

  /** gnttab_grant_foreign_access to dom0. */
  grant(frame: number, readOnly: boolean): number {
    const ref = this.#nextRef++;
    this.domain.grant(ref, frame, readOnly, 0);
    return ref;
  }

  endAccess(ref: number): void {
    this.domain.revoke(ref);
  }
}

interface Segment {
  readonly frame: number;
  readonly ref: number;
  readonly first: number;
  readonly last: number;
}

/** The frontend half, as Linux xen-blkfront drives it. */
class GuestFrontend {
  readonly #kernel: GuestKernel;
  readonly #xs: XenstoreClient;
  #ring!: FrontRing;
  #ringFrame = -1;
  #ringRef = -1;
  port = -1;
  readonly #slot = new Uint8Array(112);
  readonly #req = new BlkifRequest();
  readonly #rsp = new BlkifResponse();
  #nextId = 1;
  readonly #waiters = new Map<number, { resolve: (r: BlkifResponse) => void; reject: (e: Error) => void }>();
  #pumping = false;
  sectors = 0;
  features: Record<string, string | undefined> = {};

  constructor(kernel: GuestKernel, xs: XenstoreClient) {
    this.#kernel = kernel;
    this.#xs = xs;
  }

  get domain(): FakeForeignDomain {
    return this.#kernel.domain;
  }

  /** `persistent`: write feature-persistent=1, as Linux blkfront does (its default), before Initialised. */
  async connect(options: { persistent?: boolean } = {}): Promise<void> {
    const xs = this.#xs;
    const backend = await xs.read(`${FE}/backend`);
    assert.equal(backend, BE);
    await xs.write(`${FE}/state`, String(XenbusState.Initialising));
    await waitForNode(xs, `${backend}/state`, String(XenbusState.InitWait), 'the backend to reach InitWait');
    this.#ringFrame = this.#kernel.allocFrame();
    const page = this.domain.page(this.#ringFrame);
    page.fill(0);
    this.#ringRef = this.#kernel.grant(this.#ringFrame, false);
    const shared = new SharedRing([page], 'x86_64');
    frontRingInit(shared);
    this.#ring = new FrontRing(shared);
    this.port = this.domain.allocUnbound();
    await xs.transaction(async (tx) => {
      await xs.write(`${FE}/ring-ref`, String(this.#ringRef), tx);
      await xs.write(`${FE}/event-channel`, String(this.port), tx);
      await xs.write(`${FE}/protocol`, 'x86_64-abi', tx);
      if (options.persistent === true) await xs.write(`${FE}/feature-persistent`, '1', tx);
      await xs.write(`${FE}/state`, String(XenbusState.Initialised), tx);
    });
    await waitForNode(xs, `${backend}/state`, String(XenbusState.Connected), 'the backend to reach Connected');
    this.sectors = Number(await xs.read(`${backend}/sectors`));
    for (const key of [
      'feature-flush-cache',
      'feature-barrier',
      'feature-max-indirect-segments',
      'feature-persistent',
      'sector-size',
      'physical-sector-size',
      'info',
    ]) {
      this.features[key] = await xs.tryRead(`${backend}/${key}`);
    }
    await xs.write(`${FE}/state`, String(XenbusState.Connected));
  }

  /** Frontend-initiated close: Closing, wait for the backend's Closing, Closed, wait for its Closed; then the ring grant goes. */
  async close(): Promise<void> {
    const xs = this.#xs;
    await xs.write(`${FE}/state`, String(XenbusState.Closing));
    await waitForNode(xs, `${BE}/state`, String(XenbusState.Closing), 'the backend to reach Closing');
    await xs.write(`${FE}/state`, String(XenbusState.Closed));
    await waitForNode(xs, `${BE}/state`, String(XenbusState.Closed), 'the backend to reach Closed');
    this.#kernel.endAccess(this.#ringRef);
    this.#kernel.freeFrame(this.#ringFrame);
  }

  /** One read or write: direct up to 11 segments, else BLKIF_OP_INDIRECT with one granted segment-list page. */
  async readWrite(op: number, sector: number, segs: readonly Segment[]): Promise<number> {
    if (segs.length <= 11) {
      return this.#submit((r) => {
        r.operation = op;
        r.nrSegments = segs.length;
        r.sectorNumber = sector;
        r.handle = 0;
        segs.forEach((s, i) => {
          r.segGref[i] = s.ref;
          r.segFirst[i] = s.first;
          r.segLast[i] = s.last;
        });
      });
    }
    const listFrame = this.#kernel.allocFrame();
    const n = segs.length;
    encodeIndirectSegments(
      this.domain.page(listFrame),
      n,
      Uint32Array.from(segs, (s) => s.ref),
      Uint8Array.from(segs, (s) => s.first),
      Uint8Array.from(segs, (s) => s.last),
      0,
    );
    const listRef = this.#kernel.grant(listFrame, true);
    try {
      return await this.#submit((r) => {
        r.operation = BLKIF_OP.INDIRECT;
        r.indirectOp = op;
        r.indirectNrSegments = n;
        r.sectorNumber = sector;
        r.handle = 0;
        r.indirectGrefs.fill(0);
        r.indirectGrefs[0] = listRef;
      });
    } finally {
      this.#kernel.endAccess(listRef);
      this.#kernel.freeFrame(listFrame);
    }
  }

  /** A request naming an indirect segment list in a page the guest never granted. */
  indirectWithUngrantedList(op: number, sector: number, n: number): Promise<number> {
    return this.#submit((r) => {
      r.operation = BLKIF_OP.INDIRECT;
      r.indirectOp = op;
      r.indirectNrSegments = n;
      r.sectorNumber = sector;
      r.indirectGrefs.fill(0);
      r.indirectGrefs[0] = UNGRANTED_REF;
    });
  }

  flush(): Promise<number> {
    return this.#submit((r) => {
      r.operation = BLKIF_OP.FLUSH_DISKCACHE;
      r.nrSegments = 0;
      r.sectorNumber = 0;
      r.handle = 0;
    });
  }

  /** Puts one request on the ring, notifies if the backend asked (req_event), resolves with the response's status. */
  async #submit(fill: (r: BlkifRequest) => void): Promise<number> {
    const id = this.#nextId++;
    const r = this.#req;
    fill(r);
    r.idLo = id;
    r.idHi = 0x5eed;
    encodeRequest('x86_64', r, this.#slot);
    // Linux blkfront accepts either the indirect op or BLKIF_OP_INDIRECT itself in the answer to an indirect request.
    const ops = r.operation === BLKIF_OP.INDIRECT ? [r.indirectOp, BLKIF_OP.INDIRECT] : [r.operation];
    const answered = new Promise<BlkifResponse>((resolve, reject) => this.#waiters.set(id, { resolve, reject }));
    this.#ring.putRequest(this.#slot);
    if (this.#ring.pushRequestsAndCheckNotify()) this.domain.notify(this.port);
    void this.#pump();
    const rsp = await answered;
    assert.equal(rsp.idHi, 0x5eed, 'the id comes back whole');
    assert.ok(ops.includes(rsp.operation), `response op ${rsp.operation} to a request of op ${ops.join('/')}`);
    return rsp.status;
  }

  /** blkif_interrupt: take responses when the backend's event arrives, then RING_FINAL_CHECK_FOR_RESPONSES. */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      const deadline = Date.now() + TIMEOUT_MS;
      while (this.#waiters.size > 0) {
        const seen = this.domain.notifications(this.port);
        while (this.#ring.takeResponse(this.#slot)) {
          decodeResponse('x86_64', this.#slot, this.#rsp);
          const waiter = this.#waiters.get(this.#rsp.idLo);
          assert.ok(waiter !== undefined, `response for unknown id ${this.#rsp.idLo}`);
          this.#waiters.delete(this.#rsp.idLo);
          waiter.resolve(Object.assign(new BlkifResponse(), this.#rsp));
        }
        if (this.#waiters.size === 0 || this.#ring.finalCheckForResponses()) continue;
        while (this.domain.notifications(this.port) === seen) {
          if (Date.now() > deadline) {
            const error = new Error(
              `no event from the backend on port ${this.port} for ${this.#waiters.size} outstanding request(s) (rsp_prod ${this.#ring.ring.rspProd}, rsp_cons ${this.#ring.rspCons})`,
            );
            for (const w of this.#waiters.values()) w.reject(error);
            this.#waiters.clear();
            return;
          }
          await sleep(1);
        }
      }
    } finally {
      this.#pumping = false;
    }
  }
}

// ------------------------------------------------------------------------------- data helpers

/** Guest pages for `n` segments with random sector spans, the rest of each page a canary; granted read-only for a write. */
function makeSegments(kernel: GuestKernel, n: number, write: boolean, rnd: () => number, wholePages = false): Segment[] {
  const segs: Segment[] = [];
  for (let i = 0; i < n; i++) {
    const frame = kernel.allocFrame();
    kernel.domain.page(frame).fill(CANARY);
    const first = wholePages ? 0 : rnd() % 8;
    const last = wholePages ? 7 : first + (rnd() % (8 - first));
    segs.push({ frame, ref: kernel.grant(frame, write), first, last });
  }
  return segs;
}

function release(kernel: GuestKernel, segs: readonly Segment[]): void {
  for (const s of segs) {
    kernel.endAccess(s.ref);
    kernel.freeFrame(s.frame);
  }
}

function segmentBytes(segs: readonly Segment[]): number {
  return segs.reduce((sum, s) => sum + (s.last - s.first + 1) * SECTOR_SIZE, 0);
}

function randomBytes(n: number, rnd: () => number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rnd() & 0xff;
  return out;
}

/** Writes `data` into the segments' sector spans of the guest's pages (what the guest's bio holds). */
function scatter(kernel: GuestKernel, segs: readonly Segment[], data: Uint8Array): void {
  let at = 0;
  for (const s of segs) {
    const len = (s.last - s.first + 1) * SECTOR_SIZE;
    kernel.domain.page(s.frame).set(data.subarray(at, at + len), s.first * SECTOR_SIZE);
    at += len;
  }
}

/** The segments' sector spans, concatenated; asserts every byte outside them is still the canary. */
function gather(kernel: GuestKernel, segs: readonly Segment[], label: string): Uint8Array {
  const out = new Uint8Array(segmentBytes(segs));
  let at = 0;
  segs.forEach((s, i) => {
    const page = kernel.domain.page(s.frame);
    const start = s.first * SECTOR_SIZE;
    const end = (s.last + 1) * SECTOR_SIZE;
    out.set(page.subarray(start, end), at);
    at += end - start;
    assert.ok(
      page.subarray(0, start).every((b) => b === CANARY) && page.subarray(end).every((b) => b === CANARY),
      `${label}: segment ${i} wrote outside sectors ${s.first}..${s.last}`,
    );
  });
  return out;
}

async function storeBytes(disk: RamDisk, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await disk.readv(offset, [out]);
  return out;
}

function sameBytes(actual: Uint8Array, expected: Uint8Array, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.equal(at, -1, `${label}: first difference at byte ${at}`);
}

// ------------------------------------------------------------------------------- the stack

interface Stack {
  readonly dir: string;
  readonly daemon: XenstoreDaemon;
  readonly server: Awaited<ReturnType<XenstoreDaemon['listenUnix']>>;
  readonly fake: FakeXenDevices;
  readonly hv: XenHypervisor;
  readonly blkback: Blkback;
  readonly toolstack: XenstoreClient;
  readonly guestXs: XenstoreClient;
  readonly kernel: GuestKernel;
  readonly disk: RamDisk;
  readonly registry: StoreRegistry;
  /** Everything Blkback logged. */
  readonly log: string[];
}

/** What libxl writes for `disk = ['phy:/dev/sdb,xvda,w']` (libxl_disk.c; values seen on Xen 4.17, protocol-notes §2.1). */
async function libxlCreatesDisk(xs: XenstoreClient): Promise<void> {
  const dom = `/local/domain/${GUEST}`;
  await xs.transaction(async (tx) => {
    await xs.write(`${dom}/name`, 'fake-guest', tx);
    await xs.write(`${dom}/domid`, String(GUEST), tx);
    await xs.setPerms(
      dom,
      [
        { domid: 0, perm: 'n' },
        { domid: GUEST, perm: 'r' },
      ],
      tx,
    );
    await xs.mkdir(`${dom}/device`, tx);
    await xs.setPerms(`${dom}/device`, [{ domid: GUEST, perm: 'n' }], tx);
    await xs.mkdir(BE, tx);
    await xs.setPerms(
      BE,
      [
        { domid: 0, perm: 'n' },
        { domid: GUEST, perm: 'r' },
      ],
      tx,
    );
    const backend: [string, string][] = [
      ['frontend', FE],
      ['params', '/dev/sdb'],
      ['frontend-id', String(GUEST)],
      ['online', '1'],
      ['removable', '0'],
      ['bootable', '1'],
      ['state', String(XenbusState.Initialising)],
      ['dev', 'xvda'],
      ['type', 'phy'],
      ['mode', 'w'],
      ['device-type', 'disk'],
      ['discard-enable', '1'],
      ['specification', 'xen'],
    ];
    for (const [k, v] of backend) await xs.write(`${BE}/${k}`, v, tx);
    await xs.mkdir(FE, tx);
    await xs.setPerms(
      FE,
      [
        { domid: GUEST, perm: 'n' },
        { domid: 0, perm: 'r' },
      ],
      tx,
    );
    const frontend: [string, string][] = [
      ['backend', BE],
      ['backend-id', '0'],
      ['state', String(XenbusState.Initialising)],
      ['virtual-device', String(XVDA)],
      ['device-type', 'disk'],
    ];
    for (const [k, v] of frontend) await xs.write(`${FE}/${k}`, v, tx);
  });
}

async function startStack(dataPath: DataPath): Promise<Stack> {
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'blkback-xen-fake-'));
  const socket = join(dir, 'xenstored.sock');
  const daemon = new XenstoreDaemon();
  const server = await daemon.listenUnix(socket);
  const fake = new FakeXenDevices(0);
  const kernel = new GuestKernel(fake.addDomain(GUEST, GUEST_FRAMES), GUEST_FRAMES);
  const hv = await openXenHypervisor({ xenstoreSocket: socket, devices: fake });
  const disk = createRamDisk(DISK_BYTES, { name: 'ram-e2e' });
  // The service's opener, as `blkback run --map /dev/sdb=...` wires it.
  const registry = new StoreRegistry(new Map([['/dev/sdb', 'ram-e2e']]));
  registry.register('ram-e2e', disk);
  const log: string[] = [];
  const blkback = new Blkback(hv, { open: registry.open, dataPath, log: (message) => log.push(message) });
  await blkback.start();
  const toolstack = await connectUnix(socket);
  const guestXs = connectInProcess(daemon, GUEST);
  await libxlCreatesDisk(toolstack);
  return { dir, daemon, server, fake, hv, blkback, toolstack, guestXs, kernel, disk, registry, log };
}

async function stopStack(s: Stack): Promise<void> {
  await s.blkback.stop();
  await s.hv.close();
  s.toolstack.close();
  s.guestXs.close();
  await s.server.close();
  await s.daemon.close();
  await s.registry.close();
  fs.rmSync(s.dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------------------- the tests

for (const dataPath of ['map', 'copy', 'persistent'] as const) {
  describe(`Blkback over the real-Xen adapters (FakeXenDevices), data path ${dataPath}`, () => {
    let s: Stack;
    let front: GuestFrontend;
    const rnd = mulberry32(dataPath === 'map' ? 0x5eed01 : dataPath === 'copy' ? 0x5eed02 : 0x5eed03);
    // This frontend does not take up feature-persistent: the persistent path then copies.
    const copying = dataPath !== 'map';
    const vbd = () => {
      const v = s.blkback.vbds.get(`${GUEST}/${XVDA}`);
      assert.ok(v !== undefined, 'blkback serves the device');
      return v;
    };

    before(async () => {
      s = await startStack(dataPath);
    });
    after(async () => {
      if (s !== undefined) await stopStack(s);
    });

    test('handshake: InitWait, ring and port from the guest, Connected with the disk and Linux feature keys', async () => {
      front = new GuestFrontend(s.kernel, s.guestXs);
      await front.connect();
      assert.equal(front.sectors, DISK_BYTES / SECTOR_SIZE);
      assert.deepEqual(front.features, {
        'feature-flush-cache': '1',
        'feature-barrier': '1',
        'feature-max-indirect-segments': '256',
        // offered on the persistent path only; this frontend does not take it up, so grants map per request
        'feature-persistent': dataPath === 'persistent' ? '1' : undefined,
        'sector-size': '512',
        'physical-sector-size': '512',
        info: '0',
      });
      assert.equal(await s.toolstack.read(`${BE}/max-ring-page-order`), '4');
      const v = vbd();
      assert.equal(v.abi, 'x86_64');
      assert.equal(v.ringPages, 1);
      assert.equal(v.dataPath, copying ? 'copy' : 'map', 'a frontend without feature-persistent is copied for on the persistent path');
      assert.equal(s.fake.boundPorts, 1, 'the guest port is bound');
      assert.ok((front.domain.ports.get(front.port)?.bound ?? -1) >= 0, "the backend bound the guest's port");
      assert.equal(s.fake.mappedRuns, 1, 'only the ring is mapped');
    });

    test('direct writes of 1..11 segments land in the store byte for byte', async () => {
      const before = { wr_req: vbd().stats.wr_req, wr_sect: vbd().stats.wr_sect };
      let sectors = 0;
      const pending: Promise<void>[] = [];
      for (let n = 1; n <= 11; n++) {
        const sector = 2048 + n * 128; // 64 KiB apart: the writes in flight together never overlap
        const segs = makeSegments(s.kernel, n, true, rnd);
        const data = randomBytes(segmentBytes(segs), rnd);
        scatter(s.kernel, segs, data);
        sectors += data.length / SECTOR_SIZE;
        pending.push(
          front.readWrite(BLKIF_OP.WRITE, sector, segs).then(async (status) => {
            assert.equal(status, BLKIF_RSP.OKAY, `write of ${n} segments`);
            sameBytes(await storeBytes(s.disk, sector * SECTOR_SIZE, data.length), data, `write of ${n} segments`);
            release(s.kernel, segs);
          }),
        );
      }
      await Promise.all(pending);
      assert.equal(vbd().stats.wr_req - before.wr_req, 11);
      assert.equal(vbd().stats.wr_sect - before.wr_sect, sectors);
      assert.equal(s.fake.readOnlyWrites, 0, 'the backend never wrote through a read-only mapping');
    });

    test("direct reads of 1..11 segments bring the store's bytes into the granted pages, and nothing else", async () => {
      for (let n = 1; n <= 11; n++) {
        const sector = 8192 + n * 96;
        const segs = makeSegments(s.kernel, n, false, rnd);
        const data = randomBytes(segmentBytes(segs), rnd);
        await s.disk.writev(sector * SECTOR_SIZE, [data]);
        assert.equal(await front.readWrite(BLKIF_OP.READ, sector, segs), BLKIF_RSP.OKAY, `read of ${n} segments`);
        sameBytes(gather(s.kernel, segs, `read of ${n} segments`), data, `read of ${n} segments`);
        release(s.kernel, segs);
      }
    });

    test('indirect writes and reads of 16..32 segments (one segment-list page)', async () => {
      const before = { rd_req: vbd().stats.rd_req, wr_req: vbd().stats.wr_req };
      for (const n of [16, 23, 32]) {
        for (const whole of [true, false]) {
          const sector = 12288 + n * 512 + (whole ? 0 : 256);
          const label = `indirect write of ${n} segments${whole ? '' : ' (partial pages)'}`;
          const out = makeSegments(s.kernel, n, true, rnd, whole);
          const data = randomBytes(segmentBytes(out), rnd);
          scatter(s.kernel, out, data);
          assert.equal(await front.readWrite(BLKIF_OP.WRITE, sector, out), BLKIF_RSP.OKAY, label);
          sameBytes(await storeBytes(s.disk, sector * SECTOR_SIZE, data.length), data, label);
          release(s.kernel, out);

          // Read it back into fresh pages with a different sector layout, through the ring.
          const back = makeSegments(s.kernel, n, false, rnd, !whole);
          const length = Math.min(segmentBytes(back), data.length);
          const expected = await storeBytes(s.disk, sector * SECTOR_SIZE, segmentBytes(back));
          assert.equal(await front.readWrite(BLKIF_OP.READ, sector, back), BLKIF_RSP.OKAY, `indirect read of ${n} segments`);
          const got = gather(s.kernel, back, `indirect read of ${n} segments`);
          sameBytes(got, expected, `indirect read of ${n} segments`);
          sameBytes(got.subarray(0, length), data.subarray(0, length), `indirect read of ${n} segments returns what was written`);
          release(s.kernel, back);
        }
      }
      assert.equal(vbd().stats.wr_req - before.wr_req, 6);
      assert.equal(vbd().stats.rd_req - before.rd_req, 6);
    });

    test('FLUSH_DISKCACHE answers OKAY', async () => {
      const before = vbd().stats.f_req;
      assert.equal(await front.flush(), BLKIF_RSP.OKAY);
      assert.equal(vbd().stats.f_req, before + 1);
    });

    test('a ref the guest did not grant: BLKIF_RSP_ERROR, bad_grant, nothing written, and the ring keeps going', async () => {
      const stats = vbd().stats;
      const before = stats.errors.bad_grant;
      const sector = 30000;
      const original = await storeBytes(s.disk, sector * SECTOR_SIZE, 4 * PAGE_SIZE);

      // A write whose second segment names a ref never granted.
      const segs = makeSegments(s.kernel, 3, true, rnd, true);
      scatter(s.kernel, segs, randomBytes(segmentBytes(segs), rnd));
      const forged = [segs[0]!, { ...segs[1]!, ref: UNGRANTED_REF }, segs[2]!];
      assert.equal(await front.readWrite(BLKIF_OP.WRITE, sector, forged), BLKIF_RSP.ERROR, 'write naming an ungranted ref');
      // A read into a page granted to another domain, not to dom0.
      const foreignFrame = s.kernel.allocFrame();
      s.kernel.domain.grant(UNGRANTED_REF + 1, foreignFrame, false, 3);
      assert.equal(
        await front.readWrite(BLKIF_OP.READ, sector, [{ frame: foreignFrame, ref: UNGRANTED_REF + 1, first: 0, last: 7 }]),
        BLKIF_RSP.ERROR,
        'read into a page granted to domain 3',
      );
      s.kernel.endAccess(UNGRANTED_REF + 1);
      s.kernel.freeFrame(foreignFrame);
      // An indirect request whose segment-list page was never granted.
      assert.equal(await front.indirectWithUngrantedList(BLKIF_OP.WRITE, sector, 16), BLKIF_RSP.ERROR, 'indirect list page not granted');

      assert.equal(stats.errors.bad_grant, before + 3);
      const refused = s.log.filter((m) => /request id/.test(m));
      assert.equal(refused.length, 3, refused.join('\n'));
      assert.match(refused[0]!, /ref 4000/);
      assert.match(refused[1]!, /ref 4001/);
      assert.match(refused[2]!, /indirect.*ref 4000/);
      sameBytes(await storeBytes(s.disk, sector * SECTOR_SIZE, 4 * PAGE_SIZE), original, 'the store after refused writes');
      assert.equal(s.fake.mappedRuns, 1, 'a refused request leaves nothing mapped but the ring');

      // The same pages, honestly granted, still go through.
      const data = randomBytes(segmentBytes(segs), rnd);
      scatter(s.kernel, segs, data);
      assert.equal(await front.readWrite(BLKIF_OP.WRITE, sector, segs), BLKIF_RSP.OKAY);
      sameBytes(await storeBytes(s.disk, sector * SECTOR_SIZE, data.length), data, 'write after the refused ones');
      release(s.kernel, segs);
    });

    test('writes taken in one turn, one of them naming an ungranted ref: that one fails alone, the rest land (one grant-copy batch on the copy path)', async () => {
      const stats = vbd().stats;
      const before = stats.errors.bad_grant;
      const copies = (): number => s.fake.calls.get('grantCopy') ?? 0;
      const copiesBefore = copies();
      const writes = Array.from({ length: 6 }, (_, i) => {
        const segs = makeSegments(s.kernel, 1 + (i % 4), true, rnd, true);
        const data = randomBytes(segmentBytes(segs), rnd);
        scatter(s.kernel, segs, data);
        return { sector: 20000 + i * 64, segs, data };
      });
      const badAt = 3;
      const original = await storeBytes(s.disk, writes[badAt]!.sector * SECTOR_SIZE, writes[badAt]!.data.length);
      const forged = writes[badAt]!.segs.map((seg, i) => (i === 0 ? { ...seg, ref: UNGRANTED_REF } : seg));
      // All six go on the ring before the backend's turn: it takes them together.
      const answers = await Promise.all(writes.map((w, i) => front.readWrite(BLKIF_OP.WRITE, w.sector, i === badAt ? forged : w.segs)));
      assert.deepEqual(
        answers,
        writes.map((_, i) => (i === badAt ? BLKIF_RSP.ERROR : BLKIF_RSP.OKAY)),
      );
      assert.equal(stats.errors.bad_grant, before + 1);
      for (const [i, w] of writes.entries()) {
        const expected = i === badAt ? original : w.data;
        sameBytes(await storeBytes(s.disk, w.sector * SECTOR_SIZE, expected.length), expected, `write ${i} in the store`);
        release(s.kernel, w.segs);
      }
      if (copying) assert.ok(copies() - copiesBefore < writes.length, `${copies() - copiesBefore} grant-copy calls for ${writes.length} writes taken together`);
      else assert.equal(copies(), copiesBefore, 'the map path copies nothing');
    });

    test('closing (frontend Closing -> Closed) unmaps everything and unbinds the port', async () => {
      const port = front.port;
      await front.close();
      assert.equal(s.fake.mappedRuns, 0, 'no grant run left mapped in the fake gntdev');
      assert.equal(s.fake.mappedRuns, 0, 'the ring is unmapped');
      assert.equal(s.fake.boundPorts, 0, 'no backend port left bound');
      assert.equal(s.hv.events.openPorts, 0);
      assert.equal(front.domain.ports.get(port)?.bound, -1, "the guest's port is unbound again");
      assert.equal(s.fake.readOnlyWrites, 0);
      assert.equal(vbd().state, XenbusState.Closed);
      if (copying) {
        assert.equal(s.fake.calls.get('mapDomainGrantRefs'), 1, 'the copy path maps only the ring, never a data page');
        assert.ok((s.fake.calls.get('grantCopy') ?? 0) > 0);
      }
    });

    test('a second frontend connects to the same device and does I/O', async () => {
      front = new GuestFrontend(s.kernel, s.guestXs);
      await front.connect();
      assert.equal(vbd().state, XenbusState.Connected);
      assert.equal(s.fake.boundPorts, 1);
      const sector = 31000;
      const out = makeSegments(s.kernel, 20, true, rnd);
      const data = randomBytes(segmentBytes(out), rnd);
      scatter(s.kernel, out, data);
      assert.equal(await front.readWrite(BLKIF_OP.WRITE, sector, out), BLKIF_RSP.OKAY);
      sameBytes(await storeBytes(s.disk, sector * SECTOR_SIZE, data.length), data, 'write on the second connection');
      release(s.kernel, out);
      const back = makeSegments(s.kernel, 5, false, rnd, true);
      assert.equal(await front.readWrite(BLKIF_OP.READ, sector, back), BLKIF_RSP.OKAY);
      sameBytes(
        gather(s.kernel, back, 'read on the second connection'),
        await storeBytes(s.disk, sector * SECTOR_SIZE, 5 * PAGE_SIZE),
        'read on the second connection',
      );
      release(s.kernel, back);
      assert.equal(await front.flush(), BLKIF_RSP.OKAY);
      await front.close();
      assert.equal(s.fake.mappedRuns, 0);
      assert.equal(s.fake.boundPorts, 0);
      assert.equal(s.log.filter((m) => /request id/.test(m)).length, 4, 'no request refused but the four forged ones');
    });
  });
}

describe('persistent grants (data path persistent, a frontend that agrees)', () => {
  let s: Stack;
  const rnd = mulberry32(0x5eed04);
  const vbd = () => s.blkback.vbds.get(`${GUEST}/${XVDA}`)!;
  const maps = (): number => s.fake.calls.get('mapDomainGrantRefs') ?? 0;
  const unmaps = (): number => s.fake.calls.get('unmap') ?? 0;

  before(async () => {
    s = await startStack('persistent');
  });
  after(async () => {
    if (s !== undefined) await stopStack(s);
  });

  test('each grant is mapped once and kept; later requests map nothing; the data is right both ways; close unmaps them all', async () => {
    const front = new GuestFrontend(s.kernel, s.guestXs);
    await front.connect({ persistent: true });
    assert.equal(front.features['feature-persistent'], '1');
    assert.equal(vbd().persistentGrants, true);
    // blkfront's pool: pages granted writable once, reused by every request
    const pool = Array.from({ length: 24 }, () => {
      const frame = s.kernel.allocFrame();
      return { frame, ref: s.kernel.grant(frame, false) };
    });
    const pick = (n: number): Segment[] => {
      const start = rnd() % (pool.length - n + 1);
      return pool.slice(start, start + n).map((p) => {
        s.kernel.domain.page(p.frame).fill(CANARY);
        const first = rnd() % 8;
        return { ...p, first, last: first + (rnd() % (8 - first)) };
      });
    };
    const round = async (i: number): Promise<void> => {
      const sector = 4096 + i * 64;
      const out = pick(1 + (rnd() % 11));
      const data = randomBytes(segmentBytes(out), rnd);
      scatter(s.kernel, out, data);
      assert.equal(await front.readWrite(BLKIF_OP.WRITE, sector, out), BLKIF_RSP.OKAY, `write ${i}`);
      sameBytes(await storeBytes(s.disk, sector * SECTOR_SIZE, data.length), data, `write ${i}`);
      const back = pick(1 + (rnd() % 11));
      const expected = await storeBytes(s.disk, sector * SECTOR_SIZE, segmentBytes(back));
      assert.equal(await front.readWrite(BLKIF_OP.READ, sector, back), BLKIF_RSP.OKAY, `read ${i}`);
      sameBytes(gather(s.kernel, back, `read ${i}`), expected, `read ${i}`);
    };
    const mapsAtConnect = maps();
    // Warm up: every pool page once (two 11-segment writes and a 2-segment one cover 24 pages).
    for (const [at, n] of [
      [0, 11],
      [11, 11],
      [22, 2],
    ] as const) {
      const segs = pool.slice(at, at + n).map((p) => ({ ...p, first: 0, last: 7 }));
      scatter(s.kernel, segs, randomBytes(segmentBytes(segs), rnd));
      assert.equal(await front.readWrite(BLKIF_OP.WRITE, 20_000 + at * 8, segs), BLKIF_RSP.OKAY);
    }
    assert.equal(maps() - mapsAtConnect, pool.length, 'each new grant mapped once');
    assert.equal(vbd().dataPath, 'persistent');
    assert.equal(vbd().grantsKept, pool.length);
    assert.equal(s.fake.mappedRuns, 1 + pool.length, 'the ring and the kept grants');
    const warm = { maps: maps(), unmaps: unmaps() };
    for (let i = 0; i < 40; i++) await round(i);
    assert.equal(maps(), warm.maps, 'no grant mapped again');
    assert.equal(unmaps(), warm.unmaps, 'and none unmapped');
    assert.equal(s.fake.readOnlyWrites, 0);

    // A ref outside the pool, granted read-only (a frontend's slip): mapped per request as it is, and it works.
    const frame = s.kernel.allocFrame();
    const odd = { frame, ref: s.kernel.grant(frame, true), first: 0, last: 7 };
    const data = randomBytes(PAGE_SIZE, rnd);
    scatter(s.kernel, [odd], data);
    assert.equal(await front.readWrite(BLKIF_OP.WRITE, 30_000, [odd]), BLKIF_RSP.OKAY);
    sameBytes(await storeBytes(s.disk, 30_000 * SECTOR_SIZE, PAGE_SIZE), data, 'write through a read-only grant');
    assert.equal(s.fake.mappedRuns, 1 + pool.length, 'that one was not kept');

    await front.close();
    assert.equal(s.fake.mappedRuns, 0, 'closing unmapped the kept grants and the ring');
    assert.equal(vbd().state, XenbusState.Closed);
  });
});
