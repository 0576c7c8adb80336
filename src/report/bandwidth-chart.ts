// Bandwidth over time as a hand-written SVG line chart, in the manner of fio_generate_plots (the
// seed's randw-bw.png / iometer-bw.png): one line per backend and run, a colour per backend (group)
// and a dash pattern and shade per run, the legend outside the plot so it never covers a line.
// Pure: string in, string out; svgToPng (png.ts) rasterises it.
import { fmt, runStyle } from './chart-parts.ts';
import { escapeXml } from './escape.ts';
import { bandwidthUnitFor, formatTick, niceTicks } from './scale.ts';

export interface ChartSeries {
  readonly label: string;
  /** Lines of one group (a backend such as 'phy' or 'file') share a colour. */
  readonly group: string;
  /** Run number within the group; picks the dash pattern and shade. Default: order within the group. */
  readonly run?: number;
  /** [time in ms, bandwidth in KiB/s] — fio's bw log units. */
  readonly points: readonly (readonly [number, number])[];
}

export interface BandwidthChartInput {
  readonly title: string;
  /** Axis names; the unit is appended: "Time (s)", "Bandwidth (MiB/s)". */
  readonly xLabel?: string;
  readonly yLabel?: string;
  readonly series: readonly ChartSeries[];
}

export interface ChartOptions {
  readonly width?: number;
  readonly height?: number;
}

export const CHART_FONT_FAMILY = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';

const FONT_TITLE = 24;
const FONT_AXIS = 17;
const FONT_TICK = 14;
const FONT_LEGEND = 15;
const LEGEND_ROW = 24;

export function renderBandwidthChart(input: BandwidthChartInput, opts: ChartOptions = {}): string {
  const width = opts.width ?? 1280;
  const height = opts.height ?? 768;

  const styled = styleSeries(input.series);
  let maxMs = 0;
  let maxKiB = 0;
  for (const s of input.series) {
    for (const [t, v] of s.points) {
      if (!Number.isFinite(t) || !Number.isFinite(v)) continue;
      if (t > maxMs) maxMs = t;
      if (v > maxKiB) maxKiB = v;
    }
  }
  const unit = bandwidthUnitFor(maxKiB);
  const xTicks = niceTicks(maxMs / 1000, 10, 0.02);
  const yTicks = niceTicks((maxKiB / unit.kib) * 1.05, 8);

  const longest = styled.reduce((n, s) => Math.max(n, s.label.length), 0);
  const legendWidth = Math.min(340, Math.max(150, 62 + Math.ceil(longest * FONT_LEGEND * 0.6)));
  const yTickWidth = yTicks.values.reduce((n, v) => Math.max(n, formatTick(v, yTicks.step).length), 1);
  const plot = {
    left: 48 + Math.ceil(yTickWidth * FONT_TICK * 0.62) + 14,
    top: 70,
    right: width - legendWidth - 40,
    bottom: height - 78,
  };
  const plotW = plot.right - plot.left;
  const plotH = plot.bottom - plot.top;
  const xOf = (seconds: number): number => plot.left + (seconds / xTicks.max) * plotW;
  const yOf = (value: number): number => plot.bottom - (value / yTicks.max) * plotH;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="${CHART_FONT_FAMILY}" role="img" aria-label="${escapeXml(input.title)}">`,
  );
  out.push(`<title>${escapeXml(input.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(
    `<text class="chart-title" x="${fmt((plot.left + plot.right) / 2)}" y="42" font-size="${FONT_TITLE}" ` +
      `font-weight="bold" text-anchor="middle" fill="#222222">${escapeXml(input.title)}</text>`,
  );

  // Grid and tick labels.
  out.push('<g class="grid" stroke="#e3e3e3" stroke-width="1">');
  for (const v of yTicks.values) out.push(`<line x1="${plot.left}" y1="${fmt(yOf(v))}" x2="${plot.right}" y2="${fmt(yOf(v))}"/>`);
  for (const v of xTicks.values) out.push(`<line x1="${fmt(xOf(v))}" y1="${plot.top}" x2="${fmt(xOf(v))}" y2="${plot.bottom}"/>`);
  out.push('</g>');
  out.push(`<g class="ticks" font-size="${FONT_TICK}" fill="#333333">`);
  for (const v of yTicks.values) {
    out.push(`<text x="${plot.left - 10}" y="${fmt(yOf(v) + FONT_TICK * 0.35)}" text-anchor="end">${formatTick(v, yTicks.step)}</text>`);
  }
  for (const v of xTicks.values) {
    out.push(`<text x="${fmt(xOf(v))}" y="${plot.bottom + FONT_TICK + 8}" text-anchor="middle">${formatTick(v, xTicks.step)}</text>`);
  }
  out.push('</g>');

  const xLabel = `${input.xLabel ?? 'Time'} (s)`;
  const yLabel = `${input.yLabel ?? 'Bandwidth'} (${unit.name})`;
  out.push(
    `<text class="axis-label x" x="${fmt((plot.left + plot.right) / 2)}" y="${height - 26}" font-size="${FONT_AXIS}" ` +
      `text-anchor="middle" fill="#222222">${escapeXml(xLabel)}</text>`,
  );
  const yMid = fmt((plot.top + plot.bottom) / 2);
  out.push(
    `<text class="axis-label y" x="28" y="${yMid}" font-size="${FONT_AXIS}" text-anchor="middle" fill="#222222" ` +
      `transform="rotate(-90 28 ${yMid})">${escapeXml(yLabel)}</text>`,
  );

  // The lines, then the frame over their ends.
  out.push('<g class="series" fill="none" stroke-width="2.2" stroke-linejoin="round" stroke-linecap="round">');
  for (const s of styled) {
    const d = pathData(
      s.points,
      (t) => xOf(t / 1000),
      (v) => yOf(v / unit.kib),
    );
    out.push(
      `<path class="series-line" data-group="${escapeXml(s.group)}" data-label="${escapeXml(s.label)}" ` +
        `stroke="${s.colour}"${s.dash === '' ? '' : ` stroke-dasharray="${s.dash}"`} d="${d}"/>`,
    );
  }
  out.push('</g>');
  out.push(`<rect x="${plot.left}" y="${plot.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#444444" stroke-width="1.2"/>`);
  if (styled.every((s) => s.points.length === 0)) {
    out.push(
      `<text x="${fmt((plot.left + plot.right) / 2)}" y="${fmt((plot.top + plot.bottom) / 2)}" font-size="${FONT_AXIS}" ` +
        `text-anchor="middle" fill="#888888">no data</text>`,
    );
  }

  // Legend: right of the plot area, one row per line.
  const lx = plot.right + 24;
  const ly = plot.top;
  const legendHeight = 16 + styled.length * LEGEND_ROW;
  out.push(`<g class="legend" font-size="${FONT_LEGEND}" fill="#222222">`);
  out.push(`<rect x="${lx}" y="${ly}" width="${legendWidth}" height="${legendHeight}" fill="#ffffff" stroke="#bbbbbb" rx="4"/>`);
  styled.forEach((s, i) => {
    const y = ly + 8 + LEGEND_ROW * i + LEGEND_ROW / 2;
    out.push(
      `<line x1="${lx + 12}" y1="${y}" x2="${lx + 48}" y2="${y}" stroke="${s.colour}" stroke-width="2.6"` +
        `${s.dash === '' ? '' : ` stroke-dasharray="${s.dash}"`}/>`,
    );
    out.push(`<text class="legend-entry" x="${lx + 56}" y="${fmt(y + FONT_LEGEND * 0.35)}">${escapeXml(s.label)}</text>`);
  });
  out.push('</g>');
  out.push('</svg>');
  return out.join('\n') + '\n';
}

interface StyledSeries {
  readonly label: string;
  readonly group: string;
  readonly colour: string;
  readonly dash: string;
  readonly points: readonly (readonly [number, number])[];
}

/** Colour by group (in order of first appearance), dash and shade by run; legend order = group order. */
function styleSeries(series: readonly ChartSeries[]): StyledSeries[] {
  const groups: string[] = [];
  const runsSeen = new Map<string, number>();
  const styled: (StyledSeries & { groupIndex: number; order: number })[] = [];
  series.forEach((s, order) => {
    let groupIndex = groups.indexOf(s.group);
    if (groupIndex < 0) groupIndex = groups.push(s.group) - 1;
    const nth = runsSeen.get(s.group) ?? 0;
    runsSeen.set(s.group, nth + 1);
    const run = s.run !== undefined && Number.isInteger(s.run) && s.run >= 1 ? s.run - 1 : nth;
    const { colour, dash } = runStyle(groupIndex, run + 1);
    styled.push({
      label: s.label,
      group: s.group,
      colour,
      dash,
      points: s.points.filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v)),
      groupIndex,
      order,
    });
  });
  styled.sort((a, b) => a.groupIndex - b.groupIndex || a.order - b.order);
  return styled;
}

function pathData(points: readonly (readonly [number, number])[], x: (t: number) => number, y: (v: number) => number): string {
  if (points.length === 0) return '';
  const parts = points.map(([t, v], i) => `${i === 0 ? 'M' : 'L'}${fmt(x(t))} ${fmt(y(v))}`);
  // A lone point still shows: a zero-length segment with round caps draws a dot.
  if (points.length === 1) parts.push('l0.01 0');
  return parts.join(' ');
}
