// Calls into glibc through koffi, bound on first use rather than at import: a machine where koffi's
// native part is missing still runs everything that does not need the calls, and says why it cannot
// make them. Tests can make a binding behave as if it were unavailable.
import { createRequire } from 'node:module';

export type Koffi = typeof import('koffi');
export type Libc = ReturnType<Koffi['load']>;

export interface LibcBinding<T> {
  /** The bound calls, or undefined when they cannot be made here (then problem() says why). */
  get(): T | undefined;
  /** Why the calls cannot be made here (or a simulated reason), or undefined when they can. */
  problem(): string | undefined;
  /** Tests: behave as if unavailable for `reason`, or normally again (undefined). */
  simulate(reason: string | undefined): void;
}

/**
 * `unsupported` says why this platform cannot have the calls (or undefined); `bind` makes them from
 * koffi and libc.so.6. Either is asked once.
 */
export function libcBinding<T>(unsupported: () => string | undefined, bind: (koffi: Koffi, libc: Libc) => T): LibcBinding<T> {
  let bound: T | undefined;
  let problem: string | undefined;
  let simulated: string | undefined;
  const load = (): T | undefined => {
    if (bound !== undefined || problem !== undefined) return bound;
    problem = unsupported();
    if (problem !== undefined) return undefined;
    try {
      const koffi = createRequire(import.meta.url)('koffi') as Koffi;
      bound = bind(koffi, koffi.load('libc.so.6'));
    } catch (error) {
      problem = `cannot reach libc through koffi: ${(error as Error).message.split('\n')[0]}`;
    }
    return bound;
  };
  return {
    get: () => (simulated === undefined ? load() : undefined),
    problem: () => {
      if (simulated !== undefined) return simulated;
      load();
      return problem;
    },
    simulate: (reason) => {
      simulated = reason;
    },
  };
}
