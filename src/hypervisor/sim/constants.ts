// Layout facts the simulation shares between threads. Grant values are from Xen 4.17's
// xen/include/public/grant_table.h; ECS_* are Xen's internal event-channel states
// (xen/include/xen/sched.h), reused for the simulated port table.

import { PAGE_SIZE } from '../types.ts';

/** grant_entry_v1 (8 bytes):  flags u16 @0 | domid u16 @2 | frame u32 @4. */
export const GRANT_ENTRY_SIZE = 8;
export const GRANT_ENTRIES_PER_FRAME = PAGE_SIZE / GRANT_ENTRY_SIZE; // 512
/** Refs 0..7 are reserved for the toolstack (GNTTAB_NR_RESERVED_ENTRIES); guests hand out refs from 8. */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;
/** Xen's default max_grant_frames. */
export const DEFAULT_GRANT_FRAMES = 64;

export const GTF_type_mask = 3;
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_readonly = 1 << 2;
export const GTF_reading = 1 << 3;
export const GTF_writing = 1 << 4;
export const GTF_sub_page = 1 << 8;

/**
 * The first 32-bit word of an entry is `flags | domid << 16` on a little-endian host, which is what
 * Xen's _set_status compares and exchanges in one access. Typed arrays use the host's byte order, so
 * the simulation refuses to run on a big-endian host rather than silently byte-swap the ABI.
 */
export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Xen gives up on a grant entry the guest keeps changing after this many cmpxchg attempts. */
export const SET_STATUS_RETRIES = 5;

// Event-channel port states (Xen's ECS_*).
export const ECS_FREE = 0;
export const ECS_RESERVED = 1;
export const ECS_UNBOUND = 2;
export const ECS_INTERDOMAIN = 3;

/** EVTCHN_2L_NR_CHANNELS on a 64-bit guest: 64 * 64. */
export const DEFAULT_MAX_EVENT_PORTS = 4096;

/** WebAssembly pages are 64 KiB; a shared memory holds at most 65536 of them (4 GiB). */
export const WASM_PAGE_SIZE = 65536;
export const MAX_WASM_PAGES = 65536;
export const MAX_MEMORY_BYTES = WASM_PAGE_SIZE * MAX_WASM_PAGES;

/** The backend's domain in the simulation. */
export const DOM0 = 0;
