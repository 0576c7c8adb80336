// Result tables as aligned plain text (the terminal); the HTML report renders the same cells.

export type Cell = string | number;

/** Numbers print with precision that suits their size: 1234, 56.7, 3.14, 0.853. */
export function formatCell(cell: Cell): string {
  if (typeof cell === 'string') return cell;
  if (!Number.isFinite(cell) || Number.isInteger(cell)) return String(cell);
  const abs = Math.abs(cell);
  return cell.toFixed(abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3);
}

const NUMBER_LIKE = /^[-+]?\d[\d.,]*\s?[A-Za-z/%]*$/;

/** A column reads as numbers (numbers, "1.2GiB/s", "85%", or "-" for none): align it right. */
export function numericColumns(columnCount: number, rows: readonly (readonly Cell[])[]): boolean[] {
  return Array.from({ length: columnCount }, (_, i) => {
    let seen = false;
    for (const row of rows) {
      const cell = row[i];
      if (cell === undefined || cell === '' || cell === '-') continue;
      if (typeof cell === 'string' && !NUMBER_LIKE.test(cell)) return false;
      seen = true;
    }
    return seen;
  });
}

/** Header, a dashed rule, then the rows, columns two spaces apart. */
export function formatTable(columns: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const text = rows.map((row) => columns.map((_, i) => formatCell(row[i] ?? '')));
  const widths = columns.map((c, i) => text.reduce((w, row) => Math.max(w, (row[i] as string).length), c.length));
  const right = numericColumns(columns.length, rows);
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (right[i] === true ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  return [line(columns), widths.map((w) => '-'.repeat(w)).join('  '), ...text.map(line)].join('\n') + '\n';
}
