// SCSI wire constants with the names SPC-4, SBC-3/SBC-4 and SAM-5 give them (values are facts of the
// standards; the ASC/ASCQ list is T10's "ASC and ASCQ assignments", spc4r37 annex D).

/** Operation codes this device server knows (supported or deliberately refused), SPC-4 annex D / SBC-4. */
export const Op = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  READ_6: 0x08,
  WRITE_6: 0x0a,
  INQUIRY: 0x12,
  MODE_SELECT_6: 0x15,
  RESERVE_6: 0x16,
  RELEASE_6: 0x17,
  MODE_SENSE_6: 0x1a,
  START_STOP_UNIT: 0x1b,
  SEND_DIAGNOSTIC: 0x1d,
  PREVENT_ALLOW_MEDIUM_REMOVAL: 0x1e,
  READ_CAPACITY_10: 0x25,
  READ_10: 0x28,
  WRITE_10: 0x2a,
  WRITE_AND_VERIFY_10: 0x2e,
  VERIFY_10: 0x2f,
  PRE_FETCH_10: 0x34,
  SYNCHRONIZE_CACHE_10: 0x35,
  READ_DEFECT_DATA_10: 0x37,
  WRITE_SAME_10: 0x41,
  UNMAP: 0x42,
  SANITIZE: 0x48,
  LOG_SENSE: 0x4d,
  MODE_SELECT_10: 0x55,
  RESERVE_10: 0x56,
  RELEASE_10: 0x57,
  MODE_SENSE_10: 0x5a,
  PERSISTENT_RESERVE_IN: 0x5e,
  PERSISTENT_RESERVE_OUT: 0x5f,
  EXTENDED_COPY: 0x83,
  RECEIVE_COPY_RESULTS: 0x84,
  READ_16: 0x88,
  COMPARE_AND_WRITE: 0x89,
  WRITE_16: 0x8a,
  ORWRITE_16: 0x8b,
  WRITE_AND_VERIFY_16: 0x8e,
  VERIFY_16: 0x8f,
  PRE_FETCH_16: 0x90,
  SYNCHRONIZE_CACHE_16: 0x91,
  WRITE_SAME_16: 0x93,
  WRITE_ATOMIC_16: 0x9c,
  SERVICE_ACTION_IN_16: 0x9e,
  REPORT_LUNS: 0xa0,
  MAINTENANCE_IN: 0xa3,
  READ_12: 0xa8,
  WRITE_12: 0xaa,
  WRITE_AND_VERIFY_12: 0xae,
  VERIFY_12: 0xaf,
  READ_DEFECT_DATA_12: 0xb7,
} as const;

/** SERVICE ACTION IN(16) service actions (SBC-4 §5.x). */
export const ServiceActionIn16 = {
  READ_CAPACITY_16: 0x10,
  GET_LBA_STATUS: 0x12,
} as const;

/** MAINTENANCE IN service actions (SPC-4 §6.x). */
export const MaintenanceIn = {
  REPORT_SUPPORTED_OPERATION_CODES: 0x0c,
} as const;

/** SAM-5 §5.3 status codes. */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

/** SPC-4 §4.5.6 sense keys. */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  VENDOR_SPECIFIC: 0x9,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  VOLUME_OVERFLOW: 0xd,
  MISCOMPARE: 0xe,
  COMPLETED: 0xf,
} as const;

/**
 * Additional sense code and qualifier, packed as (ASC << 8) | ASCQ, named after T10's list.
 * Only the ones this device server reports.
 */
export const Asc = {
  NO_ADDITIONAL_SENSE_INFORMATION: 0x0000,
  LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED: 0x0402,
  WRITE_ERROR: 0x0c00,
  UNRECOVERED_READ_ERROR: 0x1100,
  MISCOMPARE_DURING_VERIFY_OPERATION: 0x1d00,
  PARAMETER_LIST_LENGTH_ERROR: 0x1a00,
  INVALID_COMMAND_OPERATION_CODE: 0x2000,
  LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE: 0x2100,
  INVALID_FIELD_IN_CDB: 0x2400,
  LOGICAL_UNIT_NOT_SUPPORTED: 0x2500,
  INVALID_FIELD_IN_PARAMETER_LIST: 0x2600,
  INVALID_RELEASE_OF_PERSISTENT_RESERVATION: 0x2604,
  WRITE_PROTECTED: 0x2700,
  SOFTWARE_WRITE_PROTECTED: 0x2702,
  SPACE_ALLOCATION_FAILED_WRITE_PROTECT: 0x2707,
  POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED: 0x2900,
  POWER_ON_OCCURRED: 0x2901,
  BUS_DEVICE_RESET_FUNCTION_OCCURRED: 0x2903,
  I_T_NEXUS_LOSS_OCCURRED: 0x2907,
  MODE_PARAMETERS_CHANGED: 0x2a01,
  RESERVATIONS_PREEMPTED: 0x2a03,
  RESERVATIONS_RELEASED: 0x2a04,
  REGISTRATIONS_PREEMPTED: 0x2a05,
  CAPACITY_DATA_HAS_CHANGED: 0x2a09,
  SAVING_PARAMETERS_NOT_SUPPORTED: 0x3900,
  INTERNAL_TARGET_FAILURE: 0x4400,
  INSUFFICIENT_REGISTRATION_RESOURCES: 0x5504,
} as const;

/** Peripheral device types (SPC-4 §6.6.2) and qualifiers. */
export const PeripheralDeviceType = {
  DIRECT_ACCESS_BLOCK: 0x00,
  UNKNOWN_OR_NO_DEVICE: 0x1f,
} as const;
/** PERIPHERAL QUALIFIER 011b: no logical unit at this LUN (byte 0 is then 0x7f). */
export const PERIPHERAL_QUALIFIER_NOT_SUPPORTED = 0x3;

/** VPD page codes (SPC-4 §7.8, SBC-4 §6.6). */
export const VpdPage = {
  SUPPORTED_VPD_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  BLOCK_LIMITS: 0xb0,
  BLOCK_DEVICE_CHARACTERISTICS: 0xb1,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
} as const;

/** Version descriptors for standard INQUIRY data (SPC-4 table 30; values from T10's list). */
export const VersionDescriptor = {
  SAM_5: 0x00a0,
  SPC_4: 0x0460,
  SBC_3: 0x04c0,
  ISCSI: 0x0960,
} as const;

/** SPC-4 §7.8.6 designator types, code sets, associations; protocol identifiers (§7.6.1). */
export const Designator = {
  CODE_SET_BINARY: 0x1,
  CODE_SET_ASCII: 0x2,
  CODE_SET_UTF8: 0x3,
  TYPE_T10_VENDOR_ID: 0x1,
  TYPE_NAA: 0x3,
  TYPE_RELATIVE_TARGET_PORT: 0x4,
  TYPE_SCSI_NAME_STRING: 0x8,
  ASSOCIATION_LOGICAL_UNIT: 0x0,
  ASSOCIATION_TARGET_PORT: 0x1,
  ASSOCIATION_TARGET_DEVICE: 0x2,
} as const;
export const ProtocolIdentifier = {
  ISCSI: 0x5,
} as const;

/** Mode page codes (SPC-4 §7.5, SBC-4 §6.5); 0x3f asks for all pages. */
export const ModePage = {
  READ_WRITE_ERROR_RECOVERY: 0x01,
  CACHING: 0x08,
  CONTROL: 0x0a,
  INFORMATIONAL_EXCEPTIONS_CONTROL: 0x1c,
  ALL_PAGES: 0x3f,
} as const;

/** MODE SENSE page control (PC) field (SPC-4 §6.11.1). */
export const PageControl = {
  CURRENT: 0,
  CHANGEABLE: 1,
  DEFAULT: 2,
  SAVED: 3,
} as const;

/** PERSISTENT RESERVE IN service actions (SPC-4 §6.15). */
export const PrIn = {
  READ_KEYS: 0x00,
  READ_RESERVATION: 0x01,
  REPORT_CAPABILITIES: 0x02,
  READ_FULL_STATUS: 0x03,
} as const;

/** PERSISTENT RESERVE OUT service actions (SPC-4 §6.16). */
export const PrOut = {
  REGISTER: 0x00,
  RESERVE: 0x01,
  RELEASE: 0x02,
  CLEAR: 0x03,
  PREEMPT: 0x04,
  PREEMPT_AND_ABORT: 0x05,
  REGISTER_AND_IGNORE_EXISTING_KEY: 0x06,
  REGISTER_AND_MOVE: 0x07,
} as const;

/** Persistent reservation TYPE values (SPC-4 §6.16.3). */
export const PrType = {
  WRITE_EXCLUSIVE: 0x1,
  EXCLUSIVE_ACCESS: 0x3,
  WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x5,
  EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x6,
  WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x7,
  EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x8,
} as const;
/** SCOPE 0h: the whole logical unit, the only scope SPC-4 keeps. */
export const PR_SCOPE_LU = 0x0;

/** Provisioning status in GET LBA STATUS descriptors (SBC-4 §5.7). */
export const ProvisioningStatus = {
  MAPPED: 0x0,
  DEALLOCATED: 0x1,
} as const;

/** PROVISIONING TYPE in the Logical Block Provisioning VPD page. */
export const ProvisioningType = {
  FULL: 0x0,
  THIN: 0x2,
} as const;
