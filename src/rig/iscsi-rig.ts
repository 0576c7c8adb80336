// The seed's storage side for `reproduce --rig iscsi`: a RAM LUN (the mail's iSCSI RAM disk) on our
// target, in its own namespace behind the storage link, and what the report says about both: the
// link, any fallback, and the CPU time the target spent.
import { readFileSync } from 'node:fs';
import { describeLink } from './link-spec.ts';
import type { LinkSpec } from './link-spec.ts';
import { openStorageLink } from './link.ts';
import type { StorageLink } from './link.ts';
import { startTargetBehindLink } from './iscsi-target-server.ts';
import type { LinkTarget } from './iscsi-target-server.ts';

const RIG_TARGET = 'iqn.2026-12.org.blkback:reproduce';
const RIG_LUN = 1;
// Linux's USER_HZ: /proc/PID/stat counts CPU time in these ticks on every architecture.
const CLOCK_TICKS_PER_SECOND = 100;

export interface IscsiRig {
  /** The LUN as a store spec: iscsi://ADDR:3260/IQN/1. */
  readonly lunSpec: string;
  /** For the report: '1gbit (125.0 MB/s), target in namespace ... at ...', or the fallback. */
  readonly linkDescription: string;
  readonly link: StorageLink;
  readonly target: LinkTarget;
  /** CPU seconds (user + system) the target process has used so far. */
  targetCpuSeconds(): number;
  /**
   * CPU seconds this process's main thread has used so far: blkback and our initiator (the
   * simulated guests are worker threads, so the rest of the process is theirs).
   */
  mainThreadCpuSeconds(): number;
  close(): Promise<void>;
}

export async function openIscsiRig(spec: LinkSpec, lunBytes: number): Promise<IscsiRig> {
  const link = await openStorageLink(spec);
  try {
    // On loopback the well-known port may be taken (a real target on this host): 0 is not an
    // option for the CLI's readiness line, so take one from the pid's range.
    const port = link.namespace === undefined ? 20000 + (process.pid % 20000) : undefined;
    const target = await startTargetBehindLink(link, { luns: [`${RIG_LUN}=ram:${lunBytes}`], targetName: RIG_TARGET, ...(port === undefined ? {} : { port }) });
    const where =
      link.namespace === undefined
        ? `on ${target.portal}`
        : `in namespace ${link.namespace} at ${target.portal}, host side ${link.hostAddress} (${link.hostInterface})`;
    const linkDescription =
      link.fallback === undefined
        ? `${describeLink(spec)}: veth shaped with tc tbf on both ends; target ${where}`
        : `${link.fallback} (asked for --link ${spec.text}); target ${where}`;
    return {
      lunSpec: target.url(RIG_LUN),
      linkDescription,
      link,
      target,
      targetCpuSeconds: () => processCpuSeconds(target.process.pid),
      mainThreadCpuSeconds: () => statCpuSeconds(`/proc/self/task/${process.pid}/stat`),
      async close() {
        await target.stop();
        await link.close();
      },
    };
  } catch (err) {
    await link.close();
    throw err;
  }
}

/** utime + stime of a process from /proc (fields 14 and 15), NaN when it is gone. */
function processCpuSeconds(pid: number | undefined): number {
  return pid === undefined ? Number.NaN : statCpuSeconds(`/proc/${pid}/stat`);
}

/** utime + stime from a /proc stat file of a process or a thread, NaN when it is gone. */
function statCpuSeconds(path: string): number {
  try {
    const stat = readFileSync(path, 'utf8');
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}
