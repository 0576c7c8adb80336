// Xenstore wire constants. Values from Xen's public header xen/include/public/io/xs_wire.h
// (Debian libxen-dev 4.17: /usr/include/xen/io/xs_wire.h) and docs/misc/xenstore.txt.

/** `enum xsd_sockmsg_type`: the `type` field of `struct xsd_sockmsg`. */
export const XsType = {
  XS_CONTROL: 0, // also XS_DEBUG
  XS_DIRECTORY: 1,
  XS_READ: 2,
  XS_GET_PERMS: 3,
  XS_WATCH: 4,
  XS_UNWATCH: 5,
  XS_TRANSACTION_START: 6,
  XS_TRANSACTION_END: 7,
  XS_INTRODUCE: 8,
  XS_RELEASE: 9,
  XS_GET_DOMAIN_PATH: 10,
  XS_WRITE: 11,
  XS_MKDIR: 12,
  XS_RM: 13,
  XS_SET_PERMS: 14,
  XS_WATCH_EVENT: 15, // unsolicited, req_id and tx_id 0
  XS_ERROR: 16, // payload: the errno name, e.g. "ENOENT\0"
  XS_IS_DOMAIN_INTRODUCED: 17,
  XS_RESUME: 18,
  XS_SET_TARGET: 19,
  // 20 was XS_RESTRICT (removed)
  XS_RESET_WATCHES: 21,
  XS_DIRECTORY_PART: 22,
} as const;

export type XsTypeValue = (typeof XsType)[keyof typeof XsType];

/** Guaranteed invalid message type (xs_wire.h XS_INVALID). */
export const XS_INVALID = 0xffff;

const typeNames = new Map<number, string>(Object.entries(XsType).map(([k, v]) => [v, k]));
export function xsTypeName(type: number): string {
  return typeNames.get(type) ?? `XS_UNKNOWN(${type})`;
}

/**
 * xs_wire.h `xsd_errors[]`: the errno names that travel in XS_ERROR payloads, in the header's order.
 * EQUOTA is not in the C table: oxenstored sends it for quota violations and libxenstore maps any
 * name it does not know to EINVAL.
 */
export const XSD_ERRORS = [
  'EINVAL',
  'EACCES',
  'EEXIST',
  'EISDIR',
  'ENOENT',
  'ENOMEM',
  'ENOSPC',
  'EIO',
  'ENOTEMPTY',
  'ENOSYS',
  'EROFS',
  'EBUSY',
  'EAGAIN',
  'EISCONN',
  'E2BIG',
  'EPERM',
  'EQUOTA',
] as const;

export type XsErrorName = (typeof XSD_ERRORS)[number];

/** sizeof(struct xsd_sockmsg): type, req_id, tx_id, len, all u32 little-endian. */
export const XS_HEADER_SIZE = 16;

/** Longest payload in either direction (xs_wire.h). */
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

/** tx_id of a request outside any transaction. */
export const XBT_NULL = 0;

/** Special watch paths (docs/misc/xenstore.txt "Watches"). */
export const XS_SPECIAL_INTRODUCE = '@introduceDomain';
export const XS_SPECIAL_RELEASE = '@releaseDomain';

/**
 * Default per-domain quotas, as C xenstored's defaults (tools/xenstored/domain.c `quotas[]`: nodes,
 * watches, transactions, node-size as valueSize, transaction-nodes, and memory's hard value).
 */
export const XS_DEFAULT_QUOTA = {
  nodes: 1000,
  watches: 128,
  transactions: 10,
  valueSize: 2048,
  transactionNodes: 1024,
  memory: 2.5 * 1024 * 1024,
} as const;

/** Bounds of our own, for every connection (dom0's too); see session.ts and store.ts XsTxLimits. */
export const XS_DEFAULT_FLOW = {
  transactionMemory: 32 * 1024 * 1024,
  inputBuffer: 64 * 1024,
  outputBuffer: 64 * 1024,
  outputDrop: 1024 * 1024,
} as const;
