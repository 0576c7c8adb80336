// The guest's half of a virtual block device, presented to code in the guest as a BlockDevice. It
// joins the xenbus handshake (handshake.ts: backend, ring grants, XenbusState) and the ring I/O
// (ring-client.ts: requests, data grants, responses), and keeps what belongs to the disk itself:
// its description, range and read-only checks, the choice of flush, and resize, and with several
// queues (multi-queue) which ring each operation goes to.
import { BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP, SECTOR_SIZE, SEGS_PER_INDIRECT_FRAME, VDISK_READONLY, XEN_PAGE_SIZE } from '../blkif/constants.ts';
import type { BlkifAbi } from '../blkif/constants.ts';
import type { BlockDevice, BlockDeviceInfo } from '../block/types.ts';
import type { GuestHypervisor } from '../hypervisor/types.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { connectFrontend, releaseRing } from './handshake.ts';
import type { BackendDisk, FrontendConnection, GrantedRing, XenbusFrontend } from './handshake.ts';
import { RingClient } from './ring-client.ts';
import type { RingStats } from './ring-client.ts';

export interface BlkfrontOptions {
  /** Ring ABI to speak (default x86_64). */
  readonly abi?: BlkifAbi;
  /** Wanted ring size as 2^order pages (default 4, capped by the backend's max-ring-page-order). */
  readonly ringPageOrder?: number;
  /** How long to wait for each handshake step (ms, default 10000). */
  readonly timeoutMs?: number;
  /**
   * Queues (rings) wanted, one per vCPU as Linux blkfront asks; capped by the backend's
   * multi-queue-max-queues (default 1).
   */
  readonly queues?: number;
  /**
   * Segments per request when the backend offers indirect requests (default 32, Linux blkfront's
   * max_indirect_segments; at most 512, one indirect page). 0 or <= 11: direct requests only.
   */
  readonly maxIndirectSegments?: number;
  /**
   * Offer persistent grants (feature-persistent; default true, as Linux blkfront's feature_persistent
   * parameter). Used only if the backend offers them too: data then goes through a pool of pages
   * granted once per connection, copied in and out here (ring-client.ts).
   */
  readonly persistentGrants?: boolean;
}

export interface BlkfrontStats extends RingStats {
  /** Size changes announced by the backend. */
  resizes: number;
}

export class Blkfront implements BlockDevice {
  readonly name: string;
  readonly devid: number;
  readonly stats: BlkfrontStats = { requests: 0, responses: 0, queued: 0, maxQueued: 0, notifies: 0, events: 0, errors: 0, resizes: 0, indirect: 0 };
  readonly #hv: GuestHypervisor;
  readonly #abi: BlkifAbi;
  readonly #xenbus: XenbusFrontend;
  readonly #rings: readonly GrantedRing[];
  /** One per queue; every operation goes whole to one of them (#pick). */
  readonly #clients: readonly RingClient[];
  readonly #disk: BackendDisk;
  readonly #persistent: boolean;
  #info: BlockDeviceInfo;
  #closed = false;
  /** Where #pick starts looking, so that ties (an idle device) rotate over the queues. */
  #next = 0;

  private constructor(hv: GuestHypervisor, devid: number, name: string, abi: BlkifAbi, connection: FrontendConnection, wantedIndirect: number) {
    const { xenbus, disk, rings } = connection;
    this.#persistent = connection.persistent;
    this.#hv = hv;
    this.devid = devid;
    this.name = name;
    this.#abi = abi;
    this.#xenbus = xenbus;
    this.#rings = rings;
    this.#disk = disk;
    const indirect = Math.min(wantedIndirect, disk.maxIndirectSegments);
    // Every queue's client counts into the one stats object: the device's totals.
    this.#clients = rings.map(
      (ring, q) =>
        new RingClient({
          memory: hv.memory,
          grants: hv.grants,
          backendId: xenbus.backendId,
          sring: ring.sring,
          events: ring.events,
          abi,
          handle: devid,
          name: rings.length > 1 ? `${name} queue ${q}` : name,
          maxSegments: indirect > BLKIF_MAX_SEGMENTS_PER_REQUEST ? indirect : BLKIF_MAX_SEGMENTS_PER_REQUEST,
          stats: this.stats,
          persistent: connection.persistent,
        }),
    );
    this.#info = diskInfo(disk);
  }

  static async connect(hv: GuestHypervisor, devid: number, name: string, options: BlkfrontOptions = {}): Promise<Blkfront> {
    const abi = options.abi ?? 'x86_64';
    const queues = options.queues ?? 1;
    if (!Number.isSafeInteger(queues) || queues < 1) throw new BlockError('BLK_ERR_CONFIG', `${name}: queues ${queues} is not a whole number >= 1`);
    const connection = await connectFrontend(hv, devid, name, {
      abi,
      ringPageOrder: options.ringPageOrder ?? 4,
      queues,
      persistentGrants: options.persistentGrants ?? true,
      timeoutMs: options.timeoutMs ?? 10_000,
    });
    const wantedIndirect = Math.max(0, Math.min(SEGS_PER_INDIRECT_FRAME, options.maxIndirectSegments ?? 32));
    const front = new Blkfront(hv, devid, name, abi, connection, wantedIndirect);
    await connection.xenbus.watchResize((sectors) => front.#resized(sectors));
    return front;
  }

  get info(): BlockDeviceInfo {
    return this.#info;
  }

  get abi(): BlkifAbi {
    return this.#abi;
  }

  /** Slots of each queue's ring. */
  get ringSize(): number {
    return this.#clients[0]!.size;
  }

  /** Pages of each queue's ring. */
  get ringPages(): number {
    return this.#rings[0]!.pages;
  }

  /** Both sides agreed to persistent grants at connect. */
  get persistentGrants(): boolean {
    return this.#persistent;
  }

  /** Persistent grants: pool pages over every queue, and how many are granted now. */
  get grantPool(): { readonly pages: number; readonly granted: number } {
    let pages = 0;
    let granted = 0;
    for (const c of this.#clients) {
      const p = c.grantPool;
      pages += p.pages;
      granted += p.granted;
    }
    return { pages, granted };
  }

  /** Queues (rings) negotiated with the backend. */
  get queues(): number {
    return this.#clients.length;
  }

  /** Responses taken from each queue's ring, in queue order. */
  get queueResponses(): number[] {
    return this.#clients.map((c) => c.responses);
  }

  get inflight(): number {
    let n = 0;
    for (const c of this.#clients) n += c.inflight;
    return n;
  }

  /**
   * The queue for the next operation. Linux queues a request on the ring of the CPU that issued
   * it; this guest is one thread, so there is no CPU to follow. Round-robin would spread equal
   * requests evenly but lets a queue holding a large, split write fill its ring while another sits
   * idle; taking the queue with the fewest pieces in flight keeps the rings' depths even whatever
   * the mix of sizes. Ties go to the queue after the last one picked, so a device doing one
   * operation at a time still uses every ring in turn. An operation goes whole to one queue, as a
   * blk-mq request stays on its hardware queue: the pieces of one split I/O share a ring.
   */
  #pick(): RingClient {
    const clients = this.#clients;
    const n = clients.length;
    if (n === 1) return clients[0]!;
    let best = this.#next;
    let least = clients[best]!.inflight;
    for (let i = 1; i < n && least > 0; i++) {
      const q = (this.#next + i) % n;
      const load = clients[q]!.inflight;
      if (load < least) {
        best = q;
        least = load;
      }
    }
    this.#next = (best + 1) % n;
    return clients[best]!;
  }

  #resized(sectors: number): void {
    if (this.#closed) return;
    const size = sectors * SECTOR_SIZE;
    if (size === this.#info.size) return;
    this.stats.resizes++;
    this.#info = { ...this.#info, size };
  }

  readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    return this.#submitData(BLKIF_OP.READ, offset, iov);
  }

  writev(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    if (this.#info.readOnly) return Promise.reject(new BlockError('BLK_ERR_READONLY', `${this.name}: read-only disk`, { errno: Errno.EROFS }));
    return this.#submitData(BLKIF_OP.WRITE, offset, iov);
  }

  flush(): Promise<void> {
    const op = this.#disk.flushCache ? BLKIF_OP.FLUSH_DISKCACHE : this.#disk.barrier ? BLKIF_OP.WRITE_BARRIER : -1;
    if (op < 0) return Promise.resolve(); // no volatile cache behind the backend
    return this.#submitControl(op, 0, 0);
  }

  /**
   * WRITE_BARRIER with no data: the backend drains every earlier request, then flushes. A backend
   * drains only the ring the barrier came on (Linux xen_blk_drain_io), so with several queues one
   * goes on every ring: each drains its own earlier requests and holds its later ones, and the
   * operation is done when all are.
   */
  barrier(): Promise<void> {
    if (!this.#disk.barrier)
      return Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', `${this.name}: backend has no feature-barrier`, { errno: Errno.EOPNOTSUPP }));
    if (this.#closed) return Promise.reject(new BlockError('BLK_ERR_CLOSED', `${this.name}: device closed`));
    if (this.#clients.length === 1) return this.#clients[0]!.submitControl(BLKIF_OP.WRITE_BARRIER, 0, 0);
    return Promise.all(this.#clients.map((c) => c.submitControl(BLKIF_OP.WRITE_BARRIER, 0, 0))).then(() => undefined);
  }

  discard(offset: number, length: number): Promise<void> {
    if (!this.#disk.discard)
      return Promise.reject(new BlockError('BLK_ERR_UNSUPPORTED', `${this.name}: backend has no feature-discard`, { errno: Errno.EOPNOTSUPP }));
    this.#checkRange(offset, length);
    return this.#submitControl(BLKIF_OP.DISCARD, offset / SECTOR_SIZE, length / SECTOR_SIZE);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    // blkif has no write-zeroes operation: write a zeroed buffer, a page-run at a time.
    this.#checkRange(offset, length);
    const pages = Math.min(16, Math.ceil(length / XEN_PAGE_SIZE));
    const frame = this.#hv.memory.allocPages(pages);
    if (frame < 0) return Promise.reject(new BlockError('BLK_ERR_NOMEM', `${this.name}: no guest memory for a zero buffer`));
    const zero = this.#hv.memory.view(frame, pages).fill(0);
    const run = async (): Promise<void> => {
      try {
        for (let done = 0; done < length; done += zero.length) {
          await this.writev(offset + done, [zero.subarray(0, Math.min(zero.length, length - done))]);
        }
      } finally {
        this.#hv.memory.freePages(frame, pages);
      }
    };
    return run();
  }

  #checkRange(offset: number, length: number): void {
    if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0 || offset < 0 || offset + length > this.#info.size) {
      throw new BlockError('BLK_ERR_RANGE', `${this.name}: ${length} bytes at ${offset} is outside the disk or not sector-aligned`, { errno: Errno.EINVAL });
    }
  }

  #submitControl(op: number, sector: number, nrSectors: number): Promise<void> {
    if (this.#closed) return Promise.reject(new BlockError('BLK_ERR_CLOSED', `${this.name}: device closed`));
    // One ring: a flush there flushes the backend's device, so it covers every write answered before it, on any queue.
    return this.#pick().submitControl(op, sector, nrSectors);
  }

  #submitData(op: number, offset: number, iov: readonly Uint8Array[]): Promise<void> {
    if (this.#closed) return Promise.reject(new BlockError('BLK_ERR_CLOSED', `${this.name}: device closed`));
    let length = 0;
    for (const b of iov) length += b.length;
    try {
      this.#checkRange(offset, length);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#pick().submitData(op, offset / SECTOR_SIZE, iov);
  }

  /** Waits for I/O in flight on every queue, then Closing -> Closed with the backend, and frees the rings. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#clients.map((c) => c.whenIdle()));
    await this.#xenbus.close();
    for (const ring of this.#rings) releaseRing(this.#hv, ring);
    for (const client of this.#clients) client.release();
  }
}

function diskInfo(disk: BackendDisk): BlockDeviceInfo {
  return {
    size: disk.sectors * SECTOR_SIZE,
    logicalBlockSize: disk.sectorSize,
    physicalBlockSize: disk.physicalSectorSize,
    readOnly: (disk.info & VDISK_READONLY) !== 0,
    volatileCache: disk.flushCache || disk.barrier,
    canFlush: true,
    canFua: false,
    canDiscard: disk.discard,
    canWriteZeroes: false,
    discardGranularity: disk.discardGranularity,
    bufferAlignment: SECTOR_SIZE,
  };
}
