// The time-series panel of the comparison chart: each run's bandwidth per window as a step line
// (a window's value held across the window, which is what an average over it means), colour by
// backend, shade and dash by run, the legend right of the plot. Pure: returns SVG elements.
import { escapeXml } from './escape.ts';
import { FONT, emptyNote, fmt, frame, panelTitle, runStyle, textWidth, yAxis, yLabel } from './chart-parts.ts';
import type { Box, Plot } from './chart-parts.ts';
import { formatTick, niceTicks } from './scale.ts';

export interface StepWindow {
  readonly startMs: number;
  readonly endMs: number;
  readonly value: number;
}

export interface StepSeries {
  readonly label: string;
  /** Backend index: the colour (the bar panel's backend order). */
  readonly backend: number;
  /** 1, 2, ... within the backend: the shade and dash. */
  readonly run: number;
  /** Consecutive windows from t = 0, values in the panel's unit. */
  readonly windows: readonly StepWindow[];
  /** Said after the legend entry, for a run drawn without a line ('too short'). */
  readonly note?: string;
}

export interface StepPanelInput {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly StepSeries[];
  /** Said in the plot when no series has a window. */
  readonly empty: string;
}

const LEGEND_ROW = 22;

export function stepPanel(box: Box, plotTop: number, plotBottom: number, input: StepPanelInput): string[] {
  const series = input.series.map((s) => ({
    ...s,
    windows: s.windows.filter((w) => Number.isFinite(w.startMs) && Number.isFinite(w.endMs) && Number.isFinite(w.value)),
    ...runStyle(s.backend, s.run),
  }));
  const entries = series.map((s) => (s.note === undefined ? s.label : `${s.label} - ${s.note}`));
  const legendW = Math.min(380, Math.max(160, 60 + entries.reduce((n, e) => Math.max(n, textWidth(e, FONT.legend)), 0)));
  const drawn = series.filter((s) => s.windows.length > 0);
  let maxMs = 0;
  let maxValue = 0;
  for (const s of drawn) {
    for (const w of s.windows) {
      maxMs = Math.max(maxMs, w.endMs);
      maxValue = Math.max(maxValue, w.value);
    }
  }
  const xTicks = niceTicks(maxMs / 1000, 8, 0.02);
  const yTicks = niceTicks(maxValue * 1.05, 6);
  const tickWidth = yTicks.values.reduce((n, v) => Math.max(n, textWidth(formatTick(v, yTicks.step), FONT.tick)), 0);
  const plot: Plot = { left: box.x + 40 + tickWidth + 10, top: plotTop, right: box.x + box.width - legendW - 32, bottom: plotBottom };
  const plotW = plot.right - plot.left;
  const plotH = plot.bottom - plot.top;
  const xOf = (ms: number): number => plot.left + (ms / 1000 / xTicks.max) * plotW;
  const yOf = (v: number): number => plot.bottom - (v / yTicks.max) * plotH;

  const out: string[] = ['<g class="time-panel">', panelTitle(plot, box.y + 22, input.title)];
  if (drawn.length > 0) {
    out.push(...yAxis(plot, yTicks, yOf), yLabel(plot.left - 8 - tickWidth - 16, plot, input.yLabel));
    out.push('<g class="grid" stroke="#e3e3e3" stroke-width="1">');
    for (const v of xTicks.values) out.push(`<line x1="${fmt(xOf(v * 1000))}" y1="${fmt(plot.top)}" x2="${fmt(xOf(v * 1000))}" y2="${fmt(plot.bottom)}"/>`);
    out.push('</g>', `<g class="ticks" font-size="${FONT.tick}" fill="#333333">`);
    for (const v of xTicks.values) {
      out.push(`<text x="${fmt(xOf(v * 1000))}" y="${fmt(plot.bottom + FONT.tick + 8)}" text-anchor="middle">${formatTick(v, xTicks.step)}</text>`);
    }
    out.push('</g>');
    out.push(
      `<text class="axis-label x" x="${fmt((plot.left + plot.right) / 2)}" y="${fmt(plot.bottom + 48)}" font-size="${FONT.axis}" text-anchor="middle" fill="#222222">${escapeXml(input.xLabel)}</text>`,
    );
    out.push('<g class="series" fill="none" stroke-width="2.2" stroke-linejoin="round" stroke-linecap="butt">');
    for (const s of drawn) {
      out.push(
        `<path class="series-line" data-label="${escapeXml(s.label)}" stroke="${s.colour}"${s.dash === '' ? '' : ` stroke-dasharray="${s.dash}"`} ` +
          `d="${stepPath(s.windows, xOf, yOf)}"/>`,
      );
    }
    out.push('</g>');
  }
  out.push(frame(plot));
  if (drawn.length === 0) out.push(emptyNote(plot, input.empty));

  const lx = plot.right + 20;
  out.push(`<g class="legend" font-size="${FONT.legend}" fill="#222222">`);
  if (series.length > 0) {
    out.push(
      `<rect x="${fmt(lx)}" y="${fmt(plot.top)}" width="${fmt(legendW)}" height="${12 + series.length * LEGEND_ROW}" fill="#ffffff" stroke="#bbbbbb" rx="4"/>`,
    );
  }
  series.forEach((s, i) => {
    const y = plot.top + 6 + LEGEND_ROW * i + LEGEND_ROW / 2;
    const faint = s.windows.length === 0 ? ' stroke-opacity="0.35"' : '';
    out.push(
      `<line x1="${fmt(lx + 10)}" y1="${fmt(y)}" x2="${fmt(lx + 44)}" y2="${fmt(y)}" stroke="${s.colour}" stroke-width="2.6"${s.dash === '' ? '' : ` stroke-dasharray="${s.dash}"`}${faint}/>`,
    );
    out.push(
      `<text class="legend-entry" x="${fmt(lx + 52)}" y="${fmt(y + FONT.legend * 0.35)}"${s.windows.length === 0 ? ' fill="#777777"' : ''}>${escapeXml(entries[i] as string)}</text>`,
    );
  });
  out.push('</g>', '</g>');
  return out;
}

/** Each window a horizontal run at its value, joined by vertical steps; a gap starts a new subpath. */
export function stepPath(windows: readonly StepWindow[], xOf: (ms: number) => number, yOf: (v: number) => number): string {
  const parts: string[] = [];
  let previousEnd = Number.NaN;
  for (const w of windows) {
    const joined = Math.abs(w.startMs - previousEnd) < 1e-6;
    parts.push(`${joined ? 'V' : `M${fmt(xOf(w.startMs))}`} ${fmt(yOf(w.value))} H${fmt(xOf(w.endMs))}`);
    previousEnd = w.endMs;
  }
  return parts.join(' ');
}
