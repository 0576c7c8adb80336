// Linux native AIO (src/internal/linux-aio.ts) on a loop device: batching, the queue beyond the
// kernel's depth, vectored transfers, a refused request failing alone, short transfers; and which
// setup failures mean "unavailable" (io_setup's own refusals) and which are thrown (all others).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { allocAlignedShared } from '../src/block/aligned-memory.ts';
import {
  AIO_ABI_LAYOUT,
  AIO_DEPTH,
  SYSCALLS,
  ioSetupRefusal,
  linuxAioProblem,
  loadAioSyscalls,
  openLinuxAio,
  setUpLinuxAio,
  sharedLinuxAio,
} from '../src/internal/linux-aio.ts';
import type { AioSyscalls, CompletionWait, LinuxAio } from '../src/internal/linux-aio.ts';
import { compileAndReadValues, gccMissing } from './helpers-c.ts';
import { withLoopDevice } from './helpers-loop.ts';
import { stopIfMissing } from './helpers-tools.ts';
import type { Missing, Skippable } from './helpers-tools.ts';

const MiB = 1 << 20;
const BLOCK = 4096;

function pattern(buf: Uint8Array, seed: number): Uint8Array {
  for (let i = 0; i < buf.byteLength; i++) buf[i] = (seed * 131 + i * 7 + (i >>> 9)) & 0xff;
  return buf;
}

/** Linux AIO, when this kernel refuses it (sharedLinuxAio throws on anything but a refusal). */
function aioMissing(): Missing | undefined {
  if (sharedLinuxAio() !== undefined) return undefined;
  return { what: `Linux AIO (${linuxAioProblem() ?? 'unavailable'})`, install: 'a Linux kernel with CONFIG_AIO and room under /proc/sys/fs/aio-max-nr' };
}

/** Runs `body` on a loop device with the shared context (the default wait), or with a context of its own that waits on the pool. */
async function withAio(size: number, t: Skippable, body: (aio: LinuxAio, fd: number) => Promise<void>, wait?: CompletionWait): Promise<void> {
  if (stopIfMissing(t, aioMissing())) return;
  const aio = wait === undefined ? sharedLinuxAio()! : openLinuxAio(wait);
  await withLoopDevice(size, t, async (dev) => {
    const fd = fs.openSync(dev, fs.constants.O_RDWR | fs.constants.O_DIRECT);
    try {
      await body(aio, fd);
      assert.equal(aio.inflight, 0, 'nothing left in flight');
    } finally {
      fs.closeSync(fd);
      if (wait !== undefined) aio.close();
    }
  });
}

for (const wait of [undefined, 'pool'] as const)
  test(`linux aio${wait === undefined ? '' : ` (${wait} wait)`}: the requests of one turn go out in one io_submit, and read back as written`, async (t) => {
    await withAio(
      4 * MiB,
      t,
      async (aio, fd) => {
        const n = 64;
        const arena = allocAlignedShared(2 * n * BLOCK);
        const calls = aio.submitCalls;
        const taken = aio.submitted;
        const writes: Promise<number>[] = [];
        for (let i = 0; i < n; i++) writes.push(aio.writev(fd, i * 3 * BLOCK, [pattern(arena.subarray(i * BLOCK, (i + 1) * BLOCK), i)]));
        assert.deepEqual(await Promise.all(writes), new Array(n).fill(BLOCK));
        assert.equal(aio.submitCalls - calls, 1, 'one system call for the turn');
        assert.equal(aio.submitted - taken, n);
        // Completions are read from the kernel's ring in our memory, with no system call.
        assert.equal(aio.reapsFromRing, true);
        assert.equal(aio.geteventsCalls, 0, 'no io_getevents');

        // Read them back vectored: each block split over two buffers, far apart in memory.
        const back = arena.subarray(n * BLOCK);
        const reads: Promise<number>[] = [];
        for (let i = 0; i < n; i++) {
          const first = back.subarray(i * BLOCK, i * BLOCK + BLOCK / 2);
          const second = back.subarray((n - 1 - i) * BLOCK + BLOCK / 2, (n - i) * BLOCK);
          reads.push(aio.readv(fd, i * 3 * BLOCK, [first, second]));
        }
        assert.deepEqual(await Promise.all(reads), new Array(n).fill(BLOCK));
        for (let i = 0; i < n; i++) {
          const want = pattern(new Uint8Array(BLOCK), i);
          const got = Buffer.concat([back.subarray(i * BLOCK, i * BLOCK + BLOCK / 2), back.subarray((n - 1 - i) * BLOCK + BLOCK / 2, (n - i) * BLOCK)]);
          assert.ok(got.equals(want), `block ${i} reads back as written`);
        }
        // The blocks between were never written: still zero.
        const gap = allocAlignedShared(BLOCK);
        assert.equal(await aio.readv(fd, BLOCK, [gap]), BLOCK);
        assert.ok(gap.every((x) => x === 0));
      },
      wait,
    );
  });

test('linux aio: more requests than the kernel context holds wait their turn, none lost (and the completion ring wraps)', async (t) => {
  await withAio(16 * MiB, t, async (aio, fd) => {
    const n = AIO_DEPTH * 3 + 17; // more than the ring holds (about 1150 events for a 512-deep context): it wraps
    const size = 2 * BLOCK;
    const arena = allocAlignedShared(n * size);
    const writes: Promise<number>[] = [];
    for (let i = 0; i < n; i++) writes.push(aio.writev(fd, i * size, [pattern(arena.subarray(i * size, (i + 1) * size), i + 1000)]));
    assert.ok(aio.inflight <= n);
    assert.deepEqual(new Set(await Promise.all(writes)), new Set([size]));
    const back = allocAlignedShared(n * size);
    assert.equal(await aio.readv(fd, 0, [back]), n * size);
    for (let i = 0; i < n; i++) {
      assert.ok(Buffer.from(back.subarray(i * size, (i + 1) * size)).equals(pattern(new Uint8Array(size), i + 1000)), `request ${i}`);
    }
  });
});

test('linux aio: a request the kernel refuses fails alone; the rest of its turn lands', async (t) => {
  await withAio(MiB, t, async (aio, fd) => {
    const arena = allocAlignedShared(4 * BLOCK);
    const closed = fs.openSync('/dev/null', 'r');
    fs.closeSync(closed); // a descriptor number that is no longer open
    const good1 = aio.writev(fd, 0, [pattern(arena.subarray(0, BLOCK), 1)]);
    // Checked from the start: it fails during the flush, before anything below awaits it.
    const bad = assert.rejects(
      aio.writev(closed, 0, [arena.subarray(BLOCK, 2 * BLOCK)]),
      (err: NodeJS.ErrnoException) => err.code === 'EBADF' && err.errno === -9,
    );
    const good2 = aio.writev(fd, BLOCK, [pattern(arena.subarray(2 * BLOCK, 3 * BLOCK), 2)]);
    // Misaligned for O_DIRECT: the kernel answers EINVAL in the completion, not at submission.
    const misaligned = assert.rejects(aio.writev(fd, 100, [arena.subarray(3 * BLOCK, 4 * BLOCK)]), (err: NodeJS.ErrnoException) => err.code === 'EINVAL');
    assert.equal(await good1, BLOCK);
    await bad;
    assert.equal(await good2, BLOCK);
    await misaligned;
    const back = allocAlignedShared(2 * BLOCK);
    await aio.readv(fd, 0, [back]);
    assert.ok(Buffer.from(back.subarray(0, BLOCK)).equals(pattern(new Uint8Array(BLOCK), 1)));
    assert.ok(Buffer.from(back.subarray(BLOCK)).equals(pattern(new Uint8Array(BLOCK), 2)));
  });
});

test('linux aio: a read across the end of the device comes back short, with the bytes there are', async (t) => {
  await withAio(MiB, t, async (aio, fd) => {
    const tail = pattern(allocAlignedShared(BLOCK), 9);
    assert.equal(await aio.writev(fd, MiB - BLOCK, [tail]), BLOCK);
    const back = allocAlignedShared(4 * BLOCK);
    assert.equal(await aio.readv(fd, MiB - BLOCK, [back]), BLOCK);
    assert.ok(Buffer.from(back.subarray(0, BLOCK)).equals(tail));
    assert.equal(await aio.readv(fd, MiB, [back]), 0, 'nothing past the end');
  });
});

test("linux aio: our struct iocb and io_event packing and system call numbers are the kernel header's", (t) => {
  if (stopIfMissing(t, gccMissing())) return;
  const c = compileAndReadValues(resolve(dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/aio-layout.c'));
  for (const [name, value] of Object.entries(AIO_ABI_LAYOUT)) assert.equal(value, c[name], name);
  const nr = SYSCALLS[process.arch];
  if (nr !== undefined) {
    assert.deepEqual(nr, { setup: c['SYS_io_setup'], destroy: c['SYS_io_destroy'], getevents: c['SYS_io_getevents'], submit: c['SYS_io_submit'] });
  }
});

test('linux aio: a process whose I/O is done exits (the completion wait holds the event loop only while requests are in flight)', (t) => {
  if (stopIfMissing(t, aioMissing())) return;
  const dir = fs.mkdtempSync(join(tmpdir(), 'aio-exit-'));
  try {
    const aioModule = pathToFileURL(resolve(dirname(fileURLToPath(import.meta.url)), '../src/internal/linux-aio.js')).href;
    const script = join(dir, 'exit.mjs');
    // A regular file without O_DIRECT: io_submit does the write itself, the completion still goes through the eventfd.
    fs.writeFileSync(
      script,
      `import fs from 'node:fs';
import { sharedLinuxAio } from ${JSON.stringify(aioModule)};
const fd = fs.openSync(${JSON.stringify(join(dir, 'data'))}, 'w+');
const n = await sharedLinuxAio().writev(fd, 0, [new Uint8Array(4096).fill(7)]);
console.log('wrote', n);
`,
    );
    const run = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(run.signal, null, 'the process hung after its I/O');
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'wrote 4096');
    assert.equal(fs.readFileSync(join(dir, 'data')).length, 4096);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Stand-in system calls: io_setup and eventfd fail (or throw) as told; calls are recorded. */
function fakeSyscalls(o: { setup?: () => number; setupErrno?: number; eventfd?: () => number; eventfdErrno?: number }): AioSyscalls & { calls: string[] } {
  const calls: string[] = [];
  let errno = 0;
  const nr = { setup: 1, destroy: 2, getevents: 3, submit: 4 };
  return {
    calls,
    nr,
    ioSetup: () => {
      calls.push('io_setup');
      errno = o.setupErrno ?? 0;
      return o.setup?.() ?? 0;
    },
    ioDestroy: () => {
      calls.push('io_destroy');
      return 0;
    },
    ioSubmit: () => -1,
    ioGetevents: () => -1,
    eventfd: () => {
      calls.push('eventfd');
      errno = o.eventfdErrno ?? 0;
      return o.eventfd?.() ?? -1;
    },
    errno: () => errno,
  };
}

test('linux aio: only io_setup\'s own refusals (ENOSYS, EAGAIN, EPERM, ENOMEM) make it "unavailable", each saying why', () => {
  for (const [errno, words] of [
    [38, /ENOSYS.*no Linux AIO/],
    [11, /EAGAIN.*aio-max-nr/],
    [1, /EPERM/],
    [12, /ENOMEM/],
  ] as const) {
    const fake = fakeSyscalls({ setup: () => -1, setupErrno: errno });
    const made = setUpLinuxAio(fake, 'pool');
    assert.equal(typeof made, 'string', `errno ${errno}`);
    assert.match(made as string, /^Linux AIO is unavailable: io_setup: /);
    assert.match(made as string, words);
    assert.deepEqual(fake.calls, ['io_setup'], 'nothing else was set up');
  }
});

test('linux aio: any other setup failure is thrown, and leaves nothing open', () => {
  // io_setup's EINVAL is our bug (a bad nr_events or pointer), not a missing feature.
  assert.throws(
    () => setUpLinuxAio(fakeSyscalls({ setup: () => -1, setupErrno: 22 }), 'pool'),
    (e: NodeJS.ErrnoException) => e.code === 'EINVAL' && e.syscall === 'io_setup',
  );
  // An exception from the FFI layer itself (a bad prototype, a koffi bug) is not a refusal either.
  const broken = fakeSyscalls({
    setup: () => {
      throw new TypeError('koffi: unexpected argument');
    },
  });
  assert.throws(() => setUpLinuxAio(broken, 'pool'), /koffi: unexpected argument/);
  // eventfd refused after io_setup succeeded (out of descriptors): thrown, and the context destroyed.
  const noFd = fakeSyscalls({ eventfd: () => -1, eventfdErrno: 24 });
  assert.throws(
    () => setUpLinuxAio(noFd, 'pool'),
    (e: NodeJS.ErrnoException) => e.code === 'EMFILE' && e.syscall === 'eventfd',
  );
  assert.deepEqual(noFd.calls, ['io_setup', 'eventfd', 'io_destroy']);

  assert.equal(ioSetupRefusal(new TypeError('x')), undefined);
  assert.equal(
    ioSetupRefusal(Object.assign(new Error('EAGAIN: eventfd failed'), { errno: -11, syscall: 'eventfd' })),
    undefined,
    "EAGAIN from another call is not io_setup's",
  );
});

test('linux aio: a glibc that is here but that koffi cannot load is thrown, not "unavailable"', () => {
  const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
  if (glibc === undefined || SYSCALLS[process.arch] === undefined) {
    // A platform without glibc or without our syscall numbers: that is "unavailable", said in words.
    assert.equal(typeof loadAioSyscalls('libc-not-here.so.6'), 'string');
    return;
  }
  assert.throws(
    () => loadAioSyscalls('libc-not-here.so.6'),
    (e: Error) => e.message.startsWith(`Linux AIO: glibc ${glibc} is here but koffi cannot reach libc-not-here.so.6`),
  );
  assert.equal(typeof loadAioSyscalls(), 'object', 'the real libc loads');
});
