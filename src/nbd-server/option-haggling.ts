// The handshake of one connection, server side, as a state machine over received bytes (proto.md
// "Fixed newstyle negotiation" and "Option haggling"). Sans-IO: bytes come from a ByteQueue, answers
// go out through the host, and the host is told when to start TLS, when the transmission phase
// begins and when to close.
//
//   greeting ─► CLIENT_FLAGS ─► OPTION_HEADER ─► OPTION_DATA ─► (answer) ─► OPTION_HEADER ...
//                                     │                 └─ too long: SKIPPING, then NBD_REP_ERR_TOO_BIG
//                                     ├─ STARTTLS: ACK, WAIT_TLS until the host says TLS is up
//                                     └─ GO / EXPORT_NAME: DONE (transmission), ABORT: DONE (closed)
//
// Only fixed newstyle is spoken: a client that does not set NBD_FLAG_C_FIXED_NEWSTYLE, or sets
// flags we do not know, is dropped, as the document asks. Option data above MAX_OPTION_DATA is
// skipped as it arrives (never buffered) and answered NBD_REP_ERR_TOO_BIG.
import { BASE_ALLOCATION, ClientFlag, HandshakeFlag, Info, Option, OptionReply, optionName } from '../nbd/constants.ts';
import { NbdProtocolError } from '../nbd/errors.ts';
import {
  decodeInfoRequest,
  decodeMetaContextRequest,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoDescription,
  encodeInfoExport,
  encodeInfoName,
  encodeMetaContextReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerGreeting,
  encodeServerReply,
  readClientFlags,
  readOptionRequestHeader,
} from '../nbd/handshake.ts';
import type { ByteQueue } from '../nbd/wire.ts';
import type { NbdServerCounters } from './counters.ts';
import { blockSizesOf, type NbdExport, transmissionFlagsOf } from './export.ts';

/** Option data we read at most (names are at most 4096 bytes; a few meta context queries fit easily). */
export const MAX_OPTION_DATA = 64 * 1024;
/** The one metadata context we offer, and the id we give it. */
export const BASE_ALLOCATION_ID = 1;

export type TlsMode = 'off' | 'on' | 'require';

/** What the handshake agreed, for the transmission phase. */
export interface Negotiated {
  readonly export: NbdExport;
  readonly structuredReplies: boolean;
  readonly metaContext: boolean;
}

export interface HaggleHost {
  findExport(name: string): NbdExport | undefined;
  listExports(): readonly NbdExport[];
  readonly tlsMode: TlsMode;
  /** TLS is up on this connection. */
  tlsActive(): boolean;
  readonly counters: NbdServerCounters;
  send(bytes: Buffer): void;
  /** The ACK to NBD_OPT_STARTTLS has been sent: upgrade the socket, then call tlsReady(). */
  startTls(): void;
  /** The handshake is over: serve the export; bytes still queued are the first requests. */
  enterTransmission(result: Negotiated): void;
  /** End the connection (after what was sent); `problem` is logged when given. */
  close(problem?: { kind: string; message: string }): void;
}

const State = { CLIENT_FLAGS: 0, OPTION_HEADER: 1, OPTION_DATA: 2, SKIPPING: 3, WAIT_TLS: 4, DONE: 5 } as const;

export class OptionHaggler {
  readonly #host: HaggleHost;
  readonly #queue: ByteQueue;
  #state: number = State.CLIENT_FLAGS;
  #noZeroes = false;
  #option = 0;
  #length = 0;
  #structured = false;
  /** base:allocation was selected, and for which export name. */
  #metaExport: string | undefined;

  constructor(host: HaggleHost, queue: ByteQueue) {
    this.#host = host;
    this.#queue = queue;
  }

  get done(): boolean {
    return this.#state === State.DONE;
  }

  /** Sends the greeting. */
  start(): void {
    this.#host.send(encodeServerGreeting(HandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE | HandshakeFlag.NBD_FLAG_NO_ZEROES));
  }

  /** TLS is up: options start over, and what was negotiated in the clear is forgotten. */
  tlsReady(): void {
    this.#structured = false;
    this.#metaExport = undefined;
    this.#state = State.OPTION_HEADER;
    this.drain();
  }

  /** Handles every whole message in the queue. */
  drain(): void {
    try {
      while (this.#step());
    } catch (err) {
      if (!(err instanceof NbdProtocolError) || !err.fatal) throw err;
      this.#state = State.DONE;
      this.#host.counters.handshakeErrors++;
      this.#host.close({ kind: `handshake-${err.kind}`, message: err.message });
    }
  }

  /** One step; false when more bytes are needed or the handshake is over. */
  #step(): boolean {
    const queue = this.#queue;
    switch (this.#state) {
      case State.CLIENT_FLAGS: {
        const flags = readClientFlags(queue);
        if (flags === undefined) return false;
        const known = ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES;
        if ((flags & ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE) === 0 || (flags & ~known) !== 0) {
          return this.#drop('client-flags', `client flags 0x${flags.toString(16)}: only fixed newstyle clients are served, and no unknown flags`);
        }
        this.#noZeroes = (flags & ClientFlag.NBD_FLAG_C_NO_ZEROES) !== 0;
        this.#state = State.OPTION_HEADER;
        return true;
      }
      case State.OPTION_HEADER: {
        const header = readOptionRequestHeader(queue);
        if (header === undefined) return false;
        this.#host.counters.optionsReceived++;
        this.#option = header.option;
        this.#length = header.length;
        this.#state = header.length > MAX_OPTION_DATA ? State.SKIPPING : State.OPTION_DATA;
        return true;
      }
      case State.SKIPPING: {
        this.#length -= queue.skip(this.#length);
        if (this.#length > 0) return false;
        this.#host.counters.optionsTooBig++;
        this.#state = State.OPTION_HEADER;
        if (this.#option === Option.NBD_OPT_EXPORT_NAME) return this.#drop('option-too-big', 'NBD_OPT_EXPORT_NAME with an overlong name');
        return this.#error(OptionReply.NBD_REP_ERR_TOO_BIG, `option data above ${MAX_OPTION_DATA} bytes`);
      }
      case State.OPTION_DATA: {
        const data = queue.take(this.#length);
        if (data === undefined) return false;
        this.#state = State.OPTION_HEADER;
        return this.#answer(this.#option, data);
      }
      default:
        return false;
    }
  }

  #answer(option: number, data: Buffer): boolean {
    const host = this.#host;
    const tlsMissing = host.tlsMode === 'require' && !host.tlsActive();
    if (tlsMissing && option !== Option.NBD_OPT_STARTTLS && option !== Option.NBD_OPT_ABORT) {
      if (option === Option.NBD_OPT_EXPORT_NAME) return this.#drop('tls-required', 'NBD_OPT_EXPORT_NAME before STARTTLS, and TLS is required');
      return this.#error(OptionReply.NBD_REP_ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
    }
    try {
      switch (option) {
        case Option.NBD_OPT_EXPORT_NAME:
          return this.#exportName(data.toString('utf8'));
        case Option.NBD_OPT_ABORT:
          this.#reply(OptionReply.NBD_REP_ACK);
          this.#state = State.DONE;
          host.close();
          return false;
        case Option.NBD_OPT_LIST:
          if (data.length !== 0) return this.#error(OptionReply.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          for (const exp of host.listExports()) this.#reply(OptionReply.NBD_REP_SERVER, encodeServerReply(exp.name, exp.description));
          this.#reply(OptionReply.NBD_REP_ACK);
          return true;
        case Option.NBD_OPT_STARTTLS:
          return this.#startTls(data);
        case Option.NBD_OPT_INFO:
        case Option.NBD_OPT_GO:
          return this.#info(option, data);
        case Option.NBD_OPT_STRUCTURED_REPLY:
          if (data.length !== 0) return this.#error(OptionReply.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          this.#structured = true;
          this.#reply(OptionReply.NBD_REP_ACK);
          return true;
        case Option.NBD_OPT_LIST_META_CONTEXT:
        case Option.NBD_OPT_SET_META_CONTEXT:
          return this.#metaContext(option, data);
        default:
          return this.#error(OptionReply.NBD_REP_ERR_UNSUP, `${optionName(option)} is not supported`);
      }
    } catch (err) {
      if (err instanceof NbdProtocolError && !err.fatal) return this.#error(OptionReply.NBD_REP_ERR_INVALID, err.message);
      throw err;
    }
  }

  #exportName(name: string): boolean {
    const exp = this.#host.findExport(name);
    // No way to answer an error to NBD_OPT_EXPORT_NAME: the document says to close.
    if (exp === undefined) return this.#drop('unknown-export', `NBD_OPT_EXPORT_NAME for unknown export '${name}'`);
    this.#host.send(encodeExportNameReply(exp.device.info.size, transmissionFlagsOf(exp), this.#noZeroes));
    return this.#finish(exp, name);
  }

  #startTls(data: Buffer): boolean {
    const host = this.#host;
    if (data.length !== 0) return this.#error(OptionReply.NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
    if (host.tlsMode === 'off') return this.#error(OptionReply.NBD_REP_ERR_UNSUP, 'TLS is not configured on this server');
    if (host.tlsActive()) return this.#error(OptionReply.NBD_REP_ERR_INVALID, 'TLS is already active');
    this.#reply(OptionReply.NBD_REP_ACK);
    if (this.#queue.length !== 0) return this.#drop('starttls-early', 'data sent after NBD_OPT_STARTTLS before its reply');
    this.#state = State.WAIT_TLS;
    host.startTls();
    return false;
  }

  #info(option: number, data: Buffer): boolean {
    const request = decodeInfoRequest(data);
    const exp = this.#host.findExport(request.exportName);
    if (exp === undefined) return this.#error(OptionReply.NBD_REP_ERR_UNKNOWN, `no export named '${request.exportName}'`);
    this.#reply(OptionReply.NBD_REP_INFO, encodeInfoExport(exp.device.info.size, transmissionFlagsOf(exp)));
    const wanted = new Set(request.infoTypes);
    if (wanted.has(Info.NBD_INFO_NAME)) this.#reply(OptionReply.NBD_REP_INFO, encodeInfoName(exp.name));
    if (wanted.has(Info.NBD_INFO_DESCRIPTION) && exp.description !== '') this.#reply(OptionReply.NBD_REP_INFO, encodeInfoDescription(exp.description));
    // Sent even when not asked for: clients that ignore it may send unaligned requests, which
    // are then refused with EINVAL, but most honour it.
    const sizes = blockSizesOf(exp);
    this.#reply(OptionReply.NBD_REP_INFO, encodeInfoBlockSize(sizes.minimum, sizes.preferred, sizes.maximum));
    this.#reply(OptionReply.NBD_REP_ACK);
    if (option === Option.NBD_OPT_INFO) return true;
    return this.#finish(exp, request.exportName);
  }

  #metaContext(option: number, data: Buffer): boolean {
    const request = decodeMetaContextRequest(data);
    const set = option === Option.NBD_OPT_SET_META_CONTEXT;
    if (set && !this.#structured) return this.#error(OptionReply.NBD_REP_ERR_INVALID, 'NBD_OPT_SET_META_CONTEXT needs NBD_OPT_STRUCTURED_REPLY first');
    if (this.#host.findExport(request.exportName) === undefined) return this.#error(OptionReply.NBD_REP_ERR_UNKNOWN, `no export named '${request.exportName}'`);
    // LIST with no queries lists everything; "base:" names the whole namespace. SET selects exact names.
    const matches = request.queries.some((q) => q === BASE_ALLOCATION || (!set && q === 'base:')) || (!set && request.queries.length === 0);
    if (set) this.#metaExport = matches ? request.exportName : undefined;
    if (matches) this.#reply(OptionReply.NBD_REP_META_CONTEXT, encodeMetaContextReply(set ? BASE_ALLOCATION_ID : 0, BASE_ALLOCATION));
    this.#reply(OptionReply.NBD_REP_ACK);
    return true;
  }

  #finish(exp: NbdExport, requestedName: string): boolean {
    this.#state = State.DONE;
    this.#host.counters.handshakesCompleted++;
    this.#host.enterTransmission({
      export: exp,
      structuredReplies: this.#structured,
      metaContext: this.#structured && this.#metaExport === requestedName,
    });
    return false;
  }

  #reply(type: number, data?: Buffer): void {
    this.#host.send(encodeOptionReply(this.#option, type, data));
  }

  #error(type: number, message: string): boolean {
    this.#host.counters.optionErrors++;
    this.#host.send(encodeOptionError(this.#option, type, message));
    return true;
  }

  #drop(kind: string, message: string): boolean {
    this.#state = State.DONE;
    this.#host.counters.handshakeErrors++;
    this.#host.close({ kind, message });
    return false;
  }
}
