import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SimGuestMemory } from '../src/hypervisor/sim/guest-memory.ts';
import { SimGuestGrants } from '../src/hypervisor/sim/guest-grants.ts';
import { PAGE_SIZE } from '../src/hypervisor/types.ts';

test('guest page allocator hands out contiguous runs first-fit and reuses freed ones', () => {
  const memory = new SimGuestMemory(new SharedArrayBuffer(64 * PAGE_SIZE));
  assert.equal(memory.pages, 64);
  assert.equal(memory.allocPages(3), 0);
  assert.equal(memory.allocPages(1), 3);
  assert.equal(memory.allocPages(40), 4);
  assert.equal(memory.allocPages(21), -1, '20 frames are left');
  assert.equal(memory.allocPages(20), 44);
  assert.equal(memory.allocPages(1), -1);
  memory.freePages(0, 3);
  memory.freePages(10, 5);
  assert.equal(memory.allocPages(4), 10, 'the 3-frame hole at 0 is too small');
  assert.equal(memory.allocPages(2), 0);
  assert.equal(memory.allocPages(1), 2);
  assert.equal(memory.allocPages(1), 14);
  assert.throws(() => memory.freePages(0, 0), /outside guest memory/);
  assert.throws(() => memory.freePages(60, 5), /outside guest memory/);
  memory.freePages(14, 1);
  assert.throws(() => memory.freePages(14, 1), /frame 14 is not allocated/);
  const view = memory.view(5, 2);
  assert.equal(view.byteOffset, 5 * PAGE_SIZE);
  assert.equal(view.byteLength, 2 * PAGE_SIZE);
  assert.equal(view.buffer, memory.buffer);
  assert.throws(() => memory.view(63, 2), /outside guest memory of 64 frames/);
});

test('guest grant table runs out, reports -1 and refuses to revoke what it never granted', () => {
  const grants = new SimGuestGrants(new SharedArrayBuffer(PAGE_SIZE), 1);
  const refs = new Set<number>();
  for (let i = 0; i < 504; i++) refs.add(grants.grantAccess(0, i, false));
  assert.equal(refs.size, 504);
  assert.equal(Math.min(...refs), 8);
  assert.equal(Math.max(...refs), 511);
  assert.equal(grants.freeCount, 0);
  assert.equal(grants.grantAccess(0, 1, false), -1);
  assert.equal(grants.endAccess(100), true);
  assert.equal(grants.grantAccess(0, 1, false), 100);
  assert.throws(() => grants.endAccess(3), /grant ref 3 of domain 1: endAccess on a ref this guest has not granted/);
  assert.throws(() => grants.grantAccess(0, 2 ** 32, false), /not a 32-bit frame number/);
});
