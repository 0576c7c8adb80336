// The I_T nexus of an iSCSI session (SAM-5 §4.6.3, RFC 7143 §4.2.7.6): the initiator port is the
// initiator's name plus the session's ISID, so a re-login with the same ISID is the same nexus.
import type { ItNexus } from '../scsi/types.ts';

export function iscsiNexus(initiatorName: string, isid: Uint8Array, relativeTargetPort = 1): ItNexus {
  const isidHex = Buffer.from(isid).toString('hex');
  const port = `${initiatorName},i,0x${isidHex}`;
  return { key: port, initiatorName, initiatorPortName: port, relativeTargetPort };
}
