// The initiator's TCP transport sizes each socket read by the PDUs seen lately (src/iscsi-initiator/
// transport.ts, ReadSizer): small PDUs get small reads, so the commands their completions issue
// leave before the next read; large PDUs get the whole buffer. Whatever the sizes, every byte
// reaches the session once and in order, in the one reused buffer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { connectTcp } from '../src/iscsi-initiator/transport.ts';
import type { InitiatorSession } from '../src/iscsi-initiator/session.ts';

test('socket reads shrink for small PDUs and grow for large ones, bytes intact and in order', async () => {
  const first = randomBytes(600_000);
  const second = randomBytes(2_000_000);
  const phases = [first, second];
  let serverSide: net.Socket | undefined;
  const server = net.createServer((s) => (serverSide = s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  try {
    const tcp = await connectTcp('127.0.0.1', port, 5000, 'test');
    // the reader's counters as the transport sees them: 4 KiB PDUs in phase 0, 256 KiB PDUs in phase 1
    const reader = { bytesIn: 0, pdusIn: 0 };
    let pduBytes = 4096;
    const copies: Buffer[] = [];
    const readsBySize: number[][] = [[], []];
    const memories = new Set<ArrayBufferLike>();
    let total = 0;
    let phase = 0;
    let phaseDone!: () => void;
    let waiting = new Promise<void>((r) => (phaseDone = r));
    const fakeSession = {
      reader,
      receive(buf: Uint8Array, length = buf.byteLength) {
        const chunk = buf.subarray(0, length); // the transport hands over its read buffer and the bytes read
        copies.push(Buffer.from(chunk)); // the chunk may be reused once this returns
        memories.add(chunk.buffer);
        readsBySize[phase]!.push(chunk.byteLength);
        total += chunk.byteLength;
        reader.bytesIn += chunk.byteLength;
        reader.pdusIn += Math.max(1, Math.round(chunk.byteLength / pduBytes));
        if (total >= phases.slice(0, phase + 1).reduce((n, b) => n + b.length, 0)) phaseDone();
      },
      closed() {},
    } as unknown as InitiatorSession;
    tcp.attach(fakeSession);
    while (serverSide === undefined) await new Promise((r) => setTimeout(r, 5));
    serverSide.write(first);
    pileUp();
    await waiting;
    phase = 1;
    pduBytes = 256 * 1024;
    waiting = new Promise<void>((r) => (phaseDone = r));
    serverSide.write(second);
    pileUp();
    await waiting;
    assert.deepEqual(Buffer.concat(copies), Buffer.concat(phases));
    assert.equal(memories.size, 1, `reads used ${memories.size} different buffers`);
    // 4 KiB PDUs: room for about 8 of them (64 KiB) after the first read
    const small = Math.max(...readsBySize[0]!.slice(1));
    assert.ok(small <= 64 * 1024, `reads of 4 KiB PDUs up to ${small} bytes`);
    // large PDUs: reads beyond that once the first of them is seen (the sender outruns us at times)
    const large = Math.max(...readsBySize[1]!);
    assert.ok(large > 64 * 1024, `reads of 256 KiB PDUs only up to ${large} bytes`);
    tcp.transport.destroy();
  } finally {
    serverSide?.destroy();
    server.close();
  }
});

/** Keeps the event loop busy a moment, so what the server wrote waits in the socket: reads are then as large as allowed. */
function pileUp(): void {
  const until = Date.now() + 50;
  while (Date.now() < until);
}
