// `blkback fuzz` as a user runs it: a short campaign on every data path finds nothing and shows that
// it tried what it says (malformed requests answered as owed, counters checked, overflows, scribbles,
// canaries, a neighbour whose bytes were checked); --show regenerates a request from the seed; and
// negative controls, each a store broken on purpose (test/fixtures/fuzz/broken-store-campaign.ts),
// prove that each detector reports what it is there for, and nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { CampaignReport } from '../src/fuzz/campaign.ts';
import { hostileDisk, hostileStream } from '../src/fuzz/campaign.ts';
import { FINDING_KINDS, HOSTILE_DISKS } from '../src/fuzz/findings.ts';
import type { FindingKind } from '../src/fuzz/findings.ts';
import { describeRequest, FAMILIES, FamilyTable, FuzzRequest, generateRequest } from '../src/fuzz/generator.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const CONTROL = fileURLToPath(new URL('./fixtures/fuzz/broken-store-campaign.js', import.meta.url));

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: readonly string[], timeoutMs = 60_000): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

function only(report: CampaignReport, kind: FindingKind): void {
  assert.ok(report.findings[kind] > 0, `${kind} found: ${JSON.stringify(report.findings)}`);
  for (const k of FINDING_KINDS)
    if (k !== kind) assert.equal(report.findings[k], 0, `no ${k} finding: ${JSON.stringify(report.details.filter((d) => d.kind === k))}`);
  const detail = report.details.find((d) => d.kind === kind);
  assert.ok(detail !== undefined, `${kind} is detailed`);
  assert.equal(detail.seed, report.seed, 'a finding names the seed');
  assert.equal(detail.dataPath, report.legs[0]!.dataPath, 'and the data path');
}

test('a short campaign on every data path: nothing found, and everything tried', { timeout: 120_000 }, async () => {
  const r = await run([MAIN, 'fuzz', '--requests', '60000', '--seed', '20', '--data-path', 'all', '--solo', '0.3', '--progress', '0.5', '--json'], 110_000);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as CampaignReport;
  assert.equal(report.seed, 20);
  assert.match(r.stderr, /seed 20/, 'the seed is printed');
  assert.match(r.stderr, /^fuzz \[\d\/3 (map|persistent|copy)\] [\d,]+\/20,000 requests .*\/s.*findings: none$/m, 'progress lines');
  assert.deepEqual(
    report.legs.map((l) => l.dataPath),
    ['map', 'persistent', 'copy'],
  );
  assert.deepEqual(report.findings, Object.fromEntries(FINDING_KINDS.map((k) => [k, 0])), JSON.stringify(report.details, null, 2));
  for (const leg of report.legs) {
    const what = `data path ${leg.dataPath}`;
    assert.equal(leg.requests, 20_000, `${what}: its share of the requests`);
    assert.equal(leg.answered, leg.requests, `${what}: every request answered`);
    const checked = HOSTILE_DISKS.filter((d) => d !== 'chaos');
    for (const d of checked) {
      const t = leg.disks[d];
      assert.ok(t.malformed > 0, `${what}: malformed requests on ${d}`);
      assert.equal(t.malformedRight, t.malformed, `${what}: each malformed request on ${d} got the answer owed`);
      assert.ok(t.counterChecks > 0, `${what}: ${d}'s counters were checked`);
    }
    assert.ok(leg.disks.rw.overflows >= 1 && leg.disks.rw.reconnects === leg.disks.rw.overflows, `${what}: req_prod overflowed, then a fresh ring`);
    assert.equal(leg.backendErrors.ring_overflow, leg.disks.rw.overflows, `${what}: each overflow counted once`);
    assert.ok(leg.disks.chaos.requests > 0 && leg.chaos.scribbles > 0 && leg.chaos.storms > 0, `${what}: the chaos disk was scribbled on`);
    assert.ok(leg.canaries > 0 && leg.scans > 0, `${what}: canaries were scanned`);
    const nb = leg.neighbour;
    assert.ok(nb !== null && nb.reads > 0 && nb.writes > 0 && nb.mismatches === 0 && nb.finalMismatches === 0, `${what}: the neighbour checked its reads`);
    assert.ok(nb.shareJudged, `${what}: the neighbour's share was judged`);
    const tried = new Set(
      Object.entries(leg.tried)
        .filter(([, n]) => n > 0)
        .map(([name]) => name),
    );
    for (const f of FAMILIES) {
      if (HOSTILE_DISKS.some((d) => f.applies(new FamilyTable(hostileDisk(d)).disk))) assert.ok(tried.has(f.name), `${what}: tried '${f.name}'`);
    }
  }
});

test('--show regenerates a request from the seed; bad options are usage errors', async () => {
  const table = new FamilyTable(hostileDisk('ro'));
  const r = new FuzzRequest();
  let index = 0;
  while (generateRequest(99, hostileStream(0, 'ro'), index, table, r).expectKind !== 'read_only') index++;
  const shown = await run([MAIN, 'fuzz', '--show', `0:ro:${index}`, '--seed', '99']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.ok(shown.stdout.includes(describeRequest(r)), shown.stdout);
  assert.match(shown.stdout, /owed: ERROR, counted as read_only/);
  for (const args of [
    ['--data-path', 'dma'],
    ['--requests', '0'],
    ['--guests', 'x'],
    ['--show', '0:zz:1'],
    ['--seed', '-1'],
    ['--seed=-1'],
    ['--frobnicate'],
  ]) {
    const bad = await run([MAIN, 'fuzz', ...args]);
    assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
  }
  const help = await run([MAIN, 'fuzz', '--help']);
  for (const k of FINDING_KINDS) assert.match(help.stdout, new RegExp(`^  ${k} `, 'm'), `--help says what ${k} means`);
});

async function control(name: string, dataPath = 'map'): Promise<{ out: Outcome; report: CampaignReport | null }> {
  const out = await run([CONTROL, name, dataPath], 60_000);
  return { out, report: out.stdout.trim() === '' ? null : (JSON.parse(out.stdout) as CampaignReport) };
}

test('negative controls: each broken store is reported by its detector', { timeout: 180_000 }, async (t) => {
  await t.test("a store that flips a bit in the neighbour's reads: corruption", async () => {
    const { report } = await control('corrupt-neighbour');
    only(report!, 'corruption');
    assert.match(report!.details[0]!.message, /neighbour's disk differs/);
  });
  await t.test('a store that writes past the pages it was given: out_of_grant (a canary changed)', async () => {
    const { report } = await control('write-outside-grant');
    only(report!, 'out_of_grant');
    assert.match(report!.details[0]!.message, /frame \d+ \(guard page between checked data pages\) changed/);
  });
  await t.test('a store that stops answering: hang, naming the request', async () => {
    const { report } = await control('never-answers');
    only(report!, 'hang');
    const hang = report!.details.find((d) => d.kind === 'hang')!;
    assert.equal(hang.guest, 0);
    assert.equal(hang.disk, 'rw');
    assert.ok(hang.index !== undefined && hang.request !== undefined, 'the request index and the request');
  });
  await t.test('a store that fails reads and throws in a callback: protocol and crash', async () => {
    const { report } = await control('failing-store');
    assert.ok(report!.findings.crash >= 1, JSON.stringify(report!.findings));
    assert.ok(report!.findings.protocol >= 1, JSON.stringify(report!.findings));
    assert.match(report!.details.find((d) => d.kind === 'crash')!.message, /deliberate: a store callback that throws/);
    assert.match(report!.details.find((d) => d.kind === 'protocol')!.message, /status ERROR, owed OKAY|io_error/);
    for (const k of ['hang', 'out_of_grant', 'corruption', 'share'] as const) assert.equal(report!.findings[k], 0, k);
  });
  await t.test('a store that never returns the thread: the watchdog ends the run with status 1', async () => {
    const { out } = await control('stuck-thread');
    assert.equal(out.code, 1, out.stderr);
    assert.match(out.stderr, /HANG: the backend's thread has not run for/);
    assert.match(out.stderr, /seed 7, data path map/);
  });
  await t.test('a neighbour served 20 ms late: share', async () => {
    const { report } = await control('slow-neighbour');
    only(report!, 'share');
    const nb = report!.legs[0]!.neighbour!;
    assert.ok(nb.shareJudged && nb.share < nb.equalShare / 2, `share ${nb.share}`);
  });
});
