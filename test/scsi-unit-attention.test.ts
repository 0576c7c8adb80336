// Unit attention lifecycle: established by resets, capacity changes, mode changes, I_T nexus loss;
// reported once, on any command but INQUIRY, REPORT LUNS and REQUEST SENSE (which returns it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRamDisk } from '../src/block/ram.ts';
import { ScsiDeviceServer } from '../src/scsi/device-server.ts';
import type { ItNexus } from '../src/scsi/types.ts';
import { fakeTask, makeNexus, settle } from './support/scsi-task.ts';
import type { Outcome } from './support/scsi-task.ts';
import { hex, toHex } from './helpers-scsi.ts';

const TUR = [0, 0, 0, 0, 0, 0];
const INQUIRY = [0x12, 0, 0, 0, 96, 0];
const REPORT_LUNS = [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
const READ_CAPACITY10 = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];

function setup() {
  const ram0 = createRamDisk(1 << 20);
  const server = new ScsiDeviceServer({
    luns: new Map([
      [0, { device: ram0, serial: 'A', deviceId: hex('6001405000000001') }],
      [1, { device: createRamDisk(1 << 20), serial: 'B', deviceId: hex('6001405000000002') }],
    ]),
    targetName: 'iqn.2026-01.test:ua',
  });
  const i1 = makeNexus('iqn.2026-01.test:one', 1);
  const i2 = makeNexus('iqn.2026-01.test:two', 2);
  const run = (nexus: ItNexus, cdb: number[], lun = 0, data?: Uint8Array): Promise<Outcome> =>
    settle(server.execute(fakeTask({ nexus, lun, cdb, ...(data === undefined ? {} : { data }) })));
  return { server, ram0, i1, i2, run };
}

const good = (o: Outcome): void => assert.equal(o.status, 0, o.sense === undefined ? `status ${o.status}` : toHex(o.sense));
function ua(o: Outcome, asc: number, ascq: number): void {
  assert.equal(o.status, 2, `status ${o.status}`);
  const s = o.sense as Uint8Array;
  if (s[0] === 0x72) assert.deepEqual([s[1], s[2], s[3]], [6, asc, ascq], toHex(s));
  else assert.deepEqual([s[2], s[12], s[13]], [6, asc, ascq], toHex(s));
}

test('LUN RESET: every I_T nexus, the issuer too, hears 29h/03h once; INQUIRY and REPORT LUNS pass it by', async () => {
  const { server, i1, i2, run } = setup();
  good(await run(i1, TUR));
  good(await run(i2, TUR, 1));
  await server.reset('lun', 0, i1);
  good(await run(i1, INQUIRY));
  good(await run(i1, REPORT_LUNS));
  ua(await run(i1, TUR), 0x29, 0x03);
  good(await run(i1, TUR));
  // I2 never spoke to LUN 0, but the device server knows the nexus.
  ua(await run(i2, READ_CAPACITY10), 0x29, 0x03);
  good(await run(i2, TUR, 1));
});

test('REQUEST SENSE returns a pending unit attention as its data (in the format asked) and clears it', async () => {
  const { server, i1, run } = setup();
  good(await run(i1, TUR));
  await server.reset('lun', 0, i1);
  const rs = await run(i1, [0x03, 1, 0, 0, 252, 0]);
  good(rs);
  assert.equal(toHex(rs.data), toHex(hex('72 06 29 03 000000 00')));
  good(await run(i1, TUR));
  const none = await run(i1, [0x03, 0, 0, 0, 252, 0]);
  assert.deepEqual([none.data[2], none.data[12]], [0, 0]);
});

test('TARGET WARM RESET reaches every LU; COLD RESET reports POWER ON OCCURRED; an unknown opcode still gets the UA first', async () => {
  const { server, i1, run } = setup();
  good(await run(i1, TUR));
  await server.reset('target-warm', undefined, i1);
  ua(await run(i1, [0xc0, 0, 0, 0, 0, 0], 0), 0x29, 0x03);
  ua(await run(i1, TUR, 1), 0x29, 0x03);
  await server.reset('target-cold', undefined, i1);
  ua(await run(i1, TUR, 0), 0x29, 0x01);
  ua(await run(i1, TUR, 1), 0x29, 0x01);
  good(await run(i1, TUR, 1));
});

test('a capacity change is reported as 2Ah/09h to each I_T nexus, once; READ CAPACITY then shows it', async () => {
  const { ram0, i1, i2, run } = setup();
  good(await run(i1, TUR));
  good(await run(i2, TUR));
  await ram0.resize?.(2 << 20);
  good(await run(i1, INQUIRY));
  ua(await run(i1, READ_CAPACITY10), 0x2a, 0x09);
  const rc = await run(i1, READ_CAPACITY10);
  assert.equal(toHex(rc.data), '00000fff00000200');
  ua(await run(i2, TUR), 0x2a, 0x09);
  good(await run(i2, TUR));
  // Blocks past the old end are now addressable.
  good(await run(i2, [0x28, 0, 0, 0, 0x0f, 0xff, 0, 0, 1, 0]));
});

test('MODE SELECT tells the other I_T nexuses MODE PARAMETERS CHANGED; the UA follows the D_SENSE format', async () => {
  const { i1, i2, run } = setup();
  good(await run(i1, TUR));
  good(await run(i2, TUR));
  good(await run(i1, [0x15, 0x10, 0, 0, 16, 0], 0, hex('00000000 0a 0a 04 10 00 00 0000 0000 0000')));
  good(await run(i1, TUR));
  const o = await run(i2, TUR);
  assert.equal(toHex(o.sense as Uint8Array), toHex(hex('72 06 2a 01 000000 00')));
  good(await run(i2, TUR));
  // Selecting the same values again changes nothing: no new unit attention.
  good(await run(i1, [0x15, 0x10, 0, 0, 16, 0], 0, hex('00000000 0a 0a 04 10 00 00 0000 0000 0000')));
  good(await run(i2, TUR));
});

test('I_T nexus loss: the same nexus coming back hears 29h/07h; a new nexus hears nothing', async () => {
  const { server, i1, run } = setup();
  good(await run(i1, TUR));
  server.nexusLost(i1);
  good(await run(makeNexus('iqn.2026-01.test:one', 99), TUR));
  ua(await run(i1, TUR, 1), 0x29, 0x07);
  ua(await run(i1, TUR, 0), 0x29, 0x07);
  good(await run(i1, TUR, 0));
});

test('several conditions queue in order; a reset supersedes what was queued before it', async () => {
  const { server, ram0, i1, i2, run } = setup();
  good(await run(i1, TUR));
  good(await run(i2, TUR));
  good(await run(i2, [0x15, 0x10, 0, 0, 16, 0], 0, hex('00000000 0a 0a 00 10 08 00 0000 0000 0000')));
  await ram0.resize?.(2 << 20);
  good(await run(i1, INQUIRY));
  ua(await run(i1, TUR), 0x2a, 0x01);
  ua(await run(i1, TUR), 0x2a, 0x09);
  good(await run(i1, TUR));
  ua(await run(i2, TUR), 0x2a, 0x09);
  good(await run(i2, [0x15, 0x10, 0, 0, 16, 0], 0, hex('00000000 0a 0a 00 10 00 00 0000 0000 0000')));
  await server.reset('lun', 0, i2);
  ua(await run(i1, TUR), 0x29, 0x03);
  good(await run(i1, TUR));
});
