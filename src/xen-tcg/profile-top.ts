// Summarises V8 CPU profiles (`node --cpu-prof`) as the functions with the most self time, one
// line each: the harness runs it in dom0 on `blkback serve`'s profiles (BLKBACK_XEN_PROFILE=1),
// since a whole profile is too big for the serial console. Standalone: dom0 gets this one file.
//
//   node profile-top.js [--top N] FILE.cpuprofile...
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Self time per function (name, file and line), in microseconds, largest first. */
export function selfTimes(profile: CpuProfile): { total: number; rows: [string, number][] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i] ?? 0;
    total += dt;
    const node = byId.get(profile.samples[i]!);
    if (node === undefined) continue;
    const f = node.callFrame;
    const file = f.url === '' ? '' : ` ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
    const key = `${f.functionName === '' ? '(anonymous)' : f.functionName}${file}`;
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  return { total, rows: [...self].sort((a, b) => b[1] - a[1]) };
}

function main(argv: string[]): void {
  let top = 40;
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--top') top = Number(argv[++i]);
    else files.push(argv[i]!);
  }
  for (const file of files) {
    const { total, rows } = selfTimes(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
    process.stdout.write(`== ${file}: ${(total / 1e6).toFixed(1)} s sampled\n`);
    for (const [name, us] of rows.slice(0, top)) {
      process.stdout.write(`${(us / 1000).toFixed(0).padStart(8)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${name}\n`);
    }
  }
}

if (process.argv[1]?.endsWith('profile-top.js')) main(process.argv.slice(2));
