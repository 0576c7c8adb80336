// Builds outgoing PDUs and hands them to the transport in batches: every PDU made during one turn
// of the event loop leaves in one write (one writev system call), however many commands completed.
//
// Headers, digests, padding and small data segments are laid end to end in slabs that are reused
// once the transport has written them, so steady state allocates no buffers; a large data segment
// (a read's 64 KiB) is not copied but sent as its own chunk between slab pieces. Sans-IO: the
// transport and the scheduling of flushes are injected.
import { BHS_LENGTH, DIGEST_LENGTH } from './constants.ts';
import { padded, putDataSegmentLength } from './bhs.ts';
import { crc32c, writeDigest } from './crc32c.ts';

export interface PduOutput {
  /**
   * Writes the chunks in order; calls `done` once they are written out or the transport is gone,
   * after which their memory is reused.
   */
  write(chunks: readonly Uint8Array[], done: () => void): void;
}

/** Data segments up to this size are copied next to their header: one chunk is cheaper than two. */
const INLINE_DATA = 8192;
const SLAB_SIZE = 256 * 1024;
const MAX_FREE_SLABS = 4;

interface Slab {
  readonly buf: Buffer;
  /** Batches in flight that hold a piece of this slab. */
  inflight: number;
  /** No longer the slab being written: recycled when the last batch holding it is done. */
  retired: boolean;
}

interface Batch {
  readonly chunks: Uint8Array[];
  readonly slabs: Slab[];
  /** Made on the first release (the initiator has none): one allocation less per batch. */
  releases: (() => void)[] | null;
}

export class PduWriter {
  headerDigest = false;
  dataDigest = false;

  readonly #out: PduOutput;
  readonly #schedule: (flush: () => void) => void;
  readonly #header = Buffer.alloc(BHS_LENGTH);
  readonly #free: Slab[] = [];
  #slab: Slab;
  #pos = 0;
  #segStart = 0;
  #batch: Batch | undefined;
  #scheduled = false;
  #closed = false;
  #pdusOut = 0;
  #bytesOut = 0;
  readonly #flushNow = (): void => this.flush();

  constructor(out: PduOutput, schedule: (flush: () => void) => void = setImmediate) {
    this.#out = out;
    this.#schedule = schedule;
    this.#slab = this.#newSlab();
  }

  get pdusOut(): number {
    return this.#pdusOut;
  }

  get bytesOut(): number {
    return this.#bytesOut;
  }

  /** The header of the next PDU, zeroed: fill it, then call send(). */
  header(): Buffer {
    // a loop: Buffer#fill and TypedArray#fill both end in a runtime call, dearer for 48 bytes
    const h = this.#header;
    for (let i = 0; i < BHS_LENGTH; i++) h[i] = 0;
    return h;
  }

  /**
   * Queues the PDU whose header was filled in `header()`, with its data segment (the length field is
   * set here). `release` runs once the data has been written out (or dropped with the connection).
   */
  send(data: Uint8Array | null = null, release?: () => void): void {
    if (this.#closed) {
      release?.();
      return;
    }
    const batch = this.#currentBatch();
    const length = data === null ? 0 : data.byteLength;
    const h = this.#header;
    putDataSegmentLength(h, 0, length);
    const pad = padded(length) - length;
    const trailer = pad + (length > 0 && this.dataDigest ? DIGEST_LENGTH : 0);
    const inline = length <= INLINE_DATA;
    const need = BHS_LENGTH + (this.headerDigest ? DIGEST_LENGTH : 0) + (inline ? length : 0) + trailer;
    this.#reserve(need);
    const buf = this.#slab.buf;
    buf.set(h, this.#pos);
    this.#pos += BHS_LENGTH;
    if (this.headerDigest) {
      writeDigest(buf, this.#pos, crc32c(h));
      this.#pos += DIGEST_LENGTH;
    }
    if (data !== null && length > 0) {
      if (inline) {
        buf.set(data, this.#pos);
        this.#pos += length;
      } else {
        this.#endSegment(batch);
        batch.chunks.push(data);
      }
      if (pad > 0) {
        buf.fill(0, this.#pos, this.#pos + pad);
        this.#pos += pad;
      }
      if (this.dataDigest) {
        let crc = crc32c(data);
        if (pad > 0) crc = crc32c(buf.subarray(this.#pos - pad, this.#pos), crc);
        writeDigest(buf, this.#pos, crc);
        this.#pos += DIGEST_LENGTH;
      }
    }
    if (release !== undefined) (batch.releases ??= []).push(release);
    this.#pdusOut++;
    this.#bytesOut += need + (inline ? 0 : length);
    if (!this.#scheduled) {
      this.#scheduled = true;
      this.#schedule(this.#flushNow);
    }
  }

  /** Hands everything queued to the transport now. */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#batch;
    if (batch === undefined) return;
    this.#endSegment(batch);
    this.#batch = undefined;
    if (batch.chunks.length === 0) return this.#done(batch);
    this.#out.write(batch.chunks, () => this.#done(batch));
  }

  /** Drops what is queued (the connection is gone) and refuses further PDUs. */
  close(): void {
    this.#closed = true;
    const batch = this.#batch;
    this.#batch = undefined;
    if (batch !== undefined) this.#done(batch);
  }

  #currentBatch(): Batch {
    let b = this.#batch;
    if (b === undefined) {
      b = { chunks: [], slabs: [this.#slab], releases: null };
      this.#slab.inflight++;
      this.#segStart = this.#pos;
      this.#batch = b;
    }
    return b;
  }

  /** Closes the slab piece written since the last chunk boundary into the batch's chunk list. */
  #endSegment(batch: Batch): void {
    if (this.#pos > this.#segStart) batch.chunks.push(this.#slab.buf.subarray(this.#segStart, this.#pos));
    this.#segStart = this.#pos;
  }

  /** Makes room for `n` contiguous bytes in the current slab, moving to a fresh one if needed. */
  #reserve(n: number): void {
    if (this.#pos + n <= this.#slab.buf.byteLength) return;
    const batch = this.#batch as Batch;
    this.#endSegment(batch);
    const old = this.#slab;
    old.retired = true;
    if (old.inflight === 0) this.#recycle(old);
    this.#slab = this.#free.pop() ?? this.#newSlab(n);
    if (this.#slab.buf.byteLength < n) this.#slab = this.#newSlab(n);
    this.#slab.retired = false;
    this.#slab.inflight++;
    batch.slabs.push(this.#slab);
    this.#pos = 0;
    this.#segStart = 0;
  }

  #done(batch: Batch): void {
    for (const slab of batch.slabs) {
      slab.inflight--;
      if (slab.inflight === 0) {
        if (slab.retired) this.#recycle(slab);
        else if (slab === this.#slab && this.#batch === undefined) {
          // nothing of the current slab is in flight or queued: write from its start again
          this.#pos = 0;
          this.#segStart = 0;
        }
      }
    }
    if (batch.releases !== null) for (const release of batch.releases) release();
  }

  #recycle(slab: Slab): void {
    if (slab.buf.byteLength === SLAB_SIZE && this.#free.length < MAX_FREE_SLABS) this.#free.push(slab);
  }

  #newSlab(atLeast = 0): Slab {
    return { buf: Buffer.allocUnsafeSlow(Math.max(SLAB_SIZE, atLeast)), inflight: 0, retired: false };
  }
}
