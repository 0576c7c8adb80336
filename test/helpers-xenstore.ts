// Helpers for the xenstore tests.
//
// The default export is a guest workload for test/xenstore-fairness.test.ts (a guest worker runs a
// module's default export; `mode` picks the behaviour):
//   flood      keeps `outstanding` xenstore writes in flight to its own subtree while data/go = 1
//   burn       spins the CPU while data/go = 1
//   neighbour  4 KiB random reads at queue depth 16 on xvda, counting completions in buckets of
//              `bucketMs` of absolute time (performance.timeOrigin + now), so the host can cut the
//              run into the intervals it ran each condition in; reports { type: 'counts', ... } (a
//              NeighbourResult) whenever data/go says 'report', and ends when it says 'stop' (or
//              after `seconds`)
// All three report { type: 'ready' } once they watch data/go, and return when it says 'stop'.
//
// The named exports serve the memory and fuzz tests: a garbage-collected memory figure and a raw
// Unix-socket peer that writes with backpressure and reads only when asked to.
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { GuestContext } from '../src/guest/context.ts';
import { XsDecoder } from '../src/xenstore/codec.ts';
import type { XsMessage } from '../src/xenstore/codec.ts';
import { Rng } from '../src/loadgen/pattern.ts';

let gcFn: (() => void) | undefined;

/** Bytes held by this process's JS heap and ArrayBuffers (where replies and values live), after a full GC. */
export function heldBytes(): number {
  if (gcFn === undefined) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

export const MiB = 1024 * 1024;

/** A raw peer on a xenstored Unix socket: sends bytes as fast as the socket takes them, reads only when told to. */
export class RawSocketPeer {
  readonly socket: net.Socket;
  readonly messages: XsMessage[] = [];
  readonly closed: Promise<void>;
  #decoder = new XsDecoder({ onMessage: (m) => this.messages.push(m), onOversize: () => undefined });
  #reading = false;
  /** Bytes the daemon sent that this peer read. */
  received = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.on('data', (b: Buffer) => {
      this.received += b.length;
      if (this.#reading) this.#decoder.push(b);
    });
    socket.pause();
  }

  static connect(path: string): Promise<RawSocketPeer> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawSocketPeer(s));
      });
    });
  }

  /** Starts reading (and decoding) what the daemon sends. */
  read(): void {
    this.#reading = true;
    this.socket.resume();
  }

  /**
   * Writes `next()` chunks until it returns undefined, or until the socket has not drained for
   * `stallMs` (the daemon stopped reading us). Resolves with the bytes the kernel took and whether it stalled.
   */
  async pump(next: () => Uint8Array | undefined, stallMs: number): Promise<{ written: number; stalled: boolean }> {
    let written = 0;
    for (;;) {
      if (this.socket.destroyed) return { written, stalled: false };
      const chunk = next();
      if (chunk === undefined) return { written, stalled: false };
      written += chunk.length;
      if (!this.socket.write(chunk)) {
        const drained = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => {
            this.socket.off('drain', onDrain);
            resolve(false);
          }, stallMs);
          const onDrain = (): void => {
            clearTimeout(timer);
            resolve(true);
          };
          this.socket.once('drain', onDrain);
        });
        if (!drained) return { written: written - this.socket.writableLength, stalled: true };
      }
    }
  }

  /** Resolves when the daemon has closed the connection, or false after `ms`. */
  async waitClosed(ms: number): Promise<boolean> {
    this.socket.resume();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const t = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const r = await Promise.race([this.closed.then(() => true), t]);
    clearTimeout(timer);
    return r;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export type XsGuestParams =
  | { readonly mode: 'flood'; readonly outstanding: number; readonly keys: number; readonly valueBytes: number }
  | { readonly mode: 'burn' }
  | { readonly mode: 'neighbour'; readonly seconds: number; readonly bucketMs: number; readonly iodepth: number; readonly bs: number; readonly span: number };

export interface NeighbourResult {
  /** Absolute ms (timeOrigin + now) at which bucket 0 starts. */
  readonly start: number;
  readonly bucketMs: number;
  readonly counts: number[];
}

export interface FloodResult {
  readonly writes: number;
  readonly errors: number;
}

/** Wall-clock ms comparable across threads. */
export function absNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Follows data/go: calls `onChange` with its value ('0', '1', 'stop'); resolves once it is 'stop'. */
async function followGo(ctx: GuestContext, onChange: (v: string) => void): Promise<void> {
  const xs = ctx.hv.xenstore;
  const path = `/local/domain/${ctx.domid}/data/go`;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  await xs.watch(path, 'go', () => {
    void xs.tryRead(path).then(
      (v) => {
        if (v === undefined) return;
        onChange(v);
        if (v === 'stop') stopped();
      },
      () => undefined,
    );
  });
  ctx.report({ type: 'ready' });
  await done;
}

async function flood(ctx: GuestContext, p: Extract<XsGuestParams, { mode: 'flood' }>): Promise<FloodResult> {
  const xs = ctx.hv.xenstore;
  const value = 'v'.repeat(p.valueBytes);
  let on = false;
  let writes = 0;
  let errors = 0;
  let running: Promise<unknown> = Promise.resolve();
  const lane = async (i: number): Promise<void> => {
    while (on) {
      try {
        await xs.write(`data/flood/k${i % p.keys}`, value);
        writes++;
      } catch {
        errors++;
      }
    }
  };
  await followGo(ctx, (v) => {
    if (v === '1' && !on) {
      on = true;
      running = Promise.all(Array.from({ length: p.outstanding }, (_, i) => lane(i)));
    } else if (v !== '1') {
      on = false;
    }
  });
  await running;
  return { writes, errors };
}

async function burn(ctx: GuestContext): Promise<{ slices: number }> {
  let on = false;
  let stop = false;
  let slices = 0;
  let wake: (() => void) | undefined;
  const spinner = (async () => {
    while (!stop) {
      if (!on) {
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      // Spin in slices, yielding between them so the watch on data/go is still heard.
      const until = performance.now() + 20;
      while (performance.now() < until);
      slices++;
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  await followGo(ctx, (v) => {
    on = v === '1';
    stop = v === 'stop';
    wake?.();
  });
  wake?.();
  await spinner;
  return { slices };
}

async function neighbour(ctx: GuestContext, p: Extract<XsGuestParams, { mode: 'neighbour' }>): Promise<NeighbourResult> {
  const disk = ctx.disks.get('xvda');
  if (disk === undefined) throw new Error(`guest ${ctx.name} has no xvda`);
  const slots = Math.floor(p.span / p.bs);
  const rng = new Rng(5);
  const counts = new Array<number>(Math.ceil((p.seconds * 1000) / p.bucketMs) + 1).fill(0);
  const start = absNow();
  const deadline = start + p.seconds * 1000;
  let stop = false;
  const lane = async (): Promise<void> => {
    const iov = [ctx.allocBuffer(p.bs).subarray(0, p.bs)];
    while (!stop) {
      await disk.readv(rng.below(slots) * p.bs, iov);
      const now = absNow();
      if (now >= deadline) return;
      const b = Math.floor((now - start) / p.bucketMs);
      counts[b] = (counts[b] ?? 0) + 1;
    }
  };
  const lanes = Promise.all(Array.from({ length: p.iodepth }, () => lane()));
  await followGo(ctx, (v) => {
    if (v === 'report') ctx.report({ type: 'counts', start, bucketMs: p.bucketMs, counts: [...counts] });
    if (v === 'stop') stop = true;
  });
  await lanes;
  return { start, bucketMs: p.bucketMs, counts };
}

export default async function xenstoreGuest(ctx: GuestContext, params: unknown): Promise<unknown> {
  const p = params as XsGuestParams;
  switch (p.mode) {
    case 'flood':
      return flood(ctx, p);
    case 'burn':
      return burn(ctx);
    case 'neighbour':
      return neighbour(ctx, p);
  }
}
