// CRC32C (Castagnoli), the iSCSI header and data digest (RFC 7143 §13.1, test vectors in RFC 3720
// Appendix B.4). Reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF, chainable
// the way zlib's crc32 is: crc32c(b, crc32c(a)) === crc32c(a ‖ b).
//
// Two engines behind one function (numbers from bench/micro/crc32c.bench.ts on the 2-vCPU build box):
// - @node-rs/crc32 1.10.7 (native, SSE4.2/ARMv8 CRC instructions): 11-14 GB/s on 4 KiB and about
//   23 GB/s on 64 KiB, against 1.9 and 2.0 GB/s for the JavaScript below. Pinned exactly: 1.10.8
//   measured 6.5 GB/s on 64 KiB here. A call costs about 90 ns, so buffers under NATIVE_MIN bytes
//   (a 48-byte BHS: about 37 ns in JavaScript) stay in JavaScript.
// - A pure JavaScript slicing-by-16 fallback, used when the native package is missing (a platform
//   without a prebuilt binary) and for short buffers. Sixteen 256-entry tables let one iteration fold
//   four 32-bit words, read through a Uint32Array view on the aligned middle of the buffer.
import { createRequire } from 'node:module';

interface NativeCrc32c {
  crc32c(input: Uint8Array, initialState?: number): number;
}

function loadNative(): NativeCrc32c | null {
  try {
    const mod = createRequire(import.meta.url)('@node-rs/crc32') as NativeCrc32c;
    // Trust it only if it gets the RFC 3720 B.4 vector right.
    return mod.crc32c(new Uint8Array(32)) === 0x8a9136aa ? mod : null;
  } catch {
    return null;
  }
}

const NATIVE: NativeCrc32c | null = loadNative();

/** Which engine serves buffers of NATIVE_MIN bytes and more. */
export const CRC32C_ENGINE: 'native' | 'js' = NATIVE === null ? 'js' : 'native';

/** Below this many bytes the JavaScript loop beats the cost of a native call. */
const NATIVE_MIN = 256;

const POLY = 0x82f63b78;

/** TABLES[k][b]: the CRC of byte b followed by k zero bytes (k = 0 is the classic byte table). */
const TABLES: Int32Array = buildTables(16);

function buildTables(slices: number): Int32Array {
  const t = new Int32Array(slices * 256);
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[b] = c;
  }
  for (let b = 0; b < 256; b++) {
    let c = t[b]!;
    for (let s = 1; s < slices; s++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[s * 256 + b] = c;
    }
  }
  return t;
}

// Word reads assume a little-endian host (every platform Node ships for today); elsewhere the
// byte-wise slicing loop below is used throughout.
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Bytes below this go through the byte loop: setting up a word view costs more than it saves. */
const WORD_PATH_MIN = 64;

/**
 * CRC32C of `data`, continuing from `crc` (the result of a previous call, 0 to start).
 * Returns an unsigned 32-bit number.
 */
export function crc32c(data: Uint8Array, crc = 0): number {
  if (NATIVE !== null && data.length >= NATIVE_MIN) return NATIVE.crc32c(data, crc >>> 0);
  return ~update(~crc | 0, data) >>> 0;
}

/** CRC32C over the concatenation of `iov`, continuing from `crc`. */
export function crc32cv(iov: readonly Uint8Array[], crc = 0): number {
  let c = crc >>> 0;
  for (let i = 0; i < iov.length; i++) c = crc32c(iov[i]!, c);
  return c;
}

/** The JavaScript engine alone (the fallback; exported so tests and benchmarks can reach it). */
export function crc32cJs(data: Uint8Array, crc = 0): number {
  return ~update(~crc | 0, data) >>> 0;
}

/** The native engine alone, or null when @node-rs/crc32 could not be loaded. */
export const crc32cNative: ((data: Uint8Array, crc?: number) => number) | null = NATIVE === null ? null : (data, crc = 0) => NATIVE.crc32c(data, crc >>> 0);

// `c` is the running register (already inverted); returns the register, still inverted.
function update(c: number, data: Uint8Array): number {
  const T = TABLES;
  let i = 0;
  const n = data.length;
  if (LITTLE_ENDIAN && n >= WORD_PATH_MIN) {
    // Byte steps until the absolute address is 4-aligned.
    const mis = (data.byteOffset & 3) === 0 ? 0 : 4 - (data.byteOffset & 3);
    for (; i < mis; i++) c = T[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
    const words = (n - i) >>> 2;
    const blocks = words >>> 2; // 16 bytes per iteration
    if (blocks > 0) {
      const w = new Uint32Array(data.buffer, data.byteOffset + i, blocks << 2);
      let j = 0;
      for (let b = 0; b < blocks; b++, j += 4) {
        const w0 = w[j]! ^ c;
        const w1 = w[j + 1]!;
        const w2 = w[j + 2]!;
        const w3 = w[j + 3]!;
        c =
          T[3840 + (w0 & 0xff)]! ^
          T[3584 + ((w0 >>> 8) & 0xff)]! ^
          T[3328 + ((w0 >>> 16) & 0xff)]! ^
          T[3072 + (w0 >>> 24)]! ^
          T[2816 + (w1 & 0xff)]! ^
          T[2560 + ((w1 >>> 8) & 0xff)]! ^
          T[2304 + ((w1 >>> 16) & 0xff)]! ^
          T[2048 + (w1 >>> 24)]! ^
          T[1792 + (w2 & 0xff)]! ^
          T[1536 + ((w2 >>> 8) & 0xff)]! ^
          T[1280 + ((w2 >>> 16) & 0xff)]! ^
          T[1024 + (w2 >>> 24)]! ^
          T[768 + (w3 & 0xff)]! ^
          T[512 + ((w3 >>> 8) & 0xff)]! ^
          T[256 + ((w3 >>> 16) & 0xff)]! ^
          T[w3 >>> 24]!;
      }
      i += blocks << 4;
    }
  } else {
    // Byte-wise slicing-by-8 (short buffers, big-endian hosts).
    const end8 = n - 8;
    for (; i <= end8; i += 8) {
      const a = c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
      c =
        T[1792 + (a & 0xff)]! ^
        T[1536 + ((a >>> 8) & 0xff)]! ^
        T[1280 + ((a >>> 16) & 0xff)]! ^
        T[1024 + (a >>> 24)]! ^
        T[768 + data[i + 4]!]! ^
        T[512 + data[i + 5]!]! ^
        T[256 + data[i + 6]!]! ^
        T[data[i + 7]!]!;
    }
  }
  for (; i < n; i++) c = T[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c;
}

/**
 * Write a digest the way iSCSI puts it on the wire. RFC 7143 §13.1 refers to RFC 3720 Appendix B.4:
 * the CRC register is sent least significant byte first, so the 32 zero bytes that give 0x8A9136AA
 * appear as aa 36 91 8a. In other words: a little-endian 32-bit write.
 */
export function writeDigest(buf: Uint8Array, offset: number, crc: number): void {
  buf[offset] = crc & 0xff;
  buf[offset + 1] = (crc >>> 8) & 0xff;
  buf[offset + 2] = (crc >>> 16) & 0xff;
  buf[offset + 3] = (crc >>> 24) & 0xff;
}

/** Read a digest written by writeDigest (an unsigned 32-bit number). */
export function readDigest(buf: Uint8Array, offset: number): number {
  return (buf[offset]! | (buf[offset + 1]! << 8) | (buf[offset + 2]! << 16) | (buf[offset + 3]! << 24)) >>> 0;
}
