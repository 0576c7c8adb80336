// Store specs (src/config/store-spec.ts) to block devices. A bare path is served with O_DIRECT when it
// is a block device and through the page cache when it is a regular file: the same split libxl makes
// between phy and qdisk, and O_DIRECT is not available on every filesystem (tmpfs refuses it) while
// every block device takes it.
import { stat } from 'node:fs/promises';
import type { BlockDevice } from '../block/types.ts';
import { UsageError } from '../internal/errors.ts';
import { parseStoreSpec } from '../config/store-spec.ts';
import type { StoreSpec } from '../config/store-spec.ts';
import { createRamDisk } from '../block/ram.ts';
import { createNullDisk } from '../block/null.ts';
import { openFileDisk } from '../block/file.ts';
import { openDirectDisk } from '../block/direct.ts';
import type { IoEngine } from '../block/direct.ts';
import { createVolatileCache } from '../block/volatile-cache.ts';
import { openIscsiDevice } from '../iscsi-initiator/device.ts';
import { openNbdDevice } from '../nbd-client/device.ts';
import { openRbdDevice } from '../rbd/rbd-image.ts';

export interface OpenBlockDeviceOptions {
  readonly readOnly?: boolean;
  /** RAM disk chunk size (tests). */
  readonly ramChunkSize?: number;
  /** How O_DIRECT disks reach the kernel (direct.ts); default 'native' where it works. */
  readonly ioEngine?: IoEngine;
}

export async function openBlockDevice(spec: string, opts: OpenBlockDeviceOptions = {}): Promise<BlockDevice> {
  return openParsed(parseStoreSpec(spec), spec, opts);
}

function engine(opts: OpenBlockDeviceOptions): { ioEngine?: IoEngine } {
  return opts.ioEngine === undefined ? {} : { ioEngine: opts.ioEngine };
}

async function openParsed(s: StoreSpec, spec: string, opts: OpenBlockDeviceOptions): Promise<BlockDevice> {
  const readOnly = opts.readOnly ?? false;
  const withName = (inner: string): string => `store spec '${spec}': ${inner}`;
  const wrap = async <T>(open: () => Promise<T>): Promise<T> => {
    try {
      return await open();
    } catch (err) {
      if (err instanceof UsageError && !err.message.includes(spec)) throw new UsageError(withName(err.message), { cause: err, errno: err.errno });
      throw err;
    }
  };
  switch (s.kind) {
    case 'ram':
      return createRamDisk(s.size, {
        name: spec,
        readOnly,
        ...(opts.ramChunkSize === undefined ? {} : { chunkSize: opts.ramChunkSize }),
      });
    case 'null':
      return createNullDisk(s.size, { name: spec, readOnly });
    case 'file':
      return wrap(() => openFileDisk(s.path, { readOnly, name: spec }));
    case 'direct':
      return wrap(() => openDirectDisk(s.path, { readOnly, name: spec, ...engine(opts) }));
    case 'volatile':
      return createVolatileCache(await openParsed(s.inner, spec, opts), { name: spec });
    case 'iscsi':
      return wrap(() => openIscsiDevice(s, { name: spec, readOnly }));
    case 'nbd':
      return wrap(() => openNbdDevice(s, { name: spec, readOnly }));
    case 'rbd':
      return wrap(() => openRbdDevice(s, { name: spec, readOnly }));
    case 'path': {
      let st;
      try {
        st = await stat(s.path);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new UsageError(withName(`cannot use ${s.path}: ${e.message}`), { cause: err });
      }
      if (st.isBlockDevice()) return wrap(() => openDirectDisk(s.path, { readOnly, name: spec, ...engine(opts) }));
      if (st.isFile()) return wrap(() => openFileDisk(s.path, { readOnly, name: spec }));
      throw new UsageError(withName(`${s.path} is neither a block device nor a regular file`));
    }
  }
}
