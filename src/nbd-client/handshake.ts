// The client's side of option haggling (proto.md "Fixed newstyle negotiation"): greeting and
// flags, STARTTLS when TLS is wanted, STRUCTURED_REPLY, SET_META_CONTEXT base:allocation, then GO
// asking for the block sizes; a server too old for GO gets NBD_OPT_EXPORT_NAME instead. The
// server's refusals become one-line errors naming the cause (no such export, TLS required, ...).
import type { Socket } from 'node:net';
import { BASE_ALLOCATION, ClientFlag, HandshakeFlag, Info, NBD_REP_FLAG_ERROR, Option, OptionReply, TransmissionFlag, optionName } from '../nbd/constants.ts';
import { NbdProtocolError } from '../nbd/errors.ts';
import {
  decodeInfoReply,
  decodeMetaContextReply,
  encodeClientFlags,
  encodeExportName,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
  readExportNameReply,
  readOptionReplyHeader,
  readServerGreeting,
} from '../nbd/handshake.ts';
import type { OptionReplyHeader } from '../nbd/handshake.ts';
import { isSafeU64 } from '../nbd/wire.ts';
import type { ByteQueue } from '../nbd/wire.ts';
import { Errno } from '../internal/errors.ts';
import { NbdConnectError } from './errors.ts';
import { SocketReader } from './socket-reader.ts';

/** What haggling settled: the export and how to talk to it. */
export interface ExportInfo {
  readonly size: number;
  readonly transmissionFlags: number;
  /** From NBD_INFO_BLOCK_SIZE, or 1 / 4096 / 32 MiB (the document's defaults) without it. */
  readonly minimumBlock: number;
  readonly preferredBlock: number;
  readonly maximumPayload: number;
  readonly structuredReplies: boolean;
  /** The id the server gave base:allocation, or undefined when it offers none. */
  readonly baseAllocationId: number | undefined;
}

export interface HaggleOptions {
  readonly exportName: string;
  /** Upgrades the socket once STARTTLS is acknowledged; undefined: no TLS. */
  readonly startTls: ((socket: Socket) => Promise<Socket>) | undefined;
  /** For messages: the URI without its query. */
  readonly where: string;
}

/** Option replies longer than this are not from a sane server (an INFO or META_CONTEXT is < 5 KiB). */
const MAX_OPTION_REPLY = 64 * 1024;
/** The document's default largest payload without NBD_INFO_BLOCK_SIZE. */
const DEFAULT_MAX_PAYLOAD = 32 << 20;

/**
 * Haggles on a fresh socket; returns the socket to use (TLS or not), what was agreed, and any bytes
 * that came after the handshake (the transmission phase's first).
 */
export async function haggle(raw: Socket, o: HaggleOptions): Promise<{ socket: Socket; info: ExportInfo; early: ByteQueue }> {
  const fail = (code: string, why: string, errno: number = Errno.EIO): NbdConnectError => new NbdConnectError(code, `${o.where}: ${why}`, errno);
  const lost = (why: string): NbdConnectError => fail('BLK_ERR_NBD_HANDSHAKE', `handshake failed: ${why}`);
  let socket = raw;
  let reader = new SocketReader(socket);
  let afterTls = false;
  // a server that refuses our certificate (or wants one) hangs up right after the TLS handshake
  const ended = (why: string): NbdConnectError =>
    afterTls
      ? fail(
          'BLK_ERR_NBD_TLS',
          `TLS failed: the server ended the connection after the TLS handshake (${why}); does it want a client certificate it trusts?`,
          Errno.EACCES,
        )
      : lost(why);
  const next = async <T>(read: (queue: ByteQueue) => T | undefined): Promise<T> => {
    try {
      return await reader.next(read, ended);
    } catch (err) {
      if (err instanceof NbdProtocolError) throw lost(err.message);
      throw err;
    }
  };
  try {
    const { handshakeFlags } = await next(readServerGreeting);
    const fixed = (handshakeFlags & HandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE) !== 0;
    const noZeroes = (handshakeFlags & HandshakeFlag.NBD_FLAG_NO_ZEROES) !== 0;
    socket.write(encodeClientFlags((fixed ? ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? ClientFlag.NBD_FLAG_C_NO_ZEROES : 0)));

    /** Sends one option; returns its replies up to the final one (ACK or an error) or the info. */
    const option = async (
      opt: number,
      data?: Uint8Array,
    ): Promise<{ final: OptionReplyHeader; finalData: Buffer; replies: { type: number; data: Buffer }[] }> => {
      socket.write(encodeOptionRequest(opt, data));
      const replies: { type: number; data: Buffer }[] = [];
      for (;;) {
        const header = await next(readOptionReplyHeader);
        if (header.option !== opt) throw lost(`a reply to ${optionName(header.option)} came for ${optionName(opt)}`);
        if (header.length > MAX_OPTION_REPLY) throw lost(`a ${header.length}-byte reply to ${optionName(opt)}`);
        const body = await next((q) => q.take(header.length));
        if (header.replyType === OptionReply.NBD_REP_ACK || (header.replyType & NBD_REP_FLAG_ERROR) !== 0)
          return { final: header, finalData: Buffer.from(body), replies };
        replies.push({ type: header.replyType, data: Buffer.from(body) });
      }
    };
    const refusal = (opt: number, header: OptionReplyHeader, message: Buffer): NbdConnectError => {
      const said =
        message.length === 0
          ? ''
          : ` (server: ${message
              .toString('utf8')
              .replace(/[\r\n]+/g, ' ')
              .slice(0, 200)})`;
      switch (header.replyType) {
        case OptionReply.NBD_REP_ERR_UNKNOWN:
          return fail('BLK_ERR_NBD_NO_EXPORT', `no such export '${o.exportName}'${said}`, Errno.ENOENT);
        case OptionReply.NBD_REP_ERR_TLS_REQD:
          return fail(
            'BLK_ERR_NBD_TLS_REQUIRED',
            `the server requires TLS: use nbds:// or nbds+unix:// with tls-certificates= or tls-psk-file=${said}`,
            Errno.EACCES,
          );
        case OptionReply.NBD_REP_ERR_POLICY:
          return fail('BLK_ERR_NBD_POLICY', `${optionName(opt)} refused by the server's policy${said}`, Errno.EACCES);
        case OptionReply.NBD_REP_ERR_SHUTDOWN:
          return fail('BLK_ERR_NBD_SHUTDOWN', `the server is shutting down${said}`);
        default:
          return fail(
            'BLK_ERR_NBD_HANDSHAKE',
            `${optionName(opt)} failed: ${OPTION_ERROR_NAMES[header.replyType] ?? `reply type 0x${header.replyType.toString(16)}`}${said}`,
          );
      }
    };

    if (o.startTls !== undefined) {
      if (!fixed) throw fail('BLK_ERR_NBD_TLS', 'TLS failed: the server speaks plain newstyle NBD, which cannot do STARTTLS', Errno.EACCES);
      const r = await option(Option.NBD_OPT_STARTTLS);
      if (r.final.replyType !== OptionReply.NBD_REP_ACK) {
        if (r.final.replyType === OptionReply.NBD_REP_ERR_UNSUP || r.final.replyType === OptionReply.NBD_REP_ERR_POLICY)
          throw fail('BLK_ERR_NBD_TLS', 'TLS failed: the server does not offer TLS (NBD_OPT_STARTTLS refused)', Errno.EACCES);
        throw refusal(Option.NBD_OPT_STARTTLS, r.final, r.finalData);
      }
      if (reader.queue.length !== 0) throw lost('bytes after the STARTTLS acknowledgement, before TLS');
      reader.detach();
      socket = await o.startTls(socket);
      reader = new SocketReader(socket);
      afterTls = true;
    }

    let structured = false;
    let baseAllocationId: number | undefined;
    if (fixed) {
      const sr = await option(Option.NBD_OPT_STRUCTURED_REPLY);
      if (sr.final.replyType === OptionReply.NBD_REP_ERR_TLS_REQD) throw refusal(Option.NBD_OPT_STRUCTURED_REPLY, sr.final, sr.finalData);
      structured = sr.final.replyType === OptionReply.NBD_REP_ACK;
      if (structured) {
        const mc = await option(Option.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest(o.exportName, [BASE_ALLOCATION]));
        if (mc.final.replyType === OptionReply.NBD_REP_ACK) {
          for (const r of mc.replies) {
            if (r.type !== OptionReply.NBD_REP_META_CONTEXT) continue;
            const ctx = decodeMetaContextReply(r.data);
            if (ctx.name === BASE_ALLOCATION) baseAllocationId = ctx.contextId;
          }
        }
        // an unknown export answers here already; GO says it again in its own words
      }

      const go = await option(Option.NBD_OPT_GO, encodeInfoRequest(o.exportName, [Info.NBD_INFO_BLOCK_SIZE]));
      if (go.final.replyType === OptionReply.NBD_REP_ACK) {
        let size: number | undefined;
        let flags = 0;
        let minimumBlock = 1;
        let preferredBlock = 4096;
        let maximumPayload = DEFAULT_MAX_PAYLOAD;
        for (const r of go.replies) {
          if (r.type !== OptionReply.NBD_REP_INFO) continue;
          const info = decodeInfoReply(r.data);
          if ('size' in info) {
            size = info.size;
            flags = info.transmissionFlags;
          } else if ('minimum' in info) {
            if (!validBlockSizes(info.minimum, info.preferred, info.maximum))
              throw lost(`nonsense block sizes ${info.minimum}/${info.preferred}/${info.maximum}`);
            minimumBlock = info.minimum;
            preferredBlock = info.preferred;
            maximumPayload = Math.min(info.maximum, DEFAULT_MAX_PAYLOAD);
          }
        }
        if (size === undefined) throw lost('NBD_OPT_GO succeeded without NBD_INFO_EXPORT');
        reader.detach();
        return {
          socket,
          early: reader.queue,
          info: checked(
            { size, transmissionFlags: flags, minimumBlock, preferredBlock, maximumPayload, structuredReplies: structured, baseAllocationId },
            lost,
          ),
        };
      }
      if (go.final.replyType !== OptionReply.NBD_REP_ERR_UNSUP) throw refusal(Option.NBD_OPT_GO, go.final, go.finalData);
      // an old server without NBD_OPT_GO: EXPORT_NAME below, and no structured replies
      structured = false;
      baseAllocationId = undefined;
    }

    socket.write(encodeOptionRequest(Option.NBD_OPT_EXPORT_NAME, encodeExportName(o.exportName)));
    const reply = await reader.next(
      (q) => readExportNameReply(q, noZeroes),
      (why) =>
        fail('BLK_ERR_NBD_NO_EXPORT', `no such export '${o.exportName}' (the server closed the connection after NBD_OPT_EXPORT_NAME: ${why})`, Errno.ENOENT),
    );
    reader.detach();
    return {
      socket,
      early: reader.queue,
      info: checked(
        {
          size: reply.size,
          transmissionFlags: reply.transmissionFlags,
          minimumBlock: 1,
          preferredBlock: 4096,
          maximumPayload: DEFAULT_MAX_PAYLOAD,
          structuredReplies: false,
          baseAllocationId: undefined,
        },
        lost,
      ),
    };
  } catch (err) {
    reader.detach();
    socket.destroy();
    throw err;
  }
}

/** The document's rules: powers of two, minimum <= preferred <= maximum (maximum a multiple of minimum). */
function validBlockSizes(min: number, preferred: number, max: number): boolean {
  const pow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
  return pow2(min) && min <= 65536 && pow2(preferred) && preferred >= 512 && preferred <= 32 << 20 && preferred >= min && max >= preferred && max % min === 0;
}

function checked(info: ExportInfo, lost: (why: string) => Error): ExportInfo {
  if (!isSafeU64(info.size)) throw lost(`export size ${info.size} is beyond what this client can address (2^53)`);
  if ((info.transmissionFlags & TransmissionFlag.NBD_FLAG_HAS_FLAGS) === 0) return { ...info, transmissionFlags: 0 };
  return info;
}

const OPTION_ERROR_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(OptionReply)
    .filter(([, v]) => (v & NBD_REP_FLAG_ERROR) !== 0)
    .map(([k, v]) => [v, k]),
);
