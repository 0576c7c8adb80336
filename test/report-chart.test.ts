import { test } from 'node:test';
import { stopIfMissing } from './helpers-tools.ts';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { renderBandwidthChart } from '../src/report/bandwidth-chart.ts';
import type { ChartSeries } from '../src/report/bandwidth-chart.ts';
import { svgToPng } from '../src/report/png.ts';
import { bandwidthUnitFor, formatTick, niceTicks } from '../src/report/scale.ts';
import { darkPixels, decodePng, distinctColours, parseXml, xmlElements } from './support/png-xml.ts';
import type { XmlElement } from './support/png-xml.ts';

/** Six lines like the seed's: phy and file, three runs each, ~900 and ~760 MiB/s for 20 s. */
function seedLikeSeries(): ChartSeries[] {
  const series: ChartSeries[] = [];
  for (const [group, base] of [
    ['phy', 900 * 1024],
    ['file', 760 * 1024],
  ] as const) {
    for (let run = 1; run <= 3; run++) {
      const points: [number, number][] = [];
      for (let i = 1; i <= 40; i++) points.push([i * 500 + (i % 3), base * (1 + 0.08 * Math.sin(i / 3 + run))]);
      series.push({ label: `${group} run ${run}`, group, points });
    }
  }
  return series;
}

const byClass = (root: XmlElement, name: string, cls: string): XmlElement[] =>
  xmlElements(root).filter((e) => e.name === name && (e.attrs['class'] ?? '').split(' ').includes(cls));

/** Absolute coordinates of an M/L path (what renderBandwidthChart writes). */
function pathPoints(d: string): [number, number][] {
  const out: [number, number][] = [];
  for (const m of d.matchAll(/([ML])(-?[\d.]+) (-?[\d.]+)/g)) out.push([Number(m[2]), Number(m[3])]);
  return out;
}

test('niceTicks: 1/2/5 steps, headroom, slack, no float noise', () => {
  assert.deepEqual(niceTicks(7.3, 8), { max: 8, step: 1, values: [0, 1, 2, 3, 4, 5, 6, 7, 8] });
  assert.deepEqual(niceTicks(950, 8).values, [0, 200, 400, 600, 800, 1000]);
  assert.deepEqual(niceTicks(0.7, 8).values, [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
  assert.equal(niceTicks(0).max, 1);
  assert.equal(niceTicks(Number.NaN).max, 1);
  // A run ending 2 ms after 20 s: axis ends at the data, ticks stop at 20.
  const x = niceTicks(20.002, 10, 0.02);
  assert.equal(x.max, 20.002);
  assert.deepEqual(x.values, [0, 5, 10, 15, 20]);
  assert.equal(niceTicks(20.002, 10).max, 25);
  assert.equal(niceTicks(23, 10, 0.02).max, 25);
  assert.equal(formatTick(0.1 + 0.2, 0.1), '0.3');
  assert.equal(formatTick(1000, 200), '1000');
});

test('bandwidthUnitFor: KiB/s, MiB/s or GiB/s by the peak', () => {
  assert.equal(bandwidthUnitFor(1500).name, 'KiB/s');
  assert.equal(bandwidthUnitFor(2048).name, 'MiB/s');
  assert.equal(bandwidthUnitFor(900 * 1024).name, 'MiB/s');
  assert.equal(bandwidthUnitFor(3 * 1024 * 1024).name, 'GiB/s');
  assert.equal(bandwidthUnitFor(0).name, 'KiB/s');
});

test('renderBandwidthChart: well-formed SVG, one path per series, axes, legend', () => {
  const series = seedLikeSeries();
  const svg = renderBandwidthChart({ title: 'Bandwidth - randw', series });
  const root = parseXml(svg);
  assert.equal(root.name, 'svg');
  assert.equal(root.attrs['width'], '1280');
  assert.equal(root.attrs['height'], '768');
  assert.equal(root.attrs['viewBox'], '0 0 1280 768');
  assert.equal(root.attrs['xmlns'], 'http://www.w3.org/2000/svg');

  const paths = byClass(root, 'path', 'series-line');
  assert.equal(paths.length, series.length);
  paths.forEach((p, i) => assert.equal(pathPoints(p.attrs['d'] ?? '').length, series[i]?.points.length, p.attrs['data-label']));

  const texts = xmlElements(root)
    .filter((e) => e.name === 'text')
    .map((e) => e.text);
  assert.ok(texts.includes('Bandwidth - randw'));
  assert.ok(texts.includes('Time (s)'));
  assert.ok(texts.includes('Bandwidth (MiB/s)'));
  assert.deepEqual(
    byClass(root, 'text', 'legend-entry').map((e) => e.text),
    series.map((s) => s.label),
  );

  // Colour by backend, dash by run: the three phy lines differ in dash, phy and file differ in hue.
  const stroke = (label: string): string => paths.find((p) => p.attrs['data-label'] === label)?.attrs['stroke'] ?? '';
  const dash = (label: string): string => paths.find((p) => p.attrs['data-label'] === label)?.attrs['stroke-dasharray'] ?? '';
  assert.notEqual(stroke('phy run 1'), stroke('file run 1'));
  assert.equal(new Set(['phy run 1', 'phy run 2', 'phy run 3'].map(dash)).size, 3);
  assert.deepEqual(['phy run 1', 'phy run 2', 'phy run 3'].map(dash), ['file run 1', 'file run 2', 'file run 3'].map(dash));

  // Every vertex lies inside the plot frame, and the peak is in the upper part of it.
  const frame = xmlElements(root).find((e) => e.name === 'rect' && e.attrs['stroke'] === '#444444');
  assert.ok(frame);
  const [fx, fy, fw, fh] = ['x', 'y', 'width', 'height'].map((k) => Number(frame.attrs[k]));
  let top = Infinity;
  for (const p of paths) {
    for (const [x, y] of pathPoints(p.attrs['d'] ?? '')) {
      assert.ok(x >= (fx as number) && x <= (fx as number) + (fw as number), `x ${x}`);
      assert.ok(y >= (fy as number) && y <= (fy as number) + (fh as number), `y ${y}`);
      top = Math.min(top, y);
    }
  }
  assert.ok(top < (fy as number) + (fh as number) * 0.3, 'peak uses the height');

  // y tick labels: evenly spaced numbers from 0, the top at or above the peak (~972 MiB/s).
  const ticks = xmlElements(root).find((e) => e.attrs['class'] === 'ticks');
  assert.ok(ticks);
  const yLabels = ticks.children.filter((t) => t.attrs['text-anchor'] === 'end').map((t) => Number(t.text));
  assert.equal(yLabels[0], 0);
  assert.ok((yLabels[yLabels.length - 1] as number) >= 972);
  const steps = new Set(yLabels.slice(1).map((v, i) => v - (yLabels[i] as number)));
  assert.equal(steps.size, 1);
  const xLabels = ticks.children.filter((t) => t.attrs['text-anchor'] === 'middle').map((t) => t.text);
  assert.deepEqual(xLabels, ['0', '5', '10', '15', '20']);
});

test('renderBandwidthChart: escapes text, picks KiB/s for small rates, survives empty input', () => {
  const svg = renderBandwidthChart({
    title: 'a <b> & "c"',
    yLabel: 'Throughput',
    series: [
      {
        label: 'x<y',
        group: 'g&h',
        points: [
          [500, 100],
          [1000, 1500],
        ],
      },
    ],
  });
  const root = parseXml(svg);
  const texts = xmlElements(root)
    .filter((e) => e.name === 'text')
    .map((e) => e.text);
  assert.ok(texts.includes('a <b> & "c"'));
  assert.ok(texts.includes('x<y'));
  assert.ok(texts.includes('Throughput (KiB/s)'));

  const empty = parseXml(renderBandwidthChart({ title: 'nothing', series: [] }));
  assert.equal(byClass(empty, 'path', 'series-line').length, 0);
  assert.ok(xmlElements(empty).some((e) => e.name === 'text' && e.text === 'no data'));

  const single = parseXml(renderBandwidthChart({ title: 'one', series: [{ label: 'a', group: 'a', points: [[500, 10]] }] }));
  assert.match(byClass(single, 'path', 'series-line')[0]?.attrs['d'] ?? '', /^M[\d.]+ [\d.]+ l/);
});

test('svgToPng: a valid 1280x768 PNG with the lines and readable text', (t) => {
  const series = seedLikeSeries();
  const png = svgToPng(renderBandwidthChart({ title: 'Bandwidth - randw', series }));
  const img = decodePng(png);
  assert.equal(img.width, 1280);
  assert.equal(img.height, 768);
  assert.ok(distinctColours(img) > 50, 'antialiased lines and text give many colours');

  // Both backends' colours are drawn (phy #1f77b4, file #d62728).
  const near = (rgb: [number, number, number]): number => {
    let n = 0;
    for (let i = 0; i < img.rgba.length; i += 4) {
      if (Math.abs((img.rgba[i] as number) - rgb[0]) + Math.abs((img.rgba[i + 1] as number) - rgb[1]) + Math.abs((img.rgba[i + 2] as number) - rgb[2]) < 30)
        n++;
    }
    return n;
  };
  assert.ok(near([0x1f, 0x77, 0xb4]) > 500);
  assert.ok(near([0xd6, 0x27, 0x28]) > 500);

  let fonts: string[] = [];
  try {
    fonts = readdirSync('/usr/share/fonts', { recursive: true })
      .map(String)
      .filter((f) => /\.(ttf|otf|ttc)$/i.test(f));
  } catch {
    // No font directory at all.
  }
  if (
    fonts.length === 0 &&
    stopIfMissing(t, { what: 'a font under /usr/share/fonts (resvg draws the labels with it)', install: 'apt-get install fonts-dejavu-core' })
  )
    return;
  // The title band holds dark text pixels only when a font was found; an empty title leaves it white.
  const band = { x: 0, y: 10, width: 1280, height: 45 };
  const withTitle = darkPixels(img, band);
  const blank = darkPixels(decodePng(svgToPng(renderBandwidthChart({ title: '', series }))), band);
  assert.equal(blank, 0);
  assert.ok(withTitle > 300, `title drew ${withTitle} dark pixels`);
});
