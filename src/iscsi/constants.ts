// iSCSI wire constants, named as RFC 7143 names them (section numbers in the comments).

/** Every PDU starts with a Basic Header Segment of this many bytes (§11.2.1). */
export const BHS_LENGTH = 48;
/** Header and data digests are CRC32C, 4 bytes (§11.2.4 and §13.1). */
export const DIGEST_LENGTH = 4;
/** Reserved ITT and TTT value (§11.2.1.8, §11.7.4). */
export const RESERVED_TAG = 0xffffffff;
/** iSCSI version numbers: only 0x00 exists (§11.12.4). */
export const ISCSI_VERSION = 0x00;

/** Opcodes (§11.2.1.2); initiator opcodes are 0x00–0x1f, target opcodes 0x20–0x3f. */
export const Opcode = {
  NOP_OUT: 0x00,
  SCSI_COMMAND: 0x01,
  TASK_MGMT_REQUEST: 0x02,
  LOGIN_REQUEST: 0x03,
  TEXT_REQUEST: 0x04,
  SCSI_DATA_OUT: 0x05,
  LOGOUT_REQUEST: 0x06,
  SNACK_REQUEST: 0x10,
  NOP_IN: 0x20,
  SCSI_RESPONSE: 0x21,
  TASK_MGMT_RESPONSE: 0x22,
  LOGIN_RESPONSE: 0x23,
  TEXT_RESPONSE: 0x24,
  SCSI_DATA_IN: 0x25,
  LOGOUT_RESPONSE: 0x26,
  R2T: 0x31,
  ASYNC_MESSAGE: 0x32,
  REJECT: 0x3f,
} as const;

export const OPCODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(Opcode).map(([name, value]) => [value, name]));

/** Byte 0: bit 6 marks an immediate command (§11.2.1.1); the opcode is the low 6 bits. */
export const IMMEDIATE_BIT = 0x40;
export const OPCODE_MASK = 0x3f;

/** Byte 1 flag bits. */
export const Flag = {
  /** Final (§11.2.1.3): last PDU of a sequence. */
  F: 0x80,
  /** SCSI Command: data to the initiator (§11.3.1.1). */
  R: 0x40,
  /** SCSI Command: data to the target. */
  W: 0x20,
  /** SCSI Command: task attribute mask. */
  ATTR_MASK: 0x07,
  /** Data-In: acknowledge requested (§11.7.2). */
  A: 0x40,
  /** Data-In: status is in this PDU (phase collapse, §11.7.3). */
  S: 0x01,
  /** Data-In and SCSI Response: residual overflow (§11.4.5.1). */
  O: 0x04,
  /** Data-In and SCSI Response: residual underflow. */
  U: 0x02,
  /** SCSI Response: bidirectional read residual overflow. */
  BIDI_O: 0x10,
  /** SCSI Response: bidirectional read residual underflow. */
  BIDI_U: 0x08,
  /** Login and Text: continue, the text goes on in the next PDU (§11.10.2, §11.12.2). */
  C: 0x40,
  /** Login: transit to the next stage (§11.12.1). */
  T: 0x80,
} as const;

/** Login stages, the CSG and NSG fields (§11.12.3). */
export const Stage = {
  SECURITY_NEGOTIATION: 0,
  LOGIN_OPERATIONAL_NEGOTIATION: 1,
  FULL_FEATURE_PHASE: 3,
} as const;

/** Login response Status-Class and Status-Detail as one number, class << 8 | detail (§11.13.5). */
export const LoginStatus = {
  SUCCESS: 0x0000,
  TARGET_MOVED_TEMPORARILY: 0x0101,
  TARGET_MOVED_PERMANENTLY: 0x0102,
  INITIATOR_ERROR: 0x0200,
  AUTHENTICATION_FAILURE: 0x0201,
  AUTHORIZATION_FAILURE: 0x0202,
  NOT_FOUND: 0x0203,
  TARGET_REMOVED: 0x0204,
  UNSUPPORTED_VERSION: 0x0205,
  TOO_MANY_CONNECTIONS: 0x0206,
  MISSING_PARAMETER: 0x0207,
  CANT_INCLUDE_IN_SESSION: 0x0208,
  SESSION_TYPE_NOT_SUPPORTED: 0x0209,
  SESSION_DOES_NOT_EXIST: 0x020a,
  INVALID_DURING_LOGIN: 0x020b,
  TARGET_ERROR: 0x0300,
  SERVICE_UNAVAILABLE: 0x0301,
  OUT_OF_RESOURCES: 0x0302,
} as const;
export type LoginStatus = (typeof LoginStatus)[keyof typeof LoginStatus];

/** Reject reason codes (§11.17.1). */
export const RejectReason = {
  DATA_DIGEST_ERROR: 0x02,
  SNACK_REJECT: 0x03,
  PROTOCOL_ERROR: 0x04,
  COMMAND_NOT_SUPPORTED: 0x05,
  IMMEDIATE_COMMAND_REJECT: 0x06,
  TASK_IN_PROGRESS: 0x07,
  INVALID_DATA_ACK: 0x08,
  INVALID_PDU_FIELD: 0x09,
  LONG_OPERATION_REJECT: 0x0a,
  DEPRECATED: 0x0b,
  WAITING_FOR_LOGOUT: 0x0c,
} as const;

/** Task management function codes (§11.5.1). */
export const TmfFunction = {
  ABORT_TASK: 1,
  ABORT_TASK_SET: 2,
  CLEAR_ACA: 3,
  CLEAR_TASK_SET: 4,
  LOGICAL_UNIT_RESET: 5,
  TARGET_WARM_RESET: 6,
  TARGET_COLD_RESET: 7,
  TASK_REASSIGN: 8,
} as const;

/** Task management response codes (§11.6.1). */
export const TmfResponse = {
  FUNCTION_COMPLETE: 0,
  TASK_DOES_NOT_EXIST: 1,
  LUN_DOES_NOT_EXIST: 2,
  TASK_STILL_ALLEGIANT: 3,
  TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED: 4,
  TMF_NOT_SUPPORTED: 5,
  FUNCTION_AUTHORIZATION_FAILED: 6,
  FUNCTION_REJECTED: 255,
} as const;

/** SCSI Response "Response" field (§11.4.3). */
export const ScsiResponseCode = {
  COMMAND_COMPLETED_AT_TARGET: 0x00,
  TARGET_FAILURE: 0x01,
} as const;

/** Logout request reason codes (§11.14.1). */
export const LogoutReason = {
  CLOSE_SESSION: 0,
  CLOSE_CONNECTION: 1,
  REMOVE_CONNECTION_FOR_RECOVERY: 2,
} as const;

/** Logout response codes (§11.15.1). */
export const LogoutResponse = {
  SUCCESS: 0,
  CID_NOT_FOUND: 1,
  RECOVERY_NOT_SUPPORTED: 2,
  CLEANUP_FAILED: 3,
} as const;

/** Asynchronous message events (§11.9.1). */
export const AsyncEvent = {
  SCSI_ASYNC_EVENT: 0,
  LOGOUT_REQUEST: 1,
  DROPPING_CONNECTION: 2,
  DROPPING_ALL_CONNECTIONS: 3,
  REQUEST_PARAMETER_NEGOTIATION: 4,
  VENDOR_SPECIFIC: 255,
} as const;

/** Well-known TCP port (§13.14 of RFC 7143 refers to IANA: iscsi-target 3260). */
export const ISCSI_PORT = 3260;
