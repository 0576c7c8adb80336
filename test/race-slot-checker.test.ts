// The slot race's judge (test/fixtures/hostile/race-slot.ts) must tell one copy of a read from
// anything else, or the race test could pass a backend that acted on a second read of the slot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diskSectorIn, diskWord } from './fixtures/hostile/disk-pattern.ts';
import { FILL, fitsOneCopy, pageSectors } from './fixtures/hostile/race-slot.ts';
import { fillWord } from './fixtures/hostile/race-common.ts';

const SEED = 0x5107a002;
const ROUND = 7;

/** A page of frame `frame` filled for ROUND, with disk sectors from `sector` on in sectors first..last. */
function page(frame: number, first: number, last: number, sector: number): Uint32Array {
  const w = Uint32Array.from({ length: 1024 }, (_, i) => fillWord(frame, i, ROUND));
  for (let s = first; s <= last; s++) for (let i = 0; i < 128; i++) w[s * 128 + i] = diskWord(SEED, (sector + s - first) * 128 + i);
  return w;
}

test('diskSectorIn names the disk sector a 512-byte run holds, and -1 for anything else', () => {
  const w = page(3, 0, 7, 40);
  for (let s = 0; s < 8; s++) assert.equal(diskSectorIn(w, SEED, s * 128), 40 + s);
  assert.equal(diskSectorIn(w, SEED, 64), -1, 'not on a sector boundary of the disk');
  w[133] = w[133]! ^ 1;
  assert.equal(diskSectorIn(w, SEED, 128), -1, 'one word changed');
  assert.equal(diskSectorIn(page(3, 0, 7, 40), SEED ^ 1, 0), -1, 'another disk');
});

test('fitsOneCopy accepts full and part-page copies from one start and refuses every other shape', () => {
  const sectorsOf = (pages: Uint32Array[]): number[][] => pages.map((w, i) => pageSectors(w, 100 + i, ROUND, SEED));
  const SA = 0;
  const SB = 2048;
  const full = [0, 1, 2, 3].map((i) => page(100 + i, 0, 7, SB + 8 * i));
  assert.ok(fitsOneCopy([0, 1, 2, 3], sectorsOf(full), [SA, SB]));
  // segment 1 covers sectors 2..5 only: the next segment continues 4 sectors on
  const part = [page(100, 0, 7, SA), page(101, 2, 5, SA + 8), page(102, 0, 7, SA + 12), page(103, 0, 7, SA + 20)];
  assert.deepEqual(sectorsOf(part)[1], [FILL, FILL, SA + 8, SA + 9, SA + 10, SA + 11, FILL, FILL]);
  assert.ok(fitsOneCopy([0, 1, 2, 3], sectorsOf(part), [SA, SB]));

  const refused = (what: string, pages: Uint32Array[], landed = [0, 1, 2, 3]): void =>
    assert.equal(fitsOneCopy(landed, sectorsOf(pages), [SA, SB]), false, what);
  refused('pages from both starts', [page(100, 0, 7, SA), page(101, 0, 7, SB + 8), page(102, 0, 7, SA + 16), page(103, 0, 7, SA + 24)]);
  refused('a part page read as if whole (a second read of last_sect)', [
    page(100, 0, 7, SA),
    page(101, 2, 5, SA + 8),
    page(102, 0, 7, SA + 16),
    page(103, 0, 7, SA + 24),
  ]);
  refused(
    'a run that does not start at SA or SB',
    [0, 1, 2, 3].map((i) => page(100 + i, 0, 7, SB + 8 + 8 * i)),
  );
  refused(
    'a page with two runs',
    [page(100, 0, 7, SA), page(101, 0, 2, SA + 8), page(102, 0, 7, SA + 16), page(103, 0, 7, SA + 24)].map((w, i) => {
      if (i === 1) for (let j = 5 * 128; j < 6 * 128; j++) w[j] = diskWord(SEED, (SA + 13) * 128 + (j - 5 * 128));
      return w;
    }),
  );
  const torn = page(101, 0, 7, SA + 8);
  torn[300] = torn[300]! ^ 0x10;
  refused('a sector torn by a write', [page(100, 0, 7, SA), torn, page(102, 0, 7, SA + 16), page(103, 0, 7, SA + 24)]);
  // a segment that did not land (a refused ref on the copy path) moved the disk position 1 to 8 sectors on
  const gap = [page(100, 0, 7, SA), page(102, 0, 7, SA + 16)];
  assert.ok(fitsOneCopy([0, 2], [pageSectors(gap[0]!, 100, ROUND, SEED), pageSectors(gap[1]!, 102, ROUND, SEED)], [SA, SB]));
  const tooFar = [page(100, 0, 7, SA), page(102, 0, 7, SA + 17)];
  assert.equal(
    fitsOneCopy([0, 2], [pageSectors(tooFar[0]!, 100, ROUND, SEED), pageSectors(tooFar[1]!, 102, ROUND, SEED)], [SA, SB]),
    false,
    'a gap of one segment is at most 8 sectors',
  );
});
