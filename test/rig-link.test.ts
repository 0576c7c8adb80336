// The seed's storage link (src/rig/): `--link` parsing; then, as root, a real namespace and veth pair
// shaped to 1 Gbit/s with our iSCSI target behind it, measured with QEMU's iSCSI client: the link
// caps throughput both ways near its rate, bytes written across it are the bytes read back, and
// teardown leaves no namespace or veth behind (after close(), and after SIGTERM to the owner).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeLink, linkBytesPerSecond, parseLinkSpec } from '../src/rig/link-spec.ts';
import { leftoverLinkNames, openStorageLink, subnetAddresses, tbfArgs, vethNames } from '../src/rig/link.ts';
import { startTargetBehindLink } from '../src/rig/iscsi-target-server.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';

const TARGET = 'iqn.2026-12.org.blkback:rig-link';
const MiB = 1024 * 1024;

function rootMissing(): Missing | undefined {
  if (process.getuid?.() !== 0) return { what: 'root, for a network namespace, veth and tc', install: 'run the tests as root, as CI does' };
  return missingTools(['ip', 'tc', 'qemu-img', 'qemu-io'], 'iproute2 qemu-utils qemu-block-extra');
}

test('--link: none, tc bit rates, and one-line errors for everything else', () => {
  assert.deepEqual(parseLinkSpec('none'), { kind: 'none', text: 'none' });
  assert.equal(linkBytesPerSecond(parseLinkSpec('1gbit')), 125_000_000);
  assert.equal((parseLinkSpec('100mbit') as { bitsPerSecond: number }).bitsPerSecond, 100_000_000);
  assert.equal((parseLinkSpec('2.5GBit') as { bitsPerSecond: number }).bitsPerSecond, 2_500_000_000);
  assert.equal((parseLinkSpec('500000kbit') as { bitsPerSecond: number }).bitsPerSecond, 500_000_000);
  assert.equal(linkBytesPerSecond(parseLinkSpec('none')), undefined);
  assert.match(describeLink(parseLinkSpec('1gbit')), /^1gbit \(125\.0 MB\/s\)$/);
  for (const bad of ['', '1g', '1gbps', 'fast', '-1gbit', '1 gbit', '10kbit', '2tbit', '1e9bit']) {
    assert.throws(
      () => parseLinkSpec(bad),
      (e: Error) => e.name === 'UsageError' && /--link/.test(e.message),
      bad,
    );
  }
});

test('link names fit IFNAMSIZ and every /30 is distinct, its two addresses inside it', () => {
  const seen = new Set<string>();
  for (const index of [0, 1, 63, 64, 16383]) {
    const names = vethNames(index);
    assert.ok(names.host.length <= 15 && names.server.length <= 15);
    const a = subnetAddresses(index);
    assert.ok(!seen.has(a.host) && !seen.has(a.server));
    seen.add(a.host).add(a.server);
    const last = (s: string): number => Number(s.split('.')[3]);
    assert.equal(last(a.host) % 4, 1);
    assert.equal(last(a.server), last(a.host) + 1);
  }
  const args = tbfArgs('bbh0001', 1e9);
  assert.deepEqual(args.slice(args.indexOf('rate'), args.indexOf('rate') + 2), ['rate', '1000000000bit']);
  assert.ok(Number(args[args.indexOf('burst') + 1]!.replace('b', '')) >= 64 * 1024);
});

/** Payload bytes per second of a qemu-img bench run, from its own "Run completed in S seconds". */
async function bench(url: string, write: boolean, bytes: number): Promise<number> {
  const size = MiB;
  const r = await run(
    'qemu-img',
    ['bench', '-f', 'raw', '-t', 'none', ...(write ? ['-w'] : []), '-c', String(bytes / size), '-d', '16', '-s', String(size), url],
    { timeoutMs: 120_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  const seconds = Number(/Run completed in ([\d.]+) seconds/.exec(r.stdout)?.[1]);
  assert.ok(seconds > 0, r.stdout);
  return bytes / seconds;
}

test('1gbit link: our target in its namespace, throughput capped near 125 MB/s both ways, bytes intact, nothing left behind', async (t) => {
  if (stopIfMissing(t, rootMissing())) return;
  const spec = parseLinkSpec('1gbit');
  const rate = linkBytesPerSecond(spec)!;
  const link = await openStorageLink(spec);
  const work = mkdtempSync(join(tmpdir(), 'blkback-rig-link-'));
  try {
    assert.equal(link.fallback, undefined);
    assert.ok(link.shaped && link.namespace !== undefined && link.hostInterface !== undefined);
    const target = await startTargetBehindLink(link, { luns: ['1=ram:320M'], targetName: TARGET });
    const url = target.url(1);

    // Integrity first: random bytes in through qemu-img convert, back out, compared byte for byte.
    const content = randomBytes(16 * MiB);
    writeFileSync(join(work, 'in.raw'), content);
    for (const args of [
      ['convert', '-f', 'raw', '-O', 'raw', '-n', join(work, 'in.raw'), url],
      ['convert', '-f', 'raw', '-O', 'raw', url, join(work, 'out.raw')],
    ]) {
      const r = await run('qemu-img', args, { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
    }
    assert.ok(readFileSync(join(work, 'out.raw')).subarray(0, content.length).equals(content), 'the LUN gave back what was written across the link');
    const io = await run('qemu-io', [
      '-f',
      'raw',
      '-t',
      'none',
      '-c',
      'write -P 0xa5 300M 4M',
      '-c',
      'flush',
      '-c',
      'read -P 0xa5 300M 4M',
      '-c',
      `read -P 0 ${16 * MiB} 1M`,
      url,
    ]);
    assert.equal(io.code, 0, io.stderr);
    assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed/);

    // The shaper is what limits: never faster than the rate (the bucket's burst is 1 ms of it), and
    // close to it, so the link is not just slow. Reads cross the namespace's end, writes the host's.
    const written = await bench(url, true, 256 * MiB);
    const read = await bench(url, false, 256 * MiB);
    t.diagnostic(
      `payload across ${describeLink(spec)}: write ${(written / 1e6).toFixed(1)} MB/s (${(written / rate).toFixed(2)}x), read ${(read / 1e6).toFixed(1)} MB/s (${(read / rate).toFixed(2)}x)`,
    );
    assert.ok(written <= 1.05 * rate, `writes at ${(written / 1e6).toFixed(1)} MB/s: the host's end is not shaped to ${spec.text}`);
    assert.ok(read <= 1.05 * rate, `reads at ${(read / 1e6).toFixed(1)} MB/s: the namespace's end is not shaped to ${spec.text}`);
    assert.ok(written >= 0.75 * rate, `writes at ${(written / 1e6).toFixed(1)} MB/s: far below the link's ${spec.text}`);
    await target.stop();
  } finally {
    await link.close();
    rmSync(work, { recursive: true, force: true });
  }
  const left = await leftoverLinkNames();
  assert.ok(!left.namespaces.includes(link.namespace!), `namespace ${link.namespace} left behind`);
  assert.ok(!left.interfaces.includes(link.hostInterface!), `veth ${link.hostInterface} left behind`);
});

const LINK_JS = fileURLToPath(new URL('../src/rig/link.js', import.meta.url));
const SPEC_JS = fileURLToPath(new URL('../src/rig/link-spec.js', import.meta.url));

test('a process holding a link that gets SIGTERM removes its namespace and veth; one killed outright is swept by the next open', async (t) => {
  if (stopIfMissing(t, rootMissing())) return;
  const owner = async (): Promise<{ child: ReturnType<typeof spawn>; ns: string; iface: string }> => {
    const script = `import { openStorageLink } from ${JSON.stringify(LINK_JS)}; import { parseLinkSpec } from ${JSON.stringify(SPEC_JS)};
const l = await openStorageLink(parseLinkSpec('100mbit')); console.log(l.namespace + ' ' + l.hostInterface); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.trim());
      });
      child.once('exit', (code) => reject(new Error(`link owner exited ${code} before opening`)));
    });
    const [ns, iface] = line.split(' ') as [string, string];
    const left = await leftoverLinkNames();
    assert.ok(left.namespaces.includes(ns) && left.interfaces.includes(iface), 'the owner made its link');
    return { child, ns, iface };
  };
  const exited = (c: ReturnType<typeof spawn>): Promise<unknown> => new Promise((resolve) => c.once('exit', resolve));

  const a = await owner();
  const aExit = exited(a.child);
  a.child.kill('SIGTERM');
  await aExit;
  let left = await leftoverLinkNames();
  assert.ok(!left.namespaces.includes(a.ns) && !left.interfaces.includes(a.iface), 'SIGTERM left the link behind');

  const b = await owner();
  const bExit = exited(b.child);
  b.child.kill('SIGKILL');
  await bExit;
  const next = await openStorageLink(parseLinkSpec('none'));
  await next.close();
  left = await leftoverLinkNames();
  assert.ok(!left.namespaces.includes(b.ns), `the namespace of a killed owner (${b.ns}) was not swept`);
  assert.ok(!left.interfaces.includes(b.iface), `the veth of a killed owner (${b.iface}) was not swept`);
  assert.ok(!left.namespaces.includes(next.namespace!) && !left.interfaces.includes(next.hostInterface!));
});

test('without root the link is loopback, unshaped, and says so', async () => {
  const link = await openStorageLink(parseLinkSpec('1gbit'), { forceLoopback: true });
  try {
    assert.equal(link.serverAddress, '127.0.0.1');
    assert.equal(link.shaped, false);
    assert.match(link.fallback ?? '', /loopback, unshaped/);
  } finally {
    await link.close();
  }
});
