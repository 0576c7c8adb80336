// Our rbd: store against fio's own rbd engine, same image, same machine, interleaved rounds (not a
// test: numbers swing 2x between runs here, docs/rbd.md). Brings up a one-OSD memstore cluster
// (test/support/ceph-cluster.ts), pre-fills the image (unwritten data never reaches an OSD), then per
// round and job: `fio --ioengine=rbd`, our fio runner bare on the store (`blkback fio --bare`), and
// our fio runner in a guest over blkback (`blkback fio --disk ...target=rbd:...`).
//
//   node dist/bench/rbd-vs-fio.js [--rounds N] [--runtime S] [--size 256m]
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startCephCluster } from '../test/support/ceph-cluster.ts';

const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const seedDir = fileURLToPath(new URL('../../jobs/', import.meta.url));

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, runtime: { type: 'string', default: '8' }, size: { type: 'string', default: '256m' } },
});
const rounds = Number(values.rounds);
const runtime = Number(values.runtime);
const size = values.size;

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { env, maxBuffer: 64 << 20, timeout: 600_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    ),
  );
}

/** A seed job made runnable anywhere: no engine of its own, a size and runtime that fit, fio 3's rw name, no logs. */
function derive(text: string): string {
  return `${text
    .split('\n')
    .filter((l) => !/^(ioengine|write_\w+_log|size)=/.test(l))
    .map((l) => (l === 'rw=randw' ? 'rw=randwrite' : l))
    .join('\n')}\nsize=${size}\nruntime=${runtime}\ntime_based=1\n`;
}

interface Result {
  readonly iops: number;
  readonly mbs: number;
}

function summarize(json: string): Result {
  const j = JSON.parse(json.slice(json.indexOf('{'))) as { jobs: { read: { iops: number; bw_bytes: number }; write: { iops: number; bw_bytes: number } }[] };
  let iops = 0;
  let bw = 0;
  for (const job of j.jobs) {
    iops += job.read.iops + job.write.iops;
    bw += job.read.bw_bytes + job.write.bw_bytes;
  }
  return { iops, mbs: bw / 1e6 };
}

const cluster = await startCephCluster({ osds: 1, osdBytes: 2 << 30 });
try {
  const env = { ...process.env, CEPH_CONF: cluster.conf };
  await cluster.cli('rbd', ['create', '--size', size.toUpperCase(), '--image-feature', 'layering', 'rbd/bench']);
  const spec = `rbd:rbd/bench:conf=${cluster.conf}`;
  const engine = '[global]\nioengine=rbd\nclientname=admin\npool=rbd\nrbdname=bench\n';
  const fill = join(cluster.dir, 'fill.fio');
  writeFileSync(fill, `${engine}[fill]\nrw=write\nbs=1m\niodepth=8\nsize=${size}\n`);
  await exec('fio', [fill], env);
  const jobs: Record<string, string> = {
    'randread 4k QD32': `[randread]\nrw=randread\nbs=4k\niodepth=32\nsize=${size}\nruntime=${runtime}\ntime_based=1\n`,
    'seed iometer': derive(readFileSync(join(seedDir, 'iometer.fio'), 'utf8')),
    'seed randw': derive(readFileSync(join(seedDir, 'randw.fio'), 'utf8')),
  };
  const table = new Map<string, { fio: Result[]; bare: Result[]; guest: Result[] }>();
  for (let round = 0; round < rounds; round++) {
    for (const [name, body] of Object.entries(jobs)) {
      const ours = join(cluster.dir, 'ours.fio');
      const theirs = join(cluster.dir, 'theirs.fio');
      // Our runner, like fio, defaults to psync (depth 1): ask for the asynchronous path, as the seed jobs do.
      writeFileSync(
        ours,
        '[global]\nioengine=libaio\n' + body.replaceAll('[/dev/xvda]', '[xvda]\nfilename=/dev/xvda').replace(/^\[(\w+)\]$/m, '[$1]\nfilename=/dev/xvda'),
      );
      writeFileSync(theirs, engine + body.replaceAll('[/dev/xvda]', '[xvda]').replace(/^direct=1$/m, ''));
      const row = table.get(name) ?? { fio: [], bare: [], guest: [] };
      table.set(name, row);
      row.fio.push(summarize(await exec('fio', ['--output-format=json', theirs], env)));
      row.bare.push(
        summarize(await exec(process.execPath, [main, 'fio', '--bare', '--output-format', 'json', '--disk', `vdev=xvda,access=rw,target=${spec}`, ours], env)),
      );
      row.guest.push(
        summarize(await exec(process.execPath, [main, 'fio', '--output-format', 'json', '--disk', `vdev=xvda,access=rw,target=${spec}`, ours], env)),
      );
      const last = (r: Result[]): string => `${r.at(-1)!.iops.toFixed(0)} IOPS ${r.at(-1)!.mbs.toFixed(1)} MB/s`;
      console.log(`round ${round + 1} ${name}: fio rbd ${last(row.fio)} | ours bare ${last(row.bare)} | ours in a guest ${last(row.guest)}`);
    }
  }
  const median = (r: Result[]): number => {
    const s = r.map((x) => x.iops).sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)]!;
  };
  console.log('\njob | fio --ioengine=rbd IOPS | ours bare IOPS (ratio) | ours in a guest IOPS (ratio)   [medians of rounds]');
  for (const [name, row] of table) {
    const f = median(row.fio);
    console.log(
      `${name} | ${f.toFixed(0)} | ${median(row.bare).toFixed(0)} (${(median(row.bare) / f).toFixed(2)}x) | ${median(row.guest).toFixed(0)} (${(median(row.guest) / f).toFixed(2)}x)`,
    );
  }
} finally {
  await cluster.teardown();
}
