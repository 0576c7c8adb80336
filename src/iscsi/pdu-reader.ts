// Cuts a TCP byte stream into iSCSI PDUs (RFC 7143 §11.2): BHS, AHS, optional header digest, data
// segment padded to 4 bytes, optional data digest. Sans-IO: `push` takes whatever the socket read,
// complete PDUs go to the sink in order.
//
// Zero-copy where it can be: a data segment inside one received chunk is handed over as a view of
// it, one that spans chunks as several views (received chunks are never reused, so views stay valid
// after the call). Only the 48-byte header is copied, into one reused buffer, so the sink sees the
// same `header` object every time and must read what it needs during the call.
//
// Limits are checked before anything is buffered: a DataSegmentLength above the negotiated
// MaxRecvDataSegmentLength stops the reader at once (the rest of the stream is not trusted).
import { BHS_LENGTH, DIGEST_LENGTH } from './constants.ts';
import { ahsLengthOf, dataSegmentLengthOf, padded } from './bhs.ts';
import { crc32c, crc32cv, readDigest } from './crc32c.ts';

export type FramingErrorKind = 'header-digest' | 'data-segment-too-long';

export interface PduSink {
  /**
   * One PDU. `header` is the reader's own 48-byte buffer (valid during the call only); `ahs` is
   * null or a fresh copy; `data` are views of the received bytes, `dataLength` bytes in all
   * (padding and digest removed).
   */
  onPdu(header: Uint8Array, ahs: Uint8Array | null, data: readonly Uint8Array[], dataLength: number): void;
  /**
   * The data digest did not match: the header is valid (RFC 7143 §7.8 says to Reject and discard the
   * PDU), the reader goes on with the next PDU.
   */
  onDataDigestError(header: Uint8Array, dataLength: number): void;
  /** The stream cannot be followed any more; the reader stops and drops what it holds. */
  onFramingError(kind: FramingErrorKind, message: string): void;
}

const NO_DATA: readonly Uint8Array[] = Object.freeze([]);
const PAD = new Uint8Array(4);

const State = { HEADER: 0, REST: 1, DEAD: 2 } as const;

export class PduReader {
  /** Header digest (CRC32C) expected after the BHS and AHS; set once login negotiated it. */
  headerDigest = false;
  /** Data digest expected after each data segment. */
  dataDigest = false;
  /** Largest data segment accepted: ours MaxRecvDataSegmentLength (8192 during login, §13.12). */
  maxDataSegmentLength = 8192;

  readonly #sink: PduSink;
  /** Received chunks not yet consumed; the first from `#head`. */
  #chunks: Buffer[] = [];
  #head = 0;
  #buffered = 0;
  #state: number = State.HEADER;
  readonly #header = Buffer.alloc(BHS_LENGTH);
  #ahsLength = 0;
  #dataLength = 0;
  /** Bytes after the BHS: AHS, header digest, padded data, data digest. */
  #restLength = 0;
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

  /** Bytes held waiting for the rest of a PDU. */
  get buffered(): number {
    return this.#buffered;
  }

  get dead(): boolean {
    return this.#state === State.DEAD;
  }

  /** Stops reading for good (the connection is closing). */
  stop(): void {
    this.#state = State.DEAD;
    this.#chunks = [];
    this.#buffered = 0;
  }

  push(chunk: Buffer): void {
    if (this.#state === State.DEAD || chunk.byteLength === 0) return;
    this.#bytesIn += chunk.byteLength;
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    while (this.#state !== State.DEAD) {
      if (this.#state === State.HEADER) {
        if (this.#buffered < BHS_LENGTH) return;
        this.#take(this.#header, BHS_LENGTH);
        this.#ahsLength = ahsLengthOf(this.#header);
        this.#dataLength = dataSegmentLengthOf(this.#header);
        if (this.#dataLength > this.maxDataSegmentLength) {
          this.#fail('data-segment-too-long', `DataSegmentLength ${this.#dataLength} exceeds MaxRecvDataSegmentLength ${this.maxDataSegmentLength}`);
          return;
        }
        this.#restLength = this.#ahsLength + (this.headerDigest ? DIGEST_LENGTH : 0)
          + padded(this.#dataLength) + (this.#dataLength > 0 && this.dataDigest ? DIGEST_LENGTH : 0);
        this.#state = State.REST;
      }
      if (this.#buffered < this.#restLength) return;
      this.#state = State.HEADER;
      this.#deliver();
    }
  }

  #deliver(): void {
    const header = this.#header;
    let ahs: Uint8Array | null = null;
    if (this.#ahsLength > 0) {
      ahs = Buffer.allocUnsafe(this.#ahsLength);
      this.#take(ahs, this.#ahsLength);
    }
    if (this.headerDigest) {
      let crc = crc32c(header);
      if (ahs !== null) crc = crc32c(ahs, crc);
      const sent = this.#takeU32Digest();
      if (sent !== crc) {
        this.#fail('header-digest', `header digest mismatch (received 0x${sent.toString(16)}, computed 0x${crc.toString(16)}) on opcode 0x${((header[0] as number) & 0x3f).toString(16)}`);
        return;
      }
    }
    const length = this.#dataLength;
    let data = NO_DATA;
    if (length > 0) {
      data = this.#takeViews(length);
      const pad = padded(length) - length;
      if (this.dataDigest) {
        let crc = crc32cv(data);
        if (pad > 0) {
          const padBytes = Buffer.allocUnsafe(pad);
          this.#take(padBytes, pad);
          crc = crc32c(padBytes, crc);
        }
        const sent = this.#takeU32Digest();
        if (sent !== crc) {
          this.#pdusIn++;
          this.#sink.onDataDigestError(header, length);
          return;
        }
      } else if (pad > 0) {
        this.#skip(pad);
      }
    }
    this.#pdusIn++;
    this.#sink.onPdu(header, ahs, data, length);
  }

  #fail(kind: FramingErrorKind, message: string): void {
    this.stop();
    this.#sink.onFramingError(kind, message);
  }

  /** Copies the next `n` bytes into `out`. */
  #take(out: Uint8Array, n: number): void {
    let done = 0;
    while (done < n) {
      const c = this.#chunks[0] as Buffer;
      const avail = c.byteLength - this.#head;
      const k = Math.min(avail, n - done);
      c.copy(out, done, this.#head, this.#head + k);
      done += k;
      this.#advance(k, avail);
    }
  }

  #skip(n: number): void {
    while (n > 0) {
      const c = this.#chunks[0] as Buffer;
      const avail = c.byteLength - this.#head;
      const k = Math.min(avail, n);
      n -= k;
      this.#advance(k, avail);
    }
  }

  /** Consumes `k` of the `avail` bytes left in the first chunk. */
  #advance(k: number, avail: number): void {
    this.#buffered -= k;
    if (k === avail) {
      this.#chunks.shift();
      this.#head = 0;
    } else {
      this.#head += k;
    }
  }

  #takeU32Digest(): number {
    const c = this.#chunks[0] as Buffer;
    if (c.byteLength - this.#head >= DIGEST_LENGTH) {
      const v = readDigest(c, this.#head);
      this.#advance(DIGEST_LENGTH, c.byteLength - this.#head);
      return v;
    }
    this.#take(PAD, DIGEST_LENGTH);
    return readDigest(PAD, 0);
  }

  /** The next `n` bytes as views of the received chunks. */
  #takeViews(n: number): readonly Uint8Array[] {
    const first = this.#chunks[0] as Buffer;
    const avail = first.byteLength - this.#head;
    if (avail >= n) {
      const v = first.subarray(this.#head, this.#head + n);
      this.#advance(n, avail);
      return [v];
    }
    const views: Uint8Array[] = [];
    while (n > 0) {
      const c = this.#chunks[0] as Buffer;
      const left = c.byteLength - this.#head;
      const k = Math.min(left, n);
      views.push(c.subarray(this.#head, this.#head + k));
      n -= k;
      this.#advance(k, left);
    }
    return views;
  }
}
