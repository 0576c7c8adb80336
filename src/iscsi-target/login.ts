// The target's side of the login phase (RFC 7143 §6.3, §11.12-11.13) for one connection, at the PDU
// level: the fields that must stay the same through a login (ISID, TSIH, ITT, CID), versions, text
// continued over several PDUs (C bit) either way, and whether the target may be logged in to at all
// (its name, the ACL). Keys, stages and CHAP are the negotiator's (negotiation.ts, chap.ts). Each
// Login Request gets one Login Response; the final one (T bit, NSG full feature phase) is sent by
// the connection once the target has admitted the session and given it a TSIH. A failure answers
// with its status class and detail, and the connection then closes.
import { randomBytes } from 'node:crypto';
import { Bhs, opcodeOf, u16, u32 } from '../iscsi/bhs.ts';
import { Flag, ISCSI_VERSION, LoginStatus, Opcode, Stage } from '../iscsi/constants.ts';
import type { PduWriter } from '../iscsi/pdu-writer.ts';
import { TargetNegotiator } from '../iscsi/negotiation.ts';
import type { NegotiationError, SessionParameters, TargetAdmission } from '../iscsi/negotiation.ts';
import { ChapAuthenticator } from '../iscsi/chap.ts';
import type { ChapSecrets } from '../iscsi/chap.ts';
import { TextAccumulator, decodeText, encodeText } from '../iscsi/text.ts';
import type { ItNexus } from '../scsi/types.ts';
import { sendLoginResponse } from './pdus.ts';
import { iscsiNexus } from './nexus.ts';
import type { NegotiationOffer } from '../iscsi/negotiation.ts';

/** CHAP as the target is configured: the initiators' accounts, and our own for mutual CHAP. */
export interface ChapConfig {
  readonly initiators: ChapSecrets;
  readonly target?: ChapSecrets;
}

/** What a login needs from the target it is for. */
export interface LoginHost {
  readonly config: {
    readonly targetName: string;
    readonly chap?: ChapConfig;
    readonly offer: NegotiationOffer;
    /** Commands a session may have in flight: the login's MaxCmdSN leaves room for them. */
    readonly queueDepth: number;
  };
  /** May this initiator log in to the target (the ACL)? */
  isAllowed(initiatorName: string): boolean;
  /** The session with this TSIH, for a login that names one. */
  sessionByTsih(tsih: number): unknown;
}

/** What a successful login hands the target to make a session from. */
export interface LoginSucceeded {
  readonly kind: 'succeeded';
  readonly nexus: ItNexus;
  readonly isid: Uint8Array;
  readonly sessionType: 'Normal' | 'Discovery';
  readonly targetName: string;
  readonly cid: number;
  readonly parameters: SessionParameters;
  /** The first CmdSN of the full feature phase. */
  readonly expCmdSN: number;
  /** The StatSN after the final Login Response. */
  readonly nextStatSN: number;
  /** e.g. "CHAP user1, HeaderDigest=CRC32C, MaxRecvDataSegmentLength 262144/262144" for the log. */
  readonly summary: string;
  /** Sends the final Login Response (T=1, NSG=3) with the session's TSIH. */
  sendFinalResponse(writer: PduWriter, tsih: number): void;
}

export type LoginOutcome = { readonly kind: 'continue' } | { readonly kind: 'failed'; readonly reason: string } | LoginSucceeded;

/** An answer being sent, possibly over several PDUs. */
interface PendingAnswer {
  rest: Uint8Array;
  readonly transit: boolean;
  readonly csg: number;
  readonly nsg: number;
  readonly complete: boolean;
}

const CONTINUE: LoginOutcome = { kind: 'continue' };
/** Login PDUs carry at most 8192 bytes of data either way (§13.12: the login default). */
const LOGIN_SEGMENT = 8192;

export class LoginPhase {
  readonly #target: LoginHost;
  readonly #peer: string;
  #first = true;
  #isid = new Uint8Array(6);
  #itt = 0;
  #cid = 0;
  #cmdSN = 0;
  #statSN: number;
  /** The stage the next request must be in. */
  #stage: number = Stage.SECURITY_NEGOTIATION;
  readonly #negotiator: TargetNegotiator;
  readonly #text = new TextAccumulator(64 * 1024);
  /** The rest of an answer too long for one PDU, sent as the initiator asks with empty requests. */
  #pendingAnswer: PendingAnswer | undefined;
  #ended = false;

  constructor(target: LoginHost, peer: string) {
    this.#target = target;
    this.#peer = peer;
    this.#statSN = randomBytes(4).readUInt32BE(0);
    const cfg = target.config;
    const chap = cfg.chap;
    this.#negotiator = new TargetNegotiator({
      ...cfg.offer,
      authMethods: chap === undefined ? ['None'] : ['CHAP'],
      ...(chap === undefined
        ? {}
        : {
            authenticator: new ChapAuthenticator({
              initiators: chap.initiators,
              ...(chap.target === undefined ? {} : { target: chap.target }),
              random: (n) => randomBytes(n),
            }),
          }),
      admit: (who) => this.#admit(who.initiatorName, who.targetName, who.sessionType),
    });
  }

  /** May this initiator log in to what it names? (Target name, ACL.) */
  #admit(initiatorName: string, targetName: string | undefined, sessionType: 'Normal' | 'Discovery'): TargetAdmission | NegotiationError {
    const cfg = this.#target.config;
    if (sessionType === 'Discovery') return { ok: true };
    if (targetName === undefined || targetName.toLowerCase() !== cfg.targetName.toLowerCase()) {
      return {
        ok: false,
        status: LoginStatus.NOT_FOUND,
        reason: `${initiatorName} asked for target ${targetName ?? '(none)'}, which is not served here (${cfg.targetName} is)`,
      };
    }
    if (!this.#target.isAllowed(initiatorName)) {
      return { ok: false, status: LoginStatus.AUTHORIZATION_FAILURE, reason: `${initiatorName} is not allowed (--allow) to log in to ${cfg.targetName}` };
    }
    return { ok: true };
  }

  receive(h: Uint8Array, data: Uint8Array | null, length: number, w: PduWriter): LoginOutcome {
    if (this.#ended) return { kind: 'failed', reason: 'login already over' };
    if (opcodeOf(h) !== Opcode.LOGIN_REQUEST)
      return this.#fail(w, LoginStatus.INITIATOR_ERROR, `opcode 0x${opcodeOf(h).toString(16)} before the login finished`, h);
    const flags = h[Bhs.FLAGS] as number;
    const transit = (flags & Flag.T) !== 0;
    const continued = (flags & Flag.C) !== 0;
    const csg = (flags >>> 2) & 3;
    const nsg = flags & 3;
    const isid = h.subarray(Bhs.ISID, Bhs.ISID + 6);
    const tsih = u16(h, Bhs.TSIH);
    const itt = u32(h, Bhs.ITT);
    const cid = u16(h, Bhs.CID);
    if (this.#first) {
      this.#first = false;
      this.#isid = Uint8Array.from(isid);
      this.#itt = itt;
      this.#cid = cid;
      this.#cmdSN = u32(h, Bhs.WORD24);
      this.#stage = csg;
      const versionMax = h[Bhs.BYTE2] as number;
      const versionMin = h[Bhs.BYTE3] as number;
      if (versionMin > ISCSI_VERSION || versionMax < ISCSI_VERSION) {
        return this.#fail(w, LoginStatus.UNSUPPORTED_VERSION, `iSCSI versions ${versionMin}..${versionMax} do not include 0`, h);
      }
      if (tsih !== 0) {
        // A connection for an existing session: we keep one connection per session (MaxConnections=1).
        return this.#target.sessionByTsih(tsih) === undefined
          ? this.#fail(w, LoginStatus.SESSION_DOES_NOT_EXIST, `TSIH ${tsih} names no session`, h)
          : this.#fail(w, LoginStatus.TOO_MANY_CONNECTIONS, `session ${tsih} already has its one connection (MaxConnections=1)`, h);
      }
    } else if (!sameBytes(isid, this.#isid) || tsih !== 0 || itt !== this.#itt || cid !== this.#cid) {
      return this.#fail(w, LoginStatus.INITIATOR_ERROR, 'ISID, TSIH, ITT or CID changed during the login', h);
    }
    if (csg !== this.#stage) return this.#fail(w, LoginStatus.INITIATOR_ERROR, `a Login Request in stage ${csg} where stage ${this.#stage} was expected`, h);
    if (transit && continued) return this.#fail(w, LoginStatus.INITIATOR_ERROR, 'both the T and C bits set', h);
    if (data !== null && !this.#text.push(data.subarray(0, length))) return this.#fail(w, LoginStatus.INITIATOR_ERROR, 'login text longer than 64 KiB', h);
    if (continued) {
      // more text follows: an empty response asks for it (§11.12.2)
      this.#respond(w, false, false, csg, csg, LoginStatus.SUCCESS, null);
      return CONTINUE;
    }
    if (this.#pendingAnswer !== undefined) {
      if (this.#text.length > 0) return this.#fail(w, LoginStatus.INITIATOR_ERROR, 'new keys while our long answer was still being sent', h);
      return this.#sendAnswer(w, h);
    }
    const decoded = decodeText(this.#text.take());
    if (!decoded.ok) return this.#fail(w, LoginStatus.INITIATOR_ERROR, `login text: ${decoded.error.message}`, h);
    const step = this.#negotiator.receiveLogin({ csg, nsg, transit }, decoded.pairs);
    if (!step.ok) return this.#fail(w, step.status, step.reason, h);
    this.#pendingAnswer = { rest: encodeText(step.answers), transit: step.transit, csg: step.csg, nsg: step.nsg, complete: step.complete };
    return this.#sendAnswer(w, h);
  }

  /** Sends the answer, or its next 8 KiB with the C bit while more follows (§11.13.2). */
  #sendAnswer(w: PduWriter, h: Uint8Array): LoginOutcome {
    const a = this.#pendingAnswer as PendingAnswer;
    if (a.rest.byteLength > LOGIN_SEGMENT) {
      let cut = LOGIN_SEGMENT;
      while (cut > 0 && a.rest[cut - 1] !== 0) cut--;
      if (cut === 0) return this.#fail(w, LoginStatus.TARGET_ERROR, 'an answer key longer than a login PDU', h);
      const part = a.rest.subarray(0, cut);
      a.rest = a.rest.subarray(cut);
      this.#respond(w, false, true, a.csg, a.csg, LoginStatus.SUCCESS, part);
      return CONTINUE;
    }
    this.#pendingAnswer = undefined;
    if (!a.complete) {
      this.#respond(w, a.transit, false, a.csg, a.nsg, LoginStatus.SUCCESS, a.rest);
      if (a.transit) this.#stage = a.nsg;
      return CONTINUE;
    }
    return this.#succeed(a.csg, a.rest);
  }

  /** The login is complete: the final answer waits for the target to admit the session (it carries the TSIH). */
  #succeed(csg: number, text: Uint8Array): LoginSucceeded {
    this.#ended = true;
    const parameters = this.#negotiator.parameters();
    const isid = this.#isid;
    const statSN = this.#statSN;
    const expCmdSN = this.#cmdSN;
    const itt = this.#itt;
    const queueDepth = this.#target.config.queueDepth;
    const chapUser = this.#negotiator.chapUser;
    return {
      kind: 'succeeded',
      nexus: iscsiNexus(parameters.initiatorName, isid),
      isid,
      sessionType: parameters.sessionType,
      targetName: parameters.sessionType === 'Normal' ? this.#target.config.targetName : '',
      cid: this.#cid,
      parameters,
      expCmdSN,
      nextStatSN: (statSN + 1) >>> 0,
      summary: summarize(chapUser, parameters),
      sendFinalResponse: (writer, tsih) => {
        sendLoginResponse(
          writer,
          {
            transit: true,
            continued: false,
            csg,
            nsg: Stage.FULL_FEATURE_PHASE,
            versionMax: ISCSI_VERSION,
            versionActive: ISCSI_VERSION,
            isid,
            tsih,
            itt,
            statSN,
            expCmdSN,
            maxCmdSN: (expCmdSN + queueDepth - 1) >>> 0,
            status: LoginStatus.SUCCESS,
          },
          text,
        );
      },
    };
  }

  #respond(w: PduWriter, transit: boolean, continued: boolean, csg: number, nsg: number, status: number, text: Uint8Array | null): void {
    const statSN = this.#statSN;
    this.#statSN = (this.#statSN + 1) >>> 0;
    sendLoginResponse(
      w,
      {
        transit,
        continued,
        csg,
        nsg,
        versionMax: ISCSI_VERSION,
        versionActive: ISCSI_VERSION,
        isid: this.#isid,
        tsih: 0,
        itt: this.#itt,
        statSN,
        expCmdSN: this.#cmdSN,
        maxCmdSN: (this.#cmdSN + this.#target.config.queueDepth - 1) >>> 0,
        status,
      },
      text,
    );
  }

  #fail(w: PduWriter, status: number, reason: string, h: Uint8Array): LoginOutcome {
    this.#ended = true;
    if (this.#first) {
      this.#isid = Uint8Array.from(h.subarray(Bhs.ISID, Bhs.ISID + 6));
      this.#itt = u32(h, Bhs.ITT);
    }
    const csg = this.#stage & 1;
    this.#respond(w, false, false, csg, csg, status, null);
    const who = this.#negotiator.identity?.initiatorName;
    return {
      kind: 'failed',
      reason: `${who === undefined ? '' : `${who} `}from ${this.#peer}: ${reason} (login status 0x${status.toString(16).padStart(4, '0')})`,
    };
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function summarize(chapUser: string | undefined, p: SessionParameters): string {
  const parts = [chapUser === undefined ? 'no authentication' : `CHAP user ${chapUser}`];
  if (p.headerDigest) parts.push('HeaderDigest=CRC32C');
  if (p.dataDigest) parts.push('DataDigest=CRC32C');
  if (p.sessionType === 'Normal') {
    parts.push(`MaxRecvDataSegmentLength ${p.maxRecvDataSegmentLength}/${p.maxXmitDataSegmentLength}`);
    parts.push(`ImmediateData=${p.immediateData ? 'Yes' : 'No'} InitialR2T=${p.initialR2T ? 'Yes' : 'No'}`);
    parts.push(`FirstBurstLength ${p.firstBurstLength} MaxBurstLength ${p.maxBurstLength} MaxOutstandingR2T ${p.maxOutstandingR2T}`);
  }
  return parts.join(', ');
}
