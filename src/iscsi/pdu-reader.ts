// Cuts a TCP byte stream into iSCSI PDUs (RFC 7143 §11.2): BHS, AHS, optional header digest, data
// segment padded to 4 bytes, optional data digest. Sans-IO: `push` takes whatever the socket read,
// complete PDUs go to the sink in order.
//
// The reader keeps nothing of the bytes it is given: the transport reads every socket into one
// fixed buffer (no allocation per read, nothing for the garbage collector), and the reader copies
// out what it needs. The header lands in the reader's own buffer; the data segment is copied
// straight into a buffer the sink chooses once it has seen the header (a pooled, page-aligned
// buffer of the command it belongs to), so data is copied once on its way from the socket to the
// store, and the sink can refuse to take data it has no place for.
//
// Limits are checked before anything is buffered: a DataSegmentLength above the negotiated
// MaxRecvDataSegmentLength stops the reader at once (the rest of the stream is not trusted).
import { BHS_LENGTH, DIGEST_LENGTH } from './constants.ts';
import { ahsLengthOf, dataSegmentLengthOf, padded } from './bhs.ts';
import { crc32c, readDigest } from './crc32c.ts';

export type FramingErrorKind = 'header-digest' | 'data-segment-too-long';

export interface PduSink {
  /**
   * Where the data segment (`length` bytes) of the PDU with this header is to be copied: a buffer
   * of at least `length` bytes, or undefined for a fresh one. Asked once the header (and its
   * digest) is whole, before any of the data is copied.
   */
  dataBuffer(header: Uint8Array, length: number): Uint8Array | undefined;
  /**
   * One PDU. `header` is the reader's own 48-byte buffer (valid during the call only); `ahs` is
   * null or a fresh copy; `data` is the buffer dataBuffer() gave (or the reader's), its first
   * `length` bytes the data segment (padding and digest removed), or null without data.
   */
  onPdu(header: Uint8Array, ahs: Uint8Array | null, data: Uint8Array | null, length: number): void;
  /**
   * The data digest did not match: the header is valid (RFC 7143 §7.8 says to Reject and discard
   * the PDU), the reader goes on with the next PDU. `data` is the buffer dataBuffer() gave.
   */
  onDataDigestError(header: Uint8Array, data: Uint8Array, length: number): void;
  /** The stream cannot be followed any more; the reader stops and drops what it holds. */
  onFramingError(kind: FramingErrorKind, message: string): void;
}

const State = { HEADER: 0, DATA: 1, TRAILER: 2, DEAD: 3 } as const;
/** Most AHS bytes a BHS can announce (TotalAHSLength is one byte of 4-byte words). */
const MAX_AHS = 255 * 4;

export class PduReader {
  /** Header digest (CRC32C) expected after the BHS and AHS; set once login negotiated it. */
  headerDigest = false;
  /** Data digest expected after each data segment. */
  dataDigest = false;
  /** Largest data segment accepted: ours MaxRecvDataSegmentLength (8192 during login, §13.12). */
  maxDataSegmentLength = 8192;

  readonly #sink: PduSink;
  #state: number = State.HEADER;
  /** BHS, AHS and header digest, gathered here. */
  readonly #head = Buffer.alloc(BHS_LENGTH + MAX_AHS + DIGEST_LENGTH);
  /** The BHS alone (a view of #head), as sinks see it. */
  readonly #header = this.#head.subarray(0, BHS_LENGTH);
  #headHave = 0;
  #headNeed = BHS_LENGTH;
  #ahsLength = 0;
  #dataLength = 0;
  #data: Uint8Array | null = null;
  #dataHave = 0;
  /** Padding and data digest, gathered here. */
  readonly #trailer = Buffer.alloc(3 + DIGEST_LENGTH);
  #trailerHave = 0;
  #trailerNeed = 0;
  #bytesIn = 0;
  #pdusIn = 0;

  constructor(sink: PduSink) {
    this.#sink = sink;
  }

  get bytesIn(): number {
    return this.#bytesIn;
  }

  get pdusIn(): number {
    return this.#pdusIn;
  }

  /** Bytes of an unfinished PDU held now. */
  get buffered(): number {
    return this.#headHave + this.#dataHave + this.#trailerHave;
  }

  get dead(): boolean {
    return this.#state === State.DEAD;
  }

  /** Stops reading for good (the connection is closing). */
  stop(): void {
    this.#state = State.DEAD;
    this.#data = null;
    this.#headHave = 0;
    this.#dataHave = 0;
    this.#trailerHave = 0;
  }

  /**
   * Takes bytes off the wire: the first `length` bytes of `chunk` (all of it by default). `chunk` is
   * not kept (it may be reused as soon as this returns).
   */
  push(chunk: Uint8Array, length: number = chunk.byteLength): void {
    const n = length;
    this.#bytesIn += n;
    let at = 0;
    while (at < n || this.#complete()) {
      switch (this.#state) {
        case State.DEAD:
          return;
        case State.HEADER: {
          const k = Math.min(this.#headNeed - this.#headHave, n - at);
          copySmall(chunk, at, this.#head, this.#headHave, k);
          this.#headHave += k;
          at += k;
          if (this.#headHave < this.#headNeed) return;
          if (this.#headNeed === BHS_LENGTH) {
            this.#ahsLength = ahsLengthOf(this.#head);
            this.#dataLength = dataSegmentLengthOf(this.#head);
            if (this.#dataLength > this.maxDataSegmentLength) {
              return this.#fail('data-segment-too-long', `DataSegmentLength ${this.#dataLength} exceeds MaxRecvDataSegmentLength ${this.maxDataSegmentLength}`);
            }
            this.#headNeed = BHS_LENGTH + this.#ahsLength + (this.headerDigest ? DIGEST_LENGTH : 0);
            if (this.#headHave < this.#headNeed) continue;
          }
          if (this.headerDigest) {
            const end = BHS_LENGTH + this.#ahsLength;
            const computed = crc32c(this.#head.subarray(0, end));
            const sent = readDigest(this.#head, end);
            if (sent !== computed) {
              return this.#fail(
                'header-digest',
                `header digest mismatch (received 0x${sent.toString(16)}, computed 0x${computed.toString(16)}) on opcode 0x${((this.#head[0] as number) & 0x3f).toString(16)}`,
              );
            }
          }
          this.#startData();
          break;
        }
        case State.DATA: {
          const data = this.#data as Uint8Array;
          const k = Math.min(this.#dataLength - this.#dataHave, n - at);
          copy(chunk, at, data, this.#dataHave, k);
          this.#dataHave += k;
          at += k;
          if (this.#dataHave < this.#dataLength) return;
          this.#trailerNeed = padded(this.#dataLength) - this.#dataLength + (this.dataDigest ? DIGEST_LENGTH : 0);
          this.#state = State.TRAILER;
          break;
        }
        case State.TRAILER: {
          const k = Math.min(this.#trailerNeed - this.#trailerHave, n - at);
          copySmall(chunk, at, this.#trailer, this.#trailerHave, k);
          this.#trailerHave += k;
          at += k;
          if (this.#trailerHave < this.#trailerNeed) return;
          this.#finishData();
          break;
        }
      }
    }
  }

  /** A PDU with nothing more to read: delivered without waiting for more bytes. */
  #complete(): boolean {
    return this.#state === State.TRAILER && this.#trailerHave === this.#trailerNeed;
  }

  #startData(): void {
    const length = this.#dataLength;
    if (length === 0) return this.#deliver(null);
    let data = this.#sink.dataBuffer(this.#header, length);
    if (data === undefined || data.byteLength < length) data = Buffer.allocUnsafe(length);
    if (this.#state === State.DEAD) return;
    this.#data = data;
    this.#dataHave = 0;
    this.#state = State.DATA;
  }

  #finishData(): void {
    const data = this.#data as Uint8Array;
    const length = this.#dataLength;
    if (this.dataDigest) {
      const pad = padded(length) - length;
      let crc = crc32c(length === data.byteLength ? data : data.subarray(0, length));
      if (pad > 0) crc = crc32c(this.#trailer.subarray(0, pad), crc);
      if (readDigest(this.#trailer, pad) !== crc) {
        this.#reset();
        this.#pdusIn++;
        this.#sink.onDataDigestError(this.#header, data, length);
        return;
      }
    }
    this.#deliver(data);
  }

  #deliver(data: Uint8Array | null): void {
    const ahs = this.#ahsLength === 0 ? null : Buffer.from(this.#head.subarray(BHS_LENGTH, BHS_LENGTH + this.#ahsLength));
    const length = this.#dataLength;
    this.#reset();
    this.#pdusIn++;
    this.#sink.onPdu(this.#header, ahs, data, length);
  }

  /** Ready for the next PDU (unless stopped meanwhile). */
  #reset(): void {
    if (this.#state === State.DEAD) return;
    this.#state = State.HEADER;
    this.#headHave = 0;
    this.#headNeed = BHS_LENGTH;
    this.#data = null;
    this.#dataHave = 0;
    this.#trailerHave = 0;
    this.#trailerNeed = 0;
  }

  #fail(kind: FramingErrorKind, message: string): void {
    this.stop();
    this.#sink.onFramingError(kind, message);
  }
}

/**
 * Copies `n` bytes from `src` at `from` into `dst` at `to`. TypedArray#set from a plain view: no
 * Buffer#copy argument checks, and no view at all when the whole of `src` goes.
 */
function copy(src: Uint8Array, from: number, dst: Uint8Array, to: number, n: number): void {
  if (n <= SMALL_COPY) return copySmall(src, from, dst, to, n);
  dst.set(from === 0 && n === src.byteLength ? src : new Uint8Array(src.buffer, src.byteOffset + from, n), to);
}

/** Headers, padding and digests: a byte loop is cheaper than making a view to copy from. */
const SMALL_COPY = 64;

function copySmall(src: Uint8Array, from: number, dst: Uint8Array, to: number, n: number): void {
  if (n > SMALL_COPY) return copy(src, from, dst, to, n);
  for (let i = 0; i < n; i++) dst[to + i] = src[from + i] as number;
}
