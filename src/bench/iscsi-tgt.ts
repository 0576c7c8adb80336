// Debian's tgtd (Linux SCSI target framework, userspace) as a reference iSCSI target, set up as in
// docs/iscsi-baselines.md §1: foreground daemon on 127.0.0.1:PORT, target tid 1, LUN 1 on a file
// with the rdwr backing store, ACL ALL. Each instance gets its own management socket
// (/var/run/tgtd/socket.N, tgtd -C N / tgtadm -C N). tgtd refuses N above 32767, so N is the iSCSI
// port's low 15 bits, moved on past any socket file that exists and any N taken here. A plain
// SIGTERM does not stop tgtd: stop() deletes the target (--force) and then the system, which makes
// tgtd exit, with SIGKILL as the last resort.
import { execFile, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { ChildWatch, findTool, runningTarget, sleep, targetSettings, waitForPort } from './iscsi-target.ts';
import type { RunningTarget, StartTarget } from './iscsi-target.ts';

export interface TgtTarget extends RunningTarget {
  readonly kind: 'tgt';
  /** tgtd's management port (-C): the N of /var/run/tgtd/socket.N. */
  readonly controlPort: number;
  /** Runs `tgtadm -C N --lld iscsi ARGS` against this instance; rejects on failure. */
  admin(args: readonly string[]): Promise<string>;
}

/** Why tgtd cannot run here, or null. */
export function tgtUnavailable(): string | null {
  const missing = ['tgtd', 'tgtadm'].filter((t) => findTool(t) === null);
  if (missing.length > 0) return `${missing.join(' and ')} not found (Debian package tgt)`;
  if (process.getuid?.() !== 0) return 'tgtd needs root (its management socket lives in /var/run/tgtd)';
  return null;
}

const controlPortsTaken = new Set<number>();

function pickControlPort(port: number): number {
  // 0 is tgtd's default: leave it to a system-wide tgtd.
  let n = port & 0x7fff || 1;
  while (controlPortsTaken.has(n) || existsSync(`/var/run/tgtd/socket.${n}`) || existsSync(`/var/run/tgtd/socket.${n}.lock`)) n = (n % 0x7fff) + 1;
  controlPortsTaken.add(n);
  return n;
}

function tgtadm(controlPort: number, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(findTool('tgtadm') ?? 'tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`tgtadm -C ${controlPort} --lld iscsi ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

export const startTgt = async (options: Parameters<StartTarget>[0]): Promise<TgtTarget> => {
  const why = tgtUnavailable();
  if (why !== null) throw new Error(`cannot start tgtd: ${why}`);
  const settings = await targetSettings(options);
  const { port, targetName, mode } = settings;
  const controlPort = pickControlPort(port);
  if (mode === 'thin-ram') throw new Error('tgt has no RAM store here: thin-ram is for blkback only');
  // detached: its own session (setsid), so a terminal's signals do not reach it.
  const child = spawn(findTool('tgtd') ?? 'tgtd', ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const watch = new ChildWatch(child);
  const admin = (args: readonly string[]): Promise<string> => tgtadm(controlPort, args);
  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (watch.exitStatus() === null) {
        await admin(['--mode', 'target', '--op', 'delete', '--force', '--tid', '1']).catch(() => undefined);
        await tgtadm(controlPort, ['--mode', 'system', '--op', 'delete']).catch(() => undefined);
        if (!(await watch.waitExit(5000))) await watch.terminate(2000);
      }
      controlPortsTaken.delete(controlPort);
      // tgtd leaves its management socket and lock file behind.
      rmSync(`/var/run/tgtd/socket.${controlPort}`, { force: true });
      rmSync(`/var/run/tgtd/socket.${controlPort}.lock`, { force: true });
    })();
    return stopped;
  };
  try {
    // The management socket comes up before the portal; poll it (tgtadm fails until then).
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (watch.exitStatus() !== null) throw new Error(`tgtd ${watch.exitStatus()}`);
      try {
        await tgtadm(controlPort, ['--mode', 'system', '--op', 'show']);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(50);
      }
    }
    await admin(['--mode', 'target', '--op', 'new', '--tid', '1', '--targetname', targetName]);
    await admin(['--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '--backing-store', options.backingFile, '--bstype', 'rdwr']);
    if (mode === 'thin') await admin(['--mode', 'logicalunit', '--op', 'update', '--tid', '1', '--lun', '1', '--params', 'thin_provisioning=1']);
    if (mode === 'readonly') await admin(['--mode', 'logicalunit', '--op', 'update', '--tid', '1', '--lun', '1', '--params', 'readonly=1']);
    await admin(['--mode', 'target', '--op', 'bind', '--tid', '1', '--initiator-address', 'ALL']);
    await waitForPort('127.0.0.1', port, 10_000, () => watch.exitStatus());
  } catch (err) {
    await stop();
    throw new Error(`tgtd did not start on 127.0.0.1:${port}: ${err instanceof Error ? err.message : String(err)}\noutput:\n${watch.output().trim()}`);
  }
  return { ...runningTarget('tgt', settings, watch, stop), controlPort, admin };
};
