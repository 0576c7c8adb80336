// runtime= for a fio job (ours or real fio) from seconds. fio reads a bare number as whole seconds
// and drops the fraction: runtime=0.5 is 0, which with time_based=1 is "no runtime" and a job that
// does nothing, and runtime=1.5 is 1 s. Milliseconds keep what was asked.

/** `runtime` as fio (and our job-file parser) read it exactly: '500ms', '1500ms'. */
export function fioRuntime(seconds: number): string {
  if (!(seconds > 0) || !Number.isFinite(seconds)) throw new RangeError(`fio runtime: ${seconds} is not a positive number of seconds`);
  return `${Math.max(1, Math.round(seconds * 1000))}ms`;
}
