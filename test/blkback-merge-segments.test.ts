// mergeSegments: the I/O vector blkback hands the store, one entry per run of segments that continue
// each other in the same memory. A wrong merge would move bytes to or from the wrong place, so each
// case checks the exact byte ranges, not just the count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeSegments } from '../src/blkback/ring-server.ts';

const PAGE = 4096;
const memory = new SharedArrayBuffer(16 * PAGE);
const other = new SharedArrayBuffer(16 * PAGE);
const page = (n: number, buffer: SharedArrayBuffer = memory): Uint8Array => new Uint8Array(buffer, n * PAGE, PAGE);

function merge(pages: Uint8Array[], first: number[], last: number[]): Uint8Array[] {
  const iov: Uint8Array[] = [];
  iov.length = mergeSegments(pages, Uint8Array.from(first), Uint8Array.from(last), pages.length, iov);
  return iov;
}

function ranges(iov: Uint8Array[]): [number, number][] {
  return iov.map((v) => [v.byteOffset, v.byteOffset + v.byteLength]);
}

test('whole pages that follow each other in memory become one entry', () => {
  const iov = merge([page(3), page(4), page(5), page(6)], [0, 0, 0, 0], [7, 7, 7, 7]);
  assert.deepEqual(ranges(iov), [[3 * PAGE, 7 * PAGE]]);
  assert.equal(iov[0]!.buffer, memory);
});

test('pages out of order, repeated, or in another buffer stay separate', () => {
  assert.deepEqual(ranges(merge([page(5), page(4)], [0, 0], [7, 7])), [
    [5 * PAGE, 6 * PAGE],
    [4 * PAGE, 5 * PAGE],
  ]);
  assert.deepEqual(ranges(merge([page(2), page(2)], [0, 0], [7, 7])), [
    [2 * PAGE, 3 * PAGE],
    [2 * PAGE, 3 * PAGE],
  ]);
  const iov = merge([page(1), page(2, other)], [0, 0], [7, 7]);
  assert.equal(iov.length, 2);
  assert.equal(iov[0]!.buffer, memory);
  assert.equal(iov[1]!.buffer, other);
});

test('partial segments merge only where the bytes continue', () => {
  // Sectors 4-7 of page 1 then 0-3 of page 2: contiguous. Then 6-7 of page 2: a gap of 2 sectors.
  assert.deepEqual(ranges(merge([page(1), page(2), page(2)], [4, 0, 6], [7, 3, 7])), [
    [PAGE + 2048, 2 * PAGE + 2048],
    [2 * PAGE + 3072, 3 * PAGE],
  ]);
  // Two halves of one page, given as two segments, are that page.
  assert.deepEqual(ranges(merge([page(7), page(7)], [0, 4], [3, 7])), [[7 * PAGE, 8 * PAGE]]);
  // A segment ending early breaks the run even if the next page follows.
  assert.deepEqual(ranges(merge([page(1), page(2)], [0, 0], [6, 7])), [
    [PAGE, PAGE + 3584],
    [2 * PAGE, 3 * PAGE],
  ]);
});

test("a lone whole page is handed over as the mapping's own view", () => {
  const p = page(9);
  const iov = merge([p], [0], [7]);
  assert.equal(iov.length, 1);
  assert.equal(iov[0], p);
  assert.deepEqual(ranges(merge([p], [1], [2])), [[9 * PAGE + 512, 9 * PAGE + 1536]]);
});

test('no segments, no entries; the count, not the array length, is what the caller uses', () => {
  const iov = [page(0), page(1)];
  assert.equal(mergeSegments([], new Uint8Array(0), new Uint8Array(0), 0, iov), 0);
  assert.equal(mergeSegments([page(0), page(1), page(2)], new Uint8Array(3), Uint8Array.of(7, 7, 7), 2, iov), 1);
  assert.deepEqual(ranges(iov.slice(0, 1)), [[0, 2 * PAGE]]);
});
