// Reservations of one logical unit: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations
// (§5.14, PERSISTENT RESERVE IN/OUT §6.15-6.16), and the conflict rule every other command obeys.
//
// Conflicts for a command from an I_T nexus that does not hold the reservation (SPC-4 table 53,
// SBC-4 table 13), by the command's class:
//
//                       WE    EA    WE-RO/AR           EA-RO/AR           SPC-2 (other holder)
//                                   registered / not   registered / not
//   exempt (INQUIRY…)   ok    ok    ok / ok            ok / ok            ok
//   PR-allowed (TUR…)   ok    ok    ok / ok            ok / ok            conflict
//   read-like           ok    cfl   ok / ok            ok / conflict      conflict
//   write-like          cfl   cfl   ok / conflict      ok / conflict      conflict
//   RESERVE/RELEASE     conflict while any registration exists           (their own rules)
//
// The reservation holder is the nexus that reserved, or for all-registrants types every registered
// nexus. Registrations are keyed by I_T nexus (ItNexus.key) and survive resets and nexus loss, but
// not a cold reset (power on): we do not offer APTPL, so nothing persists across power loss.
import type { ItNexus } from './types.ts';
import { Asc, PR_SCOPE_LU, PrIn, PrOut, PrType } from './constants.ts';
import { fieldPointer } from './sense.ts';
import { putU16, putU32, putU64big, u64big } from './cdb.ts';

/** How a command fares against reservations (opcodes.ts gives each supported command one). */
export const ConflictClass = {
  EXEMPT: 0,
  PR_ALLOWED: 1,
  READ: 2,
  WRITE: 3,
  RESERVE_RELEASE: 4,
  /** PERSISTENT RESERVE IN/OUT: their own rules under persistent reservations; conflict under SPC-2. */
  PERSISTENT: 5,
} as const;
export type ConflictClass = (typeof ConflictClass)[keyof typeof ConflictClass];

export interface Registration {
  readonly nexus: ItNexus;
  key: bigint;
}

interface PersistentReservation {
  /** Holder's nexus key; unused for all-registrants types. */
  holder: string;
  /** Holder's reservation key at RESERVE time (READ RESERVATION reports the holder's current key). */
  type: number;
}

/** What a PERSISTENT RESERVE OUT ends in. */
export type PrOutcome = { readonly kind: 'good' } | { readonly kind: 'conflict' } | { readonly kind: 'check'; readonly ascAscq: number; readonly sks: number };

const GOOD: PrOutcome = { kind: 'good' };
const CONFLICT: PrOutcome = { kind: 'conflict' };
const check = (ascAscq: number, sks = 0): PrOutcome => ({ kind: 'check', ascAscq, sks });

export interface ReservationsOptions {
  /** Most registrations held at once (INSUFFICIENT REGISTRATION RESOURCES past it). */
  readonly maxRegistrations?: number;
  /** PROTOCOL IDENTIFIER in TransportIDs (5: iSCSI). */
  readonly protocolIdentifier: number;
  /** Establishes a unit attention for an I_T nexus. */
  readonly establishUa: (nexusKey: string, ascAscq: number) => void;
  /** PREEMPT AND ABORT: the transport aborts these nexuses' tasks on this logical unit. */
  readonly abortTasksOf?: (nexuses: readonly ItNexus[]) => void;
}

const PR_PARAMETER_LIST_LENGTH = 24;
const SPEC_I_PT = 0x08;
const ALL_TG_PT = 0x04;
const APTPL = 0x01;

function isAllRegistrants(type: number): boolean {
  return type === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS || type === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}
function isRegistrantsOnly(type: number): boolean {
  return type === PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY || type === PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY;
}
function isWriteExclusive(type: number): boolean {
  return type === PrType.WRITE_EXCLUSIVE || type === PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY || type === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS;
}
export function isValidPrType(type: number): boolean {
  return type === 1 || type === 3 || (type >= 5 && type <= 8);
}

export class Reservations {
  readonly #opts: ReservationsOptions;
  readonly #maxRegistrations: number;
  /** SPC-2 reservation holder (nexus key), or null. */
  #spc2: string | null = null;
  readonly #registrations = new Map<string, Registration>();
  #reservation: PersistentReservation | null = null;
  #generation = 0;
  /** Anything that can make a command conflict: checked before the (rarer) full rule. */
  active = false;

  constructor(opts: ReservationsOptions) {
    this.#opts = opts;
    this.#maxRegistrations = opts.maxRegistrations ?? 1024;
  }

  get generation(): number {
    return this.#generation;
  }
  get spc2Holder(): string | null {
    return this.#spc2;
  }
  get registrationCount(): number {
    return this.#registrations.size;
  }

  #update(): void {
    this.active = this.#spc2 !== null || this.#reservation !== null || this.#registrations.size !== 0;
  }

  /** Whether a command of class `cls` from `nexusKey` must end in RESERVATION CONFLICT. */
  conflicts(nexusKey: string, cls: ConflictClass): boolean {
    if (cls === ConflictClass.EXEMPT) return false;
    if (this.#spc2 !== null) {
      if (this.#spc2 === nexusKey) return false;
      // RESERVE and RELEASE decide for themselves (a RELEASE from another nexus is a no-op).
      return cls !== ConflictClass.RESERVE_RELEASE;
    }
    if (cls === ConflictClass.RESERVE_RELEASE) return this.#registrations.size !== 0 || this.#reservation !== null;
    const r = this.#reservation;
    if (r === null || cls === ConflictClass.PR_ALLOWED || cls === ConflictClass.PERSISTENT) return false;
    const registered = this.#registrations.has(nexusKey);
    if (isAllRegistrants(r.type) ? registered : r.holder === nexusKey) return false;
    const we = isWriteExclusive(r.type);
    if (cls === ConflictClass.READ) {
      if (we) return false;
      return !(registered && r.type !== PrType.EXCLUSIVE_ACCESS);
    }
    // write-like
    if (r.type === PrType.WRITE_EXCLUSIVE || r.type === PrType.EXCLUSIVE_ACCESS) return true;
    return !registered;
  }

  // ------------------------------------------------------------------ SPC-2 RESERVE / RELEASE

  /** RESERVE(6)/(10) for the whole LU: true when granted (or already held by this nexus). */
  reserve(nexusKey: string): boolean {
    if (this.#spc2 !== null && this.#spc2 !== nexusKey) return false;
    this.#spc2 = nexusKey;
    this.#update();
    return true;
  }

  /** RELEASE(6)/(10): releases the holder's reservation; from any other nexus a no-op (SPC-2 §7.21). */
  release(nexusKey: string): void {
    if (this.#spc2 === nexusKey) {
      this.#spc2 = null;
      this.#update();
    }
  }

  // ------------------------------------------------------------------ events

  /** I_T nexus loss: an SPC-2 reservation it held is released (registrations stay). */
  nexusLost(nexusKey: string): void {
    this.release(nexusKey);
  }

  /** Logical unit reset or hard reset: SPC-2 reservations go; power on also drops persistent state. */
  reset(powerOn: boolean): void {
    this.#spc2 = null;
    if (powerOn) {
      this.#registrations.clear();
      this.#reservation = null;
    }
    this.#update();
  }

  // ------------------------------------------------------------------ PERSISTENT RESERVE IN

  /** The whole parameter data for a PRIN service action (truncated by the caller), or undefined for a bad one. */
  persistentReserveIn(serviceAction: number): Uint8Array | undefined {
    switch (serviceAction) {
      case PrIn.READ_KEYS:
        return this.#readKeys();
      case PrIn.READ_RESERVATION:
        return this.#readReservation();
      case PrIn.REPORT_CAPABILITIES:
        return reportCapabilities();
      case PrIn.READ_FULL_STATUS:
        return this.#readFullStatus();
      default:
        return undefined;
    }
  }

  #readKeys(): Uint8Array {
    const n = this.#registrations.size;
    const out = new Uint8Array(8 + 8 * n);
    putU32(out, 0, this.#generation);
    putU32(out, 4, 8 * n);
    let p = 8;
    for (const r of this.#registrations.values()) {
      putU64big(out, p, r.key);
      p += 8;
    }
    return out;
  }

  #readReservation(): Uint8Array {
    const r = this.#reservation;
    const out = new Uint8Array(r === null ? 8 : 24);
    putU32(out, 0, this.#generation);
    if (r === null) return out;
    putU32(out, 4, 16);
    // All-registrants reservations report key 0 (SPC-4 §6.15.3.3); others the holder's key.
    const key = isAllRegistrants(r.type) ? 0n : (this.#registrations.get(r.holder)?.key ?? 0n);
    putU64big(out, 8, key);
    out[21] = (PR_SCOPE_LU << 4) | r.type;
    return out;
  }

  #readFullStatus(): Uint8Array {
    const r = this.#reservation;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (const [nexusKey, reg] of this.#registrations) {
      const tid = transportId(this.#opts.protocolIdentifier, reg.nexus.initiatorPortName);
      const d = new Uint8Array(24 + tid.byteLength);
      putU64big(d, 0, reg.key);
      const holder = r !== null && (isAllRegistrants(r.type) || r.holder === nexusKey);
      if (holder && r !== null) {
        d[12] = 0x01; // R_HOLDER
        d[13] = (PR_SCOPE_LU << 4) | r.type;
      }
      putU16(d, 18, reg.nexus.relativeTargetPort);
      putU32(d, 20, tid.byteLength);
      d.set(tid, 24);
      parts.push(d);
      total += d.byteLength;
    }
    const out = new Uint8Array(8 + total);
    putU32(out, 0, this.#generation);
    putU32(out, 4, total);
    let p = 8;
    for (const d of parts) {
      out.set(d, p);
      p += d.byteLength;
    }
    return out;
  }

  // ------------------------------------------------------------------ PERSISTENT RESERVE OUT

  /**
   * Runs a PERSISTENT RESERVE OUT. `params` is the parameter list as received (its length is the
   * CDB's PARAMETER LIST LENGTH, or less if the initiator sent less).
   */
  persistentReserveOut(nexus: ItNexus, serviceAction: number, scope: number, type: number, params: Uint8Array, paramListLength: number): PrOutcome {
    if (serviceAction > PrOut.REGISTER_AND_IGNORE_EXISTING_KEY) return check(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 1, 4));
    if (paramListLength < PR_PARAMETER_LIST_LENGTH || params.byteLength < PR_PARAMETER_LIST_LENGTH) return check(Asc.PARAMETER_LIST_LENGTH_ERROR);
    const flags = params[20] as number;
    const registering = serviceAction === PrOut.REGISTER || serviceAction === PrOut.REGISTER_AND_IGNORE_EXISTING_KEY;
    // We offer none of SPEC_I_PT, ALL_TG_PT, APTPL (REPORT CAPABILITIES says SIP_C, ATP_C, PTPL_C 0).
    if ((flags & SPEC_I_PT) !== 0) return check(Asc.INVALID_FIELD_IN_PARAMETER_LIST, fieldPointer(false, 20, 3));
    if (paramListLength !== PR_PARAMETER_LIST_LENGTH) return check(Asc.PARAMETER_LIST_LENGTH_ERROR);
    if (registering && (flags & ALL_TG_PT) !== 0) return check(Asc.INVALID_FIELD_IN_PARAMETER_LIST, fieldPointer(false, 20, 2));
    if (registering && (flags & APTPL) !== 0) return check(Asc.INVALID_FIELD_IN_PARAMETER_LIST, fieldPointer(false, 20, 0));
    const needsType =
      serviceAction === PrOut.RESERVE || serviceAction === PrOut.RELEASE || serviceAction === PrOut.PREEMPT || serviceAction === PrOut.PREEMPT_AND_ABORT;
    if (needsType) {
      if (scope !== PR_SCOPE_LU) return check(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 2, 7));
      if (!isValidPrType(type)) return check(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 2, 3));
    }
    // Under an SPC-2 reservation held by another nexus, every PROUT conflicts (SPC-4 §5.14.3).
    if (this.#spc2 !== null && this.#spc2 !== nexus.key) return CONFLICT;
    const rk = u64big(params, 0);
    const sark = u64big(params, 8);
    let outcome: PrOutcome;
    switch (serviceAction) {
      case PrOut.REGISTER:
        outcome = this.#register(nexus, rk, sark, false);
        break;
      case PrOut.REGISTER_AND_IGNORE_EXISTING_KEY:
        outcome = this.#register(nexus, rk, sark, true);
        break;
      case PrOut.RESERVE:
        outcome = this.#reserve(nexus.key, rk, type);
        break;
      case PrOut.RELEASE:
        outcome = this.#release(nexus.key, rk, type);
        break;
      case PrOut.CLEAR:
        outcome = this.#clear(nexus.key, rk);
        break;
      case PrOut.PREEMPT:
      case PrOut.PREEMPT_AND_ABORT:
        outcome = this.#preempt(nexus, rk, sark, type, serviceAction === PrOut.PREEMPT_AND_ABORT);
        break;
      default:
        // REGISTER AND MOVE is not offered.
        outcome = check(Asc.INVALID_FIELD_IN_CDB, fieldPointer(true, 1, 4));
    }
    this.#update();
    return outcome;
  }

  #bump(): void {
    this.#generation = (this.#generation + 1) >>> 0;
  }

  /** The registration of `key` if its reservation key is `rk`; undefined means RESERVATION CONFLICT. */
  #registered(nexusKey: string, rk: bigint): Registration | undefined {
    const reg = this.#registrations.get(nexusKey);
    return reg !== undefined && reg.key === rk ? reg : undefined;
  }

  #register(nexus: ItNexus, rk: bigint, sark: bigint, ignoreExisting: boolean): PrOutcome {
    const reg = this.#registrations.get(nexus.key);
    if (reg === undefined) {
      if (!ignoreExisting && rk !== 0n) return CONFLICT;
      if (sark === 0n) return GOOD;
      if (this.#registrations.size >= this.#maxRegistrations) return check(Asc.INSUFFICIENT_REGISTRATION_RESOURCES);
      this.#registrations.set(nexus.key, { nexus, key: sark });
      this.#bump();
      return GOOD;
    }
    if (!ignoreExisting && rk !== reg.key) return CONFLICT;
    if (sark === 0n) this.#unregister(nexus.key);
    else reg.key = sark;
    this.#bump();
    return GOOD;
  }

  /** Removes a registration, releasing the reservation it held (SPC-4 §5.14.11.2.3, §5.14.10.2). */
  #unregister(nexusKey: string): void {
    this.#registrations.delete(nexusKey);
    const r = this.#reservation;
    if (r === null) return;
    if (isAllRegistrants(r.type)) {
      // The reservation lasts while any registrant is left.
      if (this.#registrations.size === 0) this.#reservation = null;
      return;
    }
    if (r.holder !== nexusKey) return;
    this.#reservation = null;
    // Only a registrants-only reservation tells the other registrants it is gone; the I_T nexus
    // that unregistered learns it from its own command's GOOD status.
    if (isRegistrantsOnly(r.type)) this.#uaToRegistered(nexusKey, Asc.RESERVATIONS_RELEASED);
  }

  #reserve(nexusKey: string, rk: bigint, type: number): PrOutcome {
    if (this.#registered(nexusKey, rk) === undefined) return CONFLICT;
    const r = this.#reservation;
    if (r !== null) {
      const holds = isAllRegistrants(r.type) || r.holder === nexusKey;
      return holds && r.type === type ? GOOD : CONFLICT;
    }
    this.#reservation = { holder: nexusKey, type };
    return GOOD;
  }

  #release(nexusKey: string, rk: bigint, type: number): PrOutcome {
    if (this.#registered(nexusKey, rk) === undefined) return CONFLICT;
    const r = this.#reservation;
    if (r === null) return GOOD;
    const holds = isAllRegistrants(r.type) || r.holder === nexusKey;
    if (!holds) return GOOD;
    if (r.type !== type) return check(Asc.INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
    this.#reservation = null;
    if (isRegistrantsOnly(r.type) || isAllRegistrants(r.type)) this.#uaToRegistered(nexusKey, Asc.RESERVATIONS_RELEASED);
    return GOOD;
  }

  #clear(nexusKey: string, rk: bigint): PrOutcome {
    if (this.#registered(nexusKey, rk) === undefined) return CONFLICT;
    this.#uaToRegistered(nexusKey, Asc.RESERVATIONS_PREEMPTED);
    this.#registrations.clear();
    this.#reservation = null;
    this.#bump();
    return GOOD;
  }

  #preempt(nexus: ItNexus, rk: bigint, sark: bigint, type: number, abort: boolean): PrOutcome {
    if (this.#registered(nexus.key, rk) === undefined) return CONFLICT;
    const r = this.#reservation;
    const allRegistrants = r !== null && isAllRegistrants(r.type);
    if (sark === 0n && !allRegistrants) return check(Asc.INVALID_FIELD_IN_PARAMETER_LIST, fieldPointer(false, 8));
    // The I_T nexuses losing their registration: those whose key is SARK (or, for SARK 0 under an
    // all-registrants reservation, every other one). The issuer keeps its own registration.
    const victims: Registration[] = [];
    for (const [key, reg] of this.#registrations) {
      if (key === nexus.key) continue;
      if (sark === 0n || reg.key === sark) victims.push(reg);
    }
    const preemptsHolder = r !== null && (allRegistrants ? sark === 0n : this.#registrations.get(r.holder)?.key === sark);
    if (victims.length === 0 && !preemptsHolder) return CONFLICT;
    for (const v of victims) {
      this.#registrations.delete(v.nexus.key);
      this.#opts.establishUa(v.nexus.key, Asc.REGISTRATIONS_PREEMPTED);
    }
    if (preemptsHolder && r !== null) {
      // The issuer becomes the holder of a reservation of the CDB's type; if the type changed, the
      // registrants still registered hear that the old one was released.
      this.#reservation = { holder: nexus.key, type };
      if (r.type !== type) this.#uaToRegistered(nexus.key, Asc.RESERVATIONS_RELEASED);
    }
    this.#bump();
    if (abort && victims.length > 0) this.#opts.abortTasksOf?.(victims.map((v) => v.nexus));
    return GOOD;
  }

  /** A unit attention for every registered I_T nexus except `except`. */
  #uaToRegistered(except: string, code: number): void {
    for (const key of this.#registrations.keys()) if (key !== except) this.#opts.establishUa(key, code);
  }
}

/** REPORT CAPABILITIES parameter data (SPC-4 §6.15.4): 8 bytes. */
function reportCapabilities(): Uint8Array {
  const out = new Uint8Array(8);
  putU16(out, 0, 8);
  // byte 2: RLR_C 0, CRH 0, SIP_C 0, ATP_C 0, PTPL_C 0; byte 3: TMV 1, ALLOW COMMANDS 000b, PTPL_A 0.
  out[3] = 0x80;
  // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX | EX_AC_AR.
  out[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
  out[5] = 0x01;
  return out;
}

/**
 * An iSCSI TransportID with FORMAT CODE 01b (SPC-4 §7.6.4.6): the initiator port name
 * "<name>,i,0x<ISID>", NUL-terminated and padded to a multiple of 4 bytes (at least 20).
 */
export function transportId(protocolIdentifier: number, initiatorPortName: string): Uint8Array {
  const name = new TextEncoder().encode(initiatorPortName.slice(0, 255));
  const padded = Math.max(20, Math.ceil((name.byteLength + 1) / 4) * 4);
  const out = new Uint8Array(4 + padded);
  out[0] = (0x1 << 6) | (protocolIdentifier & 0x0f);
  putU16(out, 2, padded);
  out.set(name, 4);
  return out;
}
