// Waiting on a xenstore key through a watch, for frontends that do the xenbus handshake themselves.
import type { XenstoreClient } from '../hypervisor/types.ts';

let watchTokens = 0;

/** Resolves with the value at `path` once `done(value)` holds (watch-driven); rejects after `timeoutMs`. */
export function waitForKey(xs: XenstoreClient, path: string, done: (value: string | undefined) => boolean, timeoutMs: number): Promise<string | undefined> {
  const token = `wait-for-key-${++watchTokens}`;
  return new Promise((resolve, reject) => {
    let finished = false;
    const finish = (err: Error | null, value?: string): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      void xs.unwatch(path, token).catch(() => undefined);
      if (err === null) resolve(value);
      else reject(err);
    };
    const timer = setTimeout(() => finish(new Error(`${path} did not reach the wanted value within ${timeoutMs} ms`)), timeoutMs);
    // The watch fires once at once (as Xen's do), so a key already there is seen.
    xs.watch(path, token, () => {
      xs.tryRead(path).then(
        (value) => {
          if (done(value)) finish(null, value);
        },
        () => undefined,
      );
    }).catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
  });
}
