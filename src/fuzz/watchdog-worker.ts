// The watchdog's thread (watchdog.ts): sleeps on the stop word, and when the main thread's beat
// has not moved for the limit, says so on stderr and ends the process with status 1.
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { workerData } from 'node:worker_threads';
import { WATCHDOG_BEAT, WATCHDOG_STOP } from './watchdog.ts';
import type { WatchdogData } from './watchdog.ts';

const data = workerData as WatchdogData;
const words = new Int32Array(data.state);
const POLL_MS = 200;

function exitProcess(status: number): never {
  // process.exit() in a worker ends only the worker: _exit(2) ends the process, whatever its main
  // thread is doing. SIGKILL if libc cannot be reached.
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const exit = koffi.load('libc.so.6').func('void _exit(int)') as (code: number) => void;
    exit(status);
  } catch {
    // fall through
  }
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
}

let beat = Atomics.load(words, WATCHDOG_BEAT);
let movedAt = Date.now();
while (Atomics.load(words, WATCHDOG_STOP) === 0) {
  Atomics.wait(words, WATCHDOG_STOP, 0, POLL_MS);
  const now = Date.now();
  const seen = Atomics.load(words, WATCHDOG_BEAT);
  if (seen !== beat) {
    beat = seen;
    movedAt = now;
    continue;
  }
  if (now - movedAt >= data.limitMs && Atomics.load(words, WATCHDOG_STOP) === 0) {
    const bytes = new Uint8Array(data.context);
    const end = bytes.indexOf(0);
    const context = new TextDecoder().decode(bytes.subarray(0, end < 0 ? bytes.length : end));
    writeSync(
      2,
      `\nfuzz: HANG: the backend's thread has not run for ${((now - movedAt) / 1000).toFixed(1)} s (${context}); ending the campaign\nfuzz: 1 finding: hang\n`,
    );
    exitProcess(1);
  }
}
