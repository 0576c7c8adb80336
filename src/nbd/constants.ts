// NBD wire constants, named as the NBD protocol document names them (doc/proto.md in
// NetworkBlockDevice/nbd, "The NBD protocol"; section names in the comments). Every number on the
// wire is big-endian. Only the fixed newstyle handshake is spoken here; oldstyle is not.

/** "NBDMAGIC": the first 8 bytes the server sends (Handshake). */
export const NBDMAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": after NBDMAGIC in the newstyle greeting, and before every option request. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Before every option reply (Option haggling). */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
/** The two 32-bit halves of each magic, for writing and comparing without BigInt. */
export const NBDMAGIC_HI = 0x4e42444d;
export const NBDMAGIC_LO = 0x41474943;
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
export const NBD_REP_MAGIC_HI = 0x0003e889;
export const NBD_REP_MAGIC_LO = 0x045565a9;

/** Transmission phase magics (Request message, Simple reply message, Structured reply chunk message). */
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Extended headers (NBD_OPT_EXTENDED_HEADERS); recognised so they can be refused, not spoken. */
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
export const NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;

/** Byte sizes of the fixed parts. */
export const SERVER_GREETING_LENGTH = 18; // NBDMAGIC, IHAVEOPT, u16 handshake flags
export const CLIENT_FLAGS_LENGTH = 4;
export const OPTION_REQUEST_HEADER_LENGTH = 16; // IHAVEOPT, u32 option, u32 length
export const OPTION_REPLY_HEADER_LENGTH = 20; // magic, u32 option, u32 reply type, u32 length
export const EXPORT_NAME_REPLY_LENGTH = 134; // u64 size, u16 flags, 124 zero bytes (10 with NO_ZEROES)
export const EXPORT_NAME_REPLY_ZEROES = 124;
export const REQUEST_HEADER_LENGTH = 28;
export const SIMPLE_REPLY_LENGTH = 16;
export const STRUCTURED_REPLY_HEADER_LENGTH = 20;

/** Strings (export names, messages) "MUST be no longer than 4096 bytes" (Conventions). */
export const NBD_MAX_STRING = 4096;
/** The default TCP port (IANA, "nbd"). */
export const NBD_DEFAULT_PORT = 10809;

/** Handshake flags, sent by the server in the greeting (Newstyle negotiation). */
export const HandshakeFlag = {
  NBD_FLAG_FIXED_NEWSTYLE: 1 << 0,
  NBD_FLAG_NO_ZEROES: 1 << 1,
} as const;

/** Client flags, sent by the client after the greeting. */
export const ClientFlag = {
  NBD_FLAG_C_FIXED_NEWSTYLE: 1 << 0,
  NBD_FLAG_C_NO_ZEROES: 1 << 1,
} as const;

/** Transmission flags, 16 bits, sent with the export's size (Transmission flags). */
export const TransmissionFlag = {
  NBD_FLAG_HAS_FLAGS: 1 << 0,
  NBD_FLAG_READ_ONLY: 1 << 1,
  NBD_FLAG_SEND_FLUSH: 1 << 2,
  NBD_FLAG_SEND_FUA: 1 << 3,
  NBD_FLAG_ROTATIONAL: 1 << 4,
  NBD_FLAG_SEND_TRIM: 1 << 5,
  NBD_FLAG_SEND_WRITE_ZEROES: 1 << 6,
  NBD_FLAG_SEND_DF: 1 << 7,
  NBD_FLAG_CAN_MULTI_CONN: 1 << 8,
  NBD_FLAG_SEND_RESIZE: 1 << 9,
  NBD_FLAG_SEND_CACHE: 1 << 10,
  NBD_FLAG_SEND_FAST_ZERO: 1 << 11,
  NBD_FLAG_BLOCK_STAT_PAYLOAD: 1 << 12,
} as const;

/** Option types (Option types). */
export const Option = {
  NBD_OPT_EXPORT_NAME: 1,
  NBD_OPT_ABORT: 2,
  NBD_OPT_LIST: 3,
  NBD_OPT_PEEK_EXPORT: 4, // withdrawn
  NBD_OPT_STARTTLS: 5,
  NBD_OPT_INFO: 6,
  NBD_OPT_GO: 7,
  NBD_OPT_STRUCTURED_REPLY: 8,
  NBD_OPT_LIST_META_CONTEXT: 9,
  NBD_OPT_SET_META_CONTEXT: 10,
  NBD_OPT_EXTENDED_HEADERS: 11,
} as const;

/** Bit 31 set marks an error reply to an option. */
export const NBD_REP_FLAG_ERROR = 0x80000000;

/** Option reply types (Option reply types). Errors are (1 << 31) + n. */
export const OptionReply = {
  NBD_REP_ACK: 1,
  NBD_REP_SERVER: 2,
  NBD_REP_INFO: 3,
  NBD_REP_META_CONTEXT: 4,
  NBD_REP_ERR_UNSUP: 0x80000001,
  NBD_REP_ERR_POLICY: 0x80000002,
  NBD_REP_ERR_INVALID: 0x80000003,
  NBD_REP_ERR_PLATFORM: 0x80000004,
  NBD_REP_ERR_TLS_REQD: 0x80000005,
  NBD_REP_ERR_UNKNOWN: 0x80000006,
  NBD_REP_ERR_SHUTDOWN: 0x80000007,
  NBD_REP_ERR_BLOCK_SIZE_REQD: 0x80000008,
  NBD_REP_ERR_TOO_BIG: 0x80000009,
  NBD_REP_ERR_EXT_HEADER_REQD: 0x8000000a,
} as const;

/** Information types in NBD_REP_INFO replies and NBD_OPT_INFO/GO requests (NBD_OPT_INFO and NBD_OPT_GO). */
export const Info = {
  NBD_INFO_EXPORT: 0, // u64 size, u16 transmission flags
  NBD_INFO_NAME: 1, // the canonical name
  NBD_INFO_DESCRIPTION: 2, // human-readable text
  NBD_INFO_BLOCK_SIZE: 3, // u32 minimum, u32 preferred, u32 maximum
} as const;

/** Request types (Request types). */
export const Command = {
  NBD_CMD_READ: 0,
  NBD_CMD_WRITE: 1,
  NBD_CMD_DISC: 2,
  NBD_CMD_FLUSH: 3,
  NBD_CMD_TRIM: 4,
  NBD_CMD_CACHE: 5,
  NBD_CMD_WRITE_ZEROES: 6,
  NBD_CMD_BLOCK_STATUS: 7,
  NBD_CMD_RESIZE: 8,
} as const;

/** Command flags, 16 bits (Command flags). */
export const CommandFlag = {
  NBD_CMD_FLAG_FUA: 1 << 0,
  NBD_CMD_FLAG_NO_HOLE: 1 << 1,
  NBD_CMD_FLAG_DF: 1 << 2,
  NBD_CMD_FLAG_REQ_ONE: 1 << 3,
  NBD_CMD_FLAG_FAST_ZERO: 1 << 4,
  NBD_CMD_FLAG_PAYLOAD_LEN: 1 << 5,
} as const;

/** Structured reply flags (Structured reply chunk message). */
export const NBD_REPLY_FLAG_DONE = 1 << 0;

/** Structured reply types (Structured reply types). Bit 15 marks an error chunk. */
export const ReplyType = {
  NBD_REPLY_TYPE_NONE: 0,
  NBD_REPLY_TYPE_OFFSET_DATA: 1,
  NBD_REPLY_TYPE_OFFSET_HOLE: 2,
  NBD_REPLY_TYPE_BLOCK_STATUS: 5,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT: 6,
  NBD_REPLY_TYPE_ERROR: (1 << 15) + 1,
  NBD_REPLY_TYPE_ERROR_OFFSET: (1 << 15) + 2,
} as const;
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;

/** Errors in replies (Error values): these numbers on the wire, whatever the host's errno. */
export const NbdErrno = {
  NBD_EPERM: 1,
  NBD_EIO: 5,
  NBD_ENOMEM: 12,
  NBD_EINVAL: 22,
  NBD_ENOSPC: 28,
  NBD_EOVERFLOW: 75,
  NBD_ENOTSUP: 95,
  NBD_ESHUTDOWN: 108,
} as const;

/** The base:allocation metadata context (Metadata contexts, "base:" namespace). */
export const BASE_ALLOCATION = 'base:allocation';
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

function namesOf(table: Readonly<Record<string, number>>): Readonly<Record<number, string>> {
  return Object.fromEntries(Object.entries(table).map(([name, value]) => [value, name]));
}
export const OPTION_NAMES = namesOf(Option);
export const OPTION_REPLY_NAMES = namesOf(OptionReply);
export const COMMAND_NAMES = namesOf(Command);
export const REPLY_TYPE_NAMES = namesOf(ReplyType);
export const NBD_ERRNO_NAMES = namesOf(NbdErrno);

/** A name for logs: 'NBD_OPT_GO', or 'option 99' for numbers the document does not name. */
export function optionName(option: number): string {
  return OPTION_NAMES[option] ?? `option ${option}`;
}
export function commandName(type: number): string {
  return COMMAND_NAMES[type] ?? `command ${type}`;
}
