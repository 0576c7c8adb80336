import assert from 'node:assert/strict';
import test from 'node:test';
import { inspect } from 'node:util';
import { LoginStatus } from '../src/iscsi/constants.ts';
import {
  CHAP_SECRET_MIN,
  ChapAuthenticator,
  ChapFileError,
  ChapFileProblem,
  ChapInitiator,
  ChapSecret,
  chapResponse,
  checkMutualSecret,
  parseChapSecretsFile,
  redact,
} from '../src/iscsi/chap.ts';
import type { AuthStep, RandomSource } from '../src/iscsi/chap.ts';
import type { TextPair } from '../src/iscsi/text.ts';
import { UsageError } from '../src/internal/errors.ts';

// MD5 vectors computed outside Node with coreutils md5sum, e.g.
//   printf '\x01secretsecret\x00\x01...\x0f' | md5sum
const SEQ16 = Uint8Array.from({ length: 16 }, (_, i) => i);
const AA99 = Uint8Array.from([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99]);
const R_1_SECRETSECRET_SEQ16 = '0x226dc576c33f04ff9c3a200ffe35f442';
const R_FF_SECRETSECRET_EMPTY = '0x7d3822c665a3ca57d9ba811d39a79a19';
const R_7_TARGETSECRET12_AA99 = '0x9e5209bfa4a0de5c0053b91a96250502';

const hex = (b: Uint8Array): string => `0x${Buffer.from(b).toString('hex')}`;

/** A random source that hands out the given byte strings in order. */
function scripted(...chunks: Uint8Array[]): RandomSource {
  const q = [...chunks];
  return (n) => {
    const c = q.shift();
    assert.ok(c !== undefined, 'random source exhausted');
    assert.equal(c.length, n, 'scripted random chunk of the wrong size');
    return c;
  };
}

/** Deterministic filler for tests that do not care about the bytes. */
function counter(seed = 1): RandomSource {
  let x = seed;
  return (n) => Uint8Array.from({ length: n }, () => (x = (x * 1103515245 + 12345) >>> 0) >>> 24);
}

const users = new Map([
  ['alice', new ChapSecret('secretsecret')],
  ['bob', new ChapSecret('bobs-secret-123')],
]);
const targetId = new Map([['iqn.2026-11.test:ram', new ChapSecret('targetsecret12')]]);

function expectFailure(step: AuthStep, status: LoginStatus, pattern?: RegExp): void {
  assert.equal(step.status, 'failure', JSON.stringify(step));
  if (step.status !== 'failure') return;
  assert.equal(step.loginStatus, status, step.reason);
  if (pattern !== undefined) assert.match(step.reason, pattern);
}

function expectPairs(step: AuthStep, status: 'continue' | 'success', pairs: TextPair[]): void {
  assert.equal(step.status, status, JSON.stringify(step));
  assert.deepEqual(step.pairs, pairs);
}

test('chapResponse matches MD5(id ‖ secret ‖ challenge) computed by coreutils', () => {
  assert.equal(hex(chapResponse(1, new ChapSecret('secretsecret'), SEQ16)), R_1_SECRETSECRET_SEQ16);
  assert.equal(hex(chapResponse(0xff, new TextEncoder().encode('secretsecret'), new Uint8Array(0))), R_FF_SECRETSECRET_EMPTY);
  assert.equal(hex(chapResponse(7, new ChapSecret('targetsecret12'), AA99)), R_7_TARGETSECRET12_AA99);
});

test('one-way CHAP, target side: exact pairs for a scripted challenge', () => {
  const t = new ChapAuthenticator({ initiators: users, random: scripted(Uint8Array.of(1), SEQ16) });
  expectPairs(t.step([['CHAP_A', '5']]), 'continue', [
    ['CHAP_A', '5'],
    ['CHAP_I', '1'],
    ['CHAP_C', hex(SEQ16)],
  ]);
  assert.equal(t.state, 'await-response');
  assert.equal(t.peerName, undefined);
  expectPairs(
    t.step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ]),
    'success',
    [],
  );
  assert.equal(t.state, 'done');
  assert.equal(t.peerName, 'alice');
  assert.equal(t.mutual, false);
  expectFailure(t.step([['CHAP_N', 'alice']]), LoginStatus.INITIATOR_ERROR, /after CHAP completed/);
});

test('CHAP_R accepted in upper-case hex (libiscsi writes it so) and in base64', () => {
  const resp = Buffer.from(R_1_SECRETSECRET_SEQ16.slice(2), 'hex');
  for (const r of [`0x${resp.toString('hex').toUpperCase()}`, `0X${resp.toString('hex')}`, `0b${resp.toString('base64')}`]) {
    const t = new ChapAuthenticator({ initiators: users, random: scripted(Uint8Array.of(1), SEQ16) });
    t.step([['CHAP_A', '5']]);
    expectPairs(
      t.step([
        ['CHAP_N', 'alice'],
        ['CHAP_R', r],
      ]),
      'success',
      [],
    );
  }
});

test('CHAP_A: the first algorithm we support from the list, else Reject and failure', () => {
  for (const offer of ['5', '7,6,5', '5,7', '0x5']) {
    const t = new ChapAuthenticator({ initiators: users, random: counter() });
    const s = t.step([['CHAP_A', offer]]);
    assert.equal(s.status, 'continue', offer);
    assert.deepEqual(s.pairs[0], ['CHAP_A', '5']);
  }
  for (const offer of ['7', '6,7', '8,7,6']) {
    const t = new ChapAuthenticator({ initiators: users, random: counter() });
    const s = t.step([['CHAP_A', offer]]);
    expectFailure(s, LoginStatus.AUTHENTICATION_FAILURE, /no algorithm we support/);
    assert.deepEqual(s.pairs, [['CHAP_A', 'Reject']]);
    expectFailure(t.step([['CHAP_A', '5']]), LoginStatus.AUTHENTICATION_FAILURE, /already failed/);
  }
  for (const offer of ['', 'MD5', '5,', '5,x', '-5']) {
    const t = new ChapAuthenticator({ initiators: users, random: counter() });
    expectFailure(t.step([['CHAP_A', offer]]), LoginStatus.INITIATOR_ERROR, /malformed CHAP_A/);
  }
});

test('target side refuses keys out of order, repeated or foreign to CHAP', () => {
  let t = new ChapAuthenticator({ initiators: users, random: counter() });
  expectFailure(
    t.step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ]),
    LoginStatus.INITIATOR_ERROR,
    /CHAP_N at this step/,
  );
  t = new ChapAuthenticator({ initiators: users, random: counter() });
  expectFailure(
    t.step([
      ['CHAP_A', '5'],
      ['CHAP_A', '5'],
    ]),
    LoginStatus.INITIATOR_ERROR,
    /twice/,
  );
  t = new ChapAuthenticator({ initiators: users, random: counter() });
  t.step([['CHAP_A', '5']]);
  expectFailure(t.step([['CHAP_N', 'alice']]), LoginStatus.INITIATOR_ERROR, /must come together/);
  t = new ChapAuthenticator({ initiators: users, random: counter() });
  t.step([['CHAP_A', '5']]);
  expectFailure(
    t.step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
      ['CHAP_X', '1'],
    ]),
    LoginStatus.INITIATOR_ERROR,
    /CHAP_X/,
  );
  t = new ChapAuthenticator({ initiators: users, random: counter() });
  t.step([['CHAP_A', '5']]);
  expectPairs(t.step([]), 'continue', []);
});

test('wrong secret, unknown user, wrong length, bad encoding', () => {
  const fresh = (): ChapAuthenticator => {
    const t = new ChapAuthenticator({ initiators: users, random: scripted(Uint8Array.of(1), SEQ16) });
    t.step([['CHAP_A', '5']]);
    return t;
  };
  // bob's name with alice's response
  expectFailure(
    fresh().step([
      ['CHAP_N', 'bob'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /wrong CHAP response from "bob"/,
  );
  expectFailure(
    fresh().step([
      ['CHAP_N', 'carol'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /unknown CHAP user "carol"/,
  );
  expectFailure(
    fresh().step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', '0x00112233'],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /4 bytes, not 16/,
  );
  expectFailure(
    fresh().step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', 'nothex'],
    ]),
    LoginStatus.INITIATOR_ERROR,
    /not a hex or base64/,
  );
  expectFailure(
    fresh().step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', '0xzz'],
    ]),
    LoginStatus.INITIATOR_ERROR,
  );
  expectFailure(
    fresh().step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', `0x${'00'.repeat(1025)}`],
    ]),
    LoginStatus.INITIATOR_ERROR,
  );
  expectFailure(
    fresh().step([
      ['CHAP_N', ''],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ]),
    LoginStatus.INITIATOR_ERROR,
    /empty CHAP_N/,
  );
});

test('mutual CHAP through both sides, with exact target answer', () => {
  // Target challenge: id 1, SEQ16. Initiator challenge back: id 7, AA99.
  const t = new ChapAuthenticator({ initiators: users, target: targetId, random: scripted(Uint8Array.of(1), SEQ16) });
  const i = new ChapInitiator({
    name: 'alice',
    secret: new ChapSecret('secretsecret'),
    mutual: { secret: new ChapSecret('targetsecret12'), targetName: 'iqn.2026-11.test:ram' },
    random: scripted(Uint8Array.of(7), AA99),
  });
  const a = i.start();
  assert.deepEqual(a, [['CHAP_A', '5']]);
  const challenge = t.step(a);
  assert.equal(challenge.status, 'continue');
  const response = i.step(challenge.pairs);
  expectPairs(response, 'continue', [
    ['CHAP_N', 'alice'],
    ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ['CHAP_I', '7'],
    ['CHAP_C', hex(AA99)],
  ]);
  const answer = t.step(response.pairs);
  expectPairs(answer, 'success', [
    ['CHAP_N', 'iqn.2026-11.test:ram'],
    ['CHAP_R', R_7_TARGETSECRET12_AA99],
  ]);
  assert.equal(t.mutual, true);
  expectPairs(i.step(answer.pairs), 'success', []);
  assert.equal(i.state, 'done');
});

test('one-way CHAP through both sides with random challenges', () => {
  for (let seed = 1; seed < 30; seed++) {
    const t = new ChapAuthenticator({ initiators: users, random: counter(seed), challengeLength: 16 + seed });
    const i = new ChapInitiator({ name: 'bob', secret: new ChapSecret('bobs-secret-123'), random: counter(seed + 100) });
    const c = t.step(i.start());
    assert.equal(c.status, 'continue');
    assert.equal(Buffer.from(c.pairs[2]![1].slice(2), 'hex').length, 16 + seed);
    const r = i.step(c.pairs);
    assert.equal(r.status, 'success');
    assert.equal(r.pairs.length, 2);
    expectPairs(t.step(r.pairs), 'success', []);
    assert.equal(t.peerName, 'bob');
  }
});

test('a reflected challenge is refused', () => {
  const t = new ChapAuthenticator({ initiators: users, target: targetId, random: scripted(Uint8Array.of(1), SEQ16) });
  t.step([['CHAP_A', '5']]);
  expectFailure(
    t.step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
      ['CHAP_I', '1'],
      ['CHAP_C', hex(SEQ16)],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /reflected/,
  );
});

test('mutual CHAP not configured, and one-way CHAP when mutual is required', () => {
  let t = new ChapAuthenticator({ initiators: users, random: scripted(Uint8Array.of(1), SEQ16) });
  t.step([['CHAP_A', '5']]);
  expectFailure(
    t.step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
      ['CHAP_I', '7'],
      ['CHAP_C', hex(AA99)],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /not configured/,
  );
  t = new ChapAuthenticator({ initiators: users, target: targetId, requireMutual: true, random: scripted(Uint8Array.of(1), SEQ16) });
  t.step([['CHAP_A', '5']]);
  expectFailure(
    t.step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /mutual CHAP is required/,
  );
  assert.throws(() => new ChapAuthenticator({ initiators: users, requireMutual: true, random: counter() }), UsageError);
});

test('malformed mutual keys from the initiator', () => {
  const cases: [TextPair[], RegExp][] = [
    [[['CHAP_I', '7']], /must come together/],
    [[['CHAP_C', hex(AA99)]], /must come together/],
    [
      [
        ['CHAP_I', '256'],
        ['CHAP_C', hex(AA99)],
      ],
      /malformed CHAP_I/,
    ],
    [
      [
        ['CHAP_I', 'x'],
        ['CHAP_C', hex(AA99)],
      ],
      /malformed CHAP_I/,
    ],
    [
      [
        ['CHAP_I', '7'],
        ['CHAP_C', `0x${'ab'.repeat(1025)}`],
      ],
      /1\.\.1024/,
    ],
    [
      [
        ['CHAP_I', '7'],
        ['CHAP_C', '0xq'],
      ],
      /1\.\.1024/,
    ],
  ];
  for (const [extra, re] of cases) {
    const t = new ChapAuthenticator({ initiators: users, target: targetId, random: scripted(Uint8Array.of(1), SEQ16) });
    t.step([['CHAP_A', '5']]);
    expectFailure(t.step([['CHAP_N', 'alice'], ['CHAP_R', R_1_SECRETSECRET_SEQ16], ...extra]), LoginStatus.INITIATOR_ERROR, re);
  }
  // 1024 bytes is the largest challenge allowed.
  const t = new ChapAuthenticator({ initiators: users, target: targetId, random: scripted(Uint8Array.of(1), SEQ16) });
  t.step([['CHAP_A', '5']]);
  const big = `0x${'ab'.repeat(1024)}`;
  assert.equal(
    t.step([
      ['CHAP_N', 'alice'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
      ['CHAP_I', '9'],
      ['CHAP_C', big],
    ]).status,
    'success',
  );
});

test('target configuration checks', () => {
  assert.throws(() => new ChapAuthenticator({ initiators: users, random: counter(), challengeLength: 15 }), UsageError);
  assert.throws(() => new ChapAuthenticator({ initiators: users, random: counter(), challengeLength: 1025 }), UsageError);
  const two = new Map([
    ['a', new ChapSecret('aaaaaaaaaaaaaa')],
    ['b', new ChapSecret('bbbbbbbbbbbbbb')],
  ]);
  assert.throws(() => new ChapAuthenticator({ initiators: users, target: two, random: counter() }), UsageError);
  const same = new Map([['t', new ChapSecret('secretsecret')]]);
  assert.throws(
    () => new ChapAuthenticator({ initiators: users, target: same, random: counter() }),
    (e: unknown) => e instanceof UsageError && !e.message.includes('secretsecret'),
  );
  const bad = new ChapAuthenticator({ initiators: users, random: () => new Uint8Array(3) });
  expectFailure(bad.step([['CHAP_A', '5']]), LoginStatus.TARGET_ERROR, /random source/);
});

test("initiator side: the target's mistakes", () => {
  const mk = (mutual = false): ChapInitiator => {
    const i = new ChapInitiator({
      name: 'alice',
      secret: new ChapSecret('secretsecret'),
      ...(mutual ? { mutual: { secret: new ChapSecret('targetsecret12'), targetName: 'tgt' } } : {}),
      random: scripted(Uint8Array.of(7), AA99),
    });
    i.start();
    return i;
  };
  const good: TextPair[] = [
    ['CHAP_A', '5'],
    ['CHAP_I', '1'],
    ['CHAP_C', hex(SEQ16)],
  ];
  expectPairs(mk().step(good), 'success', [
    ['CHAP_N', 'alice'],
    ['CHAP_R', R_1_SECRETSECRET_SEQ16],
  ]);
  expectFailure(mk().step([['CHAP_A', 'Reject']]), LoginStatus.AUTHENTICATION_FAILURE, /rejected/);
  expectFailure(
    mk().step([
      ['CHAP_A', '7'],
      ['CHAP_I', '1'],
      ['CHAP_C', hex(SEQ16)],
    ]),
    LoginStatus.TARGET_ERROR,
    /did not offer/,
  );
  expectFailure(
    mk().step([
      ['CHAP_A', '5'],
      ['CHAP_I', '1'],
    ]),
    LoginStatus.TARGET_ERROR,
    /together/,
  );
  expectFailure(
    mk().step([
      ['CHAP_A', '5'],
      ['CHAP_I', '300'],
      ['CHAP_C', hex(SEQ16)],
    ]),
    LoginStatus.TARGET_ERROR,
    /CHAP_I/,
  );
  expectFailure(
    mk().step([
      ['CHAP_A', '5'],
      ['CHAP_I', '1'],
      ['CHAP_C', `0x${'00'.repeat(1025)}`],
    ]),
    LoginStatus.TARGET_ERROR,
    /CHAP_C/,
  );
  expectFailure(
    mk().step([
      ['CHAP_A', '5'],
      ['CHAP_I', '1'],
      ['CHAP_C', hex(SEQ16)],
      ['CHAP_N', 'x'],
    ]),
    LoginStatus.TARGET_ERROR,
    /CHAP_N at this step/,
  );
  const fresh = new ChapInitiator({ name: 'alice', secret: new ChapSecret('secretsecret'), random: counter() });
  expectFailure(fresh.step(good), LoginStatus.TARGET_ERROR, /before we offered/);

  // Mutual: the target's answer is checked.
  const answerWith = (pairs: TextPair[]): AuthStep => {
    const i = mk(true);
    assert.equal(i.step(good).status, 'continue');
    return i.step(pairs);
  };
  expectPairs(
    answerWith([
      ['CHAP_N', 'tgt'],
      ['CHAP_R', R_7_TARGETSECRET12_AA99],
    ]),
    'success',
    [],
  );
  expectFailure(
    answerWith([
      ['CHAP_N', 'other'],
      ['CHAP_R', R_7_TARGETSECRET12_AA99],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /expected "tgt"/,
  );
  expectFailure(
    answerWith([
      ['CHAP_N', 'tgt'],
      ['CHAP_R', R_1_SECRETSECRET_SEQ16],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /wrong CHAP response from the target/,
  );
  expectFailure(
    answerWith([
      ['CHAP_N', 'tgt'],
      ['CHAP_R', '0x00'],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /1 bytes, not 16/,
  );
  expectFailure(answerWith([['CHAP_N', 'tgt']]), LoginStatus.AUTHENTICATION_FAILURE, /did not answer/);
  expectFailure(answerWith([]), LoginStatus.AUTHENTICATION_FAILURE, /did not answer/);

  // The target answering with our own secret: the two secrets are equal (§12.1.3).
  const same = new ChapInitiator({
    name: 'alice',
    secret: new ChapSecret('targetsecret12'),
    mutual: { secret: new ChapSecret('targetsecret12') },
    random: scripted(Uint8Array.of(7), AA99),
  });
  same.start();
  same.step(good);
  expectFailure(
    same.step([
      ['CHAP_N', 'tgt'],
      ['CHAP_R', R_7_TARGETSECRET12_AA99],
    ]),
    LoginStatus.AUTHENTICATION_FAILURE,
    /our own secret/,
  );

  assert.throws(() => new ChapInitiator({ name: '', secret: new ChapSecret('secretsecret'), random: counter() }), UsageError);
  assert.throws(() => new ChapInitiator({ name: 'a', secret: new ChapSecret('secretsecret'), random: counter(), challengeLength: 8 }), UsageError);
});

test('ChapSecret never prints its bytes; redact() scrubs secrets from text', () => {
  const s = new ChapSecret('hunter2hunter2');
  assert.equal(String(s), '[redacted]');
  assert.equal(`${s}`, '[redacted]');
  assert.equal(JSON.stringify({ s }), '{"s":"[redacted]"}');
  assert.ok(!inspect(s).includes('hunter2'));
  assert.ok(!inspect({ deep: { s } }, { depth: 5 }).includes('hunter2'));
  assert.equal(Buffer.from(s.bytes).toString(), 'hunter2hunter2');
  assert.equal(s.length, 14);
  assert.ok(s.equals(new ChapSecret(Buffer.from('hunter2hunter2'))));
  assert.ok(!s.equals(new ChapSecret('hunter2hunter3')));
  assert.ok(!s.equals(new ChapSecret('hunter2')));
  assert.equal(redact('peer said hunter2hunter2, then hunter2hunter2!', [s]), 'peer said [redacted], then [redacted]!');
  assert.equal(redact('ab abc', ['ab', 'abc']), '[redacted] [redacted]', 'longest first');
  assert.equal(redact('nothing here', [new Uint8Array(0), '']), 'nothing here');
});

test('parseChapSecretsFile: accounts, comments, blank lines, CRLF', () => {
  const text = '# initiators\r\n\r\nalice secretsecret\r\n  bob\tbobs-secret-123  \n# end\n';
  const m = parseChapSecretsFile(text, 'chap.txt');
  assert.deepEqual([...m.keys()], ['alice', 'bob']);
  assert.equal(Buffer.from(m.get('bob')!.bytes).toString(), 'bobs-secret-123');
  const one = parseChapSecretsFile('iqn.2026-11.test:ram targetsecret12\n', 'mutual.txt', true);
  assert.equal(one.size, 1);
  assert.equal(CHAP_SECRET_MIN, 12);
});

test('secrets file errors name the file and line, never the secret', () => {
  const secret = 'Zq9-secret-token';
  const cases: [string, boolean, number, string][] = [
    [`alice\n`, false, 1, ChapFileProblem.FIELDS],
    [`# c\nalice ${secret} extra\n`, false, 2, ChapFileProblem.FIELDS],
    [`${secret}\n`, false, 1, ChapFileProblem.FIELDS],
    [`alice Zq9-short\n`, false, 1, ChapFileProblem.SHORT_SECRET],
    [`alice ${'Z'.repeat(256)}\n`, false, 1, ChapFileProblem.LONG_SECRET],
    [`${'n'.repeat(256)} ${secret}\n`, false, 1, ChapFileProblem.LONG_NAME],
    [`alice ${secret}\nalice ${secret}x\n`, false, 2, ChapFileProblem.DUPLICATE_USER],
    [`# only comments\n\n`, false, 0, ChapFileProblem.NO_ENTRY],
    [`t ${secret}\nu ${secret}x\n`, true, 2, ChapFileProblem.MANY_ENTRIES],
    [`alice ${secret}\uFFFD\n`, false, 0, ChapFileProblem.NOT_UTF8],
  ];
  for (const [text, mutual, line, problem] of cases) {
    assert.throws(
      () => parseChapSecretsFile(text, '/etc/blkback/chap', mutual),
      (e: unknown) => {
        assert.ok(e instanceof ChapFileError);
        assert.ok(e instanceof UsageError);
        assert.equal(e.line, line, text);
        assert.equal(e.problem, problem);
        assert.equal(e.file, '/etc/blkback/chap');
        assert.ok(e.message.startsWith(line > 0 ? `/etc/blkback/chap:${line}: ` : '/etc/blkback/chap: '), e.message);
        assert.ok(!e.message.includes('Zq9'), e.message);
        assert.ok(!e.message.includes('alice'), 'no token of the line at all');
        return true;
      },
    );
  }
});

test('checkMutualSecret refuses a target secret equal to an initiator secret', () => {
  const initiators = parseChapSecretsFile('alice secretsecret\nbob bobs-secret-123\n', 'chap');
  checkMutualSecret(initiators, parseChapSecretsFile('tgt targetsecret12\n', 'mutual', true), 'mutual');
  assert.throws(
    () => checkMutualSecret(initiators, parseChapSecretsFile('tgt bobs-secret-123\n', 'mutual', true), 'mutual'),
    (e: unknown) => e instanceof ChapFileError && e.problem === ChapFileProblem.MUTUAL_EQUALS_INITIATOR && !e.message.includes('bobs'),
  );
});
