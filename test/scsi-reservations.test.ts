// SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations with two (or three) I_T nexuses: the
// conflict table, the unit attentions SPC-4 asks for (and none more), PRIN data bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { ScsiDeviceServer } from '../src/scsi/device-server.ts';
import type { ItNexus } from '../src/scsi/types.ts';
import { fakeTask, makeNexus, settle } from './support/scsi-task.ts';
import type { Outcome } from './support/scsi-task.ts';
import { hex, toHex } from './helpers-scsi.ts';

const TUR = [0, 0, 0, 0, 0, 0];
const RESERVE6 = [0x16, 0, 0, 0, 0, 0];
const RELEASE6 = [0x17, 0, 0, 0, 0, 0];
const RESERVE10 = [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const RELEASE10 = [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const MODE_SENSE6 = [0x1a, 0, 0x3f, 0, 255, 0];
const INQUIRY = [0x12, 0, 0, 0, 96, 0];
const REPORT_LUNS = [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
const REQUEST_SENSE = [0x03, 0, 0, 0, 18, 0];
const READ10 = [0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0];
const WRITE10 = [0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0];
const READ_CAPACITY10 = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];

const Type = { WE: 1, EA: 3, WE_RO: 5, EA_RO: 6, WE_AR: 7, EA_AR: 8 } as const;

function prin(sa: number, alloc = 16384): number[] {
  return [0x5e, sa, 0, 0, 0, 0, 0, alloc >>> 8, alloc & 0xff, 0];
}
function proutCdb(sa: number, type: number, paramLength = 24, scope = 0): number[] {
  return [0x5f, sa, (scope << 4) | type, 0, 0, (paramLength >>> 24) & 0xff, (paramLength >>> 16) & 0xff, (paramLength >>> 8) & 0xff, paramLength & 0xff, 0];
}
function proutParams(rk: bigint, sark: bigint, flags = 0): Uint8Array {
  const b = Buffer.alloc(24);
  b.writeBigUInt64BE(rk, 0);
  b.writeBigUInt64BE(sark, 8);
  b[20] = flags;
  return new Uint8Array(b);
}
const SA = { REGISTER: 0, RESERVE: 1, RELEASE: 2, CLEAR: 3, PREEMPT: 4, PREEMPT_AND_ABORT: 5, REGISTER_IGNORE: 6, REGISTER_AND_MOVE: 7 } as const;

function setup(extra: { onPreemptAndAbort?: (lun: number, n: readonly ItNexus[]) => void } = {}) {
  const server = new ScsiDeviceServer({
    luns: new Map([[0, { device: createRamDisk(1 << 20), serial: 'S', deviceId: hex('6001405000000009') }]]),
    targetName: 'iqn.2026-01.test:pr',
    ...extra,
  });
  const i1 = makeNexus('iqn.2026-01.test:one', 0x800000000001);
  const i2 = makeNexus('iqn.2026-01.test:two', 0x800000000002);
  const i3 = makeNexus('iqn.2026-01.test:three', 0x800000000003);
  const run = (nexus: ItNexus, cdb: number[], data?: Uint8Array): Promise<Outcome> =>
    settle(server.execute(fakeTask({ nexus, cdb, ...(data === undefined ? {} : { data }) })));
  const prout = (nexus: ItNexus, sa: number, type: number, rk: bigint, sark: bigint, flags = 0): Promise<Outcome> =>
    run(nexus, proutCdb(sa, type), proutParams(rk, sark, flags));
  const readKeys = async (nexus: ItNexus): Promise<{ gen: number; keys: bigint[] }> => {
    const o = await run(nexus, prin(0));
    assert.equal(o.status, 0);
    const b = Buffer.from(o.data);
    const keys: bigint[] = [];
    for (let p = 8; p < 8 + b.readUInt32BE(4); p += 8) keys.push(b.readBigUInt64BE(p));
    return { gen: b.readUInt32BE(0), keys };
  };
  const readReservation = async (nexus: ItNexus): Promise<{ key: bigint; type: number } | undefined> => {
    const o = await run(nexus, prin(1));
    assert.equal(o.status, 0);
    const b = Buffer.from(o.data);
    if (b.readUInt32BE(4) === 0) return undefined;
    return { key: b.readBigUInt64BE(8), type: (b[21] as number) & 0x0f };
  };
  return { server, i1, i2, i3, run, prout, readKeys, readReservation };
}

const good = (o: Outcome): void => assert.equal(o.status, 0, o.sense === undefined ? `status ${o.status}` : `sense ${toHex(o.sense)}`);
const conflict = (o: Outcome): void => assert.equal(o.status, 0x18, `status ${o.status}, expected RESERVATION CONFLICT`);
function sense(o: Outcome, key: number, asc: number, ascq: number): void {
  assert.equal(o.status, 2, `status ${o.status}`);
  const s = o.sense as Uint8Array;
  assert.deepEqual([(s[2] as number) & 0x0f, s[12], s[13]], [key, asc, ascq], toHex(s));
}
const ua = (o: Outcome, asc: number, ascq: number): void => sense(o, 6, asc, ascq);

// ------------------------------------------------------------------ SPC-2

test('RESERVE(6) by one initiator: the other gets RESERVATION CONFLICT even for MODE SENSE and TUR', async () => {
  const { run, i1, i2 } = setup();
  good(await run(i1, RESERVE6));
  good(await run(i1, RESERVE6));
  conflict(await run(i2, RESERVE6));
  good(await run(i2, RELEASE6)); // a RELEASE from another initiator is a no-op
  good(await run(i1, MODE_SENSE6));
  conflict(await run(i2, MODE_SENSE6));
  for (const cdb of [TUR, READ10, READ_CAPACITY10, prin(0), RESERVE10]) conflict(await run(i2, cdb));
  conflict(await run(i2, WRITE10, new Uint8Array(512)));
  for (const cdb of [INQUIRY, REPORT_LUNS, REQUEST_SENSE]) good(await run(i2, cdb));
  good(await run(i1, READ10));
  good(await run(i1, WRITE10, new Uint8Array(512)));
  good(await run(i1, RELEASE6));
  good(await run(i2, RESERVE10));
  conflict(await run(i1, TUR));
  good(await run(i2, RELEASE10));
  good(await run(i1, TUR));
  // Third-party reservations are not offered.
  sense(await run(i1, [0x56, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]), 5, 0x24, 0);
  sense(await run(i1, [0x16, 0x02, 0, 0, 0, 0]), 5, 0x24, 0);
});

test("SPC-2 reservations end with LUN reset, target resets and the holder's I_T nexus loss", async () => {
  for (const how of ['lun', 'target-warm', 'target-cold', 'loss'] as const) {
    const { server, run, i1, i2 } = setup();
    good(await run(i1, RESERVE6));
    good(await run(i2, TUR).then(() => run(i2, INQUIRY)));
    if (how === 'loss') server.nexusLost(i1);
    else await server.reset(how, how === 'lun' ? 0 : undefined, i1);
    // The other initiator first hears about the reset, then may reserve.
    if (how !== 'loss') ua(await run(i2, TUR), 0x29, how === 'target-cold' ? 0x01 : 0x03);
    good(await run(i2, RESERVE6));
    good(await run(i2, RELEASE6));
  }
});

// ------------------------------------------------------------------ registration

test('PR REGISTER: register, re-register with a wrong key conflicts, unregister; generation counts', async () => {
  const { prout, readKeys, i1, i2 } = setup();
  const g0 = (await readKeys(i1)).gen;
  good(await prout(i1, SA.REGISTER, 0, 0n, 0x1111n));
  assert.deepEqual(await readKeys(i1), { gen: g0 + 1, keys: [0x1111n] });
  conflict(await prout(i1, SA.REGISTER, 0, 0n, 0x1112n));
  conflict(await prout(i2, SA.REGISTER, 0, 0x5n, 0x2222n)); // not registered: RK must be 0
  good(await prout(i2, SA.REGISTER, 0, 0n, 0n)); // not registered, SARK 0: nothing, no generation
  assert.equal((await readKeys(i1)).gen, g0 + 1);
  good(await prout(i1, SA.REGISTER, 0, 0x1111n, 0x1113n)); // change the key
  good(await prout(i2, SA.REGISTER_IGNORE, 0, 0xdeadn, 0x2222n));
  good(await prout(i2, SA.REGISTER_IGNORE, 0, 0n, 0x2223n));
  assert.deepEqual(await readKeys(i2), { gen: g0 + 4, keys: [0x1113n, 0x2223n] });
  good(await prout(i1, SA.REGISTER, 0, 0x1113n, 0n));
  good(await prout(i2, SA.REGISTER_IGNORE, 0, 0n, 0n));
  assert.deepEqual(await readKeys(i1), { gen: g0 + 6, keys: [] });
});

test('PR OUT parameter checks: list length, APTPL, ALL_TG_PT, SPEC_I_PT, scope, type, service action', async () => {
  const { run, prout, i1 } = setup();
  sense(await run(i1, proutCdb(SA.REGISTER, 0, 20), new Uint8Array(20)), 5, 0x1a, 0);
  sense(await run(i1, proutCdb(SA.REGISTER, 0, 0)), 5, 0x1a, 0);
  sense(await run(i1, proutCdb(SA.REGISTER, 0, 28), new Uint8Array(28)), 5, 0x1a, 0);
  sense(await prout(i1, SA.REGISTER, 0, 0n, 1n, 0x01), 5, 0x26, 0);
  sense(await prout(i1, SA.REGISTER, 0, 0n, 1n, 0x04), 5, 0x26, 0);
  sense(await run(i1, proutCdb(SA.REGISTER, 0, 32), Uint8Array.from([...proutParams(0n, 1n, 0x08), ...new Uint8Array(8)])), 5, 0x26, 0);
  good(await prout(i1, SA.REGISTER, 0, 0n, 1n));
  sense(await run(i1, proutCdb(SA.RESERVE, Type.WE, 24, 1), proutParams(1n, 0n)), 5, 0x24, 0);
  sense(await prout(i1, SA.RESERVE, 2, 1n, 0n), 5, 0x24, 0);
  sense(await prout(i1, SA.RESERVE, 4, 1n, 0n), 5, 0x24, 0);
  sense(await prout(i1, SA.REGISTER_AND_MOVE, 0, 1n, 2n), 5, 0x24, 0);
  sense(await run(i1, proutCdb(8, 0), proutParams(1n, 0n)), 5, 0x24, 0);
  good(await prout(i1, SA.REGISTER, 0, 1n, 0n));
});

test('PR IN: service actions 0-3 work, 4-1Fh are INVALID FIELD IN CDB; READ KEYS keeps ADDITIONAL LENGTH when truncated', async () => {
  const { run, prout, i1 } = setup();
  for (let sa = 0; sa < 4; sa++) good(await run(i1, prin(sa)));
  for (let sa = 4; sa < 0x20; sa++) sense(await run(i1, prin(sa)), 5, 0x24, 0);
  good(await prout(i1, SA.REGISTER, 0, 0n, 0xabcdn));
  const t = await run(i1, prin(0, 8));
  assert.equal(t.data.byteLength, 8);
  assert.equal(Buffer.from(t.data).readUInt32BE(4), 8);
  const caps = await run(i1, prin(2));
  assert.equal(toHex(caps.data), toHex(hex('0008 00 80 ea 01 0000')));
});

test('PR READ FULL STATUS: key, holder, scope/type, relative target port, iSCSI TransportID', async () => {
  const { run, prout, i1, i2 } = setup();
  good(await prout(i1, SA.REGISTER, 0, 0n, 0x11n));
  good(await prout(i2, SA.REGISTER, 0, 0n, 0x22n));
  good(await prout(i1, SA.RESERVE, Type.WE_RO, 0x11n, 0n));
  const o = await run(i1, prin(3));
  good(o);
  const name1 = 'iqn.2026-01.test:one,i,0x800000000001';
  // 37 characters + NUL, padded to 40.
  const tid1 = toHex(hex('45 00 0028')) + Buffer.from(name1).toString('hex') + '000000';
  const d1 = toHex(hex('0000000000000011 00000000 01 05 00000000 0001 0000002c')) + tid1;
  assert.equal(toHex(o.data.subarray(8, 8 + 24 + 44)), d1);
  const b = Buffer.from(o.data);
  assert.equal(b.readUInt32BE(4), 2 * (24 + 44));
  assert.equal(b.readBigUInt64BE(8 + 68), 0x22n);
  assert.equal(b[8 + 68 + 12], 0, 'not the holder');
});

// ------------------------------------------------------------------ access by type

const ACCESS: [keyof typeof Type, boolean, boolean, boolean, boolean][] = [
  // type, registered I2 read, registered I2 write, unregistered read, unregistered write (libiscsi's table)
  ['EA', false, false, false, false],
  ['WE', true, false, true, false],
  ['EA_RO', true, true, false, false],
  ['WE_RO', true, true, true, false],
  ['EA_AR', true, true, false, false],
  ['WE_AR', true, true, true, false],
];

for (const [name, regRead, regWrite, unregRead, unregWrite] of ACCESS) {
  test(`PR access under ${name}: holder reads and writes; the other per SPC-4 table`, async () => {
    const { run, prout, readReservation, i1, i2 } = setup();
    const type = Type[name];
    good(await prout(i1, SA.REGISTER_IGNORE, 0, 0n, 0xa1n));
    good(await prout(i2, SA.REGISTER_IGNORE, 0, 0n, 0xb2n));
    good(await prout(i1, SA.RESERVE, type, 0xa1n, 0n));
    const allRegistrants = type === Type.WE_AR || type === Type.EA_AR;
    assert.deepEqual(await readReservation(i1), { key: allRegistrants ? 0n : 0xa1n, type });
    good(await run(i1, READ10));
    good(await run(i1, WRITE10, new Uint8Array(512)));
    const check = async (read: boolean, write: boolean): Promise<void> => {
      (read ? good : conflict)(await run(i2, READ10));
      (write ? good : conflict)(await run(i2, WRITE10, new Uint8Array(512)));
      (read ? good : conflict)(await run(i2, MODE_SENSE6));
      // Always allowed: TUR, READ CAPACITY, INQUIRY, PRIN.
      for (const cdb of [TUR, READ_CAPACITY10, INQUIRY, prin(0)]) good(await run(i2, cdb));
    };
    await check(regRead, regWrite);
    good(await prout(i2, SA.REGISTER, 0, 0xb2n, 0n));
    await check(unregRead, unregWrite);
    // Reserving over someone else's reservation conflicts; SPC-2 RESERVE conflicts while PR is in use.
    good(await prout(i2, SA.REGISTER, 0, 0n, 0xb3n));
    // Under an all-registrants reservation every registrant holds it: its RESERVE of the same type is GOOD.
    (allRegistrants ? good : conflict)(await prout(i2, SA.RESERVE, type, 0xb3n, 0n));
    conflict(await run(i2, RESERVE6));
    conflict(await run(i1, RESERVE6));
    good(await prout(i1, SA.RELEASE, type, 0xa1n, 0n));
    if (type !== Type.WE && type !== Type.EA) ua(await run(i2, TUR), 0x2a, 0x04);
    good(await prout(i1, SA.REGISTER, 0, 0xa1n, 0n));
    good(await prout(i2, SA.REGISTER, 0, 0xb3n, 0n));
  });
}

// ------------------------------------------------------------------ ownership and unit attentions

for (const [name, shared] of [
  ['EA', false],
  ['WE', false],
  ['EA_RO', false],
  ['WE_RO', false],
  ['EA_AR', true],
  ['WE_AR', true],
] as const) {
  test(`PR ownership under ${name}: the holder unregisters; who hears what (SPC-4 §5.14.11.2.3)`, async () => {
    const { run, prout, readReservation, i1, i2 } = setup();
    const type = Type[name];
    good(await prout(i1, SA.REGISTER_IGNORE, 0, 0n, 0x1n));
    good(await prout(i2, SA.REGISTER_IGNORE, 0, 0n, 0x2n));
    good(await prout(i1, SA.RESERVE, type, 0x1n, 0n));
    good(await prout(i1, SA.REGISTER, 0, 0x1n, 0n));
    if (shared) {
      assert.deepEqual(await readReservation(i1), { key: 0n, type });
      good(await prout(i2, SA.RELEASE, type, 0x2n, 0n));
      good(await run(i2, TUR));
    } else {
      // The unregistering nexus gets no unit attention (tgt's failure in libiscsi's Ownership tests).
      assert.equal(await readReservation(i1), undefined);
      const registrantsOnly = type === Type.EA_RO || type === Type.WE_RO;
      if (registrantsOnly) ua(await run(i2, TUR), 0x2a, 0x04);
      good(await run(i2, TUR));
    }
    good(await run(i1, TUR));
    good(await prout(i2, SA.REGISTER, 0, 0x2n, 0n));
  });
}

test('PR RELEASE: by a non-holder is a no-op; wrong type is INVALID RELEASE; RO/AR releases tell the others', async () => {
  const { run, prout, readReservation, i1, i2, i3 } = setup();
  for (const [n, k] of [
    [i1, 1n],
    [i2, 2n],
    [i3, 3n],
  ] as const)
    good(await prout(n, SA.REGISTER, 0, 0n, k));
  good(await prout(i1, SA.RESERVE, Type.WE, 1n, 0n));
  good(await prout(i1, SA.RESERVE, Type.WE, 1n, 0n)); // same type again: GOOD
  conflict(await prout(i1, SA.RESERVE, Type.EA, 1n, 0n));
  good(await prout(i2, SA.RELEASE, Type.WE, 2n, 0n));
  assert.deepEqual(await readReservation(i2), { key: 1n, type: Type.WE });
  conflict(await prout(i2, SA.RELEASE, Type.WE, 9n, 0n)); // wrong key
  sense(await prout(i1, SA.RELEASE, Type.EA, 1n, 0n), 5, 0x26, 0x04);
  good(await prout(i1, SA.RELEASE, Type.WE, 1n, 0n));
  good(await run(i2, TUR)); // WE release: no unit attention
  good(await prout(i1, SA.RESERVE, Type.EA_RO, 1n, 0n));
  good(await prout(i1, SA.RELEASE, Type.EA_RO, 1n, 0n));
  good(await run(i1, TUR));
  ua(await run(i2, TUR), 0x2a, 0x04);
  ua(await run(i3, TUR), 0x2a, 0x04);
  good(await run(i3, TUR));
});

test('PR CLEAR: every registration and the reservation go, others hear RESERVATIONS PREEMPTED', async () => {
  const { run, prout, readKeys, readReservation, i1, i2 } = setup();
  good(await prout(i1, SA.REGISTER, 0, 0n, 1n));
  good(await prout(i2, SA.REGISTER, 0, 0n, 2n));
  good(await prout(i1, SA.RESERVE, Type.EA, 1n, 0n));
  const g = (await readKeys(i1)).gen;
  conflict(await prout(i2, SA.CLEAR, 0, 9n, 0n));
  good(await prout(i2, SA.CLEAR, 0, 2n, 0n));
  assert.deepEqual(await readKeys(i2), { gen: g + 1, keys: [] });
  assert.equal(await readReservation(i2), undefined);
  ua(await run(i1, TUR), 0x2a, 0x03);
  good(await run(i1, TUR));
});

test('PR PREEMPT: removes registrations (REGISTRATIONS PREEMPTED), takes over reservations, conflicts when nothing matches', async () => {
  const aborted: [number, string[]][] = [];
  const { run, prout, readKeys, readReservation, i1, i2, i3 } = setup({ onPreemptAndAbort: (lun, ns) => aborted.push([lun, ns.map((n) => n.key)]) });
  good(await prout(i1, SA.REGISTER, 0, 0n, 1n));
  good(await prout(i2, SA.REGISTER, 0, 0n, 2n));
  const g = (await readKeys(i1)).gen;
  // No reservation: SARK 0 is invalid; an unknown SARK conflicts; SARK 1 removes I1.
  sense(await prout(i2, SA.PREEMPT, Type.EA, 2n, 0n), 5, 0x26, 0);
  conflict(await prout(i2, SA.PREEMPT, Type.EA, 2n, 7n));
  good(await prout(i2, SA.PREEMPT, Type.EA, 2n, 1n));
  assert.deepEqual(await readKeys(i2), { gen: g + 1, keys: [2n] });
  ua(await run(i1, TUR), 0x2a, 0x05);
  // A reservation held by I1 is taken over by I3 with its own type.
  good(await prout(i1, SA.REGISTER, 0, 0n, 1n));
  good(await prout(i1, SA.RESERVE, Type.WE, 1n, 0n));
  good(await prout(i3, SA.REGISTER, 0, 0n, 3n));
  good(await prout(i3, SA.PREEMPT_AND_ABORT, Type.EA_RO, 3n, 1n));
  assert.deepEqual(await readReservation(i3), { key: 3n, type: Type.EA_RO });
  assert.deepEqual(aborted, [[0, [i1.key]]]);
  ua(await run(i1, TUR), 0x2a, 0x05);
  ua(await run(i2, TUR), 0x2a, 0x04); // still registered, the reservation type changed
  conflict(await run(i1, READ10));
  good(await run(i2, READ10));
  // All-registrants: SARK 0 preempts everyone else and the issuer holds the new reservation.
  good(await prout(i3, SA.RELEASE, Type.EA_RO, 3n, 0n));
  good(await run(i2, TUR).then(() => run(i2, TUR)));
  good(await prout(i2, SA.RESERVE, Type.WE_AR, 2n, 0n));
  good(await prout(i3, SA.PREEMPT, Type.EA, 3n, 0n));
  assert.deepEqual(await readReservation(i3), { key: 3n, type: Type.EA });
  assert.deepEqual((await readKeys(i3)).keys, [3n]);
  ua(await run(i2, TUR), 0x2a, 0x05);
});

test('PR state survives LUN reset and nexus loss, not a cold reset (no APTPL)', async () => {
  const { server, run, prout, readKeys, readReservation, i1, i2 } = setup();
  good(await prout(i1, SA.REGISTER, 0, 0n, 1n));
  good(await prout(i1, SA.RESERVE, Type.EA, 1n, 0n));
  await server.reset('lun', 0, i2);
  ua(await run(i1, TUR), 0x29, 0x03);
  ua(await run(i2, TUR), 0x29, 0x03);
  server.nexusLost(i1);
  assert.deepEqual(await readReservation(i2), { key: 1n, type: Type.EA });
  conflict(await run(i2, READ10));
  await server.reset('target-cold', undefined, i2);
  ua(await run(i2, TUR), 0x29, 0x01);
  assert.deepEqual((await readKeys(i2)).keys, []);
  assert.equal(await readReservation(i2), undefined);
});

test('a registration bound: INSUFFICIENT REGISTRATION RESOURCES past maxRegistrations', async () => {
  const server = new ScsiDeviceServer({
    luns: new Map([[0, { device: createRamDisk(1 << 20), serial: 'S', deviceId: hex('6001405000000009') }]]),
    targetName: 'iqn.2026-01.test:pr',
    maxRegistrations: 2,
  });
  const reg = (n: ItNexus): Promise<Outcome> => settle(server.execute(fakeTask({ nexus: n, cdb: proutCdb(0, 0), data: proutParams(0n, 5n) })));
  good(await reg(makeNexus('a', 1)));
  good(await reg(makeNexus('b', 2)));
  sense(await reg(makeNexus('c', 3)), 5, 0x55, 0x04);
});
