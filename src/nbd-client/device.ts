// An NBD export as a BlockDevice (src/block/types.ts), for nbd://, nbds://, nbd+unix:// and
// nbds+unix:// store specs (src/config/nbd-uri.ts).
//
// Requests go out as NBD commands, many at once on one connection, cut at the server's maximum
// payload (NBD_INFO_BLOCK_SIZE, else the document's 32 MiB). What the server's transmission flags
// do not offer is done another way or refused: FUA without SEND_FUA is a write then a flush; write
// zeroes without SEND_WRITE_ZEROES writes zero buffers; discard without SEND_TRIM is EOPNOTSUPP.
//
// A lost connection is not an error for the requests on it: the device connects again and sends
// again what was not answered, until `reconnectTimeoutMs` after the loss; then they fail with EIO.
// Nothing is lost silently: when the server has a volatile cache (it offered SEND_FLUSH) and writes
// were acknowledged since the last completed flush, a lost connection may have taken them with it
// (a restarted server, a killed qemu-nbd), so the next flush fails with EIO, once, as Linux reports
// a writeback error, and the guest learns its data may be gone.
import type { Socket } from 'node:net';
import type { BlockDevice, BlockDeviceInfo, BlockExtent } from '../block/types.ts';
import { WRITE_FUA } from '../block/types.ts';
import { Reconnector, UnflushedWrites } from '../block/reconnect.ts';
import { describeNbdTarget } from '../config/nbd-uri.ts';
import type { NbdStoreSpec } from '../config/nbd-uri.ts';
import { BlockError, Errno } from '../internal/errors.ts';
import { Command, NbdErrno, TransmissionFlag } from '../nbd/constants.ts';
import { NbdConnection } from './connection.ts';
import type { ConnectionCounters } from './connection.ts';
import { NbdCommandError, NbdConnectError, NbdConnectionLost } from './errors.ts';
import { haggle } from './handshake.ts';
import type { ExportInfo } from './handshake.ts';
import { loadTlsCredentials } from './tls-credentials.ts';
import { connectSocket, upgradeToTls } from './transport.ts';
import type { TlsCredentials } from './transport.ts';

const CONNECT_TIMEOUT_MS = 10_000;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Connections one request may be sent on before it fails (a request the server always drops). */
const MAX_RESENDS = 8;
/** TRIM, WRITE_ZEROES and BLOCK_STATUS lengths are u32: cut larger ranges below 4 GiB. */
const MAX_RANGE = 0x80000000;
/** Largest zero buffer written when the server has no WRITE_ZEROES. */
const ZERO_BUFFER_BYTES = 1 << 20;

export interface NbdDeviceCounters extends ConnectionCounters {
  reconnects: number;
  /** Requests sent again on a new connection after theirs was lost. */
  resent: number;
  /** Flushes failed because acknowledged writes may have been lost with the connection. */
  lostCacheFlushes: number;
}

export interface OpenNbdOptions {
  /** What to call the device in messages (the store spec). */
  readonly name?: string;
  readonly readOnly?: boolean;
  readonly connectTimeoutMs?: number;
}

export async function openNbdDevice(spec: NbdStoreSpec, opts: OpenNbdOptions = {}): Promise<NbdBlockDevice> {
  const where = describeNbdTarget(spec);
  const creds = spec.tls === undefined ? undefined : await loadTlsCredentials(spec.tls, where);
  const device = new NbdBlockDevice(spec, opts.name ?? where, where, creds, opts.readOnly ?? false, opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS);
  try {
    await device.start();
  } catch (err) {
    await device.close();
    throw err;
  }
  return device;
}

export class NbdBlockDevice implements BlockDevice {
  readonly name: string;
  readonly counters: NbdDeviceCounters = { requests: 0, protocolErrors: 0, reconnects: 0, resent: 0, lostCacheFlushes: 0 };
  readonly #spec: NbdStoreSpec;
  readonly #where: string;
  readonly #creds: TlsCredentials | undefined;
  readonly #readOnly: boolean;
  readonly #connectTimeoutMs: number;
  #export: ExportInfo | undefined;
  #info: BlockDeviceInfo | undefined;
  #blockSize = 512;
  #maxPayload = 32 << 20;
  #connection: NbdConnection | undefined;
  readonly #reconnector: Reconnector<NbdConnection>;
  #closed = false;
  readonly #unflushed = new UnflushedWrites();
  #zeroes: Uint8Array | undefined;

  constructor(spec: NbdStoreSpec, name: string, where: string, creds: TlsCredentials | undefined, readOnly: boolean, connectTimeoutMs: number) {
    this.#spec = spec;
    this.name = name;
    this.#where = where;
    this.#creds = creds;
    this.#readOnly = readOnly;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#reconnector = new Reconnector({
      windowMs: spec.reconnectTimeoutMs,
      connect: async () => {
        const c = await this.#connect();
        this.#connection = c;
        this.counters.reconnects++;
        return c;
      },
      closed: () => (this.#closed ? new BlockError('BLK_ERR_CLOSED', `${this.#where}: device closed`, { errno: Errno.EIO }) : undefined),
      gaveUp: (lastError) =>
        new NbdConnectionLost(`${this.#where}: connection lost and not restored within ${spec.reconnectTimeoutMs / 1000} s (last attempt: ${lastError})`),
    });
  }

  get info(): BlockDeviceInfo {
    if (this.#info === undefined) throw new BlockError('BLK_ERR_STATE', `${this.#where}: not open`);
    return this.#info;
  }

  /** What haggling settled with the server (tests, reports). */
  get exportInfo(): ExportInfo | undefined {
    return this.#export;
  }

  async start(): Promise<void> {
    const c = await this.#connect();
    this.#connection = c;
    const e = c.info;
    this.#export = e;
    // 512-byte sectors unless the server needs larger blocks; a tail shorter than one is not shown
    this.#blockSize = Math.max(512, e.minimumBlock);
    this.#maxPayload = Math.max(this.#blockSize, Math.floor(e.maximumPayload / this.#blockSize) * this.#blockSize);
    this.#info = describe(e, this.#blockSize, this.#readOnly);
  }

  #flag(f: number): boolean {
    return ((this.#export?.transmissionFlags ?? 0) & f) !== 0;
  }

  async #connect(): Promise<NbdConnection> {
    const s = this.#spec;
    const creds = this.#creds;
    const raw = await connectSocket(s, this.#connectTimeoutMs, this.#where, { reuseReadBuffer: creds === undefined });
    const startTls = creds === undefined ? undefined : (socket: Socket): Promise<Socket> => upgradeToTls(socket, creds, s, HANDSHAKE_TIMEOUT_MS, this.#where);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      raw.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    let done: Awaited<ReturnType<typeof haggle>>;
    try {
      done = await haggle(raw, { exportName: s.exportName, startTls, where: this.#where });
    } catch (err) {
      if (timedOut)
        throw new NbdConnectError(
          'BLK_ERR_NBD_HANDSHAKE',
          `${this.#where}: handshake failed: the server did not finish it within ${HANDSHAKE_TIMEOUT_MS / 1000} s`,
        );
      throw err;
    } finally {
      clearTimeout(timer);
    }
    const previous = this.#export;
    if (previous !== undefined && done.info.size !== previous.size) {
      done.socket.destroy();
      throw new BlockError('BLK_ERR_NBD_CHANGED', `${this.#where}: the export is ${done.info.size} bytes now, ${previous.size} before: not the same disk`);
    }
    const c = new NbdConnection(done.socket, done.info, this.#where, this.counters, done.early);
    c.onLost(() => {
      if (this.#connection !== c) return;
      this.#reconnector.lost();
      // the server's cache may have gone with it (it has one when it offers flush)
      if (this.#flag(TransmissionFlag.NBD_FLAG_SEND_FLUSH)) this.#unflushed.cacheMayBeLost();
    });
    this.#reconnector.connected();
    return c;
  }

  /** The live connection, connecting again after a loss (within the reconnect window). */
  #current(): Promise<NbdConnection> {
    const c = this.#connection;
    if (c !== undefined && !c.lost) return Promise.resolve(c);
    if (this.#closed) return Promise.reject(new BlockError('BLK_ERR_CLOSED', `${this.#where}: device closed`, { errno: Errno.EIO }));
    return this.#reconnector.reconnect();
  }

  /**
   * One request to an answer: sent again on a new connection after a loss. `lost`: the error of a
   * first attempt the caller made itself and lost with its connection.
   */
  async #run(what: string, op: (c: NbdConnection) => Promise<void>, lost?: Error): Promise<void> {
    let resends = 0;
    let last = lost;
    for (;;) {
      if (last !== undefined) {
        if (this.#closed || ++resends >= MAX_RESENDS)
          throw new NbdConnectionLost(`${this.#where}: ${what}: failed on ${resends} connections, the last: ${last.message}`);
        this.counters.resent++;
      }
      const live = this.#connection;
      const c = live !== undefined && !live.lost ? live : await this.#current();
      try {
        await op(c);
        return;
      } catch (err) {
        if (!lostWith(c, err)) throw err;
        last = err as Error;
      }
    }
  }

  #refuseWrite(what: string): void {
    if (this.#readOnly || this.#flag(TransmissionFlag.NBD_FLAG_READ_ONLY)) {
      const why = this.#readOnly ? 'opened read-only' : 'the server exports it read-only';
      throw new BlockError('BLK_ERR_READONLY', `${this.#where}: ${what} refused: read-only disk (${why})`, { errno: Errno.EROFS });
    }
  }

  async readv(offset: number, iov: readonly Uint8Array[]): Promise<void> {
    const length = total(iov);
    if (length === 0) return; // the protocol leaves zero-length requests unspecified: never send one
    const live = this.#connection;
    if (length <= this.#maxPayload && live !== undefined && !live.lost) {
      // as in writev: no closure or second async frame unless the connection is lost
      try {
        await live.read(offset, length, iov, 0);
      } catch (err) {
        if (!lostWith(live, err)) throw err;
        await this.#run('read', (c) => c.read(offset, length, iov, 0), err as Error);
      }
      return;
    }
    if (length <= this.#maxPayload) return this.#run('read', (c) => c.read(offset, length, iov, 0));
    await this.#pieces(length, this.#maxPayload, (at, n) => this.#run('read', (c) => c.read(offset + at, n, iov, at)));
  }

  async writev(offset: number, iov: readonly Uint8Array[], flags = 0): Promise<void> {
    this.#refuseWrite('write');
    const wantFua = (flags & WRITE_FUA) !== 0;
    const fua = wantFua && this.#flag(TransmissionFlag.NBD_FLAG_SEND_FUA);
    const length = total(iov);
    if (length === 0) return;
    const live = this.#connection;
    if (length <= this.#maxPayload && (!wantFua || fua) && live !== undefined && !live.lost) {
      // The usual case without closures or a second async frame; after a loss, #run sends it again.
      try {
        await live.write(offset, iov, fua);
      } catch (err) {
        if (!lostWith(live, err)) throw err;
        await this.#run('write', (c) => c.write(offset, iov, fua), err as Error);
      }
      if (!fua) this.#unflushed.acked();
      return;
    }
    const one = async (at: number, n: number, data: readonly Uint8Array[]): Promise<void> => {
      await this.#run('write', (c) => c.write(offset + at, data, fua));
      if (!fua) this.#unflushed.acked();
    };
    if (length <= this.#maxPayload) await one(0, length, iov);
    else await this.#pieces(length, this.#maxPayload, (at, n) => one(at, n, sliceIov(iov, at, n)));
    // FUA the server does not offer: the write, then a flush (which also covers it)
    if (wantFua && !fua) await this.flush();
  }

  async flush(): Promise<void> {
    // nothing was written through a read-only device, and without SEND_FLUSH there is no cache
    if (this.#readOnly || !this.#flag(TransmissionFlag.NBD_FLAG_SEND_FLUSH)) return;
    const covers = this.#unflushed.flushStarting();
    await this.#run('flush', (c) => c.command(Command.NBD_CMD_FLUSH, 0, 0));
    if (this.#unflushed.flushed(covers)) {
      this.counters.lostCacheFlushes++;
      throw new BlockError(
        'BLK_ERR_NBD_CACHE_LOST',
        `${this.#where}: flush failed: the connection was lost with acknowledged writes not yet flushed; the server's cache may have dropped them`,
        { errno: Errno.EIO },
      );
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#refuseWrite('discard');
    if (length === 0) return;
    if (!this.info.canDiscard)
      throw new BlockError('BLK_ERR_UNSUPPORTED', `${this.#where}: the server does not offer trim (no NBD_FLAG_SEND_TRIM)`, { errno: Errno.EOPNOTSUPP });
    await this.#pieces(length, this.#rangeLimit(), async (at, n) => {
      await this.#run('trim', (c) => c.command(Command.NBD_CMD_TRIM, offset + at, n));
      this.#unflushed.acked();
    });
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#refuseWrite('write-zeroes');
    if (length === 0) return;
    if (this.#flag(TransmissionFlag.NBD_FLAG_SEND_WRITE_ZEROES)) {
      await this.#pieces(length, this.#rangeLimit(), async (at, n) => {
        await this.#run('write-zeroes', (c) => c.command(Command.NBD_CMD_WRITE_ZEROES, offset + at, n));
        this.#unflushed.acked();
      });
      return;
    }
    this.#zeroes ??= new Uint8Array(Math.min(ZERO_BUFFER_BYTES, this.#maxPayload));
    const zeroes = this.#zeroes;
    await this.#pieces(length, zeroes.byteLength, (at, n) => this.writev(offset + at, [zeroes.subarray(0, n)]));
  }

  async blockStatus(offset: number, length: number): Promise<readonly BlockExtent[]> {
    if (length === 0) return [];
    if (this.#export?.baseAllocationId === undefined) return [{ offset, length, allocated: true }];
    const n = Math.min(length, this.#rangeLimit());
    let extents: BlockExtent[] = [];
    await this.#run('block status', async (c) => {
      // a server that did not keep base:allocation after reconnecting: everything counts as allocated
      extents = c.info.baseAllocationId === undefined ? [{ offset, length: n, allocated: true }] : await c.blockStatus(offset, n);
    });
    return extents;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#reconnector.settled();
    this.#connection?.disconnect();
  }

  #rangeLimit(): number {
    return Math.floor(MAX_RANGE / this.#blockSize) * this.#blockSize;
  }

  /** Runs `fn` on consecutive pieces of at most `max` bytes, all at once. */
  async #pieces(length: number, max: number, fn: (at: number, length: number) => Promise<unknown>): Promise<void> {
    if (length <= max) {
      await fn(0, length);
      return;
    }
    const all: Promise<unknown>[] = [];
    for (let at = 0; at < length; at += max) all.push(fn(at, Math.min(max, length - at)));
    await Promise.all(all);
  }
}

/**
 * Whether `err` means the request was lost with its connection, to be sent again on the next: the
 * connection dropped, or the server answered ESHUTDOWN (it is going away; the connection is ended).
 */
function lostWith(c: NbdConnection, err: unknown): boolean {
  if (err instanceof NbdCommandError && err.nbdError === NbdErrno.NBD_ESHUTDOWN) {
    c.shutdown('the server is shutting down (ESHUTDOWN)');
    return true;
  }
  return err instanceof NbdConnectionLost;
}

function describe(e: ExportInfo, blockSize: number, readOnly: boolean): BlockDeviceInfo {
  const has = (f: number): boolean => (e.transmissionFlags & f) !== 0;
  const ro = readOnly || has(TransmissionFlag.NBD_FLAG_READ_ONLY);
  return {
    size: Math.floor(e.size / blockSize) * blockSize,
    logicalBlockSize: blockSize,
    physicalBlockSize: Math.max(blockSize, Math.min(e.preferredBlock, 65536)),
    readOnly: ro,
    // read-only: nothing written through us, so nothing of ours in the server's cache
    volatileCache: !ro && has(TransmissionFlag.NBD_FLAG_SEND_FLUSH),
    canFlush: true,
    canFua: true,
    canDiscard: !ro && has(TransmissionFlag.NBD_FLAG_SEND_TRIM),
    canWriteZeroes: !ro,
    discardGranularity: has(TransmissionFlag.NBD_FLAG_SEND_TRIM) ? blockSize : 0,
    bufferAlignment: 1,
    discardZeroes: false,
  };
}

function total(iov: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of iov) n += b.byteLength;
  return n;
}

/** The buffers' bytes [at, at+length) as views (no copy). */
function sliceIov(iov: readonly Uint8Array[], at: number, length: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = at;
  let left = length;
  for (const b of iov) {
    if (left === 0) break;
    if (skip >= b.byteLength) {
      skip -= b.byteLength;
      continue;
    }
    const n = Math.min(left, b.byteLength - skip);
    out.push(b.subarray(skip, skip + n));
    left -= n;
    skip = 0;
  }
  return out;
}
