// Power cuts at random points, many times, through the whole Xen path: a guest races writes (QD 8,
// 4-32 KiB) with FLUSH_DISKCACHE requests through blkfront and blkback onto a volatile-cache disk,
// and the host cuts power once per epoch at a seeded point: when the Nth request reaches the store,
// in the middle of a flush's write-back (holding one of its writes to the base), or while the base
// is flushing at the end of one. After each epoch the host reads the base directly (a file is
// reopened), checks every sector against the guest's records (fixtures/powercut/audit.ts), and
// reopens the store for the next epoch.
//
// Besides the data, the flushes: every flush the store was still working on when the power went
// must reach the guest as BLKIF_RSP_ERROR, and the guest must see exactly the store's answer for
// each flush (the k-th flush issued is the k-th the store receives: blkfront and blkback keep ring
// order). Flushes issued after a cut that dropped data fail too (volatile-cache.ts), which is what
// keeps an OKAY from covering lost writes; the audit would see it otherwise.
//
// Two negative controls run the same campaign through stores that lie: one pretends to flush, one
// answers OKAY to flushes that failed. The checks must catch both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRamDisk } from '../src/block/ram.ts';
import { openFileDisk } from '../src/block/file.ts';
import { createVolatileCache } from '../src/block/volatile-cache.ts';
import type { PowerCutOptions, VolatileCacheDisk } from '../src/block/volatile-cache.ts';
import type { BlockDevice } from '../src/block/types.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { Rng } from '../src/loadgen/pattern.ts';
import { goPath } from './fixtures/powercut/campaign.ts';
import type { CampaignParams, CampaignResult, EpochRecords } from './fixtures/powercut/campaign.ts';
import { addAudit, auditEpoch, emptyAudit } from './fixtures/powercut/audit.ts';
import type { EpochAudit } from './fixtures/powercut/audit.ts';

const CAMPAIGN = new URL('./fixtures/powercut/campaign.js', import.meta.url);
const MiB = 1 << 20;
const SPAN = 4 * MiB;
const GUEST: Omit<CampaignParams, 'seed' | 'epochs'> = { span: SPAN, opsPerEpoch: 96, iodepth: 8, maxBlocks: 8, flushChance: 0.15, maxWaitMs: 20_000 };

type CutKind = 'op' | 'writeback' | 'base-flush' | 'end';
/** How the store answers flushes: honestly, or (negative controls) pretending, or hiding failures. */
type FlushBehaviour = 'honest' | 'pretend' | 'swallow-errors';

interface StoreFlush {
  readonly calledBeforeCut: boolean;
  settled: boolean;
  ok: boolean;
  inFlightAtCut: boolean;
}

/**
 * The store blkback serves: a volatile cache over the base, replaced by a fresh one (a reopen) each
 * epoch, with the epoch's cut armed at a seeded point. A cut always happens at a macrotask boundary
 * (setImmediate), with the request that triggered it held until the power is gone: no completion is
 * then half-delivered, and a flush is either answered or truly still in the store.
 */
class PowerRig {
  readonly store: BlockDevice;
  cache: VolatileCacheDisk;
  readonly #hooked: BlockDevice;
  readonly #behaviour: FlushBehaviour;
  #ops = 0;
  #cutAtOp = 0;
  #plan: Exclude<CutKind, 'end'> = 'op';
  #countdown = 0;
  #state: 'armed' | 'pending' | 'done' = 'armed';
  #cutOptions: PowerCutOptions = {};
  #cutting: Promise<void> = Promise.resolve();
  kind: CutKind = 'end';
  flushes: StoreFlush[] = [];
  /** The cache's lostBytes right after the cut. */
  lostAtCut = 0;

  constructor(base: BlockDevice, behaviour: FlushBehaviour) {
    this.#behaviour = behaviour;
    // The hooked device is an object literal whose methods need this rig, not themselves.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const rig = this;
    this.#hooked = {
      name: base.name,
      get info() {
        return base.info;
      },
      readv: (offset, iov) => base.readv(offset, iov),
      writev: (offset, iov, flags) => (rig.#baseArmed('write') ? rig.#cutDuring(() => base.writev(offset, iov, flags)) : base.writev(offset, iov, flags)),
      flush: () => (rig.#baseArmed('flush') ? rig.#cutDuring(() => base.flush()) : base.flush()),
      discard: (offset, length) => base.discard(offset, length),
      writeZeroes: (offset, length) => base.writeZeroes(offset, length),
      close: () => Promise.resolve(),
    };
    this.cache = createVolatileCache(this.#hooked);
    this.store = {
      name: `powercut:${base.name}`,
      get info() {
        return rig.cache.info;
      },
      readv: (offset, iov) => rig.cache.readv(offset, iov),
      writev: (offset, iov, flags) => {
        rig.#tick();
        return rig.cache.writev(offset, iov, flags);
      },
      flush: () => {
        rig.#tick();
        return rig.#flush();
      },
      discard: (offset, length) => rig.cache.discard(offset, length),
      writeZeroes: (offset, length) => rig.cache.writeZeroes(offset, length),
      close: () => Promise.resolve(),
    };
  }

  /** Reopens the store (a fresh cache over the same base) and arms this epoch's cut. */
  startEpoch(rng: Rng, expectedOps: number): void {
    this.cache = createVolatileCache(this.#hooked);
    this.#ops = 0;
    this.#cutAtOp = 1 + rng.below(Math.floor(expectedOps * 0.75));
    const r = rng.float();
    this.#plan = r < 0.35 ? 'op' : r < 0.8 ? 'writeback' : 'base-flush';
    this.#countdown = rng.below(3);
    this.#cutOptions = rng.float() < 0.5 ? { surviveFraction: 0 } : { surviveFraction: 0.5, seed: rng.next() };
    this.#state = 'armed';
    this.kind = 'end';
    this.flushes = [];
    this.lostAtCut = 0;
  }

  /** After the guest's epoch: cuts now if the armed point never came, and waits until the base is quiet. */
  async finishEpoch(): Promise<void> {
    if (this.#state === 'armed') {
      this.kind = 'end';
      this.#cut();
    }
    await this.#cutting;
  }

  #tick(): void {
    this.#ops++;
    if (this.#plan === 'op' && this.#state === 'armed' && this.#ops === this.#cutAtOp) {
      this.#state = 'pending';
      this.kind = 'op';
      setImmediate(() => this.#cut());
    }
  }

  #baseArmed(op: 'write' | 'flush'): boolean {
    if (this.#state !== 'armed' || this.#ops < this.#cutAtOp) return false;
    if (this.#plan === 'writeback' && op === 'write' && this.#countdown-- === 0) return true;
    return this.#plan === 'base-flush' && op === 'flush';
  }

  /** Holds a base operation of a write-back until the power has gone, then lets it run. */
  #cutDuring<T>(op: () => Promise<T>): Promise<T> {
    this.#state = 'pending';
    this.kind = this.#plan;
    return new Promise<T>((resolve) => {
      setImmediate(() => {
        this.#cut();
        resolve(op());
      });
    });
  }

  #cut(): void {
    for (const f of this.flushes) if (!f.settled) f.inFlightAtCut = true;
    this.#state = 'done';
    this.#cutting = this.cache.powerCut(this.#cutOptions);
    this.lostAtCut = this.cache.lostBytes;
  }

  #flush(): Promise<void> {
    const rec: StoreFlush = { calledBeforeCut: this.#state !== 'done', settled: false, ok: false, inFlightAtCut: false };
    this.flushes.push(rec);
    const done =
      this.#behaviour === 'pretend' ? Promise.resolve() : this.#behaviour === 'swallow-errors' ? this.cache.flush().catch(() => undefined) : this.cache.flush();
    done.then(
      () => {
        rec.settled = true;
        rec.ok = true;
      },
      () => {
        rec.settled = true;
      },
    );
    return done;
  }
}

interface Summary {
  audit: EpochAudit;
  cuts: Record<CutKind, number>;
  flushesOk: number;
  flushesFailed: number;
  inFlightAtCut: number;
  /** Flushes in flight at a cut that were answered OKAY. */
  inFlightAnsweredOk: number;
  /** Flushes issued after a cut that failed. */
  failedAfterCut: number;
  /** Flushes whose answer in the guest is not the store's. */
  mismatched: string[];
  epochsLosingData: number;
  result: CampaignResult;
}

async function runCampaign(
  host: SimHost,
  opts: { name: string; base: BlockDevice; readMedium: () => Promise<Uint8Array>; seed: number; epochs: number; behaviour?: FlushBehaviour },
): Promise<Summary> {
  const rig = new PowerRig(opts.base, opts.behaviour ?? 'honest');
  host.registerStore(opts.name, rig.store);
  const reports: EpochRecords[] = [];
  let wake: (() => void) | null = null;
  const params: CampaignParams = { ...GUEST, seed: opts.seed, epochs: opts.epochs };
  const guest = await host.createGuest(
    { name: opts.name, memoryMiB: 32, disks: [{ target: opts.name, vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
    {
      workload: CAMPAIGN,
      params,
      onReport: (m) => {
        if ((m as { type?: string }).type !== 'epoch') return;
        reports.push(m as EpochRecords);
        wake?.();
      },
    },
  );
  const ended = guest.result.then((r) => {
    throw new Error(`${opts.name}: guest finished early: ${JSON.stringify(r)}`);
  });
  ended.catch(() => undefined);
  const nextReport = async (): Promise<EpochRecords> => {
    while (reports.length === 0) await Promise.race([new Promise<void>((resolve) => (wake = resolve)), ended]);
    wake = null;
    return reports.shift()!;
  };

  const rng = new Rng(opts.seed);
  let prior: Uint32Array = new Uint32Array(SPAN / 512);
  const s: Summary = {
    audit: emptyAudit(),
    cuts: { op: 0, writeback: 0, 'base-flush': 0, end: 0 },
    flushesOk: 0,
    flushesFailed: 0,
    inFlightAtCut: 0,
    inFlightAnsweredOk: 0,
    failedAfterCut: 0,
    mismatched: [],
    epochsLosingData: 0,
    result: { epochs: 0, released: false, writes: 0 },
  };
  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    rig.startEpoch(rng, GUEST.opsPerEpoch);
    await host.xs.write(goPath(guest.domid), String(epoch));
    const records = await nextReport();
    assert.equal(records.epoch, epoch);
    await rig.finishEpoch();
    s.cuts[rig.kind]++;
    if (rig.lostAtCut > 0) s.epochsLosingData++;

    const { audit, now } = auditEpoch(await opts.readMedium(), prior, records, opts.seed);
    prior = now;
    addAudit(s.audit, audit);

    const guestFlushes = records.flushes;
    if (guestFlushes.length !== rig.flushes.length)
      s.mismatched.push(`epoch ${epoch}: guest issued ${guestFlushes.length} flushes, the store saw ${rig.flushes.length}`);
    for (let k = 0; k < Math.min(guestFlushes.length, rig.flushes.length); k++) {
      const atStore = rig.flushes[k]!;
      const inGuest = guestFlushes[k]!;
      if (inGuest.ok !== atStore.ok)
        s.mismatched.push(`epoch ${epoch} flush ${k}: the store answered ${atStore.ok ? 'OK' : 'an error'}, the guest saw ${inGuest.ok ? 'OKAY' : 'ERROR'}`);
      if (atStore.ok) s.flushesOk++;
      else s.flushesFailed++;
      if (atStore.inFlightAtCut) {
        s.inFlightAtCut++;
        if (atStore.ok) s.inFlightAnsweredOk++;
      }
      if (!atStore.calledBeforeCut && !atStore.ok) s.failedAfterCut++;
    }
  }
  await host.xs.write(goPath(guest.domid), String(opts.epochs));
  s.result = (await guest.result) as CampaignResult;
  return s;
}

/** One line of figures for the test's diagnostics. */
function figures(s: Summary): string {
  const a = s.audit;
  return (
    `cuts ${JSON.stringify(s.cuts)}, flushes ok ${s.flushesOk} failed ${s.flushesFailed} (in flight at a cut ${s.inFlightAtCut}, after a lossy cut ${s.failedAfterCut}), ` +
    `sectors flushed ${a.promised} (holding the flushed write ${a.heldPromised}, a later one ${a.heldLater}), unflushed dropped ${a.droppedUnpromised}, ` +
    `lost ${a.lost}, garbage ${a.garbage}, writes ${s.result.writes}`
  );
}

function assertHonest(s: Summary, label: string): void {
  const a = s.audit;
  assert.equal(a.garbage, 0, `${label}: sectors holding bytes nobody wrote:\n${a.problems.join('\n')}`);
  assert.equal(a.lost, 0, `${label}: flushed writes lost in a power cut:\n${a.problems.join('\n')}`);
  assert.deepEqual(s.mismatched.slice(0, 8), [], `${label}: the guest must see each flush's answer as the store gave it`);
  assert.equal(s.inFlightAnsweredOk, 0, `${label}: flushes in flight at a cut answered OKAY`);
  assert.equal(s.result.released, true, `${label}: the guest ran every epoch`);
  // The campaign exercised what it claims to (counts vary with timing; none may be zero).
  assert.ok(a.promised > 0 && a.heldPromised > 0, `${label}: flushed sectors were checked (${a.promised}, ${a.heldPromised} holding the flushed write)`);
  assert.ok(a.droppedUnpromised > 0, `${label}: cuts dropped unflushed writes (the cache was volatile)`);
  assert.ok(s.cuts.writeback > 0 && s.cuts['base-flush'] > 0 && s.cuts.op > 0, `${label}: cuts landed at every kind of point: ${JSON.stringify(s.cuts)}`);
  assert.ok(s.inFlightAtCut > 0, `${label}: some cuts caught a flush in flight`);
  assert.ok(
    s.flushesOk > 0 && s.failedAfterCut > 0,
    `${label}: flushes succeeded (${s.flushesOk}) and, after cuts that lost data, failed (${s.failedAfterCut})`,
  );
  assert.ok(s.epochsLosingData > 0, `${label}: some cuts dropped acknowledged writes`);
}

test('random power cuts through blkback on a RAM disk: flushed writes survive, interrupted flushes fail', async (t) => {
  const host = await SimHost.start();
  try {
    const base = createRamDisk(SPAN, { name: 'pcr-ram' });
    const medium = new Uint8Array(SPAN);
    const s = await runCampaign(host, {
      name: 'pcr-ram',
      base,
      readMedium: async () => {
        await base.readv(0, [medium]);
        return medium;
      },
      seed: 101,
      epochs: 80,
    });
    t.diagnostic(figures(s));
    assertHonest(s, 'ram');
  } finally {
    await host.stop();
  }
});

test('random power cuts through blkback on a file (page cache, fdatasync): the same promises hold', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'blk-pcr-'));
  const file = path.join(dir, 'disk.img');
  const host = await SimHost.start();
  try {
    await writeFile(file, '');
    await truncate(file, SPAN);
    const base = await openFileDisk(file);
    try {
      const s = await runCampaign(host, {
        name: 'pcr-file',
        base,
        // The medium as a fresh opener sees it.
        readMedium: async () => {
          const again = await openFileDisk(file, { readOnly: true });
          try {
            const medium = new Uint8Array(SPAN);
            await again.readv(0, [medium]);
            return medium;
          } finally {
            await again.close();
          }
        },
        seed: 202,
        epochs: 30,
      });
      t.diagnostic(figures(s));
      assertHonest(s, 'file');
    } finally {
      await base.close();
    }
  } finally {
    await host.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('negative controls: a store that pretends to flush, or hides failed flushes, is caught', async (t) => {
  const host = await SimHost.start();
  try {
    const run = async (name: string, behaviour: FlushBehaviour, seed: number): Promise<Summary> => {
      const base = createRamDisk(SPAN, { name });
      const medium = new Uint8Array(SPAN);
      return runCampaign(host, {
        name,
        base,
        readMedium: async () => {
          await base.readv(0, [medium]);
          return medium;
        },
        seed,
        epochs: 12,
        behaviour,
      });
    };
    const pretend = await run('pcr-pretend', 'pretend', 303);
    t.diagnostic(`pretend: ${figures(pretend)}`);
    assert.equal(pretend.audit.garbage, 0);
    assert.ok(pretend.audit.lost > 0, `the audit caught flushed writes lost by a flush that did nothing (${pretend.audit.lost} sectors)`);

    const swallow = await run('pcr-swallow', 'swallow-errors', 404);
    t.diagnostic(`swallow-errors: ${figures(swallow)}, in flight at a cut answered OKAY ${swallow.inFlightAnsweredOk}`);
    assert.equal(swallow.audit.garbage, 0);
    assert.ok(swallow.inFlightAnsweredOk > 0, `OKAY for flushes in flight at the cut was caught (${swallow.inFlightAnsweredOk})`);
    assert.ok(swallow.audit.lost > 0, `the audit caught an OKAY flush covering writes the cut had dropped (${swallow.audit.lost} sectors)`);
  } finally {
    await host.stop();
  }
});
