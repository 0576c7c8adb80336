// `blkback reproduce --quick` end to end, in a temp dir: both seed job files in the seed's two guests,
// then valid PNG plots, their SVGs, a self-contained HTML report, fio-format logs and the table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { decodePng, distinctColours, parseXml, xmlElements } from './support/png-xml.ts';

const run = promisify(execFile);
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

test('reproduce --quick writes the plots, the report, every fio log and the table', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-reproduce-'));
  try {
    const out = join(dir, 'out');
    const { stdout, stderr } = await run(process.execPath, [MAIN, 'reproduce', '--quick', '--runtime', '1.5', '--out', out], { cwd: dir, maxBuffer: 16 << 20 });
    assert.match(stderr, /randw: phy run 1/);
    assert.match(stderr, /iometer: file run 1/);

    for (const job of ['randw', 'iometer']) {
      const png = decodePng(new Uint8Array(readFileSync(join(out, `${job}-bw.png`))));
      assert.equal(png.width, 1280);
      assert.equal(png.height, 768);
      assert.ok(distinctColours(png) > 20, `${job}-bw.png is not blank`);
      const svg = parseXml(readFileSync(join(out, `${job}-bw.svg`), 'utf8'));
      const paths = xmlElements(svg).filter((e) => e.name === 'path');
      assert.ok(paths.length >= 2, `${job}: one line per backend at least (${paths.length} paths)`);
    }

    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /^<!DOCTYPE html>/);
    assert.ok(!/<script\b|<link\b|\bsrc="https?:/.test(html), 'report is self-contained');
    assert.equal((html.match(/<svg\b/g) ?? []).length >= 2, true, 'both plots inlined');
    assert.match(html, /rw=randw/, 'the job files as given');
    assert.match(html, /phy:\/dev\/sdb,xvda,w/, 'the guest configs as given');

    // fio 3.33 log names and rows: randw has 4 jobs, iometer 2, per backend and run.
    for (const [job, jobs] of [
      ['randw', 4],
      ['iometer', 2],
    ] as const) {
      for (const backend of ['phy', 'file']) {
        const logDir = join(out, 'logs', job, `${backend}-run1`);
        const files = readdirSync(logDir);
        for (let n = 1; n <= jobs; n++) {
          for (const kind of ['bw', 'lat', 'clat', 'slat']) assert.ok(files.includes(`${job}_${kind}.${n}.log`), `${logDir}: ${job}_${kind}.${n}.log`);
        }
        const rows = readFileSync(join(logDir, `${job}_bw.1.log`), 'utf8')
          .trim()
          .split('\n');
        assert.ok(rows.length >= 2, `${job} ${backend}: bandwidth rows every 500 ms`);
        for (const row of rows) assert.match(row, /^\d+, \d+, [012], \d+, \d+$/, `fio 3.33 bw row: '${row}'`);
      }
    }

    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { summary: { job: string; backend: string; mibps: number; iops: number }[] };
    assert.equal(results.summary.length, 4);
    for (const s of results.summary) assert.ok(s.mibps > 0 && s.iops > 0, `${s.job}/${s.backend} moved data`);
    assert.match(stdout, /file\/phy/);
    assert.match(stdout, /~0\.85/);
    // The RAM store (a /dev/shm file behind a loop device, as root) is gone afterwards.
    if (existsSync('/dev/shm'))
      assert.deepEqual(
        readdirSync('/dev/shm').filter((f) => f.startsWith('blkback-reproduce-')),
        [],
      );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
