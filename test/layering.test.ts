// The layering the README's Layout section describes, checked on the source: every relative import
// goes to the same layer or a lower one, and no two folders of src/ import each other.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SRC = join(ROOT, 'src');

/** Layers from the ground up; a folder of src/ belongs to the first layer that names it. */
const LAYERS: readonly (readonly string[])[] = [
  ['abi', 'internal', 'stats'],
  ['blkif', 'xenstore', 'iscsi', 'nbd'],
  ['hypervisor', 'xenbus', 'config'],
  ['block', 'scsi', 'iscsi-initiator', 'nbd-client', 'rbd', 'loadgen'],
  ['stores'],
  ['blkback', 'blkfront', 'iscsi-target', 'nbd-server'],
  ['guest', 'sim-host', 'fuzz', 'fio', 'report', 'control', 'rig'],
  ['reproduce', 'xen-tcg'],
  ['bench'],
  ['cli', 'index.ts'],
];

function layerOf(file: string): { folder: string; rank: number } {
  const folder = relative(SRC, file).split('/')[0]!;
  const rank = LAYERS.findIndex((l) => l.includes(folder));
  return { folder, rank };
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sources(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+'(\.[^']+)'/gm)) out.push(normalize(join(dirname(file), m[1]!)));
  for (const m of text.matchAll(/\bimport\(\s*'(\.[^']+)'\s*\)/g)) out.push(normalize(join(dirname(file), m[1]!)));
  return out;
}

test('every folder of src/ has a layer', () => {
  const folders = readdirSync(SRC);
  const missing = folders.filter((f) => layerOf(join(SRC, f, 'x')).rank < 0);
  assert.deepEqual(missing, [], `folders with no layer in test/layering.test.ts: ${missing.join(', ')}`);
});

test('imports go down or sideways, never up', () => {
  const wrong: string[] = [];
  for (const file of sources(SRC)) {
    const from = layerOf(file);
    for (const target of imports(file)) {
      if (!target.startsWith(SRC)) continue;
      const to = layerOf(target);
      if (to.rank > from.rank) wrong.push(`${relative(ROOT, file)} (${from.folder}) imports ${relative(ROOT, target)} (${to.folder}, a higher layer)`);
    }
  }
  assert.deepEqual(wrong, []);
});

test('no two folders of src/ import each other', () => {
  const edges = new Map<string, Map<string, string>>();
  for (const file of sources(SRC)) {
    const from = layerOf(file).folder;
    for (const target of imports(file)) {
      if (!target.startsWith(SRC)) continue;
      const to = layerOf(target).folder;
      if (to === from) continue;
      if (!edges.has(from)) edges.set(from, new Map());
      if (!edges.get(from)!.has(to)) edges.get(from)!.set(to, `${relative(ROOT, file)} -> ${relative(ROOT, target)}`);
    }
  }
  const cycles: string[] = [];
  for (const [a, targets] of edges) {
    for (const [b, why] of targets) {
      const back = edges.get(b)?.get(a);
      if (back !== undefined && a < b) cycles.push(`${a} <-> ${b}: ${why}; ${back}`);
    }
  }
  assert.deepEqual(cycles, []);
});
