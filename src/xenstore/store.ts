// The xenstore database: an immutable tree of nodes rebuilt by path copying, so a transaction's
// snapshot is one pointer and a commit is one pointer swap. Child lists are persistent maps
// (pmap.ts), so the copy is a short path whatever the number of siblings: O(depth * log32(children))
// a write. Every node carries a generation that changes when its value, perms or child list change;
// transactions record the generations of the nodes they touched and a commit fails with EAGAIN when
// any of them moved (as C xenstored does).

import type { XsPermission } from './types.ts';
import { xsError } from './errors.ts';
import { parentOf, segments } from './paths.ts';
import { PMap } from './pmap.ts';

export interface XsNode {
  readonly value: Uint8Array;
  readonly perms: readonly XsPermission[];
  readonly children: PMap<XsNode>;
  readonly gen: number;
}

const NO_CHILDREN = PMap.empty<XsNode>();

/** Who is asking: the domain a connection speaks for. */
export interface XsCaller {
  readonly domid: number;
  readonly privileged: boolean;
  /** SET_TARGET: this domain acts for `target` too (device models). */
  readonly target?: number | undefined;
}

export interface XsLimits {
  /** Nodes an unprivileged domain may own. */
  readonly nodes: number;
  /** Longest value an unprivileged domain may write. */
  readonly valueSize: number;
}

export type XsChangeKind = 'write' | 'rm';

/** What an operation reports besides its result. */
export interface XsEffects {
  /** A node was looked at or changed (transaction conflict detection). */
  access(path: string): void;
  /** A node changed; `perms` decide which watchers may hear of it (for rm, the removed node's). */
  changed(path: string, perms: readonly XsPermission[], kind: XsChangeKind): void;
}

export const NO_EFFECTS: XsEffects = { access() {}, changed() {} };

const EMPTY = new Uint8Array(0);

export class XsTree {
  root: XsNode;
  /** Nodes per owning domid (perms[0]). */
  owned: Map<number, number>;

  constructor(root: XsNode, owned: Map<number, number>) {
    this.root = root;
    this.owned = owned;
  }

  static initial(): XsTree {
    const root: XsNode = { value: EMPTY, perms: [{ domid: 0, perm: 'n' }], children: NO_CHILDREN, gen: 0 };
    return new XsTree(root, new Map([[0, 1]]));
  }

  clone(): XsTree {
    return new XsTree(this.root, new Map(this.owned));
  }

  lookup(path: string): XsNode | undefined {
    let node: XsNode | undefined = this.root;
    for (const seg of segments(path)) {
      node = node.children.get(seg);
      if (node === undefined) return undefined;
    }
    return node;
  }

  ownedBy(domid: number): number {
    return this.owned.get(domid) ?? 0;
  }

  /**
   * Replaces (or with undefined removes) the node at `path`, whose parent must exist. When the
   * parent's child list changes the parent takes generation `gen`.
   */
  put(path: string, node: XsNode | undefined, gen: number): void {
    const segs = segments(path);
    if (segs.length === 0) {
      if (node === undefined) throw new Error('UB: removing the root');
      this.root = node;
      return;
    }
    const rebuild = (at: XsNode, i: number): XsNode => {
      const seg = segs[i] as string;
      const old = at.children.get(seg);
      let next: XsNode | undefined;
      if (i === segs.length - 1) next = node;
      else {
        if (old === undefined) throw new Error(`UB: put ${path} below a missing node`);
        next = rebuild(old, i + 1);
      }
      const children = next === undefined ? at.children.delete(seg) : at.children.set(seg, next);
      const structural = (old === undefined) !== (next === undefined);
      return { value: at.value, perms: at.perms, children, gen: structural ? gen : at.gen };
    };
    this.root = rebuild(this.root, 0);
  }

  adjustOwned(domid: number, delta: number): void {
    const n = this.ownedBy(domid) + delta;
    if (n === 0) this.owned.delete(domid);
    else this.owned.set(domid, n);
  }
}

export interface XsAccess {
  readonly read: boolean;
  readonly write: boolean;
  readonly owner: boolean;
}

const ALL: XsAccess = { read: true, write: true, owner: true };

/** xenstored's perm_for_conn: privileged and owner get everything, else the first entry naming the caller, else the default. */
export function accessFor(caller: XsCaller, perms: readonly XsPermission[]): XsAccess {
  const first = perms[0];
  if (first === undefined) return caller.privileged ? ALL : { read: false, write: false, owner: false };
  const mine = (domid: number): boolean => domid === caller.domid || (caller.target !== undefined && domid === caller.target);
  if (caller.privileged || mine(first.domid)) return ALL;
  let perm = first.perm;
  for (let i = 1; i < perms.length; i++) {
    const p = perms[i] as XsPermission;
    if (mine(p.domid)) {
      perm = p.perm;
      break;
    }
  }
  return { read: perm === 'r' || perm === 'b', write: perm === 'w' || perm === 'b', owner: false };
}

export function formatPerm(p: XsPermission): string {
  return `${p.perm}${p.domid}`;
}

/** Parses "r5", "b0", ...; undefined for anything else. */
export function parsePerm(s: string): XsPermission | undefined {
  const m = /^([nrwb])(\d{1,5})$/.exec(s);
  if (m === null) return undefined;
  const domid = Number(m[2]);
  if (domid > 0xffff) return undefined;
  return { domid, perm: m[1] as XsPermission['perm'] };
}

/** One database operation, as a transaction records it for replay at commit. */
export type XsOp =
  | { readonly kind: 'write'; readonly path: string; readonly value: Uint8Array }
  | { readonly kind: 'mkdir'; readonly path: string }
  | { readonly kind: 'rm'; readonly path: string }
  | { readonly kind: 'setperms'; readonly path: string; readonly perms: readonly XsPermission[] };

/** The database operations on one tree for one caller. Failures throw XenstoreError. */
export class XsOps {
  readonly #tree: XsTree;
  readonly #caller: XsCaller;
  readonly #limits: XsLimits;
  readonly #fx: XsEffects;
  readonly #nextGen: () => number;

  constructor(tree: XsTree, caller: XsCaller, limits: XsLimits, fx: XsEffects, nextGen: () => number) {
    this.#tree = tree;
    this.#caller = caller;
    this.#limits = limits;
    this.#fx = fx;
    this.#nextGen = nextGen;
  }

  read(path: string): Uint8Array {
    return this.#readable(path, 'read').value;
  }

  directory(path: string): string[] {
    return this.#readable(path, 'directory').children.keys();
  }

  /** The child names, each followed by a nul (the DIRECTORY reply), and the node's generation. */
  directoryWire(path: string, op = 'directory'): { names: Uint8Array; gen: number } {
    const node = this.#readable(path, op);
    return { names: node.children.wire(), gen: node.gen };
  }

  getPerms(path: string): readonly XsPermission[] {
    return this.#readable(path, 'get_perms').perms;
  }

  write(path: string, value: Uint8Array): void {
    if (!this.#caller.privileged && value.length > this.#limits.valueSize) {
      throw xsError('EQUOTA', 'write', path, `value of ${value.length} bytes, quota ${this.#limits.valueSize}`);
    }
    const node = this.#tree.lookup(path);
    this.#fx.access(path);
    if (node === undefined) {
      this.#create(path, value, 'write');
      return;
    }
    if (!accessFor(this.#caller, node.perms).write) throw xsError('EACCES', 'write', path);
    this.#tree.put(path, { ...node, value, gen: this.#nextGen() }, 0);
    this.#fx.changed(path, node.perms, 'write');
  }

  mkdir(path: string): void {
    const node = this.#tree.lookup(path);
    this.#fx.access(path);
    if (node === undefined) {
      this.#create(path, EMPTY, 'mkdir');
      return;
    }
    if (!accessFor(this.#caller, node.perms).write) throw xsError('EACCES', 'mkdir', path);
  }

  rm(path: string): void {
    if (path === '/') throw xsError('EINVAL', 'rm', path, 'the root cannot be removed');
    const node = this.#tree.lookup(path);
    this.#fx.access(path);
    if (node === undefined) {
      // Not an error if the node is missing, but it is if its parent is missing too.
      const parent = parentOf(path);
      this.#fx.access(parent);
      if (this.#tree.lookup(parent) === undefined) throw this.#missing('rm', path);
      return;
    }
    if (!accessFor(this.#caller, node.perms).write) throw xsError('EACCES', 'rm', path);
    this.#fx.access(parentOf(path));
    const uncount = (n: XsNode): void => {
      this.#tree.adjustOwned((n.perms[0] as XsPermission).domid, -1);
      for (const c of n.children.values()) uncount(c);
    };
    uncount(node);
    this.#tree.put(path, undefined, this.#nextGen());
    this.#fx.changed(path, node.perms, 'rm');
  }

  setPerms(path: string, perms: readonly XsPermission[]): void {
    const first = perms[0];
    if (first === undefined) throw xsError('EINVAL', 'set_perms', path, 'no permissions given');
    const node = this.#tree.lookup(path);
    this.#fx.access(path);
    if (node === undefined) throw this.#missing('set_perms', path);
    const acc = accessFor(this.#caller, node.perms);
    if (!acc.write || !acc.owner) throw xsError('EACCES', 'set_perms', path);
    const oldOwner = (node.perms[0] as XsPermission).domid;
    if (!this.#caller.privileged && first.domid !== oldOwner) {
      throw xsError('EPERM', 'set_perms', path, 'only a privileged domain may change the owner');
    }
    const copy = perms.map((p) => ({ domid: p.domid, perm: p.perm }));
    this.#tree.put(path, { ...node, perms: copy, gen: this.#nextGen() }, 0);
    this.#tree.adjustOwned(oldOwner, -1);
    this.#tree.adjustOwned(first.domid, +1);
    this.#fx.changed(path, copy, 'write');
  }

  apply(op: XsOp): void {
    switch (op.kind) {
      case 'write':
        this.write(op.path, op.value);
        return;
      case 'mkdir':
        this.mkdir(op.path);
        return;
      case 'rm':
        this.rm(op.path);
        return;
      case 'setperms':
        this.setPerms(op.path, op.perms);
        return;
    }
  }

  #readable(path: string, op: string): XsNode {
    const node = this.#tree.lookup(path);
    this.#fx.access(path);
    if (node === undefined) throw this.#missing(op, path);
    if (!accessFor(this.#caller, node.perms).read) throw xsError('EACCES', op, path);
    return node;
  }

  /** ENOENT, unless the caller may not even read the closest existing ancestor: then EACCES. */
  #missing(op: string, path: string): Error {
    let up = parentOf(path);
    let node = this.#tree.lookup(up);
    while (node === undefined) {
      up = parentOf(up);
      node = this.#tree.lookup(up);
    }
    return accessFor(this.#caller, node.perms).read ? xsError('ENOENT', op, path) : xsError('EACCES', op, path);
  }

  /** Creates `path` and any missing parents; new nodes inherit their parent's perms and unprivileged creators own them. */
  #create(path: string, value: Uint8Array, op: string): void {
    const segs = segments(path);
    let existing = this.#tree.root;
    let depth = 0;
    for (const seg of segs) {
      const next = existing.children.get(seg);
      if (next === undefined) break;
      existing = next;
      depth++;
    }
    const existingPath = depth === 0 ? '/' : `/${segs.slice(0, depth).join('/')}`;
    this.#fx.access(existingPath);
    if (!accessFor(this.#caller, existing.perms).write) {
      throw accessFor(this.#caller, existing.perms).read ? xsError('EACCES', op, path) : this.#missing(op, path);
    }
    const fresh = segs.length - depth;
    if (!this.#caller.privileged) {
      const have = this.#tree.ownedBy(this.#caller.domid);
      if (have + fresh > this.#limits.nodes) {
        throw xsError('EQUOTA', op, path, `domain ${this.#caller.domid} owns ${have} nodes, quota ${this.#limits.nodes}`);
      }
    }
    let perms = existing.perms;
    if (!this.#caller.privileged) {
      const [first, ...rest] = perms;
      perms = [{ domid: this.#caller.domid, perm: (first as XsPermission).perm }, ...rest];
    }
    const owner = (perms[0] as XsPermission).domid;
    const gen = this.#nextGen();
    for (let i = depth; i < segs.length; i++) {
      const at = `/${segs.slice(0, i + 1).join('/')}`;
      const node: XsNode = { value: i === segs.length - 1 ? value : EMPTY, perms, children: NO_CHILDREN, gen };
      this.#tree.put(at, node, gen);
      this.#tree.adjustOwned(owner, +1);
      if (i > depth) this.#fx.access(at);
    }
    this.#fx.changed(path, perms, 'write');
  }
}

/**
 * What transactions may hold. C xenstored keeps a transaction's nodes in memory too and bounds them
 * with its quotas (tools/xenstored/domain.c quota_adm): `transaction-nodes`, the nodes one
 * transaction may access (ENOSPC past it), and `memory`, all a domain holds (ENOMEM past it); both
 * for unprivileged domains only. Here `memory` counts what a domain's open transactions hold (the
 * rest of C's count, nodes and buffered output, is bounded by `nodes` and the connection's output
 * limit), and `transactionMemory` bounds any one transaction, dom0's included: C trusts dom0, but
 * anything that can open our socket speaks for dom0, and a transaction is replayed whole at commit.
 */
export interface XsTxLimits {
  readonly transactionNodes: number;
  readonly memory: number;
  readonly transactionMemory: number;
}

/** Bytes charged per operation recorded for replay and per node accessed, besides their paths and values. */
const OP_COST = 256;
const SEEN_COST = 96;

export function opCost(op: XsOp): number {
  const extra = op.kind === 'write' ? op.value.length : op.kind === 'setperms' ? op.perms.length * 32 : 0;
  return OP_COST + op.path.length + extra;
}

/** How much one transaction may hold: `charge` says why `bytes` more would be too many, or undefined. */
export interface XsTxBudget {
  readonly nodes: number | undefined;
  charge(tx: XsTransaction, bytes: number): string | undefined;
}

const UNLIMITED: XsTxBudget = { nodes: undefined, charge: () => undefined };

/** A transaction's state before a request, to put back if the request fails. */
export interface XsTxSaved {
  readonly root: XsNode;
  readonly owned: Map<number, number>;
}

/** A transaction: a snapshot to work on, the generations it saw, and its operations for replay. */
export class XsTransaction {
  readonly id: number;
  readonly base: XsTree;
  readonly work: XsTree;
  readonly seen = new Map<string, number>();
  readonly ops: XsOp[] = [];
  readonly effects: XsEffects;
  /** Memory charged so far (operations recorded, nodes accessed). */
  bytes = 0;
  readonly #budget: XsTxBudget;

  constructor(id: number, main: XsTree, budget: XsTxBudget = UNLIMITED) {
    this.id = id;
    this.base = main.clone();
    this.work = main.clone();
    this.#budget = budget;
    this.effects = {
      access: (path) => {
        if (this.seen.has(path)) return;
        const max = this.#budget.nodes;
        if (max !== undefined && this.seen.size >= max) {
          throw xsError('ENOSPC', 'transaction', path, `transaction ${id} accessed ${this.seen.size} nodes, quota transaction-nodes ${max}`);
        }
        this.charge(SEEN_COST + path.length, 'transaction', path);
        this.seen.set(path, this.base.lookup(path)?.gen ?? -1);
      },
      changed() {},
    };
  }

  /** Accounts `bytes` more to this transaction, or fails with ENOMEM as C xenstored's memory quota does. */
  charge(bytes: number, op: string, path: string | undefined): void {
    const why = this.#budget.charge(this, bytes);
    if (why !== undefined) throw xsError('ENOMEM', op, path, why);
    this.bytes += bytes;
  }

  save(): XsTxSaved {
    return { root: this.work.root, owned: new Map(this.work.owned) };
  }

  restore(saved: XsTxSaved): void {
    this.work.root = saved.root;
    this.work.owned = saved.owned;
  }

  /** The first path whose node changed in `main` since this transaction began, if any. */
  conflict(main: XsTree): string | undefined {
    for (const [path, gen] of this.seen) if ((main.lookup(path)?.gen ?? -1) !== gen) return path;
    return undefined;
  }
}

/** The database: the main tree and the generation counter every tree shares. */
export class XsStore {
  main: XsTree = XsTree.initial();
  #gen = 0;

  readonly nextGen = (): number => ++this.#gen;

  ops(caller: XsCaller, limits: XsLimits, fx: XsEffects, tx?: XsTransaction): XsOps {
    return new XsOps(tx === undefined ? this.main : tx.work, caller, limits, fx, this.nextGen);
  }

  /**
   * Commits: EAGAIN if anything the transaction touched changed meanwhile; otherwise its operations
   * are replayed on a copy of the main tree that replaces it only if all succeed.
   */
  commit(tx: XsTransaction, caller: XsCaller, limits: XsLimits, fx: XsEffects): void {
    const moved = tx.conflict(this.main);
    if (moved !== undefined) throw xsError('EAGAIN', 'transaction_end', moved, `transaction ${tx.id}: node changed meanwhile`);
    const next = this.main.clone();
    const ops = new XsOps(next, caller, limits, fx, this.nextGen);
    for (const op of tx.ops) ops.apply(op);
    this.main = next;
  }
}
