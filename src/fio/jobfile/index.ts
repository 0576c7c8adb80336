// fio 3.33 job-file parser: job files -> FioJob (src/fio/job.ts). Pure except fs-include.ts.
export { FioParseError } from './errors.ts';
export { parseJobFiles, implementedOptionNames, type ParseOptions } from './resolve.ts';
export { expandClones } from './clones.ts';
export { jobOptionsJson } from './json.ts';
export { readIncludeFromFs } from './fs-include.ts';
export { parseBytes, parseTimeUs, type KbBase } from './numbers.ts';
export { matchPosval, matchPosvalLegacy } from './handle.ts';
export type { Keywords } from './substitute.ts';
