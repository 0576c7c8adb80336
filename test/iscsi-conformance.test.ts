// The iSCSI conformance gate: libiscsi's iscsi-test-cu (--test=ALL, two sessions, two initiator
// names) against Debian's tgtd (thick LUN) and against `blkback iscsi-target` (thick, thin and
// read-only LUNs), in the same run. Each configuration's per-test verdicts are compared with its
// stored list in test/fixtures/iscsi/conformance/; a test that passed there and does not pass now
// fails the gate. tgt's row is the reference printed beside ours (and checks the harness itself).
//
// Needs root, tgt and libiscsi-bin. Outside CI a missing tool skips (saying which); under CI=true
// it fails, and so does a missing stored list. Regenerate a list (after a deliberate change) with
//   npx tsc -p . && node dist/test/iscsi/conformance.js --target blkback --lun thin --fixture
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { onPath } from '../src/bench/iscsi-target.ts';
import type { LunMode } from '../src/bench/iscsi-target.ts';
import { tgtUnavailable } from '../src/bench/iscsi-tgt.ts';
import { stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';
import {
  ALL_TEST_COUNT,
  compareLists,
  countVerdicts,
  fixturePath,
  formatComparison,
  formatList,
  formatSummary,
  parseList,
  parseVerdicts,
  regenerateCommand,
  REPO_ROOT,
  runAgainst,
  TARGET_KINDS,
} from './iscsi/conformance.ts';
import type { TargetKind, TargetRun, VerdictList } from './iscsi/conformance.ts';

// As test/helpers-tools.ts: exactly CI=true (CI systems set it; .ci/run does not).
const CI = process.env.CI === 'true';

const CONFIGS: readonly { kind: TargetKind; mode: LunMode }[] = [
  { kind: 'tgt', mode: 'thick' },
  { kind: 'blkback', mode: 'thick' },
  { kind: 'blkback', mode: 'thin' },
  { kind: 'blkback', mode: 'readonly' },
  { kind: 'blkback', mode: 'thin-ram' },
];

// A run is mostly waiting (iscsi-test-cu spends ~4 s of CPU in 20-30 s): on 2 cores the four took
// 48 s at once against 129 s one after another, with the same verdicts
// (test/fixtures/iscsi/conformance/README.md). BLKBACK_ISCSI_CONFORMANCE_CONCURRENCY=1 serialises.
const CONCURRENCY = Math.max(1, Number(process.env.BLKBACK_ISCSI_CONFORMANCE_CONCURRENCY ?? CONFIGS.length) || CONFIGS.length);

/** What a configuration needs and this machine lacks (a tool), or undefined. */
function missingTools(kind: TargetKind | null): Missing | undefined {
  if (!onPath('iscsi-test-cu')) return { what: 'iscsi-test-cu not found', install: 'apt-get install libiscsi-bin' };
  const tgt = kind === 'tgt' ? tgtUnavailable() : null;
  return tgt === null ? undefined : { what: tgt, install: 'apt-get install tgt; run as root' };
}

const tail = (s: string, lines = 40): string => s.trimEnd().split('\n').slice(-lines).join('\n');

test('iSCSI conformance (iscsi-test-cu --test=ALL): tgt thick and blkback thick/thin/read-only keep every stored pass', {
  timeout: 360_000,
  concurrency: CONCURRENCY,
}, async (t) => {
  if (stopIfMissing(t, missingTools(null))) return;
  const rows: { label: string; now?: VerdictList; stored?: VerdictList; note?: string }[] = [];
  const started = Date.now();
  await Promise.all(
    CONFIGS.map(({ kind, mode }) =>
      t.test(`${kind} ${mode}`, async (st) => {
        const label = `${kind} ${mode}`;
        const missing = missingTools(kind);
        if (missing !== undefined) rows.push({ label, note: missing.what });
        if (stopIfMissing(st, missing)) return;
        const listFile = fixturePath(kind, mode);
        const stored = existsSync(listFile) ? parseList(readFileSync(listFile, 'utf8')) : undefined;
        let run: TargetRun;
        try {
          run = await runAgainst(TARGET_KINDS[kind], mode, { timeoutMs: 240_000 });
        } catch (err) {
          rows.push({ label, ...(stored === undefined ? {} : { stored }), note: 'did not run' });
          throw err;
        }
        const c = countVerdicts(run.verdicts);
        const note = `${run.wallSeconds.toFixed(1)} s, exit ${run.exitCode ?? 'killed'}`;
        rows.push({ label, now: run.verdicts, ...(stored === undefined ? {} : { stored }), note });
        st.diagnostic(`${label}: ${c.pass} pass, ${c.fail} fail, ${c.skip} skip of ${c.total} in ${run.wallSeconds.toFixed(1)} s (${run.target.url})`);
        const context = `\n--- iscsi-test-cu output (end) ---\n${tail(run.output)}\n--- ${kind} target output (end) ---\n${tail(run.target.output)}`;
        if (stored === undefined) {
          // Still run (the failure then shows what a list would hold), but nothing to gate against.
          const dir = mkdtempSync(join(tmpdir(), 'iscsi-conformance-'));
          const file = join(dir, `${kind}-${mode}.txt`);
          writeFileSync(file, formatList(run.verdicts));
          const why = `no stored verdict list ${listFile}; generate it with: ${regenerateCommand(kind, mode)} (this run's list: ${file})`;
          if (CI) assert.fail(why);
          st.skip(`not gated: ${why}`);
          return;
        }
        const cmp = compareLists(stored, run.verdicts);
        if (cmp.improvements.length > 0)
          st.diagnostic(`${label}: ${cmp.improvements.length} improvement(s) over the stored list; to keep them: ${regenerateCommand(kind, mode)}`);
        assert.equal(
          cmp.regressions.length,
          0,
          `${label}: ${cmp.regressions.length} test(s) that pass in ${listFile} do not pass now\n${formatComparison(cmp)}${c.total === ALL_TEST_COUNT ? '' : `\n(${c.total} verdicts, not ${ALL_TEST_COUNT}: the run was cut short)`}${context}`,
        );
      }),
    ),
  );
  // One diagnostic a line: the reporters escape newlines inside one.
  t.diagnostic(`all configurations in ${((Date.now() - started) / 1000).toFixed(1)} s (concurrency ${CONCURRENCY}):`);
  const table = formatSummary(CONFIGS.map((c) => rows.find((r) => r.label === `${c.kind} ${c.mode}`) ?? { label: `${c.kind} ${c.mode}`, note: 'no result' }));
  for (const line of table.split('\n')) t.diagnostic(line);
});

test('verdict parser: the -v output of the stored tgt thick run gives the stored list; interleavings; comparison', () => {
  // tgt-thick.v-output.txt: a real run's -v output, its assert listings cut to 3 lines each.
  const dir = join(REPO_ROOT, 'test', 'fixtures', 'iscsi', 'conformance');
  const parsed = parseVerdicts(readFileSync(join(dir, 'tgt-thick.v-output.txt'), 'utf8'));
  assert.equal(formatList(parsed), readFileSync(join(dir, 'tgt-thick.txt'), 'utf8'));
  assert.deepEqual(countVerdicts(parsed), { pass: 162, fail: 9, skip: 59, total: ALL_TEST_COUNT });

  const out = [
    'found matching LU device identifier for all (2) paths',
    'Suite: S1',
    '  Test: Skip ...    [SKIPPED] X is not implemented.',
    '    [SKIPPED] X is not implemented.',
    'passed',
    '  Test: FailMsg ...    [FAILED] Y successful but should have failed',
    'FAILED',
    '    1. t.c:38  - CU_ASSERT_EQUAL(_r,0)',
    '  Test: PassThenSetupMsg ...passed    [FAILED] PRIN command: failed with sense.',
    '    [FAILED] PRIN command: failed with sense.',
    '',
    'Suite: S2',
    '  Test: SkipThenFail ...    [SKIPPED] Z is not implemented.',
    '    [FAILED] W failed with wrong sense.',
    '',
    'FAILED',
    '  Test: Plain ...passed',
    'a message with no newline Suite: S3',
    '  Test: Cut ...    [SKIPPED] half a line',
  ].join('\n');
  assert.deepEqual(
    [...parseVerdicts(out)],
    [
      ['S1.Skip', 'skip'],
      ['S1.FailMsg', 'fail'],
      ['S1.PassThenSetupMsg', 'pass'],
      ['S2.SkipThenFail', 'fail'],
      ['S2.Plain', 'pass'],
      ['S3.Cut', 'fail'],
    ],
  );

  const stored = parseList('B.x pass\nA.y fail\nC.z skip\nD.w pass\n');
  assert.equal(formatList(stored), 'A.y fail\nB.x pass\nC.z skip\nD.w pass\n');
  const now = new Map([
    ['A.y', 'pass'],
    ['B.x', 'skip'],
    ['C.z', 'fail'],
    ['E.v', 'pass'],
  ] as const);
  const cmp = compareLists(stored, new Map(now));
  assert.deepEqual(cmp.regressions, [
    { name: 'B.x', now: 'skip' },
    { name: 'D.w', now: 'missing' },
  ]);
  assert.deepEqual(cmp.improvements, [
    { name: 'A.y', was: 'fail' },
    { name: 'E.v', was: 'missing' },
  ]);
  assert.deepEqual(cmp.other, [{ name: 'C.z', was: 'skip', now: 'fail' }]);
  assert.throws(() => parseList('A.b maybe\n'), /not 'Suite.Test pass\|fail\|skip'/);
});
