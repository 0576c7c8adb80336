// What the charts share: the palette (a hue per backend or group, run shades and dashes, so a
// backend looks the same in every plot), number formatting for SVG
// coordinates, and a y axis with grid and tick labels.
import { escapeXml } from './escape.ts';
import { formatTick } from './scale.ts';
import type { Ticks } from './scale.ts';

export const BACKEND_COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#7f7f7f'] as const;
export const RUN_DASHES = ['', '12 6', '3 5', '16 5 3 5', '8 3 2 3 2 3'] as const;
const RUN_LIGHTEN = [0, 0.28, 0.5, 0.15, 0.4] as const;

export const FONT = { title: 24, subtitle: 18, panel: 18, axis: 16, tick: 14, legend: 14, label: 14, small: 12 } as const;

export interface Box {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

export interface Plot {
  readonly left: number;
  readonly top: number;
  readonly right: number;
  readonly bottom: number;
}

export function backendColour(backend: number): string {
  return BACKEND_COLOURS[backend % BACKEND_COLOURS.length] as string;
}

/** Run 1 in the backend's colour and a solid line, later runs lighter and dashed. */
export function runStyle(backend: number, run: number): { colour: string; dash: string } {
  const r = Math.max(0, run - 1);
  return {
    colour: lighten(backendColour(backend), RUN_LIGHTEN[r % RUN_LIGHTEN.length] as number),
    dash: RUN_DASHES[r % RUN_DASHES.length] as string,
  };
}

export function lighten(hex: string, amount: number): string {
  const n = Number.parseInt(hex.slice(1), 16);
  const mix = (c: number): number => Math.round(c + (255 - c) * amount);
  return `#${((mix((n >> 16) & 0xff) << 16) | (mix((n >> 8) & 0xff) << 8) | mix(n & 0xff)).toString(16).padStart(6, '0')}`;
}

/** A coordinate to one decimal. */
export function fmt(n: number): string {
  return (Math.round(n * 10) / 10).toString();
}

/** Rough width of a text in the sans fonts the charts name: wide enough to leave room, never exact. */
export function textWidth(text: string, size: number): number {
  return Math.ceil(text.length * size * 0.6);
}

/** Horizontal grid lines and the y tick labels left of the plot. */
export function yAxis(plot: Plot, ticks: Ticks, yOf: (v: number) => number): string[] {
  const out = ['<g class="grid" stroke="#e3e3e3" stroke-width="1">'];
  for (const v of ticks.values) out.push(`<line x1="${fmt(plot.left)}" y1="${fmt(yOf(v))}" x2="${fmt(plot.right)}" y2="${fmt(yOf(v))}"/>`);
  out.push('</g>', `<g class="ticks" font-size="${FONT.tick}" fill="#333333">`);
  for (const v of ticks.values) {
    out.push(`<text x="${fmt(plot.left - 8)}" y="${fmt(yOf(v) + FONT.tick * 0.35)}" text-anchor="end">${formatTick(v, ticks.step)}</text>`);
  }
  out.push('</g>');
  return out;
}

/** The rotated y axis name, centred on x. */
export function yLabel(x: number, plot: Plot, text: string): string {
  const y = fmt((plot.top + plot.bottom) / 2);
  return `<text class="axis-label y" x="${fmt(x)}" y="${y}" font-size="${FONT.axis}" text-anchor="middle" fill="#222222" transform="rotate(-90 ${fmt(x)} ${y})">${escapeXml(text)}</text>`;
}

export function frame(plot: Plot): string {
  return `<rect x="${fmt(plot.left)}" y="${fmt(plot.top)}" width="${fmt(plot.right - plot.left)}" height="${fmt(plot.bottom - plot.top)}" fill="none" stroke="#444444" stroke-width="1.2"/>`;
}

/** A grey sentence in the middle of an empty plot. */
export function emptyNote(plot: Plot, text: string): string {
  return `<text class="empty-note" x="${fmt((plot.left + plot.right) / 2)}" y="${fmt((plot.top + plot.bottom) / 2)}" font-size="${FONT.axis}" text-anchor="middle" fill="#777777">${escapeXml(text)}</text>`;
}

export function panelTitle(plot: Plot, y: number, text: string): string {
  return `<text class="panel-title" x="${fmt((plot.left + plot.right) / 2)}" y="${fmt(y)}" font-size="${FONT.panel}" font-weight="bold" text-anchor="middle" fill="#222222">${escapeXml(text)}</text>`;
}

/**
 * The opening of a chart: the <svg> element, its accessible title, a white page and the centred
 * title (and subtitle, when there is one). The caller closes the </svg>.
 */
export function chartOpening(width: number, height: number, fontFamily: string, title: string, subtitle?: string, subtitleY = 68): string[] {
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="${fontFamily}" role="img" aria-label="${escapeXml(title)}">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text class="chart-title" x="${fmt(width / 2)}" y="38" font-size="${FONT.title}" font-weight="bold" text-anchor="middle" fill="#222222">${escapeXml(title)}</text>`,
  ];
  if (subtitle !== undefined) {
    out.push(
      `<text class="chart-subtitle" x="${fmt(width / 2)}" y="${subtitleY}" font-size="${FONT.subtitle}" text-anchor="middle" fill="#333333">${escapeXml(subtitle)}</text>`,
    );
  }
  return out;
}
