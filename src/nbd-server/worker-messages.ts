// What the main thread and the transmission workers say to each other (structured-clonable).
import type { SharedStoreSpec } from '../block/shared-store.ts';

export interface TransmissionWorkerData {
  /** Where the worker counts (counters.ts countersIn): the main thread reads it as it changes. */
  readonly counters: SharedArrayBuffer;
}

export interface WorkerExport {
  readonly index: number;
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  /** How to open the store; sent with the first connection of this export to a worker. */
  readonly store?: SharedStoreSpec;
}

export type ToTransmissionWorker =
  | {
      readonly type: 'connection';
      readonly id: number;
      /** The worker's own descriptor of the socket: it closes it. */
      readonly fd: number;
      readonly leftover: Uint8Array;
      readonly export: WorkerExport;
      readonly structuredReplies: boolean;
      readonly metaContext: boolean;
      readonly label: string;
    }
  | { readonly type: 'stop' };

export type FromTransmissionWorker =
  | { readonly type: 'ready' }
  | { readonly type: 'log'; readonly line: string }
  | { readonly type: 'closed'; readonly id: number }
  | { readonly type: 'stopped' };
