// Revoking a grant the backend may still have mapped. Xen refuses to end access to a page the other
// side maps (gnttab_end_foreign_access_ref fails), so the ref and its page stay out of use and the
// revocation is retried later, as Linux's gnttab_end_foreign_access defers it.
import type { GuestGrants } from '../hypervisor/types.ts';

/**
 * Ends access to `ref` now, or keeps retrying in the background until the backend unmaps it;
 * `ended` (if given) runs once access has ended, when the page may be reused.
 */
export function endAccessOrRetry(grants: GuestGrants, ref: number, ended?: () => void): void {
  if (grants.endAccess(ref)) {
    ended?.();
    return;
  }
  const retry = (): void => {
    if (!grants.endAccess(ref)) setTimeout(retry, 100).unref();
    else ended?.();
  };
  setTimeout(retry, 10).unref();
}
