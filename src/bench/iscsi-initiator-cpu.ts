// Our initiator's own CPU per I/O, without a socket or a real target: the whole device stack
// (IscsiBlockDevice, InitiatorSession, PduReader, PduWriter) runs against a fake target in this
// process that answers every READ(16) from a ring of zeros (it writes 48 header bytes per answer and
// parses the command), so nearly all the process spends is the initiator's. Loopback runs against
// tgt or our target share the cores with the target and swing widely; this one leaves out the kernel
// (socket reads and writes, TCP) and the target, so A/B changes to the initiator's JavaScript show
// in alternating rounds. `iscsi-initiator-load.ts` against a real target measures the whole.
//   node iscsi-initiator-cpu.js [BS=65536] [DEPTH=32] [SECONDS=3 | COUNTios] [SEGMENT=262144] [READ_BYTES=131072]
// SEGMENT is the target's Data-In PDU size (tgt and ours send a 64 KiB read as one PDU with the
// status in it), READ_BYTES how much one "socket read" hands over (a read in each turn of the event
// loop, as the TCP transport does). Prints one JSON line.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Bhs, putU32, snAdd, u32 } from '../iscsi/bhs.ts';
import { BHS_LENGTH, Flag, Opcode, RESERVED_TAG } from '../iscsi/constants.ts';
import { TargetNegotiator, defaultOffer } from '../iscsi/negotiation.ts';
import { PduReader } from '../iscsi/pdu-reader.ts';
import type { PduSink } from '../iscsi/pdu-reader.ts';
import { decodeText, encodeText } from '../iscsi/text.ts';
import { openIscsiDevice } from '../iscsi-initiator/device.ts';
import type { InitiatorSession, SessionTransport } from '../iscsi-initiator/session.ts';
import type { TcpConnection } from '../iscsi-initiator/transport.ts';

export interface InitiatorCpuOptions {
  readonly bs: number;
  readonly depth: number;
  readonly seconds: number;
  /** Largest Data-In data segment the fake target sends. */
  readonly segment: number;
  /** Bytes handed to the session per simulated socket read (one per macrotask). */
  readonly readBytes: number;
  /** Warm-up before the measured span (the JIT settles), seconds. */
  readonly warmupSeconds?: number;
  /**
   * Instead of `seconds`: exactly this many reads, after 3000 for warm-up. For instruction counts
   * under valgrind (`valgrind --tool=cachegrind --cache-sim=no node --single-threaded ...`), where time
   * means nothing: the difference of two runs' counts divided by that of their reads is the
   * instructions per I/O, start-up, login and warm-up left out.
   */
  readonly count?: number;
}

export interface InitiatorCpuResult {
  readonly ios: number;
  readonly seconds: number;
  /** Process CPU (user + system, all threads) over the measured span, µs per I/O; the fake's small share included. */
  readonly cpuUsPerIo: number;
  /**
   * The same in windows of 250 ms: the lowest and the median. Other processes only ever add to a
   * window's cost (cache misses, preemption), so on a shared machine the lowest is the best estimate
   * of what the code costs, and the one to compare between builds.
   */
  readonly minWindowUsPerIo: number;
  readonly medianWindowUsPerIo: number;
  readonly writesPerIo: number;
  readonly readsPerIo: number;
}

const LUN_BLOCKS = 1 << 21; // 1 GiB of 512-byte blocks
const BLOCK = 512;
const QUEUE_DEPTH_WINDOW = 128; // as tgt's MaxQueueCmd
const WINDOW_MS = 250;
const WARMUP_COUNT = 3000;

/** A target answering from memory: login, TEST UNIT READY and the like with GOOD, READs with zeros. */
class FakeTarget implements PduSink {
  session: InitiatorSession | undefined;
  writes = 0;
  reads = 0;
  readonly #reader = new PduReader(this);
  readonly #negotiator = new TargetNegotiator({ ...defaultOffer({ digest: 'none' }), authMethods: ['None'] });
  readonly #segment: number;
  readonly #readBytes: number;
  /**
   * Bytes queued for the initiator: [head, tail) of a ring that is all zeros but for what is queued,
   * so a READ's zeros cost the fake nothing: it writes the header and skips the payload. Written
   * regions go back to zero once delivered (dirty). A PDU never wraps: one that does not fit before
   * the end starts at 0, and `end` marks where the queued bytes stop before that.
   */
  readonly #out = Buffer.alloc(8 << 20);
  #head = 0;
  #tail = 0;
  #end = -1;
  /** Non-zero regions written, in order: ring start, ring end, stream offset of the PDU's end. */
  readonly #dirty: number[] = [];
  /** Stream offsets (bytes queued and delivered since the start). */
  #queued = 0;
  #delivered = 0;
  #scheduled = false;
  #statSN = 1;
  #expCmdSN = 1;
  readonly #deliver = (): void => this.#deliverOne();

  constructor(segment: number, readBytes: number) {
    this.#segment = segment;
    this.#readBytes = readBytes;
    this.#reader.maxDataSegmentLength = 1 << 24;
  }

  readonly transport: SessionTransport = {
    write: (chunks, done) => {
      this.writes++;
      for (const c of chunks) this.#reader.push(c);
      process.nextTick(done);
    },
    destroy: () => {
      this.session?.closed('fake target: closed');
    },
  };

  dataBuffer(): Uint8Array | undefined {
    return undefined;
  }

  onDataDigestError(): void {
    throw new Error('fake target: data digest error');
  }

  onFramingError(_kind: string, message: string): void {
    throw new Error(`fake target: ${message}`);
  }

  onPdu(h: Uint8Array, _ahs: Uint8Array | null, data: Uint8Array | null, length: number): void {
    const opcode = (h[0] as number) & 0x3f;
    const itt = u32(h, Bhs.ITT);
    if (opcode === Opcode.LOGIN_REQUEST) return this.#login(h, data === null ? new Uint8Array(0) : data.subarray(0, length));
    if (opcode === Opcode.SCSI_COMMAND) {
      const cmdSN = u32(h, Bhs.WORD24);
      if (cmdSN === this.#expCmdSN) this.#expCmdSN = snAdd(cmdSN, 1);
      const edtl = u32(h, Bhs.WORD20);
      const op = h[Bhs.CDB] as number;
      if (op === 0x88) return this.#dataIn(itt, edtl, null);
      if (op === 0x9e) {
        // READ CAPACITY(16): last LBA, block size
        const cap = Buffer.alloc(32);
        cap.writeUInt32BE(0, 0);
        cap.writeUInt32BE(LUN_BLOCKS - 1, 4);
        cap.writeUInt32BE(BLOCK, 8);
        return this.#dataIn(itt, Math.min(edtl, 32), cap);
      }
      if (edtl > 0 && ((h[Bhs.FLAGS] as number) & Flag.R) !== 0) return this.#dataIn(itt, edtl, null);
      return this.#response(itt);
    }
    if (opcode === Opcode.LOGOUT_REQUEST) {
      const o = this.#header(Opcode.LOGOUT_RESPONSE, Flag.F, itt, 0);
      putU32(o, this.#tail + Bhs.WORD24, this.#statSN++);
      this.#commit(BHS_LENGTH, BHS_LENGTH);
      return;
    }
    if (opcode === Opcode.NOP_OUT && itt !== RESERVED_TAG) {
      const o = this.#header(Opcode.NOP_IN, Flag.F, itt, 0);
      putU32(o, this.#tail + Bhs.WORD20, RESERVED_TAG);
      putU32(o, this.#tail + Bhs.WORD24, this.#statSN++);
      this.#commit(BHS_LENGTH, BHS_LENGTH);
    }
  }

  #login(h: Uint8Array, text: Uint8Array): void {
    const f = h[Bhs.FLAGS] as number;
    const decoded = decodeText(text);
    if (!decoded.ok) throw new Error(`fake target: bad login text: ${decoded.error.message}`);
    const step = this.#negotiator.receiveLogin({ csg: (f >> 2) & 3, nsg: f & 3, transit: (f & Flag.T) !== 0 }, decoded.pairs);
    if (!step.ok) throw new Error(`fake target: login refused: ${step.reason}`);
    const answer = encodeText(step.answers);
    const o = this.#header(Opcode.LOGIN_RESPONSE, (step.transit ? Flag.T : 0) | (step.csg << 2) | step.nsg, u32(h, Bhs.ITT), answer.byteLength);
    const at = this.#tail;
    o.set(h.subarray(Bhs.ISID, Bhs.ISID + 6), at + Bhs.ISID);
    if (step.complete) o.writeUInt16BE(1, at + Bhs.TSIH);
    putU32(o, at + Bhs.WORD24, this.#statSN++);
    o.set(answer, at + BHS_LENGTH);
    this.#commit(BHS_LENGTH + ((answer.byteLength + 3) & ~3), BHS_LENGTH + answer.byteLength);
  }

  /** Data-In PDUs of at most `segment` bytes, the last with the status (phase collapse). */
  #dataIn(itt: number, length: number, content: Buffer | null): void {
    let dataSN = 0;
    for (let at = 0; at < length || (length === 0 && at === 0); ) {
      const n = Math.min(this.#segment, length - at);
      const last = at + n >= length;
      const o = this.#header(Opcode.SCSI_DATA_IN, last ? Flag.F | Flag.S : 0, itt, n);
      const p = this.#tail;
      putU32(o, p + Bhs.WORD20, RESERVED_TAG);
      if (last) putU32(o, p + Bhs.WORD24, this.#statSN++);
      putU32(o, p + Bhs.WORD36, dataSN++);
      putU32(o, p + Bhs.WORD40, at);
      if (content !== null) content.copy(o, p + BHS_LENGTH, at, at + n);
      this.#commit(BHS_LENGTH + ((n + 3) & ~3), content === null ? BHS_LENGTH : BHS_LENGTH + n);
      at += n;
      if (length === 0) break;
    }
  }

  #response(itt: number): void {
    const o = this.#header(Opcode.SCSI_RESPONSE, Flag.F, itt, 0);
    putU32(o, this.#tail + Bhs.WORD24, this.#statSN++);
    this.#commit(BHS_LENGTH, BHS_LENGTH);
  }

  /** Room for a PDU at the tail, its BHS filled with the fields every answer has (the rest is zero). */
  #header(opcode: number, flags: number, itt: number, dataLength: number): Buffer {
    const need = BHS_LENGTH + dataLength + 4;
    const size = this.#out.byteLength;
    const wrapped = this.#end >= 0;
    const room = wrapped ? this.#head - this.#tail : size - this.#tail;
    if (need > room) {
      if (wrapped || need > this.#head) throw new Error('fake target: ring full');
      this.#end = this.#tail;
      this.#tail = 0;
    }
    const o = this.#out;
    const p = this.#tail;
    o[p] = opcode;
    o[p + 1] = flags;
    o[p + 5] = dataLength >>> 16;
    o[p + 6] = dataLength >>> 8;
    o[p + 7] = dataLength;
    putU32(o, p + Bhs.ITT, itt);
    putU32(o, p + Bhs.WORD28, this.#expCmdSN);
    putU32(o, p + Bhs.WORD32, snAdd(this.#expCmdSN, QUEUE_DEPTH_WINDOW - 1));
    return o;
  }

  /** Queues the PDU at the tail (`bytes` long, its first `written` bytes not zero). */
  #commit(bytes: number, written: number): void {
    this.#queued += bytes;
    this.#dirty.push(this.#tail, this.#tail + written, this.#queued);
    this.#tail += bytes;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#deliver);
    }
  }

  /** One simulated socket read: up to readBytes of what is queued, then the next in a later turn. */
  #deliverOne(): void {
    this.#scheduled = false;
    const stop = this.#end >= 0 ? this.#end : this.#tail;
    const n = Math.min(this.#readBytes, stop - this.#head);
    const from = this.#head;
    const chunk = this.#out.subarray(from, from + n);
    this.reads++;
    // the bytes stay put until this returns: the reader copies out what it keeps
    this.session?.receive(chunk);
    this.#head = from + n;
    this.#delivered += n;
    const dirty = this.#dirty;
    let i = 0;
    while (i < dirty.length && (dirty[i + 2] as number) <= this.#delivered) {
      const out = this.#out;
      for (let j = dirty[i] as number, end = dirty[i + 1] as number; j < end; j++) out[j] = 0;
      i += 3;
    }
    if (i > 0) dirty.splice(0, i);
    if (this.#head === this.#end) {
      this.#head = 0;
      this.#end = -1;
    }
    if (this.#head === this.#tail && this.#end < 0) this.#head = this.#tail = 0;
    if (this.#tail !== this.#head && !this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#deliver);
    }
  }
}

export async function runInitiatorCpu(o: InitiatorCpuOptions): Promise<InitiatorCpuResult> {
  const fake = new FakeTarget(o.segment, o.readBytes);
  const connect = (): Promise<TcpConnection> =>
    Promise.resolve({
      transport: fake.transport,
      attach(s: InitiatorSession) {
        fake.session = s;
      },
    });
  const device = await openIscsiDevice(
    {
      kind: 'iscsi',
      host: 'fake',
      port: 3260,
      user: undefined,
      targetName: 'iqn.2026-12.org.blkback:fake',
      lun: 1,
      secretFile: undefined,
      digest: false,
      initiatorName: undefined,
      reconnectTimeoutMs: 1000,
    },
    { connect, readOnly: true },
  );
  try {
    const size = device.info.size;
    let next = 0;
    let ios = 0;
    let phaseEnd = process.hrtime.bigint() + BigInt(Math.round((o.warmupSeconds ?? 1) * 1e9));
    const counted = o.count !== undefined;
    let toIssue = WARMUP_COUNT;
    let measuring = false;
    const more = (): boolean => (counted ? toIssue-- > 0 : process.hrtime.bigint() < phaseEnd);
    const worker = async (): Promise<void> => {
      const iov = [new Uint8Array(o.bs)];
      while (more()) {
        if (next + o.bs > size) next = 0;
        const at = next;
        next += o.bs;
        await device.readv(at, iov);
        if (measuring) ios++;
      }
    };
    await Promise.all(Array.from({ length: o.depth }, worker));
    measuring = true;
    fake.writes = 0;
    fake.reads = 0;
    const cpu0 = process.cpuUsage();
    const start = process.hrtime.bigint();
    phaseEnd = start + BigInt(Math.round(o.seconds * 1e9));
    toIssue = o.count ?? 0;
    const windows: number[] = [];
    let last = { cpu: cpu0, ios: 0 };
    const tick = setInterval(() => {
      const now = process.cpuUsage();
      const n = ios - last.ios;
      if (n > 0) windows.push((now.user - last.cpu.user + now.system - last.cpu.system) / n);
      last = { cpu: now, ios };
    }, WINDOW_MS);
    await Promise.all(Array.from({ length: o.depth }, worker));
    clearInterval(tick);
    const cpu = process.cpuUsage(cpu0);
    windows.sort((a, b) => a - b);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    return {
      ios,
      seconds,
      cpuUsPerIo: (cpu.user + cpu.system) / ios,
      minWindowUsPerIo: windows[0] ?? Number.NaN,
      medianWindowUsPerIo: windows[windows.length >> 1] ?? Number.NaN,
      writesPerIo: fake.writes / ios,
      readsPerIo: fake.reads / ios,
    };
  } finally {
    await device.close();
  }
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) {
  const [bs = '65536', depth = '32', span = '3', segment = '262144', readBytes = '131072'] = process.argv.slice(2);
  // SECONDS, or COUNT followed by "ios" (20000ios): a fixed number of reads
  const count = span.endsWith('ios') ? Number(span.slice(0, -3)) : undefined;
  runInitiatorCpu({
    bs: Number(bs),
    depth: Number(depth),
    seconds: count === undefined ? Number(span) : 0,
    segment: Number(segment),
    readBytes: Number(readBytes),
    ...(count === undefined ? {} : { count }),
  }).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    (err: unknown) => {
      process.stderr.write(`iscsi-initiator-cpu: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
