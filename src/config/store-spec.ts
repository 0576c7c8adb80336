// The store specs users type for a disk's backing storage (--store, --map PATH=SPEC). Pure: no I/O;
// src/block/open.ts turns a parsed spec into a BlockDevice.
//
//   ram:SIZE        RAM disk (sparse, chunked)
//   null:SIZE       reads zeroes, discards writes (benchmarks)
//   file:PATH       regular file or block device through the page cache (QEMU qdisk analog)
//   phy:PATH        O_DIRECT, the caller's buffers straight to the device (xl "phy:" analog)
//   direct:PATH     same as phy:
//   volatile:SPEC   SPEC behind a simulated volatile write cache (power-cut tests)
//   PATH            an absolute or ./relative path: phy: if it is a block device, file: otherwise
import { UsageError } from '../internal/errors.ts';
import { parseSize } from './size.ts';

export type StoreSpec =
  | { readonly kind: 'ram'; readonly size: number }
  | { readonly kind: 'null'; readonly size: number }
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'direct'; readonly path: string }
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'volatile'; readonly inner: StoreSpec };

const KINDS = 'ram:SIZE, null:SIZE, file:PATH, phy:PATH, direct:PATH, volatile:SPEC or a path';

export function parseStoreSpec(spec: string): StoreSpec {
  const fail = (why: string): never => {
    throw new UsageError(`store spec '${spec}': ${why}`);
  };
  if (spec === '') return fail(`empty (expected ${KINDS})`);
  if (spec.startsWith('/') || spec.startsWith('./') || spec.startsWith('../')) return { kind: 'path', path: spec };
  const colon = spec.indexOf(':');
  if (colon < 0) return fail(`not a path and no type prefix (expected ${KINDS}; write ./${spec} for a relative path)`);
  const kind = spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  switch (kind) {
    case 'ram':
    case 'null': {
      if (rest === '') return fail(`${kind}: needs a size, e.g. ${kind}:1G`);
      const size = parseSize(rest, `store spec '${spec}'`);
      if (size <= 0 || size % 512 !== 0) return fail(`size ${size} must be a positive multiple of 512 bytes`);
      return { kind, size };
    }
    case 'file':
    case 'phy':
    case 'direct':
      if (rest === '') return fail(`${kind}: needs a path, e.g. ${kind}:/dev/loop0`);
      return { kind: kind === 'file' ? 'file' : 'direct', path: rest };
    case 'volatile':
      if (rest === '') return fail('volatile: needs an inner spec, e.g. volatile:ram:1G');
      try {
        return { kind: 'volatile', inner: parseStoreSpec(rest) };
      } catch (err) {
        if (err instanceof UsageError) return fail(err.message);
        throw err;
      }
    default:
      return fail(`unknown store type '${kind}:' (expected ${KINDS})`);
  }
}
