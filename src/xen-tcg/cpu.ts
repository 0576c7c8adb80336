// Where dom0's CPU went during each fio job: dom0 prints a sample every 2 s (BLKBACK-CPU, from
// /proc/stat and serve's /proc/<pid>/stat, in clock ticks), and each guest prints a phase line as a
// job starts and ends. The samples that fall between a job's two lines give its figures.

export interface JobCpu {
  readonly guest: string;
  readonly job: string;
  /** The job's run in its guest (1 when it runs once). */
  readonly run: number;
  /** Between the first and last sample inside the job. */
  readonly seconds: number;
  /** dom0's CPUs busy (user+nice+system+irq+softirq), on average. */
  readonly dom0Busy: number;
  /** CPUs Xen gave to other domains while dom0's vCPUs wanted to run. */
  readonly steal: number;
  /** blkback serve's CPUs (all its threads), its user and system parts, and its main thread's; 0 under the kernel backend. */
  readonly serve: number;
  readonly serveUser: number;
  readonly serveSys: number;
  readonly mainThread: number;
  /** blkback iscsi-target's CPUs (--chain iscsi); 0 without it. */
  readonly target: number;
}

/** USER_HZ: /proc's tick unit. */
const TICKS_PER_SECOND = 100;

interface Sample {
  readonly line: number;
  readonly uptime: number;
  readonly fields: ReadonlyMap<string, number>;
}

const SAMPLE = /BLKBACK-CPU (\d+(?:\.\d+)?) (.*)$/;
// "fio randw (..." and "fio randw done", or with several runs "fio randw run 2/3 (..."
// The guest is the phase's tag, not the console's: in --mode same-guest one guest (console "twin")
// runs the jobs as kernel-1, ours-1, ...
const JOB = /^G \S+\| BLKBACK-PHASE (\S+) guest: fio (\S+)(?: run (\d+)\/\d+)? (done|\()/;

export function cpuDuringJobs(consoleText: string): JobCpu[] {
  const lines = consoleText.split('\n');
  const samples: Sample[] = [];
  const starts = new Map<string, number>();
  const out: JobCpu[] = [];
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!.replace(/\r+$/, '');
    const s = SAMPLE.exec(text);
    if (s !== null && !text.startsWith('G ')) {
      const fields = new Map<string, number>();
      for (const pair of (s[2] as string).split(' ')) {
        const [key, value] = pair.split('=');
        if (key !== undefined && value !== undefined && value !== '') fields.set(key, Number(value));
      }
      samples.push({ line: i, uptime: Number(s[1]), fields });
      continue;
    }
    const j = JOB.exec(text);
    if (j === null) continue;
    const run = j[3] === undefined ? 1 : Number(j[3]);
    const key = `${j[1] as string}/${j[2] as string}/${run}`;
    if (j[4] === '(') {
      // a guest's console printed again whole (before its destroy) repeats the lines: first wins
      if (!starts.has(key)) starts.set(key, i);
      continue;
    }
    const from = starts.get(key);
    if (from === undefined || out.some((c) => `${c.guest}/${c.job}/${c.run}` === key)) continue;
    const inside = samples.filter((x) => x.line > from && x.line < i);
    if (inside.length < 2) continue;
    const a = inside[0]!;
    const b = inside[inside.length - 1]!;
    const seconds = b.uptime - a.uptime;
    if (!(seconds > 0)) continue;
    const rate = (name: string): number => ((b.fields.get(name) ?? 0) - (a.fields.get(name) ?? 0)) / TICKS_PER_SECOND / seconds;
    out.push({
      guest: j[1] as string,
      job: j[2] as string,
      run,
      seconds,
      dom0Busy: rate('busy'),
      steal: rate('steal'),
      serve: rate('serve'),
      serveUser: rate('serve_user'),
      serveSys: rate('serve_sys'),
      mainThread: rate('main_user') + rate('main_sys'),
      target: rate('target'),
    });
  }
  return out;
}

/** A Markdown table of both modes' figures, one row per mode, guest and job. */
export function cpuMarkdown(byMode: ReadonlyMap<string, readonly JobCpu[]>): string {
  const withTarget = [...byMode.values()].some((jobs) => jobs.some((c) => c.target > 0));
  const rows = [
    `| mode | guest | job | run | seconds sampled | dom0 busy (CPUs) | steal | serve | serve user / sys | serve main thread |${withTarget ? ' iscsi-target |' : ''}`,
    `|---|---|---|---:|---:|---:|---:|---:|---:|---:|${withTarget ? '---:|' : ''}`,
  ];
  const f = (n: number): string => n.toFixed(2);
  for (const [mode, jobs] of byMode) {
    for (const c of jobs) {
      const serve = mode === 'kernel' ? ['–', '–', '–'] : [f(c.serve), `${f(c.serveUser)} / ${f(c.serveSys)}`, f(c.mainThread)];
      rows.push(
        `| ${mode} | ${c.guest} | ${c.job} | ${c.run} | ${c.seconds.toFixed(0)} | ${f(c.dom0Busy)} | ${f(c.steal)} | ${serve.join(' | ')} |${withTarget ? ` ${f(c.target)} |` : ''}`,
      );
    }
  }
  return rows.join('\n');
}
