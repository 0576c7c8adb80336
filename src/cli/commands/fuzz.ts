import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { DataPath } from '../../blkback/ring-server.ts';
import { UsageError } from '../../internal/errors.ts';
import { DATA_PATHS, formatDuration, formatRate, hostileDisk, hostileStream, runCampaign } from '../../fuzz/campaign.ts';
import type { CampaignReport, LegReport } from '../../fuzz/campaign.ts';
import { FINDING_KINDS, FINDING_MEANINGS, formatFinding, HOSTILE_DISKS, totalFindings } from '../../fuzz/findings.ts';
import type { HostileDiskName } from '../../fuzz/findings.ts';
import { describeRequest, FamilyTable, FuzzRequest, generateRequest, statusName } from '../../fuzz/generator.ts';
import type { Command } from '../command.ts';

const help = `blkback fuzz — attack the backend with hostile guests, and say what broke

usage: blkback fuzz [--requests N] [--seed S] [--data-path map|persistent|copy|all] [--guests N]
                    [--deadline SECONDS] [--min-share F] [--solo SECONDS] [--progress SECONDS] [--json]
       blkback fuzz --show GUEST:DISK:INDEX [--seed S]

Runs blkback in the simulated host (no Xen needed) and sets hostile guests on it, each a worker
thread with its own bare blkif frontend, beside a well-behaved neighbour guest. What they try:
  - requests from a seeded generator, valid and malformed, of every operation: read, write, flush,
    barrier (with and without data), discard, indirect read and write, unknown operations;
    with bad segment counts (0, 12-255, 0 or past the advertised indirect maximum), first_sect >
    last_sect, last_sect past the page, segments and sectors not whole 4 KiB blocks, ranges past
    the end or beyond 2^32 sectors, refs never granted, reserved, past the table, revoked, granted
    to another domain, and reads into read-only grants; writes, flushes and discards to a
    read-only disk. Each malformed request breaks one rule, so the answer it is owed is known.
    Three such disks per guest: rw (512-byte sectors, both ring ABIs), ro (read-only, 32-bit
    ABI) and 4k (4 KiB sectors); ring sizes from 1 to 16 pages;
  - on the rw disk, every so often, a req_prod far past the ring (the backend must halt that ring
    and count it once); the guest then closes it and connects a fresh one;
  - a chaos disk whose ring slots, indirect pages and grant entries (flags, domid, frame) the guest
    rewrites while its requests are in flight, and storms of hundreds of notifications.
The neighbour shares the store with the hostile disks (its disk lies between theirs), writes and
reads its whole disk with many I/Os in flight, and checks every byte it reads.

What counts as a finding:
${FINDING_KINDS.map((k) => `  ${k.padEnd(13)}${FINDING_MEANINGS[k]}`).join('\n')}
The answer to every malformed request is checked (exactly one answer, its status, operation, id
and zero padding), and after every few thousand requests, with the ring drained, the backend's
error counters are compared with the faults sent. Guest memory is scanned for changed canaries:
pages granted read-only, granted to another domain, revoked, or lying between data pages.

Reproducing: the same seed gives the same requests. A finding names the seed, the data path, the
guest, the disk and the request's index in that disk's stream; --show prints that request and
the answer owed, without running anything. (What the backend sees on the chaos disk also depends
on timing.)

Options:
  --requests N           requests in all, over every data path and guest (default 100000;
                         1e7 and 10M are understood)
  --seed S               the generator's seed (default: a random one, printed)
  --data-path P          map (grant-map the guest's pages), persistent (map once and keep),
                         copy (grant copy through bounce pages), or all (default: one after the
                         other, on a fresh host each, the requests shared between them)
  --guests N             hostile guests (default 1); the neighbour comes on top
  --deadline SECONDS     a request unanswered this long is a hang (default 10); the backend's
                         thread standing still for 3 times as long (at least 30 s) ends the run
  --min-share F          the neighbour's share of the backend's service, while others have
                         requests queued, below F times an equal share is a finding (default 0.5)
  --solo SECONDS         how long the neighbour runs alone first, for its solo rate (default 1)
  --progress SECONDS     a progress line on stderr this often (default 2)
  --json                 print the report as JSON on stdout (findings in full included)
  --show G:DISK:INDEX    print request INDEX of guest G's DISK (rw, ro, 4k or chaos) and the
                         answer owed, then exit

Exit status: 0 with no finding, 1 with any, 2 on a usage error.

examples:
  blkback fuzz --requests 20000 --seed 1
  nice blkback fuzz --requests 1e7 --guests 2 --data-path all --json > fuzz.json
  blkback fuzz --show 0:rw:123456 --seed 42
`;

function parseFuzzArgs(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      requests: { type: 'string' },
      seed: { type: 'string' },
      'data-path': { type: 'string' },
      guests: { type: 'string' },
      deadline: { type: 'string' },
      'min-share': { type: 'string' },
      progress: { type: 'string' },
      solo: { type: 'string' },
      json: { type: 'boolean', default: false },
      show: { type: 'string' },
    },
  });
}

function parseCount(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined) return fallback;
  const m = /^(\d+(?:\.\d+)?)(?:e(\d+)|([kKmMgG]))?$/.exec(text.trim());
  const scale =
    m === null ? NaN : m[2] !== undefined ? 10 ** Number(m[2]) : m[3] !== undefined ? { k: 1e3, m: 1e6, g: 1e9 }[m[3].toLowerCase() as 'k' | 'm' | 'g'] : 1;
  const n = m === null ? NaN : Number(m[1]) * scale;
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${what}: '${text}' is not a positive whole number`);
  return n;
}

function parseSeconds(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${what}: '${text}' is not a positive number of seconds`);
  return n;
}

function parseSeed(text: string | undefined): number {
  if (text === undefined) return randomInt(0, 0x100000000);
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new UsageError(`--seed: '${text}' is not a whole number from 0 to 4294967295`);
  return n;
}

function show(spec: string, seed: number): string {
  const m = /^(\d+):(rw|ro|4k|chaos):(\d+)$/.exec(spec);
  if (m === null) throw new UsageError(`--show: '${spec}' is not GUEST:DISK:INDEX (DISK one of ${HOSTILE_DISKS.join(', ')})`);
  const guest = Number(m[1]);
  const disk = m[2] as HostileDiskName;
  const index = Number(m[3]);
  const r = generateRequest(seed, hostileStream(guest, disk), index, new FamilyTable(hostileDisk(disk)), new FuzzRequest());
  const owed = `${statusName(r.expectStatus)}${r.expectKind === null ? '' : `, counted as ${r.expectKind}`}, operation ${r.expectOp} echoed`;
  return `seed ${seed}, guest ${guest}, disk ${disk}, request #${index}:\n  ${describeRequest(r)}\n  owed: ${owed}${disk === 'chaos' ? '\n  (on the chaos disk the guest rewrites requests in flight: what the backend saw depends on timing)' : ''}\n`;
}

function legSummary(l: LegReport): string[] {
  const lines: string[] = [];
  const rate = l.requests / Math.max(0.001, l.durationMs / 1000);
  lines.push(
    `data path ${l.dataPath}: ${l.requests.toLocaleString('en-US')} requests in ${formatDuration(l.durationMs)} (${formatRate(rate)}/s), ${l.answered.toLocaleString('en-US')} answers`,
  );
  const tried = Object.entries(l.tried)
    .filter(([, n]) => n > 0)
    .map(([name, n]) => `${name} ${n}`)
    .join(', ');
  lines.push(`  tried: ${tried}`);
  const checked = HOSTILE_DISKS.filter((d) => d !== 'chaos');
  const malformed = checked.reduce((n, d) => n + l.disks[d].malformed, 0);
  const right = checked.reduce((n, d) => n + l.disks[d].malformedRight, 0);
  const checks = HOSTILE_DISKS.reduce((n, d) => n + l.disks[d].counterChecks, 0);
  lines.push(
    `  malformed: ${malformed} sent, ${right} answered once with the status, operation and id owed; counters checked ${checks} times (the backend counted ${
      Object.entries(l.backendErrors)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ') || 'no errors'
    })`,
  );
  lines.push(`  rings: ${l.disks.rw.overflows} req_prod overflows (${l.disks.rw.reconnects} fresh rings after them)`);
  lines.push(
    `  chaos: ${l.disks.chaos.requests} requests on the scribbled ring, ${l.chaos.scribbles} scribbles while they were in flight (${l.chaos.kinds.join(', ')}), ${l.chaos.storms} of them event storms`,
  );
  lines.push(`  canaries: ${l.canaries} pages, memory scanned ${l.scans} times`);
  const nb = l.neighbour;
  if (nb !== null) {
    lines.push(
      `  neighbour: ${nb.ops} I/Os (${(nb.bytes / 2 ** 20).toFixed(0)} MiB) checked, ${nb.mismatches} wrong; ${Math.round(nb.soloRate)} I/Os/s alone, ` +
        `${Math.round(nb.attackedRate)} beside the attack; ${(nb.share * 100).toFixed(1)}% of the contended service (equal share ${(nb.equalShare * 100).toFixed(1)}%` +
        `${nb.shareJudged ? '' : '; too short a run to judge'})`,
    );
  }
  const found = totalFindings(l.findings);
  lines.push(
    `  findings: ${
      found === 0
        ? 'none'
        : FINDING_KINDS.filter((k) => l.findings[k] > 0)
            .map((k) => `${k} ${l.findings[k]}`)
            .join(', ')
    }`,
  );
  return lines;
}

function summary(r: CampaignReport): string {
  const lines = [
    `blkback fuzz: seed ${r.seed}, ${r.guests} hostile guest${r.guests === 1 ? '' : 's'} + 1 neighbour, ${r.sent.toLocaleString('en-US')} of ${r.requests.toLocaleString('en-US')} requests in ${formatDuration(r.durationMs)}`,
    `machine: ${r.machine.cpus} × ${r.machine.model}, node ${r.machine.node}, ${r.machine.platform}`,
    '',
  ];
  for (const l of r.legs) lines.push(...legSummary(l), '');
  const total = totalFindings(r.findings);
  if (total === 0) lines.push('findings: none (0 crashes, 0 hangs, 0 out-of-grant accesses, 0 corruptions, 0 share, 0 protocol)');
  else {
    lines.push(
      `findings: ${total} (${FINDING_KINDS.filter((k) => r.findings[k] > 0)
        .map((k) => `${k} ${r.findings[k]}`)
        .join(', ')}); the first of each kind:`,
    );
    for (const f of r.details) lines.push(`  ${formatFinding(f)}`);
  }
  return lines.join('\n') + '\n';
}

export const fuzzCommand: Command = {
  name: 'fuzz',
  summary: 'attack blkback with hostile simulated guests and report crashes, hangs, out-of-grant writes and corruption',
  help,
  async run(argv) {
    let parsed;
    try {
      parsed = parseFuzzArgs(argv);
    } catch (err) {
      throw new UsageError(`fuzz: ${err instanceof Error ? err.message.split('\n')[0] : String(err)} (see 'blkback fuzz --help')`);
    }
    const { values, positionals } = parsed;
    if (positionals.length > 0) throw new UsageError(`fuzz: unexpected argument '${positionals[0]}' (see 'blkback fuzz --help')`);
    const seed = parseSeed(values.seed);
    if (values.show !== undefined) {
      process.stdout.write(show(values.show, seed));
      return 0;
    }
    const dp = values['data-path'] ?? 'all';
    if (dp !== 'all' && !(DATA_PATHS as readonly string[]).includes(dp)) throw new UsageError(`--data-path: '${dp}' is not map, persistent, copy or all`);
    const dataPaths: DataPath[] = dp === 'all' ? [...DATA_PATHS] : [dp as DataPath];
    const requests = parseCount(values.requests, '--requests', 100_000);
    const guests = parseCount(values.guests, '--guests', 1);
    if (guests > 64) throw new UsageError(`--guests: ${guests} is more than 64`);
    const deadline = parseSeconds(values.deadline, '--deadline', 10);
    const progress = parseSeconds(values.progress, '--progress', 2);
    const solo = parseSeconds(values.solo, '--solo', 1);
    const minShare = values['min-share'] === undefined ? 0.5 : Number(values['min-share']);
    if (!(minShare >= 0 && minShare <= 1)) throw new UsageError(`--min-share: '${values['min-share']}' is not a number from 0 to 1`);
    const err = (line: string): void => void process.stderr.write(`${line}\n`);
    err(
      `blkback fuzz: seed ${seed}, ${requests.toLocaleString('en-US')} requests, data path ${dataPaths.join(', ')}, ${guests} hostile guest${guests === 1 ? '' : 's'} + 1 neighbour`,
    );
    const abort = new AbortController();
    const onSignal = (): void => {
      err('fuzz: stopping: the guests drain their rings, then the report');
      abort.abort();
    };
    process.once('SIGINT', onSignal);
    let report: CampaignReport;
    try {
      report = await runCampaign({
        requests,
        seed,
        dataPaths,
        guests,
        deadlineMs: deadline * 1000,
        watchdogMs: Math.max(30_000, 3 * deadline * 1000),
        minShare,
        soloMs: solo * 1000,
        progressMs: progress * 1000,
        onProgress: err,
        onFinding: (f) => err(`fuzz: ${formatFinding(f)}`),
        signal: abort.signal,
      });
    } finally {
      process.off('SIGINT', onSignal);
    }
    const text = summary(report);
    if (values.json) {
      err(text.trimEnd());
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else process.stdout.write(text);
    const code = totalFindings(report.findings) === 0 && !abort.signal.aborted ? 0 : 1;
    // A device whose store never answered cannot be torn down, and what it holds may keep the
    // process up: after a hang or a crash, end it once the report is out.
    if (report.legs.some((l) => l.teardownTimedOut) || report.findings.hang > 0 || report.findings.crash > 0) {
      await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
      process.exit(code);
    }
    return code;
  },
};
