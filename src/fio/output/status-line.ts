// fio's live status line (eta.c display_thread_status), e.g.
//   Jobs: 4 (f=4): [w(4)][45.0%][w=1638MiB/s][w=26.2k IOPS][eta 00m:11s]
// and the writer that keeps it on one rewritten terminal line, or prints it now and then otherwise.
import type { Writable } from 'node:stream';
import type { FioJob } from '../job.ts';
import { N2S, cFloat, num2str } from './num2str.ts';

export interface StatusInput {
  readonly jobsRunning: number;
  /** Files open (fio's f=); default jobsRunning. */
  readonly filesOpen?: number;
  /** One state character per job (thread_number order), see jobStateChar; condensed as fio does. */
  readonly runChars: string;
  /** 0..100, or null while unknown (printed "-.-%"). */
  readonly percentDone: number | null;
  /** Current rates, bytes/s and I/Os per second. */
  readonly readBps: number;
  readonly writeBps: number;
  readonly trimBps?: number;
  readonly readIops: number;
  readonly writeIops: number;
  readonly trimIops?: number;
  /** Seconds left, or null when unknown (printed "--"). */
  readonly etaSeconds: number | null;
  /** rate_iops limits summed over running jobs, shown as ", min-max IOPS". */
  readonly iopsLimit?: readonly [min: number, max: number];
  /** rate limits (bytes/s) summed over running jobs, shown as ", min-max". */
  readonly bpsLimit?: readonly [min: number, max: number];
  /** kb_base of the jobs (default 1024). */
  readonly kbBase?: 1024 | 1000;
}

export type JobRunState = 'not-created' | 'setting-up' | 'ramp' | 'running' | 'verifying' | 'fsyncing' | 'finishing' | 'exited' | 'reaped' | 'error';

/** eta.c check_str_update: the character fio shows for a job in the given state. */
export function jobStateChar(job: FioJob, state: JobRunState): string {
  switch (state) {
    case 'not-created':
      return 'P';
    case 'setting-up':
      return 'I';
    case 'ramp':
      return '/';
    case 'verifying':
      return 'V';
    case 'fsyncing':
      return 'F';
    case 'finishing':
      return 'f';
    case 'exited':
      return 'E';
    case 'reaped':
      return '_';
    case 'error':
      return 'X';
    case 'running':
      break;
  }
  const random = job.rw.startsWith('rand');
  const reads = job.rw === 'read' || job.rw === 'randread';
  const writes = job.rw === 'write' || job.rw === 'randwrite';
  const mixed = job.rw === 'rw' || job.rw === 'randrw';
  if (mixed) {
    const c = job.rwmixread === 100 ? 'r' : job.rwmixread === 0 ? 'w' : 'm';
    return random ? c : c.toUpperCase();
  }
  if (reads) return random ? 'r' : 'R';
  if (writes) return random ? 'w' : 'W';
  return random ? 'd' : 'D';
}

/** eta.c update_condensed_str: "wwwr" -> "w(3),r(1)". */
export function condenseRunChars(chars: string): string {
  const parts: string[] = [];
  for (let i = 0; i < chars.length; ) {
    let j = i + 1;
    while (j < chars.length && chars[j] === chars[i]) j++;
    parts.push(`${chars[i]}(${j - i})`);
    i = j;
  }
  return parts.join(',');
}

/** eta.c eta_to_str: "11m:05s", "01h:02m:03s", "01d:00h:00m:09s". */
export function etaToString(sec: number | null): string {
  if (sec === null || sec < 0) return '--';
  let t = Math.floor(sec);
  const s = t % 60;
  t = Math.floor(t / 60);
  const m = t % 60;
  t = Math.floor(t / 60);
  const h = t % 24;
  const d = Math.floor(t / 24);
  const two = (n: number) => String(n).padStart(2, '0');
  let out = '';
  if (d) out += `${two(d)}d:`;
  if (h || d) out += `${two(h)}h:`;
  return `${out}${two(m)}m:${two(s)}s`;
}

export function formatStatusLine(s: StatusInput): string {
  const pow2 = (s.kbBase ?? 1024) === 1024;
  let out = `Jobs: ${s.jobsRunning} (f=${s.filesOpen ?? s.jobsRunning})`;
  if (s.bpsLimit && (s.bpsLimit[0] || s.bpsLimit[1])) {
    out += `, ${num2str(s.bpsLimit[0], 4, 1, pow2, N2S.BYTEPERSEC)}-${num2str(s.bpsLimit[1], 4, 1, pow2, N2S.BYTEPERSEC)}`;
  } else if (s.iopsLimit && (s.iopsLimit[0] || s.iopsLimit[1])) {
    out += `, ${Math.trunc(s.iopsLimit[0])}-${Math.trunc(s.iopsLimit[1])} IOPS`;
  }
  if (s.jobsRunning <= 0) return out;
  const perc = s.percentDone === null ? '-.-%' : `${cFloat(s.percentDone, 3, 1)}%`;
  out += `: [${condenseRunChars(s.runChars)}][${perc}]`;
  const rates = [s.readBps, s.writeBps, s.trimBps ?? 0];
  const iops = [s.readIops, s.writeIops, s.trimIops ?? 0];
  const letters = ['r', 'w', 't'];
  // fio keeps rates in KiB/s and formats them with base 1024.
  const kib = rates.map((b) => Math.floor(b / 1024));
  const has = [0, 1, 2].filter((d) => kib[d]! > 0 || Math.floor(iops[d]!) > 0);
  if (has.length > 0) {
    out += `[${has.map((d) => `${letters[d]}=${num2str(kib[d]!, 4, 1024, pow2, N2S.BYTEPERSEC)}`).join(',')}]`;
    out += `[${has.map((d) => `${letters[d]}=${num2str(iops[d]!, 4, 1, false, N2S.NONE)}`).join(',')} IOPS]`;
  }
  return `${out}[eta ${etaToString(s.etaSeconds)}]`;
}

/**
 * Shows a status line: on a terminal one line rewritten in place ("\r", text, clear to end of line);
 * otherwise (a pipe, a log file) a plain line at most every `intervalMs`, so logs stay readable.
 */
export class StatusLine {
  readonly #stream: NodeJS.WritableStream | Writable;
  readonly #tty: boolean;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #lastPrint = -Infinity;
  #pending: string | null = null;
  #shown = false;

  constructor(stream: NodeJS.WritableStream | Writable, isTTY: boolean, opts: { readonly intervalMs?: number; readonly now?: () => number } = {}) {
    this.#stream = stream;
    this.#tty = isTTY;
    this.#intervalMs = opts.intervalMs ?? 5000;
    this.#now = opts.now ?? Date.now;
  }

  update(text: string): void {
    if (this.#tty) {
      this.#stream.write(`\r${text}\x1b[K`);
      this.#shown = true;
      return;
    }
    const now = this.#now();
    if (now - this.#lastPrint >= this.#intervalMs) {
      this.#stream.write(`${text}\n`);
      this.#lastPrint = now;
      this.#pending = null;
    } else {
      this.#pending = text;
    }
  }

  /** Ends the status display: a terminal line is cleared; otherwise the last unprinted status is printed. */
  done(): void {
    if (this.#tty) {
      if (this.#shown) this.#stream.write('\r\x1b[K');
      this.#shown = false;
    } else if (this.#pending !== null) {
      this.#stream.write(`${this.#pending}\n`);
      this.#pending = null;
    }
  }
}
