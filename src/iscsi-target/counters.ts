// What the target counts, for `blkback ctl stats` and the hostile-initiator test: every PDU that was
// refused or dropped lands in one of these, never in a crash.
export interface TargetCounters {
  /** PDUs read off the wire (whole ones, digest errors included). */
  pdusIn: number;
  connectionsAccepted: number;
  connectionsRefused: number;
  loginsSucceeded: number;
  loginsFailed: number;
  commands: number;
  checkConditions: number;
  r2ts: number;
  taskManagement: number;
  tasksAborted: number;
  /** Non-immediate PDUs whose CmdSN lay outside [ExpCmdSN, MaxCmdSN] (dropped, §4.2.2.1). */
  cmdSNOutsideWindow: number;
  /** Commands an ABORT TASK named before they arrived (dropped when they did). */
  abortedAhead: number;
  /** Data-Out for a task or TTT we do not know (aborted tasks' late data, or made up). */
  dataOutForUnknownTask: number;
  protocolErrors: number;
  /** Data-Out PDUs with a wrong DataSN, offset or length: their command failed, the connection stayed. */
  dataSequenceErrors: number;
  digestErrors: number;
  framingErrors: number;
  /** Connections closed because the initiator did not answer our NOP-In in time. */
  nopTimeouts: number;
  /** Connections closed because login did not finish in time. */
  loginTimeouts: number;
}

export function newTargetCounters(): TargetCounters {
  return {
    pdusIn: 0,
    connectionsAccepted: 0,
    connectionsRefused: 0,
    loginsSucceeded: 0,
    loginsFailed: 0,
    commands: 0,
    checkConditions: 0,
    r2ts: 0,
    taskManagement: 0,
    tasksAborted: 0,
    cmdSNOutsideWindow: 0,
    abortedAhead: 0,
    dataOutForUnknownTask: 0,
    protocolErrors: 0,
    dataSequenceErrors: 0,
    digestErrors: 0,
    framingErrors: 0,
    nopTimeouts: 0,
    loginTimeouts: 0,
  };
}
