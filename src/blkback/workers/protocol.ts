// Messages between blkback's main thread (WorkerRingHost) and its data-plane workers
// (data-plane-worker.ts). Everything here is structured-clonable: shared memory travels as
// SharedArrayBuffers, never copied.
import type { BlkifAbi } from '../../blkif/constants.ts';
import type { BlockDeviceInfo } from '../../block/types.ts';
import type { SharedStoreSpec } from '../../block/shared-store.ts';
import type { SimDomainDataPlane } from '../../hypervisor/sim/data-plane.ts';
import type { DataPath } from '../ring-server.ts';
import type { DataPlaneSpec } from './data-plane.ts';

/** workerData of a data-plane worker. */
export interface WorkerInit {
  readonly index: number;
  readonly hypervisor: DataPlaneSpec;
  /** SharedInflightBudget's words, and its limit. */
  readonly budget: SharedArrayBuffer;
  readonly maxInflight: number;
  /** FairShareTable's memory, and the turn quantum. */
  readonly fairShare: SharedArrayBuffer;
  readonly quantum: number;
}

/** How the worker reaches a ring's store. */
export type DeviceRef =
  /** Opened by the worker itself (shared-store.ts). */
  | { readonly kind: 'shared'; readonly spec: SharedStoreSpec; readonly info: BlockDeviceInfo }
  /** Reached through the main thread (device-proxy.ts): `dev` names it in 'io' messages. */
  | { readonly kind: 'proxy'; readonly dev: number; readonly name: string; readonly info: BlockDeviceInfo };

export interface AttachRequest {
  readonly t: 'attach';
  readonly id: number;
  readonly frontendDomid: number;
  readonly refs: readonly number[];
  readonly port: number;
  readonly abi: BlkifAbi;
  readonly readOnly: boolean;
  readonly discard: boolean;
  readonly maxIndirectSegments: number;
  readonly dataPath: DataPath;
  readonly name: string;
  readonly domain: SimDomainDataPlane | null;
  readonly device: DeviceRef;
  /** The ring's VbdStats block. */
  readonly stats: SharedArrayBuffer;
}

export type ToWorker =
  | AttachRequest
  | { readonly t: 'kick'; readonly id: number }
  | { readonly t: 'stop'; readonly id: number }
  /** The store of these rings changed (resize): their new description. */
  | { readonly t: 'device'; readonly req: number; readonly ids: readonly number[]; readonly device: DeviceRef }
  | { readonly t: 'io-done'; readonly req: number; readonly error?: WireError }
  /** Report the worker's own memory (heap and external), after a full collection where gc is exposed. */
  | { readonly t: 'memory'; readonly req: number }
  | { readonly t: 'close' };

export interface WireError {
  readonly message: string;
  readonly code?: string;
  readonly errno?: number;
}

export type IoOp = 'readv' | 'writev' | 'flush' | 'discard' | 'writeZeroes';

/** A buffer of a proxied request: a range of shared memory. */
export interface WireBuffer {
  readonly buffer: SharedArrayBuffer;
  readonly offset: number;
  readonly length: number;
}

export type FromWorker =
  | { readonly t: 'ready'; readonly tid: number }
  | { readonly t: 'attached'; readonly id: number }
  | { readonly t: 'attach-failed'; readonly id: number; readonly error: WireError }
  | { readonly t: 'stopped'; readonly id: number }
  | { readonly t: 'log'; readonly line: string; readonly error: boolean }
  | {
      readonly t: 'io';
      readonly req: number;
      readonly dev: number;
      readonly op: IoOp;
      readonly offset: number;
      readonly length: number;
      readonly iov: readonly WireBuffer[];
      readonly flags: number;
    }
  | { readonly t: 'memory'; readonly req: number; readonly bytes: number }
  /** The rings of a 'device' message see the store's new description. */
  | { readonly t: 'device-done'; readonly req: number }
  | { readonly t: 'closed' };
