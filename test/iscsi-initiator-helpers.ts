// Shared by the initiator tests (our target and tgt): random writes of varied sizes at a queue depth,
// each in its own slot of the disk so concurrent writes never overlap, checked against a shadow copy
// read from the disk at the start; and, when given, against the target's store itself.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { BlockDevice } from '../src/block/types.ts';

export interface IntegrityOptions {
  /** Seeds the generator; printed in failure messages so a run can be repeated. */
  readonly seedBytes: Uint8Array;
  readonly rounds: number;
  readonly depth: number;
  /** Largest write; sizes are multiples of 512 from 512 up to this. */
  readonly maxBytes: number;
  /** The target's store, to check that what the initiator wrote is what the target holds. */
  readonly store?: BlockDevice;
}

function generator(seed: Uint8Array): () => number {
  let s = Buffer.from(seed).readUInt32LE(0) | 1;
  return () => {
    // xorshift32
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x1_0000_0000;
  };
}

async function readAll(dev: BlockDevice, size: number, chunk: number): Promise<Buffer> {
  const out = Buffer.alloc(size);
  const all: Promise<void>[] = [];
  for (let at = 0; at < size; at += chunk) all.push(dev.readv(at, [out.subarray(at, Math.min(size, at + chunk))]));
  await Promise.all(all);
  return out;
}

export async function randomIntegrity(dev: BlockDevice, o: IntegrityOptions): Promise<void> {
  const seed = Buffer.from(o.seedBytes).toString('hex').slice(0, 8);
  const random = generator(o.seedBytes);
  const size = dev.info.size;
  const slot = Math.floor(size / o.depth / 512) * 512;
  assert.ok(slot >= o.maxBytes, `disk too small for ${o.depth} slots of ${o.maxBytes} bytes`);
  const shadow = await readAll(dev, size, 1 << 20);
  for (let round = 0; round < o.rounds; round++) {
    const writes: { offset: number; data: Buffer }[] = [];
    for (let i = 0; i < o.depth; i++) {
      // a third small (immediate data only), the rest up to maxBytes (unsolicited data, then R2Ts)
      const blocks = random() < 1 / 3 ? 1 + Math.floor(random() * 8) : 1 + Math.floor(random() * (o.maxBytes / 512));
      const length = blocks * 512;
      const offset = i * slot + Math.floor(random() * ((slot - length) / 512 + 1)) * 512;
      const data = Buffer.alloc(length);
      for (let k = 0; k < length; k += 4) data.writeUInt32LE((random() * 0x1_0000_0000) >>> 0, k);
      writes.push({ offset, data });
    }
    await Promise.all(writes.map((w) => dev.writev(w.offset, [w.data])));
    for (const w of writes) w.data.copy(shadow, w.offset);
    const back = await Promise.all(
      writes.map(async (w) => {
        const b = Buffer.alloc(w.data.byteLength);
        await dev.readv(w.offset, [b]);
        return b;
      }),
    );
    for (let i = 0; i < writes.length; i++) {
      assert.ok(
        back[i]!.equals(writes[i]!.data),
        `seed ${seed} round ${round}: ${writes[i]!.data.byteLength} bytes at ${writes[i]!.offset} read back differently`,
      );
    }
  }
  await dev.flush();
  const whole = await readAll(dev, size, 1 << 20);
  assert.ok(whole.equals(shadow), `seed ${seed}: the disk differs from what was written`);
  if (o.store !== undefined) {
    const inStore = await readAll(o.store, size, 1 << 20);
    assert.ok(inStore.equals(shadow), `seed ${seed}: the target's store differs from what was written`);
  }
}

/**
 * Writes `length` random bytes at offset 0 through `dev` and reads them back, from `readFrom` when
 * given (the target's store: the bytes reached it) or through `dev` itself; they must be equal.
 */
export async function writeReadBack(dev: BlockDevice, length: number, readFrom: BlockDevice = dev): Promise<void> {
  const data = randomBytes(length);
  await dev.writev(0, [data]);
  const back = Buffer.alloc(length);
  await readFrom.readv(0, [back]);
  assert.deepEqual(back, data);
}
