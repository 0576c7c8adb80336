// Login and text parameter negotiation (RFC 7143 §6.2, §6.3, §12.1, §13), both roles, sans IO.
//
// One TargetNegotiator (or InitiatorNegotiator) per connection login. It is fed the complete
// key=value pairs of one Login Request (or Response) sequence, already joined across C-bit PDUs
// (text.ts TextAccumulator), and answers with the pairs to send back, the T bit and NSG to use, or a
// LoginStatus error for the login reject. After the login it serves full-feature Text negotiation.
//
// The rules, as §6.2 gives them:
//   list (HeaderDigest, DataDigest, AuthMethod, TaskReporting): the responder picks the first value of
//     the originator's list that it supports; none → "Reject".
//   simple numeric, result "Minimum" or "Maximum": the responder answers min/max(offer, its own);
//     a value outside the key's range → "Reject" and the key keeps its default.
//   Boolean AND / OR: the responder answers the function's result. The answer is optional when the
//     offer alone decides it (AND with No, OR with Yes); we send it anyway, which is always allowed.
//   declarative (names, aliases, MaxRecvDataSegmentLength, TargetPortalGroupTag): no answer.
//   unknown keys, vendor X- keys included → "NotUnderstood".
//   keys made irrelevant by the session type or by other keys → "Irrelevant".
//   the reserved constants (NotUnderstood, Irrelevant, Reject) used as an offer, a key sent twice in
//   one login, a key the sender may not send, a security key outside the security stage → protocol
//   error: Login reject with Initiator Error (0x0200).
import { LoginStatus, Stage } from './constants.ts';
import { UsageError } from '../internal/errors.ts';
import { formatBoolean, isReservedValue, parseBoolean, parseNumber, splitList } from './text.ts';
import type { TextPair } from './text.ts';
import type { LoginAuthClient, LoginAuthenticator } from './chap.ts';

export type Digest = 'CRC32C' | 'None';
export type SessionType = 'Normal' | 'Discovery';
export type AuthMethodName = 'CHAP' | 'None';

/** How a key is negotiated. */
export type KeyKind =
  | 'list' // §6.2.1: first of the originator's list that the responder accepts
  | 'and' // §6.2.2 Boolean, result function AND
  | 'or' // §6.2.2 Boolean, result function OR
  | 'min' // §6.2.2 numerical, result function Minimum
  | 'max' // §6.2.2 numerical, result function Maximum
  | 'declarative' // §6.2: declared, never answered
  | 'reject' // obsolete keys we must answer with Reject (§13.25: IFMarkInt, OFMarkInt)
  | 'special'; // SendTargets (full feature phase only, answered by the caller)

/**
 * Where a key may be used (§13 "Use"): SEC security stage only (AuthMethod), IO initialize only
 * (any login PDU), LO leading connection only, ALL login and full feature phase, FFPO full feature
 * phase only.
 */
export type KeyUse = 'SEC' | 'IO' | 'LO' | 'ALL' | 'FFPO';
export type KeySender = 'initiator' | 'target' | 'both';

export interface KeyDef {
  readonly kind: KeyKind;
  readonly use: KeyUse;
  /** CO: connection only; SW: session wide. */
  readonly scope: 'CO' | 'SW';
  readonly sender: KeySender;
  /** The value in force when nobody negotiates the key (wire form). */
  readonly default?: string;
  readonly range?: readonly [number, number];
  /** For lists, the values the RFC defines. */
  readonly values?: readonly string[];
  /** §13: "Irrelevant when: SessionType=Discovery". */
  readonly irrelevantInDiscovery: boolean;
  /** Section of RFC 7143 (or the RFC that defines it). */
  readonly section: string;
}

const MAX_24 = 16_777_215; // 2^24 - 1

/** The key table (RFC 7143 §12.1, §13; RFC 7145 for the iSER keys an initiator may still offer). */
export const KEYS = {
  AuthMethod: {
    kind: 'list',
    use: 'SEC',
    scope: 'CO',
    sender: 'both',
    default: 'None',
    values: ['KRB5', 'SRP', 'SPKM1', 'SPKM2', 'CHAP', 'None'],
    irrelevantInDiscovery: false,
    section: '12.1',
  },
  HeaderDigest: {
    kind: 'list',
    use: 'IO',
    scope: 'CO',
    sender: 'both',
    default: 'None',
    values: ['CRC32C', 'None'],
    irrelevantInDiscovery: false,
    section: '13.1',
  },
  DataDigest: {
    kind: 'list',
    use: 'IO',
    scope: 'CO',
    sender: 'both',
    default: 'None',
    values: ['CRC32C', 'None'],
    irrelevantInDiscovery: false,
    section: '13.1',
  },
  MaxConnections: { kind: 'min', use: 'LO', scope: 'SW', sender: 'both', default: '1', range: [1, 65535], irrelevantInDiscovery: true, section: '13.2' },
  SendTargets: { kind: 'special', use: 'FFPO', scope: 'SW', sender: 'initiator', irrelevantInDiscovery: false, section: '13.3' },
  TargetName: { kind: 'declarative', use: 'IO', scope: 'SW', sender: 'initiator', irrelevantInDiscovery: false, section: '13.4' },
  InitiatorName: { kind: 'declarative', use: 'IO', scope: 'SW', sender: 'initiator', irrelevantInDiscovery: false, section: '13.5' },
  TargetAlias: { kind: 'declarative', use: 'ALL', scope: 'SW', sender: 'target', irrelevantInDiscovery: false, section: '13.6' },
  InitiatorAlias: { kind: 'declarative', use: 'ALL', scope: 'SW', sender: 'initiator', irrelevantInDiscovery: false, section: '13.7' },
  TargetAddress: { kind: 'declarative', use: 'ALL', scope: 'SW', sender: 'target', irrelevantInDiscovery: false, section: '13.8' },
  TargetPortalGroupTag: { kind: 'declarative', use: 'IO', scope: 'SW', sender: 'target', range: [0, 65535], irrelevantInDiscovery: false, section: '13.9' },
  InitialR2T: { kind: 'or', use: 'LO', scope: 'SW', sender: 'both', default: 'Yes', irrelevantInDiscovery: true, section: '13.10' },
  ImmediateData: { kind: 'and', use: 'LO', scope: 'SW', sender: 'both', default: 'Yes', irrelevantInDiscovery: true, section: '13.11' },
  MaxRecvDataSegmentLength: {
    kind: 'declarative',
    use: 'ALL',
    scope: 'CO',
    sender: 'both',
    default: '8192',
    range: [512, MAX_24],
    irrelevantInDiscovery: false,
    section: '13.12',
  },
  MaxBurstLength: {
    kind: 'min',
    use: 'LO',
    scope: 'SW',
    sender: 'both',
    default: '262144',
    range: [512, MAX_24],
    irrelevantInDiscovery: true,
    section: '13.13',
  },
  FirstBurstLength: {
    kind: 'min',
    use: 'LO',
    scope: 'SW',
    sender: 'both',
    default: '65536',
    range: [512, MAX_24],
    irrelevantInDiscovery: true,
    section: '13.14',
  },
  DefaultTime2Wait: { kind: 'max', use: 'LO', scope: 'SW', sender: 'both', default: '2', range: [0, 3600], irrelevantInDiscovery: false, section: '13.15' },
  DefaultTime2Retain: { kind: 'min', use: 'LO', scope: 'SW', sender: 'both', default: '20', range: [0, 3600], irrelevantInDiscovery: false, section: '13.16' },
  MaxOutstandingR2T: { kind: 'min', use: 'LO', scope: 'SW', sender: 'both', default: '1', range: [1, 65535], irrelevantInDiscovery: true, section: '13.17' },
  DataPDUInOrder: { kind: 'or', use: 'LO', scope: 'SW', sender: 'both', default: 'Yes', irrelevantInDiscovery: true, section: '13.18' },
  DataSequenceInOrder: { kind: 'or', use: 'LO', scope: 'SW', sender: 'both', default: 'Yes', irrelevantInDiscovery: true, section: '13.19' },
  ErrorRecoveryLevel: { kind: 'min', use: 'LO', scope: 'SW', sender: 'both', default: '0', range: [0, 2], irrelevantInDiscovery: false, section: '13.20' },
  SessionType: {
    kind: 'declarative',
    use: 'LO',
    scope: 'SW',
    sender: 'initiator',
    default: 'Normal',
    values: ['Discovery', 'Normal'],
    irrelevantInDiscovery: false,
    section: '13.21',
  },
  TaskReporting: {
    kind: 'list',
    use: 'LO',
    scope: 'SW',
    sender: 'both',
    default: 'RFC3720',
    values: ['RFC3720', 'ResponseFence', 'FastAbort'],
    irrelevantInDiscovery: true,
    section: '13.23',
  },
  iSCSIProtocolLevel: { kind: 'min', use: 'LO', scope: 'SW', sender: 'both', default: '1', range: [0, 31], irrelevantInDiscovery: true, section: '13.24' },
  'X#NodeArchitecture': { kind: 'declarative', use: 'LO', scope: 'SW', sender: 'both', irrelevantInDiscovery: false, section: '13.26' },
  // §13.25: obsolete. IFMarker/OFMarker SHOULD get Reject and MAY get No, never NotUnderstood; we
  // answer No (the AND of our No), which RFC 3720 initiators also accept. IFMarkInt/OFMarkInt MUST
  // get Reject.
  IFMarker: { kind: 'and', use: 'IO', scope: 'CO', sender: 'both', default: 'No', irrelevantInDiscovery: false, section: '13.25' },
  OFMarker: { kind: 'and', use: 'IO', scope: 'CO', sender: 'both', default: 'No', irrelevantInDiscovery: false, section: '13.25' },
  IFMarkInt: { kind: 'reject', use: 'IO', scope: 'CO', sender: 'both', irrelevantInDiscovery: false, section: '13.25' },
  OFMarkInt: { kind: 'reject', use: 'IO', scope: 'CO', sender: 'both', irrelevantInDiscovery: false, section: '13.25' },
  // RFC 7145 §6 (iSER). Over TCP we answer RDMAExtensions=No; the two segment lengths are then
  // irrelevant.
  RDMAExtensions: { kind: 'and', use: 'LO', scope: 'SW', sender: 'both', default: 'No', irrelevantInDiscovery: true, section: 'RFC 7145 6.3' },
  InitiatorRecvDataSegmentLength: {
    kind: 'declarative',
    use: 'ALL',
    scope: 'CO',
    sender: 'both',
    default: '8192',
    range: [512, MAX_24],
    irrelevantInDiscovery: false,
    section: 'RFC 7145 6.5',
  },
  TargetRecvDataSegmentLength: {
    kind: 'declarative',
    use: 'ALL',
    scope: 'CO',
    sender: 'both',
    default: '8192',
    range: [512, MAX_24],
    irrelevantInDiscovery: false,
    section: 'RFC 7145 6.4',
  },
} as const satisfies Record<string, KeyDef>;

export type KeyName = keyof typeof KEYS;

export function keyDef(key: string): KeyDef | undefined {
  return Object.hasOwn(KEYS, key) ? (KEYS as Record<string, KeyDef>)[key] : undefined;
}

/** Keys of authentication methods (§12.1): only legal in the security stage, inside their method. */
export function isAuthMethodKey(key: string): boolean {
  return key.startsWith('CHAP_') || key.startsWith('SRP_') || key === 'KRB_AP_REQ' || key === 'KRB_AP_REP' || key.startsWith('SPKM_');
}

/** Keys that only iSER gives meaning to: irrelevant once RDMAExtensions is No. */
const ISER_SEGMENT_KEYS: ReadonlySet<string> = new Set(['InitiatorRecvDataSegmentLength', 'TargetRecvDataSegmentLength']);

// ---------------------------------------------------------------------------------------------
// Results

/** What a session runs with once the login is over, from the point of view of one side. */
export interface SessionParameters {
  readonly sessionType: SessionType;
  readonly initiatorName: string;
  readonly initiatorAlias: string | undefined;
  readonly targetName: string | undefined;
  readonly targetAlias: string | undefined;
  readonly targetPortalGroupTag: number | undefined;
  readonly authMethod: AuthMethodName;
  /** HeaderDigest=CRC32C agreed. */
  readonly headerDigest: boolean;
  /** DataDigest=CRC32C agreed. */
  readonly dataDigest: boolean;
  /** The largest data segment this side receives: its own declaration (default 8192). */
  readonly maxRecvDataSegmentLength: number;
  /** The largest data segment this side may send: the peer's declaration (default 8192). */
  readonly maxXmitDataSegmentLength: number;
  readonly maxBurstLength: number;
  /** Never above maxBurstLength. */
  readonly firstBurstLength: number;
  readonly immediateData: boolean;
  readonly initialR2T: boolean;
  readonly maxOutstandingR2T: number;
  readonly dataPDUInOrder: boolean;
  readonly dataSequenceInOrder: boolean;
  readonly defaultTime2Wait: number;
  readonly defaultTime2Retain: number;
  readonly errorRecoveryLevel: number;
  readonly maxConnections: number;
  readonly ifMarker: false;
  readonly ofMarker: false;
  readonly taskReporting: string;
  readonly iscsiProtocolLevel: number;
}

/** A negotiation failure: the LoginStatus for the login reject and a reason for logs. */
export interface NegotiationError {
  readonly ok: false;
  readonly status: LoginStatus;
  readonly reason: string;
}

function failure(status: LoginStatus, reason: string): NegotiationError {
  return { ok: false, status, reason };
}

/** Login stage numbers as they appear in CSG/NSG. */
export type LoginStage = 0 | 1 | 3;

/** The stage fields of a Login Request or Response. */
export interface LoginFlags {
  readonly csg: number;
  readonly nsg: number;
  readonly transit: boolean;
}

export type TargetLoginStep =
  | {
      readonly ok: true;
      /** Pairs for the Login Response data segment, in order. */
      readonly answers: TextPair[];
      /** T bit, and the CSG/NSG to put in the response (NSG = CSG when T is 0). */
      readonly transit: boolean;
      readonly csg: LoginStage;
      readonly nsg: LoginStage;
      /** The response moves to the full feature phase: the login succeeded. */
      readonly complete: boolean;
      /** Keys we offered that the initiator has to answer in its next request. */
      readonly awaiting: readonly string[];
    }
  | NegotiationError;

export type TextStep =
  | {
      readonly ok: true;
      /** Pairs for the Text Response, in order (SendTargets results are the caller's to add). */
      readonly answers: TextPair[];
      /** The value of a SendTargets key, for the caller to answer with TargetName/TargetAddress. */
      readonly sendTargets: string | undefined;
      /** The session's parameters after this request (MaxRecvDataSegmentLength may change). */
      readonly parameters: SessionParameters;
    }
  | NegotiationError;

// ---------------------------------------------------------------------------------------------
// Local policy: what this side accepts for each negotiated key, and the shared rules.

type Policy =
  | { readonly kind: 'list'; readonly accept: readonly string[] }
  | { readonly kind: 'bool'; readonly value: boolean }
  | { readonly kind: 'number'; readonly value: number };

type ResponderOutcome = { readonly answer: string; readonly result: string | undefined } | { readonly error: string };

/** §6.2: our answer to an offer of `value` for `key`, given what we accept. */
function respond(key: string, def: KeyDef, value: string, policy: Policy): ResponderOutcome {
  switch (def.kind) {
    case 'list': {
      if (policy.kind !== 'list') break;
      const offered = splitList(value);
      if (offered === null) return { answer: 'Reject', result: undefined };
      for (const v of offered) if (isReservedValue(v)) return { error: `${key}=${value}: ${v} cannot be offered` };
      const chosen = offered.find((v) => policy.accept.includes(v));
      return chosen === undefined ? { answer: 'Reject', result: undefined } : { answer: chosen, result: chosen };
    }
    case 'and':
    case 'or': {
      if (policy.kind !== 'bool') break;
      const b = parseBoolean(value);
      if (b === null) return { answer: 'Reject', result: undefined };
      const r = def.kind === 'and' ? b && policy.value : b || policy.value;
      return { answer: formatBoolean(r), result: formatBoolean(r) };
    }
    case 'min':
    case 'max': {
      if (policy.kind !== 'number') break;
      const n = parseNumber(value);
      const [lo, hi] = def.range!;
      if (n === null || n < lo || n > hi) return { answer: 'Reject', result: undefined };
      const r = def.kind === 'min' ? Math.min(n, policy.value) : Math.max(n, policy.value);
      return { answer: String(r), result: String(r) };
    }
    case 'reject':
      return { answer: 'Reject', result: undefined };
    default:
      break;
  }
  return { error: `${key}: no local policy` };
}

type OriginatorOutcome = { readonly result: string | undefined; readonly note?: string } | { readonly error: string };

/** §6.2: the outcome of our offer `offered` for `key` after the peer answered `answer`. */
function evaluateAnswer(key: string, def: KeyDef, offered: string, answer: string): OriginatorOutcome {
  if (answer === 'Reject' || answer === 'Irrelevant' || answer === 'NotUnderstood') {
    // The key keeps its default. NotUnderstood is not a legal answer for a standard key, but the
    // outcome is the same, so we note it rather than fail.
    return { result: undefined, note: `${key}=${offered} answered ${answer}` };
  }
  switch (def.kind) {
    case 'list': {
      const ours = splitList(offered) ?? [];
      return ours.includes(answer) ? { result: answer } : { error: `${key}=${answer} was not among our offer ${offered}` };
    }
    case 'and':
    case 'or': {
      const mine = parseBoolean(offered);
      const theirs = parseBoolean(answer);
      if (theirs === null) return { error: `${key}=${answer} is not Yes or No` };
      // AND with our No, OR with our Yes: the offer decided it, whatever the answer says.
      if (def.kind === 'and' && mine === false) return { result: 'No' };
      if (def.kind === 'or' && mine === true) return { result: 'Yes' };
      return { result: answer };
    }
    case 'min':
    case 'max': {
      const mine = parseNumber(offered)!;
      const n = parseNumber(answer);
      const [lo, hi] = def.range!;
      if (n === null || n < lo || n > hi) return { error: `${key}=${answer} is outside ${lo}..${hi}` };
      if (def.kind === 'min' && n > mine) return { error: `${key}=${answer} exceeds our offer ${offered} (result function Minimum)` };
      if (def.kind === 'max' && n < mine) return { error: `${key}=${answer} is below our offer ${offered} (result function Maximum)` };
      return { result: String(n) };
    }
    default:
      return { error: `${key} cannot be negotiated` };
  }
}

/** Whether `value` (wire form) is something we can live with under `policy`. */
function acceptable(def: KeyDef, value: string, policy: Policy): boolean {
  switch (policy.kind) {
    case 'list':
      return policy.accept.includes(value);
    case 'bool': {
      const b = parseBoolean(value);
      if (def.kind === 'and') return !(b === true && !policy.value);
      return !(b === false && policy.value);
    }
    case 'number': {
      const n = parseNumber(value)!;
      return def.kind === 'min' ? n <= policy.value : n >= policy.value;
    }
  }
}

/** iSCSI names (§4.2.7): iqn., eui. or naa. formats, at most 223 bytes. Checked loosely. */
function nameProblem(kind: string, name: string): string | null {
  if (name.length === 0) return `${kind} is empty`;
  if (Buffer.byteLength(name, 'utf8') > 223) return `${kind} is longer than 223 bytes`;
  if (/\s/.test(name)) return `${kind} ${JSON.stringify(name)} contains white space`;
  return null;
}

function duplicateKey(pairs: readonly TextPair[]): string | undefined {
  const seen = new Set<string>();
  for (const [key] of pairs) {
    if (seen.has(key)) return key;
    seen.add(key);
  }
  return undefined;
}

function p(key: string, value: string): TextPair {
  return [key, value];
}

// ---------------------------------------------------------------------------------------------
// Shared parameter store

interface NegotiatedState {
  sessionType: SessionType;
  initiatorName: string;
  initiatorAlias: string | undefined;
  targetName: string | undefined;
  targetAlias: string | undefined;
  targetPortalGroupTag: number | undefined;
  authMethod: AuthMethodName;
  /** Agreed values in wire form; a missing key has its default. */
  results: Map<string, string>;
  /** Our own MaxRecvDataSegmentLength, once declared. */
  ourMaxRecv: number | undefined;
  /** The peer's MaxRecvDataSegmentLength declaration. */
  peerMaxRecv: number | undefined;
}

function newState(): NegotiatedState {
  return {
    sessionType: 'Normal',
    initiatorName: '',
    initiatorAlias: undefined,
    targetName: undefined,
    targetAlias: undefined,
    targetPortalGroupTag: undefined,
    authMethod: 'None',
    results: new Map(),
    ourMaxRecv: undefined,
    peerMaxRecv: undefined,
  };
}

function effective(state: NegotiatedState, key: KeyName): string {
  const r = state.results.get(key);
  if (r !== undefined) return r;
  const d = (KEYS[key] as KeyDef).default;
  return d ?? '';
}

function buildParams(s: NegotiatedState): SessionParameters {
  const discovery = s.sessionType === 'Discovery';
  // Session-wide keys irrelevant to a discovery session keep their defaults there.
  const get = (key: KeyName): string => (discovery && (KEYS[key] as KeyDef).irrelevantInDiscovery ? ((KEYS[key] as KeyDef).default ?? '') : effective(s, key));
  const num = (key: KeyName): number => parseNumber(get(key)) ?? 0;
  const bool = (key: KeyName): boolean => get(key) === 'Yes';
  const maxBurst = num('MaxBurstLength');
  return {
    sessionType: s.sessionType,
    initiatorName: s.initiatorName,
    initiatorAlias: s.initiatorAlias,
    targetName: s.targetName,
    targetAlias: s.targetAlias,
    targetPortalGroupTag: s.targetPortalGroupTag,
    authMethod: s.authMethod,
    headerDigest: get('HeaderDigest') === 'CRC32C',
    dataDigest: get('DataDigest') === 'CRC32C',
    maxRecvDataSegmentLength: s.ourMaxRecv ?? 8192,
    maxXmitDataSegmentLength: s.peerMaxRecv ?? 8192,
    maxBurstLength: maxBurst,
    firstBurstLength: Math.min(num('FirstBurstLength'), maxBurst),
    immediateData: bool('ImmediateData'),
    initialR2T: bool('InitialR2T'),
    maxOutstandingR2T: num('MaxOutstandingR2T'),
    dataPDUInOrder: bool('DataPDUInOrder'),
    dataSequenceInOrder: bool('DataSequenceInOrder'),
    defaultTime2Wait: num('DefaultTime2Wait'),
    defaultTime2Retain: num('DefaultTime2Retain'),
    errorRecoveryLevel: num('ErrorRecoveryLevel'),
    maxConnections: num('MaxConnections'),
    ifMarker: false,
    ofMarker: false,
    taskReporting: get('TaskReporting'),
    iscsiProtocolLevel: num('iSCSIProtocolLevel'),
  };
}

/** FirstBurstLength is irrelevant when InitialR2T=Yes and ImmediateData=No (§13.14). */
function firstBurstIrrelevant(s: NegotiatedState): boolean {
  return effective(s, 'InitialR2T') === 'Yes' && effective(s, 'ImmediateData') === 'No';
}

function checkMaxRecv(who: string, value: string): number | string {
  const n = parseNumber(value);
  if (n === null || n < 512 || n > MAX_24) return `${who} MaxRecvDataSegmentLength=${value} is outside 512..${MAX_24}`;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Configuration

/** Operational values one side wants; each is validated against the key's range. */
export interface OperationalConfig {
  /** What we receive per PDU (declared to the peer). Default 262144. */
  readonly maxRecvDataSegmentLength?: number;
  /** Our bound for MaxBurstLength (result Minimum). Default 16776192 (16 MiB - 1 KiB). */
  readonly maxBurstLength?: number;
  /** Our bound for FirstBurstLength (result Minimum). Default 262144. */
  readonly firstBurstLength?: number;
  /** Our ImmediateData (AND). Default true. */
  readonly immediateData?: boolean;
  /** Our InitialR2T (OR): false lets the peer choose No. Default false. */
  readonly initialR2T?: boolean;
  /** Our bound for MaxOutstandingR2T (Minimum). Default 16 for a target, 1 for an initiator. */
  readonly maxOutstandingR2T?: number;
  /** Acceptable digests, most wanted first (the order matters when we are the originator). */
  readonly headerDigest?: readonly Digest[];
  readonly dataDigest?: readonly Digest[];
  /** Our DefaultTime2Wait (Maximum). Default 2. */
  readonly defaultTime2Wait?: number;
  /** Our DefaultTime2Retain (Minimum). Default 20 for a target, 0 for an initiator. */
  readonly defaultTime2Retain?: number;
  /** Our DataPDUInOrder / DataSequenceInOrder (OR). Default true: we want data in order. */
  readonly dataPDUInOrder?: boolean;
  readonly dataSequenceInOrder?: boolean;
}

interface ResolvedOperational {
  readonly maxRecvDataSegmentLength: number;
  readonly maxBurstLength: number;
  readonly firstBurstLength: number;
  readonly immediateData: boolean;
  readonly initialR2T: boolean;
  readonly maxOutstandingR2T: number;
  readonly headerDigest: readonly Digest[];
  readonly dataDigest: readonly Digest[];
  readonly defaultTime2Wait: number;
  readonly defaultTime2Retain: number;
  readonly dataPDUInOrder: boolean;
  readonly dataSequenceInOrder: boolean;
}

function checkRange(what: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new UsageError(`${what} ${v} is outside ${lo}..${hi}`);
  return v;
}

function checkDigests(what: string, list: readonly Digest[]): readonly Digest[] {
  if (list.length === 0) throw new UsageError(`${what}: empty digest list`);
  for (const d of list) if (d !== 'CRC32C' && d !== 'None') throw new UsageError(`${what}: unknown digest ${String(d)}`);
  if (new Set(list).size !== list.length) throw new UsageError(`${what}: repeated digest`);
  return [...list];
}

function resolveOperational(c: OperationalConfig, role: 'target' | 'initiator'): ResolvedOperational {
  return {
    maxRecvDataSegmentLength: checkRange('MaxRecvDataSegmentLength', c.maxRecvDataSegmentLength ?? 262144, 512, MAX_24),
    maxBurstLength: checkRange('MaxBurstLength', c.maxBurstLength ?? 16776192, 512, MAX_24),
    firstBurstLength: checkRange('FirstBurstLength', c.firstBurstLength ?? 262144, 512, MAX_24),
    immediateData: c.immediateData ?? true,
    initialR2T: c.initialR2T ?? false,
    maxOutstandingR2T: checkRange('MaxOutstandingR2T', c.maxOutstandingR2T ?? (role === 'target' ? 16 : 1), 1, 65535),
    headerDigest: checkDigests('HeaderDigest', c.headerDigest ?? (role === 'target' ? ['CRC32C', 'None'] : ['None'])),
    dataDigest: checkDigests('DataDigest', c.dataDigest ?? (role === 'target' ? ['CRC32C', 'None'] : ['None'])),
    defaultTime2Wait: checkRange('DefaultTime2Wait', c.defaultTime2Wait ?? 2, 0, 3600),
    defaultTime2Retain: checkRange('DefaultTime2Retain', c.defaultTime2Retain ?? (role === 'target' ? 20 : 0), 0, 3600),
    dataPDUInOrder: c.dataPDUInOrder ?? true,
    dataSequenceInOrder: c.dataSequenceInOrder ?? true,
  };
}

function policyFor(key: string, op: ResolvedOperational, authMethods: readonly AuthMethodName[]): Policy | undefined {
  switch (key) {
    case 'AuthMethod':
      return { kind: 'list', accept: authMethods };
    case 'HeaderDigest':
      return { kind: 'list', accept: op.headerDigest };
    case 'DataDigest':
      return { kind: 'list', accept: op.dataDigest };
    case 'MaxConnections':
      return { kind: 'number', value: 1 };
    case 'InitialR2T':
      return { kind: 'bool', value: op.initialR2T };
    case 'ImmediateData':
      return { kind: 'bool', value: op.immediateData };
    case 'MaxBurstLength':
      return { kind: 'number', value: op.maxBurstLength };
    case 'FirstBurstLength':
      return { kind: 'number', value: op.firstBurstLength };
    case 'DefaultTime2Wait':
      return { kind: 'number', value: op.defaultTime2Wait };
    case 'DefaultTime2Retain':
      return { kind: 'number', value: op.defaultTime2Retain };
    case 'MaxOutstandingR2T':
      return { kind: 'number', value: op.maxOutstandingR2T };
    case 'DataPDUInOrder':
      return { kind: 'bool', value: op.dataPDUInOrder };
    case 'DataSequenceInOrder':
      return { kind: 'bool', value: op.dataSequenceInOrder };
    case 'ErrorRecoveryLevel':
      return { kind: 'number', value: 0 };
    case 'TaskReporting':
      return { kind: 'list', accept: ['RFC3720'] };
    case 'iSCSIProtocolLevel':
      return { kind: 'number', value: 1 };
    case 'IFMarker':
    case 'OFMarker':
    case 'RDMAExtensions':
      return { kind: 'bool', value: false };
    case 'IFMarkInt':
    case 'OFMarkInt':
      return { kind: 'bool', value: false };
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Target side

export interface LoginIdentity {
  readonly initiatorName: string;
  readonly initiatorAlias: string | undefined;
  readonly targetName: string | undefined;
  readonly sessionType: SessionType;
}

/** Per-target settings that `admit` may supply once the TargetName is known. */
export interface TargetAdmission {
  readonly ok: true;
  readonly targetAlias?: string;
  readonly authMethods?: readonly AuthMethodName[];
  readonly authenticator?: LoginAuthenticator;
}

/** What a target offers, the same for every connection: operational values and its own declarations. */
export interface NegotiationOffer extends OperationalConfig {
  /** Announced in the first response of a normal session (default 1). */
  readonly targetPortalGroupTag?: number;
  /** Announced in the first response of a normal session when set. */
  readonly targetAlias?: string;
}

export interface DefaultOfferOptions {
  readonly maxRecvDataSegmentLength?: number;
  readonly firstBurstLength?: number;
  readonly maxBurstLength?: number;
  readonly maxOutstandingR2T?: number;
  readonly immediateData?: boolean;
  readonly initialR2T?: boolean;
  /** Digests we accept: none, CRC32C required, or whatever the initiator prefers (default any). */
  readonly digest?: 'none' | 'crc32c' | 'any';
  readonly targetAlias?: string;
  readonly targetPortalGroupTag?: number;
}

/**
 * The target's offer with the project's defaults (docs/iscsi-baselines.md §5): MaxRecvDataSegmentLength
 * 262144, MaxBurstLength 16776192, FirstBurstLength 262144, ImmediateData Yes, InitialR2T No allowed,
 * MaxOutstandingR2T 16, ErrorRecoveryLevel 0, MaxConnections 1, digests as the initiator prefers.
 * Values are range-checked (UsageError).
 */
export function defaultOffer(o: DefaultOfferOptions = {}): NegotiationOffer {
  const digest = o.digest ?? 'any';
  const digests: readonly Digest[] = digest === 'none' ? ['None'] : digest === 'crc32c' ? ['CRC32C'] : ['CRC32C', 'None'];
  const offer: NegotiationOffer = {
    maxRecvDataSegmentLength: o.maxRecvDataSegmentLength ?? 262144,
    maxBurstLength: o.maxBurstLength ?? 16776192,
    firstBurstLength: o.firstBurstLength ?? 262144,
    maxOutstandingR2T: o.maxOutstandingR2T ?? 16,
    immediateData: o.immediateData ?? true,
    initialR2T: o.initialR2T ?? false,
    headerDigest: digests,
    dataDigest: digests,
    defaultTime2Wait: 2,
    defaultTime2Retain: 20,
    dataPDUInOrder: true,
    dataSequenceInOrder: true,
    targetPortalGroupTag: o.targetPortalGroupTag ?? 1,
    ...(o.targetAlias === undefined ? {} : { targetAlias: o.targetAlias }),
  };
  resolveOperational(offer, 'target'); // throws on out-of-range values
  checkRange('TargetPortalGroupTag', offer.targetPortalGroupTag ?? 1, 0, 65535);
  return offer;
}

/** Everything one connection's login needs on the target side: the offer, authentication, policy. */
export interface TargetConfig extends NegotiationOffer {
  /** Authentication methods we accept, in our order of preference. Default ['None']. */
  readonly authMethods?: readonly AuthMethodName[];
  /** The CHAP stepper for this login, needed when authMethods has CHAP. */
  readonly authenticator?: LoginAuthenticator;
  /** Accept discovery sessions (default true). */
  readonly discovery?: boolean;
  /** Accept normal sessions (default true). */
  readonly normal?: boolean;
  /**
   * Called once, after the first request named the initiator and target: return a refusal (for
   * example NOT_FOUND, AUTHORIZATION_FAILURE) or per-target settings.
   */
  readonly admit?: (who: LoginIdentity) => TargetAdmission | NegotiationError;
}

type AuthProgress = 'not-started' | 'in-progress' | 'done';

/** Target-side login and text negotiation for one connection. */
export class TargetNegotiator {
  readonly #op: ResolvedOperational;
  readonly #tpgt: number;
  #authMethods: readonly AuthMethodName[];
  #authenticator: LoginAuthenticator | undefined;
  #targetAlias: string | undefined;
  readonly #cfg: TargetConfig;
  readonly #state: NegotiatedState = newState();
  #stage: 0 | 1 | 3 | undefined;
  #requests = 0;
  #failed: NegotiationError | undefined;
  /** Every key the initiator sent in this login (offers and declarations). */
  readonly #seen = new Set<string>();
  /** Our offers awaiting the initiator's answer: key → offered value. */
  readonly #pending = new Map<string, string>();
  /** Every key we offered in this login. */
  readonly #offered = new Set<string>();
  #auth: AuthProgress = 'not-started';
  #declaredOperational = false;

  constructor(config: TargetConfig = {}) {
    this.#cfg = config;
    this.#op = resolveOperational(config, 'target');
    this.#tpgt = checkRange('TargetPortalGroupTag', config.targetPortalGroupTag ?? 1, 0, 65535);
    this.#authMethods = config.authMethods ?? ['None'];
    this.#authenticator = config.authenticator;
    this.#targetAlias = config.targetAlias;
    if (this.#authMethods.length === 0) throw new UsageError('authMethods is empty');
    if (this.#authMethods.includes('CHAP') && this.#authenticator === undefined && config.admit === undefined) {
      throw new UsageError('authMethods has CHAP but no authenticator is given');
    }
  }

  /** The login reached the full feature phase. */
  get complete(): boolean {
    return this.#stage === Stage.FULL_FEATURE_PHASE;
  }

  /** The identity from the first request (undefined before it). */
  get identity(): LoginIdentity | undefined {
    if (this.#requests === 0) return undefined;
    const s = this.#state;
    return { initiatorName: s.initiatorName, initiatorAlias: s.initiatorAlias, targetName: s.targetName, sessionType: s.sessionType };
  }

  /** The authenticated CHAP name, when CHAP was used and succeeded. */
  get chapUser(): string | undefined {
    return this.#auth === 'done' && this.#state.authMethod === 'CHAP' ? this.#authenticator?.peerName : undefined;
  }

  /** The parameters as agreed so far (final once `complete`). */
  parameters(): SessionParameters {
    return buildParams(this.#state);
  }

  /** Process one Login Request sequence: its stage fields and its complete pairs. */
  receiveLogin(flags: LoginFlags, pairs: readonly TextPair[]): TargetLoginStep {
    if (this.#failed !== undefined) return this.#failed;
    const r = this.#receiveLogin(flags, pairs);
    if (!r.ok) this.#failed = r;
    return r;
  }

  #receiveLogin(flags: LoginFlags, pairs: readonly TextPair[]): TargetLoginStep {
    const { csg, nsg, transit } = flags;
    if (this.complete) return failure(LoginStatus.INITIATOR_ERROR, 'Login Request after the login completed');
    if (csg !== Stage.SECURITY_NEGOTIATION && csg !== Stage.LOGIN_OPERATIONAL_NEGOTIATION)
      return failure(LoginStatus.INITIATOR_ERROR, `CSG ${csg} is not a login stage`);
    if (transit && ((nsg !== Stage.LOGIN_OPERATIONAL_NEGOTIATION && nsg !== Stage.FULL_FEATURE_PHASE) || nsg <= csg)) {
      return failure(LoginStatus.INITIATOR_ERROR, `T=1 from CSG ${csg} to NSG ${nsg}`);
    }
    if (this.#stage !== undefined && csg !== this.#stage)
      return failure(LoginStatus.INITIATOR_ERROR, `Login Request in stage ${csg}, the login is in stage ${this.#stage}`);
    const first = this.#requests === 0;
    this.#requests++;
    this.#stage = csg;

    const dup = duplicateKey(pairs);
    if (dup !== undefined) return failure(LoginStatus.INITIATOR_ERROR, `${dup} appears twice in one request`);

    const out: TextPair[] = [];
    let rest: readonly TextPair[] = pairs;

    if (first) {
      const id = this.#identify(pairs);
      if (!id.ok) return id;
    }

    // Answers to the offers we made in our previous response. An offer left unanswered stands: the
    // initiator took it silently (open-iscsi records a target's offer this way).
    if (this.#pending.size > 0) {
      const others: TextPair[] = [];
      const answered = new Map<string, string>();
      for (const pr of rest) {
        if (this.#pending.has(pr[0])) answered.set(pr[0], pr[1]);
        else others.push(pr);
      }
      for (const [key, offered] of this.#pending) {
        const def = keyDef(key)!;
        const answer = answered.get(key);
        if (answer === undefined) {
          this.#state.results.set(key, offered);
          continue;
        }
        this.#seen.add(key);
        const ev = evaluateAnswer(key, def, offered, answer);
        if ('error' in ev) return failure(LoginStatus.INITIATOR_ERROR, ev.error);
        if (ev.result !== undefined) this.#state.results.set(key, ev.result);
        else {
          this.#state.results.delete(key);
          const policy = policyFor(key, this.#op, this.#authMethods)!;
          // Irrelevant: the value does not matter here. Reject: the default applies, if we can.
          if (answer !== 'Irrelevant' && def.default !== undefined && !acceptable(def, def.default, policy)) {
            return failure(
              LoginStatus.INITIATOR_ERROR,
              `${key}: the initiator answered ${answer} to ${offered}, and the default ${def.default} is not acceptable`,
            );
          }
        }
      }
      this.#pending.clear();
      rest = others;
    }

    const authPairs: TextPair[] = [];
    let firstBurstIndex = -1;
    let firstBurstValue = '';
    for (const pr of rest) {
      const [key, value] = pr;
      if (this.#seen.has(key)) return failure(LoginStatus.INITIATOR_ERROR, `${key} was already negotiated in this login`);
      this.#seen.add(key);

      if (isAuthMethodKey(key)) {
        if (csg !== Stage.SECURITY_NEGOTIATION) return failure(LoginStatus.INITIATOR_ERROR, `${key} outside the security stage`);
        authPairs.push(pr);
        continue;
      }
      const def = keyDef(key);
      if (def === undefined) {
        out.push(p(key, 'NotUnderstood'));
        continue;
      }
      if (def.sender === 'target') return failure(LoginStatus.INITIATOR_ERROR, `${key} may only be sent by a target`);
      if (isReservedValue(value)) return failure(LoginStatus.INITIATOR_ERROR, `${key}=${value}: ${value} is only an answer`);
      if (def.use === 'SEC' && csg !== Stage.SECURITY_NEGOTIATION) return failure(LoginStatus.INITIATOR_ERROR, `${key} outside the security stage`);
      if (def.use === 'FFPO') {
        out.push(p(key, 'Reject'));
        continue;
      }

      switch (key) {
        case 'InitiatorName':
        case 'TargetName':
        case 'SessionType':
          if (!first) return failure(LoginStatus.INITIATOR_ERROR, `${key} must come in the first Login Request`);
          continue; // taken by #identify
        case 'InitiatorAlias':
          this.#state.initiatorAlias = value;
          continue;
        case 'X#NodeArchitecture':
          continue;
        case 'MaxRecvDataSegmentLength': {
          const n = checkMaxRecv("the initiator's", value);
          if (typeof n === 'string') return failure(LoginStatus.INITIATOR_ERROR, n);
          this.#state.peerMaxRecv = n;
          continue;
        }
        case 'AuthMethod': {
          const r = respond(key, def, value, { kind: 'list', accept: this.#authMethods });
          if ('error' in r) return failure(LoginStatus.INITIATOR_ERROR, r.error);
          if (r.result === undefined) {
            return failure(LoginStatus.AUTHENTICATION_FAILURE, `AuthMethod=${value}: none is allowed here (we accept ${this.#authMethods.join(',')})`);
          }
          this.#state.authMethod = r.result as AuthMethodName;
          this.#state.results.set(key, r.result);
          if (r.result === 'CHAP') {
            if (this.#authenticator === undefined) return failure(LoginStatus.TARGET_ERROR, 'CHAP chosen but no authenticator is configured');
            this.#auth = 'in-progress';
          } else {
            this.#auth = 'done';
          }
          out.push(p(key, r.answer));
          continue;
        }
        default:
          break;
      }

      if (ISER_SEGMENT_KEYS.has(key)) {
        out.push(p(key, 'Irrelevant'));
        continue;
      }
      if (this.#state.sessionType === 'Discovery' && def.irrelevantInDiscovery) {
        out.push(p(key, 'Irrelevant'));
        continue;
      }
      if (key === 'FirstBurstLength') {
        // Answered after the loop: it depends on MaxBurstLength, InitialR2T and ImmediateData,
        // which may come later in the same request.
        firstBurstIndex = out.length;
        firstBurstValue = value;
        out.push(p(key, ''));
        continue;
      }
      const policy = policyFor(key, this.#op, this.#authMethods);
      if (policy === undefined) continue; // a declarative we have nothing to say about
      const r = respond(key, def, value, policy);
      if ('error' in r) return failure(LoginStatus.INITIATOR_ERROR, r.error);
      if (r.result !== undefined) this.#state.results.set(key, r.result);
      else if (def.default !== undefined && def.kind !== 'reject' && !acceptable(def, def.default, policy)) {
        return failure(LoginStatus.INITIATOR_ERROR, `${key}=${value}: nothing acceptable offered, and the default ${def.default} is not acceptable here`);
      }
      out.push(p(key, r.answer));
    }

    if (firstBurstIndex >= 0) {
      const def = KEYS.FirstBurstLength;
      if (firstBurstIrrelevant(this.#state)) {
        out[firstBurstIndex] = p('FirstBurstLength', 'Irrelevant');
      } else {
        const maxBurst = parseNumber(effective(this.#state, 'MaxBurstLength'))!;
        const r = respond('FirstBurstLength', def, firstBurstValue, { kind: 'number', value: Math.min(this.#op.firstBurstLength, maxBurst) });
        if ('error' in r) return failure(LoginStatus.INITIATOR_ERROR, r.error);
        if (r.result !== undefined) this.#state.results.set('FirstBurstLength', r.result);
        out[firstBurstIndex] = p('FirstBurstLength', r.answer);
      }
    }

    // Security stage: hand the method's keys to the authenticator.
    if (authPairs.length > 0) {
      if (this.#auth !== 'in-progress' || this.#authenticator === undefined) {
        return failure(LoginStatus.INITIATOR_ERROR, `${authPairs[0]![0]} without AuthMethod=CHAP agreed`);
      }
      if (!authPairs.every((x) => x[0].startsWith('CHAP_'))) {
        return failure(LoginStatus.INITIATOR_ERROR, `${authPairs.find((x) => !x[0].startsWith('CHAP_'))![0]} does not belong to CHAP`);
      }
      const step = this.#authenticator.step(authPairs);
      if (step.status === 'failure') return failure(step.loginStatus, step.reason);
      out.push(...step.pairs);
      if (step.status === 'success') this.#auth = 'done';
    }

    // Authentication must be over before the operational stage. An initiator that skips the
    // security stage (or never offers AuthMethod) gets AuthMethod's default, None.
    const leavingSecurity = csg === Stage.SECURITY_NEGOTIATION && transit;
    if ((leavingSecurity || csg === Stage.LOGIN_OPERATIONAL_NEGOTIATION) && this.#auth === 'not-started') {
      if (!this.#authMethods.includes('None')) {
        return failure(
          LoginStatus.AUTHENTICATION_FAILURE,
          `authentication is required (${this.#authMethods.join(',')}) but the initiator ${csg === Stage.SECURITY_NEGOTIATION ? 'did not offer AuthMethod' : 'skipped the security stage'}`,
        );
      }
      this.#auth = 'done';
      this.#state.authMethod = 'None';
    }

    // Declarations we owe: TargetAlias and TargetPortalGroupTag in the response to the first
    // request of a normal session (§13.6, §13.9), our MaxRecvDataSegmentLength in the first
    // operational-stage response (§13.12; libiscsi and open-iscsi take it from there).
    if (first && this.#state.sessionType === 'Normal') {
      if (this.#targetAlias !== undefined) {
        this.#state.targetAlias = this.#targetAlias;
        out.push(p('TargetAlias', this.#targetAlias));
      }
      this.#state.targetPortalGroupTag = this.#tpgt;
      out.push(p('TargetPortalGroupTag', String(this.#tpgt)));
    }
    if (csg === Stage.LOGIN_OPERATIONAL_NEGOTIATION && !this.#declaredOperational) {
      this.#declaredOperational = true;
      this.#state.ourMaxRecv = this.#op.maxRecvDataSegmentLength;
      out.push(p('MaxRecvDataSegmentLength', String(this.#op.maxRecvDataSegmentLength)));
    }

    // When the initiator wants to leave the operational stage, offer what it did not negotiate but
    // we need away from the default.
    if (csg === Stage.LOGIN_OPERATIONAL_NEGOTIATION && transit) out.push(...this.#unpromptedOffers());

    const canTransit = transit && this.#auth === 'done' && this.#pending.size === 0;
    const respCsg = csg as LoginStage;
    if (!canTransit) return { ok: true, answers: out, transit: false, csg: respCsg, nsg: respCsg, complete: false, awaiting: [...this.#pending.keys()] };
    this.#stage = nsg as LoginStage;
    return { ok: true, answers: out, transit: true, csg: respCsg, nsg: nsg as LoginStage, complete: nsg === Stage.FULL_FEATURE_PHASE, awaiting: [] };
  }

  #identify(pairs: readonly TextPair[]): { ok: true } | NegotiationError {
    const get = (k: string): string | undefined => pairs.find((x) => x[0] === k)?.[1];
    const initiatorName = get('InitiatorName');
    if (initiatorName === undefined || initiatorName === '')
      return failure(LoginStatus.MISSING_PARAMETER, 'InitiatorName missing from the first Login Request');
    const badI = nameProblem('InitiatorName', initiatorName);
    if (badI !== null) return failure(LoginStatus.INITIATOR_ERROR, badI);
    const st = get('SessionType') ?? 'Normal';
    if (st !== 'Normal' && st !== 'Discovery') return failure(LoginStatus.INITIATOR_ERROR, `SessionType=${st} is neither Normal nor Discovery`);
    if (st === 'Discovery' && this.#cfg.discovery === false) return failure(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, 'discovery sessions are not offered here');
    if (st === 'Normal' && this.#cfg.normal === false) return failure(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, 'normal sessions are not offered here');
    const targetName = get('TargetName');
    if (st === 'Normal' && (targetName === undefined || targetName === ''))
      return failure(LoginStatus.MISSING_PARAMETER, 'TargetName missing from the first Login Request of a normal session');
    if (targetName !== undefined) {
      const badT = nameProblem('TargetName', targetName);
      if (badT !== null) return failure(LoginStatus.INITIATOR_ERROR, badT);
    }
    const s = this.#state;
    s.initiatorName = initiatorName;
    s.sessionType = st;
    s.targetName = targetName;
    const alias = get('InitiatorAlias');
    s.initiatorAlias = alias;
    if (this.#cfg.admit !== undefined) {
      const a = this.#cfg.admit({ initiatorName, initiatorAlias: alias, targetName, sessionType: st });
      if (!a.ok) return a;
      if (a.targetAlias !== undefined) this.#targetAlias = a.targetAlias;
      if (a.authMethods !== undefined) this.#authMethods = a.authMethods;
      if (a.authenticator !== undefined) this.#authenticator = a.authenticator;
      if (this.#authMethods.includes('CHAP') && this.#authenticator === undefined)
        return failure(LoginStatus.TARGET_ERROR, 'CHAP is required but no authenticator is configured');
    }
    return { ok: true };
  }

  #unpromptedOffers(): TextPair[] {
    const out: TextPair[] = [];
    const s = this.#state;
    const open = (key: KeyName): boolean => !s.results.has(key) && !this.#seen.has(key) && !this.#offered.has(key);
    const offer = (key: KeyName, value: string, answerNeeded: boolean): void => {
      this.#offered.add(key);
      out.push(p(key, value));
      if (answerNeeded) this.#pending.set(key, value);
      else s.results.set(key, value);
    };
    for (const key of ['HeaderDigest', 'DataDigest'] as const) {
      const accept = key === 'HeaderDigest' ? this.#op.headerDigest : this.#op.dataDigest;
      if (open(key) && !accept.includes('None')) offer(key, accept.join(','), true);
    }
    if (s.sessionType === 'Normal') {
      // AND with our No decides the result: no answer needed (§6.2.2).
      if (open('ImmediateData') && !this.#op.immediateData) offer('ImmediateData', 'No', false);
      if (open('MaxBurstLength') && this.#op.maxBurstLength < 262144) offer('MaxBurstLength', String(this.#op.maxBurstLength), true);
      const maxBurst = parseNumber(this.#pending.get('MaxBurstLength') ?? effective(s, 'MaxBurstLength'))!;
      const firstBurst = Math.min(this.#op.firstBurstLength, maxBurst);
      if (open('FirstBurstLength') && firstBurst < 65536 && !firstBurstIrrelevant(s)) offer('FirstBurstLength', String(firstBurst), true);
    }
    return out;
  }

  /** Process one full-feature-phase Text Request (complete pairs); see answerFullFeatureKeys. */
  receiveText(pairs: readonly TextPair[]): TextStep {
    if (!this.complete) return failure(LoginStatus.INITIATOR_ERROR, 'Text Request before the login completed');
    const r = answerFullFeatureKeys(pairs, buildParams(this.#state));
    if (r.ok) {
      this.#state.peerMaxRecv = r.parameters.maxXmitDataSegmentLength;
      this.#state.initiatorAlias = r.parameters.initiatorAlias;
    }
    return r;
  }
}

/**
 * The target's answer to a full-feature-phase Text Request (§6.2, §13), given the session's
 * parameters. MaxRecvDataSegmentLength (Use ALL, declarative) is the only operational key that can
 * change here: the initiator's new value becomes our maxXmitDataSegmentLength. InitiatorAlias is
 * recorded. SendTargets is handed back for the caller. Every other known key was fixed at login
 * (Use IO, LO, or security) and gets Reject; unknown keys get NotUnderstood.
 */
export function answerFullFeatureKeys(pairs: readonly TextPair[], params: SessionParameters): TextStep {
  const dup = duplicateKey(pairs);
  if (dup !== undefined) return failure(LoginStatus.INITIATOR_ERROR, `${dup} appears twice in one Text Request`);
  const out: TextPair[] = [];
  let sendTargets: string | undefined;
  let maxXmit = params.maxXmitDataSegmentLength;
  let alias = params.initiatorAlias;
  for (const [key, value] of pairs) {
    const def = keyDef(key);
    if (def === undefined) {
      out.push(p(key, isAuthMethodKey(key) ? 'Reject' : 'NotUnderstood'));
      continue;
    }
    if (def.sender === 'target') return failure(LoginStatus.INITIATOR_ERROR, `${key} may only be sent by a target`);
    if (isReservedValue(value)) return failure(LoginStatus.INITIATOR_ERROR, `${key}=${value}: ${value} is only an answer`);
    if (key === 'SendTargets') {
      sendTargets = value;
      continue;
    }
    if (key === 'MaxRecvDataSegmentLength') {
      const n = checkMaxRecv("the initiator's", value);
      if (typeof n === 'string') return failure(LoginStatus.INITIATOR_ERROR, n);
      maxXmit = n;
      continue;
    }
    if (key === 'InitiatorAlias') {
      alias = value;
      continue;
    }
    out.push(p(key, 'Reject'));
  }
  return { ok: true, answers: out, sendTargets, parameters: { ...params, maxXmitDataSegmentLength: maxXmit, initiatorAlias: alias } };
}

// ---------------------------------------------------------------------------------------------
// Initiator side

export interface InitiatorConfig extends OperationalConfig {
  readonly initiatorName: string;
  readonly initiatorAlias?: string;
  /** Required for a normal session. */
  readonly targetName?: string;
  readonly sessionType?: SessionType;
  /** The CHAP client when we authenticate; then the login starts in the security stage. */
  readonly auth?: LoginAuthClient;
  /** With `auth`, also offer AuthMethod None (target's choice). Default false. */
  readonly authOptional?: boolean;
  /** Our MaxConnections and ErrorRecoveryLevel offers are fixed: 1 and 0. */
}

/** One Login Request to send. */
export interface LoginRequestOut {
  readonly csg: LoginStage;
  readonly nsg: LoginStage;
  readonly transit: boolean;
  readonly pairs: TextPair[];
}

export type InitiatorLoginStep =
  | {
      readonly ok: true;
      /** The target moved to the full feature phase: the login succeeded. */
      readonly complete: boolean;
      /** The next request, when not complete. */
      readonly next: LoginRequestOut | undefined;
      /** Things the target did that the RFC frowns on but that we could live with. */
      readonly notes: readonly string[];
    }
  | NegotiationError;

/** Initiator-side login negotiation for one connection. */
export class InitiatorNegotiator {
  readonly #cfg: InitiatorConfig;
  readonly #op: ResolvedOperational;
  readonly #state: NegotiatedState = newState();
  #stage: LoginStage;
  #failed: NegotiationError | undefined;
  /** Our outstanding offers: key → offered value. */
  readonly #pending = new Map<string, string>();
  /** Every key the target sent in this login. */
  readonly #seen = new Set<string>();
  #clientAuth: 'not-started' | 'in-progress' | 'sent' | 'sent-mutual' | 'done' = 'not-started';
  #notes: string[] = [];

  constructor(config: InitiatorConfig) {
    this.#cfg = config;
    this.#op = resolveOperational(config, 'initiator');
    const st = config.sessionType ?? 'Normal';
    const bad = nameProblem('InitiatorName', config.initiatorName);
    if (bad !== null) throw new UsageError(bad);
    if (st === 'Normal' && config.targetName === undefined) throw new UsageError('a normal session needs a TargetName');
    const s = this.#state;
    s.sessionType = st;
    s.initiatorName = config.initiatorName;
    s.initiatorAlias = config.initiatorAlias;
    s.targetName = st === 'Normal' ? config.targetName : undefined; // a discovery login names no target
    this.#stage = config.auth !== undefined ? Stage.SECURITY_NEGOTIATION : Stage.LOGIN_OPERATIONAL_NEGOTIATION;
  }

  get complete(): boolean {
    return this.#stage === Stage.FULL_FEATURE_PHASE;
  }

  /** The parameters as agreed so far (final once `complete`). */
  parameters(): SessionParameters {
    return buildParams(this.#state);
  }

  /** The first Login Request. */
  start(): LoginRequestOut {
    const c = this.#cfg;
    const pairs: TextPair[] = [p('InitiatorName', c.initiatorName)];
    if (c.initiatorAlias !== undefined) pairs.push(p('InitiatorAlias', c.initiatorAlias));
    if (this.#state.sessionType === 'Normal') pairs.push(p('TargetName', c.targetName!));
    pairs.push(p('SessionType', this.#state.sessionType));
    if (this.#stage === Stage.SECURITY_NEGOTIATION) {
      const methods = c.authOptional === true ? 'CHAP,None' : 'CHAP';
      this.#pending.set('AuthMethod', methods);
      pairs.push(p('AuthMethod', methods));
      // T=1 as libiscsi does: a target that picks None may go straight on.
      return { csg: Stage.SECURITY_NEGOTIATION, nsg: Stage.LOGIN_OPERATIONAL_NEGOTIATION, transit: true, pairs };
    }
    pairs.push(...this.#operationalOffers());
    return { csg: Stage.LOGIN_OPERATIONAL_NEGOTIATION, nsg: Stage.FULL_FEATURE_PHASE, transit: true, pairs };
  }

  #operationalOffers(): TextPair[] {
    const op = this.#op;
    const out: TextPair[] = [];
    const offer = (key: KeyName, value: string): void => {
      this.#pending.set(key, value);
      out.push(p(key, value));
    };
    offer('HeaderDigest', op.headerDigest.join(','));
    offer('DataDigest', op.dataDigest.join(','));
    if (this.#state.sessionType === 'Normal') {
      offer('InitialR2T', formatBoolean(op.initialR2T));
      offer('ImmediateData', formatBoolean(op.immediateData));
      offer('MaxBurstLength', String(op.maxBurstLength));
      offer('FirstBurstLength', String(Math.min(op.firstBurstLength, op.maxBurstLength)));
      offer('MaxOutstandingR2T', String(op.maxOutstandingR2T));
      offer('MaxConnections', '1');
      offer('DataPDUInOrder', formatBoolean(op.dataPDUInOrder));
      offer('DataSequenceInOrder', formatBoolean(op.dataSequenceInOrder));
    }
    offer('DefaultTime2Wait', String(op.defaultTime2Wait));
    offer('DefaultTime2Retain', String(op.defaultTime2Retain));
    offer('ErrorRecoveryLevel', '0');
    this.#state.ourMaxRecv = op.maxRecvDataSegmentLength;
    out.push(p('MaxRecvDataSegmentLength', String(op.maxRecvDataSegmentLength)));
    return out;
  }

  /** Process one Login Response sequence (success status) and say what to send next. */
  receiveLogin(flags: LoginFlags, pairs: readonly TextPair[]): InitiatorLoginStep {
    if (this.#failed !== undefined) return this.#failed;
    const r = this.#receiveLogin(flags, pairs);
    if (!r.ok) this.#failed = r;
    return r;
  }

  #receiveLogin(flags: LoginFlags, pairs: readonly TextPair[]): InitiatorLoginStep {
    const { csg, nsg, transit } = flags;
    this.#notes = [];
    if (this.complete) return failure(LoginStatus.TARGET_ERROR, 'Login Response after the login completed');
    if (csg !== this.#stage) return failure(LoginStatus.TARGET_ERROR, `Login Response in stage ${csg}, we are in stage ${this.#stage}`);
    if (transit && ((nsg !== Stage.LOGIN_OPERATIONAL_NEGOTIATION && nsg !== Stage.FULL_FEATURE_PHASE) || nsg <= csg)) {
      return failure(LoginStatus.TARGET_ERROR, `T=1 from CSG ${csg} to NSG ${nsg}`);
    }
    const dup = duplicateKey(pairs);
    if (dup !== undefined) return failure(LoginStatus.TARGET_ERROR, `${dup} appears twice in one response`);

    const answers: TextPair[] = [];
    const authPairs: TextPair[] = [];
    let startAuth = false;
    for (const pr of pairs) {
      const [key, value] = pr;
      if (isAuthMethodKey(key)) {
        if (csg !== Stage.SECURITY_NEGOTIATION) return failure(LoginStatus.TARGET_ERROR, `${key} outside the security stage`);
        authPairs.push(pr);
        continue;
      }
      if (this.#seen.has(key)) return failure(LoginStatus.TARGET_ERROR, `${key} was already sent by the target in this login`);
      this.#seen.add(key);
      const def = keyDef(key);
      const offered = this.#pending.get(key);
      if (offered !== undefined) {
        this.#pending.delete(key);
        const ev = evaluateAnswer(key, def!, offered, value);
        if ('error' in ev) return failure(LoginStatus.TARGET_ERROR, ev.error);
        if (ev.note !== undefined) this.#notes.push(ev.note);
        if (key === 'AuthMethod') {
          if (ev.result === undefined) return failure(LoginStatus.AUTHENTICATION_FAILURE, `the target answered AuthMethod=${value}`);
          this.#state.authMethod = ev.result as AuthMethodName;
          if (ev.result === 'CHAP') startAuth = true;
          else this.#clientAuth = 'done';
          continue;
        }
        if (ev.result !== undefined) this.#state.results.set(key, ev.result);
        else {
          this.#state.results.delete(key);
          const policy = policyFor(key, this.#op, this.#authMethods())!;
          // Irrelevant: the value does not matter here. Reject: the default applies, if we can.
          if (value !== 'Irrelevant' && def!.default !== undefined && !acceptable(def!, def!.default, policy)) {
            return failure(LoginStatus.TARGET_ERROR, `${key}: the target answered ${value} to ${offered}, and the default ${def!.default} is not acceptable`);
          }
        }
        continue;
      }
      if (def === undefined) {
        answers.push(p(key, 'NotUnderstood'));
        continue;
      }
      if (def.sender === 'initiator') return failure(LoginStatus.TARGET_ERROR, `${key} may only be sent by an initiator`);
      if (isReservedValue(value)) return failure(LoginStatus.TARGET_ERROR, `${key}=${value} answers nothing we offered`);
      switch (key) {
        case 'TargetAlias':
          this.#state.targetAlias = value;
          continue;
        case 'TargetAddress':
          continue; // redirection is the caller's business (status class 1)
        case 'TargetPortalGroupTag': {
          const n = parseNumber(value);
          if (n === null || n > 65535) return failure(LoginStatus.TARGET_ERROR, `TargetPortalGroupTag=${value} is not a 16-bit value`);
          this.#state.targetPortalGroupTag = n;
          continue;
        }
        case 'MaxRecvDataSegmentLength': {
          const n = checkMaxRecv("the target's", value);
          if (typeof n === 'string') return failure(LoginStatus.TARGET_ERROR, n);
          this.#state.peerMaxRecv = n;
          continue;
        }
        case 'X#NodeArchitecture':
          continue;
        default:
          break;
      }
      // A target offer: answer it in our next request.
      if (def.use === 'SEC' || def.use === 'FFPO') return failure(LoginStatus.TARGET_ERROR, `the target offered ${key}`);
      if (ISER_SEGMENT_KEYS.has(key) || (this.#state.sessionType === 'Discovery' && def.irrelevantInDiscovery)) {
        answers.push(p(key, 'Irrelevant'));
        continue;
      }
      let policy = policyFor(key, this.#op, this.#authMethods())!;
      if (key === 'FirstBurstLength') {
        if (firstBurstIrrelevant(this.#state)) {
          answers.push(p(key, 'Irrelevant'));
          continue;
        }
        const maxBurst = parseNumber(effective(this.#state, 'MaxBurstLength'))!;
        policy = { kind: 'number', value: Math.min(this.#op.firstBurstLength, maxBurst) };
      }
      const r = respond(key, def, value, policy);
      if ('error' in r) return failure(LoginStatus.TARGET_ERROR, r.error);
      if (r.result !== undefined) this.#state.results.set(key, r.result);
      else if (def.default !== undefined && !acceptable(def, def.default, policy)) {
        return failure(LoginStatus.TARGET_ERROR, `${key}=${value}: nothing acceptable offered, and the default ${def.default} is not acceptable`);
      }
      answers.push(p(key, r.answer));
    }

    // Authentication.
    if (startAuth) {
      if (authPairs.length > 0) return failure(LoginStatus.TARGET_ERROR, `${authPairs[0]![0]} before we sent CHAP_A`);
      this.#clientAuth = 'in-progress';
      answers.push(...this.#cfg.auth!.start());
    } else if (authPairs.length > 0) {
      if (this.#clientAuth === 'not-started' || this.#clientAuth === 'done') {
        return failure(LoginStatus.TARGET_ERROR, `${authPairs[0]![0]} without AuthMethod=CHAP agreed`);
      }
      const step = this.#cfg.auth!.step(authPairs);
      if (step.status === 'failure') return failure(step.loginStatus, step.reason);
      answers.push(...step.pairs);
      // 'success' with pairs: our response (one-way CHAP) still goes out, and the target's transit
      // will say it was accepted. 'success' without pairs: mutual CHAP, the target proved itself.
      if (step.status === 'success') this.#clientAuth = step.pairs.length > 0 ? 'sent' : 'done';
      else if (step.pairs.some((x) => x[0] === 'CHAP_R')) this.#clientAuth = 'sent-mutual';
    }

    if (transit) {
      if (answers.length > 0) {
        return failure(LoginStatus.TARGET_ERROR, `the target moved to stage ${nsg} while we still had to answer ${answers.map((a) => a[0]).join(', ')}`);
      }
      if (csg === Stage.SECURITY_NEGOTIATION) {
        if (this.#pending.has('AuthMethod')) {
          // The target never answered AuthMethod: its default, None, applies.
          this.#pending.delete('AuthMethod');
          if (this.#cfg.authOptional !== true) return failure(LoginStatus.AUTHENTICATION_FAILURE, 'the target skipped the authentication we require');
          this.#state.authMethod = 'None';
          this.#clientAuth = 'done';
        }
        if (this.#clientAuth === 'sent-mutual')
          return failure(LoginStatus.AUTHENTICATION_FAILURE, 'the target ended the security stage without answering our CHAP challenge');
        if (this.#clientAuth === 'in-progress') return failure(LoginStatus.AUTHENTICATION_FAILURE, 'the target ended the security stage before CHAP completed');
        this.#clientAuth = 'done';
      }
      this.#stage = nsg as LoginStage;
      if (this.#stage === Stage.FULL_FEATURE_PHASE) {
        this.#settleUnanswered();
        return { ok: true, complete: true, next: undefined, notes: this.#notes };
      }
      // Now in the operational stage: make our offers.
      return {
        ok: true,
        complete: false,
        next: { csg: Stage.LOGIN_OPERATIONAL_NEGOTIATION, nsg: Stage.FULL_FEATURE_PHASE, transit: true, pairs: this.#operationalOffers() },
        notes: this.#notes,
      };
    }

    // Same stage again. We ask to move on in every request except the one carrying CHAP_A (the
    // target still has to challenge us), as libiscsi does.
    const stage = this.#stage;
    const t = !answers.some((a) => a[0] === 'CHAP_A');
    const next = stage === Stage.SECURITY_NEGOTIATION ? Stage.LOGIN_OPERATIONAL_NEGOTIATION : Stage.FULL_FEATURE_PHASE;
    return { ok: true, complete: false, next: { csg: stage, nsg: t ? next : stage, transit: t, pairs: answers }, notes: this.#notes };
  }

  #authMethods(): readonly AuthMethodName[] {
    if (this.#cfg.auth === undefined) return ['None'];
    return this.#cfg.authOptional === true ? ['CHAP', 'None'] : ['CHAP'];
  }

  /**
   * Offers the target never answered (LIO leaves out answers the RFC makes optional). Booleans the
   * offer decided keep that value; other offers stand as made, except a digest list, which falls
   * back to None when we offered it (the safer guess: a digest mismatch kills the connection).
   */
  #settleUnanswered(): void {
    for (const [key, offered] of this.#pending) {
      const def = keyDef(key)!;
      if (def.kind === 'list') {
        const ours = splitList(offered) ?? [];
        const v = def.default !== undefined && ours.includes(def.default) ? def.default : ours[0]!;
        this.#state.results.set(key, v);
      } else {
        this.#state.results.set(key, offered);
      }
      this.#notes.push(`${key}=${offered} was not answered`);
    }
    this.#pending.clear();
  }

  /** A full-feature Text Request redeclaring our MaxRecvDataSegmentLength. */
  maxRecvDataSegmentLengthText(n: number): TextPair[] {
    checkRange('MaxRecvDataSegmentLength', n, 512, MAX_24);
    this.#state.ourMaxRecv = n;
    return [p('MaxRecvDataSegmentLength', String(n))];
  }

  /**
   * A full-feature Text Response: takes the target's MaxRecvDataSegmentLength declaration and
   * returns the other pairs (SendTargets results, answers) for the caller.
   */
  receiveText(pairs: readonly TextPair[]): { readonly ok: true; readonly other: TextPair[] } | NegotiationError {
    const other: TextPair[] = [];
    for (const pr of pairs) {
      if (pr[0] === 'MaxRecvDataSegmentLength') {
        const n = checkMaxRecv("the target's", pr[1]);
        if (typeof n === 'string') return failure(LoginStatus.TARGET_ERROR, n);
        this.#state.peerMaxRecv = n;
      } else {
        other.push(pr);
      }
    }
    return { ok: true, other };
  }
}
