// CHAP with MD5 (RFC 1994, as iSCSI uses it in RFC 7143 §12.1.3), both sides, as sans-IO steppers
// over key=value pairs. Randomness is injected; nothing here reads files, clocks or sockets.
//
//   initiator                                   target (ChapAuthenticator)
//   CHAP_A=5                        ──────────▶
//                                   ◀──────────  CHAP_A=5 CHAP_I=<id> CHAP_C=<challenge>
//   CHAP_N=<user> CHAP_R=<MD5(id‖secret‖challenge)>
//   [CHAP_I=<id'> CHAP_C=<challenge'>]  ──────▶  (checks CHAP_R against users[CHAP_N])
//                                   ◀──────────  [CHAP_N=<target> CHAP_R=<MD5(id'‖mutual secret‖challenge')>]
//
// The rules from §12.1.3 this enforces: an initiator's challenge equal to the one the target sent is
// refused (reflection); a response equal to the one the receiver would compute with its own secret is
// refused (the same secret configured on both sides); binary values are at most 1024 bytes.
// Responses are compared with crypto.timingSafeEqual.
import { createHash, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { LoginStatus } from './constants.ts';
import { UsageError } from '../internal/errors.ts';
import { formatHex, parseBinary, parseNumber, splitList } from './text.ts';
import type { TextPair } from './text.ts';

/** CHAP_A value for MD5 (RFC 7143 §12.1.3, IANA "PPP Authentication Algorithms"); the only one supported. */
export const CHAP_ALGORITHM_MD5 = 5;
/** Largest CHAP_C / CHAP_R binary value (§12.1.3). */
export const CHAP_MAX_BINARY = 1024;
/** MD5 digest, hence CHAP_R, length. */
export const CHAP_MD5_RESPONSE_LENGTH = 16;
/** Our challenges: at least 16 bytes (the digest length); 16 by default, as LIO and open-iscsi use. */
export const CHAP_CHALLENGE_MIN = 16;
/**
 * RFC 7143 §12.1.3: a CHAP secret with fewer than 96 random bits needs IPsec to protect the
 * connection, which we do not provide; so 12 bytes is the shortest secret we accept.
 */
export const CHAP_SECRET_MIN = 12;
/** Longest secret we accept (open-iscsi's and LIO's buffers hold 256 bytes with the NUL). */
export const CHAP_SECRET_MAX = 255;
/** Longest CHAP_N (a simple value). */
export const CHAP_NAME_MAX = 255;

export type RandomSource = (n: number) => Uint8Array;

/** One step of an authentication exchange; `failure` pairs, if any, may go in the login reject. */
export type AuthStep =
  | { readonly status: 'continue'; readonly pairs: TextPair[] }
  | { readonly status: 'success'; readonly pairs: TextPair[] }
  | { readonly status: 'failure'; readonly loginStatus: LoginStatus; readonly reason: string; readonly pairs: TextPair[] };

/** What the login negotiator needs from an authentication method on the target side. */
export interface LoginAuthenticator {
  readonly method: 'CHAP';
  /** Feed the method's keys (CHAP_*) of one login request; returns what to answer. */
  step(pairs: readonly TextPair[]): AuthStep;
  /** The authenticated name once the exchange succeeded. */
  readonly peerName: string | undefined;
}

/** What the login negotiator needs from an authentication method on the initiator side. */
export interface LoginAuthClient {
  readonly method: 'CHAP';
  /** The pairs of our first request once the target chose this method (CHAP_A). */
  start(): TextPair[];
  step(pairs: readonly TextPair[]): AuthStep;
}

// ---------------------------------------------------------------------------------------------
// Secrets

const kBytes = Symbol('chapSecretBytes');

/**
 * A CHAP secret. Its bytes are reachable only through `.bytes`; printing, string conversion and
 * JSON all give "[redacted]", so a secret that reaches a log line by accident shows nothing.
 */
export class ChapSecret {
  readonly [kBytes]: Uint8Array;

  constructor(secret: Uint8Array | string) {
    this[kBytes] = typeof secret === 'string' ? new TextEncoder().encode(secret) : Uint8Array.from(secret);
  }

  get bytes(): Uint8Array {
    return this[kBytes];
  }

  get length(): number {
    return this[kBytes].length;
  }

  equals(other: ChapSecret): boolean {
    const a = this[kBytes];
    const b = other[kBytes];
    return a.length === b.length && timingSafeEqual(a, b);
  }

  toString(): string {
    return '[redacted]';
  }

  toJSON(): string {
    return '[redacted]';
  }

  [inspect.custom](): string {
    return 'ChapSecret [redacted]';
  }
}

/**
 * Replace every occurrence of each secret's text in `message` with "[redacted]": for messages that
 * carry text from elsewhere (a peer's value, an exception) and might echo a secret.
 */
export function redact(message: string, secrets: Iterable<ChapSecret | Uint8Array | string>): string {
  let out = message;
  const texts: string[] = [];
  for (const s of secrets) {
    const t = typeof s === 'string' ? s : Buffer.from(s instanceof ChapSecret ? s.bytes : s).toString('utf8');
    if (t.length > 0) texts.push(t);
  }
  // Longest first, so a secret that contains another is replaced whole.
  texts.sort((a, b) => b.length - a.length);
  for (const t of texts) out = out.split(t).join('[redacted]');
  return out;
}

/** RFC 1994 §4.1: Response = MD5(Identifier ‖ secret ‖ Challenge). */
export function chapResponse(identifier: number, secret: ChapSecret | Uint8Array, challenge: Uint8Array): Uint8Array {
  const h = createHash('md5');
  h.update(Uint8Array.of(identifier & 0xff));
  h.update(secret instanceof ChapSecret ? secret.bytes : secret);
  h.update(challenge);
  return new Uint8Array(h.digest());
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function pair(key: string, value: string): TextPair {
  return [key, value];
}

function fail(loginStatus: LoginStatus, reason: string, pairs: TextPair[] = []): AuthStep {
  return { status: 'failure', loginStatus, reason, pairs };
}

/** Gather the CHAP_* keys of one request, refusing repeats and keys CHAP does not have. */
function collect(pairs: readonly TextPair[], allowed: readonly string[], who: string): Map<string, string> | string {
  const m = new Map<string, string>();
  for (const [key, value] of pairs) {
    if (!allowed.includes(key)) return `${who} sent ${key} at this step of CHAP`;
    if (m.has(key)) return `${who} sent ${key} twice`;
    m.set(key, value);
  }
  return m;
}

function parseIdentifier(value: string): number | null {
  const n = parseNumber(value);
  return n !== null && n <= 255 ? n : null;
}

/** The challenge length asked for (default 16), within what we send: 16..1024 bytes. */
function challengeLength(asked = CHAP_CHALLENGE_MIN): number {
  if (!Number.isInteger(asked) || asked < CHAP_CHALLENGE_MIN || asked > CHAP_MAX_BINARY) {
    throw new UsageError(`CHAP challenge length ${asked} is outside ${CHAP_CHALLENGE_MIN}..${CHAP_MAX_BINARY}`);
  }
  return asked;
}

function checkName(name: string): string | null {
  if (name.length === 0) return 'empty CHAP_N';
  if (Buffer.byteLength(name, 'utf8') > CHAP_NAME_MAX) return `CHAP_N longer than ${CHAP_NAME_MAX} bytes`;
  return null;
}

// ---------------------------------------------------------------------------------------------
// Target side

/** CHAP accounts by name (CHAP_N → secret), as parseChapSecretsFile returns them. */
export type ChapSecrets = ReadonlyMap<string, ChapSecret>;

export interface ChapAuthenticatorOptions {
  /** The initiators' accounts. */
  readonly initiators: ChapSecrets;
  /** Our own name and secret for mutual CHAP (the initiator authenticating us): one entry. */
  readonly target?: ChapSecrets;
  /** Refuse initiators that do not ask to authenticate us. Needs `target`. */
  readonly requireMutual?: boolean;
  readonly random: RandomSource;
  /** Challenge length in bytes, 16..1024 (default 16). */
  readonly challengeLength?: number;
}

type TargetState = 'await-algorithm' | 'await-response' | 'done' | 'failed';

/** Target-side CHAP: one instance per login. */
export class ChapAuthenticator implements LoginAuthenticator {
  readonly method = 'CHAP' as const;
  readonly #opts: ChapAuthenticatorOptions;
  readonly #mutual: { readonly name: string; readonly secret: ChapSecret } | undefined;
  readonly #challengeLength: number;
  #state: TargetState = 'await-algorithm';
  #identifier = 0;
  #challenge: Uint8Array = new Uint8Array(0);
  #peerName: string | undefined;
  #mutualDone = false;

  constructor(opts: ChapAuthenticatorOptions) {
    this.#challengeLength = challengeLength(opts.challengeLength);
    if (opts.target !== undefined) {
      if (opts.target.size !== 1) throw new UsageError(`mutual CHAP needs exactly one target identity, got ${opts.target.size}`);
      const [name, secret] = [...opts.target][0]!;
      for (const s of opts.initiators.values()) {
        if (s.equals(secret)) throw new UsageError('the target CHAP secret equals an initiator secret (RFC 7143 §12.1.3 forbids reusing one)');
      }
      this.#mutual = { name, secret };
    }
    if (opts.requireMutual === true && this.#mutual === undefined) {
      throw new UsageError('mutual CHAP is required but no target credentials are configured');
    }
    this.#opts = opts;
  }

  get state(): TargetState {
    return this.#state;
  }

  get peerName(): string | undefined {
    return this.#state === 'done' ? this.#peerName : undefined;
  }

  /** True once the initiator authenticated us too. */
  get mutual(): boolean {
    return this.#mutualDone;
  }

  step(pairs: readonly TextPair[]): AuthStep {
    const r = this.#step(pairs);
    if (r.status === 'failure') this.#state = 'failed';
    return r;
  }

  #step(pairs: readonly TextPair[]): AuthStep {
    switch (this.#state) {
      case 'await-algorithm':
        return this.#algorithm(pairs);
      case 'await-response':
        return this.#response(pairs);
      case 'done':
        return fail(LoginStatus.INITIATOR_ERROR, 'CHAP keys after CHAP completed');
      case 'failed':
        return fail(LoginStatus.AUTHENTICATION_FAILURE, 'CHAP already failed');
    }
  }

  #algorithm(pairs: readonly TextPair[]): AuthStep {
    const keys = collect(pairs, ['CHAP_A'], 'initiator');
    if (typeof keys === 'string') return fail(LoginStatus.INITIATOR_ERROR, keys);
    const a = keys.get('CHAP_A');
    if (a === undefined) return { status: 'continue', pairs: [] };
    const list = splitList(a);
    const algs = list?.map(parseNumber);
    if (algs === undefined || algs.some((x) => x === null)) return fail(LoginStatus.INITIATOR_ERROR, `malformed CHAP_A=${a}`);
    if (!algs.includes(CHAP_ALGORITHM_MD5)) {
      return fail(LoginStatus.AUTHENTICATION_FAILURE, `CHAP_A=${a} offers no algorithm we support (only 5, MD5)`, [pair('CHAP_A', 'Reject')]);
    }
    const id = this.#opts.random(1);
    const challenge = this.#opts.random(this.#challengeLength);
    if (id.length !== 1 || challenge.length !== this.#challengeLength) {
      return fail(LoginStatus.TARGET_ERROR, 'random source returned the wrong number of bytes');
    }
    this.#identifier = id[0]!;
    this.#challenge = Uint8Array.from(challenge);
    this.#state = 'await-response';
    return {
      status: 'continue',
      pairs: [pair('CHAP_A', String(CHAP_ALGORITHM_MD5)), pair('CHAP_I', String(this.#identifier)), pair('CHAP_C', formatHex(this.#challenge))],
    };
  }

  #response(pairs: readonly TextPair[]): AuthStep {
    const keys = collect(pairs, ['CHAP_N', 'CHAP_R', 'CHAP_I', 'CHAP_C'], 'initiator');
    if (typeof keys === 'string') return fail(LoginStatus.INITIATOR_ERROR, keys);
    const name = keys.get('CHAP_N');
    const r = keys.get('CHAP_R');
    if (name === undefined || r === undefined) {
      if (keys.size === 0) return { status: 'continue', pairs: [] };
      return fail(LoginStatus.INITIATOR_ERROR, `CHAP_N and CHAP_R must come together (got ${[...keys.keys()].join(', ')})`);
    }
    const nameProblem = checkName(name);
    if (nameProblem !== null) return fail(LoginStatus.INITIATOR_ERROR, nameProblem);
    const response = parseBinary(r, CHAP_MAX_BINARY);
    if (response === null)
      return fail(LoginStatus.INITIATOR_ERROR, `CHAP_R from ${JSON.stringify(name)} is not a hex or base64 value of at most ${CHAP_MAX_BINARY} bytes`);

    const ci = keys.get('CHAP_I');
    const cc = keys.get('CHAP_C');
    if ((ci === undefined) !== (cc === undefined)) return fail(LoginStatus.INITIATOR_ERROR, 'CHAP_I and CHAP_C must come together for mutual CHAP');
    let mutualId = 0;
    let mutualChallenge: Uint8Array | null = null;
    if (ci !== undefined && cc !== undefined) {
      const id = parseIdentifier(ci);
      if (id === null) return fail(LoginStatus.INITIATOR_ERROR, `malformed CHAP_I=${ci}`);
      const ch = parseBinary(cc, CHAP_MAX_BINARY);
      if (ch === null || ch.length === 0) {
        return fail(LoginStatus.INITIATOR_ERROR, `CHAP_C from the initiator is not a hex or base64 value of 1..${CHAP_MAX_BINARY} bytes`);
      }
      mutualId = id;
      mutualChallenge = ch;
    }

    // One-way part: is the initiator who it says?
    const secret = this.#opts.initiators.get(name);
    if (secret === undefined) return fail(LoginStatus.AUTHENTICATION_FAILURE, `unknown CHAP user ${JSON.stringify(name)}`);
    if (response.length !== CHAP_MD5_RESPONSE_LENGTH) {
      return fail(LoginStatus.AUTHENTICATION_FAILURE, `CHAP_R from ${JSON.stringify(name)} is ${response.length} bytes, not ${CHAP_MD5_RESPONSE_LENGTH}`);
    }
    const expected = chapResponse(this.#identifier, secret, this.#challenge);
    if (!sameBytes(expected, response)) return fail(LoginStatus.AUTHENTICATION_FAILURE, `wrong CHAP response from ${JSON.stringify(name)}`);
    const mutual = this.#mutual;
    if (mutual !== undefined && sameBytes(chapResponse(this.#identifier, mutual.secret, this.#challenge), response)) {
      // §12.1.3: a response the receiver could have made itself means the secrets are shared.
      return fail(LoginStatus.AUTHENTICATION_FAILURE, `CHAP response from ${JSON.stringify(name)} was made with the target's own secret`);
    }

    if (mutualChallenge === null) {
      if (this.#opts.requireMutual === true)
        return fail(LoginStatus.AUTHENTICATION_FAILURE, `mutual CHAP is required but ${JSON.stringify(name)} did not send CHAP_I/CHAP_C`);
      this.#peerName = name;
      this.#state = 'done';
      return { status: 'success', pairs: [] };
    }
    if (mutual === undefined) return fail(LoginStatus.AUTHENTICATION_FAILURE, `${JSON.stringify(name)} asked for mutual CHAP, which is not configured`);
    if (sameBytes(mutualChallenge, this.#challenge)) {
      return fail(LoginStatus.AUTHENTICATION_FAILURE, `${JSON.stringify(name)} reflected our CHAP challenge`);
    }
    this.#peerName = name;
    this.#mutualDone = true;
    this.#state = 'done';
    return {
      status: 'success',
      pairs: [pair('CHAP_N', mutual.name), pair('CHAP_R', formatHex(chapResponse(mutualId, mutual.secret, mutualChallenge)))],
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Initiator side

export interface ChapInitiatorOptions {
  /** Our CHAP_N and secret (the target checks these). */
  readonly name: string;
  readonly secret: ChapSecret;
  /** Authenticate the target too: the secret it must prove, and optionally the CHAP_N it must give. */
  readonly mutual?: { readonly secret: ChapSecret; readonly targetName?: string };
  readonly random: RandomSource;
  /** Our challenge length for mutual CHAP, 16..1024 (default 16). */
  readonly challengeLength?: number;
}

type InitiatorState = 'start' | 'await-challenge' | 'await-target-response' | 'done' | 'failed';

/** Initiator-side CHAP: one instance per login. */
export class ChapInitiator implements LoginAuthClient {
  readonly method = 'CHAP' as const;
  readonly #opts: ChapInitiatorOptions;
  readonly #challengeLength: number;
  #state: InitiatorState = 'start';
  #identifier = 0;
  #challenge: Uint8Array = new Uint8Array(0);

  constructor(opts: ChapInitiatorOptions) {
    this.#challengeLength = challengeLength(opts.challengeLength);
    const nameProblem = checkName(opts.name);
    if (nameProblem !== null) throw new UsageError(`CHAP user name: ${nameProblem}`);
    this.#opts = opts;
  }

  get state(): InitiatorState {
    return this.#state;
  }

  start(): TextPair[] {
    this.#state = 'await-challenge';
    return [pair('CHAP_A', String(CHAP_ALGORITHM_MD5))];
  }

  step(pairs: readonly TextPair[]): AuthStep {
    const r = this.#step(pairs);
    if (r.status === 'failure') this.#state = 'failed';
    return r;
  }

  #step(pairs: readonly TextPair[]): AuthStep {
    switch (this.#state) {
      case 'start':
        return fail(LoginStatus.TARGET_ERROR, 'CHAP keys from the target before we offered CHAP_A');
      case 'await-challenge':
        return this.#challengeStep(pairs);
      case 'await-target-response':
        return this.#targetResponse(pairs);
      case 'done':
        return pairs.length === 0 ? { status: 'success', pairs: [] } : fail(LoginStatus.TARGET_ERROR, 'CHAP keys from the target after CHAP completed');
      case 'failed':
        return fail(LoginStatus.AUTHENTICATION_FAILURE, 'CHAP already failed');
    }
  }

  #challengeStep(pairs: readonly TextPair[]): AuthStep {
    const keys = collect(pairs, ['CHAP_A', 'CHAP_I', 'CHAP_C'], 'target');
    if (typeof keys === 'string') return fail(LoginStatus.TARGET_ERROR, keys);
    const a = keys.get('CHAP_A');
    const i = keys.get('CHAP_I');
    const c = keys.get('CHAP_C');
    if (a === 'Reject') return fail(LoginStatus.AUTHENTICATION_FAILURE, 'the target rejected CHAP_A=5 (MD5)');
    if (a === undefined || i === undefined || c === undefined) return fail(LoginStatus.TARGET_ERROR, 'the target must send CHAP_A, CHAP_I and CHAP_C together');
    if (parseNumber(a) !== CHAP_ALGORITHM_MD5) return fail(LoginStatus.TARGET_ERROR, `the target chose CHAP_A=${a}, which we did not offer`);
    const id = parseIdentifier(i);
    if (id === null) return fail(LoginStatus.TARGET_ERROR, `malformed CHAP_I=${i}`);
    const challenge = parseBinary(c, CHAP_MAX_BINARY);
    if (challenge === null || challenge.length === 0)
      return fail(LoginStatus.TARGET_ERROR, `CHAP_C from the target is not a hex or base64 value of 1..${CHAP_MAX_BINARY} bytes`);

    const out = [pair('CHAP_N', this.#opts.name), pair('CHAP_R', formatHex(chapResponse(id, this.#opts.secret, challenge)))];
    if (this.#opts.mutual === undefined) {
      this.#state = 'done';
      return { status: 'success', pairs: out };
    }
    const myId = this.#opts.random(1);
    const mine = this.#opts.random(this.#challengeLength);
    if (myId.length !== 1 || mine.length !== this.#challengeLength) return fail(LoginStatus.TARGET_ERROR, 'random source returned the wrong number of bytes');
    // §12.1.3: never reuse the challenge the target sent us.
    if (sameBytes(mine, challenge)) return fail(LoginStatus.AUTHENTICATION_FAILURE, "our random challenge equals the target's");
    this.#identifier = myId[0]!;
    this.#challenge = Uint8Array.from(mine);
    out.push(pair('CHAP_I', String(this.#identifier)), pair('CHAP_C', formatHex(this.#challenge)));
    this.#state = 'await-target-response';
    return { status: 'continue', pairs: out };
  }

  #targetResponse(pairs: readonly TextPair[]): AuthStep {
    const keys = collect(pairs, ['CHAP_N', 'CHAP_R'], 'target');
    if (typeof keys === 'string') return fail(LoginStatus.TARGET_ERROR, keys);
    const name = keys.get('CHAP_N');
    const r = keys.get('CHAP_R');
    if (name === undefined || r === undefined) return fail(LoginStatus.AUTHENTICATION_FAILURE, 'the target did not answer our challenge (CHAP_N and CHAP_R)');
    const mutual = this.#opts.mutual!;
    if (mutual.targetName !== undefined && name !== mutual.targetName) {
      return fail(LoginStatus.AUTHENTICATION_FAILURE, `the target answered as ${JSON.stringify(name)}, expected ${JSON.stringify(mutual.targetName)}`);
    }
    const response = parseBinary(r, CHAP_MAX_BINARY);
    if (response === null) return fail(LoginStatus.TARGET_ERROR, 'CHAP_R from the target is not a hex or base64 value');
    if (response.length !== CHAP_MD5_RESPONSE_LENGTH)
      return fail(LoginStatus.AUTHENTICATION_FAILURE, `CHAP_R from the target is ${response.length} bytes, not ${CHAP_MD5_RESPONSE_LENGTH}`);
    if (!sameBytes(chapResponse(this.#identifier, mutual.secret, this.#challenge), response)) {
      return fail(LoginStatus.AUTHENTICATION_FAILURE, 'wrong CHAP response from the target');
    }
    if (sameBytes(chapResponse(this.#identifier, this.#opts.secret, this.#challenge), response)) {
      return fail(LoginStatus.AUTHENTICATION_FAILURE, 'the target answered with our own secret (the two secrets are equal)');
    }
    this.#state = 'done';
    return { status: 'success', pairs: [] };
  }
}

// ---------------------------------------------------------------------------------------------
// Secrets files for the CLI: `--chap-file PATH` (the initiators' accounts, one `USERNAME SECRET` a
// line) and `--mutual-chap-file PATH` (one line: the target's own name and secret). The CLI reads
// the file; these parse its text. Secrets are taken as the UTF-8 bytes of the token, as libiscsi and
// open-iscsi take theirs.

/** Why a secrets file was refused. Messages name the file and line, never a token from the line. */
export const ChapFileProblem = {
  FIELDS: 'expected two fields, "USERNAME SECRET"',
  SHORT_SECRET: `secret shorter than ${CHAP_SECRET_MIN} bytes (RFC 7143 §12.1.3 wants at least 96 random bits without IPsec)`,
  LONG_SECRET: `secret longer than ${CHAP_SECRET_MAX} bytes`,
  LONG_NAME: `user name longer than ${CHAP_NAME_MAX} bytes`,
  DUPLICATE_USER: 'user name already given on an earlier line',
  NO_ENTRY: 'no "USERNAME SECRET" line',
  MANY_ENTRIES: 'more than one "USERNAME SECRET" line (the target has one identity)',
  MUTUAL_EQUALS_INITIATOR: 'the target secret equals an initiator secret (RFC 7143 §12.1.3 forbids reusing one)',
  NOT_UTF8: 'not valid UTF-8',
} as const;
export type ChapFileProblem = (typeof ChapFileProblem)[keyof typeof ChapFileProblem];

/** A refused secrets file. The message is built only from the file name, line and a fixed problem. */
export class ChapFileError extends UsageError {
  readonly file: string;
  readonly line: number;
  readonly problem: ChapFileProblem;

  constructor(file: string, line: number, problem: ChapFileProblem) {
    super(line > 0 ? `${file}:${line}: ${problem}` : `${file}: ${problem}`);
    this.name = 'ChapFileError';
    this.file = file;
    this.line = line;
    this.problem = problem;
  }
}

export interface ChapCredential {
  readonly name: string;
  readonly secret: ChapSecret;
  /** 1-based line in its file. */
  readonly line: number;
}

function parseLines(text: string, file: string): ChapCredential[] {
  if (text.includes('\uFFFD')) throw new ChapFileError(file, 0, ChapFileProblem.NOT_UTF8);
  const out: ChapCredential[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line.length === 0 || line.startsWith('#')) continue;
    const fields = line.split(/[ \t]+/);
    if (fields.length !== 2) throw new ChapFileError(file, i + 1, ChapFileProblem.FIELDS);
    const [name, secretText] = fields as [string, string];
    if (Buffer.byteLength(name, 'utf8') > CHAP_NAME_MAX) throw new ChapFileError(file, i + 1, ChapFileProblem.LONG_NAME);
    const secret = new ChapSecret(secretText);
    if (secret.length < CHAP_SECRET_MIN) throw new ChapFileError(file, i + 1, ChapFileProblem.SHORT_SECRET);
    if (secret.length > CHAP_SECRET_MAX) throw new ChapFileError(file, i + 1, ChapFileProblem.LONG_SECRET);
    out.push({ name, secret, line: i + 1 });
  }
  return out;
}

/**
 * Parse a secrets file: `USERNAME SECRET` per line, `#` comment lines and blank lines ignored.
 * `--chap-file` (mutual false) holds the initiators' accounts, one or more; `--mutual-chap-file`
 * (mutual true) holds exactly one line, the target's own identity. Throws ChapFileError, whose
 * message names the file and line but never a token of the line.
 */
export function parseChapSecretsFile(text: string, file: string, mutual = false): Map<string, ChapSecret> {
  const entries = parseLines(text, file);
  if (entries.length === 0) throw new ChapFileError(file, 0, ChapFileProblem.NO_ENTRY);
  if (mutual && entries.length > 1) throw new ChapFileError(file, entries[1]!.line, ChapFileProblem.MANY_ENTRIES);
  const out = new Map<string, ChapSecret>();
  for (const c of entries) {
    if (out.has(c.name)) throw new ChapFileError(file, c.line, ChapFileProblem.DUPLICATE_USER);
    out.set(c.name, c.secret);
  }
  return out;
}

/**
 * RFC 7143 §12.1.3: a secret used to authenticate initiators must not authenticate a target. Throws
 * ChapFileError against the target's file when its secret equals any initiator's.
 */
export function checkMutualSecret(initiators: ChapSecrets, target: ChapSecrets, targetFile: string): void {
  for (const t of target.values()) {
    for (const s of initiators.values()) {
      if (s.equals(t)) throw new ChapFileError(targetFile, 0, ChapFileProblem.MUTUAL_EQUALS_INITIATOR);
    }
  }
}
