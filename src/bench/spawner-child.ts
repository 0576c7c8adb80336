// The child side of Spawner: runs the commands it is sent and answers with their output.
import { execFile } from 'node:child_process';

interface Request {
  readonly id: number;
  readonly cmd: string;
  readonly args: readonly string[];
}

process.on('message', (m: Request) => {
  execFile(m.cmd, m.args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
    const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
    process.send?.({ id: m.id, code, stdout, stderr, error: err === null ? null : err.message });
  });
});
