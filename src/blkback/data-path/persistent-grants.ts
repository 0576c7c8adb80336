// Data path `persistent` (feature-persistent): a grant is mapped writable the first time a request
// names it and stays mapped, for every later request that names it, until the ring stops; the
// frontend copies data into and out of those pages, as Linux's blkfront does with persistent grants.
// Requests that cannot use kept grants (the ring's limit reached, a grant that does not map
// writable) map and unmap per request, which also answers a bad grant with the right error.
import type { BackendGrants, GrantMapping } from '../../hypervisor/types.ts';
import type { Rejection } from '../request-validator.ts';
import { GrantMapPath } from './grant-map.ts';
import { mergeSegments, truncate } from './segment-views.ts';
import { decodeIndirectPage, InPlaceDataPath } from './types.ts';
import type { Attached, DataPath, IndirectRequest, SegmentRequest } from './types.ts';

/**
 * Grants a ring keeps mapped: Linux xen-blkback's default (xen_blkif_max_pgrants,
 * drivers/block/xen-blkback/blkback.c), enough for blkfront's pool on a one-page ring with
 * 32-segment indirect requests.
 */
export const MAX_PERSISTENT_GRANTS = 1056;

export class PersistentGrantPath extends InPlaceDataPath {
  readonly kind: DataPath = 'persistent';
  readonly #grants: BackendGrants;
  readonly #domid: number;
  readonly #limit: number;
  readonly #perRequest: GrantMapPath;
  /** Each kept grant's page, and the mappings holding them (unmapped by close()). */
  readonly #kept = new Map<number, Uint8Array>();
  readonly #mappings: GrantMapping[] = [];
  readonly #missing: number[] = [];
  readonly #oneRef = new Uint32Array(1);
  /** The pages of the refs last looked up, in order. */
  readonly #pages: Uint8Array[] = [];

  constructor(grants: BackendGrants, frontendDomid: number, limit = MAX_PERSISTENT_GRANTS) {
    super();
    this.#grants = grants;
    this.#domid = frontendDomid;
    this.#limit = limit;
    this.#perRequest = new GrantMapPath(grants, frontendDomid);
  }

  get grantsKept(): number {
    return this.#kept.size;
  }

  canTakeRequest(): boolean {
    return true;
  }

  readIndirect<R extends IndirectRequest>(
    requests: readonly R[],
    count: number,
    read: (request: R) => void,
    failed: (request: R, why: Rejection) => void,
  ): void {
    for (let i = 0; i < count; i++) {
      const r = requests[i]!;
      // blkfront takes its indirect pages from its persistent pool too
      if (!this.#lookUp(r.indirectRefs, r.indirectPages)) {
        this.#perRequest.readIndirect(requests.slice(i, i + 1), 1, read, failed);
        continue;
      }
      for (let p = 0; p < r.indirectPages; p++) decodeIndirectPage(this.#pages[p]!, p, r.indirectCount, r.segmentList);
      read(r);
    }
  }

  attach(request: SegmentRequest, deviceWrites: boolean): Attached | Rejection {
    if (!this.#lookUp(request.segGref, request.nseg)) return this.#perRequest.attach(request, deviceWrites);
    const iov = request.iov;
    truncate(iov, mergeSegments(this.#pages, request.segFirst, request.segLast, request.nseg, iov));
    return 'ready';
  }

  /** Kept grants stay; a request that mapped its own lets them go. */
  release(request: SegmentRequest): void {
    this.#perRequest.release(request);
  }

  close(): void {
    this.#kept.clear();
    const mappings = this.#mappings.splice(0);
    for (const mapping of mappings) mapping.unmap();
  }

  /**
   * The pages of refs[0..count) in #pages, mapping those not kept yet (writable, one call each) and
   * keeping them. False when that cannot be done: the limit would be passed, or a ref does not map
   * writable (those before it stay kept).
   */
  #lookUp(refs: ArrayLike<number>, count: number): boolean {
    const kept = this.#kept;
    const missing = this.#missing;
    truncate(missing, 0);
    for (let i = 0; i < count; i++) {
      const ref = refs[i]!;
      if (!kept.has(ref) && !missing.includes(ref)) missing.push(ref);
    }
    if (missing.length > 0) {
      if (kept.size + missing.length > this.#limit) return false;
      // One mapping a grant: each is kept on its own.
      const one = this.#oneRef;
      for (let j = 0; j < missing.length; j++) {
        one[0] = missing[j]!;
        let mapping: GrantMapping;
        try {
          mapping = this.#grants.map(this.#domid, one, 1, true);
        } catch {
          return false;
        }
        this.#mappings.push(mapping);
        kept.set(missing[j]!, mapping.pages[0]!);
      }
    }
    const pages = this.#pages;
    truncate(pages, count);
    for (let i = 0; i < count; i++) pages[i] = kept.get(refs[i]!)!; // in order: grows a shorter array
    return true;
  }
}
