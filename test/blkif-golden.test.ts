// Golden test against Xen's own headers: test/fixtures/blkif/ring-golden.c is compiled here against
// /usr/include/xen/io/blkif.h and ring.h (natively for x86_64, with gcc -m32 for x86_32) and drives the
// same ring image as our code, in both directions, through the official RING_* macros.

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ABI_LAYOUT,
  BLKIF_DISCARD_SECURE,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_OP,
  BLKIF_RSP,
  RING_HEADER_SIZE,
  RING_PVT,
  RING_REQ_EVENT,
  RING_REQ_PROD,
  RING_RSP_EVENT,
  RING_RSP_PROD,
  SEGMENT_SIZE,
  VDISK_CDROM,
  VDISK_READONLY,
  VDISK_REMOVABLE,
} from '../src/blkif/constants.ts';
import type { BlkifAbi } from '../src/blkif/constants.ts';
import { BlkifRequest, BlkifResponse, decodeRequest, decodeResponse, encodeRequest, encodeResponse } from '../src/blkif/codec.ts';
import { BackRing, FrontRing, SharedRing, frontRingInit, ringEntries } from '../src/blkif/ring.ts';
import { imageToPages, pagesToImage, prng, scatteredPages } from './fixtures/blkif/pages.ts';
import { gccM32Missing, gccMissing } from './helpers-c.ts';
import { onPath, stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';

const HEADER = '/usr/include/xen/io/blkif.h';
const ORDERS = [0, 2] as const;

function findFixture(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const rel = join('test', 'fixtures', 'blkif', 'ring-golden.c');
  const candidates = [resolve(here, 'fixtures/blkif/ring-golden.c'), resolve(here, '../..', rel), resolve(process.cwd(), rel)];
  return candidates.find((p) => existsSync(p));
}

/** What our tables say, keyed like the C program's LAYOUT_ITEMS. */
function tsLayout(abi: BlkifAbi): Record<string, number> {
  const L = ABI_LAYOUT[abi];
  return {
    sizeof_request: L.requestSize,
    sizeof_response: L.responseSize,
    sizeof_entry: L.stride,
    sizeof_segment: SEGMENT_SIZE,
    sizeof_discard: L.discardSize,
    sizeof_indirect: L.indirectSize,
    operation: L.operation,
    nrSegments: L.nrSegments,
    handle: L.handle,
    id: L.id,
    sectorNumber: L.sectorNumber,
    seg: L.seg,
    seg_gref: 0,
    seg_first: 4,
    seg_last: 5,
    discardFlag: L.discardFlag,
    discard_handle: L.handle,
    discard_id: L.id,
    discard_sectorNumber: L.sectorNumber,
    discardNrSectors: L.discardNrSectors,
    indirectOp: L.indirectOp,
    indirectNrSegments: L.indirectNrSegments,
    indirect_id: L.id,
    indirect_sectorNumber: L.sectorNumber,
    indirectHandle: L.indirectHandle,
    indirectGrefs: L.indirectGrefs,
    rspId: L.rspId,
    rspOperation: L.rspOperation,
    rspStatus: L.rspStatus,
    sring_req_prod: RING_REQ_PROD,
    sring_req_event: RING_REQ_EVENT,
    sring_rsp_prod: RING_RSP_PROD,
    sring_rsp_event: RING_RSP_EVENT,
    sring_pvt: RING_PVT,
    sring_ring: RING_HEADER_SIZE,
    ring_size_1: ringEntries(1, abi),
    ring_size_2: ringEntries(2, abi),
    ring_size_4: ringEntries(4, abi),
    ring_size_8: ringEntries(8, abi),
    ring_size_16: ringEntries(16, abi),
    BLKIF_OP_READ: BLKIF_OP.READ,
    BLKIF_OP_WRITE: BLKIF_OP.WRITE,
    BLKIF_OP_WRITE_BARRIER: BLKIF_OP.WRITE_BARRIER,
    BLKIF_OP_FLUSH_DISKCACHE: BLKIF_OP.FLUSH_DISKCACHE,
    BLKIF_OP_RESERVED_1: BLKIF_OP.RESERVED_1,
    BLKIF_OP_DISCARD: BLKIF_OP.DISCARD,
    BLKIF_OP_INDIRECT: BLKIF_OP.INDIRECT,
    BLKIF_RSP_OKAY: BLKIF_RSP.OKAY,
    BLKIF_RSP_ERROR: BLKIF_RSP.ERROR,
    BLKIF_RSP_EOPNOTSUPP: BLKIF_RSP.EOPNOTSUPP,
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_DISCARD_SECURE,
    VDISK_CDROM,
    VDISK_REMOVABLE,
    VDISK_READONLY,
  };
}

const hex16 = (hi: number, lo: number): string => hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
const hexU64 = (n: number): string => BigInt(n).toString(16).padStart(16, '0');

/** The request in the C program's print_request format. */
function formatRequest(i: number, r: BlkifRequest): string {
  const common = `handle=${r.handle} id=${hex16(r.idHi, r.idLo)} sector=${hexU64(r.sectorNumber)}`;
  if (r.operation === BLKIF_OP.DISCARD) {
    return `REQ ${i} op=${r.operation} flag=${r.discardFlag} ${common} nr_sectors=${hexU64(r.nrSectors)}`;
  }
  if (r.operation === BLKIF_OP.INDIRECT) {
    return `REQ ${i} op=${r.operation} indirect_op=${r.indirectOp} nr=${r.indirectNrSegments} ${common} grefs=${[...r.indirectGrefs].join(',')}`;
  }
  const segs: string[] = [];
  for (let s = 0; s < Math.min(r.nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST); s++) {
    segs.push(`${r.segGref[s]}:${r.segFirst[s]}:${r.segLast[s]}`);
  }
  return `REQ ${i} op=${r.operation} nr=${r.nrSegments} ${common} segs=${segs.join(',')}`;
}

/** Same rule as status_for() in the C program. */
function statusFor(i: number): number {
  return i % 3 === 0 ? BLKIF_RSP.OKAY : i % 3 === 1 ? BLKIF_RSP.ERROR : BLKIF_RSP.EOPNOTSUPP;
}

interface Peer {
  run(args: string[]): { status: number | null; stdout: string; stderr: string };
}

/** 32-bit builds are static: the kernel (or qemu-i386) then needs no 32-bit loader or libc at run time. */
const M32_FLAGS = ['-m32', '-static'];

/**
 * Builds and starts the golden peer. gcc has been probed already (gccM32Missing for x86_32), so a
 * build error is a failure. The one thing still allowed to be missing: a kernel that cannot exec
 * 32-bit programs with no qemu-i386 (qemu-user) to run them instead.
 */
function buildPeer(abi: BlkifAbi, fixture: string, dir: string): Peer | Missing {
  const bin = join(dir, `ring-golden-${abi}`);
  const flags = abi === 'x86_32' ? M32_FLAGS : [];
  const cc = spawnSync('gcc', [...flags, '-O1', '-Wall', '-Werror', '-o', bin, fixture], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `gcc ${flags.join(' ')} failed on ring-golden.c:\n${cc.stderr}`);
  const direct = spawnSync(bin, ['layout'], { encoding: 'utf8' });
  if (direct.error === undefined && direct.status === 0) {
    return { run: (args) => spawnSync(bin, args, { encoding: 'utf8' }) };
  }
  // A native program that does not run is broken, not missing anything.
  assert.equal(abi, 'x86_32', `the ${abi} program did not run: ${direct.error?.message ?? `exit ${direct.status}: ${direct.stderr}`}`);
  if (!onPath('qemu-i386')) {
    return {
      what: `qemu-i386 (this kernel cannot run 32-bit programs: ${direct.error?.message ?? `exit ${direct.status}`})`,
      install: 'apt-get install qemu-user',
    };
  }
  // This kernel refuses to exec 32-bit programs; qemu-user runs the same -m32 binary.
  return { run: (args) => spawnSync('qemu-i386', [bin, ...args], { encoding: 'utf8' }) };
}

/** The peer, or null after stopping `t` (a skip; a failure under CI=true) when it cannot run here. */
function runnable(t: TestContext, peer: Peer | Missing): Peer | null {
  if ('run' in peer) return peer;
  stopIfMissing(t, peer);
  return null;
}

function runOk(peer: Peer, args: string[]): string[] {
  const r = peer.run(args);
  assert.equal(r.status, 0, `ring-golden ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout.trimEnd().split('\n');
}

function field(lines: readonly string[], prefix: string): string {
  const line = lines.find((l) => l.startsWith(prefix));
  assert.ok(line !== undefined, `no "${prefix}" line in the C output`);
  return line;
}

const fixture = findFixture();

/** gcc, Xen's headers, and for x86_32 a gcc that builds 32-bit programs (probed with a trivial one). */
function compilerMissing(abi: BlkifAbi): Missing | undefined {
  const gcc = gccMissing();
  if (gcc !== undefined) return gcc;
  if (!existsSync(HEADER)) return { what: `${HEADER} not found`, install: 'apt-get install libxen-dev' };
  return abi === 'x86_32' ? gccM32Missing(M32_FLAGS) : undefined;
}

for (const abi of ['x86_64', 'x86_32'] as const) {
  test(`golden ${abi}: our layout, constants and rings agree with Xen's headers`, async (t: TestContext) => {
    if (stopIfMissing(t, compilerMissing(abi))) return;
    assert.ok(fixture !== undefined, 'test/fixtures/blkif/ring-golden.c not found');
    const dir = mkdtempSync(join(tmpdir(), `blkif-golden-${abi}-`));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const L = ABI_LAYOUT[abi];
    const expected = tsLayout(abi);

    await t.test('compile-time: _Static_assert of every offset, size and constant', (_t2) => {
      const header = join(dir, 'expected.h');
      writeFileSync(
        header,
        Object.entries(expected)
          .map(([k, v]) => `#define EXPECT_${k} (${v}L)\n`)
          .join(''),
      );
      const m32 = abi === 'x86_32' ? ['-m32'] : [];
      const r = spawnSync('gcc', [...m32, '-fsyntax-only', '-DGOLDEN_STATIC_CHECK', '-include', header, fixture], {
        encoding: 'utf8',
      });
      // gcc -m32 passed its probe: any error here, a failed _Static_assert or not, is a failure.
      assert.equal(r.status, 0, r.stderr);
    });

    const peer = buildPeer(abi, fixture, dir);

    await t.test('run time: the printed sizeof/offsetof table equals ours', (t2) => {
      const golden = runnable(t2, peer);
      if (golden === null) return;
      const printed: Record<string, number> = {};
      for (const line of runOk(golden, ['layout'])) {
        const [k, v] = line.split(' ');
        printed[k as string] = Number(v);
      }
      assert.deepEqual(printed, expected);
    });

    for (const order of ORDERS) {
      const nPages = 1 << order;

      await t.test(`C frontend -> TS backend -> C frontend, ${nPages} page(s)`, (t2) => {
        const golden = runnable(t2, peer);
        if (golden === null) return;
        const img = join(dir, `front-${order}.img`);
        const start = 0xfffffff0;
        const out = runOk(golden, ['front', img, String(order), String(start)]);
        const cSize = Number(field(out, 'SIZE ').slice(5));
        assert.equal(field(out, 'NOTIFY'), 'NOTIFY 1');
        const reqLines = out.filter((l) => l.startsWith('REQ '));

        const pages = scatteredPages(nPages, 40 + order);
        imageToPages(new Uint8Array(readFileSync(img)), pages);
        const ring = new SharedRing(pages, abi);
        assert.equal(ring.size, cSize);
        assert.equal(reqLines.length, cSize, 'C filled the whole ring');
        const back = new BackRing(ring, true);
        assert.equal(back.requestProdOverflow(), false);
        assert.equal(back.unconsumedRequests(), cSize);

        const slot = new Uint8Array(L.requestSize);
        const req = new BlkifRequest();
        const rsp = new Uint8Array(L.responseSize);
        const ops = new Set<number>();
        for (let i = 0; i < cSize; i++) {
          assert.equal(back.takeRequest(slot), true);
          decodeRequest(abi, slot, req);
          assert.equal(formatRequest(i, req), reqLines[i]);
          ops.add(req.operation);
          const op = req.operation === BLKIF_OP.INDIRECT ? req.indirectOp : req.operation;
          encodeResponse(abi, rsp, req.idLo, req.idHi, op, statusFor(i));
          back.putResponse(rsp);
        }
        assert.equal(ops.size, 6, 'every request kind was seen');
        assert.equal(back.takeRequest(slot), false);
        assert.equal(back.pushResponsesAndCheckNotify(), true);
        assert.equal(back.finalCheckForRequests(), false);
        assert.equal(ring.reqEvent, (start + cSize + 1) >>> 0);

        writeFileSync(img, pagesToImage(pages));
        const check = runOk(golden, ['front-check', img, String(order), String(start), String(cSize)]);
        assert.equal(field(check, 'MORE'), `MORE 0 RSP_EVENT ${(start + cSize + 1) >>> 0}`);
      });

      await t.test(`TS frontend -> C backend (RING_COPY_REQUEST) -> TS frontend, ${nPages} page(s)`, (t2) => {
        const golden = runnable(t2, peer);
        if (golden === null) return;
        const pages = scatteredPages(nPages, 50 + order);
        const ring = new SharedRing(pages, abi);
        frontRingInit(ring);
        const start = 0xffffffe3;
        ring.reqProd = start;
        ring.rspProd = start;
        ring.reqEvent = (start + 1) >>> 0;
        ring.rspEvent = (start + 1) >>> 0;
        const front = new FrontRing(ring, true);
        const rnd = prng(60 + order + (abi === 'x86_64' ? 0 : 100));
        const kinds = [BLKIF_OP.WRITE, BLKIF_OP.READ, BLKIF_OP.DISCARD, BLKIF_OP.INDIRECT, BLKIF_OP.FLUSH_DISKCACHE, BLKIF_OP.WRITE_BARRIER];
        const req = new BlkifRequest();
        const enc = new Uint8Array(L.requestSize);
        const sent: { line: string; idLo: number; idHi: number; rspOp: number }[] = [];
        for (let i = 0; !front.full(); i++) {
          const op = kinds[i % kinds.length] as number;
          req.operation = op;
          req.nrSegments = op === BLKIF_OP.FLUSH_DISKCACHE ? 0 : 1 + (rnd() % BLKIF_MAX_SEGMENTS_PER_REQUEST);
          req.handle = rnd() & 0xffff;
          req.idLo = rnd();
          req.idHi = rnd();
          req.sectorNumber = (rnd() % 0x100000) * 2 ** 32 + rnd();
          for (let s = 0; s < BLKIF_MAX_SEGMENTS_PER_REQUEST; s++) {
            req.segGref[s] = rnd();
            req.segFirst[s] = rnd() & 7;
            req.segLast[s] = 7;
          }
          req.discardFlag = rnd() & BLKIF_DISCARD_SECURE;
          req.nrSectors = (rnd() % 0x100000) * 2 ** 32 + rnd();
          req.indirectOp = rnd() & 1;
          req.indirectNrSegments = 1 + (rnd() % 4096);
          for (let g = 0; g < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; g++) req.indirectGrefs[g] = rnd();
          encodeRequest(abi, req, enc);
          front.putRequest(enc);
          const rspOp = op === BLKIF_OP.INDIRECT ? req.indirectOp : op;
          sent.push({ line: formatRequest(i, req), idLo: req.idLo, idHi: req.idHi, rspOp });
        }
        assert.equal(sent.length, ring.size);
        assert.equal(front.pushRequestsAndCheckNotify(), true);

        const img = join(dir, `back-${order}.img`);
        writeFileSync(img, pagesToImage(pages));
        const out = runOk(golden, ['back', img, String(order)]);
        assert.equal(field(out, 'SIZE '), `SIZE ${ring.size}`);
        assert.deepEqual(
          out.filter((l) => l.startsWith('REQ ')),
          sent.map((s) => s.line),
        );
        assert.equal(field(out, 'NOTIFY'), `NOTIFY 1 MORE 0 REQ_EVENT ${(start + sent.length + 1) >>> 0}`);

        imageToPages(new Uint8Array(readFileSync(img)), pages);
        assert.equal(front.responseProdOverflow(), false);
        assert.equal(front.unconsumedResponses(), sent.length);
        const raw = new Uint8Array(L.responseSize);
        const rsp = new BlkifResponse();
        sent.forEach((s, i) => {
          assert.equal(front.takeResponse(raw), true);
          decodeResponse(abi, raw, rsp);
          assert.deepEqual(
            { idLo: rsp.idLo, idHi: rsp.idHi, operation: rsp.operation, status: rsp.status },
            { idLo: s.idLo, idHi: s.idHi, operation: s.rspOp, status: statusFor(i) },
            `response ${i}`,
          );
        });
        assert.equal(front.takeResponse(raw), false);
        assert.equal(front.finalCheckForResponses(), false);
        assert.equal(ring.rspEvent, (start + sent.length + 1) >>> 0);
      });
    }
  });
}
