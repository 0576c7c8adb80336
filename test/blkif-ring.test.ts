import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ABI_LAYOUT, BLKIF_OP, BLKIF_RSP } from '../src/blkif/constants.ts';
import type { BlkifAbi } from '../src/blkif/constants.ts';
import { BlkifRequest, BlkifResponse, decodeRequest, decodeResponse, encodeRequest, encodeResponse } from '../src/blkif/codec.ts';
import { BackRing, FrontRing, SharedRing, frontRingInit, ringEntries } from '../src/blkif/ring.ts';
import { PAGE, pagesToImage, prng, scatteredPages } from './fixtures/blkif/pages.ts';

const ABIS: readonly BlkifAbi[] = ['x86_64', 'x86_32'];

function header(pages: readonly Uint8Array[]): DataView {
  const p = pages[0] as Uint8Array;
  return new DataView(p.buffer, p.byteOffset, 64);
}

function newRing(nPages: number, abi: BlkifAbi, seed = 7, shared = true): SharedRing {
  const ring = new SharedRing(scatteredPages(nPages, seed, shared), abi);
  frontRingInit(ring);
  return ring;
}

/** Sets all four shared indices as a ring that has already run `start` requests would have them. */
function startAt(ring: SharedRing, start: number): void {
  ring.reqProd = start;
  ring.rspProd = start;
  ring.reqEvent = (start + 1) >>> 0;
  ring.rspEvent = (start + 1) >>> 0;
}

test('ringEntries: largest power of two that fits, 32..512 for 1..16 pages', () => {
  for (const abi of ABIS) {
    assert.deepEqual(
      [1, 2, 4, 8, 16].map((n) => ringEntries(n, abi)),
      [32, 64, 128, 256, 512],
      abi,
    );
  }
  // 3 pages: (12288-64)/112 = 109 and /108 = 113 entries both round down to 64.
  assert.equal(ringEntries(3, 'x86_64'), 64);
  assert.equal(ringEntries(3, 'x86_32'), 64);
  assert.equal(ringEntries(0, 'x86_64'), 0);
});

test('header words sit at 0/4/8/12, little-endian, full u32 range', () => {
  const pages = scatteredPages(1, 1);
  const ring = new SharedRing(pages, 'x86_64');
  ring.reqProd = 0xfffffff0;
  ring.reqEvent = 0x11223344;
  ring.rspProd = 0x80000000;
  ring.rspEvent = 5;
  const h = header(pages);
  assert.equal(h.getUint32(0, true), 0xfffffff0);
  assert.equal(h.getUint32(4, true), 0x11223344);
  assert.equal(h.getUint32(8, true), 0x80000000);
  assert.equal(h.getUint32(12, true), 5);
  assert.equal(ring.reqProd, 0xfffffff0);
  assert.equal(ring.rspProd, 0x80000000);
  h.setUint32(12, 0xdeadbeef, true);
  assert.equal(ring.rspEvent, 0xdeadbeef);
});

test('frontRingInit (SHARED_RING_INIT): producers 0, events 1, pvt and pad zeroed, entries untouched', () => {
  const pages = scatteredPages(1, 2);
  const p0 = pages[0] as Uint8Array;
  p0.fill(0xaa, 0, 80);
  const ring = new SharedRing(pages, 'x86_32');
  frontRingInit(ring);
  const h = header(pages);
  assert.deepEqual(
    [0, 4, 8, 12].map((o) => h.getUint32(o, true)),
    [0, 1, 0, 1],
  );
  assert.deepEqual(p0.subarray(16, 64), new Uint8Array(48));
  assert.equal(p0[64], 0xaa);
});

test('SharedRing refuses bad page sets', () => {
  assert.throws(() => new SharedRing([], 'x86_64'), { code: 'BLK_ERR_RING' });
  assert.throws(() => new SharedRing([new Uint8Array(4096), new Uint8Array(4095)], 'x86_64'), { code: 'BLK_ERR_RING' });
  assert.throws(() => new SharedRing([new Uint8Array(new ArrayBuffer(8192), 2, 4096)], 'x86_64'), { code: 'BLK_ERR_RING' });
});

for (const abi of ABIS) {
  const L = ABI_LAYOUT[abi];

  for (const nPages of [1, 2, 4, 8, 16]) {
    const shared = nPages !== 4; // one size over plain ArrayBuffers, as on real Xen's mapped pages
    test(`${abi}, ${nPages} scattered page(s)${shared ? '' : ' (plain ArrayBuffer)'}: every slot lands at 64 + slot*stride of the concatenated pages`, () => {
      const ring = newRing(nPages, abi, 100 + nPages, shared);
      const size = ring.size;
      assert.equal(size, 32 * nPages);
      const front = new FrontRing(ring);
      const back = new BackRing(ring);
      const rnd = prng(nPages * 31 + (abi === 'x86_64' ? 1 : 2));
      const sent: Uint8Array[] = [];
      let straddling = 0;
      for (let slot = 0; slot < size; slot++) {
        const req = new Uint8Array(L.requestSize).map(() => rnd() & 0xff);
        sent.push(req);
        front.putRequest(req);
        const start = 64 + slot * L.stride;
        if (start >>> 12 !== (start + L.stride - 1) >>> 12) straddling++;
      }
      // Hand-derived: page edge k*4096 cuts an entry unless (k*4096 - 64) % stride == 0, which for
      // 112 holds at k = 1, 8, 15 and for 108 never within 16 pages.
      const expectStraddling = { x86_64: [0, 0, 2, 6, 12], x86_32: [0, 1, 3, 6, 13] }[abi][Math.log2(nPages)];
      assert.equal(straddling, expectStraddling, 'entries crossing a page edge');
      assert.equal(front.full(), true);
      assert.equal(front.pushRequestsAndCheckNotify(), true);

      // Independent placement check on a contiguous copy of the pages.
      const image = pagesToImage(ring.pages);
      sent.forEach((req, slot) => {
        const start = 64 + slot * L.stride;
        assert.deepEqual(image.subarray(start, start + L.requestSize), req, `request slot ${slot}`);
      });

      assert.equal(back.requestProdOverflow(), false);
      assert.equal(back.unconsumedRequests(), size);
      const got = new Uint8Array(L.requestSize);
      const rsps: Uint8Array[] = [];
      for (let slot = 0; slot < size; slot++) {
        assert.equal(back.takeRequest(got), true);
        assert.deepEqual(got, sent[slot], `request ${slot}`);
        const rsp = new Uint8Array(L.responseSize).map(() => rnd() & 0xff);
        rsps.push(rsp);
        back.putResponse(rsp);
      }
      assert.equal(back.takeRequest(got), false);
      assert.equal(back.pushResponsesAndCheckNotify(), true);

      const image2 = pagesToImage(ring.pages);
      rsps.forEach((rsp, slot) => {
        const start = 64 + slot * L.stride;
        assert.deepEqual(image2.subarray(start, start + L.responseSize), rsp, `response slot ${slot}`);
        // A response overwrites only its own bytes; the rest of the slot still holds the request.
        assert.deepEqual(image2.subarray(start + L.responseSize, start + L.stride), (sent[slot] as Uint8Array).subarray(L.responseSize));
      });

      const gotRsp = new Uint8Array(L.responseSize);
      for (let slot = 0; slot < size; slot++) {
        assert.equal(front.takeResponse(gotRsp), true);
        assert.deepEqual(gotRsp, rsps[slot], `response ${slot}`);
      }
      assert.equal(front.takeResponse(gotRsp), false);
      assert.equal(front.freeRequests(), size);
    });
  }

  test(`${abi}: wrap-around through 2^32 with both ends attached at 0xFFFFFFF0, 5x the ring size`, () => {
    for (const nPages of [1, 4]) {
      const ring = newRing(nPages, abi, 9 + nPages);
      const start = 0xfffffff0;
      startAt(ring, start);
      const front = new FrontRing(ring, true);
      const back = new BackRing(ring, true);
      assert.equal(front.reqProdPvt, start);
      assert.equal(back.reqCons, start);
      const size = ring.size;
      const rnd = prng(77 + nPages);
      const enc = new Uint8Array(L.requestSize);
      const req = new BlkifRequest();
      const dec = new BlkifRequest();
      const rspBuf = new Uint8Array(L.responseSize);
      const rsp = new BlkifResponse();
      const taken: number[] = []; // sequence numbers the backend holds without a response yet
      let nextSeq = 0;
      let nextRsp = 0;
      const total = 5 * size;
      while (nextRsp < total) {
        // Frontend: a random batch, at most what the ring has room for.
        const batch = Math.min(front.freeRequests(), total - nextSeq, 1 + (rnd() % size));
        for (let i = 0; i < batch; i++) {
          req.operation = BLKIF_OP.READ;
          req.nrSegments = 1;
          req.idLo = nextSeq;
          req.idHi = 0xabc;
          req.sectorNumber = nextSeq * 8;
          req.segGref[0] = nextSeq + 1000;
          encodeRequest(abi, req, enc);
          front.putRequest(enc);
          nextSeq++;
        }
        front.pushRequestsAndCheckNotify();
        // Backend: take some, answer some of what it holds.
        assert.equal(back.requestProdOverflow(), false);
        const want = rnd() % (size + 1);
        for (let i = 0; i < want && back.takeRequest(enc); i++) {
          decodeRequest(abi, enc, dec);
          assert.equal(dec.idLo, taken.length === 0 ? nextRsp : (taken[taken.length - 1] as number) + 1);
          assert.equal(dec.sectorNumber, dec.idLo * 8);
          assert.equal(dec.segGref[0], dec.idLo + 1000);
          taken.push(dec.idLo);
        }
        const answer = rnd() % 2 === 0 ? taken.length : rnd() % (taken.length + 1);
        for (let i = 0; i < answer; i++) {
          const seq = taken.shift() as number;
          encodeResponse(abi, rspBuf, seq, 0xabc, BLKIF_OP.READ, BLKIF_RSP.OKAY);
          back.putResponse(rspBuf);
        }
        back.pushResponsesAndCheckNotify();
        // Frontend: consume every response in order.
        while (front.takeResponse(rspBuf)) {
          decodeResponse(abi, rspBuf, rsp);
          assert.equal(rsp.idLo, nextRsp);
          assert.equal(rsp.idHi, 0xabc);
          nextRsp++;
        }
        assert.equal(front.responseProdOverflow(), false);
      }
      assert.equal(ring.reqProd, (start + total) >>> 0);
      assert.equal(ring.rspProd, (start + total) >>> 0);
      assert.ok(ring.reqProd < start, 'indices wrapped past 2^32');
      assert.equal(back.reqCons, (start + total) >>> 0);
      assert.equal(front.rspCons, (start + total) >>> 0);
      assert.equal(front.freeRequests(), size);
    }
  });
}

test('event suppression: requests notify exactly when req_event lies in (old, new]', () => {
  const ring = newRing(1, 'x86_64', 3);
  const front = new FrontRing(ring);
  const back = new BackRing(ring);
  const buf = new Uint8Array(112);
  // After init req_event = 1: the first request notifies, the second does not.
  front.putRequest(buf);
  assert.equal(front.pushRequestsAndCheckNotify(), true);
  front.putRequest(buf);
  assert.equal(front.pushRequestsAndCheckNotify(), false);
  // Pushing nothing never notifies.
  assert.equal(front.pushRequestsAndCheckNotify(), false);
  // Backend drains, then the final check re-arms req_event at req_cons + 1.
  while (back.takeRequest(buf));
  assert.equal(back.finalCheckForRequests(), false);
  assert.equal(ring.reqEvent, 3);
  front.putRequest(buf);
  front.putRequest(buf);
  front.putRequest(buf);
  assert.equal(front.pushRequestsAndCheckNotify(), true, 'batch covering req_event notifies once');
  // While the backend is busy (did not re-arm), further pushes are silent.
  front.putRequest(buf);
  assert.equal(front.pushRequestsAndCheckNotify(), false);
  // A backend that batches: ask for an event only at the 4th next request.
  while (back.takeRequest(buf));
  ring.reqEvent = (back.reqCons + 4) >>> 0;
  const notes: boolean[] = [];
  for (let i = 0; i < 6; i++) {
    front.putRequest(buf);
    notes.push(front.pushRequestsAndCheckNotify());
  }
  assert.deepEqual(notes, [false, false, false, true, false, false]);
  // finalCheck finds pending work without touching req_event.
  const ev = ring.reqEvent;
  assert.equal(back.finalCheckForRequests(), true);
  assert.equal(ring.reqEvent, ev);
});

test('event suppression: responses, and the final check closes the race with a late response', () => {
  const ring = newRing(1, 'x86_32', 4);
  const front = new FrontRing(ring);
  const back = new BackRing(ring);
  const req = new Uint8Array(108);
  const rsp = new Uint8Array(12);
  for (let i = 0; i < 5; i++) front.putRequest(req);
  front.pushRequestsAndCheckNotify();
  while (back.takeRequest(req));
  // rsp_event = 1 after init: the first response notifies, the next ones do not.
  back.putResponse(rsp);
  assert.equal(back.pushResponsesAndCheckNotify(), true);
  back.putResponse(rsp);
  back.putResponse(rsp);
  assert.equal(back.pushResponsesAndCheckNotify(), false);
  assert.equal(front.unconsumedResponses(), 3);
  assert.equal(front.finalCheckForResponses(), true);
  while (front.takeResponse(rsp));
  assert.equal(front.finalCheckForResponses(), false);
  assert.equal(ring.rspEvent, 4);
  back.putResponse(rsp);
  assert.equal(back.pushResponsesAndCheckNotify(), true);
  // The race: the backend publishes after the frontend's first look but before it re-arms;
  // the second look inside the final check sees it.
  while (front.takeResponse(rsp));
  back.putResponse(rsp);
  ring.rspProd = back.rspProdPvt; // published without a notification check
  assert.equal(front.finalCheckForResponses(), true);
});

test('event suppression across the 2^32 wrap', () => {
  const ring = newRing(1, 'x86_64', 5);
  startAt(ring, 0xfffffffe);
  const front = new FrontRing(ring, true);
  const back = new BackRing(ring, true);
  const buf = new Uint8Array(112);
  for (let i = 0; i < 3; i++) front.putRequest(buf);
  assert.equal(front.reqProdPvt, 1);
  assert.equal(front.pushRequestsAndCheckNotify(), true, 'req_event 0xffffffff lies in (0xfffffffe, 1]');
  while (back.takeRequest(buf));
  assert.equal(back.reqCons, 1);
  assert.equal(back.finalCheckForRequests(), false);
  assert.equal(ring.reqEvent, 2);
  ring.reqEvent = 0xfffffff0; // an event index far behind: no request can reach it
  front.putRequest(buf);
  assert.equal(front.pushRequestsAndCheckNotify(), false);
});

test('full ring, RING_REQUEST_CONS_OVERFLOW and RING_REQUEST_PROD_OVERFLOW against a bogus frontend', () => {
  const ring = newRing(2, 'x86_32', 6);
  const size = ring.size;
  const front = new FrontRing(ring);
  const back = new BackRing(ring);
  const buf = new Uint8Array(108);
  for (let i = 0; i < size; i++) {
    buf[0] = i;
    front.putRequest(buf);
  }
  assert.equal(front.full(), true);
  assert.equal(front.freeRequests(), 0);
  assert.throws(() => front.putRequest(buf), { code: 'BLK_ERR_RING' });
  front.pushRequestsAndCheckNotify();
  assert.equal(back.requestProdOverflow(), false, 'exactly a full ring is legal');
  let n = 0;
  while (back.takeRequest(buf)) {
    assert.equal(buf[0], n & 0xff);
    n++;
  }
  assert.equal(n, size);
  // The frontend lies: three more requests while the whole ring awaits responses.
  ring.reqProd = (ring.reqProd + 3) >>> 0;
  assert.equal(back.requestProdOverflow(), true);
  assert.equal(back.unconsumedRequests(), 0, 'min() caps at the responses not yet produced');
  assert.equal(back.takeRequest(buf), false, 'CONS_OVERFLOW stops the backend');
  back.putResponse(new Uint8Array(12));
  assert.equal(back.unconsumedRequests(), 1);
  assert.equal(back.takeRequest(buf), true);
  assert.equal(back.takeRequest(buf), false);
  // req_prod moved backwards is as bogus as too far forwards.
  ring.reqProd = (back.rspProdPvt - 1) >>> 0;
  assert.equal(back.requestProdOverflow(), true);
});

test('putResponse without an outstanding request is refused', () => {
  const ring = newRing(1, 'x86_64', 8);
  const back = new BackRing(ring);
  assert.throws(() => back.putResponse(new Uint8Array(16)), { code: 'BLK_ERR_RING' });
});

test('BACK_RING_ATTACH at rsp_prod re-consumes requests that were never answered', () => {
  const ring = newRing(1, 'x86_64', 10);
  const front = new FrontRing(ring);
  const back = new BackRing(ring);
  const buf = new Uint8Array(112);
  for (let i = 0; i < 4; i++) {
    buf[0] = i;
    front.putRequest(buf);
  }
  front.pushRequestsAndCheckNotify();
  for (let i = 0; i < 4; i++) back.takeRequest(buf);
  back.putResponse(buf.subarray(0, 16));
  back.putResponse(buf.subarray(0, 16));
  back.pushResponsesAndCheckNotify();
  // The backend restarts: a new BackRing attached at rsp_prod sees requests 2 and 3 again.
  const back2 = new BackRing(ring, true);
  assert.equal(back2.reqCons, 2);
  assert.equal(back2.unconsumedRequests(), 2);
  assert.equal(back2.takeRequest(buf), true);
  assert.equal(buf[0], 2);
});

test('copyIn/copyOut of part of an entry leave the rest alone, also across a page edge', () => {
  const pages = scatteredPages(2, 11);
  const ring = new SharedRing(pages, 'x86_32');
  // Entry 37 of an x86_32 ring occupies bytes 4060..4167: 36 on page 0, 72 on page 1.
  const entry = new Uint8Array(108).map((_, i) => i + 1);
  ring.copyIn(37, entry, 108);
  assert.deepEqual((pages[0] as Uint8Array).subarray(4060, 4096), entry.subarray(0, 36));
  assert.deepEqual((pages[1] as Uint8Array).subarray(0, 72), entry.subarray(36));
  const part = new Uint8Array(40).fill(0xee);
  ring.copyIn(37 + 64, part, 40); // same slot: index is taken modulo the ring size
  const out = new Uint8Array(108);
  ring.copyOut(37, out);
  assert.deepEqual(out.subarray(0, 40), part);
  assert.deepEqual(out.subarray(40), entry.subarray(40));
  const small = new Uint8Array(50);
  ring.copyOut(37, small);
  assert.deepEqual(small, out.subarray(0, 50));
  assert.throws(() => ring.copyIn(0, new Uint8Array(200), 109), { code: 'BLK_ERR_RING' });
  assert.throws(() => ring.copyIn(0, new Uint8Array(10), 11), { code: 'BLK_ERR_RING' });
  assert.equal(PAGE, 4096);
});
