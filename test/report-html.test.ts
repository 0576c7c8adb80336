import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderBandwidthChart } from '../src/report/bandwidth-chart.ts';
import { renderReport } from '../src/report/html.ts';
import type { ReportInput } from '../src/report/html.ts';
import { formatCell, formatTable } from '../src/report/table.ts';
import type { BlockError } from '../src/internal/errors.ts';

function chart(title: string): string {
  return renderBandwidthChart({
    title,
    series: [
      {
        label: 'phy run 1',
        group: 'phy',
        points: [
          [500, 900_000],
          [1000, 950_000],
          [1500, 940_000],
        ],
      },
      {
        label: 'file run 1',
        group: 'file',
        points: [
          [500, 760_000],
          [1000, 780_000],
          [1500, 770_000],
        ],
      },
    ],
  });
}

function sampleInput(): ReportInput {
  return {
    title: 'blkback reproduce: phy vs file',
    setup: {
      machine: { cpu: 'Intel Xeon @ 2.2GHz', cores: 2, memory: '8 GiB', kernel: { release: '6.1.0', arch: 'x86_64' } },
      notes: ["The seed's iSCSI RAM disk -> one file in /dev/shm", 'phy = loop device, O_DIRECT; file = page cache'],
      configs: [{ name: 'guest-phy.cfg', text: "disk = [ 'phy:/dev/sdb,xvda,w']\n" }],
      jobs: [{ name: 'randw.fio', text: '[/dev/xvda]\nrw=randw\n; a <script>alert(1)</script> & more\n' }],
    },
    plots: [
      { title: 'randw-bw', svg: `<?xml version="1.0" encoding="UTF-8"?>\n${chart('Bandwidth - randw')}`, caption: '64 KiB random writes' },
      { title: 'iometer-bw', svg: chart('Bandwidth - iometer') },
    ],
    table: {
      columns: ['job', 'backend', 'bw MiB/s', 'IOPS', 'p50 us', 'p99 us', 'file/phy', 'seed'],
      rows: [
        ['randw', 'phy', 912.4, 14598, 18, 95, '-', '-'],
        ['randw', 'file', 770.25, 12324, 22, 130, 0.8442, 0.85],
      ],
    },
    extra: 'Runs were scaled: size=256m.\n\nSecond paragraph <b>not bold</b>.',
  };
}

test('renderReport: self-contained, with the plots, the table, the configs and the job files', () => {
  const html = renderReport(sampleInput());
  assert.match(html, /^<!DOCTYPE html>\n<html lang="en">/);
  assert.match(html, /<meta charset="utf-8">/);
  assert.match(html, /<style>[\s\S]+<\/style>/);
  // Nothing fetched, nothing run.
  assert.doesNotMatch(html, /<script/i);
  assert.doesNotMatch(html, /<link/i);
  assert.doesNotMatch(html, /(?:src|href)\s*=\s*["']?\s*(?:https?:)?\/\//i);
  assert.doesNotMatch(html, /url\(/i);
  for (const m of html.matchAll(/(?:src|href)\s*=\s*"([^"]*)"/gi)) assert.match(m[1] ?? '', /^#/, 'only in-page links');
  // The only http:// is the SVG namespace, which is an identifier, not a fetch.
  assert.deepEqual(
    [...html.matchAll(/https?:\/\/[^"\s]*/g)].map((m) => m[0]),
    ['http://www.w3.org/2000/svg', 'http://www.w3.org/2000/svg'],
  );

  // Both plots inlined without their XML prolog, in order, with captions.
  assert.equal((html.match(/<svg /g) ?? []).length, 2);
  assert.doesNotMatch(html, /<\?xml/);
  assert.ok(html.indexOf('Bandwidth - randw') < html.indexOf('Bandwidth - iometer'));
  assert.equal((html.match(/class="series-line"/g) ?? []).length, 4);
  assert.match(html, /<figcaption>randw-bw: 64 KiB random writes<\/figcaption>/);
  assert.match(html, /<figcaption>iometer-bw<\/figcaption>/);

  // Setup: machine values (objects as JSON), notes as text.
  assert.match(html, /<th>cores<\/th><td>2<\/td>/);
  assert.match(html, /<th>kernel<\/th><td>\{&quot;release&quot;:&quot;6\.1\.0&quot;,&quot;arch&quot;:&quot;x86_64&quot;\}<\/td>/);
  assert.match(html, /<li>The seed&#39;s iSCSI RAM disk -&gt; one file in \/dev\/shm<\/li>/);

  // The table: numbers right-aligned and formatted, text columns left.
  assert.match(html, /<th>backend<\/th><th class="num">bw MiB\/s<\/th>/);
  assert.match(html, /<td>file<\/td><td class="num">770<\/td><td class="num">12324<\/td>/);
  assert.match(html, /<td class="num">0\.844<\/td><td class="num">0\.850<\/td><\/tr>/);

  // Configs and job files as given, escaped: the job's '<script>' is text.
  assert.match(html, /<h3>guest-phy\.cfg<\/h3>\n<pre>disk = \[ &#39;phy:\/dev\/sdb,xvda,w&#39;\]\n<\/pre>/);
  assert.match(html, /<pre>\[\/dev\/xvda\]\nrw=randw\n; a &lt;script&gt;alert\(1\)&lt;\/script&gt; &amp; more\n<\/pre>/);

  // extra: escaped paragraphs.
  assert.match(html, /<p>Runs were scaled: size=256m\.<\/p>\n<p>Second paragraph &lt;b&gt;not bold&lt;\/b&gt;\.<\/p>/);
  assert.ok(html.indexOf('id="setup"') < html.indexOf('id="plots"'));
  assert.ok(html.indexOf('id="plots"') < html.indexOf('id="results"'));
  assert.ok(html.indexOf('id="results"') < html.indexOf('id="jobs"'));
});

test('renderReport: empty sections say so; a plot that would run or fetch is refused', () => {
  const { extra: _extra, ...base } = sampleInput();
  const html = renderReport({ ...base, plots: [], setup: { ...base.setup, configs: [], jobs: [], notes: [] }, table: { columns: ['a'], rows: [] } });
  assert.match(html, /<p class="none">No plots\.<\/p>/);
  assert.equal((html.match(/<p class="none">None\.<\/p>/g) ?? []).length, 2);
  assert.doesNotMatch(html, /id="notes"|<ul class="notes"|href="#notes"/);
  assert.doesNotMatch(renderReport({ ...base, extra: ' \n ' }), /id="notes"/);

  const bad: [string, RegExp][] = [
    ['<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', /plot 1 \('p'\) has scripts/],
    ['<svg xmlns="http://www.w3.org/2000/svg"><image href="https://example.com/x.png"/></svg>', /external references/],
    ['<svg xmlns="http://www.w3.org/2000/svg"><rect onload="x()"/></svg>', /event handlers/],
    ['<p>not svg</p>', /plot 1 \('p'\) is not an SVG document/],
  ];
  for (const [svg, message] of bad) {
    assert.throws(
      () => renderReport({ ...base, plots: [{ title: 'p', svg }] }),
      (err: BlockError) => {
        assert.equal(err.code, 'BLK_ERR_USAGE');
        assert.match(err.message, message);
        return true;
      },
      svg,
    );
  }
});

test('formatTable: aligned columns, numbers right, text left', () => {
  const out = formatTable(
    ['job', 'backend', 'MiB/s', 'IOPS', 'file/phy'],
    [
      ['randw', 'phy', 912.4, 14598, '-'],
      ['randw', 'file', 770.25, 12324, 0.8442],
      ['iometer', 'phy', 1.5, 7, ''],
    ],
  );
  assert.equal(
    out,
    [
      'job      backend  MiB/s   IOPS  file/phy',
      '-------  -------  -----  -----  --------',
      'randw    phy        912  14598         -',
      'randw    file       770  12324     0.844',
      'iometer  phy       1.50      7',
      '',
    ].join('\n'),
  );
  assert.equal(formatTable(['a', 'bb'], []), 'a  bb\n-  --\n');
  assert.equal(formatCell(56.78), '56.8');
  assert.equal(formatCell(3.14159), '3.14');
  assert.equal(formatCell(Number.NaN), 'NaN');
  assert.equal(formatCell('x'), 'x');
});

test('further tables follow the main one, each under its heading, escaped, with its caption', () => {
  const html = renderReport({
    ...sampleInput(),
    tables: [
      { title: "dom0's CPU per I/O", columns: ['job', 'ours/kernel'], rows: [['randw', '1.25']], caption: 'samples <2 s> apart' },
      { title: 'system calls per request', columns: ['disk', 'per request'], rows: [['xvdb', '0.45']] },
    ],
  });
  const results = html.slice(html.indexOf('<section id="results">'), html.indexOf('<section id="configs">'));
  const cpu = results.indexOf('<h3>dom0&#39;s CPU per I/O</h3>');
  const sys = results.indexOf('<h3>system calls per request</h3>');
  assert.ok(cpu > results.indexOf('</table>'), 'after the main table');
  assert.ok(sys > cpu, 'in the order given');
  assert.match(results.slice(cpu, sys), /<td[^>]*>1\.25<\/td>/);
  assert.match(results.slice(cpu, sys), /<p>samples &lt;2 s&gt; apart<\/p>/);
  assert.match(results.slice(sys), /<td[^>]*>xvdb<\/td>/);
  assert.equal((results.match(/<table class="results">/g) ?? []).length, 3);
});
