// Where a virtual block device lives in xenstore, and the names of its keys. Built here and nowhere
// else, so the toolstacks, blkback, blkfront and the fuzzers agree on one layout (libxl
// libxl_device.c, Linux xen-blkfront.c and xen-blkback/xenbus.c, Xen public/io/blkif.h):
//
//   /local/domain/<backend-domid>/backend/<kind>/<frontend-domid>/<devid>   the backend's directory
//   /local/domain/<frontend-domid>/device/vbd/<devid>                        the frontend's directory
//   /local/domain/<backend-domid>/error/backend/<kind>/<frontend-domid>/<devid>/error   why it gave up
//
// <kind> is the backend's directory name: "vbd" for Linux xen-blkback (and `blkback serve` by
// default), "qdisk" for QEMU, or another name for a second backend beside the kernel's. The frontend
// side is always device/vbd whatever the backend kind: the guest sees one kind of block device.
//
// Pure: strings in, strings out; no store, no imports.

/** The backend kind xen-blkback uses, and ours unless told otherwise. */
export const DEFAULT_BACKEND_KIND = 'vbd';

/** The frontend's device type (xen-blkfront's xenbus id "vbd"), whatever the backend kind. */
export const FRONTEND_DEVICE_TYPE = 'vbd';

/** Where dom0's toolstack and backends live: every path below names its backend domain; this is the usual one. */
export const DOM0 = 0;

/**
 * The keys of a virtual block device, by who writes them. Values are the names in blkif.h and the
 * drivers; a key written per queue (see queueDir) is marked so.
 */
export const VbdKey = {
  // Both directories
  state: 'state', // XenbusState, as a decimal number
  // Toolstack, backend directory (libxl device_disk_add)
  frontend: 'frontend', // the frontend's directory
  frontendId: 'frontend-id',
  params: 'params', // what to open: a path, a store spec
  type: 'type', // phy, qdisk, ...
  mode: 'mode', // w or r
  dev: 'dev', // the vdev name (xvda)
  online: 'online',
  removable: 'removable',
  bootable: 'bootable',
  deviceType: 'device-type', // disk or cdrom
  discardEnable: 'discard-enable',
  // Toolstack, frontend directory
  backend: 'backend', // the backend's directory
  backendId: 'backend-id',
  virtualDevice: 'virtual-device', // the devid
  // Backend, before InitWait: limits the frontend must stay within
  maxRingPageOrder: 'max-ring-page-order',
  multiQueueMaxQueues: 'multi-queue-max-queues',
  // Frontend, before Initialised. ring-page-order and multi-queue-num-queues sit in the frontend's
  // directory itself; ring-ref* and event-channel in each queue's directory (queueDir).
  ringPageOrder: 'ring-page-order', // present iff the ring has more than one page
  multiQueueNumQueues: 'multi-queue-num-queues', // present iff more than one queue
  ringRef: 'ring-ref', // per queue; a one-page ring without ring-page-order (see ringRefKey)
  eventChannel: 'event-channel', // per queue
  protocol: 'protocol', // the ring ABI: x86_64-abi, x86_32-abi
  featurePersistent: 'feature-persistent', // written by both; persistent grants need both to say 1
  // Backend, before Connected: the disk and what it offers
  sectors: 'sectors', // size in 512-byte units, whatever sector-size says
  info: 'info', // VDISK_* flags
  sectorSize: 'sector-size',
  physicalSectorSize: 'physical-sector-size',
  featureFlushCache: 'feature-flush-cache',
  featureBarrier: 'feature-barrier',
  featureDiscard: 'feature-discard',
  discardGranularity: 'discard-granularity',
  discardAlignment: 'discard-alignment',
  discardSecure: 'discard-secure',
  featureMaxIndirectSegments: 'feature-max-indirect-segments',
  // Backend's error directory (xenbus_dev_fatal)
  error: 'error',
} as const;

/** Keys and subdirectories of a domain's own directory that the toolstack writes (libxl). */
export const DomainKey = {
  name: 'name',
  domid: 'domid',
  device: 'device', // the guest's frontends, its own
  data: 'data', // the guest's scratch space, its own
} as const;

/** /local/domain/<domid>: a domain's own directory (DomainKey). */
export function domainDir(domid: number): string {
  return `/local/domain/${domid}`;
}

/** The directory a backend owns and watches: every device of this kind it serves lies below it. */
export function backendRoot(kind: string, backendDomid: number = DOM0): string {
  return `${domainDir(backendDomid)}/backend/${kind}`;
}

/** One guest's devices of this kind (removed whole when the guest is destroyed). */
export function backendGuestDir(kind: string, frontendDomid: number, backendDomid: number = DOM0): string {
  return `${backendRoot(kind, backendDomid)}/${frontendDomid}`;
}

export function backendDir(kind: string, frontendDomid: number, devid: number, backendDomid: number = DOM0): string {
  return `${backendGuestDir(kind, frontendDomid, backendDomid)}/${devid}`;
}

export function frontendDir(frontendDomid: number, devid: number): string {
  return `${domainDir(frontendDomid)}/device/${FRONTEND_DEVICE_TYPE}/${devid}`;
}

/** The backend domain's error tree (a watch here sees every device any of its backends gives up on). */
export function domainErrorDir(backendDomid: number = DOM0): string {
  return `${domainDir(backendDomid)}/error`;
}

/** Where a backend of this kind records why it gave up on its devices (Linux xenbus_dev_fatal: error/<backend path>). */
export function errorRoot(kind: string, backendDomid: number = DOM0): string {
  return `${domainErrorDir(backendDomid)}/backend/${kind}`;
}

export function errorGuestDir(kind: string, frontendDomid: number, backendDomid: number = DOM0): string {
  return `${errorRoot(kind, backendDomid)}/${frontendDomid}`;
}

/** The device's error directory; the message itself is its `error` key (VbdKey.error). */
export function errorDir(kind: string, frontendDomid: number, devid: number, backendDomid: number = DOM0): string {
  return `${errorGuestDir(kind, frontendDomid, backendDomid)}/${devid}`;
}

/**
 * The directory holding one queue's ring-ref* and event-channel keys: the frontend's own directory
 * when there is one queue (as every frontend without multi-queue writes them), queue-<n> below it when
 * there are several (Linux talk_to_blkback / write_per_ring_nodes).
 */
export function queueDir(frontend: string, queue: number, queues: number): string {
  return queues <= 1 ? frontend : `${frontend}/queue-${queue}`;
}

/**
 * The key of ring page `page`: `ring-ref<page>` when the ring was published with ring-page-order,
 * plain `ring-ref` for a one-page ring published without it (a backend reads only that one then, so
 * a stale ring-ref0 of an earlier frontend never counts).
 */
export function ringRefKey(page: number, withPageOrder: boolean): string {
  return withPageOrder ? `${VbdKey.ringRef}${page}` : VbdKey.ringRef;
}
