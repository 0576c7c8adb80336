// The one error the job-file parser throws: a UsageError whose message starts with file:line.
import { UsageError } from '../../internal/errors.ts';

export class FioParseError extends UsageError {
  /** "jobs/x.fio:7", or the file name alone for file-level faults. */
  readonly where: string;
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'FioParseError';
    this.where = where;
  }
}
