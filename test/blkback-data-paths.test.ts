// The three data paths (map, persistent grants, grant copy) behind one interface, without a ring:
// the same conformance checks run on each (a write's vector holds the guest's bytes once fetched; a
// read's bytes reach the guest once delivered; bad grants are refused as bad_grant; nothing stays
// mapped or held after release and close), then each path's own promises. The grant table here is
// a small fake over one SharedArrayBuffer of "guest memory", written for this test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GNTST, PAGE_SIZE } from '../src/hypervisor/types.ts';
import type { BackendGrants, GrantCopyEnd, GrantCopyOp, GrantMapping } from '../src/hypervisor/types.ts';
import { createDataPath } from '../src/blkback/data-path/create.ts';
import { PersistentGrantPath } from '../src/blkback/data-path/persistent-grants.ts';
import type { DataPath, GuestDataPath, IndirectRequest, SegmentList, SegmentRequest } from '../src/blkback/data-path/types.ts';
import type { Rejection } from '../src/blkback/request-validator.ts';

const GUEST = 7;
const FRAMES = 64;
const RING_SIZE = 4;

class FakeGrants implements BackendGrants {
  readonly memory = new Uint8Array(new SharedArrayBuffer(FRAMES * PAGE_SIZE));
  readonly #grants = new Map<number, { frame: number; readOnly: boolean }>();
  readonly #ours = new Set<ArrayBufferLike>();
  maps = 0;
  liveMappings = 0;
  copyCalls = 0;

  grant(ref: number, frame: number, readOnly = false): void {
    this.#grants.set(ref, { frame, readOnly });
  }

  revoke(ref: number): void {
    this.#grants.delete(ref);
  }

  frame(frame: number): Uint8Array {
    return this.memory.subarray(frame * PAGE_SIZE, (frame + 1) * PAGE_SIZE);
  }

  map(domid: number, refs: ArrayLike<number>, count: number, writable: boolean): GrantMapping {
    const pages: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      const g = domid === GUEST ? this.#grants.get(refs[i]!) : undefined;
      if (g === undefined) throw new Error(`grant ref ${refs[i]}: not granted`);
      if (writable && g.readOnly) throw new Error(`grant ref ${refs[i]}: read-only`);
      pages.push(this.frame(g.frame));
    }
    this.maps++;
    this.liveMappings++;
    let mapped = true;
    return {
      pages,
      unmap: () => {
        assert.ok(mapped, 'a mapping is unmapped once');
        mapped = false;
        this.liveMappings--;
      },
    };
  }

  copy(ops: readonly GrantCopyOp[]): number[] {
    this.copyCalls++;
    return ops.map((op) => {
      const from = this.#resolve(op.source, op.length, false);
      const to = this.#resolve(op.dest, op.length, true);
      if (typeof from === 'number') return from;
      if (typeof to === 'number') return to;
      to.set(from);
      return GNTST.okay;
    });
  }

  allocBuffer(bytes: number): Uint8Array {
    const buffer = new Uint8Array(new SharedArrayBuffer(bytes));
    this.#ours.add(buffer.buffer);
    return buffer;
  }

  #resolve(end: GrantCopyEnd, length: number, writing: boolean): Uint8Array | number {
    if ('buffer' in end) return this.#ours.has(end.buffer.buffer) && end.buffer.length === length ? end.buffer : GNTST.general_error;
    const g = end.domid === GUEST ? this.#grants.get(end.ref) : undefined;
    if (g === undefined) return GNTST.bad_gntref;
    if (writing && g.readOnly) return GNTST.permission_denied;
    if (end.offset + length > PAGE_SIZE) return GNTST.bad_copy_arg;
    return this.frame(g.frame).subarray(end.offset, end.offset + length);
  }
}

class Req implements SegmentRequest {
  nseg = 0;
  segGref = new Uint32Array(16);
  segFirst = new Uint8Array(16);
  segLast = new Uint8Array(16);
  readonly iov: Uint8Array[] = [];
  mapping: GrantMapping | null = null;
  readonly bouncePages: number[] = [];

  constructor(segs: readonly (readonly [ref: number, first: number, last: number])[]) {
    this.nseg = segs.length;
    segs.forEach(([ref, first, last], i) => {
      this.segGref[i] = ref;
      this.segFirst[i] = first;
      this.segLast[i] = last;
    });
  }
}

/** Fills guest frames with bytes that name their frame and offset. */
function fillGuest(g: FakeGrants, frames: readonly number[], salt: number): void {
  for (const f of frames) for (let i = 0; i < PAGE_SIZE; i++) g.memory[f * PAGE_SIZE + i] = (f * 31 + i * 7 + salt) & 0xff;
}

/** The bytes a request's segments name in guest memory, in order. */
function guestBytes(g: FakeGrants, frames: readonly number[], r: Req): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < r.nseg; i++) parts.push(Buffer.from(g.frame(frames[i]!).subarray(r.segFirst[i]! * 512, (r.segLast[i]! + 1) * 512)));
  return Buffer.concat(parts);
}

const vectorBytes = (r: Req): Buffer => Buffer.concat(r.iov.map((v) => Buffer.from(v)));

function setup(kind: DataPath): { g: FakeGrants; path: GuestDataPath } {
  const g = new FakeGrants();
  for (let ref = 1; ref <= 32; ref++) g.grant(ref, ref); // ref n is frame n
  return { g, path: createDataPath(kind, { grants: g, frontendDomid: GUEST, ringSize: RING_SIZE, maxRequestSegments: 11 }) };
}

function attached(result: 'ready' | 'fetch' | Rejection): 'ready' | 'fetch' {
  if (typeof result === 'object') assert.fail(`refused: ${result.reason}`);
  return result;
}

/** Runs deliver on one read and says how it ended. */
function deliverOne(path: GuestDataPath, r: Req): Rejection | null {
  let outcome: Rejection | null | undefined;
  path.deliver(
    [r],
    1,
    () => (outcome = null),
    (_r, why) => (outcome = why),
  );
  assert.notEqual(outcome, undefined, 'deliver answered the request');
  return outcome!;
}

class IndirectReq implements IndirectRequest {
  readonly segmentList: SegmentList;
  readonly indirectRefs: Uint32Array;
  readonly indirectPages: number;
  readonly indirectCount: number;
  constructor(indirectRefs: Uint32Array, indirectPages: number, indirectCount: number) {
    this.indirectRefs = indirectRefs;
    this.indirectPages = indirectPages;
    this.indirectCount = indirectCount;
    this.segmentList = { gref: new Uint32Array(indirectCount), first: new Uint8Array(indirectCount), last: new Uint8Array(indirectCount) };
  }
}

/** Reads a batch of indirect lists; the outcome of each, in the order the path answered. */
function readLists(path: GuestDataPath, requests: readonly IndirectReq[]): [IndirectReq, Rejection | null][] {
  const answered: [IndirectReq, Rejection | null][] = [];
  path.readIndirect(
    requests,
    requests.length,
    (r) => answered.push([r, null]),
    (r, why) => answered.push([r, why]),
  );
  return answered;
}

/** Writes an indirect segment list of `count` entries (gref base + i, first i % 8, last 7) across `pages`. */
function writeList(g: FakeGrants, pages: readonly number[], count: number, base: number): void {
  const dv = new DataView(g.memory.buffer);
  for (let i = 0; i < count; i++) {
    const at = pages[i >> 9]! * PAGE_SIZE + (i & 511) * 8;
    dv.setUint32(at, base + i, true);
    dv.setUint8(at + 4, i % 8);
    dv.setUint8(at + 5, 7);
  }
}

function assertList(list: SegmentList, count: number, base: number): void {
  for (let i = 0; i < count; i++) {
    assert.equal(list.gref[i], base + i);
    assert.equal(list.first[i], i % 8);
    assert.equal(list.last[i], 7);
  }
}

/** Runs fetch on one request and says how it ended. */
function fetchOne(path: GuestDataPath, r: Req): Rejection | null {
  let outcome: Rejection | null | undefined;
  path.fetch(
    [r],
    1,
    () => (outcome = null),
    (_r, why) => (outcome = why),
  );
  assert.notEqual(outcome, undefined, 'fetch answered the request');
  return outcome!;
}

for (const kind of ['map', 'persistent', 'copy'] as const) {
  test(`${kind}: a write's vector holds exactly the guest's bytes of its segments (partial pages included)`, () => {
    const { g, path } = setup(kind);
    assert.equal(path.kind, kind);
    fillGuest(g, [3, 4, 9], 1);
    const r = new Req([
      [3, 2, 7],
      [4, 0, 7],
      [9, 0, 4],
    ]);
    if (attached(path.attach(r, false)) === 'fetch') assert.equal(fetchOne(path, r), null);
    assert.deepEqual(vectorBytes(r), guestBytes(g, [3, 4, 9], r));
    path.release(r);
    path.close();
    assert.equal(g.liveMappings, 0, 'nothing left mapped');
  });

  test(`${kind}: a read's bytes, written into its vector, are the guest's once delivered; nothing else in the guest changes`, () => {
    const { g, path } = setup(kind);
    fillGuest(g, [5, 6, 7, 8], 2);
    const before = Buffer.from(g.memory);
    const r = new Req([
      [5, 1, 3],
      [6, 0, 7],
    ]);
    assert.equal(attached(path.attach(r, true)), 'ready', 'a read needs nothing fetched');
    let n = 0;
    for (const v of r.iov) for (let i = 0; i < v.length; i++) v[i] = (n++ * 13 + 5) & 0xff;
    assert.equal(deliverOne(path, r), null);
    const expected = Buffer.alloc(n);
    for (let i = 0; i < n; i++) expected[i] = (i * 13 + 5) & 0xff;
    assert.deepEqual(guestBytes(g, [5, 6], r), expected);
    // Everything outside the two segments is as it was.
    const after = Buffer.from(g.memory);
    after.set(before.subarray(5 * PAGE_SIZE + 512, 5 * PAGE_SIZE + 4 * 512), 5 * PAGE_SIZE + 512);
    after.set(before.subarray(6 * PAGE_SIZE, 7 * PAGE_SIZE), 6 * PAGE_SIZE);
    assert.ok(after.equals(before), 'only the segments were written');
    path.release(r);
    path.close();
    assert.equal(g.liveMappings, 0);
  });

  test(`${kind}: a grant the guest never gave, or a read-only one for a read, is refused as bad_grant`, () => {
    const { g, path } = setup(kind);
    g.grant(40, 20, true);
    const cases: [string, Req, boolean][] = [
      [
        'unknown ref, read',
        new Req([
          [1, 0, 7],
          [999, 0, 7],
        ]),
        true,
      ],
      ['unknown ref, write', new Req([[999, 0, 7]]), false],
      ['read into a read-only grant', new Req([[40, 0, 7]]), true],
    ];
    for (const [what, r, deviceWrites] of cases) {
      const result = path.attach(r, deviceWrites);
      let why: Rejection | null = typeof result === 'object' ? result : null;
      if (why === null && result === 'fetch') why = fetchOne(path, r);
      if (why === null && deviceWrites) why = deliverOne(path, r);
      assert.ok(why !== null, `${what}: refused`);
      assert.equal(why.kind, 'bad_grant', what);
      assert.equal(why.status, -1, what);
      path.release(r);
    }
    path.close();
    assert.equal(g.liveMappings, 0, 'refusals leave nothing mapped');
  });

  test(`${kind}: an indirect segment list is read from its pages, across a page boundary`, () => {
    const { g, path } = setup(kind);
    const count = 600; // 512 on the first page, 88 on the second
    writeList(g, [11, 12], count, 1000);
    const r = new IndirectReq(Uint32Array.of(11, 12), 2, count);
    assert.deepEqual(readLists(path, [r]), [[r, null]]);
    assertList(r.segmentList, count, 1000);
    const [[, bad]] = readLists(path, [new IndirectReq(Uint32Array.of(11, 999), 2, count)]) as [[IndirectReq, Rejection | null]];
    assert.equal(bad?.kind, 'bad_grant');
    path.close();
    assert.equal(g.liveMappings, 0);
  });
}

test('map: each request maps its own grants and release unmaps them', () => {
  const { g, path } = setup('map');
  const r = new Req([
    [1, 0, 7],
    [2, 0, 7],
  ]);
  attached(path.attach(r, true));
  assert.equal(g.liveMappings, 1);
  assert.equal(r.iov.length, 1, 'frames 1 and 2 follow each other: one vector entry');
  assert.equal(r.iov[0]!.buffer, g.memory.buffer, 'zero-copy: the vector is guest memory');
  path.release(r);
  assert.equal(g.liveMappings, 0);
  assert.equal(r.mapping, null);
});

test('persistent: a grant is mapped once and kept; past the limit requests map per request', () => {
  const g = new FakeGrants();
  for (let ref = 1; ref <= 32; ref++) g.grant(ref, ref);
  const path = new PersistentGrantPath(g, GUEST, 3);
  const first = new Req([
    [1, 0, 7],
    [2, 0, 7],
  ]);
  attached(path.attach(first, false));
  path.release(first);
  assert.equal(path.grantsKept, 2);
  const maps = g.maps;
  const again = new Req([
    [2, 0, 7],
    [1, 0, 7],
  ]);
  attached(path.attach(again, true));
  path.release(again);
  assert.equal(g.maps, maps, 'kept grants cost no map call');
  // Two new grants would pass the limit of 3: this request maps its own, and release unmaps it.
  const over = new Req([
    [5, 0, 7],
    [6, 0, 7],
  ]);
  attached(path.attach(over, true));
  assert.notEqual(over.mapping, null);
  assert.equal(path.grantsKept, 2);
  path.release(over);
  assert.equal(g.liveMappings, 2, 'only the kept grants stay mapped');
  path.close();
  assert.equal(g.liveMappings, 0);
  assert.equal(path.grantsKept, 0);
});

test('copy: bounce pages, writes fetched in one batch, and no more requests taken while the pool runs low', () => {
  const { g, path } = setup('copy');
  assert.ok(path.canTakeRequest());
  // The pool holds max(4 slots x 11, 4 x 11) = 44 pages: take requests until fewer than 11 are free.
  const held: Req[] = [];
  while (path.canTakeRequest()) {
    const r = new Req(Array.from({ length: 11 }, (_, i) => [1 + i, 0, 7] as const));
    attached(path.attach(r, true));
    for (const v of r.iov) assert.notEqual(v.buffer, g.memory.buffer, 'bounce pages, not guest memory');
    held.push(r);
  }
  assert.equal(held.length, 4);
  path.release(held.pop()!);
  assert.ok(path.canTakeRequest(), 'a released request gives its pages back');
  for (const r of held) path.release(r);
  fillGuest(g, [1, 2, 3, 4], 3);
  const writes = [
    new Req([[1, 0, 7]]),
    new Req([
      [2, 0, 3],
      [3, 4, 7],
    ]),
    new Req([[999, 0, 7]]),
    new Req([[4, 0, 7]]),
  ];
  for (const r of writes) assert.equal(attached(path.attach(r, false)), 'fetch');
  const calls = g.copyCalls;
  const ready: Req[] = [];
  const failed: Req[] = [];
  path.fetch(
    writes,
    writes.length,
    (r) => ready.push(r),
    (r) => failed.push(r),
  );
  assert.equal(g.copyCalls, calls + 1, 'one copy call for the whole batch');
  assert.deepEqual(ready, [writes[0], writes[1], writes[3]], 'in order, the bad one left out');
  assert.deepEqual(failed, [writes[2]]);
  assert.deepEqual(vectorBytes(writes[1]!), guestBytes(g, [2, 3], writes[1]!));
  assert.deepEqual(vectorBytes(writes[3]!), guestBytes(g, [4], writes[3]!));
});

for (const kind of ['map', 'persistent', 'copy'] as const) {
  test(`${kind}: a batch of indirect lists is read whole, in order; a bad grant refuses only the request that named it`, () => {
    const { g, path } = setup(kind);
    writeList(g, [13], 40, 2000);
    writeList(g, [14, 15], 520, 3000);
    writeList(g, [16], 12, 4000);
    const a = new IndirectReq(Uint32Array.of(13), 1, 40);
    const b = new IndirectReq(Uint32Array.of(14, 15), 2, 520);
    const bad = new IndirectReq(Uint32Array.of(999), 1, 12);
    const c = new IndirectReq(Uint32Array.of(16), 1, 12);
    const answered = readLists(path, [a, bad, b, c]);
    assert.deepEqual(
      answered.map(([r]) => r),
      [a, bad, b, c],
      'each answered once, in order',
    );
    assert.deepEqual(
      answered.map(([, why]) => why?.kind ?? null),
      [null, 'bad_grant', null, null],
    );
    assertList(a.segmentList, 40, 2000);
    assertList(b.segmentList, 520, 3000);
    assertList(c.segmentList, 12, 4000);
    path.close();
    assert.equal(g.liveMappings, 0);
  });
}

test('copy: the lists of a turn of indirect requests come in with one copy call; a batch larger than the scratch in several', () => {
  const { g, path } = setup('copy');
  for (let f = 20; f < 52; f++) writeList(g, [f], 16, f * 100);
  const requests = Array.from({ length: 32 }, (_, i) => new IndirectReq(Uint32Array.of(20 + i), 1, 16));
  for (let ref = 20; ref < 52; ref++) g.grant(ref, ref);
  let calls = g.copyCalls;
  assert.ok(readLists(path, requests.slice(0, 10)).every(([, why]) => why === null));
  assert.equal(g.copyCalls, calls + 1, 'ten lists, one copy call');
  calls = g.copyCalls;
  // 32 one-page lists fill the scratch exactly; 8 two-page ones more do not fit with them.
  const big = Array.from({ length: 8 }, () => new IndirectReq(Uint32Array.of(20, 21), 2, 600));
  const answered = readLists(path, [...requests, ...big]);
  assert.equal(answered.length, 40);
  assert.ok(answered.every(([, why]) => why === null));
  assert.equal(g.copyCalls, calls + 2, 'a batch past the scratch takes one more call, not one a request');
  requests.forEach((r, i) => assertList(r.segmentList, 16, (20 + i) * 100));
});

test('map: the lists of a batch come from one mapping, unmapped before anyone is answered', () => {
  const { g, path } = setup('map');
  writeList(g, [13], 40, 2000);
  writeList(g, [14], 40, 3000);
  const maps = g.maps;
  let liveAtAnswer = -1;
  const requests = [new IndirectReq(Uint32Array.of(13), 1, 40), new IndirectReq(Uint32Array.of(14), 1, 40)];
  path.readIndirect(
    requests,
    2,
    () => (liveAtAnswer = g.liveMappings),
    () => assert.fail('refused'),
  );
  assert.equal(g.maps, maps + 1, 'one map call for the batch');
  assert.equal(liveAtAnswer, 0);
  assertList(requests[1]!.segmentList, 40, 3000);
});

test("copy: the reads completed together go out with one copy call, each answered after its data is the guest's", () => {
  const { g, path } = setup('copy');
  fillGuest(g, [1, 2, 3], 4);
  const reads = [new Req([[1, 0, 7]]), new Req([[2, 2, 5]]), new Req([[999, 0, 7]]), new Req([[3, 0, 7]])];
  for (const r of reads) {
    assert.equal(attached(path.attach(r, true)), 'ready');
    for (const v of r.iov) v.fill(0xa0 + reads.indexOf(r));
  }
  const calls = g.copyCalls;
  const answered: [Req, string | null][] = [];
  path.deliver(
    reads,
    reads.length,
    (r) => {
      // The data is in guest memory when the request is answered.
      const frame = r.segGref[0]!;
      assert.ok(
        g
          .frame(frame)
          .subarray(r.segFirst[0]! * 512, (r.segLast[0]! + 1) * 512)
          .every((b) => b === 0xa0 + reads.indexOf(r)),
      );
      answered.push([r, null]);
    },
    (r, why) => answered.push([r, why.kind]),
  );
  assert.equal(g.copyCalls, calls + 1, 'one copy call for the batch');
  assert.deepEqual(answered, [
    [reads[0], null],
    [reads[1], null],
    [reads[2], 'bad_grant'],
    [reads[3], null],
  ]);
  // Outside the second read's sectors its frame is as it was.
  const page = Buffer.from(g.frame(2));
  const expect = Buffer.alloc(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) expect[i] = (2 * 31 + i * 7 + 4) & 0xff;
  expect.fill(0xa1, 2 * 512, 6 * 512);
  assert.ok(page.equals(expect));
});
