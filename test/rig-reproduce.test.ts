// The seed's rig end to end (as root): `reproduce --rig iscsi --quick` names its shaped link and the
// CPU of both ends and leaves no namespace behind; and bytes survive the whole chain, a guest over
// blkback over our initiator over the 1 Gbit/s link to our target, in the phy and the file guest:
// fio's crc32c verify inside the guest, then QEMU's client reading the guest's pattern off the LUN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseLinkSpec } from '../src/rig/link-spec.ts';
import { leftoverLinkNames } from '../src/rig/link.ts';
import { openIscsiRig } from '../src/rig/iscsi-rig.ts';
import { openBlockDevice } from '../src/stores/open.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { guestConfigFromXl } from '../src/sim-host/from-xl.ts';
import { parseXlConfig } from '../src/config/xl-cfg.ts';
import { runFio } from '../src/fio/session.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

function rootMissing(): Missing | undefined {
  if (process.getuid?.() !== 0) return { what: 'root, for a network namespace, veth and tc', install: 'run the tests as root, as CI does' };
  return missingTools(['ip', 'tc', 'qemu-io'], 'iproute2 qemu-utils qemu-block-extra');
}

test("reproduce --rig iscsi --quick: the report names the shaped link and both ends' CPU; no namespace or veth left", { timeout: 120_000 }, async (t) => {
  if (stopIfMissing(t, rootMissing())) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-rig-reproduce-'));
  try {
    const before = await leftoverLinkNames();
    const r = await run(process.execPath, [MAIN, 'reproduce', '--rig', 'iscsi', '--link', '1gbit', '--quick', '--runtime', '1.5', '--out', dir], {
      timeoutMs: 110_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /rig: 1gbit \(125\.0 MB\/s\): veth shaped with tc tbf/);
    const results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as {
      rig: string;
      link: string;
      target_cpu: string;
      initiator_cpu: string;
      initiator_main_thread_cpu: string;
      storage: { phy: string; file: string };
      summary: { mibps: number }[];
    };
    assert.equal(results.rig, 'iscsi');
    assert.match(results.link, /^1gbit .*namespace blkback-link-\d+-\d+ at 10\.231\.\d+\.\d+:3260/);
    assert.match(results.target_cpu, /^\d+\.\d s \(\d+% of one core/);
    assert.match(results.initiator_cpu, /^\d+\.\d s \(\d+% of one core/);
    assert.match(results.initiator_main_thread_cpu, /^\d+\.\d s \(\d+% of one core.*main thread: our initiator and blkback/);
    assert.ok(parseFloat(results.initiator_main_thread_cpu) <= parseFloat(results.initiator_cpu) + 0.05, 'the main thread is part of the process');
    assert.match(results.storage.phy, /^iscsi:\/\/10\.231\.\d+\.\d+:3260\/iqn\.[^/]+\/1 /);
    assert.equal(results.summary.length, 4);
    for (const s of results.summary) assert.ok(s.mibps > 0, 'every run moved data over the link');
    assert.match(readFileSync(join(dir, 'report.html'), 'utf8'), /1gbit \(125\.0 MB\/s\)/);
    const after = await leftoverLinkNames();
    assert.deepEqual(
      after.namespaces.filter((n) => !before.namespaces.includes(n)),
      [],
      'namespace left behind',
    );
    assert.deepEqual(
      after.interfaces.filter((n) => !before.interfaces.includes(n)),
      [],
      'veth left behind',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bytes intact through guest, blkback, our initiator, the 1gbit link and our target, in the phy and the file guest', { timeout: 120_000 }, async (t) => {
  if (stopIfMissing(t, rootMissing())) return;
  const rig = await openIscsiRig(parseLinkSpec('1gbit'), 64 << 20);
  try {
    assert.equal(rig.link.fallback, undefined);
    for (const [backend, cfg, region] of [
      ['phy', 'guest-phy.cfg', 0],
      ['file', 'guest-qdisk.cfg', 32],
    ] as const) {
      const guest = guestConfigFromXl(parseXlConfig(readFileSync(join(EXAMPLES, cfg), 'utf8'), cfg));
      // Random 64 KiB writes with crc32c headers, then fio reads each back and checks it; then a
      // sequential pass of a known byte that QEMU's client reads off the LUN without us.
      const text =
        `[verify]\nfilename=/dev/xvda\nrw=randwrite\nbs=64k\nioengine=libaio\ndirect=1\niodepth=16\noffset=${region}m\nsize=16m\nverify=crc32c\ndo_verify=1\n\n` +
        `[pattern]\nstonewall\nfilename=/dev/xvda\nrw=write\nbs=64k\nioengine=libaio\ndirect=1\niodepth=16\noffset=${region + 16}m\nsize=16m\nverify=pattern\nverify_pattern=0x${backend === 'phy' ? '5a' : 'c3'}\ndo_verify=0\n`;
      const device = await openBlockDevice(rig.lunSpec);
      const host = await SimHost.start();
      try {
        host.registerStore('/dev/sdb', device);
        const outcome = await runFio({ files: [{ path: 'verify.fio', text }], target: { kind: 'guest', guest, host }, logDir: null });
        for (const r of outcome.results) {
          assert.equal(r.error, 0, `${backend} ${r.job.name}: ${r.errorMessage} ${(r.errorReport ?? []).join(' ')}`);
        }
        const verify = outcome.results.find((r) => r.job.name === 'verify')!;
        assert.equal(verify.dirs[0].ioBytes, 16 << 20, `${backend}: the verify phase read back every byte written`);
      } finally {
        await host.stop();
        await device.close();
      }
      const io = await run('qemu-io', ['-f', 'raw', '-r', '-c', `read -P 0x${backend === 'phy' ? '5a' : 'c3'} ${region + 16}M 16M`, rig.lunSpec]);
      assert.equal(io.code, 0, io.stderr);
      assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed/, `${backend}: the LUN holds what the guest wrote`);
    }
  } finally {
    await rig.close();
  }
});
