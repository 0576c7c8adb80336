// Memory figures for "what does one more connected ring cost": the process's resident set, and this
// thread's V8 isolate (heap plus the ArrayBuffers it allocated), both after a full collection so
// that garbage left by the last step does not count. The isolate figure is the backend's own when
// the backend runs on this thread; the resident set also holds every worker's isolate.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface MemorySnapshot {
  readonly rss: number;
  /** heapUsed + external of this thread's isolate. */
  readonly isolate: number;
}

let gc: (() => void) | null | undefined;

/** A full collection on this thread, where V8 lets us ask for one (the flag can be set at run time). */
function collect(): void {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as () => void;
    } catch {
      gc = null;
    }
  }
  gc?.();
}

export function memorySnapshot(): MemorySnapshot {
  collect();
  const m = process.memoryUsage();
  return { rss: m.rss, isolate: m.heapUsed + m.external };
}
