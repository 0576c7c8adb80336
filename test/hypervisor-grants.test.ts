import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { GrantError } from '../src/hypervisor/errors.ts';
import { SimHypervisor } from '../src/hypervisor/sim/hypervisor.ts';
import type { SimDomain } from '../src/hypervisor/sim/hypervisor.ts';
import { GNTST, PAGE_SIZE } from '../src/hypervisor/types.ts';
import type { BackendHypervisor } from '../src/hypervisor/types.ts';
import { GuestRpc } from './fixtures/hypervisor/guest-rpc.ts';
import { NullXenstore } from './fixtures/hypervisor/null-xenstore.ts';

// Grant flags from xen/include/public/grant_table.h, spelled out here rather than imported.
const GTF_permit_access = 1;
const GTF_readonly = 1 << 2;
const GTF_reading = 1 << 3;
const GTF_writing = 1 << 4;

/** Reads a grant entry straight from the table's bytes: flags u16 @0, domid u16 @2, frame u32 @4 (little-endian). */
function entry(domain: SimDomain, ref: number): { flags: number; domid: number; frame: number } {
  const LE = true;
  const dv = new DataView(domain.handles.grantTable, ref * 8, 8);
  return { flags: dv.getUint16(0, LE), domid: dv.getUint16(2, LE), frame: dv.getUint32(4, LE) };
}

function expectGrantError(fn: () => unknown, ref: number, domid: number, status: number, text: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof GrantError, `expected GrantError, got ${String(error)}`);
    assert.equal(error.code, 'BLK_ERR_GRANT');
    assert.equal(error.ref, ref);
    assert.equal(error.domid, domid);
    assert.equal(error.status, status);
    assert.match(error.message, new RegExp(`^grant ref ${ref} of domain ${domid}: `));
    assert.match(error.message, text);
    return true;
  });
}

describe('simulated grant tables across threads', () => {
  let hv: SimHypervisor;
  let domain: SimDomain;
  let backend: BackendHypervisor;
  let guest: GuestRpc;
  let frames: number;

  before(() => {
    hv = new SimHypervisor({ grantFrames: 1 });
    domain = hv.createDomain({ name: 'grants', memoryBytes: 1 << 20 });
    backend = hv.backend(new NullXenstore(0));
    guest = new GuestRpc(domain.handles);
    frames = domain.memoryBytes / PAGE_SIZE;
  });
  after(async () => {
    await guest.terminate();
  });

  async function grantedPage(seed: number, readOnly = false, to = 0): Promise<{ frame: number; ref: number }> {
    const frame = await guest.call<number>('alloc', 1);
    await guest.call('fill', frame, seed);
    const ref = await guest.call<number>('grant', to, frame, readOnly ? 1 : 0);
    return { frame, ref };
  }

  test('guest grant entries use the grant_entry_v1 layout and skip the 8 reserved refs', async () => {
    const before = await guest.call<number>('freeCount');
    assert.equal(before, 512 - 8);
    const { frame, ref } = await grantedPage(1, true);
    assert.ok(ref >= 8, `ref ${ref} is reserved`);
    assert.deepEqual(entry(domain, ref), { flags: GTF_permit_access | GTF_readonly, domid: 0, frame });
    assert.equal(await guest.call('freeCount'), before - 1);
    assert.equal(await guest.call('end', ref), true);
    assert.deepEqual(entry(domain, ref), { flags: 0, domid: 0, frame });
    assert.equal(await guest.call('freeCount'), before);
  });

  test('a mapping is a 4096-byte view of exactly the granted frame, shared with the guest', async () => {
    const { frame, ref } = await grantedPage(42);
    const mapping = backend.grants.map(domain.domid, [ref], 1, true);
    const page = mapping.pages[0]!;
    assert.equal(mapping.pages.length, 1);
    assert.equal(page.byteLength, PAGE_SIZE);
    assert.equal(page.byteOffset, frame * PAGE_SIZE);
    for (let i = 0; i < PAGE_SIZE; i++) if (page[i] !== ((42 + i * 7) & 0xff)) assert.fail(`byte ${i} differs`);
    // Writes go both ways, and the view ends at the page: indexing past it reads nothing.
    page[0] = 0xee;
    page[4095] = 0xdd;
    assert.deepEqual(await guest.call('read', frame, 0, 1), [0xee]);
    assert.deepEqual(await guest.call('read', frame, 4095, 1), [0xdd]);
    assert.equal(page[4096], undefined);
    await guest.call('fill', frame, 9);
    assert.equal(page[1], (9 + 7) & 0xff);
    mapping.unmap();
    assert.equal(mapping.pages.length, 0);
    assert.equal(await guest.call('end', ref), true);
  });

  test('GTF_reading/GTF_writing are set while mapped and cleared by the last unmap; endAccess fails until then', async () => {
    const { ref } = await grantedPage(3);
    const ro = backend.grants.map(domain.domid, [ref], 1, false);
    assert.equal(entry(domain, ref).flags, GTF_permit_access | GTF_reading);
    const rw = backend.grants.map(domain.domid, [ref], 1, true);
    assert.equal(entry(domain, ref).flags, GTF_permit_access | GTF_reading | GTF_writing);
    assert.equal(rw.pages[0], ro.pages[0], 'one cached view per frame');
    assert.equal(await guest.call('end', ref), false);
    rw.unmap();
    assert.equal(entry(domain, ref).flags, GTF_permit_access | GTF_reading);
    assert.equal(await guest.call('end', ref), false);
    rw.unmap(); // a second unmap does nothing
    assert.equal(entry(domain, ref).flags, GTF_permit_access | GTF_reading);
    ro.unmap();
    assert.equal(entry(domain, ref).flags, GTF_permit_access);
    assert.equal(await guest.call('end', ref), true);
    assert.equal(entry(domain, ref).flags, 0);
  });

  test('a guest rewriting its entry while mapped does not move the mapping', async () => {
    const { frame, ref } = await grantedPage(77);
    const other = await guest.call<number>('alloc', 1);
    await guest.call('fill', other, 1);
    const mapping = backend.grants.map(domain.domid, [ref], 1, true);
    await guest.call('rewrite', ref, GTF_permit_access, 5, other);
    assert.equal(mapping.pages[0]!.byteOffset, frame * PAGE_SIZE);
    assert.equal(mapping.pages[0]![1], (77 + 7) & 0xff);
    // A second pin while the first is held reuses the frame resolved at the first (Xen's active entry).
    const again = backend.grants.map(domain.domid, [ref], 1, false);
    assert.equal(again.pages[0]!.byteOffset, frame * PAGE_SIZE);
    again.unmap();
    mapping.unmap();
    const after = entry(domain, ref);
    assert.equal(after.flags, GTF_permit_access, 'unmap clears only GTF_reading/GTF_writing');
    assert.equal(after.domid, 5);
    expectGrantError(() => backend.grants.map(domain.domid, [ref], 1, false), ref, domain.domid, GNTST.general_error, /granted to domain 5, not to domain 0/);
    await guest.call('rewrite', ref, GTF_permit_access, 0, frame);
    assert.equal(await guest.call('end', ref), true);
  });

  test('refused maps throw GrantError with the GNTST code Xen returns', async () => {
    const toOther = await grantedPage(1, false, 3);
    expectGrantError(
      () => backend.grants.map(domain.domid, [toOther.ref], 1, false),
      toOther.ref,
      domain.domid,
      GNTST.general_error,
      /permission denied \(granted to domain 3, not to domain 0\)/,
    );

    const readOnly = await grantedPage(2, true);
    expectGrantError(
      () => backend.grants.map(domain.domid, [readOnly.ref], 1, true),
      readOnly.ref,
      domain.domid,
      GNTST.general_error,
      /granted read-only, mapped writable/,
    );
    backend.grants.map(domain.domid, [readOnly.ref], 1, false).unmap();

    const revoked = await grantedPage(3);
    assert.equal(await guest.call('end', revoked.ref), true);
    expectGrantError(
      () => backend.grants.map(domain.domid, [revoked.ref], 1, false),
      revoked.ref,
      domain.domid,
      GNTST.general_error,
      /not a permit_access grant/,
    );

    expectGrantError(
      () => backend.grants.map(domain.domid, [512], 1, false),
      512,
      domain.domid,
      GNTST.bad_gntref,
      /out of range \(the table has 512 entries\)/,
    );
    expectGrantError(() => backend.grants.map(domain.domid, [-1], 1, false), -1, domain.domid, GNTST.bad_gntref, /not a grant reference/); // the argument check Xen shares

    const wild = await guest.call<number>('grant', 0, frames, 0);
    expectGrantError(
      () => backend.grants.map(domain.domid, [wild], 1, false),
      wild,
      domain.domid,
      GNTST.bad_page,
      new RegExp(`frame ${frames} is outside the domain's ${frames} frames`),
    );
    assert.equal(entry(domain, wild).flags, GTF_permit_access, 'a failed map leaves no flag behind');

    expectGrantError(() => backend.grants.map(99, [8], 1, false), 8, 99, GNTST.bad_domain, /no such domain/);
    for (const ref of [toOther.ref, readOnly.ref, wild]) assert.equal(await guest.call('end', ref), true);
  });

  test('map is all or nothing', async () => {
    const a = await grantedPage(10);
    const b = await grantedPage(11);
    const ro = await grantedPage(12, true);
    expectGrantError(() => backend.grants.map(domain.domid, [a.ref, b.ref, ro.ref], 3, true), ro.ref, domain.domid, GNTST.general_error, /read-only/);
    assert.equal(entry(domain, a.ref).flags, GTF_permit_access);
    assert.equal(entry(domain, b.ref).flags, GTF_permit_access);
    // count limits the refs used: the bad third ref is not looked at.
    const mapping = backend.grants.map(domain.domid, [a.ref, b.ref, ro.ref], 2, true);
    assert.deepEqual(
      mapping.pages.map((p) => p.byteOffset / PAGE_SIZE),
      [a.frame, b.frame],
    );
    mapping.unmap();
    // Pooled mapping slots are reused without leaking the old pages.
    const again = backend.grants.map(domain.domid, [b.ref, a.ref], 2, false);
    assert.deepEqual(
      again.pages.map((p) => p.byteOffset / PAGE_SIZE),
      [b.frame, a.frame],
    );
    again.unmap();
    for (const ref of [a.ref, b.ref, ro.ref]) assert.equal(await guest.call('end', ref), true);
  });

  test('grant copy checks permissions and bounds per op', async () => {
    const rw = await grantedPage(20);
    const ro = await grantedPage(21, true);
    // copy() takes only memory from allocBuffer as buffer ends, as real Xen must.
    const out = backend.grants.allocBuffer(100);
    const data = backend.grants.allocBuffer(16);
    data.set(Array.from({ length: 16 }, (_, i) => 0xa0 + i));
    const d = domain.domid;
    const status = backend.grants.copy([
      { source: { buffer: data }, dest: { ref: rw.ref, domid: d, offset: 4080 }, length: 16 },
      { source: { ref: ro.ref, domid: d, offset: 10 }, dest: { buffer: out }, length: 100 },
      { source: { buffer: data }, dest: { ref: ro.ref, domid: d, offset: 0 }, length: 16 },
      { source: { buffer: data }, dest: { ref: rw.ref, domid: d, offset: 4081 }, length: 16 },
      { source: { buffer: data }, dest: { ref: 600, domid: d, offset: 0 }, length: 1 },
      { source: { ref: rw.ref, domid: 99, offset: 0 }, dest: { buffer: out }, length: 1 },
      { source: { buffer: data }, dest: { buffer: out }, length: 17 },
      { source: { ref: ro.ref, domid: d, offset: 0 }, dest: { ref: rw.ref, domid: d, offset: 0 }, length: 8 },
    ]);
    assert.deepEqual(status, [
      GNTST.okay,
      GNTST.okay,
      GNTST.general_error,
      GNTST.bad_copy_arg,
      GNTST.bad_gntref,
      GNTST.bad_domain,
      GNTST.bad_copy_arg,
      GNTST.okay,
    ]);
    assert.deepEqual(await guest.call('read', rw.frame, 4080, 16), [...data]);
    assert.deepEqual(
      [...out],
      Array.from({ length: 100 }, (_, i) => (21 + (i + 10) * 7) & 0xff),
    );
    assert.deepEqual(
      await guest.call('read', rw.frame, 0, 8),
      Array.from({ length: 8 }, (_, i) => (21 + i * 7) & 0xff),
    );
    assert.equal(entry(domain, rw.ref).flags, GTF_permit_access, 'copy leaves no pin behind');
    assert.equal(entry(domain, ro.ref).flags, GTF_permit_access | GTF_readonly);
    assert.equal(await guest.call('end', rw.ref), true);
    assert.equal(await guest.call('end', ro.ref), true);
  });

  test('destroying a domain keeps existing mappings and refuses new ones', async () => {
    const dom = hv.createDomain({ name: 'doomed', memoryBytes: 70000 });
    assert.equal(dom.memoryBytes, 131072, 'rounded up to whole 64 KiB pages');
    const rpc = new GuestRpc(dom.handles);
    try {
      const frame = await rpc.call<number>('alloc', 1);
      await rpc.call('fill', frame, 5);
      const ref = await rpc.call<number>('grant', 0, frame, 0);
      const mapping = backend.grants.map(dom.domid, [ref], 1, true);
      hv.destroyDomain(dom.domid);
      assert.equal(hv.domain(dom.domid), undefined);
      assert.equal(mapping.pages[0]![3], (5 + 21) & 0xff);
      expectGrantError(() => backend.grants.map(dom.domid, [ref], 1, false), ref, dom.domid, GNTST.bad_domain, /no such domain/);
      mapping.unmap();
    } finally {
      await rpc.terminate();
    }
  });
});

describe('simulated domains', () => {
  test('domids start at 1, names are unique, memory is capped at 4 GiB', () => {
    const hv = new SimHypervisor({ grantFrames: 1, maxEventPorts: 64 });
    const a = hv.createDomain({ name: 'a', memoryBytes: 65536 });
    const b = hv.createDomain({ name: 'b', memoryBytes: 1 });
    assert.deepEqual([a.domid, b.domid], [1, 2]);
    assert.equal(b.memoryBytes, 65536);
    assert.equal(a.handles.memory.buffer.byteLength, 65536);
    assert.ok(a.handles.memory.buffer instanceof SharedArrayBuffer);
    assert.throws(() => hv.createDomain({ name: 'a', memoryBytes: 65536 }), /name 'a' is already used by domain 1/);
    assert.throws(() => hv.createDomain({ name: 'big', memoryBytes: 2 ** 32 + 1 }), /exceeds 4 GiB/);
    assert.throws(() => hv.destroyDomain(7), /no domain 7/);
    hv.destroyDomain(a.domid);
    assert.equal(hv.createDomain({ name: 'a', memoryBytes: 65536 }).domid, 3, 'domids are not reused');
  });
});
