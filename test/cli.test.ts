// The command line as a user meets it: the compiled `blkback` entry point run as a child process.
import { test } from 'node:test';
import { skipOnThisHost, stopIfMissing } from './helpers-tools.ts';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commands } from '../src/cli/commands/index.ts';
import { AIO_CASES, aioBenchUnavailable } from '../src/bench/aio-bench.ts';

// Compiled layout: dist/test/cli.test.js -> dist/src/cli/main.js; examples/ sits beside dist/.
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

function blkback(args: readonly string[], timeoutMs = 20_000): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

test('--help lists every command; no command is a usage error', async () => {
  const [help, none, unknown] = await Promise.all([blkback(['--help']), blkback([]), blkback(['frobnicate'])]);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /usage: blkback <command>/);
  assert.ok(commands.length >= 3);
  for (const c of commands) {
    assert.match(help.stdout, new RegExp(`^\\s+${c.name}\\s+\\S`, 'm'), `--help lists ${c.name}`);
    assert.ok(help.stdout.includes(c.summary), `--help gives ${c.name}'s summary`);
  }
  assert.equal(none.code, 2);
  assert.match(none.stdout, /commands:/);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command 'frobnicate'/);
});

test("every subcommand's --help exits 0 and teaches: usage, options, an example", async () => {
  const runs = commands.flatMap((c) => ['--help', '-h'].map(async (flag) => ({ c, flag, r: await blkback([c.name, flag]) })));
  for (const { c, flag, r } of await Promise.all(runs)) {
    assert.equal(r.code, 0, `${c.name} ${flag}: ${r.stderr}`);
    const text = r.stdout;
    assert.match(text, new RegExp(`blkback ${c.name}`), `${c.name}: names itself`);
    assert.match(text, /usage:/i, `${c.name}: has a usage line`);
    assert.match(text, /options?:/i, `${c.name}: lists its options`);
    assert.match(text, /example/i, `${c.name}: shows an example`);
    assert.match(text, /\n\s+--[a-z]/, `${c.name}: describes at least one --option`);
    assert.ok(text.split('\n').length >= 8, `${c.name}: more than a one-liner`);
  }
});

test('run examples/guest-phy.cfg without --map names /dev/sdb and suggests --map', async (t) => {
  if (existsSync('/dev/sdb')) return skipOnThisHost(t, 'this machine has a real /dev/sdb: the run would use it');
  const started = Date.now();
  const r = await blkback(['run', join(EXAMPLES, 'guest-phy.cfg'), '--operations', '50']);
  const elapsed = Date.now() - started;
  assert.notEqual(r.code, 0, 'fails');
  assert.match(r.stderr, /\/dev\/sdb/);
  assert.match(r.stderr, /--map \/dev\/sdb=/);
  assert.match(r.stderr, /phy-xvda: failed: guest phy-xvda \(domain \d+\): disk xvda: disk target '\/dev\/sdb' does not exist/);
  assert.doesNotMatch(r.stderr, /InitWait|internal error/);
  assert.ok(elapsed < 5000, `fails at once, not after the frontend's 10 s handshake timeout (${elapsed} ms)`);
});

test('run examples/guest-phy.cfg --map /dev/sdb=ram:64M exits 0 and lists the ignored keys once', async () => {
  const cfg = join(EXAMPLES, 'guest-phy.cfg');
  const r = await blkback(['run', cfg, '--map', '/dev/sdb=ram:64M', '--operations', '300']);
  assert.equal(r.code, 0, r.stderr);
  const ignored = r.stderr.split('\n').filter((l) => /ignor/i.test(l));
  assert.equal(ignored.length, 1, `one line about ignored keys:\n${r.stderr}`);
  const line = ignored[0]!;
  assert.ok(line.includes(cfg), 'the line names the config file');
  for (const key of ['kernel', 'ramdisk', 'extra', 'maxmem', 'on_crash', 'vif', 'vfb']) assert.match(line, new RegExp(`\\b${key}\\b`), `ignores ${key}`);
  for (const key of ['name', 'memory', 'vcpus', 'disk']) assert.doesNotMatch(line, new RegExp(`[ ,:]${key}(,|$)`), `honours ${key}`);
  assert.match(r.stderr, /phy-xvda: ok/);
});

test('a syntax error in a config file is reported as file:line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-cli-'));
  try {
    const cfg = join(dir, 'broken.cfg');
    writeFileSync(cfg, 'name = "broken"\nmemory = 256\ndisk = [ \'phy:/dev/sdb,xvda,w\' \nvcpus = 1\n');
    const r = await blkback(['run', cfg, '--map', '/dev/sdb=ram:16M']);
    assert.equal(r.code, 2, `a usage error: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${cfg.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:[34]: `), r.stderr);
    assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);

    const bad = join(dir, 'bad-value.cfg');
    writeFileSync(bad, '# comment\nname = "x"\nmemory = = 3\n');
    const r2 = await blkback(['run', bad]);
    assert.equal(r2.code, 2);
    assert.ok(r2.stderr.includes(`${bad}:3:`), r2.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench --suite aio --json: native AIO, the thread pool and fio on one loop device, with our CPU per I/O', async (t) => {
  const why = aioBenchUnavailable();
  if (why !== null && stopIfMissing(t, { what: why, install: 'run as root; apt-get install fio util-linux' })) return;
  const r = await blkback(['bench', '--suite', 'aio', '--quick', '--seconds', '0.2', '--json'], 60_000);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { device: string; results: Record<string, unknown>[] };
  assert.match(doc.device, /^\/dev\/loop\d+ \(direct-io=on\)/);
  assert.equal(doc.results.length, AIO_CASES.length * 3);
  for (const c of AIO_CASES) {
    const rows = doc.results.filter((x) => x.rw === c.rw && x.bs === c.bs && x.iodepth === c.iodepth);
    assert.deepEqual(rows.map((x) => x.path).sort(), ['fio', 'native', 'threads']);
    for (const row of rows) {
      assert.ok(typeof row.iops === 'number' && row.iops > 0, `${String(row.path)} iops ${String(row.iops)}`);
      if (row.path === 'fio') assert.equal(row.cpuUsPerIo, null, 'fio runs in another process');
      else assert.ok(typeof row.cpuUsPerIo === 'number' && row.cpuUsPerIo > 0, `${String(row.path)} cpu ${String(row.cpuUsPerIo)}`);
    }
  }
});

test('bench --quick --no-kernel --json prints results {path, rw, bs, iodepth, iops, mbps} and the machine', async () => {
  // A small --span keeps the RAM disk's prefill short; the options under test are the brief's.
  const r = await blkback(['bench', '--quick', '--no-kernel', '--bs', '4k', '--iodepth', '1', '--seconds', '0.2', '--span', '16M', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { machine: Record<string, unknown>; results: Record<string, unknown>[] };
  assert.equal(typeof doc.machine, 'object');
  assert.ok(doc.machine !== null);
  assert.equal(typeof doc.machine.cores, 'number');
  assert.equal(typeof doc.machine.node, 'string');
  assert.ok(Array.isArray(doc.results) && doc.results.length > 0);
  const paths = new Set<unknown>();
  for (const row of doc.results) {
    paths.add(row.path);
    assert.equal(typeof row.path, 'string');
    assert.ok(row.rw === 'randread' || row.rw === 'randwrite', String(row.rw));
    assert.equal(row.bs, 4096);
    assert.equal(row.iodepth, 1);
    assert.equal(row.round, 1, '--quick runs one round');
    assert.ok(typeof row.iops === 'number' && row.iops > 0, `iops ${String(row.iops)}`);
    assert.ok(typeof row.mbps === 'number' && row.mbps > 0, `mbps ${String(row.mbps)}`);
    assert.ok(Math.abs((row.iops as number) * 4096 - (row.mbps as number) * 1e6) / ((row.mbps as number) * 1e6) < 0.05, 'mbps = iops * bs / 1e6');
  }
  assert.ok(paths.has('guest') && paths.has('bare'), `both paths measured: ${[...paths].join(', ')}`);
  assert.ok(!paths.has('kernel'), '--no-kernel leaves the kernel path out');
  assert.equal(new Set(doc.results.map((x) => x.rw)).size, 2, 'both randread and randwrite by default');
});

test('reproduce --xen refuses what belongs to the simulated rig, and bad sizes, before booting anything', async () => {
  for (const [args, why] of [
    [['--rig', 'local'], /--rig is not for --xen/],
    [['--link', '1gbit'], /--link is not for --xen/],
    [['--runs', '10'], /--runs: '10' is not a run count \(1\.\.9 with --xen\)/],
    [['--size', '4G'], /--size: 4096 MiB: with --xen a LUN is 16M to 1G/],
  ] as const) {
    const r = await blkback(['reproduce', '--xen', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: a usage error (${r.stderr})`);
    assert.match(r.stderr, why);
  }
  const cache = await blkback(['reproduce', '--cache', '/tmp/x']);
  assert.equal(cache.code, 2);
  assert.match(cache.stderr, /--cache is the Xen image cache: it goes with --xen/);
});
