// The bar panel of the comparison chart: one group per run (a bar per backend, side by side, each
// with its value on top), the groups' ratios in a row under their labels, summary groups (medians)
// set apart at the right behind a dashed line. Pure: returns SVG elements for a box.
import { escapeXml } from './escape.ts';
import { FONT, backendColour, emptyNote, fmt, frame, panelTitle, textWidth, yAxis, yLabel } from './chart-parts.ts';
import type { Box, Plot } from './chart-parts.ts';
import { formatTick, niceTicks } from './scale.ts';

export interface BarGroup {
  readonly label: string;
  /** A second, smaller line under the label (the guest type). */
  readonly detail?: string;
  /** One value per backend, in the panel's backend order; undefined where there is no figure. */
  readonly values: readonly (number | undefined)[];
  /** Written under the group, in the ratio row. */
  readonly ratio?: string;
  /** A summary of the runs (a median): drawn after them, set apart, with an outline. */
  readonly summary?: boolean;
}

export interface BarPanelInput {
  readonly title: string;
  /** The y axis name, unit included: 'Write (MB/s)'. */
  readonly yLabel: string;
  /** The backends' names; backend i is drawn in colour i. */
  readonly backends: readonly string[];
  readonly groups: readonly BarGroup[];
  /** Names the ratio row, left of it: 'ours / kernel'. */
  readonly ratioLabel: string;
  /** Said in the plot when there are no groups. */
  readonly empty: string;
}

const FONT_VALUE = 13;

/** A bar's value as printed: three significant figures at most, two decimals at least below 10. */
export function formatBarValue(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

export function barPanel(box: Box, plotTop: number, plotBottom: number, input: BarPanelInput): string[] {
  const groups = [...input.groups.filter((g) => g.summary !== true), ...input.groups.filter((g) => g.summary === true)];
  const values = groups.flatMap((g) => g.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  const maxValue = values.reduce((m, v) => Math.max(m, v), 0);
  const plotH = plotBottom - plotTop;
  const perGroup = Math.max(1, input.backends.length, ...groups.map((g) => g.values.length));
  // The left margin holds the tick labels (up to six characters) and the ratio row's name; it is
  // fixed before the ticks are known because the bars' width, hence the value labels' headroom and
  // so the ticks, depend on it.
  const left = box.x + 40 + Math.max(textWidth('0000.0', FONT.tick), textWidth(input.ratioLabel, FONT.label)) + 10;
  const runs = groups.filter((g) => g.summary !== true).length;
  const gapSlots = runs > 0 && runs < groups.length ? 0.5 : 0;
  const slot = (box.x + box.width - 16 - left) / Math.max(1, groups.length + gapSlots);
  const gap = Math.max(2, Math.min(8, slot * 0.04));
  const barW = Math.min(72, (slot * 0.76 - gap * (perGroup - 1)) / perGroup);
  // Value labels go above the bars, turned upright when wider than a bar: leave headroom for them.
  const labels = values.map((v) => formatBarValue(v));
  const upright = labels.some((l) => textWidth(l, FONT_VALUE) > barW + gap);
  const headroom = upright ? labels.reduce((n, l) => Math.max(n, textWidth(l, FONT_VALUE)), 0) + 12 : FONT_VALUE + 10;
  const yTicks = niceTicks(plotH > headroom ? (maxValue * plotH) / (plotH - headroom) : maxValue * 2, 6);
  const tickWidth = yTicks.values.reduce((n, v) => Math.max(n, textWidth(formatTick(v, yTicks.step), FONT.tick)), 0);
  const plot: Plot = { left, top: plotTop, right: box.x + box.width - 16, bottom: plotBottom };
  const yOf = (v: number): number => plot.bottom - (v / yTicks.max) * plotH;
  const centreOf = (i: number): number => plot.left + slot * (i + 0.5 + (i >= runs ? gapSlots : 0));

  const out: string[] = ['<g class="bar-panel">', panelTitle(plot, box.y + 22, input.title)];
  out.push(...backendChips(plot, box.y + 46, input.backends));
  if (groups.length === 0) {
    out.push(frame(plot), emptyNote(plot, input.empty), '</g>');
    return out;
  }

  out.push(...yAxis(plot, yTicks, yOf), yLabel(plot.left - 8 - tickWidth - 16, plot, input.yLabel));

  const rowLabel = plot.bottom + 22;
  const rowDetail = plot.bottom + 40;
  const rowRatio = plot.bottom + (groups.some((g) => g.detail !== undefined) ? 64 : 46);
  if (gapSlots > 0) {
    const x = fmt(plot.left + slot * (runs + gapSlots / 2));
    out.push(`<line class="summary-separator" x1="${x}" y1="${fmt(plot.top)}" x2="${x}" y2="${fmt(rowRatio + 6)}" stroke="#999999" stroke-dasharray="4 4"/>`);
  }
  out.push(
    `<text class="ratio-label" x="${fmt(plot.left - 8)}" y="${fmt(rowRatio)}" font-size="${FONT.label}" text-anchor="end" fill="#222222">${escapeXml(input.ratioLabel)}</text>`,
  );

  out.push('<g class="bars">');
  groups.forEach((g, i) => {
    const centre = centreOf(i);
    const pairW = perGroup * barW + (perGroup - 1) * gap;
    const summary = g.summary === true;
    for (let b = 0; b < perGroup; b++) {
      const x = centre - pairW / 2 + b * (barW + gap);
      const cx = x + barW / 2;
      const v = g.values[b];
      const backend = input.backends[b] ?? `backend ${b + 1}`;
      if (v === undefined || !Number.isFinite(v)) {
        out.push(
          `<text class="bar-missing" x="${fmt(cx)}" y="${fmt(plot.bottom - 6)}" font-size="${FONT_VALUE}" text-anchor="middle" fill="#888888">n/a</text>`,
        );
        continue;
      }
      const top = yOf(Math.max(0, v));
      out.push(
        `<rect class="bar${summary ? ' summary' : ''}" data-backend="${escapeXml(backend)}" data-group="${escapeXml(g.label)}" data-value="${v}" ` +
          `x="${fmt(x)}" y="${fmt(top)}" width="${fmt(barW)}" height="${fmt(plot.bottom - top)}" fill="${backendColour(b)}"` +
          `${summary ? ' stroke="#222222" stroke-width="1.5"' : ''}/>`,
      );
      const text = formatBarValue(v);
      out.push(
        upright
          ? `<text class="bar-value" x="${fmt(cx + FONT_VALUE * 0.35)}" y="${fmt(top - 6)}" font-size="${FONT_VALUE}" fill="#222222" transform="rotate(-90 ${fmt(cx + FONT_VALUE * 0.35)} ${fmt(top - 6)})">${text}</text>`
          : `<text class="bar-value" x="${fmt(cx)}" y="${fmt(top - 6)}" font-size="${FONT_VALUE}" text-anchor="middle" fill="#222222">${text}</text>`,
      );
    }
    const weight = summary ? ' font-weight="bold"' : '';
    out.push(
      `<text class="group-label" x="${fmt(centre)}" y="${fmt(rowLabel)}" font-size="${FONT.label}" text-anchor="middle" fill="#222222"${weight}>${escapeXml(g.label)}</text>`,
    );
    if (g.detail !== undefined) {
      out.push(
        `<text class="group-detail" x="${fmt(centre)}" y="${fmt(rowDetail)}" font-size="${FONT.small}" text-anchor="middle" fill="#666666">${escapeXml(g.detail)}</text>`,
      );
    }
    out.push(
      `<text class="ratio" data-group="${escapeXml(g.label)}" x="${fmt(centre)}" y="${fmt(rowRatio)}" font-size="${FONT.label + 1}" font-weight="bold" text-anchor="middle" fill="#222222">${escapeXml(g.ratio ?? '-')}</text>`,
    );
  });
  out.push(
    '</g>',
    `<line x1="${fmt(plot.left)}" y1="${fmt(plot.bottom)}" x2="${fmt(plot.right)}" y2="${fmt(plot.bottom)}" stroke="#444444" stroke-width="1.2"/>`,
    '</g>',
  );
  return out;
}

/** A swatch and name per backend, centred over the plot. */
function backendChips(plot: Plot, y: number, backends: readonly string[]): string[] {
  const widths = backends.map((b) => 22 + textWidth(b, FONT.legend));
  const total = widths.reduce((s, w) => s + w, 0) + 24 * Math.max(0, backends.length - 1);
  let x = (plot.left + plot.right) / 2 - total / 2;
  const out = [`<g class="bar-legend" font-size="${FONT.legend}" fill="#222222">`];
  backends.forEach((name, i) => {
    out.push(`<rect x="${fmt(x)}" y="${fmt(y - 11)}" width="14" height="14" fill="${backendColour(i)}"/>`);
    out.push(`<text class="bar-legend-entry" x="${fmt(x + 20)}" y="${fmt(y + 1)}">${escapeXml(name)}</text>`);
    x += (widths[i] as number) + 24;
  });
  out.push('</g>');
  return out;
}
