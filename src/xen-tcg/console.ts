// The serial console of a harness boot, parsed as it streams. Pure: text chunks in, events out.
//
// dom0 writes (src/xen-tcg/scripts/dom0-init.sh), and relays each guest's console prefixed "G <tag>| " and the
// backend's log prefixed "SERVE| ":
//   BLKBACK-PHASE <text>
//   BLKBACK-RESULT {json}
//   BLKBACK-FILE-BEGIN <name> / verbatim lines / BLKBACK-FILE-END <name>
// Xen and the kernels may print between our lines, so markers are found anywhere in a line, and a
// file collects only the lines from the source (dom0, a guest, serve) that opened it.

export interface HarnessResult {
  readonly src: string;
  readonly check: string;
  readonly ok?: boolean;
  readonly guest?: string;
  readonly [key: string]: unknown;
}

export type ConsoleEvent =
  | { readonly kind: 'phase'; readonly source: string; readonly text: string }
  | { readonly kind: 'result'; readonly source: string; readonly result: HarnessResult }
  | { readonly kind: 'bad-result'; readonly source: string; readonly text: string; readonly error: string }
  | { readonly kind: 'file'; readonly source: string; readonly name: string; readonly text: string };

const MARKER = /BLKBACK-(PHASE|RESULT|FILE-BEGIN|FILE-END) ?(.*)$/;

export class ConsoleParser {
  #partial = '';
  readonly #open = new Map<string, { name: string; lines: string[] }>();

  /** Feed a chunk of console output; returns the events its complete lines make. */
  push(chunk: string): ConsoleEvent[] {
    const text = this.#partial + chunk;
    const lines = text.split('\n');
    this.#partial = lines.pop() as string;
    const events: ConsoleEvent[] = [];
    for (const line of lines) this.#line(line.replace(/\r/g, ''), events);
    return events;
  }

  /** The last line if it had no newline, and any file still open (a boot cut short). */
  end(): ConsoleEvent[] {
    const events: ConsoleEvent[] = [];
    if (this.#partial !== '') this.#line(this.#partial.replace(/\r/g, ''), events);
    this.#partial = '';
    for (const [source, file] of this.#open) {
      events.push({ kind: 'file', source, name: `${file.name} (truncated)`, text: file.lines.join('\n') });
    }
    this.#open.clear();
    return events;
  }

  #line(raw: string, events: ConsoleEvent[]): void {
    let source = 'dom0';
    let line = raw;
    const guest = /^G (\S+)\| ?(.*)$/.exec(raw);
    const serve = /^SERVE\| ?(.*)$/.exec(raw);
    if (guest !== null) {
      source = `guest:${guest[1] as string}`;
      line = guest[2] as string;
    } else if (serve !== null) {
      source = 'serve';
      line = serve[1] as string;
    }
    // dom0's CPU samples (BLKBACK-CPU, every 2 s) may fall between the lines of a file dom0 prints:
    // they belong to no file (the report reads them from the console log itself).
    if (source === 'dom0' && line.startsWith('BLKBACK-CPU ')) return;
    const m = MARKER.exec(line);
    const open = this.#open.get(source);
    if (open !== undefined) {
      // a file may hold marked lines itself (a guest's console log, relayed whole): only its own
      // END closes it
      if (m !== null && m[1] === 'FILE-END' && (m[2] as string).trim() === open.name) {
        this.#open.delete(source);
        // print_file adds a newline so that a file without one still ends its last line
        if (open.lines[open.lines.length - 1] === '') open.lines.pop();
        events.push({ kind: 'file', source, name: open.name, text: open.lines.join('\n') });
      } else {
        open.lines.push(line);
      }
      return;
    }
    if (m === null) return;
    const body = m[2] as string;
    switch (m[1]) {
      case 'PHASE':
        events.push({ kind: 'phase', source, text: body.trim() });
        break;
      case 'RESULT':
        try {
          const parsed = JSON.parse(body) as unknown;
          if (typeof parsed !== 'object' || parsed === null || typeof (parsed as { check?: unknown }).check !== 'string') {
            throw new Error('not an object with a "check"');
          }
          events.push({ kind: 'result', source, result: parsed as HarnessResult });
        } catch (e) {
          events.push({ kind: 'bad-result', source, text: body, error: (e as Error).message });
        }
        break;
      case 'FILE-BEGIN':
        this.#open.set(source, { name: body.trim(), lines: [] });
        break;
      default:
        break;
    }
  }
}
