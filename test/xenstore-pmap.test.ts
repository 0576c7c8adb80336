// The persistent child map of the store (src/xenstore/pmap.ts) against a plain Map model: random
// sets and deletes, every version kept and re-checked after later changes (persistence is what
// transactions' snapshots rely on), insertion order as C xenstored lists children, and keys whose
// 32-bit hashes collide.
import assert from 'node:assert/strict';
import test from 'node:test';
import { PMap } from '../src/xenstore/pmap.ts';
import { Rng } from '../src/loadgen/pattern.ts';

/** Insertion-ordered model: a re-set key keeps its place, a deleted and re-added one goes last. */
function modelKeys(m: Map<string, number>): string[] {
  return [...m.keys()];
}

function check(p: PMap<number>, m: Map<string, number>, what: string): void {
  assert.equal(p.size, m.size, `${what}: size`);
  assert.deepEqual(p.keys(), modelKeys(m), `${what}: keys in insertion order`);
  for (const [k, v] of m) assert.equal(p.get(k), v, `${what}: get ${k}`);
  assert.deepEqual(
    [...p.values()].sort((a, b) => a - b),
    [...m.values()].sort((a, b) => a - b),
    `${what}: values`,
  );
  const wire = Buffer.from(p.wire()).toString('latin1');
  assert.equal(wire, m.size === 0 ? '' : `${modelKeys(m).join('\0')}\0`, `${what}: wire form`);
}

test('PMap: random sets and deletes match a Map, and every earlier version stays as it was', () => {
  const rng = new Rng(1234);
  let p = PMap.empty<number>();
  let m = new Map<string, number>();
  const versions: { p: PMap<number>; m: Map<string, number> }[] = [];
  for (let i = 0; i < 20_000; i++) {
    const key = `k${rng.below(600)}`;
    if (rng.below(3) === 0) {
      p = p.delete(key);
      m = new Map(m);
      m.delete(key);
    } else {
      p = p.set(key, i);
      m = new Map(m);
      m.set(key, i);
    }
    if (i % 500 === 0) {
      check(p, m, `step ${i}`);
      versions.push({ p, m });
    }
  }
  check(p, m, 'end');
  for (const [i, v] of versions.entries()) check(v.p, v.m, `version ${i}, re-checked at the end`);
  assert.equal(p.get('absent'), undefined);
  assert.equal(p.delete('absent'), p, 'deleting an absent key returns the same map');
});

/** FNV-1a over UTF-16 units, written out again here rather than imported. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h;
}

test('PMap: keys whose 32-bit hashes collide are kept apart', () => {
  // Found by searching c0, c1, ... for a repeated hash (about a million tries).
  const [a, b] = ['c693596', 'c1170850'];
  assert.equal(fnv1a(a), 0x58e2a3f8);
  assert.equal(fnv1a(b), 0x58e2a3f8);
  let p = PMap.empty<number>().set('x', 0).set(a, 1).set('y', 2).set(b, 3);
  const m = new Map([
    ['x', 0],
    [a, 1],
    ['y', 2],
    [b, 3],
  ]);
  check(p, m, `colliding ${a} and ${b}`);
  const before = p;
  p = p.set(a, 10);
  m.set(a, 10);
  check(p, m, 'after re-setting one of them');
  assert.equal(before.get(a), 1, 'the earlier version keeps its value');
  p = p.delete(b);
  m.delete(b);
  check(p, m, 'after deleting the other');
  p = p.delete(a);
  m.delete(a);
  check(p, m, 'after deleting both');
  for (let i = 0; i < 100; i++) {
    p = p.set(`f${i}`, i);
    m.set(`f${i}`, i);
  }
  p = p.set(b, 5).set(a, 6);
  m.set(b, 5).set(a, 6);
  check(p, m, 'colliding keys among a hundred others');
});
