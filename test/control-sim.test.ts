// The control socket on the simulated host, driven both by ControlClient and by the real CLI
// (`blkback ctl` as a child process): list, statistics that grow with the guest's I/O, hot-plug of a
// second disk the guest then uses, detach with the guest letting go, online resize, and bad requests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRamDisk } from '../src/block/ram.ts';
import { blkbackControlTarget } from '../src/control/blkback-target.ts';
import { ControlClient } from '../src/control/client.ts';
import type { ControlError } from '../src/control/protocol.ts';
import { serveControl } from '../src/control/server.ts';
import { simToolstack } from '../src/control/sim-toolstack.ts';
import type { DiskStatistics } from '../src/control/target.ts';
import { SimHost } from '../src/sim-host/host.ts';
import { stepPath } from './fixtures/control/hotplug-guest.ts';
import type { HotplugParams } from './fixtures/control/hotplug-guest.ts';
import { countBadSectors } from './helpers-guest.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const HOTPLUG = new URL('./fixtures/control/hotplug-guest.js', import.meta.url);
const MiB = 1 << 20;
const XVDA = 51712;
const XVDB = 51728;

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

function ctl(socket: string, args: readonly string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, 'ctl', '--socket', socket, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

/** Collects a guest's reports by type; `next(type)` resolves with the first of that type. */
function reports(): { onReport: (m: unknown) => void; next: <T>(type: string) => Promise<T> } {
  const seen = new Map<string, unknown>();
  const waiting = new Map<string, (m: unknown) => void>();
  return {
    onReport(m) {
      const type = (m as { type: string }).type;
      seen.set(type, m);
      waiting.get(type)?.(m);
    },
    next<T>(type: string) {
      if (seen.has(type)) return Promise.resolve(seen.get(type) as T);
      return new Promise<T>((resolve) => waiting.set(type, resolve as (m: unknown) => void));
    },
  };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const sum = (xs: readonly { count: number }[]): number => xs.reduce((a, b) => a + b.count, 0);

test('blkback ctl on the simulated host: list, stats, attach, detach, resize, bad requests', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-ctl-'));
  const socket = join(dir, 'control.sock');
  const logs: string[] = [];
  const host = await SimHost.start({ log: (line) => logs.push(line) });
  const root = createRamDisk(16 * MiB);
  const spare = createRamDisk(8 * MiB);
  host.registerStore('ctl-root', root);
  host.registerStore('/dev/ctl-spare', spare); // what the xl spec target=/dev/ctl-spare resolves to
  const control = await serveControl(blkbackControlTarget(host.blkback, simToolstack(host), { xenstore: host.xs }), { path: socket });
  const client = await ControlClient.connect(socket);
  const r = reports();
  const params: HotplugParams = { seed: 71, ioBytes: 256 << 10, ioOffset: MiB, hotBytes: MiB, maxWaitMs: 15_000 };
  try {
    assert.equal(statSync(socket).mode & 0o777, 0o600, 'the control socket is mode 0600');
    const guest = await host.createGuest(
      { name: 'ctl', memoryMiB: 32, disks: [{ target: 'ctl-root', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: HOTPLUG, params, onReport: r.onReport },
    );
    // A guest that fails ends every wait with its own error.
    const failed = guest.result.then(() => new Promise<never>(() => undefined));
    failed.catch(() => undefined);
    const report = <T>(type: string, what: string): Promise<T> => within(Promise.race([r.next<T>(type), failed]), 10_000, what);
    const d = guest.domid;
    const key = `${d}/${XVDA}`;
    await report('connected', 'the guest to connect');

    await t.test('list shows the disk (client and CLI)', async () => {
      const disks = await client.list();
      assert.equal(disks.length, 1);
      const disk = disks[0]!;
      assert.equal(disk.key, key);
      assert.equal(disk.vdev, 'xvda');
      assert.equal(disk.state, 'Connected');
      assert.equal(disk.store, 'phy:ctl-root');
      assert.equal(disk.size, 16 * MiB);
      assert.equal(disk.readOnly, false);
      assert.equal(disk.abi, 'x86_64');
      assert.ok(disk.ringPages >= 1);
      assert.equal(disk.dataPath, 'map', "the simulation's default data path");
      assert.equal(disk.grantsKept, 0);
      const out = await ctl(socket, ['list']);
      assert.equal(out.code, 0, out.stderr);
      const lines = out.stdout.trim().split('\n');
      assert.match(lines[0]!, /^DISK\s+VDEV\s+STATE\s+SIZE/);
      assert.match(lines[1]!, new RegExp(`^${key}\\s+xvda\\s+Connected\\s+16 MiB\\s+rw\\s+\\d+p\\s+x86_64\\s+map\\s+0\\s+phy:ctl-root$`));
    });

    await t.test('stats counters grow with the guest I/O, with Linux names and latency histograms', async () => {
      const [before] = await client.stats(key);
      await host.xs.write(stepPath(d), 'io');
      const io = await report<{ ok: boolean }>('io-done', 'the guest I/O');
      assert.equal(io.ok, true, 'the guest read back what it wrote');
      const [after] = await client.stats(`${d}/xvda`); // by vdev name this time
      assert.ok(before !== undefined && after !== undefined);
      const sectors = params.ioBytes / 512;
      assert.equal(after.wr_sect - before.wr_sect, sectors, 'wr_sect grew by the sectors written');
      assert.equal(after.rd_sect - before.rd_sect, sectors, 'rd_sect grew by the sectors read');
      assert.ok(after.wr_req > before.wr_req && after.rd_req > before.rd_req);
      assert.equal(after.oo_req, 0);
      assert.deepEqual(
        Object.values(after.errors).filter((n) => n !== 0),
        [],
      );
      const w = after.latency_ns.write;
      assert.equal(w.count, after.wr_req, 'one write latency per write request');
      assert.equal(sum(w.buckets), w.count, 'the histogram buckets hold every write');
      // Percentiles are fio's bucket midpoints: ordered, and within a bucket's width (1/64) of [min, max].
      assert.ok(w.min > 0 && w.p50 <= w.p90 && w.p90 <= w.p99 && w.p99 <= w.p999, JSON.stringify(w));
      assert.ok(w.p50 >= (w.min * 63) / 64 && w.p999 <= (w.max * 65) / 64, JSON.stringify(w));
      assert.equal(w.buckets.at(-1)!.le_ns, null, 'the last bucket has no upper bound');

      const human = await ctl(socket, ['stats', key]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, new RegExp(`^vbd-${d}-${XVDA} \\(${key}, xvda\\)`));
      for (const name of ['oo_req', 'rd_req', 'wr_req', 'f_req', 'ds_req', 'rd_sect', 'wr_sect'])
        assert.match(human.stdout, new RegExp(`^  ${name}\\s+\\d+$`, 'm'));
      assert.match(human.stdout, new RegExp(`^  wr_sect\\s+${after.wr_sect}$`, 'm'));
      assert.match(human.stdout, /^  errors\s+none$/m);
      assert.match(human.stdout, /^  latency\s+count\s+min\s+p50\s+p90\s+p99\s+p99\.9\s+max$/m);
      assert.match(human.stdout, new RegExp(`^    write\\s+${after.wr_req}\\s+\\S+s`, 'm'));
      assert.match(human.stdout, /^  histogram(\s+(<=|>)[\d.]+(ns|us|ms|s))+$/m);

      const json = await ctl(socket, ['stats', '--json']);
      assert.equal(json.code, 0, json.stderr);
      const parsed = JSON.parse(json.stdout) as DiskStatistics[];
      assert.equal(parsed.length, 1);
      assert.equal(parsed[0]!.wr_sect, after.wr_sect);
      assert.equal(parsed[0]!.latency_ns.read.count, after.latency_ns.read.count);
    });

    await t.test('attach a second disk (CLI): the guest writes and reads it back', async () => {
      const out = await ctl(socket, ['attach', String(d), 'format=raw,vdev=xvdb,access=rw,target=/dev/ctl-spare']);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stdout, `attached xvdb to domain ${d} (disk ${d}/${XVDB})\n`);
      const a = await report<{ devid: number; size: number; equal: boolean }>('attached', 'the guest to use the new disk');
      assert.equal(a.devid, XVDB);
      assert.equal(a.size, 8 * MiB);
      assert.equal(a.equal, true, 'the guest read back the bytes it wrote');
      assert.equal(await countBadSectors(spare, 0, params.hotBytes, params.seed + 1, 2), 0, 'and the spare store holds them');
      const disks = await client.list();
      assert.deepEqual(
        disks.map((x) => [x.key, x.vdev, x.store]),
        [
          [key, 'xvda', 'phy:ctl-root'],
          [`${d}/${XVDB}`, 'xvdb', 'phy:/dev/ctl-spare'],
        ],
      );
      const again = await ctl(socket, ['attach', String(d), 'vdev=xvdb,target=/dev/ctl-spare']);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /already has a disk xvdb/);
    });

    await t.test('detach (client): the guest lets go, blkback drops the disk, xvda still works', async () => {
      const started = Date.now();
      const result = await client.detach(d, 'xvdb');
      assert.deepEqual(result, { key: `${d}/${XVDB}`, vdev: 'xvdb' });
      assert.ok(Date.now() - started < 9000, 'the guest closed the disk: no forced remove after the timeout');
      assert.equal(host.blkback.vbds.has(`${d}/${XVDB}`), false);
      assert.equal(await host.xs.tryRead(`/local/domain/0/backend/vbd/${d}/${XVDB}/state`), undefined, 'backend entries removed');
      assert.equal(await host.xs.tryRead(`/local/domain/${d}/device/vbd/${XVDB}/state`), undefined, 'frontend entries removed');
      const detached = await report<{ xvdaOk: boolean }>('detached', 'the guest to report the detach');
      assert.equal(detached.xvdaOk, true);
      assert.ok(!logs.some((l) => l.includes('removing it anyway')), logs.join('\n'));
      assert.deepEqual(
        (await client.list()).map((x) => x.key),
        [key],
      );
    });

    await t.test('resize (CLI): the frontend sees the new size and writes at the new end', async () => {
      const out = await ctl(socket, ['resize', `${d}/xvda`, '32M']);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stdout, `resized ${key} (xvda) from 16 MiB to 32 MiB\n`);
      const rs = await report<{ oldSize: number; newSize: number; tailOk: boolean }>('resized', 'the guest to see the resize');
      assert.equal(rs.oldSize, 16 * MiB);
      assert.equal(rs.newSize, 32 * MiB);
      assert.equal(rs.tailOk, true);
      assert.equal(root.info.size, 32 * MiB);
      assert.equal((await client.list())[0]!.size, 32 * MiB);
    });

    await t.test('bad requests get error answers; the connection stays usable', async () => {
      const garbage = await client.sendRaw('this is not json');
      assert.equal(garbage.ok, false);
      assert.equal(garbage.id, null);
      assert.equal(!garbage.ok && garbage.error.code, 'CTL_ERR_BAD_JSON');
      const unknownOp = await client.sendRaw('{"v":1,"id":5,"op":"format-disk"}');
      assert.deepEqual([unknownOp.id, !unknownOp.ok && unknownOp.error.code], [5, 'CTL_ERR_UNKNOWN_OP']);
      const huge = await client.sendRaw(`{"v":1,"id":6,"op":"list","pad":"${'x'.repeat(100_000)}"}`);
      assert.equal(!huge.ok && huge.error.code, 'CTL_ERR_TOO_LONG');
      const odd = await client.sendRaw('{"v":1,"id":7,"op":"resize","disk":"1/xvda","size":-5}');
      assert.deepEqual([odd.id, !odd.ok && odd.error.code], [7, 'CTL_ERR_BAD_REQUEST']);
      await assert.rejects(client.resize(key, 1000), (e: ControlError) => e.code === 'CTL_ERR_BAD_ARGUMENT' && /512-byte sectors/.test(e.message));
      await assert.rejects(client.stats(`${d}/xvdc`), (e: ControlError) => e.code === 'CTL_ERR_UNKNOWN_DISK' && e.known?.join() === key);
      await assert.rejects(client.stats('xvda'), (e: ControlError) => e.code === 'CTL_ERR_BAD_ARGUMENT');
      await assert.rejects(client.detach(d, 'xvdq'), (e: ControlError) => e.code === 'CTL_ERR_UNKNOWN_DISK');
      await assert.rejects(
        client.attach(999, 'vdev=xvdc,target=/dev/ctl-spare'),
        (e: ControlError) => e.code === 'CTL_ERR_FAILED' && /no domain 999/.test(e.message),
      );
      await assert.rejects(
        client.attach(d, 'vdev=xvdc,format=qcow2,target=/x'),
        (e: ControlError) => e.code === 'CTL_ERR_BAD_ARGUMENT' && /qcow2/.test(e.message),
      );
      assert.equal((await client.list()).length, 1, 'still answering after all that');

      const cli = await ctl(socket, ['stats', `${d}/xvdc`]);
      assert.equal(cli.code, 1);
      assert.match(cli.stderr, new RegExp(`no disk ${d}/xvdc \\(${d}/51744\\) is served here; known disks: ${key} \\(xvda\\)`));
      assert.doesNotMatch(cli.stderr, /\n\s+at /, 'no stack trace');
      const usage = await ctl(socket, ['resize', key]);
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /usage: blkback ctl resize DISK SIZE/);
    });

    // Only now may the guest end (the toolstack then destroys it, and its disk goes).
    await host.xs.write(stepPath(d), 'done');
    assert.deepEqual(await within(guest.result, 10_000, 'the guest to finish'), { ok: true });
  } finally {
    client.close();
    await control.close();
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(existsSync(socket), false, 'the socket file is removed at close');
});

test('no server: ctl says how to start one; a live server is not displaced, a stale socket is replaced', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'blkback-ctl-'));
  const socket = join(dir, 'control.sock');
  try {
    const none = await ctl(socket, ['list']);
    assert.equal(none.code, 1);
    assert.match(
      none.stderr,
      /^blkback: no blkback control socket at .*control\.sock \(is blkback serve \(or blkback run\) running\? start it with --control-socket /,
    );
    assert.equal(none.stderr.trim().split('\n').length, 1, 'one line, no stack');

    // A stale socket: its server was killed without cleaning up.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((resolve) => child.on('exit', resolve));
    assert.ok(existsSync(socket), 'the killed server left its socket behind');
    const stale = await ctl(socket, ['list']);
    assert.match(stale.stderr, /stale socket of a blkback that has exited/);

    const host = await SimHost.start();
    try {
      const target = blkbackControlTarget(host.blkback, simToolstack(host));
      const first = await serveControl(target, { path: socket });
      await assert.rejects(serveControl(target, { path: socket }), /another blkback is serving it/);
      const empty = await ctl(socket, ['list']);
      assert.equal(empty.code, 0, empty.stderr);
      assert.match(empty.stdout, /^no disks are served/);
      await first.close();

      const file = join(dir, 'not-a-socket');
      writeFileSync(file, 'precious');
      await assert.rejects(serveControl(target, { path: file }), /exists and is not a socket/);
    } finally {
      await host.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
