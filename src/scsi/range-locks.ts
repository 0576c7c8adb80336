// LBA range interlocks for the read-modify-write commands (COMPARE AND WRITE, ORWRITE, WRITE AND
// VERIFY): SBC-4 §5.3 wants COMPARE AND WRITE atomic with respect to every other command that
// touches the same blocks, so no write may land between its read and its write.
//
// Every write-type command in flight holds a `shared` entry for its range; read-modify-write
// commands hold an `exclusive` one. An entry waits for the earlier entries it conflicts with:
//
//   new shared    waits for earlier overlapping exclusive entries
//   new exclusive waits for every earlier overlapping entry
//   a read        waits for earlier overlapping exclusive entries (it holds no entry)
//
// Waiting only on earlier entries makes cycles impossible. In the common case (no exclusive entry
// anywhere) a write links one recycled node at the tail and unlinks it when done: no allocation,
// no scan. Entries live in one doubly linked list in arrival order.

export interface LockOwner {
  readonly aborted: boolean;
  readonly nexus: { readonly key: string };
}

export class RangeLock {
  lba = 0;
  end = 0;
  exclusive = false;
  prev: RangeLock | null = null;
  next: RangeLock | null = null;
  /** Entries (or readers) waiting for this one to end. */
  waiters: RangeLock[] | null = null;
  /** Earlier entries this one still waits for. */
  pending = 0;
  resolve: (() => void) | null = null;
  owner: LockOwner | null = null;
  /** Linked in the list (readers' wait records never are). */
  linked = false;
  /** Took part in a wait: never recycled, since other entries may still point at it. */
  tainted = false;
}

export class RangeLocks {
  #head: RangeLock | null = null;
  #tail: RangeLock | null = null;
  #free: RangeLock[] = [];
  #exclusive = 0;
  #count = 0;

  /** Entries currently held (tests, stats). */
  get size(): number {
    return this.#count;
  }

  /**
   * Registers a write-type (`exclusive` false) or read-modify-write (`exclusive` true) command on
   * [lba, lba+count). Returns the entry; if `entry.pending > 0`, await wait(entry) before the I/O.
   */
  acquire(lba: number, count: number, exclusive: boolean, owner: LockOwner | null): RangeLock {
    const node = this.#free.pop() ?? new RangeLock();
    node.lba = lba;
    node.end = lba + count;
    node.exclusive = exclusive;
    node.owner = owner;
    node.pending = 0;
    if (exclusive || this.#exclusive > 0) this.#dependOnEarlier(node, exclusive);
    node.prev = this.#tail;
    node.next = null;
    if (this.#tail === null) this.#head = node;
    else this.#tail.next = node;
    this.#tail = node;
    node.linked = true;
    this.#count++;
    if (exclusive) this.#exclusive++;
    return node;
  }

  /** Resolves once every earlier conflicting entry has been released (or the owner was aborted and woken). */
  wait(node: RangeLock): Promise<void> {
    if (node.pending === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      node.resolve = resolve;
    });
  }

  /**
   * For a read of [lba, lba+count): a promise to await when an earlier exclusive entry overlaps it,
   * or undefined (the usual case) when the read may go ahead.
   */
  readBarrier(lba: number, count: number, owner: LockOwner | null): Promise<void> | undefined {
    if (this.#exclusive === 0) return undefined;
    const reader = new RangeLock();
    reader.lba = lba;
    reader.end = lba + count;
    reader.owner = owner;
    this.#dependOnEarlier(reader, false);
    if (reader.pending === 0) return undefined;
    return this.wait(reader);
  }

  release(node: RangeLock): void {
    if (!node.linked) return;
    node.linked = false;
    if (node.prev === null) this.#head = node.next;
    else node.prev.next = node.next;
    if (node.next === null) this.#tail = node.prev;
    else node.next.prev = node.prev;
    this.#count--;
    if (node.exclusive) this.#exclusive--;
    const waiters = node.waiters;
    if (waiters !== null) {
      node.waiters = null;
      for (const w of waiters) {
        if (--w.pending === 0 && w.resolve !== null) {
          const r = w.resolve;
          w.resolve = null;
          r();
        }
      }
    }
    node.prev = null;
    node.next = null;
    node.owner = null;
    if (!node.tainted) this.#free.push(node);
  }

  /**
   * Wakes waiters whose owner has been aborted (task management): they return without doing their
   * I/O. Entries they hold stay until they release them. `nexusKey` limits it to one I_T nexus.
   */
  wakeAborted(nexusKey?: string): void {
    for (let n = this.#head; n !== null; n = n.next) {
      if (n.waiters === null) continue;
      for (const w of n.waiters) {
        const owner = w.owner;
        if (w.resolve === null || owner === null || !owner.aborted) continue;
        if (nexusKey !== undefined && owner.nexus.key !== nexusKey) continue;
        const r = w.resolve;
        w.resolve = null;
        r();
      }
    }
  }

  #dependOnEarlier(node: RangeLock, all: boolean): void {
    for (let n = this.#head; n !== null; n = n.next) {
      if (!all && !n.exclusive) continue;
      if (n.end <= node.lba || node.end <= n.lba) continue;
      (n.waiters ??= []).push(node);
      node.pending++;
      n.tainted = true;
      node.tainted = true;
    }
  }
}
