// One argument check for both BackendGrants: the simulation (SimBackendGrants) and the real-Xen
// binding (XenBackendGrants over FakeXenDevices) must refuse the same bad map / copy / allocBuffer
// call the same way (same error class, GNTST code, ref, domid and words; the same per-op copy
// status), and the Xen one before anything reaches the device. Each refusal is next to a good call
// that both accept, so a check that refuses everything fails too.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { GrantError } from '../src/hypervisor/errors.ts';
import { GNTDEV_MAP_LIMIT } from '../src/hypervisor/grant-arguments.ts';
import { SimGuestGrants } from '../src/hypervisor/sim/guest-grants.ts';
import { SimHypervisor } from '../src/hypervisor/sim/hypervisor.ts';
import type { SimDomain } from '../src/hypervisor/sim/hypervisor.ts';
import type { BackendGrants, GrantCopyEnd, GrantCopyOp } from '../src/hypervisor/types.ts';
import { FakeXenDevices } from './support/fake-xen-devices.ts';
import { XenBackendGrants } from '../src/hypervisor/xen/backend-grants.ts';
import { koffiNativeMemory } from '../src/hypervisor/xen/koffi-devices.ts';
import { DOMID_FIRST_RESERVED, DOMID_SELF, GNTST, XEN_PAGE_SIZE } from '../src/abi/xen.ts';
import { NullXenstore } from './fixtures/hypervisor/null-xenstore.ts';

const FRAMES = [2, 3] as const;

interface Side {
  readonly name: string;
  readonly grants: BackendGrants;
  /** Calls that reached the (fake) kernel; always 0 for the simulation, which has none. */
  readonly deviceCalls: () => number;
  readonly page: (frame: number) => Uint8Array;
}

function fill(page: Uint8Array, seed: number): void {
  for (let i = 0; i < page.length; i++) page[i] = (seed * 13 + i * 5) & 0xff;
}

/** Runs `call` on both sides; each must throw a GrantError, and the two must agree in every field. */
function bothRefuseMap(sides: readonly Side[], call: (grants: BackendGrants) => unknown, status: number, ref: number): void {
  const errors = sides.map((side) => {
    const calls = side.deviceCalls();
    let thrown: unknown;
    assert.throws(
      () => call(side.grants),
      (error: unknown) => {
        thrown = error;
        return true;
      },
    );
    assert.equal(side.deviceCalls(), calls, `${side.name}: the refused map reached the device`);
    assert.ok(thrown instanceof GrantError, `${side.name}: expected a GrantError, got ${String(thrown)}`);
    return thrown;
  });
  const [a, b] = errors as [GrantError, GrantError];
  assert.equal(a.status, status, `${sides[0]!.name}: ${a.message}`);
  assert.equal(b.status, status, `${sides[1]!.name}: ${b.message}`);
  assert.equal(Object.getPrototypeOf(a), Object.getPrototypeOf(b));
  assert.equal(a.ref, ref);
  assert.equal(b.ref, ref);
  assert.equal(a.domid, b.domid);
  assert.equal(a.message, b.message);
  assert.equal(a.errno, b.errno);
}

describe('grant arguments: the simulation refuses what real Xen refuses', () => {
  let hv: SimHypervisor;
  let domain: SimDomain;
  let devices: FakeXenDevices;
  let sides: Side[];
  let refs: number[];
  let guestDomid: number;

  before(() => {
    hv = new SimHypervisor({ grantFrames: 1 });
    domain = hv.createDomain({ name: 'args', memoryBytes: 1 << 20 });
    guestDomid = domain.domid;
    const memory = domain.handles.memory.buffer;
    const simPage = (frame: number): Uint8Array => new Uint8Array(memory, frame * XEN_PAGE_SIZE, XEN_PAGE_SIZE);
    // The guest's half of the table, driven from this thread: the entries are the same shared memory.
    const guestGrants = new SimGuestGrants(domain.handles.grantTable, guestDomid);
    refs = FRAMES.map((frame) => guestGrants.grantAccess(0, frame, false));

    devices = new FakeXenDevices(0);
    const fake = devices.addDomain(guestDomid, 16);
    for (const [i, frame] of FRAMES.entries()) fake.grant(refs[i]!, frame);

    for (const frame of FRAMES) {
      fill(simPage(frame), frame);
      fill(fake.page(frame), frame);
    }
    const calls = (): number => (devices.calls.get('mapDomainGrantRefs') ?? 0) + (devices.calls.get('grantCopy') ?? 0);
    sides = [
      { name: 'simulation', grants: hv.backend(new NullXenstore(0)).grants, deviceCalls: () => 0, page: simPage },
      { name: 'xen (fake devices)', grants: new XenBackendGrants(devices), deviceCalls: calls, page: (frame) => fake.page(frame) },
    ];
  });
  after(async () => {
    await devices.close();
  });

  test('a good map works on both sides (the refusals below are not everything refused)', () => {
    for (const side of sides) {
      const mapping = side.grants.map(guestDomid, refs, 2, false);
      assert.deepEqual(mapping.pages[1], side.page(FRAMES[1]), side.name);
      mapping.unmap();
    }
  });

  test('map: count outside 0..refs.length', () => {
    bothRefuseMap(sides, (g) => g.map(guestDomid, refs, 3, false), GNTST.general_error, -1);
    bothRefuseMap(sides, (g) => g.map(guestDomid, refs, -1, false), GNTST.general_error, -1);
    bothRefuseMap(sides, (g) => g.map(guestDomid, refs, 1.5, false), GNTST.general_error, -1);
    for (const side of sides) assert.equal(side.grants.map(guestDomid, refs, 0, false).pages.length, 0, `${side.name}: a map of no refs`);
  });

  test("map: more refs than Linux's gntdev maps in one request", () => {
    const many = new Array<number>(GNTDEV_MAP_LIMIT + 1).fill(refs[0]!);
    bothRefuseMap(sides, (g) => g.map(guestDomid, many, many.length, false), GNTST.general_error, refs[0]!);
  });

  test('map: writable that is not a boolean', () => {
    bothRefuseMap(sides, (g) => g.map(guestDomid, refs, 1, 1 as unknown as boolean), GNTST.general_error, refs[0]!);
  });

  test('map: domids no grant can come from', () => {
    for (const domid of [-1, 1.5, DOMID_FIRST_RESERVED, DOMID_SELF, 0xffff, 0x10000, Number.NaN]) {
      bothRefuseMap(sides, (g) => g.map(domid, refs, 1, false), GNTST.bad_domain, refs[0]!);
    }
  });

  test('map: refs that are not u32 grant references', () => {
    for (const ref of [-1, 2 ** 32, 0.5, Number.NaN]) {
      bothRefuseMap(sides, (g) => g.map(guestDomid, [refs[0]!, ref], 2, false), GNTST.bad_gntref, ref);
    }
  });

  test('copy: each bad op gets the same status on both sides, and the good ones copy', () => {
    const d = guestDomid;
    const [r0, r1] = refs as [number, number];
    // Each side's buffers come from its own allocBuffer; `foreign` is the other side's allocBuffer memory.
    const buffers = sides.map((side) => side.grants.allocBuffer(2 * XEN_PAGE_SIZE));
    const cases: { what: string; op: (own: Uint8Array, foreign: Uint8Array) => GrantCopyOp; status: number }[] = [
      { what: 'good: page to buffer', op: (own) => ({ source: { ref: r0, domid: d, offset: 100 }, dest: { buffer: own }, length: 200 }), status: GNTST.okay },
      {
        what: 'good: buffer to the last bytes of a page',
        op: (own) => ({ source: { buffer: own.subarray(4096) }, dest: { ref: r1, domid: d, offset: 4080 }, length: 16 }),
        status: GNTST.okay,
      },
      {
        what: 'length above a page',
        op: (own) => ({ source: { ref: r0, domid: d, offset: 0 }, dest: { buffer: own }, length: XEN_PAGE_SIZE + 1 }),
        status: GNTST.bad_copy_arg,
      },
      { what: 'negative length', op: (own) => ({ source: { ref: r0, domid: d, offset: 0 }, dest: { buffer: own }, length: -1 }), status: GNTST.bad_copy_arg },
      {
        what: 'fractional length',
        op: (own) => ({ source: { ref: r0, domid: d, offset: 0 }, dest: { buffer: own }, length: 1.5 }),
        status: GNTST.bad_copy_arg,
      },
      {
        what: 'offset + length past the page',
        op: (own) => ({ source: { ref: r0, domid: d, offset: 4081 }, dest: { buffer: own }, length: 16 }),
        status: GNTST.bad_copy_arg,
      },
      { what: 'negative offset', op: (own) => ({ source: { buffer: own }, dest: { ref: r1, domid: d, offset: -1 }, length: 1 }), status: GNTST.bad_copy_arg },
      {
        what: 'fractional offset',
        op: (own) => ({ source: { buffer: own }, dest: { ref: r1, domid: d, offset: 0.5 }, length: 1 }),
        status: GNTST.bad_copy_arg,
      },
      { what: 'ref above u32', op: (own) => ({ source: { ref: 2 ** 32, domid: d, offset: 0 }, dest: { buffer: own }, length: 1 }), status: GNTST.bad_gntref },
      { what: 'negative ref', op: (own) => ({ source: { buffer: own }, dest: { ref: -1, domid: d, offset: 0 }, length: 1 }), status: GNTST.bad_gntref },
      { what: 'DOMID_SELF', op: (own) => ({ source: { ref: r0, domid: DOMID_SELF, offset: 0 }, dest: { buffer: own }, length: 1 }), status: GNTST.bad_domain },
      { what: 'negative domid', op: (own) => ({ source: { ref: r0, domid: -1, offset: 0 }, dest: { buffer: own }, length: 1 }), status: GNTST.bad_domain },
      {
        what: 'buffer shorter than length',
        op: (own) => ({ source: { ref: r0, domid: d, offset: 0 }, dest: { buffer: own.subarray(0, 8) }, length: 9 }),
        status: GNTST.bad_copy_arg,
      },
      {
        what: 'end that is neither ref nor buffer',
        op: (own) => ({ source: {} as GrantCopyEnd, dest: { buffer: own }, length: 1 }),
        status: GNTST.bad_copy_arg,
      },
      {
        what: 'JS heap buffer',
        op: () => ({ source: { ref: r0, domid: d, offset: 0 }, dest: { buffer: new Uint8Array(64) }, length: 16 }),
        status: GNTST.general_error,
      },
      {
        what: 'plain SharedArrayBuffer',
        op: () => ({ source: { buffer: new Uint8Array(new SharedArrayBuffer(64)) }, dest: { ref: r1, domid: d, offset: 0 }, length: 16 }),
        status: GNTST.general_error,
      },
      {
        what: 'node Buffer',
        op: () => ({ source: { buffer: Buffer.alloc(64) }, dest: { ref: r1, domid: d, offset: 0 }, length: 16 }),
        status: GNTST.general_error,
      },
      {
        what: "the other implementation's allocBuffer memory",
        op: (_own, foreign) => ({ source: { ref: r0, domid: d, offset: 0 }, dest: { buffer: foreign }, length: 16 }),
        status: GNTST.general_error,
      },
      {
        what: 'local to local, heap source',
        op: (own) => ({ source: { buffer: new Uint8Array(16) }, dest: { buffer: own }, length: 16 }),
        status: GNTST.general_error,
      },
    ];
    const results = sides.map((side, i) => {
      const ops = cases.map((c) => c.op(buffers[i]!, buffers[1 - i]!));
      const calls = side.deviceCalls();
      const statuses = side.grants.copy(ops);
      assert.equal(side.deviceCalls(), calls + (i === 1 ? 1 : 0), `${side.name}: one device call for the good ops`);
      return statuses;
    });
    // Compared as whole lists so a failure shows every case that differs.
    const expected = cases.map((c) => `${c.what}: ${c.status}`);
    for (const [i, side] of sides.entries()) {
      assert.deepEqual(
        results[i]!.map((status, j) => `${cases[j]!.what}: ${status}`),
        expected,
        side.name,
      );
    }
    for (const [i, side] of sides.entries()) {
      assert.deepEqual(buffers[i]!.subarray(0, 200), side.page(FRAMES[0]).subarray(100, 300), `${side.name}: page to buffer`);
      assert.deepEqual(side.page(FRAMES[1]).subarray(4080), buffers[i]!.subarray(4096, 4112), `${side.name}: buffer to page`);
    }
  });

  test('copy: a batch of refused ops only never reaches the device', () => {
    const calls = sides[1]!.deviceCalls();
    const statuses = sides[1]!.grants.copy([{ source: { ref: refs[0]!, domid: guestDomid, offset: 0 }, dest: { buffer: new Uint8Array(8) }, length: 8 }]);
    assert.deepEqual(statuses, [GNTST.general_error]);
    assert.equal(sides[1]!.deviceCalls(), calls);
  });

  test('allocBuffer: the same sizes refused with RangeError', () => {
    for (const bytes of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
      for (const side of sides) assert.throws(() => side.grants.allocBuffer(bytes), RangeError, `${side.name}: ${bytes}`);
    }
    for (const side of sides) assert.equal(side.grants.allocBuffer(5000).length, 5000, side.name);
  });

  test('strictGrantBuffers: false lets the simulation take any buffer (the lead switch)', () => {
    const lenient = new SimHypervisor({ grantFrames: 1, strictGrantBuffers: false });
    const dom = lenient.createDomain({ name: 'lenient', memoryBytes: 1 << 16 });
    const ref = new SimGuestGrants(dom.handles.grantTable, dom.domid).grantAccess(0, 1, false);
    new Uint8Array(dom.handles.memory.buffer, XEN_PAGE_SIZE, 8).set([1, 2, 3, 4, 5, 6, 7, 8]);
    const heap = new Uint8Array(8);
    const grants = lenient.backend(new NullXenstore(0)).grants;
    assert.deepEqual(grants.copy([{ source: { ref, domid: dom.domid, offset: 0 }, dest: { buffer: heap }, length: 8 }]), [GNTST.okay]);
    assert.deepEqual([...heap], [1, 2, 3, 4, 5, 6, 7, 8]);
    // Every other check still applies.
    assert.deepEqual(grants.copy([{ source: { ref, domid: dom.domid, offset: 4090 }, dest: { buffer: heap }, length: 8 }]), [GNTST.bad_copy_arg]);
  });
});

describe('native memory: the fake and the koffi binding refuse the same sizes', () => {
  test('allocPages takes only positive multiples of the page size', async () => {
    const fake = new FakeXenDevices(0);
    const memories = [
      { name: 'fake', memory: fake.memory },
      { name: 'koffi (mmap)', memory: koffiNativeMemory() },
    ];
    for (const { name, memory } of memories) {
      for (const bytes of [0, -XEN_PAGE_SIZE, 100, XEN_PAGE_SIZE + 1, 1.5 * XEN_PAGE_SIZE]) {
        assert.throws(() => memory.allocPages(bytes), RangeError, `${name}: ${bytes}`);
      }
      const region = memory.allocPages(XEN_PAGE_SIZE);
      assert.equal(region.view.byteLength, XEN_PAGE_SIZE, name);
      memory.freePages(region.address, XEN_PAGE_SIZE);
    }
    await fake.close();
  });

  test("the fake's gntdev refuses a map of no refs or more than its limit, as Linux's does", () => {
    const fake = new FakeXenDevices(0);
    const guest = fake.addDomain(5, 4);
    guest.grant(8, 1);
    for (const count of [0, GNTDEV_MAP_LIMIT + 1]) {
      const refs = new Uint32Array(Math.max(count, 1)).fill(8);
      assert.throws(() => fake.gnttab.mapDomainGrantRefs(5, refs, count, false), /EINVAL/, `${count} refs`);
    }
    const region = fake.gnttab.mapDomainGrantRefs(5, Uint32Array.of(8), 1, false);
    fake.gnttab.unmap(region.address, 1);
  });
});
