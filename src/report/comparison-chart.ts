// Two backends (or more) compared in one picture: the runs' bandwidth figures as bars on the left,
// the runs' bandwidth over time on the right, both plots on one baseline, one colour per backend
// in both. Pure: input in, SVG text out; svgToPng (png.ts) rasterises it.
import { CHART_FONT_FAMILY } from './bandwidth-chart.ts';
import { barPanel } from './comparison-bars.ts';
import type { BarPanelInput } from './comparison-bars.ts';
import { stepPanel } from './comparison-steps.ts';
import type { StepPanelInput } from './comparison-steps.ts';
import { chartOpening } from './chart-parts.ts';

export interface ComparisonChartInput {
  readonly title: string;
  /** A line under the title: the answer the chart is for ("ours / kernel: 0.54"). */
  readonly subtitle?: string;
  readonly bars: BarPanelInput;
  readonly time: StepPanelInput;
}

export interface ComparisonChartOptions {
  readonly width?: number;
  readonly height?: number;
}

export function renderComparisonChart(input: ComparisonChartInput, opts: ComparisonChartOptions = {}): string {
  const width = opts.width ?? 1600;
  const height = opts.height ?? 800;
  const top = input.subtitle === undefined ? 64 : 92;
  // The bar panel grows with its groups, up to 44% of the width.
  const barsW = Math.round(Math.min(width * 0.44, Math.max(width * 0.28, 240 + 86 * input.bars.groups.length)));
  const bars = { x: 0, y: top, width: barsW, height: height - top };
  const time = { x: barsW + 12, y: top, width: width - barsW - 12, height: height - top };
  const plotTop = top + 64;
  const plotBottom = height - 90;

  const out = chartOpening(width, height, CHART_FONT_FAMILY, input.title, input.subtitle, 70);
  out.push(...barPanel(bars, plotTop, plotBottom, input.bars));
  out.push(...stepPanel(time, plotTop, plotBottom, input.time));
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
