// The ini layer of fio 3.33 (init.c __parse_jobs_ini): sections, comments, include splicing.
// Produces raw option lines per section; values are interpreted later (resolve.ts).
import { FioParseError } from './errors.ts';

export interface OptionLine {
  /** Trimmed line with comments cut: "bs=4k", "bs= 8k", "norandommap". */
  readonly text: string;
  /** "file:line" of the line (of the included file when spliced). */
  readonly where: string;
}

export interface Section {
  readonly name: string;
  readonly global: boolean;
  readonly where: string;
  readonly fileIndex: number;
  readonly lines: OptionLine[];
}

export type IncludeReader = (path: string, fromFile: string) => string | undefined;

const MAX_INCLUDE_DEPTH = 32;

/** strip_blank_end: cut at the first ';' and '#', then trailing blanks and control characters. */
export function stripBlankEnd(s: string): string {
  let t = s;
  const semi = t.indexOf(';');
  if (semi >= 0) t = t.slice(0, semi);
  const hash = t.indexOf('#');
  if (hash >= 0) t = t.slice(0, hash);
  // eslint-disable-next-line no-control-regex
  return t.replace(/[\s\x00-\x1f\x7f]+$/, '');
}

const stripBlankFront = (s: string): string => s.replace(/^\s+/, '');

/** is_empty_or_comment: nothing but blanks/control characters before an optional ';' or '#'. */
function isEmptyOrComment(s: string): boolean {
  for (const c of s) {
    if (c === ';' || c === '#') return true;
    // eslint-disable-next-line no-control-regex
    if (!/[\s\x00-\x1f\x7f]/.test(c)) return false;
  }
  return true;
}

function dirOf(path: string): string | null {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? null : path.slice(0, slash + 1);
}

export interface SplitResult {
  readonly sections: Section[];
  readonly warnings: string[];
}

/** Splits one job file into sections. */
export function splitSections(path: string, text: string, fileIndex: number, readInclude: IncludeReader | undefined): SplitResult {
  const sections: Section[] = [];
  const warnings: string[] = [];
  const lines = text.split('\n');
  let current: Section | null = null;
  // After an include that held a section fio stops collecting the section's lines (its inner loop
  // breaks); the lines that follow then count as "outside of [] job section".
  let closed = false;

  const splice = (incName: string, fromFile: string, where: string, into: OptionLine[], depth: number): 'ok' | 'section' => {
    if (depth > MAX_INCLUDE_DEPTH) throw new FioParseError(where, `include nesting deeper than ${MAX_INCLUDE_DEPTH} ('${incName}')`);
    let incPath = incName;
    let body = readInclude?.(incName, fromFile);
    const dir = dirOf(fromFile);
    if (body === undefined && dir !== null) {
      incPath = dir + incName;
      body = readInclude?.(incPath, fromFile);
    }
    if (body === undefined)
      throw new FioParseError(where, `include ${incName}: unable to open (looked in the working directory${dir !== null ? ` and ${dir}` : ''})`);
    const collected: OptionLine[] = [];
    const incLines = body.split('\n');
    for (let i = 0; i < incLines.length; i++) {
      const raw = incLines[i] ?? '';
      if (isEmptyOrComment(raw)) continue;
      const p = stripBlankFront(raw);
      const w = `${incPath}:${i + 1}`;
      if (p.startsWith('[')) {
        warnings.push(`${w}: No new sections in included files: fio 3.33 ignores ${incPath} and the rest of the section (as here)`);
        return 'section';
      }
      const t = stripBlankEnd(p);
      if (t.startsWith('include')) {
        if (splice(t.slice('include'.length + 1), incPath, w, collected, depth + 1) === 'section') return 'section';
        continue;
      }
      collected.push({ text: t, where: w });
    }
    into.push(...collected);
    return 'ok';
  };

  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? '';
    const where = `${path}:${i + 1}`;
    if (isEmptyOrComment(raw)) continue;
    const p = stripBlankFront(raw);
    if (p.startsWith('[')) {
      const header = stripBlankEnd(p);
      // sscanf("[%255[^\n]]") then the last character is dropped, whatever it is.
      const inner = header.slice(1, 256);
      if (inner.length === 0) throw new FioParseError(where, `option <${header}> outside of [] job section`);
      const name = inner.slice(0, -1);
      current = { name, global: name.startsWith('global'), where, fileIndex, lines: [] };
      sections.push(current);
      closed = false;
      continue;
    }
    const t = stripBlankEnd(p);
    if (current === null || closed) throw new FioParseError(where, `option <${t}> outside of [] job section`);
    if (t.startsWith('include')) {
      if (splice(t.slice('include'.length + 1), path, where, current.lines, 1) === 'section') closed = true;
      continue;
    }
    current.lines.push({ text: t, where });
  }
  return { sections, warnings };
}
