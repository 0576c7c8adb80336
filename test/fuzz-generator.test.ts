// The fuzz campaign's request generator (src/fuzz/generator.ts): the same seed gives the same
// requests, whatever order they are asked for in; another seed gives others; every family a disk
// allows comes up; and each request breaks exactly the rule its owed answer says, judged by a naive
// validator written here from blkif.h's rules rather than from the generator or the backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { BLKIF_RSP } from '../src/blkif/constants.ts';
import { ERROR_KINDS } from '../src/blkback/stats.ts';
import { hostileDisk, hostileStream } from '../src/fuzz/campaign.ts';
import { HOSTILE_DISKS } from '../src/fuzz/findings.ts';
import { CHAOS, ChaosAction, generateChaos } from '../src/fuzz/chaos.ts';
import { FAMILIES, FamilyTable, FuzzRequest, generateRequest, REF } from '../src/fuzz/generator.ts';
import type { FuzzDisk } from '../src/fuzz/generator.ts';

const N = 20_000;

/** Every field a request carries, as numbers. */
function fingerprint(r: FuzzRequest): Uint32Array {
  const head = [
    r.family,
    r.operation,
    r.nrSegments,
    r.handle,
    r.sectorLo,
    r.sectorHi,
    r.segs,
    r.discardFlag,
    r.nrSectorsLo,
    r.nrSectorsHi,
    r.indirectOp,
    r.indirectNrSegments,
    r.indirectPageRef,
    r.indirectPagePick,
    ...r.indirectJunk,
    r.expectStatus & 0xffff,
    r.expectOp,
    ['none', ...ERROR_KINDS].indexOf(r.expectKind ?? 'none'),
  ];
  const out = new Uint32Array(head.length + 4 * r.segs);
  out.set(head);
  for (let i = 0; i < r.segs; i++) out.set([r.segRef[i]!, r.segPick[i]!, r.segFirst[i]!, r.segLast[i]!], head.length + 4 * i);
  return out;
}

const HASHED = 5000;

function sequenceHash(seed: number, stream: number, disk: FuzzDisk, order: 'forward' | 'backward'): string {
  const table = new FamilyTable(disk);
  const prints = new Array<Uint32Array>(HASHED);
  const r = new FuzzRequest();
  for (let k = 0; k < HASHED; k++) {
    const i = order === 'forward' ? k : HASHED - 1 - k;
    prints[i] = fingerprint(generateRequest(seed, stream, i, table, r));
  }
  const hash = createHash('sha256');
  for (const p of prints) hash.update(p);
  return hash.digest('hex');
}

function chaosPrint(a: ChaosAction): string {
  return JSON.stringify([a.kind, a.target, a.variant, a.value, a.count, [...a.positions.subarray(0, a.count)], [...a.values.subarray(0, a.count)]]);
}

test('same seed, same requests, in any order; another seed or stream, other requests', () => {
  for (const name of HOSTILE_DISKS) {
    const disk = hostileDisk(name);
    const stream = hostileStream(0, name);
    const a = sequenceHash(42, stream, disk, 'forward');
    assert.equal(sequenceHash(42, stream, disk, 'backward'), a, `${name}: request i depends only on (seed, stream, i)`);
    assert.notEqual(sequenceHash(43, stream, disk, 'forward'), a, `${name}: another seed`);
    assert.notEqual(sequenceHash(42, hostileStream(1, name), disk, 'forward'), a, `${name}: another guest's stream`);
  }
  const x = new ChaosAction();
  const once = Array.from({ length: 1000 }, (_, i) => chaosPrint(generateChaos(5, 3, i, x)));
  const again = Array.from({ length: 1000 }, (_, i) => chaosPrint(generateChaos(5, 3, 999 - i, x))).reverse();
  assert.deepEqual(again, once, 'chaos actions are pure too');
  const kinds = new Set(Array.from({ length: 1000 }, (_, i) => generateChaos(5, 3, i, x).kind));
  assert.deepEqual([...kinds].sort(), Object.values(CHAOS).sort(), 'every kind of chaos action comes up');
});

interface Violation {
  readonly kind: string;
  readonly status: number;
}

const ERR = BLKIF_RSP.ERROR;
const NOTSUPP = BLKIF_RSP.EOPNOTSUPP;

/**
 * The rules of blkif.h and Linux's blkback, from scratch: every rule the request breaks (one entry
 * per rule, whatever the backend would check first).
 */
function violations(r: FuzzRequest, d: FuzzDisk): Violation[] {
  const out: Violation[] = [];
  const add = (kind: string, status: number = ERR): void => {
    if (!out.some((v) => v.kind === kind)) out.push({ kind, status });
  };
  const spb = d.sectorSize / 512;
  const sector = r.sectorHi * 2 ** 32 + r.sectorLo;
  const checkSegments = (n: number, reads: boolean): number => {
    let total = 0;
    for (let i = 0; i < n; i++) {
      const first = r.segFirst[i]!;
      const last = r.segLast[i]!;
      if (last > 7 || first > last) add('bad_segments');
      else if (first % spb !== 0 || (last + 1) % spb !== 0) add('misaligned');
      total += last - first + 1;
      const ref = r.segRef[i]!;
      if (ref === REF.readOnly ? reads : ref !== REF.data) add('bad_grant');
    }
    return total;
  };
  const checkRange = (count: number): void => {
    if (sector + count > d.sectors) add('bad_range');
    else if (sector % spb !== 0 || count % spb !== 0) add('misaligned');
  };
  switch (r.operation) {
    case 0: // READ
    case 1: {
      // WRITE
      if (r.operation === 1 && d.readOnly) add('read_only');
      if (r.nrSegments < 1 || r.nrSegments > 11) add('bad_segments');
      checkRange(checkSegments(Math.min(r.nrSegments, 11), r.operation === 0));
      break;
    }
    case 2: // WRITE_BARRIER
    case 3: // FLUSH_DISKCACHE
      if (r.nrSegments > 11) add('bad_segments');
      if (r.nrSegments > 0) {
        if (d.readOnly) add('read_only');
        checkRange(checkSegments(Math.min(r.nrSegments, 11), false));
      }
      break;
    case 5: // DISCARD
      if (!d.discard) add('bad_op', NOTSUPP);
      else {
        if ((r.discardFlag & 1) !== 0) add('bad_op', NOTSUPP);
        checkRange(r.nrSectorsHi * 2 ** 32 + r.nrSectorsLo);
      }
      break;
    case 6: {
      // INDIRECT
      if (d.maxIndirect === 0) {
        add('bad_op', NOTSUPP);
        break;
      }
      if (r.indirectOp !== 0 && r.indirectOp !== 1) {
        add('bad_op');
        break;
      }
      if (r.indirectOp === 1 && d.readOnly) add('read_only');
      const n = r.indirectNrSegments;
      if (n < 1 || n > d.maxIndirect) add('bad_segments');
      if (r.indirectPageRef !== REF.indirect) add('bad_grant');
      if (n >= 1 && n <= d.maxIndirect) checkRange(checkSegments(n, r.indirectOp === 0));
      break;
    }
    default:
      add('bad_op', NOTSUPP);
  }
  return out;
}

test('each request breaks no rule or exactly one, and is owed the answer for it', () => {
  for (const name of HOSTILE_DISKS) {
    const disk = hostileDisk(name);
    const table = new FamilyTable(disk);
    const r = new FuzzRequest();
    const seen = new Map<number, number>();
    let faulty = 0;
    for (let i = 0; i < N; i++) {
      generateRequest(9, hostileStream(2, name), i, table, r);
      seen.set(r.family, (seen.get(r.family) ?? 0) + 1);
      const v = violations(r, disk);
      const family = FAMILIES[r.family]!.name;
      const echoed = r.operation === 6 ? r.indirectOp : r.operation;
      assert.equal(r.expectOp, echoed & 0xff, `${name} #${i} (${family}): the operation echoed`);
      if (r.expectStatus === BLKIF_RSP.OKAY) {
        assert.deepEqual(v, [], `${name} #${i} (${family}) is owed OKAY but breaks a rule`);
        assert.equal(r.expectKind, null);
      } else {
        faulty++;
        assert.equal(v.length, 1, `${name} #${i} (${family}) must break exactly one rule: ${JSON.stringify(v)}`);
        assert.equal(r.expectKind, v[0]!.kind, `${name} #${i} (${family}): counted as`);
        assert.equal(r.expectStatus, v[0]!.status, `${name} #${i} (${family}): status`);
      }
    }
    const applicable = FAMILIES.map((f, id) => ({ f, id })).filter(({ f }) => f.applies(table.disk));
    for (const { f, id } of applicable) assert.ok((seen.get(id) ?? 0) > 0, `${name}: family '${f.name}' came up`);
    for (const id of seen.keys()) assert.ok(FAMILIES[id]!.applies(table.disk), `${name}: only families the disk allows`);
    assert.ok(faulty > N / 5 && faulty < N - N / 5, `${name}: a mix of valid and malformed (${faulty} of ${N} malformed)`);
  }
});
