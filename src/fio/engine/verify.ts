// verify=: what a written block carries and how a read-back is checked (fio verify.c/verify.h).
//
// Each verify interval (verify_interval, default the whole block) starts with fio's header:
//
//   0  u16 magic 0xacca      2  u16 verify type     4  u32 len (interval bytes)
//   8  u64 rand_seed        16  u64 offset (of the interval)
//  24  u32 sec              28  u32 nsec            32  u16 thread   34  u16 numberio
//  36  u32 crc32c of bytes 0..35
//  40  checksum of the payload (crc32c/crc32: 4 bytes, md5: 16 bytes), then the payload
//
// (fio's struct verify_header is {magic, verify_type, len, rand_seed, offset, time_sec, time_nsec,
// thread, numberio, crc32}; the checksum block follows the header.) verify=meta keeps the header with
// no payload checksum; verify=pattern writes the pattern over the whole block with no header;
// verify=null checks nothing.
import type { FioJob, VerifyKind } from '../job.ts';
import { crc32, crc32c, md5 } from './checksum.ts';

const LE = true;
export const VERIFY_MAGIC = 0xacca;
export const VERIFY_HEADER_BYTES = 40;
/** fio 3.33's verify type numbers (verify.h: NONE, HDR_ONLY, MD5, CRC64, CRC32C, CRC32C_INTEL, CRC32, ...). */
const VERIFY_TYPE: Record<VerifyKind, number> = { none: 0, meta: 1, md5: 2, crc32c: 4, crc32: 6, pattern: 0, null: 0 };
/** fio's err=84 for a verify mismatch. */
export const EILSEQ = 84;

function checksumBytes(kind: VerifyKind): number {
  return kind === 'md5' ? 16 : kind === 'crc32c' || kind === 'crc32' ? 4 : 0;
}

export interface VerifyContext {
  readonly job: FioJob;
  readonly kind: VerifyKind;
  readonly pattern: Uint8Array;
  readonly interval: number;
  /** Where the job's blocks live, for messages: the job's file name. */
  readonly fileName: string;
}

export function verifyContext(job: FioJob, fileName: string): VerifyContext {
  const pattern = job.verifyPattern !== null && job.verifyPattern.length > 0 ? job.verifyPattern : Uint8Array.of(0);
  return { job, kind: job.verify, pattern, interval: job.verifyInterval, fileName };
}

function intervalOf(v: VerifyContext, len: number): number {
  const i = v.interval;
  return i > 0 && i <= len && len % i === 0 ? i : len;
}

/**
 * Fills `buf[0, len)` for a write at `offset`: payload words from `fill` (a 32-bit random source),
 * then a header and checksum per interval.
 */
export function prepareVerifyWrite(
  v: VerifyContext,
  buf: Uint8Array,
  words: Uint32Array,
  view: DataView,
  offset: number,
  len: number,
  seed: number,
  numberio: number,
  fill: () => number,
): void {
  if (v.kind === 'pattern') {
    fillPattern(buf, len, v.pattern);
    return;
  }
  const nWords = len >>> 2;
  for (let i = 0; i < nWords; i++) words[i] = fill();
  if (v.kind === 'null') return;
  const step = intervalOf(v, len);
  const csum = checksumBytes(v.kind);
  const now = Date.now();
  for (let at = 0; at < len; at += step) {
    view.setUint16(at, VERIFY_MAGIC, LE);
    view.setUint16(at + 2, VERIFY_TYPE[v.kind], LE);
    view.setUint32(at + 4, step, LE);
    view.setUint32(at + 8, seed >>> 0, LE);
    view.setUint32(at + 12, 0, LE);
    setU64(view, at + 16, offset + at);
    view.setUint32(at + 24, Math.floor(now / 1000), LE);
    view.setUint32(at + 28, (now % 1000) * 1e6, LE);
    view.setUint16(at + 32, v.job.threadNumber & 0xffff, LE);
    view.setUint16(at + 34, numberio & 0xffff, LE);
    view.setUint32(at + 36, crc32c(buf, at, at + 36), LE);
    const dataStart = at + VERIFY_HEADER_BYTES + csum;
    if (v.kind === 'crc32c') view.setUint32(at + VERIFY_HEADER_BYTES, crc32c(buf, dataStart, at + step), LE);
    else if (v.kind === 'crc32') view.setUint32(at + VERIFY_HEADER_BYTES, crc32(buf, dataStart, at + step), LE);
    else if (v.kind === 'md5') buf.set(md5(buf, dataStart, at + step), at + VERIFY_HEADER_BYTES);
  }
}

/** Checks a block read back from `offset`; returns null when good, else fio's style of message. */
export function checkVerifyRead(v: VerifyContext, buf: Uint8Array, view: DataView, offset: number, len: number): string | null {
  const where = (at: number): string =>
    `at file ${v.fileName} offset ${offset + at}, length ${intervalOf(v, len)} (requested block: offset=${offset}, length=${len})`;
  if (v.kind === 'null' || v.kind === 'none') return null;
  if (v.kind === 'pattern') {
    const p = v.pattern;
    for (let i = 0; i < len; i++) {
      if (buf[i] !== p[i % p.length]) return `verify: pattern mismatch at byte ${i}, got ${hex2(buf[i]!)} wanted ${hex2(p[i % p.length]!)} ${where(0)}`;
    }
    return null;
  }
  const step = intervalOf(v, len);
  const csum = checksumBytes(v.kind);
  for (let at = 0; at < len; at += step) {
    const magic = view.getUint16(at, LE);
    if (magic !== VERIFY_MAGIC) return `verify: bad magic header ${magic.toString(16)}, wanted acca ${where(at)}`;
    const hlen = view.getUint32(at + 4, LE);
    if (hlen !== step) return `verify: bad header length ${hlen}, wanted ${step} ${where(at)}`;
    const hoff = getU64(view, at + 16);
    if (hoff !== offset + at) return `verify: bad header offset ${hoff}, wanted ${offset + at} ${where(at)}`;
    const hcrc = view.getUint32(at + 36, LE);
    if (hcrc !== crc32c(buf, at, at + 36)) return `verify: bad header crc ${hcrc.toString(16)} ${where(at)}`;
    const dataStart = at + VERIFY_HEADER_BYTES + csum;
    if (v.kind === 'crc32c' || v.kind === 'crc32') {
      const want = view.getUint32(at + VERIFY_HEADER_BYTES, LE);
      const got = v.kind === 'crc32c' ? crc32c(buf, dataStart, at + step) : crc32(buf, dataStart, at + step);
      if (want !== got) return `verify: bad ${v.kind} ${got.toString(16)}, wanted ${want.toString(16)} ${where(at)}`;
    } else if (v.kind === 'md5') {
      const got = md5(buf, dataStart, at + step);
      const want = buf.subarray(at + VERIFY_HEADER_BYTES, at + VERIFY_HEADER_BYTES + 16);
      if (!got.equals(want)) return `verify: bad md5 ${got.toString('hex')}, wanted ${Buffer.from(want).toString('hex')} ${where(at)}`;
    }
  }
  return null;
}

function fillPattern(buf: Uint8Array, len: number, p: Uint8Array): void {
  if (p.length === 1) {
    buf.fill(p[0]!, 0, len);
    return;
  }
  for (let i = 0; i < len; i++) buf[i] = p[i % p.length]!;
}

function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % 4294967296, LE);
  view.setUint32(at + 4, Math.floor(value / 4294967296), LE);
}

function getU64(view: DataView, at: number): number {
  return view.getUint32(at + 4, LE) * 4294967296 + view.getUint32(at, LE);
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, '0');
}
