// A small iSCSI initiator for tests of the target: logs in with the shared negotiator, runs SCSI
// commands with immediate data, unsolicited Data-Out and R2Ts, gathers Data-In, and can send raw
// bytes for the hostile tests. It builds its PDUs by hand from RFC 7143 §11's layouts, not with the
// target's writer, so the two sides do not share a mistake.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { PduReader } from '../src/iscsi/pdu-reader.ts';
import { crc32c } from '../src/iscsi/crc32c.ts';
import { InitiatorNegotiator } from '../src/iscsi/negotiation.ts';
import type { InitiatorConfig, SessionParameters } from '../src/iscsi/negotiation.ts';
import { decodeText, encodeText } from '../src/iscsi/text.ts';
import type { TextPair } from '../src/iscsi/text.ts';
import { ChapInitiator, ChapSecret } from '../src/iscsi/chap.ts';
import { encodeLun } from '../src/scsi/lun.ts';

export interface ReceivedPdu {
  readonly opcode: number;
  readonly header: Buffer;
  readonly data: Buffer;
}

export interface CommandResult {
  readonly status: number;
  readonly response: number;
  readonly sense: Buffer | undefined;
  readonly data: Buffer;
  /** 'O' overflow, 'U' underflow, '' none. */
  readonly residualKind: 'O' | 'U' | '';
  readonly residual: number;
  /** PDUs of the answer, Data-In included. */
  readonly pdus: number;
  readonly r2ts: number;
}

export interface CommandOptions {
  readonly lun?: number;
  /** Data to write (W bit). */
  readonly dataOut?: Buffer;
  /** Bytes to read (R bit, expected length). */
  readonly readLength?: number;
  /** Expected Data Transfer Length, when it should differ from the data's length. */
  readonly edtl?: number;
  readonly immediate?: boolean;
  /** Send no immediate data even when ImmediateData=Yes. */
  readonly noImmediateData?: boolean;
}

export interface LoginOptions {
  readonly initiatorName?: string;
  readonly targetName?: string;
  readonly sessionType?: 'Normal' | 'Discovery';
  readonly isid?: Buffer;
  readonly chap?: { readonly name: string; readonly secret: string; readonly mutualSecret?: string };
  readonly headerDigest?: boolean;
  readonly dataDigest?: boolean;
  readonly immediateData?: boolean;
  readonly initialR2T?: boolean;
  readonly maxRecvDataSegmentLength?: number;
  readonly firstBurstLength?: number;
  readonly maxBurstLength?: number;
  readonly maxOutstandingR2T?: number;
}

interface Pending {
  readonly itt: number;
  readonly dataOut: Buffer | undefined;
  readonly chunks: { offset: number; data: Buffer }[];
  pdus: number;
  r2ts: number;
  resolve(r: CommandResult): void;
  reject(e: Error): void;
}

export class TestInitiator {
  readonly socket: net.Socket;
  readonly #reader: PduReader;
  readonly #inbox: ReceivedPdu[] = [];
  #waiters: ((p: ReceivedPdu | undefined) => void)[] = [];
  readonly #pending = new Map<number, Pending>();
  #closed = false;
  #itt = 1;
  cmdSN = 1;
  expStatSN = 0;
  params: SessionParameters | undefined;
  headerDigest = false;
  dataDigest = false;
  /** PDUs that were not the answer to a command (NOP-In pings, async messages, rejects). */
  readonly unsolicited: ReceivedPdu[] = [];
  readonly isid: Buffer;
  loginStatus = -1;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.isid = Buffer.concat([Buffer.from([0x80]), randomBytes(3), Buffer.alloc(2)]);
    this.#reader = new PduReader({
      dataBuffer: () => undefined,
      onPdu: (h, _ahs, data, length) =>
        this.#onPdu({ opcode: h[0]! & 0x3f, header: Buffer.from(h), data: data === null ? Buffer.alloc(0) : Buffer.from(data.subarray(0, length)) }),
      onDataDigestError: () => this.#fail(new Error('data digest error from the target')),
      onFramingError: (_k, m) => this.#fail(new Error(`framing: ${m}`)),
    });
    this.#reader.maxDataSegmentLength = 1 << 24;
    socket.on('data', (c: Buffer) => this.#reader.push(c));
    socket.on('close', () => this.#fail(new Error('connection closed')));
    socket.on('error', () => undefined);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<TestInitiator> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ port, host, noDelay: true });
      s.once('connect', () => resolve(new TestInitiator(s)));
      s.once('error', reject);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  #fail(err: Error): void {
    this.#closed = true;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const w of this.#waiters.splice(0)) w(undefined);
  }

  #onPdu(p: ReceivedPdu): void {
    const h = p.header;
    const itt = h.readUInt32BE(16);
    if (p.opcode === 0x21 || (p.opcode === 0x25 && (h[1]! & 0x01) !== 0) || (p.opcode === 0x20 && itt !== 0xffffffff))
      this.expStatSN = (h.readUInt32BE(24) + 1) >>> 0;
    const pend = this.#pending.get(itt);
    if (pend !== undefined && (p.opcode === 0x25 || p.opcode === 0x21 || p.opcode === 0x31)) return this.#progress(pend, p);
    if (p.opcode === 0x20 && itt === 0xffffffff) {
      // a ping from the target: echo its TTT
      this.unsolicited.push(p);
      this.send(this.#bhs(0x00 | 0x40, 0x80, { itt: 0xffffffff, ttt: h.readUInt32BE(20), lun: h.subarray(8, 16) }));
      return;
    }
    const w = this.#waiters.shift();
    if (w !== undefined) w(p);
    else this.#inbox.push(p);
  }

  /** The next PDU that is not part of a command in flight. */
  next(timeoutMs = 5000): Promise<ReceivedPdu | undefined> {
    const p = this.#inbox.shift();
    if (p !== undefined) return Promise.resolve(p);
    if (this.#closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== done);
        resolve(undefined);
      }, timeoutMs);
      const done = (x: ReceivedPdu | undefined): void => {
        clearTimeout(t);
        resolve(x);
      };
      this.#waiters.push(done);
    });
  }

  send(bytes: Uint8Array): void {
    if (!this.#closed) this.socket.write(bytes);
  }

  /** A BHS (plus digests and data) built by hand. */
  #bhs(
    byte0: number,
    byte1: number,
    f: {
      itt?: number;
      ttt?: number;
      lun?: Uint8Array;
      word20?: number;
      word24?: number;
      word28?: number;
      word32?: number;
      word36?: number;
      word40?: number;
      data?: Uint8Array;
      byte2?: number;
      byte3?: number;
      cdb?: Uint8Array;
    },
  ): Buffer {
    const h = Buffer.alloc(48);
    h[0] = byte0;
    h[1] = byte1;
    h[2] = f.byte2 ?? 0;
    h[3] = f.byte3 ?? 0;
    const len = f.data?.byteLength ?? 0;
    h.writeUIntBE(len, 5, 3);
    if (f.lun !== undefined) Buffer.from(f.lun).copy(h, 8);
    h.writeUInt32BE(f.itt ?? 0, 16);
    h.writeUInt32BE(f.ttt ?? f.word20 ?? 0, 20);
    h.writeUInt32BE(f.word24 ?? this.cmdSN, 24);
    h.writeUInt32BE(f.word28 ?? this.expStatSN, 28);
    if (f.cdb !== undefined) Buffer.from(f.cdb).copy(h, 32);
    else {
      h.writeUInt32BE(f.word32 ?? 0, 32);
      h.writeUInt32BE(f.word36 ?? 0, 36);
      h.writeUInt32BE(f.word40 ?? 0, 40);
    }
    return this.frame(h, f.data);
  }

  /** Header + digest + padded data + digest, with this session's digests. */
  frame(h: Buffer, data?: Uint8Array): Buffer {
    const parts: Buffer[] = [h];
    if (this.headerDigest) parts.push(digest(crc32c(h)));
    if (data !== undefined && data.byteLength > 0) {
      const pad = (4 - (data.byteLength % 4)) % 4;
      const padded = Buffer.concat([Buffer.from(data), Buffer.alloc(pad)]);
      parts.push(padded);
      if (this.dataDigest) parts.push(digest(crc32c(padded)));
    }
    return Buffer.concat(parts);
  }

  async login(o: LoginOptions = {}): Promise<number> {
    const auth =
      o.chap === undefined
        ? undefined
        : new ChapInitiator({
            name: o.chap.name,
            secret: new ChapSecret(Buffer.from(o.chap.secret)),
            ...(o.chap.mutualSecret === undefined ? {} : { mutual: { secret: new ChapSecret(Buffer.from(o.chap.mutualSecret)) } }),
            random: (n) => randomBytes(n),
          });
    const digests = (on: boolean | undefined): ('CRC32C' | 'None')[] => (on === true ? ['CRC32C'] : ['None']);
    const cfg: InitiatorConfig = {
      initiatorName: o.initiatorName ?? 'iqn.2026-12.org.blkback:test-initiator',
      sessionType: o.sessionType ?? 'Normal',
      ...(o.sessionType === 'Discovery' ? {} : { targetName: o.targetName ?? 'iqn.2026-12.org.blkback:test' }),
      ...(auth === undefined ? {} : { auth }),
      headerDigest: digests(o.headerDigest),
      dataDigest: digests(o.dataDigest),
      maxRecvDataSegmentLength: o.maxRecvDataSegmentLength ?? 262144,
      maxBurstLength: o.maxBurstLength ?? 262144,
      firstBurstLength: o.firstBurstLength ?? 262144,
      immediateData: o.immediateData ?? true,
      initialR2T: o.initialR2T ?? false,
      maxOutstandingR2T: o.maxOutstandingR2T ?? 1,
    };
    const neg = new InitiatorNegotiator(cfg);
    let req = neg.start();
    const isid = o.isid ?? this.isid;
    for (let round = 0; round < 16; round++) {
      const flags = (req.transit ? 0x80 : 0) | (req.csg << 2) | req.nsg;
      const h = Buffer.alloc(48);
      h[0] = 0x43;
      h[1] = flags;
      const text = encodeText(req.pairs);
      h.writeUIntBE(text.byteLength, 5, 3);
      isid.copy(h, 8);
      h.writeUInt32BE(0x1000, 16);
      h.writeUInt32BE(this.cmdSN, 24);
      h.writeUInt32BE(this.expStatSN, 28);
      this.send(this.frame(h, text));
      const r = await this.next();
      if (r === undefined) throw new Error('no login response');
      if (r.opcode !== 0x23) throw new Error(`login answered with opcode 0x${r.opcode.toString(16)}`);
      const status = (r.header[36]! << 8) | r.header[37]!;
      this.expStatSN = (r.header.readUInt32BE(24) + 1) >>> 0;
      this.loginStatus = status;
      if (status !== 0) return status;
      const d = decodeText(r.data);
      if (!d.ok) throw new Error(`login text: ${d.error.message}`);
      const rf = r.header[1]!;
      const step = neg.receiveLogin({ csg: (rf >> 2) & 3, nsg: rf & 3, transit: (rf & 0x80) !== 0 }, d.pairs as TextPair[]);
      if (!step.ok) throw new Error(`login: ${step.reason}`);
      if (step.complete) {
        this.params = neg.parameters();
        this.headerDigest = this.params.headerDigest;
        this.dataDigest = this.params.dataDigest;
        this.#reader.headerDigest = this.headerDigest;
        this.#reader.dataDigest = this.dataDigest;
        return 0;
      }
      req = step.next!;
    }
    throw new Error('login did not finish in 16 rounds');
  }

  /** Runs one SCSI command to its end. */
  command(cdb: Uint8Array, o: CommandOptions = {}): Promise<CommandResult> {
    const p = this.params;
    if (p === undefined) throw new Error('not logged in');
    const itt = this.#itt++;
    const dataOut = o.dataOut;
    const edtl = o.edtl ?? dataOut?.byteLength ?? o.readLength ?? 0;
    const lun = encodeLun(o.lun ?? 0);
    const cdb16 = Buffer.alloc(16);
    Buffer.from(cdb).copy(cdb16);
    let immediateLen = 0;
    let unsolicitedLen = 0;
    if (dataOut !== undefined) {
      const firstBurst = Math.min(p.firstBurstLength, edtl, dataOut.byteLength);
      if (p.immediateData && o.noImmediateData !== true) immediateLen = Math.min(firstBurst, p.maxXmitDataSegmentLength);
      if (!p.initialR2T) unsolicitedLen = firstBurst;
      else unsolicitedLen = immediateLen;
    }
    const flags = 0x01 | (dataOut !== undefined ? 0x20 : 0) | (o.readLength !== undefined ? 0x40 : 0) | (unsolicitedLen > immediateLen ? 0 : 0x80);
    const result = new Promise<CommandResult>((resolve, reject) => {
      this.#pending.set(itt, { itt, dataOut, chunks: [], pdus: 0, r2ts: 0, resolve, reject });
    });
    const cmd = this.#bhs(o.immediate === true ? 0x41 : 0x01, flags, {
      itt,
      lun,
      word20: edtl,
      cdb: cdb16,
      ...(immediateLen > 0 ? { data: dataOut!.subarray(0, immediateLen) } : {}),
    });
    if (o.immediate !== true) this.cmdSN = (this.cmdSN + 1) >>> 0;
    const out: Buffer[] = [cmd];
    // unsolicited Data-Out after the immediate data, up to FirstBurstLength
    let dataSN = 0;
    for (let off = immediateLen; off < unsolicitedLen; ) {
      const len = Math.min(p.maxXmitDataSegmentLength, unsolicitedLen - off);
      const final = off + len === unsolicitedLen;
      out.push(
        this.#bhs(0x05, final ? 0x80 : 0, { itt, lun, ttt: 0xffffffff, word24: 0, word36: dataSN++, word40: off, data: dataOut!.subarray(off, off + len) }),
      );
      off += len;
    }
    this.send(Buffer.concat(out));
    return result;
  }

  #progress(pend: Pending, pdu: ReceivedPdu): void {
    const h = pdu.header;
    pend.pdus++;
    if (pdu.opcode === 0x31) {
      pend.r2ts++;
      const ttt = h.readUInt32BE(20);
      const offset = h.readUInt32BE(40);
      const length = h.readUInt32BE(44);
      const p = this.params!;
      const data = pend.dataOut ?? Buffer.alloc(0);
      const out: Buffer[] = [];
      let dataSN = 0;
      for (let off = offset; off < offset + length; ) {
        const len = Math.min(p.maxXmitDataSegmentLength, offset + length - off);
        const final = off + len === offset + length;
        const piece = off + len <= data.byteLength ? data.subarray(off, off + len) : Buffer.alloc(len);
        out.push(this.#bhs(0x05, final ? 0x80 : 0, { itt: pend.itt, lun: h.subarray(8, 16), ttt, word24: 0, word36: dataSN++, word40: off, data: piece }));
        off += len;
      }
      this.send(Buffer.concat(out));
      return;
    }
    if (pdu.opcode === 0x25) {
      pend.chunks.push({ offset: h.readUInt32BE(40), data: pdu.data });
      if ((h[1]! & 0x01) === 0) return;
      return this.#finish(pend, h[3]!, 0, h, undefined);
    }
    // SCSI Response
    let sense: Buffer | undefined;
    if (pdu.data.byteLength >= 2) {
      const n = pdu.data.readUInt16BE(0);
      sense = pdu.data.subarray(2, 2 + n);
    }
    this.#finish(pend, h[3]!, h[2]!, h, sense);
  }

  #finish(pend: Pending, status: number, response: number, h: Buffer, sense: Buffer | undefined): void {
    this.#pending.delete(pend.itt);
    const f = h[1]!;
    const total = pend.chunks.reduce((n, c) => Math.max(n, c.offset + c.data.byteLength), 0);
    const data = Buffer.alloc(total);
    for (const c of pend.chunks) c.data.copy(data, c.offset);
    pend.resolve({
      status,
      response,
      sense,
      data,
      residualKind: (f & 0x04) !== 0 ? 'O' : (f & 0x02) !== 0 ? 'U' : '',
      residual: h.readUInt32BE(44),
      pdus: pend.pdus,
      r2ts: pend.r2ts,
    });
  }

  /** NOP-Out ping; resolves with the NOP-In's data. */
  async ping(data: Buffer = Buffer.alloc(0)): Promise<Buffer | undefined> {
    const itt = this.#itt++;
    this.send(this.#bhs(0x40, 0x80, { itt, ttt: 0xffffffff, lun: Buffer.alloc(8), data }));
    const r = await this.next();
    return r?.opcode === 0x20 ? r.data : undefined;
  }

  /** A Text Request with these pairs; the whole answer (continued responses followed). */
  async text(pairs: TextPair[]): Promise<TextPair[]> {
    const itt = this.#itt++;
    let ttt = 0xffffffff;
    let body: Uint8Array = encodeText(pairs);
    const answer: Buffer[] = [];
    for (;;) {
      this.send(this.#bhs(0x04, 0x80, { itt, ttt, data: body }));
      this.cmdSN = (this.cmdSN + 1) >>> 0;
      const r = await this.next();
      if (r === undefined || r.opcode !== 0x24) throw new Error(`text answered with ${r === undefined ? 'nothing' : `opcode 0x${r.opcode.toString(16)}`}`);
      answer.push(r.data);
      if ((r.header[1]! & 0x40) === 0) break;
      ttt = r.header.readUInt32BE(20);
      body = new Uint8Array(0);
    }
    const d = decodeText(Buffer.concat(answer));
    if (!d.ok) throw new Error(d.error.message);
    return d.pairs as TextPair[];
  }

  /** Task management; resolves with the response code. */
  async taskManagement(fn: number, o: { lun?: number; rtt?: number; refCmdSN?: number } = {}): Promise<number | undefined> {
    const itt = this.#itt++;
    this.send(this.#bhs(0x42, 0x80 | fn, { itt, lun: encodeLun(o.lun ?? 0), word20: o.rtt ?? 0xffffffff, word32: o.refCmdSN ?? 0 }));
    const r = await this.next();
    return r?.opcode === 0x22 ? r.header[2] : undefined;
  }

  async logout(): Promise<number | undefined> {
    const itt = this.#itt++;
    this.send(this.#bhs(0x46, 0x80, { itt }));
    const r = await this.next();
    return r?.opcode === 0x26 ? r.header[2] : undefined;
  }

  close(): void {
    this.socket.destroy();
  }
}

function digest(crc: number): Buffer {
  const d = Buffer.alloc(4);
  d.writeUInt32LE(crc);
  return d;
}

// CDB builders (SBC-3), big-endian as SCSI is.
export function read16(lba: number, blocks: number, flags = 0): Buffer {
  const c = Buffer.alloc(16);
  c[0] = 0x88;
  c[1] = flags;
  c.writeBigUInt64BE(BigInt(lba), 2);
  c.writeUInt32BE(blocks, 10);
  return c;
}

export function write16(lba: number, blocks: number, flags = 0): Buffer {
  const c = read16(lba, blocks, flags);
  c[0] = 0x8a;
  return c;
}

export function read10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x28;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}

export function write10(lba: number, blocks: number, flags = 0): Buffer {
  const c = read10(lba, blocks);
  c[0] = 0x2a;
  c[1] = flags;
  return c;
}

export function synchronizeCache10(): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x35;
  return c;
}

export function testUnitReady(): Buffer {
  return Buffer.alloc(6);
}
