// One boot of Xen under QEMU's software emulation (TCG: no KVM here), the serial console streamed to
// the caller. QEMU runs in its own process group, killed whole on timeout, on our exit and on
// SIGINT/SIGTERM, so nothing is left running.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface BootOptions {
  readonly xen: string;
  readonly vmlinuz: string;
  /** dom0's initramfs: the cached dom0.cpio with the run's payload appended. */
  readonly initrd: string;
  readonly timeoutSeconds: number;
  /** QEMU's -cpu. */
  readonly cpu: string;
  /** Console output as it comes; return true to stop the machine (e.g. dom0 crashed). */
  readonly onOutput: (chunk: string) => boolean | void;
}

export interface BootOutcome {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  /** onOutput asked to stop. */
  readonly stopped: boolean;
  readonly seconds: number;
}

// smap=0: QEMU 7.2's TCG mishandles SMAP on the PV dom0's IRET path and dom0 crashes at boot.
// pcid=0 invpcid=0: Xen flushes TLBs whole instead of per PCID, a guard against TCG's emulation of
// the PCID paths (suspected, not proven, in the rare user-space crashes seen under emulation).
// spec-ctrl=eager-fpu: without it Xen switches FPU/SSE state between vCPUs lazily (CR0.TS and #NM;
// its default for the AMD-like CPU QEMU emulates: "Support for PV VMs: None" in Xen's boot log), and
// under QEMU 7.2's TCG that corrupted user space across domains: as soon as a guest's fio started its
// SSE-heavy work (crc32c verify), processes in dom0 died of heap corruption (`blkback serve`, busy then,
// every time; the kernel backend's boots now and then) and guests' processes segfaulted. With eager
// switching the same boots pass.
const XEN_ARGS = 'console=com1 com1=115200,8n1 dom0_mem=2048M,max:2048M noreboot smap=0 pcid=0 invpcid=0 spec-ctrl=eager-fpu';
const DOM0_ARGS = 'console=hvc0 quiet';

export function qemuArgs(o: Pick<BootOptions, 'xen' | 'vmlinuz' | 'initrd' | 'cpu'>): string[] {
  for (const p of [o.vmlinuz, o.initrd]) {
    // QEMU splits -initrd at commas (multiboot modules) and the module line at spaces
    if (/[, ]/.test(p)) throw new Error(`qemu: path '${p}' has a comma or space, which multiboot modules cannot carry`);
  }
  return [
    // BLKBACK_XEN_TCG_THREAD=single|multi: TCG's vCPU threading (experiments; unset: QEMU's default, multi)
    ...(process.env.BLKBACK_XEN_TCG_THREAD ? ['-accel', `tcg,thread=${process.env.BLKBACK_XEN_TCG_THREAD}`] : []),
    '-machine',
    'pc',
    '-cpu',
    o.cpu,
    '-smp',
    '2',
    '-m',
    '4096',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    o.xen,
    '-append',
    XEN_ARGS,
    '-initrd',
    `${o.vmlinuz} ${DOM0_ARGS},${o.initrd}`,
  ];
}

/** The lead engineer's benchmarks need quiet cores: wait while the flag file exists. */
export async function waitForQuiet(flag: string, log: (line: string) => void): Promise<void> {
  let said = false;
  while (existsSync(flag)) {
    if (!said) log(`${flag} exists: waiting for it to go before booting QEMU (polling every 20 s)`);
    said = true;
    await sleep(20_000);
  }
  if (said) log(`${flag} gone: booting`);
}

export async function bootXen(o: BootOptions): Promise<BootOutcome> {
  const started = Date.now();
  const child = spawn('qemu-system-x86_64', qemuArgs(o), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pgid = child.pid;
  const killGroup = (): void => {
    if (pgid === undefined) return;
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    killGroup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', killGroup);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, o.timeoutSeconds * 1000);
  child.stdout.setEncoding('latin1');
  child.stderr.setEncoding('latin1');
  let stopped = false;
  const take = (s: string): void => {
    if (o.onOutput(s) === true && !stopped) {
      stopped = true;
      setTimeout(killGroup, 3000); // let the crash dump reach the log first
    }
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  const [exitCode, signal] = await new Promise<[number | null, string | null]>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, sig) => resolve([code, sig]));
  });
  clearTimeout(timer);
  killGroup();
  process.off('exit', killGroup);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return { exitCode, signal, timedOut, stopped, seconds: (Date.now() - started) / 1000 };
}
