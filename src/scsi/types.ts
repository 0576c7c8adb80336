// The contract between a SCSI transport (the iSCSI target today; anything that carries CDBs later)
// and the SCSI device server (src/scsi): the transport decodes its PDUs into ScsiTasks and sends back
// what a ScsiResult says; the device server knows nothing of iSCSI, sockets or PDUs.
//
// Residuals are the transport's: it compares the result's `transferLength` (what the CDB asked to
// move) with the initiator's expected data transfer length (SAM-5 §5.4; RFC 7143 §11.4.5), sends at
// most that many bytes of `dataIn`, and reports the difference as overflow or underflow.

/**
 * An I_T nexus (SAM-5 §4.6.3): one initiator port talking to one target port. For iSCSI the
 * initiator port is the initiator's name plus the session's ISID, so two sessions with the same
 * name and ISID are the same nexus (a re-login), while two ISIDs are two nexuses.
 */
export interface ItNexus {
  /** Stable and unique among nexuses: what reservations, registrations and unit attentions key on. */
  readonly key: string;
  /** The initiator's name (iSCSI: its IQN), as SPC's TransportID and READ FULL STATUS report it. */
  readonly initiatorName: string;
  /**
   * The initiator port's name: for iSCSI "<name>,i,0x<ISID as 12 hex digits>" (RFC 7143 §4.2.7.6),
   * used in TransportIDs with FORMAT CODE 01b.
   */
  readonly initiatorPortName: string;
  /** RELATIVE TARGET PORT IDENTIFIER of the port the nexus reaches (1 for our single portal group). */
  readonly relativeTargetPort: number;
}

/** SAM-5 task attributes, with iSCSI's ATTR field values (RFC 7143 §11.3.1.1). */
export const TaskAttribute = {
  UNTAGGED: 0,
  SIMPLE: 1,
  ORDERED: 2,
  HEAD_OF_QUEUE: 3,
  ACA: 4,
} as const;
export type TaskAttribute = (typeof TaskAttribute)[keyof typeof TaskAttribute];

export interface ScsiTask {
  readonly nexus: ItNexus;
  /** The LUN as a number (the transport decodes SAM's 8-byte LUN structure, src/scsi/lun.ts). */
  readonly lun: number;
  /** The CDB, exactly its own length (6, 10, 12, 16 or longer with an AHS). The task owns it. */
  readonly cdb: Uint8Array;
  /** Bytes the initiator expects to move (iSCSI's Expected Data Transfer Length). */
  readonly expectedDataTransferLength: number;
  /** The initiator said data flows to the target (iSCSI's W bit). */
  readonly writeBit: boolean;
  /** The initiator said data flows to the initiator (iSCSI's R bit). */
  readonly readBit: boolean;
  readonly attribute: TaskAttribute;
  /**
   * The command's data-out buffer, its first `length` bytes (0 < length <= the expected data transfer
   * length), as the transport received them: views of its receive buffers, in order, no copy. The
   * transport solicits what it does not have yet (R2T). Called at most once; rejects with a
   * BlockError when the task is aborted or the connection is lost before the data arrives.
   */
  dataOut(length: number): Promise<readonly Uint8Array[]>;
  /** True once the task was aborted (task management or connection loss): its result will be discarded. */
  readonly aborted: boolean;
}

export interface ScsiResult {
  /** SAM status: ScsiStatus in src/scsi/constants.ts. */
  readonly status: number;
  /** Sense data (fixed or descriptor format, as the LU's D_SENSE says) with CHECK CONDITION. */
  readonly sense?: Uint8Array;
  /** Data for the initiator, the command's whole answer; the transport sends at most the expected length. */
  readonly dataIn?: Uint8Array;
  /**
   * Bytes the CDB asked to transfer, in its direction (the allocation length, capped by what the
   * command actually returns for data-in commands; the blocks times block size for reads and writes);
   * 0 for commands without data. The transport turns its difference from the expected length into a
   * residual.
   */
  readonly transferLength: number;
  /**
   * Called once the transport is done with `dataIn` (sent or dropped), so its buffer can be reused.
   * It is bound (it may be called detached, e.g. passed along to the writer that sends the data) and
   * must be called at most once per result: the buffer goes back to a pool at once.
   */
  readonly release?: () => void;
}

/** SAM-5 §7 task management functions, as the transport hands them to the device server. */
export type ResetKind = 'lun' | 'target-warm' | 'target-cold';
