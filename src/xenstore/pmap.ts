// A persistent (immutable) map from child name to node: a hash array mapped trie (32-way, 5 hash
// bits a level), so set and delete copy one short path instead of the whole map. The store's trees
// share nodes between the main tree and transactions' snapshots; with a plain Map every new child
// copied its parent's whole child list, which made creating n siblings cost O(n^2).
//
// Iteration by keys() is in insertion order, as C xenstored lists children (it appends each new
// name to the parent's child list): every entry carries the sequence number it was added with, and
// the ordered list is built once per map value and cached, like its nul-separated wire form.
//
//   PMap ── root: Bitmap ── slots[popcount(bitmap & (bit - 1))] ── Leaf | Bitmap | Collision
//                  bitmap bit i set <=> a slot for hash bits i at this level

interface Leaf<V> {
  readonly kind: 0;
  readonly hash: number;
  readonly key: string;
  readonly value: V;
  readonly seq: number;
}

interface Bitmap<V> {
  readonly kind: 1;
  readonly bitmap: number;
  readonly slots: readonly Slot<V>[];
}

/** Keys whose 32-bit hashes are equal: compared one by one. */
interface Collision<V> {
  readonly kind: 2;
  readonly hash: number;
  readonly leaves: readonly Leaf<V>[];
}

type Slot<V> = Leaf<V> | Bitmap<V> | Collision<V>;

const BITS = 5;
const MASK = (1 << BITS) - 1;

/** FNV-1a over UTF-16 code units (xenstore names are ASCII). */
function hashOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function popcount(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

function withSlot<V>(slots: readonly Slot<V>[], i: number, slot: Slot<V>): Slot<V>[] {
  const out = slots.slice();
  out[i] = slot;
  return out;
}

/** A node holding two leaves whose hashes first differ at or below `shift`. */
function pair<V>(a: Leaf<V>, b: Leaf<V>, shift: number): Slot<V> {
  if (shift >= 32) return { kind: 2, hash: a.hash, leaves: [a, b] };
  const ia = (a.hash >>> shift) & MASK;
  const ib = (b.hash >>> shift) & MASK;
  if (ia === ib) return { kind: 1, bitmap: 1 << ia, slots: [pair(a, b, shift + BITS)] };
  return { kind: 1, bitmap: (1 << ia) | (1 << ib), slots: ia < ib ? [a, b] : [b, a] };
}

function lookup<V>(slot: Slot<V>, hash: number, key: string, shift: number): Leaf<V> | undefined {
  for (;;) {
    if (slot.kind === 0) return slot.key === key ? slot : undefined;
    if (slot.kind === 2) return slot.leaves.find((l) => l.key === key);
    const bit = 1 << ((hash >>> shift) & MASK);
    if ((slot.bitmap & bit) === 0) return undefined;
    slot = slot.slots[popcount(slot.bitmap & (bit - 1))] as Slot<V>;
    shift += BITS;
  }
}

/** `leaf` put into `slot` (replacing the leaf of the same key); `slot` itself is never changed. */
function insert<V>(slot: Slot<V>, leaf: Leaf<V>, shift: number): Slot<V> {
  if (slot.kind === 0) return slot.key === leaf.key ? leaf : pair(slot, leaf, shift);
  if (slot.kind === 2) {
    if (slot.hash !== leaf.hash) {
      // Only reachable below shift 32 when a collision node sits where a leaf could: split it.
      const first = slot.leaves[0] as Leaf<V>;
      let out = pair(first, leaf, shift);
      for (let i = 1; i < slot.leaves.length; i++) out = insert(out, slot.leaves[i] as Leaf<V>, shift);
      return out;
    }
    const i = slot.leaves.findIndex((l) => l.key === leaf.key);
    const leaves = slot.leaves.slice();
    if (i < 0) leaves.push(leaf);
    else leaves[i] = leaf;
    return { kind: 2, hash: slot.hash, leaves };
  }
  const bit = 1 << ((leaf.hash >>> shift) & MASK);
  const at = popcount(slot.bitmap & (bit - 1));
  if ((slot.bitmap & bit) === 0) {
    const slots = slot.slots.slice();
    slots.splice(at, 0, leaf);
    return { kind: 1, bitmap: slot.bitmap | bit, slots };
  }
  return { kind: 1, bitmap: slot.bitmap, slots: withSlot(slot.slots, at, insert(slot.slots[at] as Slot<V>, leaf, shift + BITS)) };
}

/** `slot` without `key` (undefined when nothing is left); the same object when the key is absent. */
function remove<V>(slot: Slot<V>, hash: number, key: string, shift: number): Slot<V> | undefined {
  if (slot.kind === 0) return slot.key === key ? undefined : slot;
  if (slot.kind === 2) {
    const leaves = slot.leaves.filter((l) => l.key !== key);
    if (leaves.length === slot.leaves.length) return slot;
    return leaves.length === 1 ? leaves[0] : { kind: 2, hash: slot.hash, leaves };
  }
  const bit = 1 << ((hash >>> shift) & MASK);
  if ((slot.bitmap & bit) === 0) return slot;
  const at = popcount(slot.bitmap & (bit - 1));
  const child = slot.slots[at] as Slot<V>;
  const next = remove(child, hash, key, shift + BITS);
  if (next === child) return slot;
  if (next === undefined) {
    if (slot.slots.length === 1) return undefined;
    const slots = slot.slots.slice();
    slots.splice(at, 1);
    const only = slots[0] as Slot<V>;
    // A lone leaf or collision moves up, so that equal maps keep one shape.
    if (slots.length === 1 && only.kind !== 1) return only;
    return { kind: 1, bitmap: slot.bitmap & ~bit, slots };
  }
  if (slot.slots.length === 1 && next.kind !== 1) return next;
  return { kind: 1, bitmap: slot.bitmap, slots: withSlot(slot.slots, at, next) };
}

function collect<V>(slot: Slot<V>, out: Leaf<V>[]): void {
  if (slot.kind === 0) out.push(slot);
  else if (slot.kind === 2) out.push(...slot.leaves);
  else for (const s of slot.slots) collect(s, out);
}

const utf8 = new TextEncoder();

export class PMap<V> {
  static empty<V>(): PMap<V> {
    return new PMap<V>(undefined, 0, 0);
  }

  readonly size: number;
  readonly #root: Slot<V> | undefined;
  readonly #nextSeq: number;
  /** Built on first use; the map never changes, so neither do these. */
  #ordered: Leaf<V>[] | undefined;
  #wire: Uint8Array | undefined;

  private constructor(root: Slot<V> | undefined, size: number, nextSeq: number) {
    this.#root = root;
    this.size = size;
    this.#nextSeq = nextSeq;
  }

  get(key: string): V | undefined {
    return this.#root === undefined ? undefined : lookup(this.#root, hashOf(key), key, 0)?.value;
  }

  has(key: string): boolean {
    return this.#root !== undefined && lookup(this.#root, hashOf(key), key, 0) !== undefined;
  }

  /** A map with `key` set to `value`; a key already present keeps its place in the order. */
  set(key: string, value: V): PMap<V> {
    const hash = hashOf(key);
    const old = this.#root === undefined ? undefined : lookup(this.#root, hash, key, 0);
    const leaf: Leaf<V> = { kind: 0, hash, key, value, seq: old?.seq ?? this.#nextSeq };
    if (this.#root === undefined) return new PMap(leaf, 1, this.#nextSeq + 1);
    const root = insert(this.#root, leaf, 0);
    return old === undefined ? new PMap(root, this.size + 1, this.#nextSeq + 1) : new PMap(root, this.size, this.#nextSeq);
  }

  delete(key: string): PMap<V> {
    if (this.#root === undefined) return this;
    const root = remove(this.#root, hashOf(key), key, 0);
    if (root === this.#root) return this;
    return new PMap(root, this.size - 1, this.#nextSeq);
  }

  /** Keys in insertion order. */
  keys(): string[] {
    return this.#leaves().map((l) => l.key);
  }

  /** Values, in no particular order. */
  values(): V[] {
    const out: Leaf<V>[] = [];
    if (this.#root !== undefined) collect(this.#root, out);
    return out.map((l) => l.value);
  }

  /** The keys in insertion order, each followed by a nul: the DIRECTORY reply. Shared, do not modify. */
  wire(): Uint8Array {
    if (this.#wire === undefined) {
      const parts = this.#leaves().map((l) => utf8.encode(l.key));
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length + 1;
      }
      this.#wire = out;
    }
    return this.#wire;
  }

  #leaves(): Leaf<V>[] {
    if (this.#ordered === undefined) {
      const out: Leaf<V>[] = [];
      if (this.#root !== undefined) collect(this.#root, out);
      this.#ordered = out.sort((a, b) => a.seq - b.seq);
    }
    return this.#ordered;
  }
}
