// Unit attention conditions (SAM-5 §5.14, SPC-4 §5.11): queued per logical unit and I_T nexus,
// reported one at a time as CHECK CONDITION / UNIT ATTENTION on the next command other than
// INQUIRY, REPORT LUNS and REQUEST SENSE (which returns it as sense data), and cleared once reported.
//
// Each condition is an ASC/ASCQ pair packed as in constants.ts Asc. The queue is short and bounded:
// a condition already queued is not queued twice, and past the bound the oldest lower-priority
// entries give way (SAM-5 lets a device server report only the most important ones).
import type { ItNexus } from './types.ts';
import { Asc } from './constants.ts';

const MAX_PENDING = 8;

/** What a logical unit keeps for one I_T nexus. */
export class NexusState {
  readonly nexus: ItNexus;
  /** Pending unit attentions, oldest first; null when there are none (the hot-path check). */
  ua: number[] | null = null;

  constructor(nexus: ItNexus) {
    this.nexus = nexus;
  }

  establish(code: number): void {
    const q = (this.ua ??= []);
    // A reset supersedes everything queued before it (the initiator must recover from it anyway).
    if (isReset(code)) q.length = 0;
    if (q.includes(code)) return;
    if (q.length >= MAX_PENDING) q.shift();
    q.push(code);
  }

  /** Takes the oldest pending condition (0 when none). */
  take(): number {
    const q = this.ua;
    if (q === null) return 0;
    const code = q.shift() ?? 0;
    if (q.length === 0) this.ua = null;
    return code;
  }

  clear(): void {
    this.ua = null;
  }
}

function isReset(code: number): boolean {
  return code === Asc.POWER_ON_OCCURRED || code === Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED || code === Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED;
}
