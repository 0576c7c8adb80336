// Text Requests in full feature phase (RFC 7143 §11.10): SendTargets (discovery, §C of RFC 7143 and
// §4.3) and the few keys that may be renegotiated after login (MaxRecvDataSegmentLength).
import { decodeText, encodeText } from '../iscsi/text.ts';
import { answerFullFeatureKeys } from '../iscsi/negotiation.ts';
import type { TargetSession } from './session.ts';

/** What discovery needs to know of the target. */
export interface TextHost {
  readonly config: { readonly targetName: string; readonly advertise: string; readonly portalGroupTag: number };
  /** May this initiator log in to the target? Discovery shows the target only to those that may. */
  isAllowed(initiatorName: string): boolean;
  log(line: string): void;
}

export function answerTextRequest(target: TextHost, session: TargetSession, request: Uint8Array): Uint8Array {
  const decoded = decodeText(request);
  if (!decoded.ok) {
    target.log(`iscsi: ${session.describe()}: bad text request: ${decoded.error.message}`);
    return encodeText([]);
  }
  const answers: [string, string][] = [];
  const others: (readonly [string, string])[] = [];
  for (const pair of decoded.pairs) {
    if (pair[0] === 'SendTargets') sendTargets(target, session, pair[1], answers);
    else others.push(pair);
  }
  if (others.length > 0) {
    const r = answerFullFeatureKeys(others, session.params);
    if (!r.ok) {
      target.log(`iscsi: ${session.describe()}: text request refused: ${r.reason}`);
      for (const [key] of others) answers.push([key, 'Reject']);
    } else {
      session.params = r.parameters;
      for (const a of r.answers) answers.push([a[0], a[1]]);
    }
  }
  return encodeText(answers);
}

/** The targets this initiator may see, with where to reach them (TargetName, TargetAddress). */
function sendTargets(target: TextHost, session: TargetSession, which: string, answers: [string, string][]): void {
  const cfg = target.config;
  const discovery = session.sessionType === 'Discovery';
  let wanted: boolean;
  if (which === 'All') {
    if (!discovery) {
      // "All" is for discovery sessions (RFC 7143 §12.3 ... a normal session may only ask about its own target)
      answers.push(['SendTargets', 'Reject']);
      return;
    }
    wanted = true;
  } else if (which === '') {
    // a normal session's own target; in a discovery session, the same as All
    wanted = true;
  } else {
    wanted = which.toLowerCase() === cfg.targetName.toLowerCase();
  }
  if (!wanted || !target.isAllowed(session.nexus.initiatorName)) return;
  answers.push(['TargetName', cfg.targetName]);
  answers.push(['TargetAddress', `${cfg.advertise},${cfg.portalGroupTag}`]);
}
