// The file-system include reader for parseJobFiles (the parser itself does no I/O).
import { readFileSync } from 'node:fs';

export function readIncludeFromFs(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
