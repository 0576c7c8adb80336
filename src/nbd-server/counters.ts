// What the NBD server counts: every option or request it refused, and every connection it dropped,
// lands in one of these (and in a log line), never in a crash. Tests read them to check that bad
// input was seen for what it was.
export interface NbdServerCounters {
  connectionsAccepted: number;
  /** Plain connections refused by --tls require, failed TLS handshakes, peers refused by the socket rules. */
  connectionsRefused: number;
  /** Connections that reached the transmission phase (NBD_OPT_GO or NBD_OPT_EXPORT_NAME). */
  handshakesCompleted: number;
  tlsHandshakes: number;
  tlsFailures: number;
  optionsReceived: number;
  /** Options answered with an NBD_REP_ERR_* (unknown option, bad data, unknown export, TLS required...). */
  optionErrors: number;
  /** Option data longer than we accept: skipped unread and answered NBD_REP_ERR_TOO_BIG. */
  optionsTooBig: number;
  requests: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests refused before reaching the store, by reason. */
  unknownCommand: number;
  badFlags: number;
  outOfRange: number;
  unaligned: number;
  tooLarge: number;
  readOnlyWrites: number;
  notNegotiated: number;
  /** Store operations that failed (answered EIO or the store's errno). */
  ioErrors: number;
  /** Connections dropped because the stream could not be followed (bad magic, oversized write). */
  framingErrors: number;
  /** Handshake byte streams that broke the rules (bad client flags, bad magic, unknown export on EXPORT_NAME). */
  handshakeErrors: number;
  /** Connections closed by the client while replies were still owed. */
  disconnectsWithRequestsInFlight: number;
}

export type CounterName = keyof NbdServerCounters;

export function newNbdServerCounters(): NbdServerCounters {
  return {
    connectionsAccepted: 0,
    connectionsRefused: 0,
    handshakesCompleted: 0,
    tlsHandshakes: 0,
    tlsFailures: 0,
    optionsReceived: 0,
    optionErrors: 0,
    optionsTooBig: 0,
    requests: 0,
    bytesRead: 0,
    bytesWritten: 0,
    unknownCommand: 0,
    badFlags: 0,
    outOfRange: 0,
    unaligned: 0,
    tooLarge: 0,
    readOnlyWrites: 0,
    notNegotiated: 0,
    ioErrors: 0,
    framingErrors: 0,
    handshakeErrors: 0,
    disconnectsWithRequestsInFlight: 0,
  };
}

/** Logs the first few of each kind, then one in 1000, so a hostile client cannot flood the log. */
export class ProblemLog {
  readonly #log: (line: string) => void;
  readonly #seen = new Map<string, number>();

  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  report(kind: string, line: string): void {
    const seen = (this.#seen.get(kind) ?? 0) + 1;
    this.#seen.set(kind, seen);
    if (seen <= 10) this.#log(line);
    else if (seen % 1000 === 0) this.#log(`${line} (${seen} of this kind so far; most not logged)`);
  }
}

const COUNTER_NAMES = Object.keys(newNbdServerCounters()) as CounterName[];

/** Memory for one worker's counters, shared with the main thread. */
export function newSharedCounterMemory(): SharedArrayBuffer {
  return new SharedArrayBuffer(COUNTER_NAMES.length * Float64Array.BYTES_PER_ELEMENT);
}

/**
 * Counters kept in shared memory: a transmission worker counts into them and the main thread
 * reads them as they change (one writer each; a counter is bumped before the answer it concerns
 * is sent, so a client that got the answer finds it counted).
 */
export function countersIn(memory: SharedArrayBuffer): NbdServerCounters {
  const cells = new Float64Array(memory);
  const counters = {} as NbdServerCounters;
  COUNTER_NAMES.forEach((name, i) => {
    Object.defineProperty(counters, name, {
      enumerable: true,
      get: () => cells[i]!,
      set: (value: number) => {
        cells[i] = value;
      },
    });
  });
  return counters;
}

/** The whole server's counters: this thread's own plus every worker's (a write lands in `own`). */
export function summedCounters(own: NbdServerCounters, workers: () => readonly NbdServerCounters[]): NbdServerCounters {
  const counters = {} as NbdServerCounters;
  for (const name of COUNTER_NAMES) {
    const total = (): number => {
      let sum = own[name];
      for (const w of workers()) sum += w[name];
      return sum;
    };
    Object.defineProperty(counters, name, {
      enumerable: true,
      get: total,
      set: (value: number) => {
        own[name] += value - total();
      },
    });
  }
  return counters;
}
