// One of the hostile guest's checked disks: a stream of generated requests, valid and malformed,
// kept up to a full ring, every answer checked against the answer the generator says is owed
// (exactly one per request, status, echoed operation and id, zeroed padding, indirect pages left as
// the guest wrote them). Every `epochRequests` requests the ring drains and the campaign compares
// the backend's error counters with the faults sent. The rw disk also, every `overflowEvery`
// requests, publishes a req_prod past the ring (the backend must halt that ring and count it once),
// then closes it and connects a fresh one.
import { BLKIF_OP, BLKIF_RSP } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import { BlkifRequest, BlkifResponse, decodeResponse, encodeIndirectSegments, encodeRequest } from '../blkif/codec.ts';
import { ERROR_KINDS } from '../blkback/stats.ts';
import type { ErrorKind } from '../blkback/stats.ts';
import type { BareFront, BackendFeatures } from './bare-front.ts';
import type { DiskTally, HostileDiskName } from './findings.ts';
import { describeRequest, FamilyTable, FuzzRequest, generateRequest, MAX_LIST, overflowDistance, REF, ringChoice, statusName, opName } from './generator.ts';
import type { FuzzDisk, RefClass } from './generator.ts';
import type { IndirectPage } from './guest-pools.ts';
import { sleep } from './stream-context.ts';
import type { StreamContext } from './stream-context.ts';

const LE = true;
const OP = BLKIF_OP;

/** Indirect pages per checked disk: requests wanting one wait while all are in flight. */
const INDIRECT_POOL = 32;

interface Pending {
  index: number;
  expectStatus: number;
  expectKind: ErrorKind | null;
  expectOp: number;
  page: IndirectPage | null;
}

export function diskOf(f: BackendFeatures): FuzzDisk {
  return { sectors: f.sectors, sectorSize: f.sectorSize, readOnly: f.readOnly, discard: f.discard, maxIndirect: f.maxIndirect };
}

export function newTally(): DiskTally {
  return { requests: 0, answered: 0, malformed: 0, malformedRight: 0, counterChecks: 0, overflows: 0, reconnects: 0 };
}

/** Bytes of a response that are not id, operation or status: they must read zero (XSA-216). */
function paddingBytes(size: number, layout: { rspId: number; rspOperation: number; rspStatus: number }): number[] {
  const out: number[] = [];
  for (let b = 0; b < size; b++) {
    const field = (b >= layout.rspId && b < layout.rspId + 8) || b === layout.rspOperation || b === layout.rspStatus || b === layout.rspStatus + 1;
    if (!field) out.push(b);
  }
  return out;
}

export class CheckedDisk {
  readonly name: HostileDiskName;
  readonly diskIndex: number;
  readonly front: BareFront;
  readonly stream: number;
  readonly tally = newTally();
  readonly expected: Record<ErrorKind, number> = Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as Record<ErrorKind, number>;
  readonly #ctx: StreamContext;
  readonly #abis: readonly BlkifAbi[];
  #table!: FamilyTable;
  index = 0;
  #epoch = 0;
  #prepared = -1;
  #overflows = 0;
  #nextOverflow: number;
  abandoned = false;
  readonly #idHi: number;
  readonly #inflight = new Map<number, Pending>();
  readonly #spare: Pending[] = [];
  readonly #pages: IndirectPage[] = [];
  readonly #req = new FuzzRequest();
  readonly #blk = new BlkifRequest();
  readonly #slot = new Uint8Array(112);
  readonly #slotView = new DataView(this.#slot.buffer);
  readonly #raw = new Uint8Array(16);
  readonly #rsp = new BlkifResponse();
  readonly #list = new Uint32Array(MAX_LIST);
  #padding: number[] = [];

  constructor(ctx: StreamContext, name: HostileDiskName, diskIndex: number, front: BareFront, abis: readonly BlkifAbi[]) {
    this.#ctx = ctx;
    this.name = name;
    this.diskIndex = diskIndex;
    this.front = front;
    this.stream = ctx.params.guest * 16 + diskIndex;
    this.#abis = abis;
    this.#idHi = (0xf0220000 | (ctx.params.guest << 4) | diskIndex) >>> 0;
    this.#nextOverflow = ctx.params.overflowEvery;
    for (let i = 0; i < INDIRECT_POOL; i++) this.#pages.push(ctx.pools.indirectPage(ctx.backendDomid, `${name} indirect page`));
  }

  /** The ring the `connection`th connection asks for. */
  ringChoice(connection: number): { abi: BlkifAbi; order: number } {
    return ringChoice(this.#ctx.params.seed, this.stream, connection, this.#abis, 4);
  }

  async connect(): Promise<void> {
    await this.front.connect(this.ringChoice(0));
    this.#attached();
  }

  #attached(): void {
    this.#table = new FamilyTable(diskOf(this.front.features));
    const L = this.front.layout;
    this.#padding = paddingBytes(this.front.ring.responseSize, L);
  }

  #where(index: number): { guest: number; disk: string; stream: number; index: number; request: string } {
    const r = generateRequest(this.#ctx.params.seed, this.stream, index, this.#table, new FuzzRequest());
    return { guest: this.#ctx.params.guest, disk: this.name, stream: this.stream, index, request: describeRequest(r) };
  }

  async run(): Promise<void> {
    const ctx = this.#ctx;
    const front = this.front;
    const deadline = ctx.params.deadlineMs;
    let budgetLeft = true;
    while (!this.abandoned) {
      const epochEnd = (this.#epoch + 1) * ctx.params.epochRequests;
      let filled = false;
      while (budgetLeft && front.free > 0 && this.index < epochEnd) {
        if (!this.#prepare()) break; // every indirect page is in flight
        if (!ctx.take()) {
          budgetLeft = false;
          break;
        }
        this.#send();
        filled = true;
      }
      if (filled) front.publish();
      if (front.outstanding > 0) {
        // Half of what is in flight: one wake-up per batch of answers, and the ring refilled in time.
        if (!(await front.waitResponses((front.rspCons + Math.ceil(front.outstanding / 2)) >>> 0, deadline))) {
          this.#hang();
          return;
        }
        this.#consume();
        continue;
      }
      this.#consume();
      if (this.index < epochEnd && budgetLeft) continue;
      if (!(await this.#endEpoch(budgetLeft))) return;
      if (!budgetLeft) return;
    }
  }

  /** Generates request `index` (once) and takes an indirect page if it needs one; false if none is free. */
  #prepare(): boolean {
    const r = this.#req;
    if (this.#prepared !== this.index) {
      generateRequest(this.#ctx.params.seed, this.stream, this.index, this.#table, r);
      this.#prepared = this.index;
    }
    return !(r.operation === OP.INDIRECT && r.indirectPageRef === REF.indirect && this.#pages.length === 0);
  }

  #send(): void {
    const ctx = this.#ctx;
    const pools = ctx.pools;
    const front = this.front;
    const r = this.#req;
    const blk = this.#blk;
    const L = front.layout;
    blk.operation = r.operation;
    blk.nrSegments = r.nrSegments;
    blk.handle = r.handle;
    blk.idLo = r.index >>> 0;
    blk.idHi = this.#idHi;
    blk.sectorNumber = 0;
    blk.discardFlag = r.discardFlag;
    blk.nrSectors = 0;
    blk.indirectOp = r.indirectOp;
    blk.indirectNrSegments = r.indirectNrSegments;
    let page: IndirectPage | null = null;
    if (r.operation === OP.INDIRECT) {
      if (r.indirectPageRef === REF.indirect) {
        page = this.#pages.pop()!;
        const count = Math.min(r.segs, MAX_LIST);
        for (let i = 0; i < count; i++) this.#list[i] = pools.resolve(r.segRef[i] as RefClass, r.segPick[i]!, false);
        encodeIndirectSegments(page.view, count, this.#list, r.segFirst, r.segLast, 0);
        page.bytes = count * 8;
        page.shadow.set(page.view.subarray(0, page.bytes));
        blk.indirectGrefs[0] = page.ref;
      } else {
        blk.indirectGrefs[0] = pools.resolve(r.indirectPageRef, r.indirectPagePick, false);
      }
      for (let i = 1; i < 8; i++) blk.indirectGrefs[i] = r.indirectJunk[i - 1]!;
    } else {
      const n = Math.min(r.segs, 11);
      for (let i = 0; i < n; i++) {
        blk.segGref[i] = pools.resolve(r.segRef[i] as RefClass, r.segPick[i]!, false);
        blk.segFirst[i] = r.segFirst[i]!;
        blk.segLast[i] = r.segLast[i]!;
      }
    }
    const slot = this.#slot;
    encodeRequest(front.abi, blk, slot);
    const v = this.#slotView;
    if (r.operation <= OP.INDIRECT && r.operation !== OP.RESERVED_1) {
      v.setUint32(L.sectorNumber, r.sectorLo, LE);
      v.setUint32(L.sectorNumber + 4, r.sectorHi, LE);
    }
    if (r.operation === OP.DISCARD) {
      v.setUint32(L.discardNrSectors, r.nrSectorsLo, LE);
      v.setUint32(L.discardNrSectors + 4, r.nrSectorsHi, LE);
    }
    front.put(slot);
    const p = this.#spare.pop() ?? { index: 0, expectStatus: 0, expectKind: null, expectOp: 0, page: null };
    p.index = r.index;
    p.expectStatus = r.expectStatus;
    p.expectKind = r.expectKind;
    p.expectOp = r.expectOp;
    p.page = page;
    this.#inflight.set(blk.idLo, p);
    if (r.expectKind !== null) this.expected[r.expectKind]++;
    if (r.expectStatus !== BLKIF_RSP.OKAY) this.tally.malformed++;
    this.tally.requests++;
    ctx.families[r.family]!++;
    this.index++;
  }

  #consume(): void {
    const front = this.front;
    const ring = front.ring;
    let prod = ring.rspProd;
    if (((prod - front.reqProdPvt) | 0) > 0) {
      this.#ctx.finding({
        kind: 'protocol',
        message: `rsp_prod ${prod} is past req_prod ${front.reqProdPvt}: answers to requests never made`,
        guest: this.#ctx.params.guest,
        disk: this.name,
      });
      prod = front.reqProdPvt;
    }
    const raw = this.#raw;
    const rsp = this.#rsp;
    while (front.rspCons !== prod) {
      front.response(front.rspCons, raw);
      front.rspCons = (front.rspCons + 1) >>> 0;
      decodeResponse(front.abi, raw, rsp);
      this.#check(rsp, raw);
    }
  }

  #check(rsp: BlkifResponse, raw: Uint8Array): void {
    const ctx = this.#ctx;
    const p = rsp.idHi === this.#idHi ? this.#inflight.get(rsp.idLo) : undefined;
    if (p === undefined) {
      ctx.finding({
        kind: 'protocol',
        message: `an answer with id ${rsp.idHi.toString(16)}:${rsp.idLo} (status ${statusName(rsp.status)}) matches no request in flight: answered twice, or an id made up`,
        guest: ctx.params.guest,
        disk: this.name,
      });
      return;
    }
    this.#inflight.delete(rsp.idLo);
    this.tally.answered++;
    const problems: string[] = [];
    if (rsp.status !== p.expectStatus)
      problems.push(`status ${statusName(rsp.status)}, owed ${statusName(p.expectStatus)}${p.expectKind === null ? '' : ` (${p.expectKind})`}`);
    if (rsp.operation !== p.expectOp) problems.push(`operation ${opName(rsp.operation)} echoed, owed ${opName(p.expectOp)}`);
    for (const b of this.#padding) {
      if (raw[b] !== 0) {
        problems.push(`response byte ${b} (padding) is 0x${raw[b]!.toString(16)}`);
        break;
      }
    }
    if (problems.length === 0) {
      if (p.expectStatus !== BLKIF_RSP.OKAY) this.tally.malformedRight++;
    } else {
      const outOfGrant = p.expectKind === 'bad_grant' && rsp.status === BLKIF_RSP.OKAY;
      ctx.finding({
        kind: outOfGrant ? 'out_of_grant' : 'protocol',
        message: outOfGrant ? `I/O on a page without a grant for it was done and answered OKAY (${problems.join('; ')})` : problems.join('; '),
        ...this.#where(p.index),
      });
    }
    const page = p.page;
    if (page !== null) {
      if (!sameBytes(page.view, page.shadow, page.bytes)) {
        ctx.finding({ kind: 'out_of_grant', message: 'the indirect page (granted read-only) changed while the backend held it', ...this.#where(p.index) });
      }
      this.#pages.push(page);
      p.page = null;
    }
    this.#spare.push(p);
  }

  #hang(): void {
    this.abandoned = true;
    const front = this.front;
    let oldest = -1;
    for (const p of this.#inflight.values()) if (oldest < 0 || p.index < oldest) oldest = p.index;
    this.#ctx.finding({
      kind: 'hang',
      message:
        `no answer within ${this.#ctx.params.deadlineMs} ms: ${this.#inflight.size} requests in flight ` +
        `(req_prod ${front.ring.reqProd}, rsp_prod ${front.ring.rspProd}); the oldest is named here`,
      ...(oldest < 0 ? { guest: this.#ctx.params.guest, disk: this.name } : this.#where(oldest)),
    });
  }

  /** The ring is drained: the campaign checks the counters; then perhaps an overflow and a fresh ring. */
  async #endEpoch(budgetLeft: boolean): Promise<boolean> {
    const ctx = this.#ctx;
    this.#epoch++;
    ctx.scan();
    if (!(await this.#report(false))) return false;
    if (this.name === 'rw' && budgetLeft && !ctx.stopping && this.index >= this.#nextOverflow) {
      this.#nextOverflow += ctx.params.overflowEvery;
      return this.#overflowAndReconnect();
    }
    return true;
  }

  async #report(halted: boolean): Promise<boolean> {
    const ctx = this.#ctx;
    const ok = await ctx.epoch({
      type: 'epoch',
      disk: this.name,
      devid: this.front.devid,
      epoch: this.#epoch,
      expected: { ...this.expected },
      halted,
      index: this.index,
    });
    if (!ok) {
      this.abandoned = true;
      ctx.finding({
        kind: 'hang',
        message: `the campaign did not check epoch ${this.#epoch} within ${ctx.params.deadlineMs} ms (its thread, the backend's, is stuck?)`,
        guest: ctx.params.guest,
        disk: this.name,
      });
      return false;
    }
    this.tally.counterChecks++;
    return true;
  }

  async #overflowAndReconnect(): Promise<boolean> {
    const ctx = this.#ctx;
    const front = this.front;
    const ring = front.ring;
    const base = ring.rspProd;
    const bogus = (base + front.size + overflowDistance(ctx.params.seed, this.stream, this.#overflows++)) >>> 0;
    for (let i = 0; i < 3; i++) {
      front.publish(bogus, true);
      await sleep(5);
    }
    await sleep(20);
    if (ring.rspProd !== base) {
      ctx.finding({
        kind: 'protocol',
        message: `answered ${(ring.rspProd - base) >>> 0} requests of a ring whose req_prod (${bogus}) ran past its ${front.size} slots`,
        guest: ctx.params.guest,
        disk: this.name,
      });
    }
    this.expected.ring_overflow++;
    this.tally.overflows++;
    this.#epoch++;
    if (!(await this.#report(true))) return false;
    let held: number;
    try {
      held = await front.reconnect(this.ringChoice(front.connections));
    } catch (err) {
      this.abandoned = true;
      ctx.finding({
        kind: 'hang',
        message: `reconnecting after the overflow: ${err instanceof Error ? err.message : String(err)}`,
        guest: ctx.params.guest,
        disk: this.name,
      });
      return false;
    }
    if (held > 0)
      ctx.finding({
        kind: 'protocol',
        message: `the backend still mapped ${held} pages of the old ring after Closed`,
        guest: ctx.params.guest,
        disk: this.name,
      });
    this.tally.reconnects++;
    this.#attached();
    this.#prepared = -1;
    return true;
  }

  /** Requests in flight (for the end of the run). */
  get inflight(): number {
    return this.#inflight.size;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}
