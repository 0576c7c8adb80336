import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

test('Node exits by itself once both ends closed their event ports (and a guest waiting on a port stays alive)', () => {
  const script = fileURLToPath(new URL('./fixtures/hypervisor/exit-main.js', import.meta.url));
  const run = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(run.signal, null, `killed after 20 s: something kept the process alive\n${run.stdout}${run.stderr}`);
  assert.equal(run.status, 0, run.stderr);
  // 'backend closed' needs all three pongs, so the worker stayed alive while only waiting for events.
  const lines = run.stdout.trim().split('\n');
  assert.ok(lines.includes('backend closed'), run.stdout);
  assert.ok(lines.includes('worker exited 0'), run.stdout);
  assert.equal(lines.at(-1), 'main exiting');
});
