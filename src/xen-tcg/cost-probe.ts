// What the primitives blkback serve is made of cost where it runs: a clock reading, a system call,
// a fixed piece of JavaScript and an event-loop turn. dom0 prints it at boot and the harness on the
// host before booting, so the log shows how far emulation stretches each (docs/xen-tcg.md).
import { fstatSync } from 'node:fs';

function per(n: number, f: () => void): number {
  const t = performance.now();
  for (let i = 0; i < n; i++) f();
  return ((performance.now() - t) * 1000) / n;
}

/** Decoding-like work: little-endian reads from a buffer and integer arithmetic, no allocation. */
function jsWork(): number {
  const view = new DataView(new ArrayBuffer(4096));
  for (let i = 0; i < 4096; i += 4) view.setUint32(i, i * 2654435761, true);
  let x = 0;
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < 4096; i += 8) x = (x + view.getUint32(i, true) * 31 + view.getUint16(i + 4, true)) | 0;
  }
  return x;
}

function turns(n: number): Promise<number> {
  return new Promise((resolve) => {
    const t = performance.now();
    let left = n;
    const next = (): void => {
      if (--left > 0) setImmediate(next);
      else resolve(((performance.now() - t) * 1000) / n);
    };
    setImmediate(next);
  });
}

async function main(): Promise<void> {
  per(200, () => performance.now());
  per(50, () => fstatSync(0));
  jsWork();
  const now = per(20000, () => performance.now());
  const syscall = per(5000, () => fstatSync(0));
  const t = performance.now();
  jsWork();
  jsWork();
  const js = (performance.now() - t) / 2;
  await turns(200);
  const turn = await turns(2000);
  process.stdout.write(
    `performance.now() ${now.toFixed(2)} us, a system call (fstat) ${syscall.toFixed(2)} us, ` +
      `a fixed piece of JavaScript ${js.toFixed(1)} ms, an event-loop turn ${turn.toFixed(1)} us\n`,
  );
}

void main();
