// Layer 5: bandwidth plots (SVG, PNG) and the self-contained HTML report for `blkback reproduce`.
export { renderBandwidthChart, CHART_FONT_FAMILY } from './bandwidth-chart.ts';
export type { BandwidthChartInput, ChartOptions, ChartSeries } from './bandwidth-chart.ts';
export { svgToPng } from './png.ts';
export { bandwidthSeriesFromLogs, parseFioLog } from './bw-log.ts';
export type { BandwidthSeries, FioLogRow, RunLogs } from './bw-log.ts';
export { renderReport } from './html.ts';
export type { NamedText, ReportInput, ReportTable } from './html.ts';
export { formatTable, formatCell } from './table.ts';
export type { Cell } from './table.ts';
