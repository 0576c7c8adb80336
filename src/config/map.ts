// `--map PATH=SPEC`: a target path named in an xl config (the seed's /dev/sdb, which need not exist on
// this machine) is served from a store spec instead. Pure: the spec is checked syntactically only.
import { UsageError } from '../internal/errors.ts';
import { parseStoreSpec } from './store-spec.ts';

export interface MapOption {
  /** The target path as written in the config, e.g. "/dev/sdb". */
  readonly path: string;
  /** The store spec text, e.g. "ram:1G"; valid for parseStoreSpec. */
  readonly spec: string;
}

export function parseMapOption(text: string): MapOption {
  const eq = text.indexOf('=');
  if (eq < 0) throw new UsageError(`--map '${text}': expected PATH=SPEC, e.g. /dev/sdb=ram:1G`);
  const path = text.slice(0, eq).trim();
  const spec = text.slice(eq + 1).trim();
  if (!path.startsWith('/')) {
    throw new UsageError(`--map '${text}': the target path '${path}' must be absolute, as in the xl config`);
  }
  if (spec === '') throw new UsageError(`--map '${text}': missing store spec after '=', e.g. ${path}=ram:1G`);
  try {
    parseStoreSpec(spec);
  } catch (err) {
    if (err instanceof UsageError) throw new UsageError(`--map '${text}': ${err.message}`, { cause: err });
    throw err;
  }
  return { path, spec };
}

/** Later --map options for the same path win, as with most repeated options. */
export function buildMapTable(options: readonly MapOption[]): ReadonlyMap<string, string> {
  const table = new Map<string, string>();
  for (const o of options) table.set(o.path, o.spec);
  return table;
}
