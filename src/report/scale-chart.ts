// How one backend scales with its guests, as two panels side by side: total IOPS and fairness
// (max/min per-guest IOPS) against the number of guests, one line per configuration (workers
// value), each panel with its goal as a dashed line. Guests double from point to point, so the x
// axis spaces them evenly (a log2 axis). Pure: input in, SVG text out; svgToPng (png.ts) rasterises it.
import { CHART_FONT_FAMILY } from './bandwidth-chart.ts';
import { FONT, backendColour, chartOpening, emptyNote, fmt, frame, panelTitle, textWidth, yAxis, yLabel } from './chart-parts.ts';
import type { Box, Plot } from './chart-parts.ts';
import { escapeXml } from './escape.ts';
import { formatTick, niceTicks } from './scale.ts';

export interface ScalePoint {
  readonly guests: number;
  readonly iops: number;
  /** null where a guest did no I/O (an unbounded ratio): not drawn. */
  readonly fairness: number | null;
}

export interface ScaleSeries {
  /** Legend text: '1 worker'. */
  readonly label: string;
  readonly points: readonly ScalePoint[];
}

export interface ScaleGoalLine {
  readonly value: number;
  /** Written at the line's right end: 'goal ≤ 1.5'. */
  readonly label: string;
}

export interface ScaleChartInput {
  readonly title: string;
  readonly subtitle?: string;
  readonly series: readonly ScaleSeries[];
  readonly iopsGoal?: ScaleGoalLine;
  readonly fairnessGoal?: ScaleGoalLine;
}

export interface ScaleChartOptions {
  readonly width?: number;
  readonly height?: number;
}

interface PanelSpec {
  readonly title: string;
  readonly yLabel: string;
  readonly value: (p: ScalePoint) => number | null;
  /** Where the y axis starts (fairness starts at 1, its best). */
  readonly floor: number;
  readonly goal: ScaleGoalLine | undefined;
}

export function renderScaleChart(input: ScaleChartInput, opts: ScaleChartOptions = {}): string {
  const width = opts.width ?? 1400;
  const height = opts.height ?? 700;
  const top = input.subtitle === undefined ? 60 : 88;
  const guests = [...new Set(input.series.flatMap((s) => s.points.map((p) => p.guests)))].sort((a, b) => a - b);
  const half = width / 2;
  const out = chartOpening(width, height, CHART_FONT_FAMILY, input.title, input.subtitle);
  out.push(...legend(width / 2, top + 12, input.series));
  const panels: PanelSpec[] = [
    { title: 'Total IOPS', yLabel: 'IOPS (all guests)', value: (p) => p.iops, floor: 0, goal: input.iopsGoal },
    { title: 'Fairness', yLabel: 'max / min per-guest IOPS', value: (p) => p.fairness, floor: 1, goal: input.fairnessGoal },
  ];
  panels.forEach((spec, i) => {
    out.push(...panel({ x: i * half, y: top + 30, width: half, height: height - top - 30 }, spec, guests, input.series));
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function legend(centre: number, y: number, series: readonly ScaleSeries[]): string[] {
  const widths = series.map((s) => 46 + textWidth(s.label, FONT.legend));
  const total = widths.reduce((sum, w) => sum + w, 0) + 28 * Math.max(0, series.length - 1);
  let x = centre - total / 2;
  const out = [`<g class="legend" font-size="${FONT.legend}" fill="#222222">`];
  series.forEach((s, i) => {
    out.push(`<line x1="${fmt(x)}" y1="${fmt(y - 5)}" x2="${fmt(x + 36)}" y2="${fmt(y - 5)}" stroke="${backendColour(i)}" stroke-width="3"/>`);
    out.push(`<circle cx="${fmt(x + 18)}" cy="${fmt(y - 5)}" r="4.5" fill="${backendColour(i)}"/>`);
    out.push(`<text class="legend-entry" x="${fmt(x + 44)}" y="${fmt(y)}">${escapeXml(s.label)}</text>`);
    x += (widths[i] as number) + 28;
  });
  out.push('</g>');
  return out;
}

function panel(box: Box, spec: PanelSpec, guests: readonly number[], series: readonly ScaleSeries[]): string[] {
  const values = series.flatMap((s) => s.points.map(spec.value)).filter((v): v is number => v !== null && Number.isFinite(v));
  const maxValue = Math.max(spec.floor, spec.goal?.value ?? 0, ...values);
  const ticks = niceTicks((maxValue - spec.floor) * 1.08, 6);
  const shifted = { ...ticks, values: ticks.values.map((v) => v + spec.floor) };
  const tickWidth = shifted.values.reduce((n, v) => Math.max(n, textWidth(formatTick(v, ticks.step), FONT.tick)), 0);
  const plot: Plot = { left: box.x + 44 + tickWidth + 12, top: box.y + 44, right: box.x + box.width - 28, bottom: box.y + box.height - 64 };
  const yOf = (v: number): number => plot.bottom - ((v - spec.floor) / ticks.max) * (plot.bottom - plot.top);
  // Guests double from point to point: even spacing, a margin of half a step at each end.
  const step = (plot.right - plot.left) / Math.max(1, guests.length);
  const xOf = (g: number): number => plot.left + step * (guests.indexOf(g) + 0.5);

  const out: string[] = [`<g class="scale-panel" data-panel="${escapeXml(spec.title)}">`, panelTitle(plot, box.y + 26, spec.title)];
  if (values.length === 0) {
    out.push(frame(plot), emptyNote(plot, 'no data'), '</g>');
    return out;
  }
  out.push(...yAxis(plot, shifted, yOf), yLabel(plot.left - 8 - tickWidth - 18, plot, spec.yLabel));
  out.push(`<g class="x-ticks" font-size="${FONT.tick}" fill="#333333">`);
  for (const g of guests) out.push(`<text x="${fmt(xOf(g))}" y="${fmt(plot.bottom + FONT.tick + 8)}" text-anchor="middle">${g}</text>`);
  out.push('</g>');
  out.push(
    `<text class="axis-label x" x="${fmt((plot.left + plot.right) / 2)}" y="${fmt(plot.bottom + 48)}" font-size="${FONT.axis}" text-anchor="middle" fill="#222222">guests</text>`,
  );
  if (spec.goal !== undefined) {
    const y = fmt(yOf(spec.goal.value));
    out.push(
      `<line class="goal" x1="${fmt(plot.left)}" y1="${y}" x2="${fmt(plot.right)}" y2="${y}" stroke="#555555" stroke-width="1.5" stroke-dasharray="8 5"/>`,
      `<text class="goal-label" x="${fmt(plot.right - 6)}" y="${fmt(yOf(spec.goal.value) - 6)}" font-size="${FONT.small}" text-anchor="end" fill="#444444">${escapeXml(spec.goal.label)}</text>`,
    );
  }
  out.push('<g class="series" fill="none" stroke-width="2.6" stroke-linejoin="round">');
  series.forEach((s, i) => {
    const points = s.points.flatMap((p) => {
      const v = spec.value(p);
      return v === null || !Number.isFinite(v) ? [] : [[xOf(p.guests), yOf(v)] as const];
    });
    const colour = backendColour(i);
    if (points.length > 0)
      out.push(
        `<path class="series-line" data-label="${escapeXml(s.label)}" stroke="${colour}" d="${points.map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${fmt(x)} ${fmt(y)}`).join(' ')}"/>`,
      );
    for (const [x, y] of points) out.push(`<circle cx="${fmt(x)}" cy="${fmt(y)}" r="4.5" fill="${colour}" stroke="none"/>`);
  });
  out.push('</g>', frame(plot), '</g>');
  return out;
}
