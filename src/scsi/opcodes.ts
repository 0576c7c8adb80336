// The commands this device server supports, as REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35)
// describes them: operation code, service action, CDB length and CDB USAGE DATA (a bit set for
// every CDB bit the device server looks at; byte 0 is the opcode), plus each command's class
// against reservations (reservations.ts).
import { MaintenanceIn, Op, PrIn, PrOut, ServiceActionIn16 } from './constants.ts';
import { ConflictClass } from './reservations.ts';

export interface CommandInfo {
  readonly opcode: number;
  /** Service action, or -1 for commands without one. */
  readonly serviceAction: number;
  readonly usage: Uint8Array;
  readonly conflict: ConflictClass;
  /** Offered only on thin-provisioned logical units. */
  readonly thinOnly?: boolean;
  /** Recommended command timeout (seconds), for the command timeouts descriptor. */
  readonly timeout: number;
}

/** CONTROL byte: NACA is evaluated (and refused: we do not offer ACA). */
const CTL = 0x04;
/** DPO, FUA and FUA_NV of READ/WRITE/COMPARE AND WRITE/ORWRITE. */
const DPO_FUA = 0x1a;
/** DPO and BYTCHK of VERIFY / WRITE AND VERIFY. */
const DPO_BYTCHK = 0x16;
const FF4 = [0xff, 0xff, 0xff, 0xff] as const;
const FF8 = [...FF4, ...FF4] as const;

function cmd(
  opcode: number,
  serviceAction: number,
  conflict: ConflictClass,
  rest: readonly number[],
  extra: { thinOnly?: boolean; timeout?: number } = {},
): CommandInfo {
  const usage = Uint8Array.from([opcode, ...rest]);
  // SPC-4 §6.35.3: the service action code itself sits where the CDB's SERVICE ACTION field is.
  if (serviceAction >= 0) usage[1] = ((usage[1] as number) & 0xe0) | serviceAction;
  return {
    opcode,
    serviceAction,
    usage,
    conflict,
    ...(extra.thinOnly === true ? { thinOnly: true } : {}),
    timeout: extra.timeout ?? 30,
  };
}

const { EXEMPT, PR_ALLOWED, READ, WRITE, RESERVE_RELEASE, PERSISTENT } = ConflictClass;

/** Sorted by operation code, then service action. */
export const COMMANDS: readonly CommandInfo[] = [
  cmd(Op.TEST_UNIT_READY, -1, PR_ALLOWED, [0, 0, 0, 0, CTL]),
  cmd(Op.REQUEST_SENSE, -1, EXEMPT, [0x01, 0, 0, 0xff, CTL]),
  cmd(Op.READ_6, -1, READ, [0x1f, 0xff, 0xff, 0xff, CTL]),
  cmd(Op.WRITE_6, -1, WRITE, [0x1f, 0xff, 0xff, 0xff, CTL]),
  cmd(Op.INQUIRY, -1, EXEMPT, [0x01, 0xff, 0xff, 0xff, CTL]),
  cmd(Op.MODE_SELECT_6, -1, WRITE, [0x11, 0, 0, 0xff, CTL]),
  cmd(Op.RESERVE_6, -1, RESERVE_RELEASE, [0, 0, 0, 0, CTL]),
  cmd(Op.RELEASE_6, -1, RESERVE_RELEASE, [0, 0, 0, 0, CTL]),
  cmd(Op.MODE_SENSE_6, -1, READ, [0x08, 0xff, 0xff, 0xff, CTL]),
  cmd(Op.START_STOP_UNIT, -1, WRITE, [0x01, 0, 0x0f, 0xf7, CTL], { timeout: 60 }),
  cmd(Op.SEND_DIAGNOSTIC, -1, WRITE, [0xf7, 0, 0xff, 0xff, CTL]),
  cmd(Op.READ_CAPACITY_10, -1, PR_ALLOWED, [0, ...FF4, 0, 0, 0x01, CTL]),
  cmd(Op.READ_10, -1, READ, [DPO_FUA, ...FF4, 0, 0xff, 0xff, CTL]),
  cmd(Op.WRITE_10, -1, WRITE, [DPO_FUA, ...FF4, 0, 0xff, 0xff, CTL]),
  cmd(Op.WRITE_AND_VERIFY_10, -1, WRITE, [DPO_BYTCHK, ...FF4, 0, 0xff, 0xff, CTL]),
  cmd(Op.VERIFY_10, -1, READ, [DPO_BYTCHK, ...FF4, 0, 0xff, 0xff, CTL]),
  cmd(Op.PRE_FETCH_10, -1, READ, [0x02, ...FF4, 0, 0xff, 0xff, CTL]),
  cmd(Op.SYNCHRONIZE_CACHE_10, -1, WRITE, [0x02, ...FF4, 0, 0xff, 0xff, CTL], { timeout: 60 }),
  cmd(Op.WRITE_SAME_10, -1, WRITE, [0x18, ...FF4, 0, 0xff, 0xff, CTL], { timeout: 60 }),
  cmd(Op.UNMAP, -1, WRITE, [0x01, 0, 0, 0, 0, 0, 0xff, 0xff, CTL], { thinOnly: true, timeout: 60 }),
  cmd(Op.MODE_SELECT_10, -1, WRITE, [0x11, 0, 0, 0, 0, 0, 0xff, 0xff, CTL]),
  cmd(Op.RESERVE_10, -1, RESERVE_RELEASE, [0x12, 0, 0, 0, 0, 0, 0, 0, CTL]),
  cmd(Op.RELEASE_10, -1, RESERVE_RELEASE, [0x12, 0, 0, 0, 0, 0, 0, 0, CTL]),
  cmd(Op.MODE_SENSE_10, -1, READ, [0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, CTL]),
  cmd(Op.PERSISTENT_RESERVE_IN, PrIn.READ_KEYS, PERSISTENT, [0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, CTL]),
  cmd(Op.PERSISTENT_RESERVE_IN, PrIn.READ_RESERVATION, PERSISTENT, [0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, CTL]),
  cmd(Op.PERSISTENT_RESERVE_IN, PrIn.REPORT_CAPABILITIES, PERSISTENT, [0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, CTL]),
  cmd(Op.PERSISTENT_RESERVE_IN, PrIn.READ_FULL_STATUS, PERSISTENT, [0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, CTL]),
  ...[PrOut.REGISTER, PrOut.RESERVE, PrOut.RELEASE, PrOut.CLEAR, PrOut.PREEMPT, PrOut.PREEMPT_AND_ABORT, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY].map((sa) =>
    cmd(Op.PERSISTENT_RESERVE_OUT, sa, PERSISTENT, [0x1f, 0xff, 0, 0, ...FF4, CTL]),
  ),
  cmd(Op.READ_16, -1, READ, [DPO_FUA, ...FF8, ...FF4, 0, CTL]),
  cmd(Op.COMPARE_AND_WRITE, -1, WRITE, [DPO_FUA, ...FF8, 0, 0, 0, 0xff, 0, CTL]),
  cmd(Op.WRITE_16, -1, WRITE, [DPO_FUA, ...FF8, ...FF4, 0, CTL]),
  cmd(Op.ORWRITE_16, -1, WRITE, [DPO_FUA, ...FF8, ...FF4, 0, CTL]),
  cmd(Op.WRITE_AND_VERIFY_16, -1, WRITE, [DPO_BYTCHK, ...FF8, ...FF4, 0, CTL]),
  cmd(Op.VERIFY_16, -1, READ, [DPO_BYTCHK, ...FF8, ...FF4, 0, CTL]),
  cmd(Op.PRE_FETCH_16, -1, READ, [0x02, ...FF8, ...FF4, 0, CTL]),
  cmd(Op.SYNCHRONIZE_CACHE_16, -1, WRITE, [0x02, ...FF8, ...FF4, 0, CTL], { timeout: 60 }),
  cmd(Op.WRITE_SAME_16, -1, WRITE, [0x19, ...FF8, ...FF4, 0, CTL], { timeout: 60 }),
  cmd(Op.SERVICE_ACTION_IN_16, ServiceActionIn16.READ_CAPACITY_16, PR_ALLOWED, [0x1f, ...FF8, ...FF4, 0x01, CTL]),
  cmd(Op.SERVICE_ACTION_IN_16, ServiceActionIn16.GET_LBA_STATUS, READ, [0x1f, ...FF8, ...FF4, 0, CTL]),
  cmd(Op.REPORT_LUNS, -1, EXEMPT, [0, 0xff, 0, 0, 0, ...FF4, 0, CTL]),
  cmd(Op.MAINTENANCE_IN, MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES, READ, [0x1f, 0x87, 0xff, 0xff, 0xff, ...FF4, 0, CTL]),
  cmd(Op.READ_12, -1, READ, [DPO_FUA, ...FF4, ...FF4, 0, CTL]),
  cmd(Op.WRITE_12, -1, WRITE, [DPO_FUA, ...FF4, ...FF4, 0, CTL]),
  cmd(Op.WRITE_AND_VERIFY_12, -1, WRITE, [DPO_BYTCHK, ...FF4, ...FF4, 0, CTL]),
  cmd(Op.VERIFY_12, -1, READ, [DPO_BYTCHK, ...FF4, ...FF4, 0, CTL]),
];

/** Opcodes that carry a service action in byte 1 (bits 4-0). */
export function hasServiceActions(opcode: number): boolean {
  return opcode === Op.PERSISTENT_RESERVE_IN || opcode === Op.PERSISTENT_RESERVE_OUT || opcode === Op.SERVICE_ACTION_IN_16 || opcode === Op.MAINTENANCE_IN;
}

/** Conflict class by opcode (SERVICE ACTION IN(16) is decided per service action by the caller). */
export const CONFLICT_BY_OPCODE: Uint8Array = (() => {
  const t = new Uint8Array(256).fill(ConflictClass.WRITE);
  for (const c of COMMANDS) if (c.opcode !== Op.SERVICE_ACTION_IN_16) t[c.opcode] = c.conflict;
  return t;
})();

/** The command descriptor for an opcode (and service action), or undefined when unsupported. */
export function findCommand(opcode: number, serviceAction: number, thin: boolean): CommandInfo | undefined {
  for (const c of COMMANDS) {
    if (c.opcode !== opcode) continue;
    if (c.serviceAction !== -1 && c.serviceAction !== serviceAction) continue;
    if (c.thinOnly === true && !thin) continue;
    return c;
  }
  return undefined;
}

/** The timeouts descriptor (SPC-4 §6.35.4): 12 bytes, DESCRIPTOR LENGTH 0Ah. */
export function writeTimeoutsDescriptor(out: Uint8Array, offset: number, info: CommandInfo): void {
  out[offset + 1] = 0x0a;
  // NOMINAL COMMAND PROCESSING TIMEOUT 0 (not given); RECOMMENDED COMMAND TIMEOUT in seconds.
  const t = info.timeout;
  out[offset + 8] = (t >>> 24) & 0xff;
  out[offset + 9] = (t >>> 16) & 0xff;
  out[offset + 10] = (t >>> 8) & 0xff;
  out[offset + 11] = t & 0xff;
}

/** REPORTING OPTIONS of REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35.1). */
const ReportingOptions = {
  ALL: 0,
  ONE_COMMAND: 1,
  ONE_COMMAND_WITH_SERVICE_ACTION: 2,
  ONE_COMMAND_SERVICE_ACTION_IF_ANY: 3,
} as const;

/** SUPPORT field values of the one_command parameter data. */
const SUPPORT_NOT_SUPPORTED = 0x1;
const SUPPORT_STANDARD = 0x3;

/**
 * REPORT SUPPORTED OPERATION CODES parameter data (whole; the caller truncates), or the byte/bit of
 * the CDB that is wrong. Every INVALID FIELD points at byte 2 or later: libiscsi reads a pointer to
 * byte 1 (or none) as "this MAINTENANCE IN service action is not implemented".
 */
export function supportedOperationCodes(cdb: Uint8Array, thin: boolean): Uint8Array | { readonly byte: number; readonly bit: number } {
  const rctd = ((cdb[2] as number) & 0x80) !== 0;
  const options = (cdb[2] as number) & 0x07;
  const reqOp = cdb[3] as number;
  const reqSa = ((cdb[4] as number) << 8) | (cdb[5] as number);
  if (options === ReportingOptions.ALL) {
    const list = COMMANDS.filter((c) => c.thinOnly !== true || thin);
    const size = rctd ? 20 : 8;
    const out = new Uint8Array(4 + list.length * size);
    const total = out.byteLength - 4;
    out[0] = (total >>> 24) & 0xff;
    out[1] = (total >>> 16) & 0xff;
    out[2] = (total >>> 8) & 0xff;
    out[3] = total & 0xff;
    let p = 4;
    for (const c of list) {
      out[p] = c.opcode;
      if (c.serviceAction >= 0) {
        out[p + 2] = c.serviceAction >>> 8;
        out[p + 3] = c.serviceAction & 0xff;
      }
      out[p + 5] = (rctd ? 0x02 : 0) | (c.serviceAction >= 0 ? 0x01 : 0); // CTDP, SERVACTV
      out[p + 6] = c.usage.byteLength >>> 8;
      out[p + 7] = c.usage.byteLength & 0xff;
      if (rctd) writeTimeoutsDescriptor(out, p + 8, c);
      p += size;
    }
    return out;
  }
  let withSa: boolean;
  switch (options) {
    case ReportingOptions.ONE_COMMAND:
      if (hasServiceActions(reqOp)) return { byte: 2, bit: 2 };
      withSa = false;
      break;
    case ReportingOptions.ONE_COMMAND_WITH_SERVICE_ACTION:
      if (!hasServiceActions(reqOp)) return { byte: 2, bit: 2 };
      withSa = true;
      break;
    case ReportingOptions.ONE_COMMAND_SERVICE_ACTION_IF_ANY:
      withSa = hasServiceActions(reqOp);
      break;
    default:
      return { byte: 2, bit: 2 };
  }
  const c = findCommand(reqOp, withSa ? reqSa : -1, thin);
  if (c === undefined) {
    const out = new Uint8Array(4);
    out[1] = SUPPORT_NOT_SUPPORTED;
    return out;
  }
  const n = c.usage.byteLength;
  const out = new Uint8Array(4 + n + (rctd ? 12 : 0));
  out[1] = (rctd ? 0x80 : 0) | SUPPORT_STANDARD;
  out[2] = n >>> 8;
  out[3] = n & 0xff;
  out.set(c.usage, 4);
  if (rctd) writeTimeoutsDescriptor(out, 4 + n, c);
  return out;
}
