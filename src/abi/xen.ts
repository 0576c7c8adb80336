// Xen's public ABI: the numbers the hypervisor, its tools and Linux's Xen drivers agree on, used by
// every layer that speaks to Xen or simulates it (xenstore, the hypervisor layer, blkif, the control
// protocol). Ground level: this file imports nothing, so any layer may import it. Each value names
// the header it comes from; bare header names are in Xen's xen/include/public/.

// ---------------------------------------------------------------- pages

/**
 * log2 of the page grants, shared rings and grant copies are measured in: Linux's XEN_PAGE_SHIFT
 * (include/xen/page.h). 4 KiB on every Xen architecture, even under an arm64 kernel with 64 KiB pages.
 */
export const XEN_PAGE_SHIFT = 12;
export const XEN_PAGE_SIZE = 1 << XEN_PAGE_SHIFT;

// ---------------------------------------------------------------- domain ids (xen.h)

/** domid_t is uint16_t; ids from here on name no domain (DOMID_SELF, DOMID_IO, DOMID_XEN, ...). */
export const DOMID_FIRST_RESERVED = 0x7ff0;
/** "The calling domain" where a hypercall takes a domid (the same value as DOMID_FIRST_RESERVED). */
export const DOMID_SELF = 0x7ff0;
/** The highest id a real domain can have. Our name: xen.h only defines DOMID_FIRST_RESERVED. */
export const DOMID_MAX = DOMID_FIRST_RESERVED - 1;

// ---------------------------------------------------------------- grant tables (grant_table.h)

/** grant_ref_t is uint32_t: a ref is below 2^32 (the granting domain's table may be far smaller). */
export const GRANT_REF_LIMIT = 0x1_0000_0000;

/** GNTST_*: the status of one grant operation. */
export const GNTST = {
  okay: 0,
  general_error: -1,
  bad_domain: -2,
  bad_gntref: -3,
  bad_handle: -4,
  bad_virt_addr: -5,
  bad_dev_addr: -6,
  no_device_space: -7,
  permission_denied: -8,
  bad_page: -9,
  bad_copy_arg: -10,
  address_too_big: -11,
  eagain: -12,
} as const;

/** struct gnttab_copy's flags: which sides name a grant ref (the others name local memory). */
export const GNTCOPY_source_gref = 1 << 0;
export const GNTCOPY_dest_gref = 1 << 1;
