// The live handshake seen by Xen's own tools: a simulated host serves its xenstore on a Unix socket
// while a guest is connected, and Debian's xenstore-utils (libxenstore, found through
// XENSTORED_PATH) read blkback's keys as they would on a real dom0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRamDisk } from '../src/block/ram.ts';
import { SimHost } from '../src/sim-host/host.ts';
import type { HoldReport } from './fixtures/guest2/hold.ts';
import { releasePath } from './fixtures/guest2/release.ts';
import { missingTools, run, stopIfMissing } from './helpers-tools.ts';

const HOLD = new URL('./fixtures/guest2/hold.js', import.meta.url);
const TOOLS = ['xenstore-ls', 'xenstore-read'];
const XVDA = 51712;

/** Runs a tool against the daemon on `socket` (it answers on this thread) and returns its output. */
async function tool(socket: string, name: string, ...args: string[]): Promise<string> {
  const r = await run(name, args, { timeoutMs: 5000, env: { ...process.env, XENSTORED_PATH: socket } });
  if (r.code !== 0) throw new Error(`${name} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Parses `xenstore-ls` output (nested by indentation, `key = "value"`) into full paths. */
function parseLs(root: string, text: string): Map<string, string> {
  const out = new Map<string, string>();
  const stack: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^( *)([^ =]+) = "(.*)"$/.exec(line);
    if (m === null) continue;
    const depth = m[1]!.length;
    stack.length = depth;
    stack[depth] = m[2]!;
    out.set(`${root}/${stack.join('/')}`, m[3]!);
  }
  return out;
}

test('xenstore-ls and xenstore-read show the live backend of a connected guest', async (t) => {
  if (stopIfMissing(t, missingTools(TOOLS, 'xenstore-utils'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'blkback-live-'));
  const socket = join(dir, 'xenstored.sock');
  const host = await SimHost.start({ xenstoreSocket: socket });
  try {
    host.registerStore('live', createRamDisk(32 << 20));
    let ready!: (r: HoldReport) => void;
    const report = new Promise<HoldReport>((resolve) => (ready = resolve));
    const guest = await host.createGuest(
      { name: 'live', memoryMiB: 32, disks: [{ target: 'live', vdev: 'xvda', readOnly: false, backendtype: 'phy' }] },
      { workload: HOLD, params: { maxMs: 10_000 }, onReport: (m) => ready(m as HoldReport) },
    );
    assert.equal((await report).checked, true);

    const root = '/local/domain/0/backend/vbd';
    const be = `${root}/${guest.domid}/${XVDA}`;
    const tree = parseLs(root, await tool(socket, 'xenstore-ls', root));
    assert.equal(tree.get(`${be}/state`), '4', 'the live backend is Connected');
    assert.equal(tree.get(`${be}/sectors`), String((32 << 20) / 512));
    assert.equal(tree.get(`${be}/feature-flush-cache`), '1');
    assert.equal(tree.get(`${be}/feature-barrier`), '1');
    assert.equal(tree.get(`${be}/max-ring-page-order`), '4');
    assert.equal(tree.get(`${be}/info`), '0');
    assert.equal(tree.get(`${be}/sector-size`), '512');
    assert.equal(tree.get(`${be}/frontend`), `/local/domain/${guest.domid}/device/vbd/${XVDA}`);
    assert.equal(tree.get(`${be}/params`), 'live');

    assert.equal((await tool(socket, 'xenstore-read', `${be}/state`)).trim(), '4');
    assert.equal((await tool(socket, 'xenstore-read', `${be}/sectors`)).trim(), '65536');
    assert.equal((await tool(socket, 'xenstore-read', `/local/domain/${guest.domid}/device/vbd/${XVDA}/state`)).trim(), '4');

    await host.xs.write(releasePath(guest.domid), '1');
    assert.equal(((await guest.result) as { released: boolean }).released, true);
  } finally {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
