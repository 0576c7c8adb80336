#!/usr/bin/env node
import { UsageError, BlockError } from '../internal/errors.ts';
import type { Command } from './command.ts';
import { commands } from './commands/index.ts';

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    'blkback: a userspace Xen block backend, a simulated hypervisor to run it on, and the test bed that measures it.',
    '',
    'usage: blkback <command> [options]',
    '',
    'commands:',
    ...lines,
    '',
    "Run 'blkback <command> --help' for a command's options and examples.",
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    process.stdout.write('blkback 0.1.0\n');
    return 0;
  }
  const command: Command | undefined = commands.find((c) => c.name === name);
  if (command === undefined) {
    process.stderr.write(`blkback: unknown command '${name}'\n\n${usage()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(command.help.trimEnd() + '\n');
    return 0;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`blkback: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof BlockError) {
      process.stderr.write(`blkback: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`blkback: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 70;
    }
  },
);
