// The initiator's TCP transport (src/iscsi-initiator/transport.ts) reads into one reused buffer:
// every byte the target sends reaches the session once and in order (including bytes that arrive
// before the session is attached), and reads after the first land in the same memory (no fresh
// Buffer per socket read, which was the main cost of 64 KiB reads).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { connectTcp } from '../src/iscsi-initiator/transport.ts';
import type { InitiatorSession } from '../src/iscsi-initiator/session.ts';

test('socket bytes reach the session intact, in order, through one reused read buffer', async () => {
  const early = randomBytes(1000);
  const later = [randomBytes(300_000), randomBytes(70_000), randomBytes(5)];
  let serverSide: net.Socket | undefined;
  const server = net.createServer((s) => {
    serverSide = s;
    s.write(early); // before the client attaches a session
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  try {
    const tcp = await connectTcp('127.0.0.1', port, 5000, 'test');
    await new Promise((r) => setTimeout(r, 50)); // let the early bytes be read before attach
    const copies: Buffer[] = [];
    const memories = new Set<ArrayBufferLike>();
    let total = 0;
    const want = early.length + later.reduce((n, b) => n + b.length, 0);
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const fakeSession = {
      receive(buf: Uint8Array, length = buf.byteLength) {
        const chunk = buf.subarray(0, length); // the transport hands over its read buffer and the bytes read
        copies.push(Buffer.from(chunk)); // the chunk may be reused once this returns
        if (total > 0) memories.add(chunk.buffer);
        total += chunk.byteLength;
        if (total >= want) done();
      },
      closed() {},
      reader: { bytesIn: 0, pdusIn: 0 }, // no PDU seen: reads keep their size
    } as unknown as InitiatorSession;
    tcp.attach(fakeSession);
    for (const b of later) serverSide!.write(b);
    await all;
    assert.deepEqual(Buffer.concat(copies), Buffer.concat([early, ...later]));
    assert.ok(copies.length > 2, `expected several reads, got ${copies.length}`);
    // the early bytes were copied aside; every later read went into the same buffer
    assert.equal(memories.size, 1, `reads used ${memories.size} different buffers`);
    tcp.transport.destroy();
  } finally {
    serverSide?.destroy();
    server.close();
  }
});
