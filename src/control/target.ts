// What the control socket serves: a ControlTarget answers the five operations. The server turns
// its results into JSON answers and its thrown errors into error answers (ControlError keeps its code).
//
// Counter names are Linux xen-blkback's (/sys/bus/xen-backend/devices/vbd-D-N/statistics/*), so
// scripts written against a kernel backend read ours unchanged.

export interface DiskSummary {
  /** "<domid>/<devid>", the key under /local/domain/0/backend/vbd. */
  readonly key: string;
  readonly domid: number;
  readonly devid: number;
  readonly vdev: string;
  /** XenbusState name of the backend: InitWait, Connected, Closing ... */
  readonly state: string;
  /** What serves it: "<type>:<params>" as the toolstack wrote them (phy:/dev/loop0), or the store's name. */
  readonly store: string;
  /** Bytes; 0 while the store is not open yet. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Pages of the shared ring (0 before the frontend connects). */
  readonly ringPages: number;
  /** Ring ABI the frontend asked for, or null before it connects. */
  readonly abi: string | null;
  /** How guest data moves (copy, map, persistent), or null before the frontend connects. */
  readonly dataPath: string | null;
  /** Persistent grants kept mapped (data path persistent), else 0. */
  readonly grantsKept: number;
  readonly inflight: number;
}

/** One operation's latency, in nanoseconds, from the fio-bucket histogram blkback keeps. */
export interface OpLatency {
  readonly count: number;
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  /** Counts per range, in order: each bucket holds latencies up to `le_ns` (null: no upper bound). */
  readonly buckets: readonly { readonly le_ns: number | null; readonly count: number }[];
}

export interface DiskStatistics {
  readonly key: string;
  readonly vdev: string;
  readonly oo_req: number;
  readonly rd_req: number;
  readonly wr_req: number;
  readonly f_req: number;
  readonly ds_req: number;
  readonly rd_sect: number;
  readonly wr_sect: number;
  /** Requests answered with an error, by kind (src/blkback/stats.ts ERROR_KINDS). */
  readonly errors: Readonly<Record<string, number>>;
  /**
   * Who serves each ring of the current connection, in queue order: the data-plane worker (null: the
   * main thread), and whether the store's I/O goes through the main thread (a store a worker cannot
   * open for itself, such as iscsi://). Absent from backends that predate workers.
   */
  readonly rings?: readonly { readonly worker: number | null; readonly viaMainThread: boolean }[];
  readonly latency_ns: {
    readonly read: OpLatency;
    readonly write: OpLatency;
    readonly flush: OpLatency;
    readonly discard: OpLatency;
  };
}

export interface AttachResult {
  readonly key: string;
  readonly domid: number;
  readonly devid: number;
  readonly vdev: string;
}

export interface DetachResult {
  readonly key: string;
  readonly vdev: string;
}

export interface ResizeResult {
  readonly key: string;
  readonly vdev: string;
  readonly oldSize: number;
  readonly newSize: number;
}

export interface ControlTarget {
  list(): Promise<DiskSummary[]>;
  /** Every disk, or the one named ("3/51712", "3/xvda"). */
  stats(disk?: string): Promise<DiskStatistics[]>;
  /** xl block-attach: `spec` in xl disk syntax (docs/misc/xl-disk-configuration.txt). */
  attach(domid: number, spec: string): Promise<AttachResult>;
  /** xl block-detach. */
  detach(domid: number, vdev: string): Promise<DetachResult>;
  /** Grow (or shrink, if the store allows) a disk to `newSize` bytes and tell the frontend. */
  resize(disk: string, newSize: number): Promise<ResizeResult>;
  /** What kind of server this is (absent: a block backend). */
  info?(): Promise<ServerInfo>;
  /** An iSCSI target's LUNs, sessions and counters. */
  iscsiStatus?(): Promise<IscsiTargetStatus>;
}

export interface ServerInfo {
  readonly service: 'blkback' | 'iscsi-target';
}

export interface IscsiLunStatus {
  readonly lun: number;
  /** The store's name as the user gave it (no secrets: remote stores name their secret file, not the secret). */
  readonly store: string;
  readonly size: number;
  readonly blockSize: number;
  readonly readOnly: boolean;
  readonly thin: boolean;
  /** The device server's counters for this LUN (reads, writes, bytes, flushes, unmaps, errors). */
  readonly counters: Readonly<Record<string, number>>;
}

export interface IscsiSessionStatus {
  readonly tsih: number;
  readonly initiatorName: string;
  readonly isid: string;
  readonly type: 'Normal' | 'Discovery';
  readonly since: string;
  readonly commands: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly tasksInFlight: number;
  /** Negotiated values, e.g. { HeaderDigest: 'None', MaxRecvDataSegmentLength: 262144, ... }. */
  readonly parameters: Readonly<Record<string, string | number>>;
}

export interface IscsiTargetStatus {
  readonly targetName: string;
  readonly portal: string;
  readonly advertise: string;
  readonly allow: readonly string[] | 'ALL';
  readonly chap: 'none' | 'one-way' | 'mutual';
  readonly luns: readonly IscsiLunStatus[];
  readonly sessions: readonly IscsiSessionStatus[];
  readonly connections: number;
  readonly counters: Readonly<Record<string, number>>;
}
