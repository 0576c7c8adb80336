// CRC32C throughput: the dispatching crc32c(), the native @node-rs/crc32 engine alone, the JavaScript
// slicing-by-16 fallback alone, and a naive bitwise loop. Plain hrtime loops, no dependencies.
//
//   npx tsc -p . && node dist/bench/micro/crc32c.bench.js
import { randomBytes } from 'node:crypto';
import { crc32c, crc32cJs, crc32cNative } from '../../src/iscsi/crc32c.ts';
import { crc32cBitwise } from '../../test/support/crc32c-bitwise.ts';

type Fn = (b: Uint8Array) => number;

function measure(fn: Fn, buf: Uint8Array, minMs: number): number {
  let sink = 0;
  for (let i = 0; i < 50; i++) sink ^= fn(buf); // warm up
  let iters = 0;
  const t0 = process.hrtime.bigint();
  let elapsed = 0n;
  const budget = BigInt(minMs) * 1_000_000n;
  while (elapsed < budget) {
    for (let i = 0; i < 64; i++) sink ^= fn(buf);
    iters += 64;
    elapsed = process.hrtime.bigint() - t0;
  }
  if (sink === 0x12345678) console.log('');
  return (buf.length * iters) / (Number(elapsed) / 1e9) / 1e6; // MB/s
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

const impls: [string, Fn][] = [['crc32c() (dispatch)', (b) => crc32c(b)]];
if (crc32cNative !== null) {
  const native = crc32cNative;
  impls.push(['@node-rs/crc32 alone', (b) => native(b)]);
}
impls.push(['js slicing-by-16 alone', (b) => crc32cJs(b)]);
impls.push(['naive bitwise', (b) => crc32cBitwise(b)]);

for (const size of [48, 4096, 65536]) {
  // Offset by 1 so the JS path also pays for an unaligned head, as PDU payloads in a pool can be.
  const backing = randomBytes(size + 1);
  const buf = new Uint8Array(backing.buffer, backing.byteOffset + 1, size);
  for (const [name, fn] of impls) {
    const runs: number[] = [];
    const ms = name === 'naive bitwise' ? 150 : 300;
    for (let r = 0; r < 5; r++) runs.push(measure(fn, buf, ms));
    console.log(
      `${String(size).padStart(6)} B  ${name.padEnd(24)} ${median(runs).toFixed(0).padStart(6)} MB/s  (min ${Math.min(...runs).toFixed(0)}, max ${Math.max(...runs).toFixed(0)})`,
    );
  }
}
