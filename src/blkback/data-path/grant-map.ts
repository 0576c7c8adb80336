// Data path `map`: each request maps its grants, the store does I/O straight into the guest's pages
// (zero-copy), and the answer unmaps them.
import { BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST } from '../../blkif/constants.ts';
import type { BackendGrants, GrantMapping } from '../../hypervisor/types.ts';
import type { Rejection } from '../request-validator.ts';
import { decodeIndirectPage, errorText, grantFailure, InPlaceDataPath } from './types.ts';
import type { Attached, DataPath, IndirectRequest, SegmentRequest } from './types.ts';
import { mergeSegments, truncate } from './segment-views.ts';

export class GrantMapPath extends InPlaceDataPath {
  readonly kind: DataPath = 'map';
  readonly grantsKept = 0;
  readonly #grants: BackendGrants;
  readonly #domid: number;
  /** The refs of a batch's indirect pages. */
  #refs = new Uint32Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);

  constructor(grants: BackendGrants, frontendDomid: number) {
    super();
    this.#grants = grants;
    this.#domid = frontendDomid;
  }

  canTakeRequest(): boolean {
    return true;
  }

  /**
   * The pages of the whole batch in one mapping: one map and one unmap call, not one of each per
   * request. A bad ref fails that mapping as a whole; each request then maps its own, so that only
   * the request that named it is refused.
   */
  readIndirect<R extends IndirectRequest>(
    requests: readonly R[],
    count: number,
    read: (request: R) => void,
    failed: (request: R, why: Rejection) => void,
  ): void {
    if (count === 0) return;
    let total = 0;
    for (let i = 0; i < count; i++) total += requests[i]!.indirectPages;
    if (this.#refs.length < total) this.#refs = new Uint32Array(Math.max(total, 2 * this.#refs.length));
    const refs = this.#refs;
    let at = 0;
    for (let i = 0; i < count; i++) {
      const r = requests[i]!;
      for (let p = 0; p < r.indirectPages; p++) refs[at++] = r.indirectRefs[p]!;
    }
    let mapping: GrantMapping;
    try {
      mapping = this.#grants.map(this.#domid, refs, total, false);
    } catch (err) {
      if (count === 1) failed(requests[0]!, grantFailure(`indirect pages: ${errorText(err)}`));
      else for (let i = 0; i < count; i++) this.readIndirect(requests.slice(i, i + 1), 1, read, failed);
      return;
    }
    try {
      at = 0;
      for (let i = 0; i < count; i++) {
        const r = requests[i]!;
        for (let p = 0; p < r.indirectPages; p++) decodeIndirectPage(mapping.pages[at++]!, p, r.indirectCount, r.segmentList);
      }
    } finally {
      mapping.unmap();
    }
    for (let i = 0; i < count; i++) read(requests[i]!);
  }

  attach(request: SegmentRequest, deviceWrites: boolean): Attached | Rejection {
    let mapping: GrantMapping;
    try {
      mapping = this.#grants.map(this.#domid, request.segGref, request.nseg, deviceWrites);
    } catch (err) {
      return grantFailure(errorText(err));
    }
    request.mapping = mapping;
    const iov = request.iov;
    truncate(iov, mergeSegments(mapping.pages, request.segFirst, request.segLast, request.nseg, iov));
    return 'ready';
  }

  release(request: SegmentRequest): void {
    const mapping = request.mapping;
    if (mapping === null) return;
    request.mapping = null;
    mapping.unmap();
  }

  close(): void {}
}
