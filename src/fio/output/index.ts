// fio's outputs: human summary, JSON, terse v3, log files and the live status line.
export { formatNormal, formatRunHeader, formatJobHeaderLine, formatLatLine, formatPercentiles, formatGroupStats, ctime, FIO_VERSION_LABEL } from './normal.ts';
export type { NormalOptions } from './normal.ts';
export { formatJson, stringifyFioJson } from './json.ts';
export type { FioJsonObject, FioJsonValue, JsonOptions } from './json.ts';
export { formatTerse } from './terse.ts';
export { formatErrorReport } from './errors.ts';
export type { DiskUtil, TerseOptions } from './terse.ts';
export { openJobLogs, logFileNames, formatLogRow, parseFioLog } from './log-sink.ts';
export type { LogSink, LogKind, FioLogRow } from './log-sink.ts';
export { formatStatusLine, StatusLine, jobStateChar, condenseRunChars, etaToString } from './status-line.ts';
export type { StatusInput, JobRunState } from './status-line.ts';
export { num2str, cFixed, cFloat, N2S } from './num2str.ts';
export type { N2sUnit } from './num2str.ts';
export {
  buildReports,
  buildGroupStats,
  ioStatOf,
  latencyDistribution,
  percentileSpec,
  depthShares,
  latShares,
  DEFAULT_PERCENTILES,
} from './report.ts';
export type { JobReport, DirReport, GroupRunStats, IoStat } from './report.ts';
