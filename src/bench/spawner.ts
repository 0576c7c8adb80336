// Runs external commands (losetup, fio) from a small helper process forked once, early. Why: fork()
// write-protects every page of the forking process for copy-on-write, so after each execFile from
// this process every later write into a big in-memory store (the RAM disk under test) takes a page
// fault: random 4 KiB writes on a 1 GiB RAM disk fell from ~700k to ~20k per second. The helper is
// forked while this process is still small, and this process never forks again.
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly error: string | null;
}

export class Spawner {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, (r: CommandResult) => void>();
  #next = 1;

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (m: CommandResult & { id: number }) => {
      const done = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      done?.(m);
    });
  }

  static start(): Spawner {
    return new Spawner(fork(new URL('./spawner-child.js', import.meta.url), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  }

  run(cmd: string, args: readonly string[]): Promise<CommandResult> {
    const id = this.#next++;
    return new Promise((resolve) => {
      this.#pending.set(id, resolve);
      this.#child.send({ id, cmd, args });
    });
  }

  /** Like execFile: rejects when the command fails. */
  async check(cmd: string, args: readonly string[]): Promise<string> {
    const r = await this.run(cmd, args);
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error ?? ''} ${r.stderr.trim()}`.trim());
    return r.stdout;
  }

  close(): void {
    this.#child.kill();
  }
}
