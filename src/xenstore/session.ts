// One xenstore connection, sans-IO: bytes in through receive(), out through its XsSessionIo. It
// keeps the connection's unanswered requests as bytes (receive() only appends), answers one per
// step() when the daemon's scheduler gives it a turn, runs them against the daemon's store for the
// domain it speaks for, keeps that connection's watches and transactions, and formats replies and
// watch events.
//
// What one connection can make the daemon hold is bounded:
//   unread requests   past `inputLimit` bytes the connection is paused (not read) until they drain
//   unread replies    past `outputLimit` bytes of backlog its requests wait for the peer to read;
//                     watch events past `outputDropLimit` drop the connection (a watcher that
//                     does not read would otherwise grow without limit)
//   transactions      per transaction and per unprivileged domain, see store.ts XsTxLimits
//   impossible header a length above XENSTORE_PAYLOAD_MAX drops the connection, as C xenstored
//                     does: the stream cannot be trusted to be in sync after it

import type { XsPermission } from './types.ts';
import { DOMID_FIRST_RESERVED } from '../abi/xen.ts';
import { XENSTORE_PAYLOAD_MAX, XsType, xsTypeName } from './constants.ts';
import { XsDecoder, encodeMessage, nulStrings, splitFirst, splitNul, textBytes } from './codec.ts';
import type { XsHeader, XsMessage } from './codec.ts';
import { XenstoreError, xsError } from './errors.ts';
import { domainPath, isChildOf, resolvePath } from './paths.ts';
import { XsTransaction, accessFor, formatPerm, opCost, parsePerm } from './store.ts';
import type { XsCaller, XsChangeKind, XsEffects, XsLimits, XsOp, XsOps, XsStore, XsTxBudget, XsTxLimits } from './store.ts';

/** A change to announce to watchers. `special` events are @introduceDomain / @releaseDomain. */
export interface XsEvent {
  readonly path: string;
  readonly perms: readonly XsPermission[];
  readonly kind: XsChangeKind | 'special';
}

export interface XsWatch {
  /** As the client gave it (relative paths stay relative in events). */
  readonly wpath: string;
  readonly abs: string;
  readonly token: string;
  readonly relative: boolean;
}

/** Per-connection buffer bounds (bytes). */
export interface XsFlowLimits {
  readonly inputLimit: number;
  readonly outputLimit: number;
  readonly outputDropLimit: number;
}

/** What a session needs from the daemon that owns it. */
export interface XsSessionHost {
  readonly store: XsStore;
  readonly limits: XsLimits;
  readonly txLimits: XsTxLimits;
  readonly flow: XsFlowLimits;
  readonly maxWatches: number;
  readonly maxTransactions: number;
  /** Whether log() is listened to (lines are only formatted when it is). */
  readonly logging: boolean;
  caller(domid: number): XsCaller;
  /** Bytes held by the open transactions of `domid`'s connections. */
  transactionBytes(domid: number): number;
  /** The session may have become runnable (input arrived, its peer read some output). */
  wake(session: XsSession): void;
  fire(events: readonly XsEvent[]): void;
  watchCount(domid: number): number;
  transactionCount(domid: number): number;
  introduce(domid: number): void;
  release(domid: number): void;
  isIntroduced(domid: number): boolean;
  setTarget(domid: number, target: number): void;
  log(line: string): void;
}

/** How a session talks to its connection (an XsTransport, seen from the daemon). */
export interface XsSessionIo {
  send(bytes: Uint8Array): void;
  /** Bytes sent that the peer has not taken yet. */
  readonly backlog: number;
  pause(): void;
  resume(): void;
  /** Drops the connection. */
  close(): void;
}

const OK = nulStrings('OK');

interface Reply {
  readonly payload: Uint8Array;
  /** Runs after the reply is sent (the initial watch event follows the WATCH reply). */
  readonly after?: () => void;
}

function parseDomid(s: string | undefined): number | undefined {
  if (s === undefined || !/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= 0xffff ? n : undefined;
}

export class XsSession {
  readonly domid: number;
  readonly watches: XsWatch[] = [];
  readonly transactions = new Map<number, XsTransaction>();
  readonly #host: XsSessionHost;
  readonly #io: XsSessionIo;
  readonly #decoder: XsDecoder;
  #nextTx = 1;
  #closed = false;
  #paused = false;

  constructor(host: XsSessionHost, domid: number, io: XsSessionIo) {
    this.#host = host;
    this.domid = domid;
    this.#io = io;
    this.#decoder = new XsDecoder({
      onMessage: (msg) => this.#handle(msg),
      onOversize: (h) => this.#oversize(h),
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A whole request is waiting and the peer has room for its answer. */
  get runnable(): boolean {
    return !this.#closed && this.#decoder.ready && this.#io.backlog < this.#host.flow.outputLimit;
  }

  /** Keeps `chunk` until the scheduler gives this connection a turn; stops reading past the input limit. */
  receive(chunk: Uint8Array): void {
    if (this.#closed) return;
    this.#decoder.append(chunk);
    if (!this.#paused && this.#decoder.buffered > this.#host.flow.inputLimit) {
      this.#paused = true;
      this.#io.pause();
    }
    this.#host.wake(this);
  }

  /** Answers the next waiting request, if there is one and room for the answer; false otherwise. */
  step(): boolean {
    if (!this.runnable) return false;
    const progressed = this.#decoder.next();
    if (this.#paused && !this.#closed && this.#decoder.buffered <= this.#host.flow.inputLimit / 2) {
      this.#paused = false;
      this.#io.resume();
    }
    return progressed;
  }

  /** Forgets watches, transactions and unanswered requests; later input is ignored. */
  close(): void {
    this.#closed = true;
    this.watches.length = 0;
    this.transactions.clear();
    this.#decoder.clear();
  }

  #drop(why: string): void {
    this.#log(() => `DROP d${this.domid}: ${why}`);
    this.close();
    this.#io.close();
  }

  #log(line: () => string): void {
    if (this.#host.logging) this.#host.log(line());
  }

  /** Sends WATCH_EVENTs for every watch of this connection that `ev` matches and this domain may see. */
  notify(ev: XsEvent): void {
    if (this.#closed) return;
    for (const w of this.watches) {
      let epath: string;
      if (ev.kind === 'special') {
        if (w.abs !== ev.path) continue;
        epath = ev.path;
      } else if (w.abs.startsWith('@')) {
        continue;
      } else if (isChildOf(ev.path, w.abs)) {
        epath = ev.path;
      } else if (ev.kind === 'rm' && isChildOf(w.abs, ev.path)) {
        epath = w.abs; // a parent of the watched path went away
      } else {
        continue;
      }
      if (ev.kind !== 'special' && !accessFor(this.#host.caller(this.domid), ev.perms).read) continue;
      if (w.relative) epath = epath.slice(domainPath(this.domid).length + 1);
      this.#event(epath, w.token);
    }
  }

  #event(path: string, token: string): void {
    if (this.#closed) return;
    if (this.#io.backlog > this.#host.flow.outputDropLimit) {
      this.#drop(`${this.#io.backlog} bytes of replies and watch events unread`);
      return;
    }
    this.#log(() => `OUT d${this.domid} XS_WATCH_EVENT ${path} ${token}`);
    this.#io.send(encodeMessage(XsType.XS_WATCH_EVENT, 0, 0, nulStrings(path, token)));
  }

  #oversize(h: XsHeader): void {
    // C xenstored: "Client tried to feed us" a length beyond the protocol's; the connection is
    // ignored from then on. Skipping the payload would mean reading up to 4 GiB of it.
    this.#log(() => `IN  d${this.domid} r${h.reqId} ${xsTypeName(h.type)} payload of ${h.len} bytes > ${XENSTORE_PAYLOAD_MAX}`);
    this.#drop(`header announces ${h.len} bytes, more than XENSTORE_PAYLOAD_MAX (${XENSTORE_PAYLOAD_MAX})`);
  }

  #error(reqId: number, txId: number, code: string): void {
    this.#log(() => `OUT d${this.domid} r${reqId} XS_ERROR ${code}`);
    this.#io.send(encodeMessage(XsType.XS_ERROR, reqId, txId, nulStrings(code)));
  }

  #handle(msg: XsMessage): void {
    if (this.#closed) return;
    this.#log(() => `IN  d${this.domid} r${msg.reqId} t${msg.txId} ${xsTypeName(msg.type)} ${splitNul(msg.payload).join(' ').slice(0, 200)}`);
    let reply: Reply;
    try {
      reply = this.#dispatch(msg);
    } catch (err) {
      // A bug of ours must not take the daemon down with it: answer EIO and leave a trace.
      const code = err instanceof XenstoreError ? err.code : 'EIO';
      if (!(err instanceof XenstoreError))
        this.#host.log(`BUG d${this.domid} r${msg.reqId}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      this.#error(msg.reqId, msg.txId, code);
      return;
    }
    this.#log(() => `OUT d${this.domid} r${msg.reqId} ${xsTypeName(msg.type)} ${splitNul(reply.payload.subarray(0, 256)).join(' ').slice(0, 200)}`);
    this.#io.send(encodeMessage(msg.type, msg.reqId, msg.txId, reply.payload));
    reply.after?.();
  }

  #path(arg: string | undefined, op: string): string {
    const abs = arg === undefined ? undefined : resolvePath(arg, this.domid);
    if (abs === undefined) throw xsError('EINVAL', op, arg ?? '(none)', 'not a valid path');
    return abs;
  }

  #privileged(op: string): XsCaller {
    const caller = this.#host.caller(this.domid);
    if (!caller.privileged) throw xsError('EACCES', op, undefined, `domain ${this.domid} is not privileged`);
    return caller;
  }

  /**
   * Runs `fn` on the store, inside the request's transaction if it names one. `op` is what a
   * transaction records for replay at commit: its memory is charged first, and a request that fails
   * inside a transaction leaves the transaction as it was.
   */
  #db<T>(msg: XsMessage, fn: (ops: XsOps, tx: XsTransaction | undefined) => T, op?: XsOp): T {
    const caller = this.#host.caller(this.domid);
    if (msg.txId !== 0) {
      const tx = this.transactions.get(msg.txId);
      if (tx === undefined) throw xsError('ENOENT', xsTypeName(msg.type), undefined, `no transaction ${msg.txId}`);
      const saved = tx.save();
      try {
        if (op !== undefined) tx.charge(opCost(op), xsTypeName(msg.type), op.path);
        const result = fn(this.#host.store.ops(caller, this.#host.limits, tx.effects, tx), tx);
        if (op !== undefined) tx.ops.push(op);
        return result;
      } catch (err) {
        tx.restore(saved);
        throw err;
      }
    }
    const events: XsEvent[] = [];
    const fx: XsEffects = { access() {}, changed: (path, perms, kind) => events.push({ path, perms, kind }) };
    const result = fn(this.#host.store.ops(caller, this.#host.limits, fx), undefined);
    this.#host.fire(events);
    return result;
  }

  #dispatch(msg: XsMessage): Reply {
    // WRITE's value is bytes, not strings: it is split off by splitFirst, never decoded.
    const args = msg.type === XsType.XS_WRITE ? [] : splitNul(msg.payload);
    switch (msg.type) {
      case XsType.XS_READ: {
        const path = this.#path(args[0], 'read');
        return { payload: this.#db(msg, (ops) => ops.read(path)) };
      }
      case XsType.XS_WRITE: {
        const parts = splitFirst(msg.payload);
        const path = this.#path(parts?.first, 'write');
        const value = (parts as { rest: Uint8Array }).rest.slice();
        this.#db(msg, (ops) => ops.write(path, value), { kind: 'write', path, value });
        return { payload: OK };
      }
      case XsType.XS_MKDIR: {
        const path = this.#path(args[0], 'mkdir');
        this.#db(msg, (ops) => ops.mkdir(path), { kind: 'mkdir', path });
        return { payload: OK };
      }
      case XsType.XS_RM: {
        const path = this.#path(args[0], 'rm');
        this.#db(msg, (ops) => ops.rm(path), { kind: 'rm', path });
        return { payload: OK };
      }
      case XsType.XS_DIRECTORY: {
        const path = this.#path(args[0], 'directory');
        const payload = this.#db(msg, (ops) => ops.directoryWire(path)).names;
        if (payload.length > XENSTORE_PAYLOAD_MAX) throw xsError('E2BIG', 'directory', path);
        return { payload };
      }
      case XsType.XS_DIRECTORY_PART:
        return { payload: this.#directoryPart(msg, args) };
      case XsType.XS_GET_PERMS: {
        const path = this.#path(args[0], 'get_perms');
        return { payload: nulStrings(...this.#db(msg, (ops) => ops.getPerms(path)).map(formatPerm)) };
      }
      case XsType.XS_SET_PERMS: {
        const path = this.#path(args[0], 'set_perms');
        const perms: XsPermission[] = [];
        for (const s of args.slice(1)) {
          if (s === '') continue;
          const p = parsePerm(s);
          if (p === undefined) throw xsError('EINVAL', 'set_perms', path, `bad permission '${s}'`);
          perms.push(p);
        }
        this.#db(msg, (ops) => ops.setPerms(path, perms), { kind: 'setperms', path, perms });
        return { payload: OK };
      }
      case XsType.XS_WATCH:
        return this.#watch(args);
      case XsType.XS_UNWATCH: {
        const [wpath, token] = args;
        const abs = wpath?.startsWith('@') ? wpath : this.#path(wpath, 'unwatch');
        const i = this.watches.findIndex((w) => w.abs === abs && w.token === token);
        if (i < 0) throw xsError('ENOENT', 'unwatch', wpath, `no watch with token '${token ?? ''}'`);
        this.watches.splice(i, 1);
        return { payload: OK };
      }
      case XsType.XS_TRANSACTION_START: {
        if (msg.txId !== 0) throw xsError('EBUSY', 'transaction_start', undefined, 'already inside a transaction');
        const caller = this.#host.caller(this.domid);
        if (!caller.privileged && this.#host.transactionCount(this.domid) >= this.#host.maxTransactions) {
          throw xsError('EQUOTA', 'transaction_start', undefined, `quota of ${this.#host.maxTransactions} transactions`);
        }
        let id = this.#nextTx;
        while (id === 0 || this.transactions.has(id)) id = (id + 1) >>> 0;
        this.#nextTx = (id + 1) >>> 0;
        this.transactions.set(id, new XsTransaction(id, this.#host.store.main, this.#txBudget(caller)));
        return { payload: nulStrings(String(id)) };
      }
      case XsType.XS_TRANSACTION_END: {
        const tx = this.transactions.get(msg.txId);
        if (tx === undefined) throw xsError('ENOENT', 'transaction_end', undefined, `no transaction ${msg.txId}`);
        const verdict = args[0];
        if (verdict !== 'T' && verdict !== 'F') throw xsError('EINVAL', 'transaction_end', undefined, "expected 'T' or 'F'");
        this.transactions.delete(msg.txId);
        if (verdict === 'T') {
          const events = new Map<string, XsEvent>();
          const fx: XsEffects = {
            access() {},
            changed: (path, perms, kind) => void events.set(`${kind}:${path}`, { path, perms, kind }),
          };
          this.#host.store.commit(tx, this.#host.caller(this.domid), this.#host.limits, fx);
          this.#host.fire([...events.values()]);
        }
        return { payload: OK };
      }
      case XsType.XS_GET_DOMAIN_PATH: {
        const domid = parseDomid(args[0]);
        if (domid === undefined) throw xsError('EINVAL', 'get_domain_path', args[0]);
        return { payload: nulStrings(domainPath(domid)) };
      }
      case XsType.XS_INTRODUCE: {
        this.#privileged('introduce');
        const domid = parseDomid(args[0]);
        if (domid === undefined || domid === 0 || domid >= DOMID_FIRST_RESERVED) throw xsError('EINVAL', 'introduce', args[0]);
        this.#host.introduce(domid);
        return { payload: OK };
      }
      case XsType.XS_RELEASE: {
        this.#privileged('release');
        const domid = parseDomid(args[0]);
        if (domid === undefined || domid === 0 || domid >= DOMID_FIRST_RESERVED) throw xsError('EINVAL', 'release', args[0]);
        if (!this.#host.isIntroduced(domid)) throw xsError('ENOENT', 'release', args[0], 'domain not introduced');
        // The reply must go out before a release of our own domain closes us.
        return { payload: OK, after: () => this.#host.release(domid) };
      }
      case XsType.XS_IS_DOMAIN_INTRODUCED: {
        const domid = parseDomid(args[0]);
        if (domid === undefined) throw xsError('EINVAL', 'is_domain_introduced', args[0]);
        return { payload: nulStrings(domid === 0 || this.#host.isIntroduced(domid) ? 'T' : 'F') };
      }
      case XsType.XS_RESUME: {
        this.#privileged('resume');
        const domid = parseDomid(args[0]);
        if (domid === undefined || !this.#host.isIntroduced(domid)) throw xsError('ENOENT', 'resume', args[0]);
        return { payload: OK };
      }
      case XsType.XS_SET_TARGET: {
        this.#privileged('set_target');
        const domid = parseDomid(args[0]);
        const target = parseDomid(args[1]);
        if (domid === undefined || target === undefined) throw xsError('EINVAL', 'set_target', args.join(' '));
        this.#host.setTarget(domid, target);
        return { payload: OK };
      }
      case XsType.XS_RESET_WATCHES:
        this.watches.length = 0;
        this.transactions.clear();
        return { payload: OK };
      case XsType.XS_CONTROL:
        return { payload: this.#control(args) };
      default:
        throw xsError('EINVAL', xsTypeName(msg.type), undefined, 'not a request type');
    }
  }

  #watch(args: string[]): Reply {
    const [wpath, token] = args;
    if (wpath === undefined || token === undefined) throw xsError('EINVAL', 'watch', wpath, 'expected <path>|<token>|');
    const special = wpath.startsWith('@');
    const abs = special ? wpath : this.#path(wpath, 'watch');
    if (this.watches.some((w) => w.abs === abs && w.token === token)) throw xsError('EEXIST', 'watch', wpath, `token '${token}'`);
    const caller = this.#host.caller(this.domid);
    if (!caller.privileged && this.#host.watchCount(this.domid) >= this.#host.maxWatches) {
      throw xsError('EQUOTA', 'watch', wpath, `quota of ${this.#host.maxWatches} watches`);
    }
    this.watches.push({ wpath, abs, token, relative: !special && !wpath.startsWith('/') });
    return { payload: OK, after: () => this.#event(wpath, token) };
  }

  /** How much a new transaction of `caller` may hold (store.ts XsTxLimits). */
  #txBudget(caller: XsCaller): XsTxBudget {
    const l = this.#host.txLimits;
    return {
      nodes: caller.privileged ? undefined : l.transactionNodes,
      charge: (tx, bytes) => {
        if (tx.bytes + bytes > l.transactionMemory) return `transaction of ${tx.bytes} bytes, limit ${l.transactionMemory}`;
        if (caller.privileged) return undefined;
        const domain = this.#host.transactionBytes(this.domid);
        return domain + bytes > l.memory ? `domain ${this.domid} transactions hold ${domain} bytes, quota ${l.memory}` : undefined;
      },
    };
  }

  /** `<path>|<offset>|` -> `<gencnt>|<child>|*`, plus an empty string once the list is complete. */
  #directoryPart(msg: XsMessage, args: string[]): Uint8Array {
    const path = this.#path(args[0], 'directory_part');
    const offset = Number(args[1] ?? '');
    if (!Number.isInteger(offset) || offset < 0) throw xsError('EINVAL', 'directory_part', path, 'bad offset');
    const listing = this.#db(msg, (ops) => ops.directoryWire(path, 'directory_part'));
    const gen = textBytes(`${listing.gen}`);
    const all = listing.names;
    if (offset > all.length) throw xsError('EINVAL', 'directory_part', path, 'offset beyond the list');
    const room = XENSTORE_PAYLOAD_MAX - gen.length - 1 - 1;
    let end = offset;
    while (end < all.length) {
      const nul = all.indexOf(0, end);
      if (nul + 1 - offset > room) break;
      end = nul + 1;
    }
    const complete = end === all.length;
    const out = new Uint8Array(gen.length + 1 + (end - offset) + (complete ? 1 : 0));
    out.set(gen, 0);
    out.set(all.subarray(offset, end), gen.length + 1);
    return out;
  }

  #control(args: string[]): Uint8Array {
    this.#privileged('control');
    const [cmd, ...params] = args;
    switch (cmd) {
      case 'help':
        return nulStrings('check\nlog\nprint\nquota\nhelp\n');
      case 'check':
      case 'log':
        return OK;
      case 'print':
        this.#host.log(`PRINT ${params.join(' ')}`);
        return OK;
      case 'quota': {
        const l = this.#host.limits;
        const t = this.#host.txLimits;
        const f = this.#host.flow;
        const text =
          `nodes ${l.nodes}\nvalue-size ${l.valueSize}\nwatches ${this.#host.maxWatches}\ntransactions ${this.#host.maxTransactions}\n` +
          `transaction-nodes ${t.transactionNodes}\nmemory ${t.memory}\ntransaction-memory ${t.transactionMemory}\n` +
          `input-buffer ${f.inputLimit}\noutput-buffer ${f.outputLimit}\noutput-drop ${f.outputDropLimit}\n`;
        return nulStrings(text);
      }
      default:
        throw xsError('EINVAL', 'control', cmd ?? '(none)', 'unknown command');
    }
  }
}
