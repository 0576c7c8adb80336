// At a high queue depth the initiator holds new commands back while the target still has at least
// 16 of ours and more than are waiting (src/iscsi-initiator/session.ts, HOLD_MIN_AT_TARGET): they
// leave in one write of about half the depth instead of one write per socket read. Below that depth,
// and for anything the target waits for (NOP answers), nothing waits; a target that sits on its
// commands does not keep the held ones for more than 10 ms. Large transfers wait only while the waiting
// ones move less than 128 KiB (HOLD_MAX_BYTES): a batch of 16 64 KiB reads made tgt's answers stall on
// a full socket.
//
// The target here is a fake in this process behind the device's `connect` hook: it logs the
// initiator in (the shared negotiator), answers READs only when the test says so, and records each
// write the initiator makes. Its PDUs are laid out by hand at the RFC's offsets, not by the codec.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openIscsiDevice } from '../src/iscsi-initiator/device.ts';
import type { IscsiBlockDevice } from '../src/iscsi-initiator/device.ts';
import type { InitiatorSession, SessionTransport } from '../src/iscsi-initiator/session.ts';
import type { TcpConnection } from '../src/iscsi-initiator/transport.ts';
import { PduReader } from '../src/iscsi/pdu-reader.ts';
import type { PduSink } from '../src/iscsi/pdu-reader.ts';
import { TargetNegotiator, defaultOffer } from '../src/iscsi/negotiation.ts';
import { decodeText, encodeText } from '../src/iscsi/text.ts';

const BLOCK = 512;
const LUN_BLOCKS = 1 << 16;
const READ_CAPACITY_16 = 0x9e;

interface Command {
  readonly itt: number;
  readonly op: number;
  readonly edtl: number;
}

/** What the initiator handed the transport in one write: its SCSI commands and other PDUs, by opcode. */
interface Write {
  readonly commands: number;
  readonly opcodes: number[];
}

class FakeTarget implements PduSink {
  session: InitiatorSession | undefined;
  /** Answer every command at once (during the device's start), or only when told to. */
  auto = true;
  readonly writes: Write[] = [];
  readonly pending: Command[] = [];
  #statSN = 1;
  #expCmdSN = 1;
  #current: Write | undefined;
  readonly #reader = new PduReader(this);
  readonly #negotiator = new TargetNegotiator({ ...defaultOffer({ digest: 'none' }), authMethods: ['None'] });

  constructor() {
    this.#reader.maxDataSegmentLength = 1 << 20;
  }

  readonly transport: SessionTransport = {
    write: (chunks, done) => {
      this.#current = { commands: 0, opcodes: [] };
      this.writes.push(this.#current);
      for (const c of chunks) this.#reader.push(c);
      this.#current = undefined;
      process.nextTick(done);
    },
    destroy: () => this.session?.closed('closed'),
  };

  connect = (): Promise<TcpConnection> =>
    Promise.resolve({
      transport: this.transport,
      attach: (s: InitiatorSession) => {
        this.session = s;
      },
    });

  /** SCSI commands the initiator has written since the write with index `from`. */
  commandsSince(from: number): number {
    return this.writes.slice(from).reduce((n, w) => n + w.commands, 0);
  }

  dataBuffer(): undefined {
    return undefined;
  }

  onDataDigestError(): void {
    throw new Error('no digests here');
  }

  onFramingError(_kind: string, message: string): void {
    throw new Error(message);
  }

  onPdu(h: Uint8Array, _ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    const b = Buffer.from(h);
    const opcode = b[0]! & 0x3f;
    this.#current?.opcodes.push(opcode);
    if (opcode === 0x03) return this.#login(b, data === null ? Buffer.alloc(0) : Buffer.from(data.subarray(0, length)));
    if (opcode === 0x01) {
      if (this.#current !== undefined) (this.#current as { commands: number }).commands++;
      if (b.readUInt32BE(24) === this.#expCmdSN) this.#expCmdSN = (this.#expCmdSN + 1) >>> 0;
      this.pending.push({ itt: b.readUInt32BE(16), op: b[32]!, edtl: b.readUInt32BE(20) });
      if (this.auto) this.answer(this.pending.length);
      return;
    }
    if (opcode === 0x06) return this.#send(this.#bhs(0x26, 0x80, b.readUInt32BE(16), true), null);
  }

  /** Answers the `n` oldest commands, each in a socket read of its own (a macrotask apart). */
  answer(n: number): void {
    for (const c of this.pending.splice(0, n)) {
      if (c.op === READ_CAPACITY_16) {
        const cap = Buffer.alloc(32);
        cap.writeUInt32BE(LUN_BLOCKS - 1, 4);
        cap.writeUInt32BE(BLOCK, 8);
        this.#dataIn(c.itt, cap.subarray(0, Math.min(32, c.edtl)));
      } else if (c.edtl > 0) this.#dataIn(c.itt, Buffer.alloc(c.edtl));
      else this.#send(this.#bhs(0x21, 0x80, c.itt, true), null); // SCSI Response, GOOD
    }
  }

  /** A NOP-In asking for an answer (target transfer tag 7), as a target's ping. */
  ping(): void {
    const h = this.#bhs(0x20, 0x80, 0xffffffff, false);
    h.writeUInt32BE(7, 20);
    this.#send(h, null);
  }

  #dataIn(itt: number, data: Buffer): void {
    const h = this.#bhs(0x25, 0x81, itt, true); // F and S: the status is in this PDU
    h.writeUInt32BE(0xffffffff, 20);
    this.#send(h, data);
  }

  #login(h: Buffer, text: Buffer): void {
    const f = h[1]!;
    const decoded = decodeText(text);
    if (!decoded.ok) throw new Error(decoded.error.message);
    const step = this.#negotiator.receiveLogin({ csg: (f >> 2) & 3, nsg: f & 3, transit: (f & 0x80) !== 0 }, decoded.pairs);
    if (!step.ok) throw new Error(step.reason);
    const o = this.#bhs(0x23, (step.transit ? 0x80 : 0) | (step.csg << 2) | step.nsg, h.readUInt32BE(16), true);
    h.copy(o, 8, 8, 14); // ISID
    if (step.complete) o.writeUInt16BE(1, 14); // TSIH
    this.#send(o, encodeText(step.answers));
  }

  #bhs(opcode: number, flags: number, itt: number, statSN: boolean): Buffer {
    const o = Buffer.alloc(48);
    o[0] = opcode;
    o[1] = flags;
    o.writeUInt32BE(itt, 16);
    if (statSN) o.writeUInt32BE(this.#statSN++, 24);
    o.writeUInt32BE(this.#expCmdSN, 28);
    o.writeUInt32BE((this.#expCmdSN + 255) >>> 0, 32); // MaxCmdSN: a window of 256
    return o;
  }

  #send(h: Buffer, data: Buffer | null): void {
    const n = data === null ? 0 : data.length;
    h[5] = n >>> 16;
    h[6] = n >>> 8;
    h[7] = n;
    const pdu = Buffer.concat([h, data ?? Buffer.alloc(0), Buffer.alloc((4 - (n % 4)) % 4)]);
    setImmediate(() => this.session?.receive(pdu));
  }
}

/** holdMaxMs: the default (10 ms) where the test is about it, else a minute, so a slow machine sees the rule alone. */
async function openFake(fake: FakeTarget, holdMaxMs = 60_000): Promise<IscsiBlockDevice> {
  return openIscsiDevice(
    {
      kind: 'iscsi',
      host: 'fake',
      port: 3260,
      user: undefined,
      targetName: 'iqn.2026-12.org.blkback:fake',
      lun: 1,
      secretFile: undefined,
      digest: false,
      initiatorName: undefined,
      reconnectTimeoutMs: 1000,
    },
    { connect: fake.connect, readOnly: true, holdMaxMs },
  );
}

const turns = (n = 3): Promise<void> =>
  new Promise((r) => {
    let left = n;
    const next = (): void => (--left <= 0 ? r() : void setImmediate(next));
    setImmediate(next);
  });

/** `depth` readers that each read again as soon as a read completes, until stopped. */
function keepReading(device: IscsiBlockDevice, depth: number, size = 4096): { stop(): void; done: Promise<void> } {
  let stopped = false;
  let next = 0;
  const worker = async (): Promise<void> => {
    const iov = [new Uint8Array(size)];
    while (!stopped) {
      const at = next;
      next = (next + size) % (LUN_BLOCKS * BLOCK);
      await device.readv(at, iov);
    }
  };
  const done = Promise.all(Array.from({ length: depth }, worker)).then(() => undefined);
  done.catch(() => undefined); // a failed test closes the device under the readers: not a second failure
  return { stop: () => (stopped = true), done };
}

async function drain(fake: FakeTarget, run: { stop(): void; done: Promise<void> }): Promise<void> {
  run.stop();
  fake.auto = true; // commands still held here are answered when they arrive
  fake.answer(fake.pending.length);
  await run.done;
}

/** Runs `body` on a device logged in to a fake target that answers only when told (fake.auto off). */
async function withHeldTarget(body: (fake: FakeTarget, device: IscsiBlockDevice) => Promise<void>, holdMaxMs?: number): Promise<void> {
  const fake = new FakeTarget();
  const device = await openFake(fake, holdMaxMs);
  try {
    fake.auto = false;
    await body(fake, device);
  } finally {
    await device.close();
  }
}

test('QD 32: new commands wait until the target has no more of ours than are waiting, then leave in one write', () =>
  withHeldTarget(async (fake, device) => {
    const run = keepReading(device, 32);
    await turns();
    assert.equal(fake.pending.length, 32, 'the first 32 reads go out at once: the target had nothing');
    // each answer in a read of its own: its completion makes a new command, which waits
    const before = fake.writes.length;
    for (let i = 1; i <= 15; i++) {
      fake.answer(1);
      await turns();
      assert.equal(fake.commandsSince(before), 0, `after ${i} answers the target still has ${32 - i} commands: nothing written`);
    }
    fake.answer(1);
    await turns();
    // the target has 16 left and 16 wait here: they leave together
    assert.equal(fake.writes.length - before, 1, 'one write');
    assert.equal(fake.commandsSince(before), 16, 'with 16 commands');
    assert.equal(fake.pending.length, 32);
    await drain(fake, run);
  }));

test('QD 32 of 64 KiB reads: commands wait only until 128 KiB of transfers wait, so answers never come in megabyte bursts', () =>
  withHeldTarget(async (fake, device) => {
    const run = keepReading(device, 32, 65536);
    await turns();
    assert.equal(fake.pending.length, 32);
    for (let i = 1; i <= 6; i += 2) {
      const before = fake.writes.length;
      fake.answer(1);
      await turns();
      assert.equal(fake.commandsSince(before), 0, `answer ${i}: one 64 KiB read waits`);
      fake.answer(1);
      await turns();
      assert.equal(fake.writes.length - before, 1, `answer ${i + 1}: one write`);
      assert.equal(fake.commandsSince(before), 2, `answer ${i + 1}: the two waiting reads (128 KiB) leave together`);
    }
    await drain(fake, run);
  }));

test('below a depth of 16 every command is written as soon as it is made', () =>
  withHeldTarget(async (fake, device) => {
    const run = keepReading(device, 15);
    await turns();
    assert.equal(fake.pending.length, 15);
    for (let i = 0; i < 5; i++) {
      const before = fake.writes.length;
      fake.answer(1);
      await turns();
      assert.equal(fake.commandsSince(before), 1, `answer ${i + 1}: its new command was written at once`);
    }
    await drain(fake, run);
  }));

test('a target sitting on its commands: a held command still leaves within about 10 ms', () =>
  withHeldTarget(async (fake, device) => {
    const run = keepReading(device, 32);
    await turns();
    const before = fake.writes.length;
    fake.answer(1);
    await turns();
    assert.equal(fake.commandsSince(before), 0, 'held: the target has 31 commands');
    const t0 = Date.now();
    while (fake.commandsSince(before) === 0 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 2));
    assert.equal(fake.commandsSince(before), 1, 'the held command was written without any further answer');
    assert.ok(Date.now() - t0 < 1000, `it took ${Date.now() - t0} ms`);
    await drain(fake, run);
  }, 10));

test('a ping from the target is answered at once, and held commands go with the answer', () =>
  withHeldTarget(async (fake, device) => {
    const run = keepReading(device, 32);
    await turns();
    const before = fake.writes.length;
    fake.answer(2);
    await turns();
    assert.equal(fake.commandsSince(before), 0, 'held');
    fake.ping();
    await turns();
    const after = fake.writes.slice(before);
    assert.equal(after.length, 1, 'one write');
    assert.ok(after[0]!.opcodes.includes(0x00), 'with the NOP-Out answer');
    assert.equal(after[0]!.commands, 2, 'and the two held commands');
    await drain(fake, run);
  }));
