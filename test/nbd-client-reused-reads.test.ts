// The client's reply reader fed views of one read buffer that the socket reuses (onSocketBytes in
// src/nbd-client/transport.ts): whatever it still needs after each push must be its own copy, so
// overwriting the buffer before the next read must not change what the sink sees.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ReplyReader } from '../src/nbd/reply-reader.ts';
import type { ChunkHeader, DataTarget, ReplySink } from '../src/nbd/reply-reader.ts';
import { NBD_REPLY_FLAG_DONE } from '../src/nbd/constants.ts';
import { encodeErrorChunk, encodeOffsetHoleChunk, encodeSimpleReply, OFFSET_DATA_HEADER_LENGTH, writeOffsetDataHeader } from '../src/nbd/transmission.ts';

interface Seen {
  simple: [number, number][];
  offsetData: [number, number, number][];
  chunks: [number, number, string][];
  framing: string[];
}

function sinkFor(reads: Map<number, Uint8Array>, seen: Seen): ReplySink {
  return {
    simpleReplyTarget: (_hi, lo) => {
      const buf = reads.get(lo);
      return buf === undefined ? { length: 0, target: { iov: [], at: 0 } } : { length: buf.length, target: { iov: [buf], at: 0 } };
    },
    onSimpleReply: (error, _hi, lo) => seen.simple.push([lo, error]),
    offsetDataTarget: (header: ChunkHeader, offset: number): DataTarget | null => ({ iov: [reads.get(header.cookieLo)!], at: offset }),
    onOffsetData: (header, offset, length) => seen.offsetData.push([header.cookieLo, offset, length]),
    onChunk: (header, payload) => seen.chunks.push([header.cookieLo, header.type, Buffer.from(payload).toString('hex')]),
    onFramingError: (kind, message) => seen.framing.push(`${kind}: ${message}`),
  };
}

test('replies cut anywhere and delivered through one reused buffer reach the sink intact', () => {
  const a = randomBytes(65536);
  const b = randomBytes(3000);
  const offsetData = Buffer.alloc(OFFSET_DATA_HEADER_LENGTH);
  writeOffsetDataHeader(offsetData, 0, 0, 0, 3, 1000, b.length - 1000);
  const hole = encodeOffsetHoleChunk(0, 0, 3, 0, 1000);
  const error = encodeErrorChunk(NBD_REPLY_FLAG_DONE, 0, 4, 5, 'disk on fire');
  const stream = Buffer.concat([
    encodeSimpleReply(0, 0, 1),
    a,
    encodeSimpleReply(0, 0, 2),
    offsetData,
    b.subarray(1000),
    hole,
    error,
    encodeSimpleReply(0, 0, 5),
  ]);

  for (const cut of [1, 7, 20, 4096, 65537]) {
    const reads = new Map<number, Uint8Array>([
      [1, new Uint8Array(a.length)],
      [3, new Uint8Array(b.length)],
    ]);
    const seen: Seen = { simple: [], offsetData: [], chunks: [], framing: [] };
    const reader = new ReplyReader(sinkFor(reads, seen), 1 << 20);
    const reused = Buffer.alloc(cut);
    for (let at = 0; at < stream.length; at += cut) {
      const n = Math.min(cut, stream.length - at);
      stream.copy(reused, 0, at, at + n);
      reader.push(reused.subarray(0, n));
      reused.fill(0xee); // the socket's next read lands here
    }
    assert.deepEqual(seen.framing, [], `cut ${cut}`);
    assert.deepEqual(
      seen.simple,
      [
        [1, 0],
        [2, 0],
        [5, 0],
      ],
      `cut ${cut}`,
    );
    assert.ok(Buffer.from(reads.get(1)!).equals(a), `cut ${cut}: the simple reply's data`);
    assert.ok(Buffer.from(reads.get(3)!).subarray(1000).equals(b.subarray(1000)), `cut ${cut}: the OFFSET_DATA chunk's data`);
    assert.deepEqual(seen.offsetData, [[3, 1000, b.length - 1000]]);
    assert.equal(seen.chunks.length, 2, `cut ${cut}: the hole and error chunks`);
    assert.equal(seen.chunks[0]![2], hole.subarray(20).toString('hex'), `cut ${cut}: the hole chunk's payload`);
    assert.equal(seen.chunks[1]![2], error.subarray(20).toString('hex'), `cut ${cut}: the error chunk's payload`);
  }
});
