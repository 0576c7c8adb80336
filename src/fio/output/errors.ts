// What fio says on stderr about failed jobs, whatever the output format: the io_u error line
// (offset, buflen, strerror), verify complaints, and our reason. A failed job's err= alone (all the
// JSON and terse outputs carry) says nothing of which I/O failed or why.
import type { JobResult } from '../stats.ts';

export function formatErrorReport(results: readonly JobResult[]): string {
  let out = '';
  for (const r of results) {
    if (r.error === 0) continue;
    const lines = r.errorReport ?? [];
    out += lines.length > 0 ? `${lines.join('\n')}\n` : `fio: ${r.job.name}: err=${r.error}${r.errorMessage === '' ? '' : ` (${r.errorMessage})`}\n`;
  }
  return out;
}
