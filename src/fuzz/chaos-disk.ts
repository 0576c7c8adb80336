// The hostile guest's chaos disk: generated requests (over the chaos pages) whose slots, indirect
// pages and grant entries the guest rewrites after publishing them, plus storms of notifications.
// What each request then means is up to the race, so answers are only counted: every published
// request must be answered, none twice (rsp_prod never passes req_prod), the ring must never stall,
// and the canaries must survive. Every `epochRequests` requests the ring drains, the grant entries
// are put back, and the campaign checks the disk (not halted, nothing in flight, no I/O error).
import { BLKIF_OP, RING_HEADER_SIZE } from '../blkif/constants.ts';
import { BlkifRequest, encodeIndirectSegments, encodeRequest } from '../blkif/codec.ts';
import type { BareFront } from './bare-front.ts';
import { CHAOS, ChaosAction, generateChaos } from './chaos.ts';
import { diskOf, newTally } from './checked-disk.ts';
import { FamilyTable, FuzzRequest, generateRequest, MAX_LIST, REF, ringChoice } from './generator.ts';
import type { RefClass } from './generator.ts';
import type { StreamContext } from './stream-context.ts';

const LE = true;
const OP = BLKIF_OP;
/** Actions after each refill. */
const ACTIONS_PER_ROUND = 8;

export class ChaosDisk {
  readonly name = 'chaos' as const;
  readonly diskIndex: number;
  readonly front: BareFront;
  readonly stream: number;
  readonly tally = newTally();
  readonly #ctx: StreamContext;
  #table!: FamilyTable;
  index = 0;
  #actions = 0;
  #epoch = 0;
  abandoned = false;
  readonly #req = new FuzzRequest();
  readonly #blk = new BlkifRequest();
  readonly #slot = new Uint8Array(112);
  readonly #slotView = new DataView(this.#slot.buffer);
  readonly #list = new Uint32Array(MAX_LIST);
  readonly #action = new ChaosAction();
  /** Per word of a slot: may some operation read it as a grant ref? */
  #refWord: boolean[] = [];
  #memory!: Int32Array;

  constructor(ctx: StreamContext, diskIndex: number, front: BareFront) {
    this.#ctx = ctx;
    this.diskIndex = diskIndex;
    this.front = front;
    this.stream = ctx.params.guest * 16 + diskIndex;
  }

  async connect(): Promise<void> {
    // x86_64 rings of one or two pages: their slots never straddle a page, so the backend copies a
    // slot with one memcpy and sees each word we store old or new. (A straddling slot is copied byte
    // by byte, so a word could be read half old, half new: any ref at all, a ring page's included,
    // which the backend would rightly use, since the guest granted it. The checked disks cover the
    // other ABI and larger rings.) Small rings also put the same scribbles on a larger share of slots.
    await this.front.connect(ringChoice(this.#ctx.params.seed, this.stream, 0, ['x86_64'], 1));
    this.#table = new FamilyTable(diskOf(this.front.features));
    const L = this.front.layout;
    const words = this.front.ring.stride / 4;
    this.#refWord = Array.from({ length: words }, (_, w) => {
      const at = 4 * w;
      const segment = at >= L.seg && (at - L.seg) % 8 === 0 && (at - L.seg) / 8 < 11;
      const indirect = at >= L.indirectGrefs && at < L.indirectGrefs + 32;
      return segment || indirect;
    });
    this.#memory = new Int32Array(this.front.hv.memory.buffer);
  }

  async run(): Promise<void> {
    const ctx = this.#ctx;
    const front = this.front;
    let budgetLeft = true;
    while (!this.abandoned) {
      const epochEnd = (this.#epoch + 1) * ctx.params.epochRequests;
      let filled = false;
      while (budgetLeft && front.free > 0 && this.index < epochEnd) {
        if (!ctx.take()) {
          budgetLeft = false;
          break;
        }
        this.#send();
        filled = true;
      }
      if (filled) front.publish(undefined, (this.index & 7) === 0);
      if (front.outstanding > 0) {
        for (let i = 0; i < ACTIONS_PER_ROUND; i++) this.#act();
        if (!(await front.waitResponses((front.rspCons + Math.ceil(front.outstanding / 2)) >>> 0, ctx.params.deadlineMs))) {
          this.abandoned = true;
          ctx.finding({
            kind: 'hang',
            message: `no answer within ${ctx.params.deadlineMs} ms on the scribbled ring: ${front.outstanding} requests unanswered (req_prod ${front.ring.reqProd}, rsp_prod ${front.ring.rspProd})`,
            guest: ctx.params.guest,
            disk: this.name,
            stream: this.stream,
            index: this.index,
          });
          return;
        }
      }
      this.#consume();
      if (front.outstanding > 0) continue;
      if (this.index < epochEnd && budgetLeft) continue;
      // Drained: put the grant entries back as granted, and let the campaign look at the disk.
      ctx.pools.restoreChaos(ctx.backendDomid);
      this.#epoch++;
      ctx.scan();
      const ok = await ctx.epoch({ type: 'epoch', disk: this.name, devid: front.devid, epoch: this.#epoch, expected: null, halted: false, index: this.index });
      if (!ok) {
        this.abandoned = true;
        ctx.finding({
          kind: 'hang',
          message: `the campaign did not check epoch ${this.#epoch} within ${ctx.params.deadlineMs} ms`,
          guest: ctx.params.guest,
          disk: this.name,
        });
        return;
      }
      this.tally.counterChecks++;
      if (!budgetLeft) return;
    }
  }

  #consume(): void {
    const front = this.front;
    const prod = front.ring.rspProd;
    const beyond = (prod - front.reqProdPvt) | 0;
    if (beyond > 0) {
      this.#ctx.finding({
        kind: 'protocol',
        message: `rsp_prod ${prod} is ${beyond} past req_prod ${front.reqProdPvt}: answers to requests never made`,
        guest: this.#ctx.params.guest,
        disk: this.name,
      });
      front.rspCons = front.reqProdPvt;
      this.abandoned = true;
      return;
    }
    this.tally.answered += (prod - front.rspCons) >>> 0;
    front.rspCons = prod;
  }

  #send(): void {
    const pools = this.#ctx.pools;
    const front = this.front;
    const r = generateRequest(this.#ctx.params.seed, this.stream, this.index, this.#table, this.#req);
    const blk = this.#blk;
    const L = front.layout;
    blk.operation = r.operation;
    blk.nrSegments = r.nrSegments;
    blk.handle = r.handle;
    blk.idLo = r.index >>> 0;
    blk.idHi = 0xc4a05000 | this.#ctx.params.guest;
    blk.sectorNumber = 0;
    blk.discardFlag = r.discardFlag;
    blk.nrSectors = 0;
    blk.indirectOp = r.indirectOp;
    blk.indirectNrSegments = r.indirectNrSegments;
    if (r.operation === OP.INDIRECT) {
      // The page may be in use by another request in flight: that is the point.
      const page = pools.chaosIndirect[r.indirectPagePick % pools.chaosIndirect.length]!;
      const count = Math.min(r.segs, MAX_LIST);
      for (let i = 0; i < count; i++) this.#list[i] = pools.resolve(r.segRef[i] as RefClass, r.segPick[i]!, true);
      encodeIndirectSegments(page.view, count, this.#list, r.segFirst, r.segLast, 0);
      blk.indirectGrefs[0] = r.indirectPageRef === REF.indirect ? page.ref : pools.resolve(r.indirectPageRef, r.indirectPagePick, true);
      for (let i = 1; i < 8; i++) blk.indirectGrefs[i] = pools.safeRef(r.indirectJunk[i - 1]!, i);
    } else {
      const n = Math.min(r.segs, 11);
      for (let i = 0; i < n; i++) {
        blk.segGref[i] = pools.resolve(r.segRef[i] as RefClass, r.segPick[i]!, true);
        blk.segFirst[i] = r.segFirst[i]!;
        blk.segLast[i] = r.segLast[i]!;
      }
    }
    encodeRequest(front.abi, blk, this.#slot);
    const v = this.#slotView;
    if (r.operation <= OP.INDIRECT && r.operation !== OP.RESERVED_1) {
      v.setUint32(L.sectorNumber, r.sectorLo, LE);
      v.setUint32(L.sectorNumber + 4, r.sectorHi, LE);
    }
    if (r.operation === OP.DISCARD) {
      v.setUint32(L.discardNrSectors, r.nrSectorsLo, LE);
      v.setUint32(L.discardNrSectors + 4, r.nrSectorsHi, LE);
    }
    // Fields that are not refs for this operation (a discard's nr_sectors, an indirect request's
    // handle) are refs for another: once a scribble changes the operation, they must be safe too.
    for (let w = 0; w < this.#refWord.length; w++) {
      if (!this.#refWord[w]) continue;
      const value = v.getUint32(4 * w, LE);
      if (!pools.isSafeRef(value)) v.setUint32(4 * w, pools.safeRef(value, w), LE);
    }
    front.put(this.#slot);
    this.tally.requests++;
    this.#ctx.families[r.family]!++;
    this.index++;
  }

  /** Word `w` of slot `slot`, as an index into guest memory's words (ring frames are contiguous). */
  #slotWord(slot: number, w: number): number {
    const front = this.front;
    return front.ringFrame * 1024 + (RING_HEADER_SIZE + (slot & (front.size - 1)) * front.ring.stride) / 4 + w;
  }

  #act(): void {
    const ctx = this.#ctx;
    const pools = ctx.pools;
    const a = generateChaos(ctx.params.seed, this.stream, this.#actions++, this.#action);
    const mem = this.#memory;
    const words = this.#refWord.length;
    ctx.scribbles++;
    switch (a.kind) {
      case CHAOS.slotWords: {
        // Published slots not yet answered are the interesting ones; any slot will do.
        const slot = (this.front.rspCons + (a.target % Math.max(1, this.front.size))) >>> 0;
        for (let i = 0; i < a.count; i++) {
          const w = a.positions[i]! % words;
          const value = this.#refWord[w] ? pools.safeRef(a.values[i]!, a.values[i]! >>> 29) : a.values[i]!;
          Atomics.store(mem, this.#slotWord(slot, w), value | 0);
        }
        return;
      }
      case CHAOS.slotHeader: {
        const L = this.front.layout;
        const slot = (this.front.rspCons + (a.target % Math.max(1, this.front.size))) >>> 0;
        // operation and nr_segments share the first word with the handle (both layouts).
        Atomics.store(mem, this.#slotWord(slot, 0), a.values[0]! | 0);
        const seg = (L.seg + 8 * a.positions[0]!) / 4;
        Atomics.store(mem, this.#slotWord(slot, seg), pools.safeRef(a.value, a.variant) | 0);
        Atomics.store(mem, this.#slotWord(slot, seg + 1), a.values[1]! | 0);
        return;
      }
      case CHAOS.indirectWords: {
        const page = pools.chaosIndirect[a.target % pools.chaosIndirect.length]!;
        const base = page.frame * 1024;
        for (let i = 0; i < a.count; i++) {
          const w = a.positions[i]! % 1024;
          // Even words of a segment list are grant refs; odd ones first_sect, last_sect and padding.
          const value = w % 2 === 0 ? pools.safeRef(a.values[i]!, a.values[i]! >>> 29) : a.values[i]! & 0xffff;
          Atomics.store(mem, base + w, value | 0);
        }
        return;
      }
      case CHAOS.grantFlags:
        pools.scribbleFlags(a.target, a.variant, a.value, ctx.backendDomid);
        return;
      case CHAOS.grantFrame:
        pools.scribbleFrame(a.target, a.variant, a.value);
        return;
      default:
        ctx.storms++;
        for (let i = 0; i < a.variant; i++) this.front.notify();
    }
  }
}
