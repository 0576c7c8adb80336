// The initiator's receive low-water mark (src/iscsi-initiator/transport.ts, LowWaterMark): raised
// only while a deep queue of large reads waits for its data (a quarter of it, one read buffer at
// most); 1 byte otherwise; and a watchdog brings it down when the data does not come (a target
// answering a read short), so the bytes that did come are read, not left in the socket.
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { connectTcp } from '../src/iscsi-initiator/transport.ts';
import type { TcpConnection } from '../src/iscsi-initiator/transport.ts';
import type { InitiatorSession } from '../src/iscsi-initiator/session.ts';

const PDU = 48 + 65536;

interface Rig {
  readonly tcp: TcpConnection;
  readonly server: net.Socket;
  /** What the fake session says: Data-In still due, the last Data-In PDU's wire size. */
  readonly state: { dataInDue: number; lastDataInPdu: number };
  /** Resolves once `total` bytes have reached the session. */
  received(total: number): Promise<void>;
  /** The mark as it stood when each read reached the session (before the transport set it again). */
  readonly marks: number[];
}

async function rig(t: TestContext): Promise<Rig> {
  let serverSide: net.Socket | undefined;
  const listener = net.createServer((s) => (serverSide = s));
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const tcp = await connectTcp('127.0.0.1', (listener.address() as net.AddressInfo).port, 5000, 'test');
  const state = { dataInDue: 0, lastDataInPdu: 0 };
  let total = 0;
  const marks: number[] = [];
  let connection: TcpConnection | undefined;
  const waiters: { total: number; resolve: () => void }[] = [];
  const fakeSession = {
    reader: { bytesIn: 0, pdusIn: 0, buffered: 0 },
    get dataInDue() {
      return state.dataInDue;
    },
    get lastDataInPdu() {
      return state.lastDataInPdu;
    },
    receive(_buf: Uint8Array, length: number) {
      marks.push(connection?.receiveLowWater?.() ?? 1);
      total += length;
      for (const w of waiters.splice(0))
        if (total >= w.total) w.resolve();
        else waiters.push(w);
    },
    closed() {},
  } as unknown as InitiatorSession;
  connection = tcp;
  tcp.attach(fakeSession);
  while (serverSide === undefined) await new Promise((r) => setTimeout(r, 5));
  const server = serverSide;
  t.after(() => {
    tcp.transport.destroy();
    server.destroy();
    listener.close();
  });
  return {
    tcp,
    server,
    state,
    marks,
    received: (want) => (total >= want ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ total: want, resolve }))),
  };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

/** The read buffer (READ_BUFFER_BYTES): the highest the mark goes. */
const BUFFER = 256 * 1024;

test('the mark is a quarter of the data due with a deep queue of large PDUs, and 1 byte otherwise', async (t) => {
  const r = await rig(t);
  if (r.tcp.receiveLowWater?.() === undefined) return t.skip('no receive low-water mark on this platform');
  assert.equal(r.tcp.receiveLowWater(), 1, 'nothing read yet');
  let sent = 0;
  // Each step sends as many bytes as the mark asks, so nothing waits for the watchdog.
  const step = async (dataInDue: number, lastDataInPdu: number, what: string): Promise<number> => {
    r.state.dataInDue = dataInDue;
    r.state.lastDataInPdu = lastDataInPdu;
    const bytes = Math.max(PDU, r.tcp.receiveLowWater!());
    r.server.write(Buffer.alloc(bytes));
    sent += bytes;
    await within(r.received(sent), 2000, what);
    return r.tcp.receiveLowWater!();
  };
  assert.equal(await step(32 * 65536, PDU, 'QD32 of 64 KiB due'), BUFFER, 'a quarter of 2 MiB, capped at one read buffer');
  assert.equal(await step(10 * PDU, PDU, '10 PDUs due'), Math.floor((10 * PDU) / 4), 'a quarter of what is due');
  assert.equal(await step(7 * PDU, PDU, '7 PDUs due'), 1, 'a shallow queue waits on latency: no mark');
  assert.equal(await step(1 << 20, 48 + 4096, 'small PDUs'), 1, 'small PDUs are read as they come');
  assert.equal(await step(1000, PDU, 'little due'), 1);
});

test('data that never comes: the watchdog lowers the mark and a short answer is read at once after', async (t) => {
  const r = await rig(t);
  if (r.tcp.receiveLowWater?.() === undefined) return t.skip('no receive low-water mark on this platform');
  r.state.lastDataInPdu = PDU;
  r.state.dataInDue = 32 * 65536;
  r.server.write(Buffer.alloc(PDU));
  await within(r.received(PDU), 2000, 'the first PDU');
  assert.equal(r.tcp.receiveLowWater(), BUFFER);
  // The target answers the next read with a 48-byte response and nothing else: far less than the
  // mark. Without the watchdog these bytes would wait in the socket for data that never comes.
  r.server.write(Buffer.alloc(48));
  await within(r.received(PDU + 48), 1000, 'the short answer');
  assert.equal(r.marks.at(-1), 1, 'the short answer was read once the watchdog had lowered the mark (the kernel held it back before)');
  assert.equal(r.tcp.receiveLowWater(), BUFFER, 'and raised again: the fake session still waits for data');
  // A quiet socket with nothing due keeps 1 byte (a NOP-In must never wait).
  r.state.dataInDue = 0;
  r.server.write(Buffer.alloc(48));
  await within(r.received(PDU + 96), 1000, 'a NOP-In');
  assert.equal(r.tcp.receiveLowWater(), 1);
});
