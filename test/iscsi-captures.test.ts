// Golden tests of the codec on real conversations: libiscsi and QEMU talking to Debian's tgt,
// captured once with tcpdump (test/fixtures/iscsi/captures/README.md). Each byte stream must cut
// into whole PDUs ending exactly at its last byte, with every header and data digest right; each
// PDU laid out again by our PduWriter must come out byte for byte as tgt or libiscsi sent it; and
// the CHAP responses libiscsi computed must be the ones our CHAP code computes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { PduReader } from '../src/iscsi/pdu-reader.ts';
import { PduWriter } from '../src/iscsi/pdu-writer.ts';
import { decodeText, parseBinary } from '../src/iscsi/text.ts';
import { chapResponse } from '../src/iscsi/chap.ts';
import { Opcode } from '../src/iscsi/constants.ts';

const DIR = new URL('../../test/fixtures/iscsi/captures/', import.meta.url).pathname;

interface Pdu {
  readonly opcode: number;
  readonly header: Buffer;
  readonly data: Buffer;
  /** The PDU's bytes on the wire, digests and padding included. */
  readonly wire: Buffer;
  readonly headerDigest: boolean;
  readonly dataDigest: boolean;
}

function stream(name: string): Buffer {
  return Buffer.from(readFileSync(join(DIR, name), 'utf8').replace(/\s+/g, ''), 'hex');
}

/**
 * Cuts one direction's stream into PDUs. Digests apply from the first PDU after the login ended:
 * `digestsAfter(pdu)` says, after each PDU, whether the login is over and with which digests.
 */
function cut(bytes: Buffer, digestsAfter: (pdu: Pdu) => { header: boolean; data: boolean } | undefined): Pdu[] {
  const pdus: Pdu[] = [];
  let consumed = 0;
  let digests = { header: false, data: false };
  const reader = new PduReader({
    dataBuffer: () => undefined,
    onPdu(h, ahs, data, length) {
      assert.equal(ahs, null);
      const header = Buffer.from(h);
      const payload = data === null ? Buffer.alloc(0) : Buffer.from(data.subarray(0, length));
      const wireLength = 48 + (digests.header ? 4 : 0) + (length === 0 ? 0 : ((length + 3) & ~3) + (digests.data ? 4 : 0));
      const pdu: Pdu = {
        opcode: header[0]! & 0x3f,
        header,
        data: payload,
        wire: bytes.subarray(consumed, consumed + wireLength),
        headerDigest: digests.header,
        dataDigest: digests.data,
      };
      consumed += wireLength;
      pdus.push(pdu);
      const next = digestsAfter(pdu);
      if (next !== undefined) {
        digests = next;
        reader.headerDigest = next.header;
        reader.dataDigest = next.data;
        reader.maxDataSegmentLength = 1 << 24;
      }
    },
    onDataDigestError: () => assert.fail('data digest error'),
    onFramingError: (_k, m) => assert.fail(`framing error: ${m}`),
  });
  reader.maxDataSegmentLength = 1 << 24;
  let at = 0;
  // fed in uneven pieces, as a socket would
  for (let size = 1; at < bytes.byteLength; size = ((size * 7 + 3) % 1500) + 1) {
    reader.push(bytes.subarray(at, Math.min(bytes.byteLength, at + size)));
    at += size;
  }
  assert.equal(reader.buffered, 0, 'the stream ends on a PDU boundary');
  assert.equal(consumed, bytes.byteLength, 'every byte belongs to a PDU');
  return pdus;
}

/** Keys of a login or text PDU. */
function keys(pdu: Pdu): Map<string, string> {
  const d = decodeText(pdu.data);
  assert.ok(d.ok, d.ok ? '' : d.error.message);
  return new Map(d.ok ? d.pairs : []);
}

/** Both directions of one TCP connection, digests switched on where the login negotiated them. */
function conversation(prefix: string): { out: Pdu[]; back: Pdu[] } {
  // the target's side first: its final Login Response says what was agreed
  let agreed = { header: false, data: false };
  const negotiated = new Map<string, string>();
  const back = cut(stream(`${prefix}.target-to-initiator.hex`), (pdu) => {
    if (pdu.opcode !== Opcode.LOGIN_RESPONSE) return undefined;
    for (const [k, v] of keys(pdu)) negotiated.set(k, v);
    const final = (pdu.header[1]! & 0x80) !== 0 && (pdu.header[1]! & 0x03) === 3;
    if (!final) return undefined;
    agreed = { header: negotiated.get('HeaderDigest') === 'CRC32C', data: negotiated.get('DataDigest') === 'CRC32C' };
    return agreed;
  });
  const out = cut(stream(`${prefix}.initiator-to-target.hex`), (pdu) => {
    if (pdu.opcode !== Opcode.LOGIN_REQUEST) return undefined;
    const final = (pdu.header[1]! & 0x80) !== 0 && (pdu.header[1]! & 0x03) === 3;
    return final ? agreed : undefined;
  });
  return { out, back };
}

/** Lays a PDU out again with our writer and compares with the captured bytes. */
function relay(pdu: Pdu): void {
  const chunks: Uint8Array[][] = [];
  let flush: (() => void) | undefined;
  const w = new PduWriter(
    {
      write: (c, done) => {
        chunks.push([...c]);
        done();
      },
    },
    (f) => {
      flush = f;
    },
  );
  w.headerDigest = pdu.headerDigest;
  w.dataDigest = pdu.dataDigest;
  const h = w.header();
  pdu.header.copy(h);
  w.send(pdu.data.byteLength === 0 ? null : pdu.data);
  flush!();
  assert.deepEqual(Buffer.concat(chunks.flat()), pdu.wire, `opcode 0x${pdu.opcode.toString(16)} re-encoded byte for byte`);
}

const prefixes = [
  ...new Set(
    readdirSync(DIR)
      .filter((f) => f.endsWith('.hex'))
      .map((f) => f.replace(/\.(initiator-to-target|target-to-initiator)\.hex$/, '')),
  ),
].sort();

test('every captured stream cuts into whole PDUs with correct digests, and each re-encodes byte for byte', () => {
  assert.ok(prefixes.length >= 10, `${prefixes.length} streams`);
  let total = 0;
  let withDigests = 0;
  for (const prefix of prefixes) {
    const { out, back } = conversation(prefix);
    assert.ok(out.length > 0 && back.length > 0, prefix);
    assert.equal(out[0]!.opcode, Opcode.LOGIN_REQUEST, `${prefix} starts with a login`);
    for (const pdu of [...out, ...back]) {
      relay(pdu);
      total++;
      if (pdu.headerDigest) withDigests++;
    }
  }
  assert.ok(total > 150, `${total} PDUs`);
  assert.ok(withDigests > 20, `${withDigests} PDUs with digests`);
});

test('discovery: the SendTargets answer names the target and its portal', () => {
  const { out, back } = conversation('01-discovery.s0');
  const ask = out.find((p) => p.opcode === Opcode.TEXT_REQUEST)!;
  assert.equal(keys(ask).get('SendTargets'), 'All');
  const answer = keys(back.find((p) => p.opcode === Opcode.TEXT_RESPONSE)!);
  assert.equal(answer.get('TargetName'), 'iqn.2026-12.org.blkback:capture');
  assert.match(answer.get('TargetAddress')!, /^127\.0\.0\.1:\d+,1$/);
});

test('a 64 KiB write against tgt: 8 KiB immediate, one R2T for the rest, seven Data-Out PDUs in order', () => {
  const { out, back } = conversation('04-qemu-io-write-read-64k.s0');
  const write = out.find((p) => p.opcode === Opcode.SCSI_COMMAND && p.header[32] === 0x2a)!;
  assert.equal(write.header.readUInt32BE(20), 65536, 'expected data transfer length');
  assert.equal(write.data.byteLength, 8192, 'immediate data');
  const itt = write.header.readUInt32BE(16);
  const r2t = back.find((p) => p.opcode === Opcode.R2T && p.header.readUInt32BE(16) === itt)!;
  assert.deepEqual([r2t.header.readUInt32BE(40), r2t.header.readUInt32BE(44)], [8192, 57344], 'R2T buffer offset and desired length');
  const ttt = r2t.header.readUInt32BE(20);
  const dataOut = out.filter((p) => p.opcode === Opcode.SCSI_DATA_OUT && p.header.readUInt32BE(16) === itt);
  assert.equal(dataOut.length, 7);
  dataOut.forEach((p, i) => {
    assert.equal(p.header.readUInt32BE(20), ttt);
    assert.equal(p.header.readUInt32BE(36), i, 'DataSN');
    assert.equal(p.header.readUInt32BE(40), 8192 * (i + 1), 'buffer offset');
    assert.equal((p.header[1]! & 0x80) !== 0, i === 6, 'F bit on the last');
    assert.ok(p.data.every((b) => b === 0xab));
  });
  const readCmd = out.find((p) => p.opcode === Opcode.SCSI_COMMAND && p.header[32] === 0x28)!;
  const dataIn = back.filter((p) => p.opcode === Opcode.SCSI_DATA_IN && p.header.readUInt32BE(16) === readCmd.header.readUInt32BE(16));
  assert.equal(
    dataIn.reduce((n, p) => n + p.data.byteLength, 0),
    65536,
  );
  assert.ok((dataIn.at(-1)!.header[1]! & 0x01) !== 0, 'status in the last Data-In (S bit)');
});

test('CHAP: the responses libiscsi and tgt computed are the ones chap.ts computes', () => {
  const secrets = { initiator: Buffer.from('initiator-secret-16'), target: Buffer.from('target-secret-1234') };
  for (const s of ['06-chap.s0', '06-chap.s1']) {
    const { out, back } = conversation(s);
    const fromTarget = new Map<string, string>();
    for (const p of back.filter((x) => x.opcode === Opcode.LOGIN_RESPONSE)) for (const [k, v] of keys(p)) fromTarget.set(k, v);
    const fromInitiator = new Map<string, string>();
    for (const p of out.filter((x) => x.opcode === Opcode.LOGIN_REQUEST)) for (const [k, v] of keys(p)) fromInitiator.set(k, v);
    const id = Number(fromTarget.get('CHAP_I'));
    const challenge = parseBinary(fromTarget.get('CHAP_C')!)!;
    assert.deepEqual(
      Buffer.from(parseBinary(fromInitiator.get('CHAP_R')!)!),
      Buffer.from(chapResponse(id, secrets.initiator, challenge)),
      `${s}: initiator's response`,
    );
    assert.equal(fromInitiator.get('CHAP_N'), 'blkback-initiator');
    if (s.endsWith('s1')) {
      const mutualId = Number(fromInitiator.get('CHAP_I'));
      const mutualChallenge = parseBinary(fromInitiator.get('CHAP_C')!)!;
      assert.deepEqual(
        Buffer.from(parseBinary(fromTarget.get('CHAP_R')!)!),
        Buffer.from(chapResponse(mutualId, secrets.target, mutualChallenge)),
        `${s}: target's response`,
      );
      assert.equal(fromTarget.get('CHAP_N'), 'blkback-target');
    }
  }
});
