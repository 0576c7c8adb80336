// The reproduce report: one self-contained HTML page (inline CSS, inline SVG, no scripts, nothing
// fetched), readable offline and attachable to a mail as the seed's PNGs were.
import { UsageError } from '../internal/errors.ts';
import { escapeXml } from './escape.ts';
import { formatCell, numericColumns } from './table.ts';
import type { Cell } from './table.ts';

export interface NamedText {
  readonly name: string;
  readonly text: string;
}

export interface ReportTable {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly Cell[])[];
  /** What the figures are and how they were made (plain text, escaped). */
  readonly caption?: string;
}

export interface ReportInput {
  readonly title: string;
  readonly setup: {
    /** Shown as a two-column table; objects print as JSON. */
    readonly machine: Readonly<Record<string, unknown>>;
    /** Plain-text lines: what stood in for what, caveats. */
    readonly notes: readonly string[];
    readonly configs: readonly NamedText[];
    readonly jobs: readonly NamedText[];
  };
  /** `svg` as renderBandwidthChart returns it; inlined as is. */
  readonly plots: readonly { readonly title: string; readonly svg: string; readonly caption?: string }[];
  readonly table: { readonly columns: readonly string[]; readonly rows: readonly (readonly Cell[])[] };
  /** More results, each under its own heading after the main table (CPU per I/O, system calls). */
  readonly tables?: readonly ReportTable[];
  /** Plain text (escaped); blank lines separate paragraphs. */
  readonly extra?: string;
}

const CSS = `
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
  margin: 0 auto; max-width: 1180px; padding: 1.5rem 2rem 4rem; color: #1d1d1f; line-height: 1.5; background: #fff; }
h1 { font-size: 1.8rem; margin: 0 0 .3rem; }
h2 { font-size: 1.35rem; margin: 2.4rem 0 .8rem; padding-bottom: .25rem; border-bottom: 2px solid #e4e4e7; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
nav { font-size: .95rem; color: #555; }
nav a { color: #1f5fa8; margin-right: 1rem; text-decoration: none; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .95rem; }
th, td { padding: .35rem .8rem; border-bottom: 1px solid #e4e4e7; text-align: left; vertical-align: top; }
th { background: #f4f4f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { background: none; color: #555; font-weight: 500; white-space: nowrap; }
table.kv td { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .9rem; }
ul.notes li { margin: .25rem 0; }
figure { margin: 1.2rem 0 2rem; }
figure svg { display: block; width: 100%; height: auto; border: 1px solid #e4e4e7; border-radius: 6px; }
figcaption { color: #444; font-size: .95rem; margin-top: .45rem; }
pre { background: #f6f8fa; border: 1px solid #e4e4e7; border-radius: 6px; padding: .8rem 1rem; overflow-x: auto;
  font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .85rem; line-height: 1.4; }
p.none { color: #777; font-style: italic; }
`;

export function renderReport(input: ReportInput): string {
  const out: string[] = [];
  out.push('<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">');
  out.push('<meta name="viewport" content="width=device-width, initial-scale=1">');
  out.push(`<title>${escapeXml(input.title)}</title>`, `<style>${CSS}</style>`, '</head>', '<body>');
  out.push(`<h1>${escapeXml(input.title)}</h1>`);
  const sections: [string, string][] = [
    ['setup', 'Setup'],
    ['plots', 'Plots'],
    ['results', 'Results'],
    ['configs', 'Guest configurations'],
    ['jobs', 'Job files'],
  ];
  if (input.extra !== undefined && input.extra.trim() !== '') sections.push(['notes', 'Notes']);
  out.push(`<nav>${sections.map(([id, name]) => `<a href="#${id}">${escapeXml(name)}</a>`).join('')}</nav>`);

  out.push('<section id="setup">', '<h2>Setup</h2>');
  const machine = Object.entries(input.setup.machine);
  if (machine.length > 0) {
    out.push('<table class="kv">');
    for (const [key, value] of machine) out.push(`<tr><th>${escapeXml(key)}</th><td>${escapeXml(showValue(value))}</td></tr>`);
    out.push('</table>');
  }
  if (input.setup.notes.length > 0) {
    out.push('<ul class="notes">');
    for (const note of input.setup.notes) out.push(`<li>${escapeXml(note)}</li>`);
    out.push('</ul>');
  }
  out.push('</section>');

  out.push('<section id="plots">', '<h2>Plots</h2>');
  if (input.plots.length === 0) out.push('<p class="none">No plots.</p>');
  input.plots.forEach((plot, i) => {
    out.push('<figure>', inlineSvg(plot.svg, `plot ${i + 1} ('${plot.title}')`));
    const caption = plot.caption === undefined ? plot.title : `${plot.title}: ${plot.caption}`;
    out.push(`<figcaption>${escapeXml(caption)}</figcaption>`, '</figure>');
  });
  out.push('</section>');

  out.push('<section id="results">', '<h2>Results</h2>', renderTable(input.table.columns, input.table.rows));
  for (const table of input.tables ?? []) {
    out.push(`<h3>${escapeXml(table.title)}</h3>`, renderTable(table.columns, table.rows));
    if (table.caption !== undefined) out.push(`<p>${escapeXml(table.caption)}</p>`);
  }
  out.push('</section>');

  out.push('<section id="configs">', '<h2>Guest configurations</h2>', ...namedTexts(input.setup.configs), '</section>');
  out.push('<section id="jobs">', '<h2>Job files</h2>', ...namedTexts(input.setup.jobs), '</section>');

  if (input.extra !== undefined && input.extra.trim() !== '') {
    out.push('<section id="notes">', '<h2>Notes</h2>');
    for (const para of input.extra.trim().split(/\n\s*\n/)) out.push(`<p>${escapeXml(para.trim()).replace(/\n/g, '<br>')}</p>`);
    out.push('</section>');
  }
  out.push('</body>', '</html>');
  return out.join('\n') + '\n';
}

function showValue(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === undefined) return '';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value === null) return String(value);
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

function renderTable(columns: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const right = numericColumns(columns.length, rows);
  const cls = (i: number): string => (right[i] === true ? ' class="num"' : '');
  const out = ['<table class="results">', `<thead><tr>${columns.map((c, i) => `<th${cls(i)}>${escapeXml(c)}</th>`).join('')}</tr></thead>`, '<tbody>'];
  for (const row of rows) out.push(`<tr>${columns.map((_, i) => `<td${cls(i)}>${escapeXml(formatCell(row[i] ?? ''))}</td>`).join('')}</tr>`);
  out.push('</tbody>', '</table>');
  return out.join('\n');
}

function namedTexts(items: readonly NamedText[]): string[] {
  if (items.length === 0) return ['<p class="none">None.</p>'];
  return items.flatMap((item) => [`<h3>${escapeXml(item.name)}</h3>`, `<pre>${escapeXml(item.text)}</pre>`]);
}

/** The <svg> element alone (no XML prolog or doctype), refusing anything that would run or fetch. */
function inlineSvg(svg: string, what: string): string {
  const start = svg.search(/<svg[\s>]/);
  const end = svg.lastIndexOf('</svg>');
  if (start < 0 || end < start) throw new UsageError(`renderReport: ${what} is not an SVG document`);
  const element = svg.slice(start, end + '</svg>'.length);
  if (/<script|\son[a-z]+\s*=|<foreignObject|(?:href|src)\s*=\s*["'](?!#)/i.test(element)) {
    throw new UsageError(`renderReport: ${what} has scripts, event handlers or external references; the report must stand alone`);
  }
  return element;
}
