// Picks a ring's data path, once, when the ring connects.
import type { BackendGrants } from '../../hypervisor/types.ts';
import { GrantCopyPath } from './grant-copy.ts';
import { GrantMapPath } from './grant-map.ts';
import { PersistentGrantPath } from './persistent-grants.ts';
import type { DataPath, GuestDataPath } from './types.ts';

export interface DataPathOptions {
  readonly grants: BackendGrants;
  readonly frontendDomid: number;
  /** Slots in the ring: `copy` sizes its bounce pool by it. */
  readonly ringSize: number;
  /** Segments of the largest request the ring accepts. */
  readonly maxRequestSegments: number;
}

export function createDataPath(kind: DataPath, o: DataPathOptions): GuestDataPath {
  switch (kind) {
    case 'map':
      return new GrantMapPath(o.grants, o.frontendDomid);
    case 'persistent':
      return new PersistentGrantPath(o.grants, o.frontendDomid);
    case 'copy':
      return new GrantCopyPath(o.grants, o.frontendDomid, o.ringSize, o.maxRequestSegments);
  }
}
