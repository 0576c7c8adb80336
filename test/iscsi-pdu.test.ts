// The PDU framing: PduReader cuts streams into PDUs whatever the chunking, checks digests and
// limits; PduWriter lays PDUs out with digests and padding and batches them into one write.
// Expected bytes are built here by hand from RFC 7143 §11's layouts (an independent encoder).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PduReader } from '../src/iscsi/pdu-reader.ts';
import type { PduSink } from '../src/iscsi/pdu-reader.ts';
import { PduWriter } from '../src/iscsi/pdu-writer.ts';
import { crc32cJs } from '../src/iscsi/crc32c.ts';
import { snLess, snLessOrEqual } from '../src/iscsi/bhs.ts';

/** A naive PDU encoder: BHS fields given as a list of [offset, bytes]. */
function pdu(opts: {
  opcode: number;
  flags?: number;
  itt?: number;
  ahs?: Uint8Array;
  data?: Uint8Array;
  headerDigest?: boolean;
  dataDigest?: boolean;
}): Buffer {
  const bhs = Buffer.alloc(48);
  bhs[0] = opts.opcode;
  bhs[1] = opts.flags ?? 0x80;
  const ahs = opts.ahs ?? new Uint8Array(0);
  bhs[4] = ahs.byteLength / 4;
  const data = opts.data ?? new Uint8Array(0);
  bhs[5] = (data.byteLength >> 16) & 0xff;
  bhs[6] = (data.byteLength >> 8) & 0xff;
  bhs[7] = data.byteLength & 0xff;
  bhs.writeUInt32BE(opts.itt ?? 0x11223344, 16);
  const parts: Buffer[] = [bhs, Buffer.from(ahs)];
  if (opts.headerDigest === true) {
    const d = Buffer.alloc(4);
    d.writeUInt32LE(crc32cJs(Buffer.concat([bhs, Buffer.from(ahs)])));
    parts.push(d);
  }
  if (data.byteLength > 0) {
    const pad = (4 - (data.byteLength % 4)) % 4;
    const padded = Buffer.concat([Buffer.from(data), Buffer.alloc(pad)]);
    parts.push(padded);
    if (opts.dataDigest === true) {
      const d = Buffer.alloc(4);
      d.writeUInt32LE(crc32cJs(padded));
      parts.push(d);
    }
  }
  return Buffer.concat(parts);
}

interface Seen {
  opcode: number;
  itt: number;
  ahs: Buffer | null;
  data: Buffer;
}

function collector(): { sink: PduSink; seen: Seen[]; digestErrors: number[]; framing: string[] } {
  const seen: Seen[] = [];
  const digestErrors: number[] = [];
  const framing: string[] = [];
  return {
    seen,
    digestErrors,
    framing,
    sink: {
      dataBuffer: () => undefined,
      onPdu(h, ahs, data, length) {
        const joined = data === null ? Buffer.alloc(0) : Buffer.from(data.subarray(0, length));
        assert.equal(data === null, length === 0);
        seen.push({ opcode: h[0]! & 0x3f, itt: Buffer.from(h).readUInt32BE(16), ahs: ahs === null ? null : Buffer.from(ahs), data: joined });
      },
      onDataDigestError(h) {
        digestErrors.push(Buffer.from(h).readUInt32BE(16));
      },
      onFramingError(kind, message) {
        framing.push(`${kind}: ${message}`);
      },
    },
  };
}

const stream = Buffer.concat([
  pdu({ opcode: 0x00, itt: 1 }),
  pdu({ opcode: 0x01, itt: 2, data: Buffer.from('hello, iSCSI world') }),
  pdu({ opcode: 0x05, itt: 3, data: Buffer.alloc(4096, 0xab) }),
  pdu({ opcode: 0x01, itt: 4, ahs: Buffer.from([0, 5, 1, 0, 1, 2, 3, 4]), data: Buffer.from([9]) }),
]);

function expectStream(seen: Seen[]): void {
  assert.deepEqual(
    seen.map((s) => [s.opcode, s.itt, s.data.byteLength]),
    [
      [0, 1, 0],
      [1, 2, 18],
      [5, 3, 4096],
      [1, 4, 1],
    ],
  );
  assert.equal(seen[1]!.data.toString(), 'hello, iSCSI world');
  assert.ok(seen[2]!.data.every((b) => b === 0xab));
  assert.deepEqual([...seen[3]!.ahs!], [0, 5, 1, 0, 1, 2, 3, 4]);
  assert.deepEqual([...seen[3]!.data], [9]);
}

test('reader: the same PDUs whatever the chunking: whole, split at every byte, one byte at a time', () => {
  {
    const c = collector();
    const r = new PduReader(c.sink);
    r.push(stream);
    expectStream(c.seen);
    assert.equal(r.buffered, 0);
  }
  for (let cut = 1; cut < stream.byteLength; cut++) {
    const c = collector();
    const r = new PduReader(c.sink);
    r.push(stream.subarray(0, cut));
    r.push(stream.subarray(cut));
    expectStream(c.seen);
  }
  {
    const c = collector();
    const r = new PduReader(c.sink);
    for (let i = 0; i < stream.byteLength; i++) r.push(stream.subarray(i, i + 1));
    expectStream(c.seen);
    assert.equal(r.pdusIn, 4);
  }
});

test('reader: data is copied into the buffer the sink gives, once; the chunks given to push() are not kept', () => {
  const bytes = pdu({ opcode: 0x05, itt: 7, data: Buffer.alloc(8192, 1) });
  const mine = new Uint8Array(10000);
  let got: Uint8Array | null = null;
  let asked = 0;
  const r = new PduReader({
    dataBuffer: (h, length) => {
      asked++;
      assert.equal(Buffer.from(h).readUInt32BE(16), 7);
      assert.equal(length, 8192);
      return mine;
    },
    onPdu: (_h, _a, data, length) => {
      got = data;
      assert.equal(length, 8192);
    },
    onDataDigestError: () => assert.fail(),
    onFramingError: () => assert.fail(),
  });
  // the same read buffer reused for every read, as the server does
  const readBuffer = Buffer.alloc(1000);
  for (let at = 0; at < bytes.byteLength; at += 1000) {
    const n = bytes.copy(readBuffer, 0, at, at + 1000);
    r.push(readBuffer.subarray(0, n));
    readBuffer.fill(0xff);
  }
  assert.equal(asked, 1);
  assert.equal(got, mine);
  assert.ok(mine.subarray(0, 8192).every((b) => b === 1));
  assert.ok(mine.subarray(8192).every((b) => b === 0));
});

test('reader: header and data digests are checked; a bad data digest skips only that PDU', () => {
  const good = pdu({ opcode: 0x01, itt: 1, data: Buffer.from('abcde'), headerDigest: true, dataDigest: true });
  const bad = Buffer.from(pdu({ opcode: 0x01, itt: 2, data: Buffer.from('abcde'), headerDigest: true, dataDigest: true }));
  bad[bad.byteLength - 1]! ^= 0xff; // data digest
  const after = pdu({ opcode: 0x00, itt: 3, headerDigest: true, dataDigest: true });
  const all = Buffer.concat([good, bad, after]);
  for (let cut = 0; cut <= all.byteLength; cut++) {
    const c = collector();
    const r = new PduReader(c.sink);
    r.headerDigest = true;
    r.dataDigest = true;
    r.push(all.subarray(0, cut));
    r.push(all.subarray(cut));
    assert.deepEqual(
      c.seen.map((s) => s.itt),
      [1, 3],
    );
    assert.deepEqual(c.digestErrors, [2]);
    assert.deepEqual(c.framing, []);
  }
  const badHeader = Buffer.from(good);
  badHeader[20]! ^= 1; // a header byte: the header digest no longer matches
  const c = collector();
  const r = new PduReader(c.sink);
  r.headerDigest = true;
  r.dataDigest = true;
  r.push(Buffer.concat([badHeader, after]));
  assert.equal(c.seen.length, 0);
  assert.match(c.framing[0]!, /^header-digest/);
  assert.ok(r.dead);
});

test('reader: a data segment above MaxRecvDataSegmentLength stops the reader before buffering it', () => {
  const c = collector();
  const r = new PduReader(c.sink);
  r.maxDataSegmentLength = 8192;
  const head = pdu({ opcode: 0x05, itt: 1, data: Buffer.alloc(8196) }).subarray(0, 48);
  r.push(head);
  assert.match(c.framing[0]!, /DataSegmentLength 8196 exceeds MaxRecvDataSegmentLength 8192/);
  r.push(Buffer.alloc(100000));
  assert.equal(r.buffered, 0);
  assert.equal(c.seen.length, 0);
});

test('writer: PDUs of one turn leave in one write; small data inline, large data as its own chunk; digests and padding', () => {
  const writes: Uint8Array[][] = [];
  const dones: (() => void)[] = [];
  let flush: (() => void) | undefined;
  const w = new PduWriter(
    {
      write: (chunks, done) => {
        writes.push([...chunks]);
        dones.push(done);
      },
    },
    (f) => {
      flush = f;
    },
  );
  w.headerDigest = true;
  w.dataDigest = true;
  let h = w.header();
  h[0] = 0x21;
  h[1] = 0x80;
  h.writeUInt32BE(0xaabbccdd, 16);
  w.send(Buffer.from('xyz'));
  const big = Buffer.alloc(65536, 0x5a);
  let released = 0;
  h = w.header();
  h[0] = 0x25;
  h.writeUInt32BE(0x01020304, 16);
  w.send(big, () => released++);
  assert.equal(writes.length, 0);
  flush!();
  assert.equal(writes.length, 1);
  const chunks = writes[0]!;
  // slab piece (header 1 + data + pad + digest, header 2 + digest), the big data (not copied), slab piece (digest)
  assert.equal(chunks.length, 3);
  assert.equal(chunks[1], big);
  const wire = Buffer.concat(chunks);
  // read it back with the reader, digests on
  const c = collector();
  const r = new PduReader(c.sink);
  r.headerDigest = true;
  r.dataDigest = true;
  r.maxDataSegmentLength = 1 << 20;
  r.push(wire);
  assert.deepEqual(
    c.seen.map((s) => [s.opcode, s.itt, s.data.byteLength]),
    [
      [0x21, 0xaabbccdd, 3],
      [0x25, 0x01020304, 65536],
    ],
  );
  assert.equal(c.seen[0]!.data.toString(), 'xyz');
  assert.equal(released, 0);
  dones[0]!();
  assert.equal(released, 1);
  // the first PDU by hand: BHS, header digest, "xyz" + one pad byte, data digest
  const expected = pdu({ opcode: 0x21, flags: 0x80, itt: 0xaabbccdd, data: Buffer.from('xyz'), headerDigest: true, dataDigest: true });
  assert.deepEqual(wire.subarray(0, expected.byteLength), expected);
});

test('writer: slabs are reused once written, and a closed writer releases what it held', () => {
  const dones: (() => void)[] = [];
  const seenBuffers = new Set<ArrayBufferLike>();
  let flush: (() => void) | undefined;
  const w = new PduWriter(
    {
      write: (chunks, done) => {
        for (const c of chunks) seenBuffers.add(c.buffer);
        dones.push(done);
      },
    },
    (f) => {
      flush = f;
    },
  );
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 100; i++) {
      const h = w.header();
      h[0] = 0x20;
      w.send(Buffer.alloc(512));
    }
    flush!();
    dones.shift()!();
  }
  assert.ok(seenBuffers.size <= 2, `${seenBuffers.size} slabs for 50 rounds`);
  let released = 0;
  const h = w.header();
  h[0] = 0x25;
  w.send(Buffer.alloc(100000), () => released++);
  w.close();
  assert.equal(released, 1);
});

test('serial number arithmetic wraps at 2^32 (RFC 1982)', () => {
  assert.ok(snLess(0xfffffffe, 1));
  assert.ok(!snLess(1, 0xfffffffe));
  assert.ok(snLessOrEqual(5, 5));
  assert.ok(snLess(5, 6));
  assert.ok(!snLess(6, 5));
});
